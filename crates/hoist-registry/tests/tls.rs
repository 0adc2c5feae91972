//! TLS behaviour against an in-test TLS server on 127.0.0.1 with a throw-away CA:
//! untrusted certificates give a clear error and are never downgraded to HTTP; extra
//! CAs from `cert_dir` and `certs.d`, `tls_verify=false`, and client certificates work.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hoist_registry::{ClientOptions, RegistryClient, RegistryError};
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(v)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
        .unwrap();
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
    ClientOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        // Never read the machine's certs.d in tests.
        certs_d_roots: vec![],
        // These tests look at single answers; retries have their own tests.
        retry: hoist_registry::RetryPolicy::none(),
        ..ClientOptions::default()
    }
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
    assert!(e.to_string().contains("--cert-dir"), "{e}");
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
        ClientOptions {
            cert_dir: Some(d.path().join("certs")),
            ..opts()
        },
    )
    .unwrap();
    c.ping().await.unwrap();
    assert!(c.base_url().starts_with("https://"), "{}", c.base_url());

    // certs.d/<host:port>/ca.crt under the second root.
    write_ca(&pki, &d.path().join("root2").join(s.addr.to_string()));
    let c = RegistryClient::new(
        &s.addr.to_string(),
        ClientOptions {
            certs_d_roots: vec![d.path().join("root1"), d.path().join("root2")],
            ..opts()
        },
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
    let c = RegistryClient::new(
        &s.addr.to_string(),
        ClientOptions {
            tls_verify: false,
            ..opts()
        },
    )
    .unwrap();
    c.ping().await.unwrap();
    assert!(c.base_url().starts_with("https://"));
}

#[tokio::test]
async fn client_certificate_from_cert_dir() {
    let pki = pki();
    let s = tls_server(&pki, true).await;
    let d = tempfile::tempdir().unwrap();
    write_ca(&pki, d.path());
    let o = ClientOptions {
        cert_dir: Some(d.path().to_owned()),
        ..opts()
    };
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
        ClientOptions {
            connect_timeout: Duration::from_millis(500),
            read_timeout: Duration::from_millis(500),
            ..opts()
        },
    )
    .unwrap();
    c.ping().await.unwrap();
    assert!(c.base_url().starts_with("http://"), "{}", c.base_url());
    task.abort();
}
