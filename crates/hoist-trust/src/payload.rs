//! The two signed payload formats hoist reads and writes. Both claim one manifest digest and
//! one Docker reference:
//!
//! - simple signing (containers-signature(5)), inside an OpenPGP signed message:
//!   `{"critical": {"type": "atomic container signature", "image": {"docker-manifest-digest":
//!   "sha256:…"}, "identity": {"docker-reference": "host/repo:tag"}}, "optional": {"creator":
//!   "…", "timestamp": 1700000000}}`;
//! - cosign (sigstore) simple signing: the same shape with `"type": "cosign container image
//!   signature"`, `optional` possibly `null` or absent, signed detached (the payload is the
//!   layer of a `.sig` image, its signature an annotation).
//!
//! Parsing is strict where it matters: `critical` and its objects must hold exactly the known
//! keys (an unknown critical key must never be ignored), every value must have its type, and
//! a payload larger than [`MAX_PAYLOAD_SIZE`] is refused before it is parsed.

use hoist_types::Digest;
use serde_json::{Map, Value, json};

use crate::named::Named;

/// Largest payload parsed (real payloads are a few hundred bytes).
pub const MAX_PAYLOAD_SIZE: usize = 64 << 10;

/// `critical.type` of a simple-signing payload.
pub const SIMPLE_SIGNING_TYPE: &str = "atomic container signature";
/// `critical.type` of a cosign payload.
pub const COSIGN_TYPE: &str = "cosign container image signature";

/// Which payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// containers-signature(5), signed with OpenPGP.
    SimpleSigning,
    /// cosign's, signed with an ECDSA key.
    Cosign,
}

impl PayloadKind {
    fn type_str(self) -> &'static str {
        match self {
            PayloadKind::SimpleSigning => SIMPLE_SIGNING_TYPE,
            PayloadKind::Cosign => COSIGN_TYPE,
        }
    }
}

/// What a payload claims. Untrusted until its signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The manifest digest the signer vouched for.
    pub manifest_digest: Digest,
    /// The Docker reference the signer named.
    pub docker_reference: Named,
    /// `optional.creator`, if any.
    pub creator: Option<String>,
    /// `optional.timestamp` (seconds since the epoch), if any.
    pub timestamp: Option<i64>,
}

/// Why a payload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// Parses a payload of `kind`.
pub fn parse(kind: PayloadKind, bytes: &[u8]) -> Result<Claims, PayloadError> {
    let err = |s: String| PayloadError(s);
    if bytes.len() > MAX_PAYLOAD_SIZE {
        return Err(err(format!(
            "payload of {} bytes is larger than {MAX_PAYLOAD_SIZE}",
            bytes.len()
        )));
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| err(format!("payload is not JSON: {e}")))?;
    let top = v
        .as_object()
        .ok_or_else(|| err("payload is not a JSON object".into()))?;
    exact_keys(top, &["critical"], &["optional"], "the payload").map_err(err)?;
    let critical = object(&top["critical"], "critical").map_err(err)?;
    exact_keys(critical, &["type", "image", "identity"], &[], "critical").map_err(err)?;
    let ty = string(&critical["type"], "critical.type").map_err(err)?;
    if ty != kind.type_str() {
        return Err(err(format!(
            "critical.type is {ty:?}, expected {:?}",
            kind.type_str()
        )));
    }
    let image = object(&critical["image"], "critical.image").map_err(err)?;
    exact_keys(image, &["docker-manifest-digest"], &[], "critical.image").map_err(err)?;
    let d = string(
        &image["docker-manifest-digest"],
        "critical.image.docker-manifest-digest",
    )
    .map_err(err)?;
    let manifest_digest =
        Digest::parse(d).map_err(|e| err(format!("critical.image.docker-manifest-digest: {e}")))?;
    let identity = object(&critical["identity"], "critical.identity").map_err(err)?;
    exact_keys(identity, &["docker-reference"], &[], "critical.identity").map_err(err)?;
    let r = string(
        &identity["docker-reference"],
        "critical.identity.docker-reference",
    )
    .map_err(err)?;
    let docker_reference =
        Named::parse(r).map_err(|e| err(format!("critical.identity.docker-reference: {e}")))?;
    let (mut creator, mut timestamp) = (None, None);
    match top.get("optional") {
        None | Some(Value::Null) if kind == PayloadKind::Cosign => {}
        None => return Err(err("\"optional\" is missing".into())),
        Some(Value::Object(o)) => {
            if let Some(c) = o.get("creator") {
                creator = Some(string(c, "optional.creator").map_err(err)?.to_owned());
            }
            if let Some(t) = o.get("timestamp") {
                timestamp = Some(
                    t.as_i64()
                        .ok_or_else(|| err("optional.timestamp is not an integer".into()))?,
                );
            }
        }
        Some(_) => return Err(err("\"optional\" is not an object".into())),
    }
    Ok(Claims {
        manifest_digest,
        docker_reference,
        creator,
        timestamp,
    })
}

