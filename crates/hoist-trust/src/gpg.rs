//! OpenPGP for simple signing: keyrings from `keyPath`/`keyPaths`/`keyData` and verification
//! of the signed messages (`gpg --sign` output: a possibly compressed one-pass-signed
//! literal message) with rpgp. No gpg process is involved in verification.

use std::io::{Cursor, Read as _};

use pgp::composed::{Message, PublicOrSecret, SignedPublicKey};
use pgp::types::KeyDetails as _;

use crate::payload::MAX_PAYLOAD_SIZE;

/// Largest simple-signing signature accepted (c/image's own limit is 4 MiB; real ones are
/// well under 1 KiB).
pub const MAX_SIGNATURE_SIZE: usize = 4 << 20;
/// Largest keyring read.
pub const MAX_KEYRING_SIZE: u64 = 4 << 20;
/// Most keys taken from one keyring.
const MAX_KEYS: usize = 256;

/// The public keys a `signedBy` requirement trusts.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

/// A signature that verified: what it signed, and by whom.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signed payload.
    pub payload: Vec<u8>,
    /// Upper-case hex fingerprint of the primary key whose key (or signing subkey) signed.
    pub fingerprint: String,
}

impl Keyring {
    /// Parses binary (`gpg --export`) or ASCII-armoured keys, several per input. Every key's
    /// self-signatures must verify. `what` names the source in errors.
    pub fn add(&mut self, data: &[u8], what: &str) -> Result<(), String> {
        let (iter, _) = PublicOrSecret::from_reader_many(Cursor::new(data))
            .map_err(|e| format!("{what} is not an OpenPGP key: {e}"))?;
        let mut n = 0;
        for item in iter {
            let k = item.map_err(|e| format!("{what} is not an OpenPGP key: {e}"))?;
            let k = match k {
                PublicOrSecret::Public(k) => k,
                PublicOrSecret::Secret(_) => {
                    return Err(format!(
                        "{what} holds a secret key; give the public key (gpg --export)"
                    ));
                }
            };
            k.verify_bindings().map_err(|e| {
                format!(
                    "{what}: key {} has a bad self-signature: {e}",
                    hex(k.fingerprint().as_bytes())
                )
            })?;
            if self.keys.len() >= MAX_KEYS {
                return Err(format!("{what} holds more than {MAX_KEYS} keys"));
            }
            self.keys.push(k);
            n += 1;
        }
        if n == 0 {
            return Err(format!("{what} holds no OpenPGP public key"));
        }
        Ok(())
    }

