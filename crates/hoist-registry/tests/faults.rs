//! The client against the testkit's fault-injecting registry: retries (which, how long,
//! how many), Retry-After, strict Range answers, short bodies, token expiry, redirects
//! that lose credentials, expired presigned URLs, foreign URLs, mirrors' API roots.

use std::time::{Duration, Instant, SystemTime};

use hoist_registry::{ClientOptions, Endpoint, RegistryClient, RegistryError, RetryPolicy};
use hoist_testkit::fake::{FakeRegistry, Fault, RetryAfter, TokenAuth};
use hoist_testkit::images::{self, seeded_bytes, sha256_digest};
use hoist_types::{Descriptor, Digest, MediaType};

fn policy(retries: u32) -> RetryPolicy {
    let mut p = RetryPolicy::default();
    p.max_retries = retries;
    p.initial_delay = Duration::from_millis(20);
    p.max_delay = Duration::from_millis(100);
    p.max_retry_after = Duration::from_secs(3);
    p.max_elapsed = Duration::from_secs(30);
    p
}

/// An empty credentials file, so the host's are never read.
fn no_auth_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<tempfile::TempPath> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), br#"{"auths":{}}"#).unwrap();
        f.into_temp_path()
    })
    .to_path_buf()
}

fn opts(retries: u32) -> ClientOptions {
    let mut o = ClientOptions::default();
    o.connect_timeout = Duration::from_secs(5);
    o.read_timeout = Duration::from_secs(5);
    o.certs_d_roots = vec![];
    o.auth_file = Some(no_auth_file());
    o.retry = policy(retries);
    o
}

struct Env {
    fake: FakeRegistry,
    client: RegistryClient,
    desc: Descriptor,
    bytes: Vec<u8>,
    path: String,
    manifest_path: String,
}

fn env(retries: u32) -> Env {
    let fake = FakeRegistry::start();
    let bytes = seeded_bytes(300_000, 3);
    let d = sha256_digest(&bytes);
    fake.put_blob("ns/app", &d, bytes.clone());
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{}}},"layers":[]}}"#,
        images::OCI_MANIFEST,
        bytes.len()
    );
    fake.put_manifest("ns/app", "v1", images::OCI_MANIFEST, m.into_bytes());
    let client = RegistryClient::new(&fake.host_port(), opts(retries)).unwrap();
    let desc = Descriptor::new(
        MediaType::OciLayerGzip,
        Digest::parse(&d).unwrap(),
        bytes.len() as u64,
    );
    Env {
        path: format!("/v2/ns/app/blobs/{d}"),
        manifest_path: "/v2/ns/app/manifests/v1".into(),
        fake,
        client,
        desc,
        bytes,
    }
}

async fn read_all(mut b: hoist_registry::BlobResponse) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    while let Some(c) = b.chunk().await? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

#[tokio::test]
async fn transient_statuses_are_retried_others_are_not() {
    let e = env(4);
    for code in [500, 502, 503, 408] {
        e.fake.reset_hits();
        e.fake
            .inject(Fault::Status(code).on_path(&e.manifest_path).times(2));
        e.client.get_manifest("ns/app", "v1").await.unwrap();
        assert_eq!(e.fake.hits(&e.manifest_path), 3, "HTTP {code}");
    }
    for code in [400, 403, 404, 405] {
        e.fake.reset_hits();
        e.fake
            .inject(Fault::Status(code).on_path(&e.manifest_path).times(1));
        let err = e.client.get_manifest("ns/app", "v1").await.unwrap_err();
        assert!(!err.is_retryable(), "HTTP {code}: {err}");
        assert_eq!(
            e.fake.hits(&e.manifest_path),
            1,
            "HTTP {code} is not retried"
        );
        e.fake.clear_faults();
    }
}

