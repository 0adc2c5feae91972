//! Test key material made with the `openssl` and `htpasswd` programs.
//!
//! - [`TlsMaterial::generate`]: a throw-away CA and a server certificate it signed, for
//!   `127.0.0.1` and `localhost` (Go, and so Distribution's clients, need the names in the SAN;
//!   rustls/webpki refuses a CA certificate used as the server's own, hence the separate CA).
//! - [`TlsMaterial::docker_guide_self_signed`]: the single self-signed RSA 4096 certificate (a
//!   `CA:TRUE` one) that Docker's "deploy a registry" guide makes and has clients trust as a CA.
//! - [`TokenSigner::generate`]: an ECDSA P-256 key (made by `ring`, PKCS#8) and a self-signed
//!   certificate for it (made by `openssl`), used to sign registry tokens. The certificate is the
//!   registry's `rootcertbundle` and is also sent in each token's `x5c` header.
//! - [`htpasswd_line`]: a bcrypt htpasswd entry (Distribution accepts bcrypt entries only).
//!
//! All keys but the guide's are EC P-256: generation takes milliseconds, so every registry gets
//! its own.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// Runs a program to completion; a non-zero exit becomes an error carrying its stderr.
pub(crate) fn run(program: &str, args: &[&str], cwd: &Path) -> io::Result<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {} (in {}) failed with {}: {}",
            args.join(" "),
            cwd.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// Runs `openssl` with whitespace-separated arguments (none of ours contains a space).
fn openssl(args: &str, cwd: &Path) -> io::Result<Vec<u8>> {
    let args: Vec<&str> = args.split_whitespace().collect();
    run(crate::Peer::Openssl.path(), &args, cwd)
}

/// Decodes every `-----BEGIN CERTIFICATE-----` block of a PEM text to DER.
pub fn pem_certificates_to_der(pem: &str) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let b64 = body
                .take()
                .ok_or_else(|| io::Error::other("PEM: END without BEGIN"))?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| io::Error::other(format!("PEM: bad base64: {e}")))?;
            out.push(der);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    Ok(out)
}

/// A CA and a server certificate signed by it, written as PEM files in one directory.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA certificate (PEM). Clients trust this.
    pub ca_pem: PathBuf,
    /// The server certificate (PEM), SAN `IP:127.0.0.1, DNS:localhost`.
    pub server_cert: PathBuf,
    /// The server's private key (PEM, EC P-256).
    pub server_key: PathBuf,
    /// A directory holding only `ca.crt` (a copy of the CA): the layout skopeo's `--cert-dir`,
    /// `/etc/containers/certs.d/HOST:PORT/` and `/etc/docker/certs.d/HOST:PORT/` expect.
    pub cert_dir: PathBuf,
}

impl TlsMaterial {
    /// Generates a fresh CA and server certificate in `dir` (which must exist).
    pub fn generate(dir: &Path) -> io::Result<TlsMaterial> {
        let ext = dir.join("server-ext.cnf");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 3650 -subj /CN=hoist-testkit-CA -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
            dir,
        )?;
        openssl(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
            dir,
        )?;
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 3650 -out server.pem -extfile server-ext.cnf",
            dir,
        )?;
        let cert_dir = dir.join("certs.d");
        std::fs::create_dir_all(&cert_dir)?;
        std::fs::copy(dir.join("ca.pem"), cert_dir.join("ca.crt"))?;
        Ok(TlsMaterial {
            ca_pem: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            cert_dir,
        })
    }
}

impl TlsMaterial {
    /// The one self-signed certificate of Docker's "deploy a registry" guide, made with exactly
    /// its command in `dir` (which must exist):
    ///
    /// `openssl req -x509 -newkey rsa:4096 -nodes -sha256 -keyout domain.key -out domain.crt
    /// -subj /CN=<cn> -addext subjectAltName=<san>`
    ///
    /// `req -x509` marks the certificate `CA:TRUE`, and the guide has clients trust it by copying
    /// `domain.crt` to `certs.d/HOST:PORT/ca.crt`: so here [`ca_pem`](Self::ca_pem) and
    /// [`server_cert`](Self::server_cert) are the same file, and [`cert_dir`](Self::cert_dir)
    /// holds its copy as `ca.crt`. `san` is openssl's form (`IP:127.0.0.1,DNS:localhost`); it
    /// must not contain spaces. RSA 4096 takes about a second to generate: share one per test
    /// binary.
    pub fn docker_guide_self_signed(dir: &Path, cn: &str, san: &str) -> io::Result<TlsMaterial> {
        let subj = format!("/CN={cn}");
        let alt = format!("subjectAltName={san}");
        run(
            crate::Peer::Openssl.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:4096",
                "-nodes",
                "-sha256",
                "-keyout",
                "domain.key",
                "-out",
                "domain.crt",
                "-subj",
                &subj,
                "-addext",
                &alt,
            ],
            dir,
        )?;
        let cert_dir = dir.join("certs.d");
        std::fs::create_dir_all(&cert_dir)?;
        std::fs::copy(dir.join("domain.crt"), cert_dir.join("ca.crt"))?;
        Ok(TlsMaterial {
            ca_pem: dir.join("domain.crt"),
            server_cert: dir.join("domain.crt"),
            server_key: dir.join("domain.key"),
            cert_dir,
        })
    }
}

/// The key and certificate that sign registry tokens.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    /// DER of the self-signed signing certificate (what goes, base64, into the JWT `x5c` header).
    pub cert_der: Vec<u8>,
    /// PEM file of the certificate: the registry's `auth.token.rootcertbundle`.
    pub cert_pem: PathBuf,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("cert_pem", &self.cert_pem)
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Generates a P-256 key with `ring` and a self-signed certificate for it with `openssl`, in
    /// `dir` (which must exist): `token-signer.key.der` (PKCS#8) and `token-signer.pem`.
    pub fn generate(dir: &Path) -> io::Result<TokenSigner> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| io::Error::other("ring: cannot generate a P-256 key"))?;
        std::fs::write(dir.join("token-signer.key.der"), pkcs8.as_ref())?;
        openssl(
            "req -x509 -new -key token-signer.key.der -keyform DER -subj /CN=hoist-testkit-token-signer -days 3650 -out token-signer.pem",
            dir,
        )?;
        let cert_pem = dir.join("token-signer.pem");
        let certs = pem_certificates_to_der(&std::fs::read_to_string(&cert_pem)?)?;
        let cert_der = certs
            .into_iter()
            .next()
            .ok_or_else(|| io::Error::other("openssl wrote no certificate"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| io::Error::other(format!("ring: cannot load the PKCS#8 key: {e}")))?;
        Ok(TokenSigner {
            key,
            cert_der,
            cert_pem,
        })
    }

    /// Signs `message` with ES256; the signature is the fixed-size `r || s` that JWS wants.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key
            .sign(&SystemRandom::new(), message)
            .expect("ECDSA signing with ring cannot fail")
            .as_ref()
            .to_vec()
    }

    /// The uncompressed public key point (`04 || x || y`).
    pub fn public_key(&self) -> &[u8] {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref()
    }
}

/// Makes one bcrypt htpasswd line (`user:$2y$...`) with `htpasswd -Bbn`, without a newline.
pub fn htpasswd_line(user: &str, password: &str) -> io::Result<String> {
    let out = run(
        crate::Peer::Htpasswd.path(),
        &["-Bbn", user, password],
        Path::new("/"),
    )?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}
