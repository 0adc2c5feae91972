//! `hoist pull` against the fault-injecting fake registry, one fault at a time: every pull
//! ends with exactly the image a clean pull gives (same digests, nothing partial left), or
//! with a clear error after a bounded time and nothing partial visible in the store.
//!
//! Images are a few MiB; retry delays are 20 ms (`HOIST_RETRY_DELAY`).

mod transfer_support;

use std::time::{Duration, Instant, SystemTime};

use hoist_testkit::fake::{FakeRegistry, Fault, RetryAfter, TokenAuth};
use transfer_support::{Env, MIB, blob_endpoints, blob_path, image};

/// A fake with a 3-layer image (layer 1 is 3 MiB) under `ns/app:v1`.
fn setup() -> (Env, FakeRegistry, hoist_testkit::images::BuiltImage) {
    let fake = FakeRegistry::start();
    let img = image(&[(64 * 1024, 1), (3 * MIB, 2), (256 * 1024, 3)], "v1");
    fake.push_image("ns/app", "v1", &img);
    (Env::new(), fake, img)
}

fn layer(img: &hoist_testkit::images::BuiltImage, i: usize) -> (String, u64) {
    (img.layers[i].blob.digest.clone(), img.layers[i].blob.size)
}

fn blob_gets_with_range(fake: &FakeRegistry, path: &str) -> Vec<Option<String>> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == path && r.method == "GET")
        .map(|r| r.range)
        .collect()
}

#[test]
fn a_reset_mid_layer_resumes_from_the_byte_reached() {
    let (env, fake, img) = setup();
    let (d, size) = layer(&img, 1);
    fake.inject(Fault::ResetAfter(MIB as u64).on_blob(&d).times(2));
    let ev = env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    let ranges = blob_gets_with_range(&fake, &blob_path("ns/app", &d));
    assert_eq!(
        ranges,
        vec![
            None,
            Some(format!("bytes={}-{}", MIB, size - 1)),
            Some(format!("bytes={}-{}", 2 * MIB, size - 1)),
        ]
    );
    // Nothing crossed the wire twice.
    assert_eq!(fake.blob_bytes_sent(&d), size);
    assert_eq!(ev.iter().filter(|e| e["event"] == "retry").count(), 2);
}

#[test]
fn server_errors_on_manifest_config_and_layer_are_retried() {
    let (env, fake, img) = setup();
    let (d, _) = layer(&img, 0);
    fake.inject(Fault::Status(500).on_manifests().times(1));
    fake.inject(Fault::Status(502).on_blob(&img.config.digest).times(2));
    fake.inject(Fault::Status(503).on_blob(&d).times(3));
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert_eq!(fake.hits("/v2/ns/app/manifests/v1"), 2);
    assert_eq!(fake.hits(&blob_path("ns/app", &img.config.digest)), 3);
    assert_eq!(fake.hits(&blob_path("ns/app", &d)), 4);
}

#[test]
fn too_many_requests_honours_retry_after_in_seconds_and_as_a_date() {
    let (env, fake, img) = setup();
    let (d, _) = layer(&img, 2);
    fake.inject(
        Fault::RetryAfter {
            status: 429,
            after: RetryAfter::Seconds(1),
        }
        .on_blob(&d),
    );
    fake.inject(
        Fault::RetryAfter {
            status: 503,
            after: RetryAfter::Date(SystemTime::now() + Duration::from_secs(2)),
        }
        .on_blob(&img.config.digest),
    );
    let t = Instant::now();
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    // Config (date, at least 1 s left) then layers (1 s): sequential waits.
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    env.assert_pulled(&img);
}

#[test]
fn a_wrong_content_length_short_or_long_is_retried() {
    let (env, fake, img) = setup();
    let (d, size) = layer(&img, 1);
    fake.inject(Fault::ContentLength(size / 2).on_blob(&d));
    fake.inject(Fault::ContentLength(size + 100).on_blob(&d));
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert_eq!(fake.blob_gets(&d), 3);
}

#[test]
fn a_truncated_body_that_ends_cleanly_is_resumed() {
    let (env, fake, img) = setup();
    let (d, size) = layer(&img, 1);
    fake.inject(Fault::Truncate(500_000).on_blob(&d));
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert_eq!(
        blob_gets_with_range(&fake, &blob_path("ns/app", &d)),
        vec![None, Some(format!("bytes=500000-{}", size - 1))]
    );
}

