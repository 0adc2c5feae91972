//! TLS configuration: system roots, extra CAs from `--cert-dir` or `certs.d/<host>/`,
//! client certificates, and the explicit `--tls-verify=false` verifier. rustls with ring.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{ClientOptions, RegistryError};

/// Largest certificate or key file read.
const MAX_PEM_FILE: u64 = 4 * 1024 * 1024;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's roots, loaded once per process.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let r = rustls_native_certs::load_native_certs();
        for e in &r.errors {
            tracing::debug!(error = %e, "loading a system root certificate failed");
        }
        r.certs
    })
}

/// The directories consulted for `names` (the registry as given and its real host):
/// `cert_dir` alone when set, else `ROOT/<name>/` under every certs.d root.
pub(crate) fn cert_dirs(opts: &ClientOptions, names: &[&str]) -> Vec<PathBuf> {
    if let Some(d) = &opts.cert_dir {
        return vec![d.clone()];
    }
    let mut v = Vec::new();
    for root in &opts.certs_d_roots {
        for n in names {
            // A name never contains '/', and `..` cannot be a host: no path escapes.
            if n.is_empty() || n.contains('/') || *n == ".." || *n == "." {
                continue;
            }
            let d = root.join(n);
            if !v.contains(&d) {
                v.push(d);
            }
        }
    }
    v
}

