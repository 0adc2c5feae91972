//! TLS configuration: system roots, extra CAs from `--cert-dir` or `certs.d/<host>/`,
//! client certificates, and the explicit `--tls-verify=false` verifier. rustls with ring.
//!
//! One exception to webpki, as docker and skopeo (Go's crypto/x509) make it: a server
//! certificate that is byte for byte one of the certificates configured for this registry
//! (certs.d or `--cert-dir`) is trusted even when it is a CA certificate
//! ([`ConfiguredLeafVerifier`]). That is what Docker's "deploy a registry" guide produces:
//! `openssl req -x509` marks its one self-signed certificate `CA:TRUE`, and clients trust it
//! by copying it to `certs.d/HOST:PORT/ca.crt`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

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
        for (i, ca) in cas.iter().enumerate() {
            store
                .add(ca.clone())
                .map_err(|e| RegistryError::TlsConfig {
                    path: dirs.first().cloned().unwrap_or_default(),
                    reason: format!("extra CA #{i}: {e}"),
                })?;
        }
        if cas.is_empty() {
            builder.with_root_certificates(store)
        } else {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| RegistryError::TlsConfig {
                    path: dirs.first().cloned().unwrap_or_default(),
                    reason: e.to_string(),
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ConfiguredLeafVerifier {
                    webpki,
                    configured: cas,
                }))
        }
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

/// `--tls-verify` (the default) when certificates are configured for the registry: webpki
/// against the system roots plus those certificates, with one exception, the one Go's
/// crypto/x509 (and so docker and skopeo) makes for a leaf that is itself a trusted root.
///
/// When, and only when, webpki refuses the server's certificate because it is a CA
/// certificate (`CaUsedAsEndEntity`) and that certificate is byte for byte one of
/// `configured` (the certs.d directory or `--cert-dir` of this registry, never the system
/// roots), it is accepted after [`check_configured_leaf`]: validity dates, server-auth key
/// usage, and the host name against its subjectAltName. An unknown self-signed certificate
/// is still refused (its bytes match nothing configured), and so is any other webpki
/// refusal. Handshake signatures (proof that the server holds the certificate's key) are
/// checked by webpki as always.
#[derive(Debug)]
struct ConfiguredLeafVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    configured: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for ConfiguredLeafVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(e)
                if is_ca_used_as_end_entity(&e)
                    && self
                        .configured
                        .iter()
                        .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                check_configured_leaf(end_entity, server_name, now)?;
                tracing::debug!(
                    server = %server_name.to_str(),
                    "the server's own certificate is a CA certificate configured for it: trusted"
                );
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.webpki.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// Whether rustls refused a certificate with webpki's `CaUsedAsEndEntity` (a CA
/// certificate presented as the server's own). rustls carries that one as
/// `CertificateError::Other`; a webpki of another major version than rustls' is not
/// recognised, which refuses (the tests would show it).
fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = e else {
        return false;
    };
    std::error::Error::source(other)
        .and_then(|s| s.downcast_ref::<webpki::Error>())
        .is_some_and(|w| matches!(w, webpki::Error::CaUsedAsEndEntity))
}

/// What webpki had not checked yet when it refused a configured CA certificate as the
/// server's own: the validity window at `now`, an extended key usage (when the certificate
/// has that extension) that includes serverAuth, and `server_name` against the
/// subjectAltName.
fn check_configured_leaf(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let facts = leaf_facts(cert.as_ref()).ok_or(CertificateError::BadEncoding)?;
    let t = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let at =
        |s: i64| UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    if t < facts.not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: at(facts.not_before),
        }
        .into());
    }
    if t > facts.not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: at(facts.not_after),
        }
        .into());
    }
    if let Some(eku) = &facts.eku
        && !eku.contains(&OID_SERVER_AUTH)
    {
        return Err(CertificateError::InvalidPurpose.into());
    }
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    rustls::client::verify_server_name(&parsed, server_name)
}

