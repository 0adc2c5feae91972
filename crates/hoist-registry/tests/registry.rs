//! Integration tests against the in-test registry of `support/` on 127.0.0.1.

mod support;

use std::time::Duration;

use hoist_registry::{ClientOptions, Credentials, RegistryClient, RegistryError};
use hoist_types::{Descriptor, Digest, MAX_MANIFEST_SIZE, MediaType};
use support::{AuthMode, Config, Served, Server, St, sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn opts() -> ClientOptions {
    let mut o = ClientOptions::default();
    o.connect_timeout = Duration::from_secs(5);
    o.read_timeout = Duration::from_secs(10);
    // These tests look at single answers; retries have their own tests.
    o.retry = hoist_registry::RetryPolicy::none();
    o
}

/// [`opts`] with some fields changed.
fn opts_with(change: impl FnOnce(&mut ClientOptions)) -> ClientOptions {
    let mut o = opts();
    change(&mut o);
    o
}

fn creds(u: &str, p: &str) -> Option<Credentials> {
    Some(Credentials {
        username: u.into(),
        password: p.into(),
    })
}

fn client(s: &Server, o: ClientOptions) -> RegistryClient {
    RegistryClient::new(&s.host(), o).unwrap()
}

/// An image: config blob + one layer blob + manifest under `repo:tag`. Returns the
/// manifest bytes and the config descriptor.
fn sample(st: &St, repo: &str, tag: &str) -> (Vec<u8>, Descriptor) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = st.add_blob(config);
    let layer = vec![7u8; 1000];
    let ld = st.add_blob(&layer);
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{ld}","size":1000}}]}}"#,
        config.len()
    );
    st.add_manifest(repo, tag, served(m.as_bytes()));
    st.add_manifest(repo, &sha256(m.as_bytes()), served(m.as_bytes()));
    let desc = Descriptor::new(
        MediaType::OciConfig,
        Digest::parse(&cd).unwrap(),
        config.len() as u64,
    );
    (m.into_bytes(), desc)
}

fn served(body: &[u8]) -> Served {
    Served {
        content_type: OCI_MANIFEST.into(),
        body: body.to_vec().into(),
        dcd: None,
        chunked: false,
    }
}

#[tokio::test]
async fn anonymous_bearer_token_is_cached() {
    let s = Server::start(Config {
        auth: AuthMode::Bearer,
        ..Config::default()
    })
    .await;
    let (bytes, cfg) = sample(&s.st, "lib/app", "v1");
    s.st.tags
        .lock()
        .unwrap()
        .insert("lib/app".into(), vec!["v1".into()]);
    let c = client(&s, opts());
    let m = c.get_manifest("lib/app", "v1").await.unwrap();
    assert_eq!(m.bytes, bytes);
    assert_eq!(m.digest.to_string(), sha256(&bytes));
    assert_eq!(m.media_type, MediaType::OciManifest);
    let by_digest = c
        .get_manifest("lib/app", &m.digest.to_string())
        .await
        .unwrap();
    assert_eq!(by_digest.bytes, bytes);
    c.get_blob_bytes("lib/app", &cfg, 1 << 20).await.unwrap();
    assert_eq!(c.list_tags("lib/app").await.unwrap(), vec!["v1"]);
    // A clone shares the cache.
    c.clone().get_manifest("lib/app", "v1").await.unwrap();
    assert_eq!(s.st.token_count(), 1, "one token for one scope");
    let t = &s.st.tokens_log.lock().unwrap()[0];
    assert_eq!(t.authorization, None, "anonymous");
    assert!(
        t.path.contains("scope=repository%3Alib%2Fapp%3Apull"),
        "{}",
        t.path
    );
    assert!(t.path.contains("service=test-registry"), "{}", t.path);
    assert!(
        c.base_url().starts_with("http://127.0.0.1:"),
        "{}",
        c.base_url()
    );
}