#[test]
fn a_drip_slower_than_the_idle_timeout_is_resumed() {
    let (env, fake, img) = setup();
    let (d, size) = layer(&img, 1);
    // One byte a second; the idle timeout is 300 ms.
    fake.inject(Fault::Drip(Duration::from_secs(1)).on_blob(&d));
    let t = Instant::now();
    env.pull_ok(&[&fake.image_ref("ns/app:v1"), "--read-timeout", "300ms"]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    env.assert_pulled(&img);
    let ranges = blob_gets_with_range(&fake, &blob_path("ns/app", &d));
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges[1], Some(format!("bytes=1-{}", size - 1)));
}

#[test]
fn a_slow_but_healthy_blob_is_never_cut_off() {
    let (env, fake, img) = setup();
    // The config (a few hundred bytes) arrives one byte every 3 ms: more than a second
    // in all, with the idle timeout at 300 ms. There is no total timeout.
    let cfg_len = img.config.size;
    fake.inject(Fault::Drip(Duration::from_millis(3)).on_blob(&img.config.digest));
    let t = Instant::now();
    env.pull_ok(&[&fake.image_ref("ns/app:v1"), "--read-timeout", "300ms"]);
    assert!(t.elapsed() >= Duration::from_millis(3 * (cfg_len - 1)));
    assert_eq!(fake.blob_gets(&img.config.digest), 1, "not retried");
    env.assert_pulled(&img);
}

#[test]
fn wrong_bytes_from_the_only_source_are_a_clear_error_and_nothing_is_kept() {
    let (env, fake, img) = setup();
    let (d, _) = layer(&img, 1);
    fake.inject(Fault::WrongBytes.on_blob(&d));
    let stderr = env.pull_fails(&[&fake.image_ref("ns/app:v1")]);
    assert!(
        stderr.contains("digest mismatch") && stderr.contains(&d),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{}{}", fake.url(), blob_path("ns/app", &d))));
    assert!(!env.blobs().contains_key(&d));
    assert!(
        !env.blobs().contains_key(&img.config.digest),
        "config stored last"
    );
    // Bad bytes are not kept; other layers' downloads cut short by the failure may be.
    assert!(
        env.ingest()
            .iter()
            .all(|n| n.starts_with("partial-") && !n.contains(&d[7..])),
        "{:?}",
        env.ingest()
    );
    assert_eq!(env.images().as_array().unwrap().len(), 0);
    // The fault is spent: the next pull works.
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
}

#[test]
fn wrong_bytes_after_a_resume_are_fetched_again_from_zero() {
    let (env, fake, img) = setup();
    let (d, size) = layer(&img, 1);
    fake.inject(Fault::ResetAfter(MIB as u64).on_blob(&d));
    fake.inject(Fault::WrongBytes.on_blob(&d).ranged_only());
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    let ranges = blob_gets_with_range(&fake, &blob_path("ns/app", &d));
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert_eq!(ranges[2], None, "the clean retry starts from 0");
    assert_eq!(fake.blob_bytes_sent(&d), 2 * size);
}

#[test]
fn redirects_to_another_origin_get_no_credentials() {
    let (env, fake, img) = setup();
    fake.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: false,
    }));
    fake.inject(Fault::Redirect.on_any_blob().forever());
    let ev = env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    let log = fake.requests();
    let storage: Vec<_> = log.iter().filter(|r| r.storage).collect();
    assert_eq!(storage.len(), img.layers.len() + 1, "{log:#?}");
    assert!(
        storage.iter().all(|r| r.authorization.is_none()),
        "{storage:#?}"
    );
    assert!(
        log.iter()
            .filter(|r| !r.storage && r.path.contains("/blobs/"))
            .all(|r| r
                .authorization
                .as_deref()
                .is_some_and(|a| a.starts_with("Bearer ")))
    );
    // Progress names the storage endpoint that served each layer.
    let eps = blob_endpoints(&ev);
    let (d, _) = layer(&img, 1);
    assert!(eps[&d][0].starts_with(&fake.storage_url()), "{eps:?}");
}