/// What [`check_configured_leaf`] reads from a certificate: its validity window (seconds
/// since the Unix epoch) and its extended key usages (each OID's content bytes).
#[derive(Debug, PartialEq, Eq)]
struct LeafFacts<'a> {
    not_before: i64,
    not_after: i64,
    eku: Option<Vec<&'a [u8]>>,
}

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT Version` of a TBSCertificate.
const TAG_VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` of a TBSCertificate.
const TAG_EXTENSIONS: u8 = 0xa3;
/// id-ce-extKeyUsage, 2.5.29.37.
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// id-kp-serverAuth, 1.3.6.1.5.5.7.3.1.
const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// The first DER element of `input`: its tag, its contents and what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The first DER element of `input` when its tag is `tag`: its contents and what follows.
fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = der_next(input)?;
    (t == tag).then_some((contents, rest))
}

/// Validity and extended key usage of an X.509 certificate (RFC 5280 §4.1); `None` when
/// it is not shaped as one.
fn leaf_facts(der: &[u8]) -> Option<LeafFacts<'_>> {
    let (cert, _) = der_expect(der, TAG_SEQUENCE)?;
    let (mut tbs, _) = der_expect(cert, TAG_SEQUENCE)?;
    if tbs.first() == Some(&TAG_VERSION) {
        tbs = der_next(tbs)?.2;
    }
    // serialNumber, signature, issuer.
    for tag in [TAG_INTEGER, TAG_SEQUENCE, TAG_SEQUENCE] {
        tbs = der_expect(tbs, tag)?.1;
    }
    let (validity, mut tbs) = der_expect(tbs, TAG_SEQUENCE)?;
    let (nb_tag, nb, validity) = der_next(validity)?;
    let (na_tag, na, validity) = der_next(validity)?;
    if !validity.is_empty() {
        return None;
    }
    let not_before = der_time(nb_tag, nb)?;
    let not_after = der_time(na_tag, na)?;
    // subject, subjectPublicKeyInfo.
    for _ in 0..2 {
        tbs = der_expect(tbs, TAG_SEQUENCE)?.1;
    }
    // Then the optional unique IDs ([1], [2]) and extensions ([3]).
    let mut eku = None;
    while !tbs.is_empty() {
        let (tag, contents, rest) = der_next(tbs)?;
        tbs = rest;
        if tag != TAG_EXTENSIONS {
            continue;
        }
        let (mut exts, _) = der_expect(contents, TAG_SEQUENCE)?;
        while !exts.is_empty() {
            let (ext, rest) = der_expect(exts, TAG_SEQUENCE)?;
            exts = rest;
            let (oid, mut ext) = der_expect(ext, TAG_OID)?;
            if ext.first() == Some(&TAG_BOOLEAN) {
                ext = der_next(ext)?.2;
            }
            let (value, _) = der_expect(ext, TAG_OCTET_STRING)?;
            if oid == OID_EXT_KEY_USAGE {
                let (mut seq, _) = der_expect(value, TAG_SEQUENCE)?;
                let mut purposes = Vec::new();
                while !seq.is_empty() {
                    let (purpose, rest) = der_expect(seq, TAG_OID)?;
                    purposes.push(purpose);
                    seq = rest;
                }
                eku = Some(purposes);
            }
        }
    }
    Some(LeafFacts {
        not_before,
        not_after,
        eku,
    })
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950 to 2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`),
/// the forms RFC 5280 allows, as seconds since the Unix epoch.
fn der_time(tag: u8, v: &[u8]) -> Option<i64> {
    let (year, rest) = match (tag, v.len()) {
        (TAG_UTC_TIME, 13) => {
            let yy = digits(&v[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &v[2..])
        }
        (TAG_GENERALIZED_TIME, 15) => (digits(&v[..4])?, &v[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let [mo, d, h, mi, s] = [0, 2, 4, 6, 8].map(|i| digits(&rest[i..i + 2]));
    let (mo, d, h, mi, s) = (mo?, d?, h?, mi?, s?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3_600 + mi * 60 + s)
}

/// ASCII decimal digits as a number.
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
                other if is_ca_used_as_end_entity(other) => TlsFailure::Tls(format!(
                    "{other}: the server's own certificate is a CA certificate (as \
                     `openssl req -x509` makes); it is trusted only when that very \
                     certificate is configured for this registry"
                )),
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
    fn der_time_table() {
        let utc = |s: &str| der_time(TAG_UTC_TIME, s.as_bytes());
        let gtime = |s: &str| der_time(TAG_GENERALIZED_TIME, s.as_bytes());
        assert_eq!(utc("700101000000Z"), Some(0));
        assert_eq!(utc("380119031407Z"), Some(2_147_483_647));
        assert_eq!(utc("491231235959Z"), Some(2_524_607_999));
        assert_eq!(utc("500101000000Z"), Some(-631_152_000));
        assert_eq!(utc("000229120000Z"), Some(951_825_600));
        assert_eq!(gtime("20500101000000Z"), Some(2_524_608_000));
        assert_eq!(gtime("99991231235959Z"), Some(253_402_300_799));
        for bad in [
            "7001010000Z",
            "700101000000",
            "700101000000+",
            "701301000000Z",
            "700100000000Z",
            "700101240000Z",
            "7001010000a0Z",
        ] {
            assert_eq!(utc(bad), None, "{bad}");
        }
        assert_eq!(gtime("700101000000Z"), None);
        assert_eq!(der_time(TAG_OCTET_STRING, b"700101000000Z"), None);
    }

    #[test]
    fn der_lengths() {
        assert_eq!(
            der_next(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(
            der_next(&long).map(|(_, c, r)| (c.len(), r.len())),
            Some((0x80, 0))
        );
        // Truncated contents, a length longer than 4 bytes, and the indefinite form.
        assert_eq!(der_next(&[0x04, 0x02, 0xaa]), None);
        assert_eq!(der_next(&[0x04, 0x85, 0, 0, 0, 0, 1, 0]), None);
        assert_eq!(der_next(&[0x30, 0x80, 0, 0]), None);
        assert_eq!(der_next(&[0x04]), None);
    }

    fn rcgen_cert(
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
        eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
    ) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        p.extended_key_usages = eku;
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn leaf_facts_of_generated_certificates() {
        use rcgen::ExtendedKeyUsagePurpose as P;
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 4.1.2.5).
        let c = rcgen_cert((2020, 1, 1), (2060, 1, 1), vec![]);
        let f = leaf_facts(c.as_ref()).unwrap();
        assert_eq!((f.not_before, f.not_after), (1_577_836_800, 2_840_140_800));
        assert_eq!(f.eku, None);
        let c = rcgen_cert(
            (2020, 1, 1),
            (2021, 1, 1),
            vec![P::ClientAuth, P::ServerAuth],
        );
        let f = leaf_facts(c.as_ref()).unwrap();
        assert_eq!(f.not_after, 1_609_459_200);
        assert_eq!(f.eku.as_ref().map(Vec::len), Some(2));
        assert!(f.eku.unwrap().contains(&OID_SERVER_AUTH));
        assert_eq!(leaf_facts(&c.as_ref()[..c.as_ref().len() - 1]), None);
        assert_eq!(leaf_facts(b"\x30\x00"), None);
    }

    #[test]
    fn configured_leaf_checks_dates_usage_and_name() {
        use rcgen::ExtendedKeyUsagePurpose as P;
        let now = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)); // 2023-11
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let dns = ServerName::try_from("localhost").unwrap();
        let good = rcgen_cert((2020, 1, 1), (2030, 1, 1), vec![]);
        check_configured_leaf(&good, &ip, now).unwrap();
        let e = check_configured_leaf(&good, &dns, now).unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
        let e = check_configured_leaf(&rcgen_cert((2020, 1, 1), (2021, 1, 1), vec![]), &ip, now)
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let e = check_configured_leaf(&rcgen_cert((2024, 1, 1), (2030, 1, 1), vec![]), &ip, now)
            .unwrap_err();
        assert!(e.to_string().contains("not valid yet"), "{e}");
        let c = rcgen_cert((2020, 1, 1), (2030, 1, 1), vec![P::ClientAuth]);
        let e = check_configured_leaf(&c, &ip, now).unwrap_err();
        assert_eq!(e, CertificateError::InvalidPurpose.into());
        let c = rcgen_cert((2020, 1, 1), (2030, 1, 1), vec![P::ServerAuth]);
        check_configured_leaf(&c, &ip, now).unwrap();
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