#[tokio::test]
async fn bearer_with_basic_credentials() {
    let s = Server::start(Config {
        auth: AuthMode::Bearer,
        user: Some(("alice".into(), "s3cret".into())),
        ..Config::default()
    })
    .await;
    let (_, cfg) = sample(&s.st, "app", "latest");
    let c = client(&s, opts_with(|o| o.credentials = creds("alice", "s3cret")));
    c.ping().await.unwrap();
    c.get_manifest("app", "latest").await.unwrap();
    c.get_blob_bytes("app", &cfg, 1 << 20).await.unwrap();
    c.head_manifest("app", "latest").await.unwrap().unwrap();
    assert_eq!(s.st.token_count(), 1);
    let t = s.st.tokens_log.lock().unwrap()[0].clone();
    assert!(t.authorization.unwrap().starts_with("Basic "));
    assert!(t.path.contains("account=alice"), "{}", t.path);
    // Registry requests carried the token, never the password.
    for seen in s.st.seen() {
        if let Some(a) = seen.authorization {
            assert!(a.starts_with("Bearer "), "{a}");
        }
    }
    c.check_credentials().await.unwrap();
}

#[tokio::test]
async fn bad_credentials_are_unauthorized() {
    let s = Server::start(Config {
        auth: AuthMode::Bearer,
        user: Some(("alice".into(), "s3cret".into())),
        ..Config::default()
    })
    .await;
    sample(&s.st, "app", "latest");
    let c = client(&s, opts_with(|o| o.credentials = creds("alice", "wrong")));
    let e = c.get_manifest("app", "latest").await.unwrap_err();
    assert!(e.is_unauthorized(), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("/token") && msg.contains("alice"), "{msg}");
    assert!(msg.contains("incorrect username or password"), "{msg}");
    assert!(c.check_credentials().await.is_err());

    // Basic auth: wrong password, then none at all. Bounded retries.
    let s = Server::start(Config {
        auth: AuthMode::Basic,
        user: Some(("bob".into(), "pw".into())),
        ..Config::default()
    })
    .await;
    sample(&s.st, "app", "latest");
    let c = client(&s, opts_with(|o| o.credentials = creds("bob", "nope")));
    let e = c.get_manifest("app", "latest").await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::Unauthorized { url, .. } if url.contains("/v2/app/manifests/latest")),
        "{e}"
    );
    assert!(e.to_string().contains("rejected"), "{e}");
    let n =
        s.st.seen()
            .iter()
            .filter(|r| r.path.contains("manifests"))
            .count();
    assert!(n <= 3, "{n} manifest requests");

    let anon = client(&s, opts_with(|o| o.auth_file = Some(empty_auth_file())));
    let e = anon.get_manifest("app", "latest").await.unwrap_err();
    assert!(e.to_string().contains("no credentials"), "{e}");
}

fn empty_auth_file() -> std::path::PathBuf {
    let d = tempfile::tempdir().unwrap().keep();
    let p = d.join("auth.json");
    std::fs::write(&p, "{}").unwrap();
    p
}

#[tokio::test]
async fn basic_auth_and_credentials_from_file() {
    let s = Server::start(Config {
        auth: AuthMode::Basic,
        user: Some(("bob".into(), "pw".into())),
        ..Config::default()
    })
    .await;
    sample(&s.st, "app", "latest");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    hoist_registry::auth_config::login(
        &s.host(),
        &Credentials {
            username: "bob".into(),
            password: "pw".into(),
        },
        Some(&file),
    )
    .unwrap();
    let c = client(&s, opts_with(|o| o.auth_file = Some(file.clone())));
    c.get_manifest("app", "latest").await.unwrap();
    assert!(
        s.st.seen()
            .iter()
            .any(|r| r.authorization.as_deref() == Some("Basic Ym9iOnB3"))
    );
    assert!(hoist_registry::auth_config::logout(&s.host(), Some(&file)).unwrap());
}