#[tokio::test]
async fn endless_failures_give_up_after_the_count() {
    let e = env(3);
    e.fake
        .inject(Fault::Status(503).on_path(&e.manifest_path).forever());
    let t = Instant::now();
    let err = e.client.get_manifest("ns/app", "v1").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(e.fake.hits(&e.manifest_path), 4);
    match &err {
        RegistryError::GaveUp {
            attempts, source, ..
        } => {
            assert_eq!(*attempts, 4);
            assert!(matches!(**source, RegistryError::Http { status: 503, .. }));
        }
        other => panic!("{other}"),
    }
    // The message and its causes, as `{:#}` shows them: the last failure is the source.
    let msg = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        msg.contains("/v2/ns/app/manifests/v1") && msg.contains("gave up after 4 attempts"),
        "{msg}"
    );
    // And the total time bounds it as well.
    let mut o = opts(1000);
    o.retry.max_elapsed = Duration::from_millis(300);
    let c = RegistryClient::new(&e.fake.host_port(), o).unwrap();
    let t = Instant::now();
    c.get_manifest("ns/app", "v1").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn retry_after_seconds_and_http_date_are_honoured_up_to_the_cap() {
    let e = env(2);
    e.fake.inject(
        Fault::RetryAfter {
            status: 429,
            after: RetryAfter::Seconds(1),
        }
        .on_path(&e.manifest_path),
    );
    let t = Instant::now();
    e.client.get_manifest("ns/app", "v1").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );

    e.fake.inject(
        Fault::RetryAfter {
            status: 503,
            after: RetryAfter::Date(SystemTime::now() + Duration::from_secs(2)),
        }
        .on_path(&e.manifest_path),
    );
    let t = Instant::now();
    e.client.get_manifest("ns/app", "v1").await.unwrap();
    // Whole seconds in the date: at least one second of it is left.
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // An hour is cut to the cap (3 s here).
    e.fake.inject(
        Fault::RetryAfter {
            status: 429,
            after: RetryAfter::Seconds(3600),
        }
        .on_path(&e.manifest_path),
    );
    let t = Instant::now();
    e.client.get_manifest("ns/app", "v1").await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn connection_errors_are_retried() {
    let port = hoist_testkit::registry::free_port().unwrap();
    let c = RegistryClient::new(&format!("127.0.0.1:{port}"), opts(2)).unwrap();
    let err = c.ping().await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::GaveUp { attempts: 3, source, .. } if matches!(**source, RegistryError::Connect { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn blob_bodies_short_long_and_broken_are_errors_to_resume_from() {
    let e = env(0);
    e.fake.inject(Fault::Truncate(1000).on_path(&e.path));
    let err = read_all(e.client.get_blob("ns/app", &e.desc).await.unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::ShortBody {
                received: 1000,
                expected: 300_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("size mismatch"), "{err}");
    e.fake.inject(Fault::ResetAfter(2000).on_path(&e.path));
    let mut b = e.client.get_blob("ns/app", &e.desc).await.unwrap();
    let err = loop {
        match b.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("ended"),
            Err(e) => break e,
        }
    };
    assert_eq!(b.position(), 2000);
    assert!(err.is_retryable(), "{err}");
    // A Content-Length other than the blob's is refused before reading, and retryable.
    e.fake.inject(Fault::ContentLength(10).on_path(&e.path));
    let err = e.client.get_blob("ns/app", &e.desc).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::SizeMismatch { actual: 10, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    // Resume: Range from the offset, strict Content-Range.
    let b = e
        .client
        .get_blob_from("ns/app", &e.desc, 2000)
        .await
        .unwrap();
    assert_eq!(b.start, 2000);
    assert_eq!(read_all(b).await.unwrap(), e.bytes[2000..]);
    assert_eq!(
        e.fake.requests().last().unwrap().range.as_deref(),
        Some("bytes=2000-299999")
    );
}

#[tokio::test]
async fn range_answers_are_checked_strictly() {
    let e = env(0);
    e.fake.inject(Fault::WrongContentRange.on_path(&e.path));
    let err = e
        .client
        .get_blob_from("ns/app", &e.desc, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::RangeMismatch { requested, answered, .. }
            if requested == "100-299999" && answered.contains("101-299999")),
        "{err}"
    );
    // A 200 to a Range: the whole blob, start 0, so the caller restarts.
    e.fake.inject(Fault::IgnoreRange.on_path(&e.path));
    let b = e
        .client
        .get_blob_from("ns/app", &e.desc, 100)
        .await
        .unwrap();
    assert_eq!(b.start, 0);
    assert_eq!(read_all(b).await.unwrap(), e.bytes);
    // A slice.
    let b = e
        .client
        .get_blob_range("ns/app", &e.desc, 10, 20)
        .await
        .unwrap();
    assert_eq!((b.start, b.expected_len()), (10, 10));
    assert_eq!(read_all(b).await.unwrap(), e.bytes[10..20]);
}

#[tokio::test]
async fn an_expiring_token_is_renewed_and_endless_401s_are_bounded() {
    let e = env(0);
    e.fake.require_token(Some(TokenAuth {
        uses_per_token: Some(3),
        reject_all: false,
    }));
    for _ in 0..10 {
        e.client.get_manifest("ns/app", "v1").await.unwrap();
    }
    let issued = e.fake.tokens_issued();
    assert!((3..=6).contains(&issued), "tokens issued: {issued}");

    e.fake.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: true,
    }));
    let before = e.fake.requests().len();
    let t = Instant::now();
    let err = e.client.get_manifest("ns/app", "v1").await.unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(e.fake.requests().len() - before <= 6, "bounded");
}