fn read_pem(path: &Path) -> Result<Vec<u8>, RegistryError> {
    use std::io::Read;
    let err = |reason: String| RegistryError::TlsConfig {
        path: path.to_owned(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| err(e.to_string()))?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(err(format!("larger than {MAX_PEM_FILE} bytes")));
    }
    Ok(buf)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RegistryError> {
    let buf = read_pem(path)?;
    let certs = rustls_pemfile::certs(&mut buf.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RegistryError::TlsConfig {
            path: path.to_owned(),
            reason: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(RegistryError::TlsConfig {
            path: path.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, RegistryError> {
    let buf = read_pem(path)?;
    rustls_pemfile::private_key(&mut buf.as_slice())
        .map_err(|e| RegistryError::TlsConfig {
            path: path.to_owned(),
            reason: format!("invalid PEM: {e}"),
        })?
        .ok_or_else(|| RegistryError::TlsConfig {
            path: path.to_owned(),
            reason: "no private key in the file".into(),
        })
}

/// Files in `dir` with extension `ext`, sorted; none when the directory does not exist.
fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, RegistryError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RegistryError::TlsConfig {
                path: dir.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext) && p.is_file())
        .collect();
    v.sort();
    Ok(v)
}

type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Extra CAs (`*.crt`) and the first client pair (`X.cert` + `X.key`) in `dirs`.
fn load_dirs(
    dirs: &[PathBuf],
) -> Result<(Vec<CertificateDer<'static>>, Option<ClientCert>), RegistryError> {
    let mut cas = Vec::new();
    let mut client = None;
    for dir in dirs {
        for f in files_with_ext(dir, "crt")? {
            tracing::debug!(file = %f.display(), "extra CA");
            cas.extend(read_certs(&f)?);
        }
        for cert in files_with_ext(dir, "cert")? {
            let key = cert.with_extension("key");
            if !key.is_file() {
                return Err(RegistryError::TlsConfig {
                    path: cert,
                    reason: format!("client certificate without its key {}", key.display()),
                });
            }
            if client.is_none() {
                client = Some((read_certs(&cert)?, read_key(&key)?));
            }
        }
        for key in files_with_ext(dir, "key")? {
            if !key.with_extension("cert").is_file() {
                return Err(RegistryError::TlsConfig {
                    path: key,
                    reason: "client key without its .cert".into(),
                });
            }
        }
    }
    Ok((cas, client))
}

/// Build the rustls configuration for a registry. `names` are the directory names to
/// look for under the certs.d roots.
pub(crate) fn client_config(
    opts: &ClientOptions,
    names: &[&str],
) -> Result<rustls::ClientConfig, RegistryError> {
    let dirs = cert_dirs(opts, names);
    let (cas, client) = load_dirs(&dirs)?;
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::TlsConfig {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
    let builder = if opts.tls_verify {
        let mut store = RootCertStore::empty();
        let (_, bad) = store.add_parsable_certificates(native_roots().iter().cloned());
        if bad > 0 {
            tracing::debug!(count = bad, "unparsable system root certificates ignored");
        }
        for (i, ca) in cas.into_iter().enumerate() {
            store.add(ca).map_err(|e| RegistryError::TlsConfig {
                path: dirs.first().cloned().unwrap_or_default(),
                reason: format!("extra CA #{i}: {e}"),
            })?;
        }
        builder.with_root_certificates(store)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    };
    let mut config = match client {
        Some((certs, key)) => {
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| RegistryError::TlsConfig {
                    path: dirs.first().cloned().unwrap_or_default(),
                    reason: format!("client certificate: {e}"),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    // HTTP/1.1 only: HTTP/2 is several times slower for large blobs.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `--tls-verify=false`: accept any certificate (handshake signatures are still checked).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a failed request relates to TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsFailure {
    /// A real TLS error (certificate, protocol): report it, never downgrade.
    Tls(String),
    /// The peer answered something that is not TLS (e.g. plain HTTP).
    NotTls,
    /// The connection closed or reset during the handshake: maybe a plain HTTP server.
    ClosedDuringHandshake,
    /// Nothing TLS-related found.
    None,
}

/// Classify an error by walking its source chain, looking inside `io::Error`s too
/// (their `source()` skips the wrapped error).
pub(crate) fn classify(err: &(dyn std::error::Error + 'static)) -> TlsFailure {
    let mut stack: Vec<&(dyn std::error::Error + 'static)> = vec![err];
    let mut saw_eof = false;
    let mut visited = 0;
    while let Some(e) = stack.pop() {
        visited += 1;
        if visited > 64 {
            break;
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return match r {
                rustls::Error::InvalidMessage(_) => TlsFailure::NotTls,
                other => TlsFailure::Tls(other.to_string()),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ) {
                saw_eof = true;
            }
            if let Some(inner) = io.get_ref() {
                stack.push(inner);
            }
        }
        if let Some(src) = e.source() {
            stack.push(src);
        }
    }
    if saw_eof {
        TlsFailure::ClosedDuringHandshake
    } else {
        TlsFailure::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_table() {
        let opts = ClientOptions {
            certs_d_roots: vec!["/a".into(), "/b".into()],
            ..ClientOptions::default()
        };
        assert_eq!(
            cert_dirs(&opts, &["reg:5000", "reg:5000", "..", "x/y"]),
            vec![PathBuf::from("/a/reg:5000"), PathBuf::from("/b/reg:5000")]
        );
        let opts = ClientOptions {
            cert_dir: Some("/c".into()),
            ..opts
        };
        assert_eq!(cert_dirs(&opts, &["reg"]), vec![PathBuf::from("/c")]);
    }

    #[test]
    fn classify_table() {
        let wrap = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let not_tls = wrap(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(classify(&not_tls), TlsFailure::NotTls);
        let cert = wrap(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(matches!(classify(&cert), TlsFailure::Tls(m) if m.contains("certificate")));
        // Nested io::Errors, as hyper-util wraps the connector's error.
        let nested = std::io::Error::other(wrap(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        )));
        assert_eq!(classify(&nested), TlsFailure::NotTls);
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(classify(&eof), TlsFailure::ClosedDuringHandshake);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(classify(&refused), TlsFailure::None);
    }

    #[test]
    fn bad_ca_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ca.crt"), "not pem").unwrap();
        let opts = ClientOptions {
            cert_dir: Some(d.path().to_owned()),
            ..ClientOptions::default()
        };
        let e = client_config(&opts, &["x"]).unwrap_err().to_string();
        assert!(e.contains("ca.crt"), "{e}");
        std::fs::remove_file(d.path().join("ca.crt")).unwrap();
        std::fs::write(d.path().join("client.cert"), "x").unwrap();
        let e = client_config(&opts, &["x"]).unwrap_err().to_string();
        assert!(e.contains("client.key"), "{e}");
        std::fs::remove_file(d.path().join("client.cert")).unwrap();
        client_config(&opts, &["x"]).unwrap();
    }
}