#[tokio::test]
async fn refresh_token_and_password_grants() {
    let s = Server::start(Config {
        auth: AuthMode::Bearer,
        refresh_token: Some("refresh-1".into()),
        ..Config::default()
    })
    .await;
    sample(&s.st, "app", "v1");
    let c = client(
        &s,
        opts_with(|o| o.credentials = creds("<token>", "refresh-1")),
    );
    c.get_manifest("app", "v1").await.unwrap();
    let t = s.st.tokens_log.lock().unwrap()[0].clone();
    assert_eq!(t.method, "POST");
    for want in [
        "grant_type=refresh_token",
        "refresh_token=refresh-1",
        "client_id=hoist",
        "service=test-registry",
        "scope=repository%3Aapp%3Apull",
    ] {
        assert!(t.body.contains(want), "{want} in {}", t.body);
    }

    // GET with basic creds answers 405: fall back to POST grant_type=password.
    let s = Server::start(Config {
        auth: AuthMode::Bearer,
        user: Some(("carol".into(), "pw".into())),
        token_get_disabled: true,
        ..Config::default()
    })
    .await;
    sample(&s.st, "app", "v1");
    let c = client(&s, opts_with(|o| o.credentials = creds("carol", "pw")));
    c.get_manifest("app", "v1").await.unwrap();
    let log = s.st.tokens_log.lock().unwrap().clone();
    assert_eq!(
        log.iter().map(|t| t.method.as_str()).collect::<Vec<_>>(),
        ["GET", "POST"]
    );
    assert!(log[1].body.contains("grant_type=password") && log[1].body.contains("username=carol"));
}

#[tokio::test]
async fn credentials_never_go_to_a_foreign_realm() {
    let s = Server::start(Config {
        auth: AuthMode::Bearer,
        ..Config::default()
    })
    .await;
    // Same server, but named differently: another host as far as the client knows.
    s.st.cfg(|c| c.realm = Some(format!("http://localhost:{}/token", s.addr.port())));
    sample(&s.st, "app", "v1");
    let c = client(&s, opts_with(|o| o.credentials = creds("alice", "pw")));
    c.get_manifest("app", "v1").await.unwrap();
    let log = s.st.tokens_log.lock().unwrap().clone();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].authorization, None);
    assert!(!log[0].path.contains("account="));
    // `login` cannot verify credentials it refuses to send.
    let e = c.check_credentials().await.unwrap_err();
    assert!(
        e.is_unauthorized() && e.to_string().contains("localhost"),
        "{e}"
    );
}

#[tokio::test]
async fn expired_token_is_renewed_once() {
    let s = Server::start(Config {
        auth: AuthMode::Bearer,
        ..Config::default()
    })
    .await;
    sample(&s.st, "app", "v1");
    let c = client(&s, opts());
    c.get_manifest("app", "v1").await.unwrap();
    s.st.revoke_tokens();
    c.get_manifest("app", "v1").await.unwrap();
    assert_eq!(s.st.token_count(), 2);
}

#[tokio::test]
async fn manifest_digest_checks() {
    let s = Server::start(Config::default()).await;
    let (bytes, _) = sample(&s.st, "app", "v1");
    let other = sha256(b"something else");
    // Docker-Content-Digest disagrees with the bytes.
    let mut bad = served(&bytes);
    bad.dcd = Some(other.clone());
    s.st.add_manifest("app", "lying", bad);
    let c = client(&s, opts());
    let e = c.get_manifest("app", "lying").await.unwrap_err();
    match &e {
        RegistryError::DigestMismatch {
            url,
            expected,
            actual,
        } => {
            assert!(url.ends_with("/v2/app/manifests/lying"), "{url}");
            assert_eq!(expected.to_string(), other);
            assert_eq!(actual.to_string(), sha256(&bytes));
        }
        e => panic!("{e}"),
    }
    assert!(e.to_string().contains("/v2/app/manifests/lying"));
    // Asked by digest, served other bytes (with a matching lie in the header).
    let mut swapped = served(&bytes);
    swapped.dcd = Some(other.clone());
    s.st.add_manifest("app", &other, swapped);
    let e = c.get_manifest("app", &other).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::DigestMismatch { expected, .. } if expected.to_string() == other),
        "{e}"
    );
    // Also without the header.
    let mut no_dcd = served(&bytes);
    no_dcd.dcd = Some(sha256(&bytes));
    let d2 = sha256(b"third");
    s.st.add_manifest("app", &d2, no_dcd);
    assert!(matches!(
        c.get_manifest("app", &d2).await,
        Err(RegistryError::DigestMismatch { .. })
    ));
    // HEAD with a digest header that contradicts the reference.
    let e = c.head_manifest("app", &d2).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
}