#[tokio::test]
async fn redirects_lose_credentials_and_expired_presigned_urls_go_back_to_the_registry() {
    let e = env(3);
    e.fake.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: false,
    }));
    e.fake.inject(Fault::Redirect.on_any_blob().forever());
    e.fake.presigned_uses(Some(1));
    // The first presigned URL is spent before it is used (an expiry between the 307
    // and the GET): refused, so the client goes back to the registry for a fresh one.
    e.fake
        .inject(Fault::Status(403).on_blob(&e.desc.digest.to_string()));
    let got = read_all(e.client.get_blob("ns/app", &e.desc).await.unwrap())
        .await
        .unwrap();
    assert_eq!(got, e.bytes);
    let log = e.fake.requests();
    let storage: Vec<_> = log.iter().filter(|r| r.storage).collect();
    assert_eq!(storage.len(), 2, "{log:#?}");
    assert!(
        storage.iter().all(|r| r.authorization.is_none()),
        "credentials leaked: {storage:#?}"
    );
    assert_ne!(storage[0].query, storage[1].query, "a fresh signature");
    let to_registry: Vec<_> = log
        .iter()
        .filter(|r| !r.storage && r.path == e.path)
        .collect();
    assert!(to_registry.iter().all(|r| r.authorization.is_some()));
    assert_eq!(to_registry.len(), 2);
}

#[tokio::test]
async fn foreign_urls_never_get_credentials() {
    let e = env(0);
    e.fake.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: false,
    }));
    e.client.ping().await.unwrap();
    e.client.get_manifest("ns/app", "v1").await.unwrap();
    // The storage listener stands in for a foreign host (its redirects need a signature).
    e.fake.inject(Fault::Redirect.on_any_blob().forever());
    let url = format!("{}{}", e.fake.url(), e.path);
    let err = e
        .client
        .get_foreign_blob(&url, &e.desc, 0)
        .await
        .unwrap_err();
    // The registry wants a token, and a foreign URL never gets one.
    assert!(err.is_unauthorized(), "{err}");
    assert!(
        e.fake
            .requests()
            .iter()
            .filter(|r| r.path == e.path)
            .all(|r| r.authorization.is_none())
    );
    e.fake.require_token(None);
    let got = read_all(e.client.get_foreign_blob(&url, &e.desc, 7).await.unwrap())
        .await
        .unwrap();
    assert_eq!(got, e.bytes[7..]);
    for bad in ["ftp://x/y", "http://u:p@h/x", "not a url"] {
        assert!(matches!(
            e.client.get_foreign_blob(bad, &e.desc, 0).await,
            Err(RegistryError::InvalidArgument { .. })
        ));
    }
}

#[tokio::test]
async fn endpoints_carry_scheme_and_api_root() {
    let e = env(0);
    let ep = Endpoint {
        plain_http: Some(true),
        ..Endpoint::new(&e.fake.host_port())
    };
    let mut o = opts(0);
    o.credentials = hoist_registry::Credentials::from_user_pass("u:p");
    let c = RegistryClient::for_endpoint(&ep, o).unwrap();
    assert!(c.base_url().starts_with("http://"), "{}", c.base_url());
    c.get_manifest("ns/app", "v1").await.unwrap();
    let ep = Endpoint {
        api_root: "cache/x".into(),
        ..ep
    };
    let c = RegistryClient::for_endpoint(&ep, opts(0)).unwrap();
    assert!(c.base_url().ends_with("/cache/x"), "{}", c.base_url());
    let err = c.get_manifest("ns/app", "v1").await.unwrap_err();
    assert!(
        err.to_string().contains("/cache/x/v2/ns/app/manifests/v1"),
        "{err}"
    );
    let bad = Endpoint {
        api_root: "../x".into(),
        ..Endpoint::new("h")
    };
    assert!(RegistryClient::for_endpoint(&bad, opts(0)).is_err());
}
