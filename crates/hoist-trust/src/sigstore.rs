//! cosign-style ("sigstore") signatures with public keys: ECDSA P-256 over SHA-256, keys in
//! PEM (`PUBLIC KEY`, PKIX), signatures ASN.1 DER in base64, as cosign and containers/image
//! write them. The payload is the layer of a `sha256-<hex>.sig` image and the signature its
//! `dev.cosignproject.cosign/signature` annotation.
//!
//! Private keys are cosign's encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`, or the older
//! `ENCRYPTED COSIGN PRIVATE KEY`): a JSON document `{"kdf": {"name": "scrypt", "params":
//! {"N", "r", "p"}, "salt"}, "cipher": {"name": "nacl/secretbox", "nonce"}, "ciphertext"}`
//! (byte strings in base64) around a PKCS#8 DER key.

use base64::Engine as _;
use crypto_secretbox::aead::{Aead as _, KeyInit as _};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    LineEnding,
};
use serde_json::{Value, json};

/// The annotation of a `.sig` layer that carries the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of a `.sig` layer (the payload).
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Largest base64 signature accepted (a DER P-256 signature is at most 72 bytes).
pub const MAX_SIGNATURE_B64: usize = 4096;
/// Largest key file read.
pub const MAX_KEY_SIZE: u64 = 64 << 10;

const PEM_ENCRYPTED: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const PEM_ENCRYPTED_OLD: &str = "ENCRYPTED COSIGN PRIVATE KEY";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The public keys a `sigstoreSigned` requirement trusts.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys {
    keys: Vec<VerifyingKey>,
}

impl PublicKeys {
    /// Adds the key of a PEM `PUBLIC KEY` document (PKIX). Only ECDSA P-256 is accepted;
    /// anything else (an OpenPGP key, RSA, another curve) is an error naming `what`.
    pub fn add_pem(&mut self, pem: &[u8], what: &str) -> Result<(), String> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| format!("{what} is not a PEM public key (not text)"))?;
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| {
            format!("{what} is not an ECDSA P-256 public key in PEM (PKIX) form: {e}")
        })?;
        self.keys.push(key);
        Ok(())
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `signature_b64` (base64 of an ASN.1 DER ECDSA signature) over `payload`;
    /// `Ok` with the index of the key that made it.
    pub fn verify(&self, payload: &[u8], signature_b64: &str) -> Result<usize, String> {
        if signature_b64.len() > MAX_SIGNATURE_B64 {
            return Err(format!(
                "signature annotation of {} bytes is larger than {MAX_SIGNATURE_B64}",
                signature_b64.len()
            ));
        }
        let der = B64
            .decode(signature_b64.trim())
            .map_err(|e| format!("signature annotation is not base64: {e}"))?;
        let sig = Signature::from_der(&der)
            .map_err(|_| "signature is not an ASN.1 DER ECDSA P-256 signature".to_owned())?;
        for (i, k) in self.keys.iter().enumerate() {
            if k.verify(payload, &sig).is_ok() {
                return Ok(i);
            }
        }
        Err(format!(
            "not signed by any of the {} trusted public key(s)",
            self.keys.len()
        ))
    }
}

/// An ECDSA P-256 signing key.
#[derive(Debug, Clone)]
pub struct PrivateKey {
    key: SigningKey,
}

