//! TLS behaviour against an in-test TLS server on 127.0.0.1 with a throw-away CA:
//! untrusted certificates give a clear error and are never downgraded to HTTP; extra
//! CAs from `cert_dir` and `certs.d`, `tls_verify=false`, and client certificates work.
//! The real Distribution registry serves the self-signed certificate of Docker's "deploy a
//! registry" guide: trusted when configured for that host, refused otherwise.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hoist_registry::{ClientOptions, RegistryClient, RegistryError};
use hoist_testkit::certs::TlsMaterial;
use hoist_testkit::{Registry, require_peers};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
    client_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = p.signed_by(&key, &ca).unwrap().der().clone();
    let server_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let ckey = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec!["client".to_string()]).unwrap();
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_pem = cp.signed_by(&ckey, &ca).unwrap().pem();
    Pki {
        ca,
        server_cert,
        server_key,
        client_pem,
        client_key_pem: ckey.serialize_pem(),
    }
}

struct TlsServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS server answering every request with `200 {}`; optionally requiring a client
/// certificate signed by the CA.
async fn tls_server(pki: &Pki, require_client_cert: bool) -> TlsServer {
    let client_ca = require_client_cert.then(|| pki.ca.der().clone());
    serve_tls(
        pki.server_cert.clone(),
        pki.server_key.clone_key(),
        client_ca,
    )
    .await
}

/// A TLS server presenting `cert` (with its `key`) and answering every request with
/// `200 {}`; with `client_ca`, it requires a client certificate that CA signed.
async fn serve_tls(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<CertificateDer<'static>>,
) -> TlsServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if let Some(ca) = client_ca {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(v)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(vec![cert], key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (c, s) = (connections.clone(), served.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match tls.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                s.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsServer {
        addr,
        connections,
        served,
        task,
    }
}

fn opts() -> ClientOptions {
    let mut o = ClientOptions::default();
    o.connect_timeout = Duration::from_secs(5);
    o.read_timeout = Duration::from_secs(5);
    // Never read the machine's certs.d in tests.
    o.certs_d_roots = vec![];
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

fn write_ca(pki: &Pki, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), pki.ca.pem()).unwrap();
}

#[tokio::test]
async fn untrusted_certificate_is_a_clear_error_and_never_downgraded() {
    let pki = pki();
    let s = tls_server(&pki, false).await;
    // Auto mode on loopback: the TLS error must not turn into a plain-HTTP attempt.
    let c = RegistryClient::new(&s.addr.to_string(), opts()).unwrap();
    let e = c.ping().await.unwrap_err();
    match &e {
        RegistryError::Tls { url, reason } => {
            assert!(url.starts_with("https://127.0.0.1:"), "{url}");
            assert!(reason.contains("certificate"), "{reason}");
        }
        e => panic!("want a TLS error, got {e}"),
    }
    // Says what is wrong without naming a flag of the CLI (whose hint names them).
    assert!(e.to_string().contains("not trusted"), "{e}");
    assert!(!e.to_string().contains("--"), "{e}");
    assert_eq!(
        s.connections.load(Ordering::SeqCst),
        1,
        "no plain-HTTP retry"
    );
    assert_eq!(s.served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn extra_cas_from_cert_dir_and_certs_d() {
    let pki = pki();
    let s = tls_server(&pki, false).await;
    let d = tempfile::tempdir().unwrap();
    write_ca(&pki, &d.path().join("certs"));
    let c = RegistryClient::new(
        &s.addr.to_string(),
        opts_with(|o| o.cert_dir = Some(d.path().join("certs"))),
    )
    .unwrap();
    c.ping().await.unwrap();
    assert!(c.base_url().starts_with("https://"), "{}", c.base_url());

    // certs.d/<host:port>/ca.crt under the second root.
    write_ca(&pki, &d.path().join("root2").join(s.addr.to_string()));
    let c = RegistryClient::new(
        &s.addr.to_string(),
        opts_with(|o| o.certs_d_roots = vec![d.path().join("root1"), d.path().join("root2")]),
    )
    .unwrap();
    c.ping().await.unwrap();
    // Auto mode on loopback pings once to pick the scheme, then `ping` itself.
    assert_eq!(s.served.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn tls_verify_false_accepts_any_certificate() {
    let pki = pki();
    let s = tls_server(&pki, false).await;
    let c = RegistryClient::new(&s.addr.to_string(), opts_with(|o| o.tls_verify = false)).unwrap();
    c.ping().await.unwrap();
    assert!(c.base_url().starts_with("https://"));
}

#[tokio::test]
async fn client_certificate_from_cert_dir() {
    let pki = pki();
    let s = tls_server(&pki, true).await;
    let d = tempfile::tempdir().unwrap();
    write_ca(&pki, d.path());
    let o = opts_with(|o| o.cert_dir = Some(d.path().to_owned()));
    // Without a client certificate the server refuses the handshake.
    let c = RegistryClient::new(&s.addr.to_string(), o.clone()).unwrap();
    let e = c.ping().await.unwrap_err();
    assert!(
        matches!(e, RegistryError::Tls { .. } | RegistryError::Connect { .. }),
        "{e}"
    );
    std::fs::write(d.path().join("client.cert"), &pki.client_pem).unwrap();
    std::fs::write(d.path().join("client.key"), &pki.client_key_pem).unwrap();
    let c = RegistryClient::new(&s.addr.to_string(), o).unwrap();
    c.ping().await.unwrap();
    assert!(s.served.load(Ordering::SeqCst) >= 1);
}

/// A plain HTTP server that, like Go's, waits for a request line and so never answers a
/// TLS ClientHello: auto mode on loopback falls back to HTTP after the handshake times out.
#[tokio::test]
async fn silent_plain_http_server_on_loopback_falls_back() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    let c = RegistryClient::new(
        &addr.to_string(),
        opts_with(|o| {
            o.connect_timeout = Duration::from_millis(500);
            o.read_timeout = Duration::from_millis(500);
        }),
    )
    .unwrap();
    c.ping().await.unwrap();
    assert!(c.base_url().starts_with("http://"), "{}", c.base_url());
    task.abort();
}

// Docker's "deploy a registry" guide: one self-signed certificate made by `openssl req -x509`
// (so `CA:TRUE`), trusted by copying it to `certs.d/HOST:PORT/ca.crt`. docker and skopeo
// accept it; webpki alone refuses a CA certificate as the server's own (CaUsedAsEndEntity).

/// The guide's certificate for 127.0.0.1 (SAN `IP:127.0.0.1` only), made once per test
/// binary with exactly the guide's command: RSA 4096 takes a while.
fn guide_cert() -> &'static TlsMaterial {
    static CERT: OnceLock<(tempfile::TempDir, TlsMaterial)> = OnceLock::new();
    &CERT
        .get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            let m = TlsMaterial::docker_guide_self_signed(d.path(), "127.0.0.1", "IP:127.0.0.1")
                .unwrap();
            (d, m)
        })
        .1
}

/// The real Distribution registry serving the guide's certificate.
fn guide_registry() -> Registry {
    Registry::builder()
        .tls_material(guide_cert().clone())
        .start()
}

/// The in-test server presenting the guide's certificate, to count connections: Go's TLS
/// server answers a plain-HTTP request without logging it, so the real registry cannot tell.
async fn serve_guide_cert() -> TlsServer {
    let m = guide_cert();
    let pem = std::fs::read(&m.server_cert).unwrap();
    let cert = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    let key = std::fs::read(&m.server_key).unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_slice())
        .unwrap()
        .unwrap();
    serve_tls(cert, key, None).await
}