    /// Fingerprints (upper-case hex) of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex(k.fingerprint().as_bytes()))
            .collect()
    }

    /// Verifies a simple-signing signature and returns its payload. Fails unless one key of
    /// the ring (its primary key, or a signing subkey bound to it) made the signature.
    pub fn verify(&self, signature: &[u8]) -> Result<Verified, String> {
        if signature.len() > MAX_SIGNATURE_SIZE {
            return Err(format!(
                "signature of {} bytes is larger than {MAX_SIGNATURE_SIZE}",
                signature.len()
            ));
        }
        let msg = Message::from_bytes(Cursor::new(signature))
            .map_err(|e| format!("not an OpenPGP message: {e}"))?;
        let mut msg = msg
            .decompress()
            .map_err(|e| format!("cannot decompress the OpenPGP message: {e}"))?;
        if !msg.is_signed() {
            return Err("the OpenPGP message is not signed".into());
        }
        let mut payload = Vec::new();
        (&mut msg)
            .take(MAX_PAYLOAD_SIZE as u64 + 1)
            .read_to_end(&mut payload)
            .map_err(|e| format!("reading the signed data: {e}"))?;
        if payload.len() > MAX_PAYLOAD_SIZE {
            return Err(format!(
                "the signed payload is larger than {MAX_PAYLOAD_SIZE} bytes"
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for key in &self.keys {
            let fpr = hex(key.fingerprint().as_bytes());
            let signed_by_primary = msg.verify(&key.primary_key).is_ok();
            let signed_by_sub = || {
                key.public_subkeys.iter().find(|sub| {
                    sub.signatures.iter().any(|s| s.key_flags().sign())
                        && sub.verify_bindings(&key.primary_key).is_ok()
                        && msg.verify(&sub.key).is_ok()
                })
            };
            let sub = if signed_by_primary {
                None
            } else {
                signed_by_sub()
            };
            if !signed_by_primary && sub.is_none() {
                continue;
            }
            // The signature verifies: the key (and the subkey that made it) must still be
            // valid, as gpg would judge them.
            if !key.details.revocation_signatures.is_empty() {
                return Err(format!("signed by key {fpr}, which is revoked"));
            }
            let self_sigs = key
                .details
                .users
                .iter()
                .flat_map(|u| u.signatures.iter())
                .chain(key.details.direct_signatures.iter());
            if let Some(t) = expiry(key.primary_key.created_at(), self_sigs)
                && t <= now
            {
                return Err(format!(
                    "signed by key {fpr}, which expired at {t} (Unix time)"
                ));
            }
            if let Some(sub) = sub {
                let sfpr = hex(sub.key.fingerprint().as_bytes());
                if sub
                    .signatures
                    .iter()
                    .any(|s| s.typ() == Some(pgp::packet::SignatureType::SubkeyRevocation))
                {
                    return Err(format!(
                        "signed by subkey {sfpr} of {fpr}, which is revoked"
                    ));
                }
                if let Some(t) = expiry(sub.key.created_at(), sub.signatures.iter())
                    && t <= now
                {
                    return Err(format!(
                        "signed by subkey {sfpr} of {fpr}, which expired at {t} (Unix time)"
                    ));
                }
            }
            return Ok(Verified {
                payload,
                fingerprint: fpr,
            });
        }
        Err(format!(
            "not signed by any trusted key ({})",
            self.fingerprints().join(", ")
        ))
    }
}

/// When a key created at `created` expires, by its newest self-signature that says
/// (`None`: never).
fn expiry<'a>(
    created: pgp::types::Timestamp,
    sigs: impl Iterator<Item = &'a pgp::packet::Signature>,
) -> Option<u64> {
    let newest = sigs
        .filter(|s| s.typ() != Some(pgp::packet::SignatureType::SubkeyRevocation))
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))?;
    let d = newest.key_expiration_time()?.as_secs();
    (d != 0).then(|| u64::from(created.as_secs()) + u64::from(d))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Signs `payload` with the secret key `fingerprint` of the user's GnuPG keyring
/// (`$GNUPGHOME`, else `~/.gnupg`): `gpg --sign`, the signed message containers' simple
/// signing stores. The secret key lives in gpg-agent, which only gpg can ask, so signing
/// (unlike verification) runs gpg. `passphrase_file` is passed with loopback pinentry.
pub fn sign_with_gpg(
    payload: &[u8],
    fingerprint: &str,
    passphrase_file: Option<&std::path::Path>,
) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let fpr = fingerprint.strip_prefix("0x").unwrap_or(fingerprint);
    if !(8..=40).contains(&fpr.len()) || !fpr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{fingerprint:?} is not a key fingerprint (8 to 40 hexadecimal digits)"
        ));
    }
    let mut cmd = Command::new("gpg");
    cmd.args(["--batch", "--no-tty", "--sign", "--local-user", fpr]);
    if let Some(p) = passphrase_file {
        cmd.args(["--pinentry-mode", "loopback", "--passphrase-file"])
            .arg(p);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running gpg to sign: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = payload.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running gpg to sign: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "gpg could not sign with key {fpr}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if out.stdout.is_empty() || out.stdout.len() > MAX_SIGNATURE_SIZE {
        return Err(format!(
            "gpg wrote a signature of {} bytes",
            out.stdout.len()
        ));
    }
    Ok(out.stdout)
}