#[tokio::test]
async fn oversized_manifest_is_rejected() {
    let s = Server::start(Config::default()).await;
    let mut big = vec![b' '; MAX_MANIFEST_SIZE as usize + 10];
    big[0] = b'{';
    s.st.add_manifest("app", "big", served(&big));
    let mut chunked = served(&big);
    chunked.chunked = true;
    s.st.add_manifest("app", "big-chunked", chunked);
    let c = client(&s, opts());
    for tag in ["big", "big-chunked"] {
        let e = c.get_manifest("app", tag).await.unwrap_err();
        assert!(
            matches!(&e, RegistryError::TooLarge { url, limit, .. } if url.contains(tag) && *limit == MAX_MANIFEST_SIZE),
            "{tag}: {e}"
        );
    }
    // HEAD reports the size: refused too.
    assert!(matches!(
        c.head_manifest("app", "big").await,
        Err(RegistryError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn tags_pagination() {
    let s = Server::start(Config {
        page_size: 2,
        ..Config::default()
    })
    .await;
    let tags: Vec<String> = ["v1", "v2", "v3", "v4", "v5"].map(String::from).to_vec();
    s.st.tags
        .lock()
        .unwrap()
        .insert("lib/app".into(), tags.clone());
    *s.st.repos.lock().unwrap() = vec!["a".into(), "b/c".into(), "d".into()];
    let c = client(&s, opts());
    assert_eq!(c.list_tags("lib/app").await.unwrap(), tags);
    let pages =
        s.st.seen()
            .iter()
            .filter(|r| r.path.contains("/tags/list"))
            .count();
    assert_eq!(pages, 3);
    assert_eq!(c.catalog().await.unwrap(), ["a", "b/c", "d"]);
    let e = c.list_tags("missing").await.unwrap_err();
    assert!(
        e.is_not_found() && e.to_string().contains("NAME_UNKNOWN"),
        "{e}"
    );
    // A next link to another origin is refused.
    s.st.cfg(|c| c.next_link_origin = Some(format!("http://localhost:{}", s.addr.port())));
    let e = c.list_tags("lib/app").await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::Pagination { reason, .. } if reason.contains("origin")),
        "{e}"
    );
}

#[tokio::test]
async fn redirect_to_another_port_strips_authorization() {
    let s = Server::start(Config {
        auth: AuthMode::Basic,
        user: Some(("bob".into(), "pw".into())),
        ..Config::default()
    })
    .await;
    let storage = Server::start(Config::default()).await;
    let (_, cfg) = sample(&s.st, "app", "v1");
    let data =
        s.st.blobs
            .lock()
            .unwrap()
            .get(&cfg.digest.to_string())
            .cloned()
            .unwrap();
    storage.st.add_blob(&data);
    s.st.cfg(|c| c.redirect_blobs_to = Some(storage.url()));
    let c = client(&s, opts_with(|o| o.credentials = creds("bob", "pw")));
    assert_eq!(c.get_blob_bytes("app", &cfg, 1 << 20).await.unwrap(), data);
    let reg =
        s.st.seen()
            .into_iter()
            .find(|r| r.path.contains("/blobs/"))
            .unwrap();
    assert!(reg.authorization.is_some(), "registry got credentials");
    let st = storage
        .st
        .seen()
        .into_iter()
        .find(|r| r.path.starts_with("/blob/"))
        .unwrap();
    assert_eq!(st.authorization, None, "storage on another port got none");
    // A same-origin redirect keeps them.
    s.st.cfg(|c| c.redirect_blobs_to = Some(s.url()));
    c.get_blob_bytes("app", &cfg, 1 << 20).await.unwrap();
    let same =
        s.st.seen()
            .into_iter()
            .find(|r| r.path.starts_with("/blob/"))
            .unwrap();
    assert!(same.authorization.is_some());
}

#[tokio::test]
async fn blob_streaming_and_ranges() {
    let s = Server::start(Config::default()).await;
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let d = s.st.add_blob(&data);
    let desc = Descriptor::new(
        MediaType::OciLayerGzip,
        Digest::parse(&d).unwrap(),
        data.len() as u64,
    );
    let c = client(&s, opts());
    let mut b = c.get_blob("app", &desc).await.unwrap();
    assert_eq!(b.size, Some(data.len() as u64));
    assert_eq!(b.start, 0);
    assert!(b.url.contains(&d));
    let mut h = desc.digest.algorithm().hasher();
    let (mut n, mut chunks) = (0u64, 0);
    while let Some(chunk) = b.chunk().await.unwrap() {
        h.update(&chunk);
        n += chunk.len() as u64;
        chunks += 1;
    }
    assert_eq!(n, data.len() as u64);
    assert_eq!(h.finish(), desc.digest);
    assert!(chunks > 1, "streamed in {chunks} chunks");
    // Resume from an offset, and one slice.
    let mut b = c.get_blob_from("app", &desc, 1000).await.unwrap();
    assert_eq!(b.start, 1000);
    let mut rest = Vec::new();
    while let Some(chunk) = b.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, &data[1000..]);
    let mut b = c.get_blob_range("app", &desc, 10, 20).await.unwrap();
    assert_eq!((b.start, b.size), (10, Some(10)));
    assert_eq!(&b.chunk().await.unwrap().unwrap()[..], &data[10..20]);
    assert!(c.get_blob_range("app", &desc, 20, 10).await.is_err());
    // A server that ignores Range sends everything from 0.
    s.st.cfg(|c| c.ignore_range = true);
    let b = c.get_blob_from("app", &desc, 1000).await.unwrap();
    assert_eq!((b.start, b.size), (0, Some(data.len() as u64)));
}

#[tokio::test]
async fn blob_size_and_digest_checks() {
    let s = Server::start(Config::default()).await;
    let data = b"hello world".to_vec();
    let d = Digest::parse(&s.st.add_blob(&data)).unwrap();
    let c = client(&s, opts());
    // The descriptor says fewer bytes than Content-Length: refused before reading.
    let small = Descriptor::new(MediaType::OciConfig, d.clone(), 5);
    let e = c.get_blob("app", &small).await.unwrap_err();
    assert!(
        matches!(
            &e,
            RegistryError::SizeMismatch {
                expected: 5,
                actual: 11,
                ..
            }
        ),
        "{e}"
    );
    // More bytes than the declared size: refused.
    let e = c.get_blob_bytes("app", &small, 100).await.unwrap_err();
    assert!(matches!(e, RegistryError::SizeMismatch { .. }), "{e}");
    // Over the caller's limit: refused without a request.
    let ok = Descriptor::new(MediaType::OciConfig, d.clone(), 11);
    assert!(matches!(
        c.get_blob_bytes("app", &ok, 10).await,
        Err(RegistryError::TooLarge { .. })
    ));
    assert_eq!(c.get_blob_bytes("app", &ok, 11).await.unwrap(), data);
    // Served bytes that do not match the digest.
    let fake = sha256(b"other");
    s.st.blobs
        .lock()
        .unwrap()
        .insert(fake.clone(), data.clone().into());
    let bad = Descriptor::new(MediaType::OciConfig, Digest::parse(&fake).unwrap(), 11);
    let e = c.get_blob_bytes("app", &bad, 100).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::DigestMismatch { url, .. } if url.contains(&fake)),
        "{e}"
    );
    // Missing blob.
    let missing = Descriptor::new(
        MediaType::OciConfig,
        Digest::parse(&sha256(b"nope")).unwrap(),
        4,
    );
    let e = c.get_blob("app", &missing).await.unwrap_err();
    assert!(
        e.is_not_found() && e.to_string().contains("BLOB_UNKNOWN"),
        "{e}"
    );
}

