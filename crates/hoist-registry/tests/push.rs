//! The push side against the real Distribution registry (plain, TLS + basic auth, token
//! auth) and against the fault-injecting fake: monolithic and chunked uploads, the
//! fallback when chunks are refused, retries, mounts, manifest and index puts, referrers,
//! and the errors for wrong content.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hoist_registry::{
    BlobBody, ClientOptions, Credentials, MountOutcome, RegistryClient, RegistryError,
    SharedProgress, UploadMethod, UploadOptions,
};
use hoist_testkit::fake::{FakeRegistry, Fault, TokenAuth};
use hoist_testkit::images::{self, BuiltImage, seeded_bytes, sha256_digest};
use hoist_testkit::registry::Registry;
use hoist_testkit::{require_peers, skopeo};
use hoist_types::{Descriptor, Digest, MediaType, Progress, ProgressEvent};

const MIB: u64 = 1 << 20;

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

fn opts() -> ClientOptions {
    let mut o = ClientOptions::default();
    o.connect_timeout = Duration::from_secs(5);
    o.read_timeout = Duration::from_secs(20);
    o.certs_d_roots = vec![];
    o.auth_file = Some(no_auth_file());
    o.retry.max_retries = 3;
    o.retry.initial_delay = Duration::from_millis(20);
    o.retry.max_delay = Duration::from_millis(100);
    o.retry.max_retry_after = Duration::from_secs(2);
    o.retry.max_elapsed = Duration::from_secs(30);
    o.upload = upload(16 * MIB, 8 * MIB);
    o
}

fn upload(monolithic_threshold: u64, chunk_size: u64) -> UploadOptions {
    let mut u = UploadOptions::default();
    u.monolithic_threshold = monolithic_threshold;
    u.chunk_size = chunk_size;
    u
}

fn client_for(reg: &Registry) -> RegistryClient {
    let mut o = opts();
    o.cert_dir = reg.cert_dir().map(Into::into);
    o.credentials = reg.credentials().map(|(u, p)| Credentials {
        username: u.into(),
        password: p.into(),
    });
    RegistryClient::new(&reg.host_port(), o).unwrap()
}

fn blob_desc(bytes: &[u8]) -> Descriptor {
    Descriptor::new(
        MediaType::OciLayerGzip,
        Digest::sha256_of(bytes),
        bytes.len() as u64,
    )
}

/// Read a blob back, streamed, and hash it.
async fn fetch_digest(c: &RegistryClient, repo: &str, desc: &Descriptor) -> (u64, Digest) {
    let mut r = c.get_blob(repo, desc).await.unwrap();
    let mut h = desc.digest.algorithm().hasher();
    let mut n = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        h.update(&chunk);
        n += chunk.len() as u64;
    }
    (n, h.finish())
}

fn stream_of(bytes: Vec<u8>, piece: usize) -> BlobBody {
    let pieces: Vec<io::Result<Bytes>> = bytes
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    BlobBody::from_stream(futures_util::stream::iter(pieces))
}