/// A payload of `kind` claiming `digest` for `reference`.
pub fn build(
    kind: PayloadKind,
    digest: &Digest,
    reference: &Named,
    timestamp: Option<i64>,
) -> Vec<u8> {
    let mut optional = Map::new();
    optional.insert(
        "creator".into(),
        Value::String(format!("hoist {}", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(t) = timestamp {
        optional.insert("timestamp".into(), json!(t));
    }
    let v = json!({
        "critical": {
            "type": kind.type_str(),
            "image": {"docker-manifest-digest": digest.to_string()},
            "identity": {"docker-reference": reference.to_string()},
        },
        "optional": optional,
    });
    serde_json::to_vec(&v).expect("a JSON value serialises")
}

fn exact_keys(
    obj: &Map<String, Value>,
    required: &[&str],
    optional: &[&str],
    at: &str,
) -> Result<(), String> {
    for k in required {
        if !obj.contains_key(*k) {
            return Err(format!("{at} has no {k:?}"));
        }
    }
    for k in obj.keys() {
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
            return Err(format!("unknown key {k:?} in {at}"));
        }
    }
    Ok(())
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{at} is not an object"))
}

fn string<'a>(v: &'a Value, at: &str) -> Result<&'a str, String> {
    v.as_str().ok_or_else(|| format!("{at} is not a string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn simple(critical: &str, optional: &str) -> String {
        format!(r#"{{"critical": {critical}, "optional": {optional}}}"#)
    }

    fn crit(ty: &str, digest: &str, reference: &str) -> String {
        format!(
            r#"{{"type": "{ty}", "image": {{"docker-manifest-digest": "{digest}"}}, "identity": {{"docker-reference": "{reference}"}}}}"#
        )
    }

    #[test]
    fn round_trip_both_kinds() {
        let r = Named::parse("example.com/a/b:1").unwrap();
        let d = Digest::parse(D).unwrap();
        for kind in [PayloadKind::SimpleSigning, PayloadKind::Cosign] {
            let c = parse(kind, &build(kind, &d, &r, Some(7))).unwrap();
            assert_eq!(c.manifest_digest, d);
            assert_eq!(c.docker_reference, r);
            assert_eq!(c.timestamp, Some(7));
            assert!(c.creator.unwrap().starts_with("hoist "));
        }
    }

    #[test]
    fn accepts_what_peers_write() {
        // cosign: optional null, reference without tag.
        let p = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/a"}},"image":{{"docker-manifest-digest":"{D}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let c = parse(PayloadKind::Cosign, p.as_bytes()).unwrap();
        assert!(c.docker_reference.is_name_only());
        // Unknown optional keys are fine.
        let p = simple(
            &crit(SIMPLE_SIGNING_TYPE, D, "example.com/a:1"),
            r#"{"creator": "x", "timestamp": 1, "anything": [1]}"#,
        );
        parse(PayloadKind::SimpleSigning, p.as_bytes()).unwrap();
    }

    #[test]
    fn refusals() {
        let ok_crit = crit(SIMPLE_SIGNING_TYPE, D, "example.com/a:1");
        let cases: Vec<(PayloadKind, String, &str)> = vec![
            (PayloadKind::SimpleSigning, "not json".into(), "not JSON"),
            (PayloadKind::SimpleSigning, "[]".into(), "not a JSON object"),
            (
                PayloadKind::SimpleSigning,
                format!(r#"{{"critical": {ok_crit}}}"#),
                "\"optional\" is missing",
            ),
            (
                PayloadKind::SimpleSigning,
                r#"{"optional": {}}"#.into(),
                "has no \"critical\"",
            ),
            (
                PayloadKind::SimpleSigning,
                format!(r#"{{"critical": {ok_crit}, "optional": {{}}, "x": 1}}"#),
                "unknown key \"x\"",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(&crit(COSIGN_TYPE, D, "example.com/a:1"), "{}"),
                "expected \"atomic container signature\"",
            ),
            (
                PayloadKind::Cosign,
                simple(&ok_crit, "{}"),
                "expected \"cosign container image signature\"",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(
                    &crit(SIMPLE_SIGNING_TYPE, "sha256:abc", "example.com/a:1"),
                    "{}",
                ),
                "docker-manifest-digest",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(&crit(SIMPLE_SIGNING_TYPE, D, "Not/Valid"), "{}"),
                "docker-reference",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(
                    &format!(
                        r#"{{"type": "{SIMPLE_SIGNING_TYPE}", "image": {{"docker-manifest-digest": "{D}"}}, "identity": {{"docker-reference": "a/b:1"}}, "extra": true}}"#
                    ),
                    "{}",
                ),
                "unknown key \"extra\" in critical",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(
                    &format!(
                        r#"{{"type": "{SIMPLE_SIGNING_TYPE}", "image": {{"docker-manifest-digest": "{D}", "more": 1}}, "identity": {{"docker-reference": "a/b:1"}}}}"#
                    ),
                    "{}",
                ),
                "unknown key \"more\" in critical.image",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(
                    &format!(
                        r#"{{"type": "{SIMPLE_SIGNING_TYPE}", "image": {{"docker-manifest-digest": "{D}"}}}}"#
                    ),
                    "{}",
                ),
                "critical has no \"identity\"",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(&ok_crit, r#"{"timestamp": "now"}"#),
                "timestamp is not an integer",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(&ok_crit, r#"{"creator": 1}"#),
                "creator is not a string",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(&ok_crit, "[]"),
                "\"optional\" is not an object",
            ),
            (
                PayloadKind::SimpleSigning,
                simple(
                    &ok_crit,
                    &format!(r#"{{"pad": "{}"}}"#, "x".repeat(MAX_PAYLOAD_SIZE)),
                ),
                "larger than",
            ),
        ];
        for (kind, input, want) in cases {
            let e = parse(kind, input.as_bytes()).expect_err(&input).0;
            assert!(e.contains(want), "{input}\n{e:?} does not mention {want:?}");
        }
    }
}