#[test]
fn an_expired_presigned_url_before_a_resume_goes_back_to_the_registry() {
    let (env, fake, img) = setup();
    let (d, size) = layer(&img, 1);
    fake.inject(Fault::Redirect.on_any_blob().forever());
    fake.presigned_uses(Some(1));
    // Breaks on the storage side; the URL used is then spent.
    fake.inject(Fault::ResetAfter(MIB as u64).on_blob(&d));
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    let to_storage: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.storage && r.path.ends_with(&d))
        .collect();
    assert_eq!(to_storage.len(), 2, "{to_storage:#?}");
    assert_ne!(to_storage[0].query, to_storage[1].query);
    assert!(to_storage.iter().all(|r| r.status != 403));
    assert_eq!(
        to_storage[1].range,
        Some(format!("bytes={}-{}", MIB, size - 1))
    );
    assert_eq!(
        fake.hits(&blob_path("ns/app", &d)),
        2,
        "back to the registry"
    );
}

#[test]
fn a_range_answered_with_200_restarts_the_blob_without_splicing() {
    let (env, fake, img) = setup();
    let (d, size) = layer(&img, 1);
    fake.inject(Fault::ResetAfter(MIB as u64).on_blob(&d));
    fake.inject(Fault::IgnoreRange.on_blob(&d).ranged_only().forever());
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    assert_eq!(fake.blob_bytes_sent(&d), MIB as u64 + size);
}

#[test]
fn a_wrong_content_range_restarts_the_blob_without_range() {
    let (env, fake, img) = setup();
    let (d, _) = layer(&img, 1);
    fake.inject(Fault::ResetAfter(MIB as u64).on_blob(&d));
    fake.inject(Fault::WrongContentRange.on_blob(&d).ranged_only().forever());
    env.pull_ok(&[&fake.image_ref("ns/app:v1")]);
    env.assert_pulled(&img);
    let ranges = blob_gets_with_range(&fake, &blob_path("ns/app", &d));
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert!(ranges[1].is_some() && ranges[2].is_none(), "{ranges:?}");
}

#[test]
fn a_token_expiring_mid_pull_is_renewed() {
    let (env, fake, img) = setup();
    fake.require_token(Some(TokenAuth {
        uses_per_token: Some(2),
        reject_all: false,
    }));
    env.pull_ok(&[&fake.image_ref("ns/app:v1"), "-j", "1"]);
    env.assert_pulled(&img);
    assert!(fake.tokens_issued() >= 3, "{}", fake.tokens_issued());
}

#[test]
fn endless_401s_are_a_bounded_clear_error() {
    let (env, fake, _img) = setup();
    fake.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: true,
    }));
    let t = Instant::now();
    let stderr = env.pull_fails(&[&fake.image_ref("ns/app:v1")]);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert!(fake.requests().len() < 20, "{}", fake.requests().len());
    assert!(env.blobs().is_empty());
}

#[test]
fn a_persistent_503_is_a_clear_error_after_a_bounded_time() {
    let (env, fake, img) = setup();
    // Pull once, so "unchanged" means something.
    let first = image(&[(64 * 1024, 1)], "base");
    fake.push_image("ns/base", "v1", &first);
    env.pull_ok(&[&fake.image_ref("ns/base:v1")]);
    let before = env.blobs();
    let (d, _) = layer(&img, 1);
    fake.inject(Fault::Status(503).on_blob(&d).forever());
    let t = Instant::now();
    let stderr = env.pull_fails(&[&fake.image_ref("ns/app:v1"), "--retry-times", "2"]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        stderr.contains("HTTP 503") && stderr.contains("gave up after 3 attempts"),
        "{stderr}"
    );
    assert_eq!(fake.hits(&blob_path("ns/app", &d)), 3);
    // The other layers were verified and kept; nothing of the image is visible.
    let after = env.blobs();
    assert!(before.keys().all(|k| after.contains_key(k)));
    assert!(!after.contains_key(&d) && !after.contains_key(&img.config.digest));
    assert!(!after.contains_key(&img.manifest.digest));
    assert_eq!(env.images().as_array().unwrap().len(), 1);
    assert!(
        env.ingest()
            .iter()
            .all(|n| n.starts_with("partial-") && !n.contains(&d[7..])),
        "nothing was received for the failing layer: {:?}",
        env.ingest()
    );
}

/// A 10 MiB layer, split at 1 MiB over 3 connections: slices of 4, 4 and 2 MiB.
fn big() -> (Env, FakeRegistry, hoist_testkit::images::BuiltImage) {
    let fake = FakeRegistry::start();
    let img = image(&[(10 * MIB, 9), (100 * 1024, 10)], "big");
    fake.push_image("ns/big", "v1", &img);
    (Env::new(), fake, img)
}