#[tokio::test]
async fn not_found_and_head() {
    let s = Server::start(Config::default()).await;
    let (bytes, _) = sample(&s.st, "app", "v1");
    let c = client(&s, opts());
    let e = c.get_manifest("app", "nope").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("/v2/app/manifests/nope") && msg.contains("MANIFEST_UNKNOWN"),
        "{msg}"
    );
    assert_eq!(c.head_manifest("app", "nope").await.unwrap(), None);
    let d = c.head_manifest("app", "v1").await.unwrap().unwrap();
    assert_eq!(d.digest.to_string(), sha256(&bytes));
    assert_eq!(d.size, bytes.len() as u64);
    assert_eq!(d.media_type, MediaType::OciManifest);
    // Arguments that could change the URL are refused before any request.
    for (repo, r) in [
        ("../x", "v1"),
        ("app", "../../x"),
        ("app?x", "v1"),
        ("app", "sha256:zz"),
    ] {
        assert!(
            matches!(
                c.get_manifest(repo, r).await,
                Err(RegistryError::InvalidArgument { .. })
            ),
            "{repo} {r}"
        );
    }
}

#[tokio::test]
async fn idle_timeout_per_chunk() {
    let s = Server::start(Config {
        stall_blobs: true,
        ..Config::default()
    })
    .await;
    let data = vec![1u8; 64 * 1024];
    let d = Digest::parse(&s.st.add_blob(&data)).unwrap();
    let c = client(
        &s,
        opts_with(|o| o.read_timeout = Duration::from_millis(300)),
    );
    let desc = Descriptor::new(MediaType::OciLayer, d, data.len() as u64);
    let mut b = c.get_blob("app", &desc).await.unwrap();
    let first = b.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let t = std::time::Instant::now();
    let e = loop {
        match b.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("body ended"),
            Err(e) => break e,
        }
    };
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            e,
            RegistryError::Timeout { .. } | RegistryError::Body { .. }
        ),
        "{e}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn loopback_scheme_selection() {
    let s = Server::start(Config::default()).await;
    // Auto: the plain-HTTP loopback server is detected.
    let c = client(&s, opts());
    assert!(c.base_url().starts_with("https://"), "before resolution");
    c.ping().await.unwrap();
    assert!(c.base_url().starts_with("http://"), "{}", c.base_url());
    // Explicit plain HTTP.
    let c = client(&s, opts_with(|o| o.plain_http = Some(true)));
    c.ping().await.unwrap();
    // https only: no fallback, a clear TLS error.
    let c = client(&s, opts_with(|o| o.plain_http = Some(false)));
    let e = c.ping().await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::Tls { url, .. } if url.starts_with("https://")),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_registry_names() {
    for bad in ["", "https://x", "x/y", "a b"] {
        assert!(
            matches!(
                RegistryClient::new(bad, opts()),
                Err(RegistryError::InvalidRegistry { .. })
            ),
            "{bad}"
        );
    }
    let c = RegistryClient::new("docker.io", opts()).unwrap();
    assert_eq!(c.base_url(), "https://registry-1.docker.io");
    assert_eq!(c.registry(), "docker.io");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_share_one_token() {
    let s = Server::start(Config {
        auth: AuthMode::Bearer,
        ..Config::default()
    })
    .await;
    let (_, cfg) = sample(&s.st, "app", "v1");
    let c = client(&s, opts());
    c.ping().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, cfg) = (c.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            c.get_blob_bytes("app", &cfg, 1 << 20).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.st.token_count(), 1);
}
