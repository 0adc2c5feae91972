//! How the CLI reports a failure: the error and its causes on one line, each cause once
//! (`hoist: error: top: cause: cause`), then hints that name the CLI's own flags, chosen
//! by the kind of error. The libraries' messages say what is wrong and never name a flag:
//! the flags are this binary's, so the advice about them lives here.

use std::error::Error as StdError;

use hoist_mkfs::MkfsError;
use hoist_registry::RegistryError;
use hoist_store::StoreError;
use hoist_transport::TransportError;

/// Prints `e` to stderr: the chain on one line, then one `hint:` line per hint.
pub fn print(e: &anyhow::Error) {
    eprintln!("hoist: error: {}", chain_line(e));
    for hint in hints(e) {
        eprintln!("hint: {hint}");
    }
}

/// The error and its causes joined with `: `, like `{:#}`. A library error's message
/// never holds its source's text; a cause is still skipped when the message before it
/// ends with `: CAUSE` or `(CAUSE)`, for errors from outside that rule (a message built
/// with `format!("{ctx}: {e}")` that also keeps `e` as its source).
pub fn chain_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let repeated =
            previous.ends_with(&format!(": {text}")) || previous.ends_with(&format!("({text})"));
        if text.is_empty() || repeated {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        previous = text;
    }
    out
}

/// Advice naming the CLI's flags, for the errors that have some, in chain order, each once.
pub fn hints(e: &anyhow::Error) -> Vec<&'static str> {
    let mut out = Vec::new();
    for cause in e.chain() {
        if let Some(h) = hint(cause)
            && !out.contains(&h)
        {
            out.push(h);
        }
    }
    out
}

fn hint(cause: &(dyn StdError + 'static)) -> Option<&'static str> {
    if let Some(e) = cause.downcast_ref::<RegistryError>() {
        return match e {
            RegistryError::Tls { .. } => Some(
                "trust the registry's CA with --cert-dir or /etc/containers/certs.d/HOST/, or skip verification with --tls-verify=false",
            ),
            RegistryError::PushRejected {
                method: "DELETE",
                status: 405,
                ..
            } => Some(
                "the registry does not allow deletes (the Distribution registry allows them with storage.delete.enabled: true, or REGISTRY_STORAGE_DELETE_ENABLED=true)",
            ),
            _ => None,
        };
    }
    if let Some(e) = cause.downcast_ref::<MkfsError>() {
        return match e {
            MkfsError::TooSmall { .. } => Some("use --size auto to size the image to its content"),
            MkfsError::VerityNeedsImage => Some("--verity needs --format ext4 or --format erofs"),
            _ => None,
        };
    }
    if let Some(e) = cause.downcast_ref::<StoreError>() {
        return match e {
            StoreError::NoSpace { .. } => {
                Some("`hoist gc` removes what no image needs and reports the bytes freed")
            }
            _ => None,
        };
    }
    if let Some(e) = cause.downcast_ref::<TransportError>() {
        return match e {
            TransportError::ZstdInDockerSchema2 { .. } => Some(
                "keep zstd layers with --format oci, or recompress them with --dest-compress-format gzip",
            ),
            TransportError::FormatNotAccepted { .. } => Some(
                "leave out --format and --dest-compress-format: the copy then writes what the destination holds",
            ),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reading /x: {}", self.0)
        }
    }
    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_printed_once() {
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(chain_line(&e), "outer: middle: inner");
        // An error outside the rule that prints its source itself.
        let e =
            anyhow::Error::new(Outer(std::io::Error::other("disk on fire"))).context("pulling a:b");
        assert_eq!(chain_line(&e), "pulling a:b: reading /x: disk on fire");
        // A cause that merely ends the message before it is still printed.
        let e = anyhow::anyhow!("x").context("cannot read /tmp/x");
        assert_eq!(chain_line(&e), "cannot read /tmp/x: x");
    }

    #[test]
    fn library_errors_print_their_sources_through_the_chain() {
        let e = StoreError::Io {
            op: "read",
            path: Some("/s/blobs/x".into()),
            source: std::io::Error::other("disk on fire"),
        };
        let e = anyhow::Error::new(e).context("pulling a:b");
        assert_eq!(
            chain_line(&e),
            "pulling a:b: cannot read /s/blobs/x: disk on fire"
        );
        assert!(hints(&e).is_empty());
    }

    #[test]
    fn flags_are_named_by_hints_keyed_on_the_error() {
        let e = anyhow::Error::new(MkfsError::TooSmall {
            size: 1,
            needed: 2,
            image: "/r.ext4".into(),
        });
        assert!(!chain_line(&e).contains("--"), "{}", chain_line(&e));
        assert_eq!(
            hints(&e),
            ["use --size auto to size the image to its content"]
        );
        let e = anyhow::Error::new(RegistryError::Tls {
            url: "https://127.0.0.1:1/v2/".into(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        });
        assert!(hints(&e)[0].contains("--tls-verify=false"));
        let e = anyhow::Error::new(TransportError::ZstdInDockerSchema2 { manifest: None })
            .context("copying a to b");
        assert_eq!(
            chain_line(&e),
            "copying a to b: Docker schema 2 has no zstd layer type"
        );
        assert!(hints(&e)[0].contains("--format oci"));
    }
}