#[tokio::test]
async fn docker_guide_certificate_trusted_through_certs_d() {
    require_peers!(Peer::Registry, Peer::Openssl);
    let r = guide_registry();
    let d = tempfile::tempdir().unwrap();
    let host_dir = d.path().join("root2").join(r.host_port());
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&guide_cert().server_cert, host_dir.join("ca.crt")).unwrap();
    let c = RegistryClient::new(
        &r.host_port(),
        opts_with(|o| o.certs_d_roots = vec![d.path().join("root1"), d.path().join("root2")]),
    )
    .unwrap();
    c.ping().await.unwrap();
    assert_eq!(c.catalog().await.unwrap(), Vec::<String>::new());
    assert!(c.base_url().starts_with("https://"), "{}", c.base_url());
}

#[tokio::test]
async fn docker_guide_certificate_trusted_through_cert_dir() {
    require_peers!(Peer::Registry, Peer::Openssl);
    let r = guide_registry();
    let c = RegistryClient::new(
        &r.host_port(),
        opts_with(|o| o.cert_dir = Some(guide_cert().cert_dir.clone())),
    )
    .unwrap();
    c.ping().await.unwrap();
    assert_eq!(c.catalog().await.unwrap(), Vec::<String>::new());
    assert!(c.base_url().starts_with("https://"), "{}", c.base_url());
}