/// Push every blob of `img` (config and layers) to `repo`.
async fn push_image_blobs(c: &RegistryClient, repo: &str, img: &BuiltImage) {
    for (d, b) in img.blobs() {
        if d == img.manifest.digest {
            continue;
        }
        let desc = blob_desc(b);
        if !c.blob_exists(repo, &desc).await.unwrap() {
            c.push_blob(repo, &desc, BlobBody::from_bytes(b.to_vec()))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn monolithic_and_chunked_uploads_round_trip() {
    require_peers!(Peer::Registry);
    let reg = Registry::plain();
    let c = client_for(&reg);

    // Small: one PUT.
    let small = seeded_bytes(300_000, 1);
    let sd = blob_desc(&small);
    assert!(!c.blob_exists("push/small", &sd).await.unwrap());
    let p = c
        .push_blob("push/small", &sd, BlobBody::from_bytes(small.clone()))
        .await
        .unwrap();
    assert_eq!((p.method, p.data_requests), (UploadMethod::Monolithic, 1));
    assert!(c.blob_exists("push/small", &sd).await.unwrap());
    let back = c.get_blob_bytes("push/small", &sd, 1 << 20).await.unwrap();
    assert!(back == small);
    // A descriptor with the wrong size is an error, not "absent".
    let wrong_size = Descriptor::new(sd.media_type.clone(), sd.digest.clone(), sd.size + 1);
    let e = c.blob_exists("push/small", &wrong_size).await.unwrap_err();
    assert!(e.to_string().contains("descriptor says"), "{e}");

    // Large, from a file: 40 MiB in 8 MiB chunks.
    let big = seeded_bytes(40 * MIB as usize, 2);
    let bd = blob_desc(&big);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &big).unwrap();
    assert!(!c.blob_exists("push/big", &bd).await.unwrap());
    let p = c
        .push_blob("push/big", &bd, BlobBody::from_path(file.path()).unwrap())
        .await
        .unwrap();
    assert_eq!((p.method, p.data_requests), (UploadMethod::Chunked, 5));
    assert!(c.blob_exists("push/big", &bd).await.unwrap());
    assert_eq!(
        fetch_digest(&c, "push/big", &bd).await,
        (bd.size, bd.digest.clone())
    );

    // Large, from a one-shot stream (a network copy): 20 MiB, chunked.
    let mid = seeded_bytes(20 * MIB as usize, 3);
    let md = blob_desc(&mid);
    let p = c
        .push_blob("push/stream", &md, stream_of(mid, 100_000))
        .await
        .unwrap();
    assert_eq!((p.method, p.data_requests), (UploadMethod::Chunked, 3));
    assert_eq!(
        fetch_digest(&c, "push/stream", &md).await,
        (md.size, md.digest.clone())
    );

    // Registry to registry: the big blob again, streamed from the registry itself.
    let p = c
        .push_blob(
            "push/copy",
            &bd,
            BlobBody::from_registry(c.clone(), "push/big", &bd),
        )
        .await
        .unwrap();
    assert_eq!(p.method, UploadMethod::Chunked);
    assert_eq!(
        fetch_digest(&c, "push/copy", &bd).await,
        (bd.size, bd.digest.clone())
    );

    // The empty blob.
    let ed = blob_desc(b"");
    c.push_blob("push/small", &ed, BlobBody::from_bytes(Vec::new()))
        .await
        .unwrap();
    assert!(c.blob_exists("push/small", &ed).await.unwrap());
}

#[tokio::test]
async fn wrong_content_is_refused_before_the_registry_completes_it() {
    require_peers!(Peer::Registry);
    let reg = Registry::plain();
    let c = client_for(&reg);
    for (size, name) in [(200_000usize, "monolithic"), (20 * MIB as usize, "chunked")] {
        let good = seeded_bytes(size, 9);
        let d = blob_desc(&good);
        let mut bad = good.clone();
        bad[size / 2] ^= 1;
        let e = c
            .push_blob("push/bad", &d, BlobBody::from_bytes(bad))
            .await
            .unwrap_err();
        match &e {
            RegistryError::SourceDigest { expected, actual } => {
                assert_eq!(expected, &d.digest, "{name}");
                assert_ne!(actual, &d.digest, "{name}");
            }
            e => panic!("{name}: want SourceDigest, got {e}"),
        }
        assert!(!c.blob_exists("push/bad", &d).await.unwrap(), "{name}");
        // A source shorter than its descriptor.
        let e = c
            .push_blob(
                "push/bad",
                &d,
                BlobBody::from_bytes(good[..size - 10].to_vec()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, RegistryError::SourceSize { actual, .. } if actual == size as u64 - 10),
            "{name}: {e}"
        );
        assert!(!c.blob_exists("push/bad", &d).await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn manifests_and_indexes_by_tag_and_digest() {
    require_peers!(Peer::Registry, Peer::Skopeo);
    let reg = Registry::plain();
    let c = client_for(&reg);
    let img = images::sample_multi_layer().build().unwrap();
    let mt = MediaType::parse(&img.manifest.media_type);

    // A manifest whose blobs are missing is refused with the registry's code.
    let e = c
        .put_manifest("push/app", "v1", &img.manifest_bytes, &mt)
        .await
        .unwrap_err();
    match &e {
        RegistryError::PushRejected {
            status, code, url, ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(code.as_deref(), Some("MANIFEST_BLOB_UNKNOWN"), "{e}");
            assert!(url.contains("/v2/push/app/manifests/v1"), "{url}");
        }
        e => panic!("want PushRejected, got {e}"),
    }

    push_image_blobs(&c, "push/app", &img).await;
    let d = c
        .put_manifest("push/app", "v1", &img.manifest_bytes, &mt)
        .await
        .unwrap();
    assert_eq!(d.to_string(), img.manifest.digest);
    let got = c.get_manifest("push/app", "v1").await.unwrap();
    assert!(got.bytes == img.manifest_bytes);
    assert_eq!(got.media_type, mt);
    // By digest, into another repository of the same registry.
    push_image_blobs(&c, "push/other", &img).await;
    let d2 = c
        .put_manifest("push/other", &img.manifest.digest, &img.manifest_bytes, &mt)
        .await
        .unwrap();
    assert_eq!(d2, d);
    let got = c
        .get_manifest("push/other", &img.manifest.digest)
        .await
        .unwrap();
    assert!(got.bytes == img.manifest_bytes);
    // A digest reference that is not the bytes' digest never leaves the client.
    let other = Digest::sha256_of(b"something else").to_string();
    let e = c
        .put_manifest("push/other", &other, &img.manifest_bytes, &mt)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");

    // skopeo reads back what was pushed, byte for byte.
    let raw = skopeo::skopeo_inspect_raw(
        &reg.image_ref("push/app:v1"),
        &skopeo::SkopeoOpts::for_registry(&reg),
    )
    .unwrap();
    assert!(raw == img.manifest_bytes);

    // An index, by tag and by digest.
    let ix = images::sample_index().build().unwrap();
    for member in &ix.images {
        push_image_blobs(&c, "push/multi", member).await;
        c.put_manifest(
            "push/multi",
            &member.manifest.digest,
            &member.manifest_bytes,
            &MediaType::parse(&member.manifest.media_type),
        )
        .await
        .unwrap();
    }
    let imt = MediaType::parse(&ix.index.media_type);
    let id = c
        .put_manifest("push/multi", "all", &ix.index_bytes, &imt)
        .await
        .unwrap();
    assert_eq!(id.to_string(), ix.index.digest);
    c.put_manifest("push/multi", &ix.index.digest, &ix.index_bytes, &imt)
        .await
        .unwrap();
    for r in ["all", ix.index.digest.as_str()] {
        let got = c.get_manifest("push/multi", r).await.unwrap();
        assert!(got.bytes == ix.index_bytes, "{r}");
        assert!(got.media_type.is_index(), "{r}");
    }

    // Distribution 2.8 has no referrers API: a clear Unsupported.
    let e = c.referrers("push/app", &d, None).await.unwrap_err();
    assert!(
        matches!(e, RegistryError::Unsupported { status: 404, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn token_auth_scopes_and_cross_repository_mounts() {
    require_peers!(Peer::Registry, Peer::Openssl);
    let reg = Registry::token();
    let c = client_for(&reg);
    let big = seeded_bytes(20 * MIB as usize, 4);
    let d = blob_desc(&big);
    let p = c
        .push_blob("src/app", &d, BlobBody::from_bytes(big.clone()))
        .await
        .unwrap();
    assert_eq!(p.method, UploadMethod::Chunked);

    // Mounted: not a byte sent again, and the body was never opened.
    let never = BlobBody::reopenable(|_| -> io::Result<io::Empty> {
        panic!("a mounted blob must not be read")
    });
    let p = c
        .push_blob_or_mount("dst/app", "src/app", &d, never)
        .await
        .unwrap();
    assert_eq!((p.method, p.data_requests), (UploadMethod::Mounted, 0));
    assert!(c.blob_exists("dst/app", &d).await.unwrap());
    assert_eq!(
        c.mount_blob("dst/again", "src/app", &d).await.unwrap(),
        MountOutcome::Mounted
    );
    assert_eq!(
        fetch_digest(&c, "dst/again", &d).await,
        (d.size, d.digest.clone())
    );

    // The token requests named the right scopes, and each scope got its own token.
    let reqs = reg.token_server().unwrap().requests();
    let asked = |want: &[&str]| {
        reqs.iter().any(|r| {
            want.iter().all(|w| r.scopes.iter().any(|s| s == w)) && r.scopes.len() == want.len()
        })
    };
    assert!(asked(&["repository:src/app:pull,push"]), "{reqs:?}");
    assert!(
        asked(&["repository:dst/app:pull,push", "repository:src/app:pull"]),
        "{reqs:?}"
    );
    assert!(
        asked(&["repository:dst/again:pull"]),
        "the pull after the mount used a pull token: {reqs:?}"
    );

    // A blob the source repository does not have: the registry opens an upload instead;
    // `mount_blob` deletes it, `push_blob_or_mount` uploads into it.
    let small = seeded_bytes(50_000, 5);
    let sd = blob_desc(&small);
    assert!(matches!(
        c.mount_blob("dst/app", "src/app", &sd).await.unwrap(),
        MountOutcome::NotMounted { .. }
    ));
    assert!(!c.blob_exists("dst/app", &sd).await.unwrap());
    let p = c
        .push_blob_or_mount("dst/app", "src/app", &sd, BlobBody::from_bytes(small))
        .await
        .unwrap();
    assert_eq!((p.method, p.data_requests), (UploadMethod::Monolithic, 1));
    assert!(c.blob_exists("dst/app", &sd).await.unwrap());

    // Anonymous: pulls work (a pull token), pushes are refused, and the pull-only token
    // is never used for the push (nor the other way round).
    let anon = RegistryClient::new(&reg.host_port(), opts()).unwrap();
    assert_eq!(
        fetch_digest(&anon, "src/app", &d).await,
        (d.size, d.digest.clone())
    );
    let e = anon
        .push_blob(
            "src/app",
            &sd,
            BlobBody::from_bytes(seeded_bytes(50_000, 5)),
        )
        .await
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e}");
    assert!(!c.blob_exists("src/app", &sd).await.unwrap());
    let e = anon
        .put_manifest("src/app", "v1", b"{}", &MediaType::OciManifest)
        .await
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e}");
}

#[tokio::test]
async fn tls_and_basic_auth() {
    require_peers!(Peer::Registry, Peer::Openssl, Peer::Htpasswd);
    let reg = Registry::tls_basic();
    let c = client_for(&reg);
    let img = images::sample_docker().build().unwrap();
    push_image_blobs(&c, "secure/app", &img).await;
    let mt = MediaType::parse(&img.manifest.media_type);
    c.put_manifest("secure/app", "v1", &img.manifest_bytes, &mt)
        .await
        .unwrap();
    assert!(c.get_manifest("secure/app", "v1").await.unwrap().bytes == img.manifest_bytes);
    let big = seeded_bytes(17 * MIB as usize, 6);
    let d = blob_desc(&big);
    let p = c
        .push_blob("secure/app", &d, BlobBody::from_bytes(big))
        .await
        .unwrap();
    assert_eq!((p.method, p.data_requests), (UploadMethod::Chunked, 3));
    // Without credentials: refused.
    let anon = RegistryClient::new(&reg.host_port(), {
        let mut o = opts();
        o.cert_dir = reg.cert_dir().map(Into::into);
        o
    })
    .unwrap();
    let e = anon
        .push_blob("secure/app", &d, BlobBody::from_bytes(Vec::new()))
        .await
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e}");
}

// ---- The fault-injecting fake ----

fn fake_client(fake: &FakeRegistry, chunk: u64) -> RegistryClient {
    let mut o = opts();
    o.upload = upload(chunk, chunk);
    RegistryClient::new(&fake.host_port(), o).unwrap()
}

fn patches(fake: &FakeRegistry) -> Vec<(Option<String>, u64, u16)> {
    fake.upload_requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| (r.content_range, r.body_len, r.status))
        .collect()
}

#[tokio::test]
async fn refused_chunks_fall_back_to_one_put() {
    let fake = FakeRegistry::start();
    fake.accept_pushes(true);
    fake.reject_chunked_uploads(true);
    let c = fake_client(&fake, MIB);
    let data = seeded_bytes(3 * MIB as usize + 17, 7);
    let d = blob_desc(&data);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let bodies = [
        ("file", BlobBody::from_path(file.path()).unwrap()),
        ("stream", stream_of(data.clone(), 50_000)),
    ];
    for (i, (name, body)) in bodies.into_iter().enumerate() {
        let repo = format!("fb/r{i}");
        fake.reset_hits();
        let p = c.push_blob(&repo, &d, body).await.unwrap();
        assert_eq!(p.method, UploadMethod::ChunkedFellBack, "{name}");
        assert!(
            fake.blob(&repo, &d.digest.to_string()).unwrap() == data,
            "{name}"
        );
        let log = fake.upload_requests();
        let seq: Vec<(&str, u16)> = log.iter().map(|r| (r.method.as_str(), r.status)).collect();
        assert_eq!(
            seq,
            [
                ("POST", 202),
                ("PATCH", 416),
                ("DELETE", 204),
                ("POST", 202),
                ("PUT", 201)
            ],
            "{name}"
        );
        assert_eq!(log[1].content_range.as_deref(), Some("0-1048575"), "{name}");
        assert_eq!(log[4].body_len, d.size, "{name}");
    }
}

/// Records the `BlobProgress` totals and the retries reported.
#[derive(Default)]
struct Recorder {
    done: Mutex<Vec<u64>>,
    retries: Mutex<u32>,
}

impl Progress for Recorder {
    fn event(&self, e: &ProgressEvent<'_>) {
        match e {
            ProgressEvent::BlobProgress { done, .. } => self.done.lock().unwrap().push(*done),
            ProgressEvent::Retry { .. } => *self.retries.lock().unwrap() += 1,
            _ => {}
        }
    }
}

#[tokio::test]
async fn chunked_uploads_resume_after_5xx() {
    let fake = FakeRegistry::start();
    fake.accept_pushes(true);
    let rec = Arc::new(Recorder::default());
    let c = RegistryClient::new(&fake.host_port(), {
        let mut o = opts();
        o.upload = upload(MIB, MIB);
        o.progress = Some(SharedProgress(rec.clone()));
        o
    })
    .unwrap();
    let data = seeded_bytes(4 * MIB as usize, 8);
    let d = blob_desc(&data);
    // The third PATCH fails once: the session is asked where it stands, and the chunk is
    // sent again, from a file and from a one-shot stream (its kept chunk).
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let bodies = [
        ("file", BlobBody::from_path(file.path()).unwrap()),
        ("stream", stream_of(data.clone(), 70_000)),
    ];
    for (i, (name, body)) in bodies.into_iter().enumerate() {
        let repo = format!("retry/r{i}");
        fake.reset_hits();
        fake.clear_faults();
        fake.inject(Fault::Status(503).on_upload("PATCH").skip(2));
        let p = c.push_blob(&repo, &d, body).await.unwrap();
        assert_eq!((p.method, p.retries), (UploadMethod::Chunked, 1), "{name}");
        assert!(
            fake.blob(&repo, &d.digest.to_string()).unwrap() == data,
            "{name}"
        );
        let ranges: Vec<_> = patches(&fake);
        assert_eq!(ranges.len(), 5, "{name}: {ranges:?}");
        assert_eq!(ranges[2].2, 503);
        assert_eq!(ranges[3].0.as_deref(), Some("2097152-3145727"), "{name}");
        assert!(
            fake.upload_requests()
                .iter()
                .any(|r| r.method == "GET" && r.status == 204),
            "{name}: the session's status was asked"
        );
        // Bytes sent are reported once each, in order, up to the size; the retry too.
        let done = std::mem::take(&mut *rec.done.lock().unwrap());
        assert!(done.windows(2).all(|w| w[0] < w[1]), "{name}");
        assert_eq!(done.last(), Some(&d.size), "{name}");
        assert_eq!(
            std::mem::take(&mut *rec.retries.lock().unwrap()),
            1,
            "{name}"
        );
    }

    // A monolithic PUT that fails twice is sent again in a new session.
    fake.clear_faults();
    fake.reset_hits();
    fake.inject(Fault::Status(500).on_upload("PUT").times(2));
    let small = seeded_bytes(100_000, 9);
    let sd = blob_desc(&small);
    let p = c
        .push_blob("retry/small", &sd, BlobBody::from_bytes(small.clone()))
        .await
        .unwrap();
    assert_eq!(
        (p.method, p.data_requests, p.retries),
        (UploadMethod::Monolithic, 3, 2)
    );
    assert!(fake.blob("retry/small", &sd.digest.to_string()).unwrap() == small);

    // Retries are bounded: a registry that always fails gives up with the last error.
    fake.clear_faults();
    fake.inject(Fault::Status(503).on_upload("PUT").forever());
    let e = c
        .push_blob("retry/never", &sd, BlobBody::from_bytes(small))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::GaveUp { attempts: 4, .. }),
        "{e}"
    );
    assert!(
        matches!(e.root(), RegistryError::Http { status: 503, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn one_shot_bodies_that_cannot_be_replayed_say_so() {
    let fake = FakeRegistry::start();
    fake.accept_pushes(true);
    let c = fake_client(&fake, MIB);
    let data = seeded_bytes(3 * MIB as usize, 10);
    let d = blob_desc(&data);
    // The second PATCH is refused: falling back needs byte 0 again.
    fake.inject(Fault::Status(416).on_upload("PATCH").skip(1));
    let e = c
        .push_blob("oneshot/a", &d, stream_of(data.clone(), 64_000))
        .await
        .unwrap_err();
    match &e {
        RegistryError::NotReplayable { offset, digest, .. } => {
            assert_eq!(digest, &d.digest);
            assert!(*offset >= MIB, "{offset}");
        }
        e => panic!("want NotReplayable, got {e}"),
    }
    assert!(e.to_string().contains("one-shot"), "{e}");
    assert!(fake.blob("oneshot/a", &d.digest.to_string()).is_none());
    // The same from a file falls back and succeeds.
    fake.clear_faults();
    fake.inject(Fault::Status(416).on_upload("PATCH").skip(1));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let p = c
        .push_blob("oneshot/b", &d, BlobBody::from_path(file.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(p.method, UploadMethod::ChunkedFellBack);
    assert!(fake.blob("oneshot/b", &d.digest.to_string()).unwrap() == data);
}

#[tokio::test]
async fn refused_mounts_fall_back_to_uploads() {
    let fake = FakeRegistry::start();
    fake.accept_pushes(true);
    fake.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: false,
    }));
    let c = fake_client(&fake, MIB);
    let data = seeded_bytes(200_000, 11);
    let d = blob_desc(&data);
    let ds = d.digest.to_string();
    fake.put_blob("secret/src", &ds, data.clone());
    fake.put_blob("open/src", &ds, data.clone());
    fake.deny_mounts_from("secret/src");

    // The user cannot read the source: 401 insufficient_scope, then a plain upload.
    assert!(matches!(
        c.mount_blob("dst/a", "secret/src", &d).await.unwrap(),
        MountOutcome::NotMounted { .. }
    ));
    let p = c
        .push_blob_or_mount(
            "dst/a",
            "secret/src",
            &d,
            BlobBody::from_bytes(data.clone()),
        )
        .await
        .unwrap();
    assert_eq!(p.method, UploadMethod::Monolithic);
    assert!(fake.blob("dst/a", &ds).unwrap() == data);

    // A readable source mounts.
    fake.reset_hits();
    let p = c
        .push_blob_or_mount("dst/b", "open/src", &d, BlobBody::from_bytes(data.clone()))
        .await
        .unwrap();
    assert_eq!(p.method, UploadMethod::Mounted);
    let log = fake.upload_requests();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0]
            .query
            .as_deref()
            .unwrap_or("")
            .contains("from=open%2Fsrc"),
        "{log:?}"
    );

    // A source without the blob: the session the registry opened is used, not leaked.
    fake.reset_hits();
    let other = seeded_bytes(1000, 12);
    let od = blob_desc(&other);
    let p = c
        .push_blob_or_mount("dst/c", "open/src", &od, BlobBody::from_bytes(other))
        .await
        .unwrap();
    assert_eq!(p.method, UploadMethod::Monolithic);
    let methods: Vec<String> = fake
        .upload_requests()
        .into_iter()
        .map(|r| r.method)
        .collect();
    assert_eq!(methods, ["POST", "PUT"]);
    // `mount_blob` deletes it.
    fake.reset_hits();
    let absent = blob_desc(b"absent");
    assert!(matches!(
        c.mount_blob("dst/c", "open/src", &absent).await.unwrap(),
        MountOutcome::NotMounted { .. }
    ));
    let methods: Vec<(String, u16)> = fake
        .upload_requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        methods,
        [("POST".to_string(), 202), ("DELETE".to_string(), 204)]
    );
}

#[tokio::test]
async fn manifest_answers_are_checked_and_referrers_read() {
    let fake = FakeRegistry::start();
    fake.accept_pushes(true);
    let c = fake_client(&fake, MIB);
    let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let d = c
        .put_manifest("man/a", "v1", m, &MediaType::OciManifest)
        .await
        .unwrap();
    assert_eq!(d.to_string(), sha256_digest(m));
    assert!(c.get_manifest("man/a", "v1").await.unwrap().bytes == m);

    // A registry that says it stored other bytes.
    fake.set_route(
        "/v2/man/a/manifests/v2",
        hoist_testkit::FakeResponse::status(201)
            .header("Docker-Content-Digest", &sha256_digest(b"other")),
    );
    let e = c
        .put_manifest("man/a", "v2", m, &MediaType::OciManifest)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    // A refusal names the code.
    fake.set_route(
        "/v2/man/a/manifests/v3",
        hoist_testkit::FakeResponse::error(400, "MANIFEST_INVALID", "manifest invalid"),
    );
    let e = c
        .put_manifest("man/a", "v3", m, &MediaType::OciManifest)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::PushRejected { code: Some(c), status: 400, .. } if c == "MANIFEST_INVALID"),
        "{e}"
    );
    assert!(e.to_string().contains("manifest man/a:v3"), "{e}");

    // Referrers: unsupported (404), or an index filtered here when the registry did not.
    let e = c.referrers("man/a", &d, None).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unsupported { .. }), "{e}");
    let sig = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let ix = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":10,"artifactType":"{sig}"}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":11,"artifactType":"application/spdx+json"}}]}}"#,
        sha256_digest(b"a"),
        sha256_digest(b"b")
    );
    fake.set_route(
        &format!("/v2/man/a/referrers/{d}"),
        hoist_testkit::FakeResponse::ok(ix.clone())
            .header("Content-Type", "application/vnd.oci.image.index.v1+json"),
    );
    let all = c.referrers("man/a", &d, None).await.unwrap();
    assert_eq!(all.descriptors.len(), 2);
    assert!(all.index.bytes == ix.as_bytes());
    let sigs = c.referrers("man/a", &d, Some(sig)).await.unwrap();
    assert_eq!(sigs.descriptors.len(), 1);
    assert_eq!(sigs.descriptors[0].artifact_type.as_deref(), Some(sig));
    let q = fake
        .requests()
        .into_iter()
        .rfind(|r| r.path.contains("/referrers/"))
        .unwrap();
    assert!(q.query.unwrap_or_default().contains("artifactType="));
}