impl PrivateKey {
    /// A fresh random key.
    pub fn generate() -> PrivateKey {
        loop {
            let bytes: [u8; 32] = rand::random();
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return PrivateKey { key };
            }
        }
    }

    /// Reads cosign's encrypted PEM with `passphrase`.
    pub fn from_encrypted_pem(pem: &[u8], passphrase: &[u8]) -> Result<PrivateKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "the key file is not text".to_owned())?;
        let (label, doc) = pem_decode(text)?;
        if label != PEM_ENCRYPTED && label != PEM_ENCRYPTED_OLD {
            return Err(format!(
                "the key file holds a {label:?} PEM block, not {PEM_ENCRYPTED:?}"
            ));
        }
        let v: Value = serde_json::from_slice(&doc)
            .map_err(|e| format!("the encrypted key is not JSON: {e}"))?;
        let field = |p: &str| -> Result<&Value, String> {
            v.pointer(p)
                .ok_or_else(|| format!("the encrypted key has no {p}"))
        };
        let bytes = |p: &str| -> Result<Vec<u8>, String> {
            let s = field(p)?
                .as_str()
                .ok_or_else(|| format!("{p} is not a string"))?;
            B64.decode(s).map_err(|e| format!("{p} is not base64: {e}"))
        };
        let num = |p: &str| -> Result<u64, String> {
            field(p)?
                .as_u64()
                .ok_or_else(|| format!("{p} is not a number"))
        };
        if field("/kdf/name")?.as_str() != Some("scrypt") {
            return Err("the key's kdf is not scrypt".into());
        }
        if field("/cipher/name")?.as_str() != Some("nacl/secretbox") {
            return Err("the key's cipher is not nacl/secretbox".into());
        }
        let n = num("/kdf/params/N")?;
        let (r, p) = (num("/kdf/params/r")?, num("/kdf/params/p")?);
        if !n.is_power_of_two()
            || !(2..=1 << 20).contains(&n)
            || !(1..=32).contains(&r)
            || !(1..=16).contains(&p)
        {
            return Err(format!(
                "scrypt parameters N={n} r={r} p={p} are out of range"
            ));
        }
        let salt = bytes("/kdf/salt")?;
        let nonce = bytes("/cipher/nonce")?;
        if nonce.len() != 24 {
            return Err("the secretbox nonce is not 24 bytes".into());
        }
        let ciphertext = bytes("/ciphertext")?;
        let params = scrypt::Params::new(n.trailing_zeros() as u8, r as u32, p as u32, 32)
            .map_err(|e| format!("scrypt parameters: {e}"))?;
        let mut k = [0u8; 32];
        scrypt::scrypt(passphrase, &salt, &params, &mut k).map_err(|e| format!("scrypt: {e}"))?;
        let plain = crypto_secretbox::XSalsa20Poly1305::new(&k.into())
            .decrypt(nonce.as_slice().into(), ciphertext.as_slice())
            .map_err(|_| "wrong passphrase, or the encrypted key is corrupt".to_owned())?;
        let key = SigningKey::from_pkcs8_der(&plain)
            .map_err(|e| format!("the decrypted key is not an ECDSA P-256 PKCS#8 key: {e}"))?;
        Ok(PrivateKey { key })
    }

    /// cosign's encrypted PEM of this key under `passphrase` (scrypt N=32768, r=8, p=1).
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Vec<u8> {
        let der = self
            .key
            .to_pkcs8_der()
            .expect("a P-256 key encodes as PKCS#8");
        let salt: [u8; 32] = rand::random();
        let nonce: [u8; 24] = rand::random();
        let params = scrypt::Params::new(15, 8, 1, 32).expect("valid scrypt parameters");
        let mut k = [0u8; 32];
        scrypt::scrypt(passphrase, &salt, &params, &mut k).expect("32-byte output");
        let ciphertext = crypto_secretbox::XSalsa20Poly1305::new(&k.into())
            .encrypt(nonce.as_slice().into(), der.as_bytes())
            .expect("secretbox encryption");
        let doc = json!({
            "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": B64.encode(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": B64.encode(nonce)},
            "ciphertext": B64.encode(ciphertext),
        });
        pem_encode(
            PEM_ENCRYPTED,
            &serde_json::to_vec(&doc).expect("a JSON value serialises"),
        )
        .into_bytes()
    }

    /// The public key in PEM (PKIX), as `cosign.pub`.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key encodes as PKIX")
    }

    /// Signs `payload`: base64 of the ASN.1 DER signature, for the `.sig` annotation.
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig: Signature = self.key.sign(payload);
        B64.encode(sig.to_der().as_bytes())
    }
}

fn pem_decode(text: &str) -> Result<(String, Vec<u8>), String> {
    let text = text.trim();
    let first = text.lines().next().unwrap_or("");
    let label = first
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or_else(|| "the key file is not PEM".to_owned())?;
    let end = format!("-----END {label}-----");
    let body: String = text
        .lines()
        .skip(1)
        .take_while(|l| *l != end)
        .collect::<Vec<_>>()
        .concat();
    if !text.lines().any(|l| l == end) {
        return Err(format!("the PEM block {label:?} has no end line"));
    }
    let data = B64
        .decode(body.trim())
        .map_err(|e| format!("the PEM block is not base64: {e}"))?;
    Ok((label.to_owned(), data))
}

fn pem_encode(label: &str, data: &[u8]) -> String {
    let b = B64.encode(data);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_key_round_trip() {
        let k = PrivateKey::generate();
        let pem = k.to_encrypted_pem(b"pw");
        assert!(
            String::from_utf8_lossy(&pem)
                .starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
        );
        let k2 = PrivateKey::from_encrypted_pem(&pem, b"pw").unwrap();
        let err = PrivateKey::from_encrypted_pem(&pem, b"other").unwrap_err();
        assert!(err.contains("wrong passphrase"), "{err}");
        let mut keys = PublicKeys::default();
        keys.add_pem(k.public_pem().as_bytes(), "k.pub").unwrap();
        let sig = k2.sign(b"payload");
        assert_eq!(keys.verify(b"payload", &sig), Ok(0));
        assert!(keys.verify(b"payload2", &sig).is_err());
        let other = PrivateKey::generate();
        assert!(
            keys.verify(b"payload", &other.sign(b"payload"))
                .unwrap_err()
                .contains("not signed")
        );
        assert!(
            keys.verify(b"payload", "!!")
                .unwrap_err()
                .contains("not base64")
        );
        assert!(
            keys.verify(b"payload", &B64.encode(b"garbage"))
                .unwrap_err()
                .contains("DER")
        );
        let err = PublicKeys::default()
            .add_pem(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----\n", "k.gpg")
            .unwrap_err();
        assert!(
            err.contains("k.gpg is not an ECDSA P-256 public key"),
            "{err}"
        );
    }
}