#[tokio::test]
async fn docker_guide_certificate_not_configured_is_refused_without_http() {
    require_peers!(Peer::Registry, Peer::Openssl);
    let r = guide_registry();
    // Configured for another host:port only: nothing applies to this registry.
    let d = tempfile::tempdir().unwrap();
    let other = d.path().join("127.0.0.1:1");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(&guide_cert().server_cert, other.join("ca.crt")).unwrap();
    // Auto mode on loopback: a TLS refusal must not turn into a plain-HTTP attempt.
    let c = RegistryClient::new(
        &r.host_port(),
        opts_with(|o| o.certs_d_roots = vec![d.path().to_owned()]),
    )
    .unwrap();
    let e = c.ping().await.unwrap_err();
    match &e {
        RegistryError::Tls { url, reason } => {
            assert!(url.starts_with("https://127.0.0.1:"), "{url}");
            assert!(reason.contains("CaUsedAsEndEntity"), "{reason}");
        }
        e => panic!("want a TLS error, got {e}"),
    }
    assert!(c.catalog().await.is_err());
    // The same refusal from a server that counts connections: one, and no request served.
    let s = serve_guide_cert().await;
    let c = RegistryClient::new(&s.addr.to_string(), opts()).unwrap();
    let reason = tls_reason(c.ping().await);
    assert!(reason.contains("CaUsedAsEndEntity"), "{reason}");
    assert_eq!(
        s.connections.load(Ordering::SeqCst),
        1,
        "no plain-HTTP retry"
    );
    assert_eq!(s.served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn docker_guide_certificate_for_another_name_is_refused() {
    require_peers!(Peer::Registry, Peer::Openssl);
    let r = guide_registry();
    // Trusted for `localhost:PORT`, but the certificate names only IP:127.0.0.1.
    let d = tempfile::tempdir().unwrap();
    let name = format!("localhost:{}", r.port());
    let host_dir = d.path().join(&name);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&guide_cert().server_cert, host_dir.join("ca.crt")).unwrap();
    for o in [
        opts_with(|o| o.certs_d_roots = vec![d.path().to_owned()]),
        opts_with(|o| o.cert_dir = Some(host_dir.clone())),
    ] {
        let c = RegistryClient::new(&name, o).unwrap();
        let e = c.ping().await.unwrap_err();
        match &e {
            RegistryError::Tls { url, reason } => {
                assert!(url.starts_with("https://localhost:"), "{url}");
                assert!(reason.contains("not valid for name"), "{reason}");
            }
            e => panic!("want a TLS error, got {e}"),
        }
    }
}

/// A self-signed `CA:TRUE` certificate for 127.0.0.1, as `openssl req -x509` makes, valid
/// from `not_before` to `not_after` (rcgen: openssl 3.0's `req -x509` cannot backdate).
fn ca_flagged_self_signed(
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.pem(), cert.der().clone(), der)
}

/// Ping a server presenting `cert` with `trusted` (PEM) as the only configured certificate.
async fn ping_trusting(
    trusted: &str,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<(), RegistryError> {
    let s = serve_tls(cert, key, None).await;
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("ca.crt"), trusted).unwrap();
    let c = RegistryClient::new(
        &s.addr.to_string(),
        opts_with(|o| o.cert_dir = Some(d.path().to_owned())),
    )
    .unwrap();
    let r = c.ping().await;
    if r.is_err() {
        assert_eq!(
            s.connections.load(Ordering::SeqCst),
            1,
            "no plain-HTTP retry"
        );
        assert_eq!(s.served.load(Ordering::SeqCst), 0);
    }
    r
}

fn tls_reason(r: Result<(), RegistryError>) -> String {
    match r {
        Err(RegistryError::Tls { reason, .. }) => reason,
        r => panic!("want a TLS error, got {r:?}"),
    }
}

#[tokio::test]
async fn configured_self_signed_certificate_outside_its_dates_is_refused() {
    // Control: the same kind of certificate within its dates is trusted.
    let (pem, cert, key) = ca_flagged_self_signed((2020, 1, 1), (2090, 1, 1));
    ping_trusting(&pem, cert, key).await.unwrap();
    let (pem, cert, key) = ca_flagged_self_signed((2020, 1, 1), (2021, 1, 1));
    let reason = tls_reason(ping_trusting(&pem, cert, key).await);
    assert!(reason.contains("expired"), "{reason}");
    let (pem, cert, key) = ca_flagged_self_signed((2080, 1, 1), (2090, 1, 1));
    let reason = tls_reason(ping_trusting(&pem, cert, key).await);
    assert!(reason.contains("not valid yet"), "{reason}");
}

#[tokio::test]
async fn another_self_signed_certificate_than_the_configured_one_is_refused() {
    // Same subject, same name, same dates, another key: not the configured certificate.
    let (configured, _, _) = ca_flagged_self_signed((2020, 1, 1), (2090, 1, 1));
    let (_, cert, key) = ca_flagged_self_signed((2020, 1, 1), (2090, 1, 1));
    let reason = tls_reason(ping_trusting(&configured, cert, key).await);
    assert!(reason.contains("certificate"), "{reason}");
}