/// Slices at once: on loopback the probe would find one connection fast enough.
const SPLIT: [&str; 6] = [
    "--range-threshold",
    "1MiB",
    "--range-connections",
    "3",
    "--range-probe",
    "0s",
];

#[test]
fn a_large_blob_goes_over_several_range_connections() {
    let (env, fake, img) = big();
    let (d, size) = layer(&img, 0);
    let mut args = vec![fake.image_ref("ns/big:v1")];
    args.extend(SPLIT.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.pull_ok(&args);
    env.assert_pulled(&img);
    let mut ranges = blob_gets_with_range(&fake, &blob_path("ns/big", &d));
    ranges.sort();
    let m = 4 * MIB as u64;
    assert_eq!(
        ranges,
        vec![
            Some(format!("bytes=0-{}", m - 1)),
            Some(format!("bytes={m}-{}", 2 * m - 1)),
            Some(format!("bytes={}-{}", 2 * m, size - 1)),
        ]
    );
    assert_eq!(fake.blob_bytes_sent(&d), size);
}

#[test]
fn a_fast_connection_keeps_a_large_blob_to_itself() {
    // The default probe (1 s): loopback moves 10 MiB well within it, far above 128 MiB/s.
    let (env, fake, img) = big();
    let (d, size) = layer(&img, 0);
    let blob = fake.image_ref("ns/big:v1");
    let args = [
        blob.as_str(),
        "--range-threshold",
        "1MiB",
        "--range-connections",
        "3",
    ];
    env.pull_ok(&args);
    env.assert_pulled(&img);
    let ranges = blob_gets_with_range(&fake, &blob_path("ns/big", &d));
    assert_eq!(ranges, vec![None], "one plain GET, no slices");
    assert_eq!(fake.blob_bytes_sent(&d), size);
}

#[test]
fn a_slow_connection_hands_the_rest_to_range_slices() {
    // The first response crawls at 2 MiB/s: after the 300 ms probe about 0.6 MiB is in,
    // and the rest goes over Range slices from there (the slices are not throttled).
    let (env, fake, img) = big();
    let (d, size) = layer(&img, 0);
    fake.inject(Fault::Throttle(2 * MIB as u64).on_blob(&d).times(1));
    let blob = fake.image_ref("ns/big:v1");
    let args = [
        blob.as_str(),
        "--range-threshold",
        "1MiB",
        "--range-connections",
        "3",
        "--range-probe",
        "300ms",
    ];
    env.pull_ok(&args);
    env.assert_pulled(&img);
    let ranges = blob_gets_with_range(&fake, &blob_path("ns/big", &d));
    assert_eq!(ranges[0], None, "the probe is a plain GET: {ranges:?}");
    assert!(ranges.len() >= 3, "slices after the probe: {ranges:?}");
    let starts: Vec<u64> = ranges[1..]
        .iter()
        .map(|r| {
            let r = r.as_deref().expect("slices ask for a Range");
            r["bytes=".len()..r.find('-').unwrap()].parse().unwrap()
        })
        .collect();
    let first = *starts.iter().min().unwrap();
    assert!(
        first > 0 && first < size / 2,
        "the slices go on from the probe's offset: {ranges:?}"
    );
}

#[test]
fn a_broken_slice_resumes_by_itself() {
    let (env, fake, img) = big();
    let (d, size) = layer(&img, 0);
    fake.inject(Fault::ResetAfter(MIB as u64).on_blob(&d).skip(1));
    let mut args = vec![fake.image_ref("ns/big:v1")];
    args.extend(SPLIT.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.pull_ok(&args);
    env.assert_pulled(&img);
    assert_eq!(fake.blob_gets(&d), 4);
    assert_eq!(fake.blob_bytes_sent(&d), size, "no byte fetched twice");
}

#[test]
fn a_large_blob_falls_back_to_one_connection_when_range_is_unsupported() {
    let (env, fake, img) = big();
    let (d, _) = layer(&img, 0);
    fake.inject(Fault::IgnoreRange.on_blob(&d).forever());
    let mut args = vec![fake.image_ref("ns/big:v1")];
    args.extend(SPLIT.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.pull_ok(&args);
    env.assert_pulled(&img);
    let ranges = blob_gets_with_range(&fake, &blob_path("ns/big", &d));
    assert_eq!(ranges.len(), 2, "the probe, then one plain GET: {ranges:?}");
    assert_eq!(ranges[1], None);
}
