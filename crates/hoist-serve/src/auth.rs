//! Basic authentication against an htpasswd file of bcrypt entries, as `htpasswd -B`
//! writes them and as Distribution's `htpasswd` auth reads them.
//!
//! Only bcrypt (`$2y$`, `$2b$`, `$2a$`) is accepted: a file with an MD5 (`$apr1$`),
//! SHA-1 (`{SHA}`) or crypt entry is refused when loaded, naming the line. A password is
//! checked by bcrypt, whose comparison is constant time; a user not in the file is
//! checked against a dummy hash of the same cost, so the answer's timing does not tell
//! which users exist.
//!
//! bcrypt is slow on purpose (a few ms at cost 5, a quarter second at cost 12), and a
//! client sends its credentials with every request: credentials that checked are
//! remembered for [`REMEMBER`], as a SHA-256 keyed with a secret drawn at start (never
//! the password), at most [`REMEMBERED`] of them. Reloading the file is a restart, which
//! forgets them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::error::ServeError;

/// Longest `Authorization` header value looked at.
const MAX_HEADER: usize = 4096;
/// bcrypt reads at most 72 bytes of a password; longer ones are refused rather than
/// silently truncated.
const MAX_PASSWORD: usize = 72;
/// How long credentials that checked are trusted without bcrypt.
pub const REMEMBER: Duration = Duration::from_secs(60);
/// At most this many remembered credentials (the oldest half goes when full).
pub const REMEMBERED: usize = 1024;

/// The users of an htpasswd file.
#[derive(Clone)]
pub struct Htpasswd {
    users: Arc<HashMap<String, String>>,
    dummy: String,
    key: [u8; 32],
    remembered: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Htpasswd").field("users", &names).finish()
    }
}

impl Htpasswd {
    /// Read an htpasswd file.
    pub fn load(path: &Path) -> Result<Htpasswd, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Htpasswd::parse(&text).map_err(|what| ServeError::Config {
            what: format!("{}: {what}", path.display()),
        })
    }

    /// Parse htpasswd text: `user:hash` lines, blank lines and `#` comments.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        let mut cost = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {n}: not user:hash"))?;
            if user.is_empty() {
                return Err(format!("line {n}: empty user name"));
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|_| {
                format!(
                    "line {n} ({user}): not a bcrypt hash (only bcrypt entries are accepted: htpasswd -B)"
                )
            })?;
            cost.get_or_insert(parts.get_cost());
            if users.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(format!("line {n}: user {user} appears twice"));
            }
        }
        if users.is_empty() {
            return Err("no user".into());
        }
        let dummy = bcrypt::hash_with_salt(b"hoist-no-such-user", cost.unwrap_or(5), [7u8; 16])
            .map_err(|e| e.to_string())?
            .to_string();
        Ok(Htpasswd {
            users: Arc::new(users),
            dummy,
            key: rand::random(),
            remembered: Arc::default(),
        })
    }

    /// Whether an `Authorization` header value holds a known user and its password.
    /// CPU-bound (bcrypt): call it off the async runtime.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((user, password)) = basic_credentials(value) else {
            return false;
        };
        let tag = self.tag(value);
        {
            let mut seen = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            match seen.get(&tag) {
                Some(t) if t.elapsed() < REMEMBER => return true,
                Some(_) => {
                    seen.remove(&tag);
                }
                None => {}
            }
        }
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let ok = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false) && known;
        if ok {
            let mut seen = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= REMEMBERED {
                let mut ages: Vec<Instant> = seen.values().copied().collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                seen.retain(|_, t| *t > cut);
            }
            seen.insert(tag, Instant::now());
        }
        ok
    }

    /// SHA-256 of the secret key and the header value.
    fn tag(&self, value: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.key);
        h.update(value);
        h.finalize().into()
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(v: &[u8]) -> Option<(String, String)> {
    if v.len() > MAX_HEADER {
        return None;
    }
    let v = std::str::from_utf8(v).ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, password) = raw.split_once(':')?;
    if password.len() > MAX_PASSWORD {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pw: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
        .into_bytes()
    }

    #[test]
    fn bcrypt_entries_check_and_others_are_refused() {
        let hash = bcrypt::hash_with_salt(b"s3cret", 4, [1u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let h = Htpasswd::parse(&format!("# users\n\nalice:{hash}\n")).unwrap();
        assert!(h.check(Some(&header("alice", "s3cret"))));
        assert!(!h.check(Some(&header("alice", "s3cret!"))));
        assert!(!h.check(Some(&header("alice", ""))));
        assert!(!h.check(Some(&header("bob", "s3cret"))));
        assert!(!h.check(None));
        assert!(!h.check(Some(b"Bearer abc")));
        assert!(!h.check(Some(b"Basic !!!")));
        let long = "x".repeat(73);
        assert!(!h.check(Some(&header("alice", &long))));
        // `basic` in any case, as RFC 7617 says.
        let lower = String::from_utf8(header("alice", "s3cret"))
            .unwrap()
            .replacen("Basic", "basic", 1);
        assert!(h.check(Some(lower.as_bytes())));
        // Remembered: checks again without bcrypt, and only the exact credentials.
        assert!(h.check(Some(&header("alice", "s3cret"))));
        assert!(!h.check(Some(&header("alice", "s3cret "))));
        assert_eq!(h.remembered.lock().unwrap().len(), 2);

        for bad in [
            "alice:$apr1$abc$def",
            "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            "alice:plain",
            "nocolon",
            ":$2y$04$abcdefghijklmnopqrstuu",
            "",
        ] {
            assert!(Htpasswd::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Htpasswd::parse(&format!("a:{hash}\na:{hash}\n")).is_err());
    }
}
