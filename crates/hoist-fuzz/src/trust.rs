//! The `trust` target: what hoist reads from signature stores and policy files, all of it
//! untrusted. The first byte picks the reader, the rest is its input:
//! - 0: a containers-policy.json: accepted policies resolve scopes for a few images
//!   without panicking, and always give a non-empty requirement list;
//! - 1, 2: a simple-signing or cosign payload: an accepted payload keeps the size limit,
//!   and its claims round-trip through hoist's own payload writer;
//! - 3: a registries.d file: accepted files answer namespace lookups;
//! - 4: an OpenPGP signed message checked against an empty keyring (never accepted), and
//!   the same bytes read as a keyring; never a panic;
//! - 5: a cosign signature annotation (the rest, as text) over a fixed payload: never
//!   accepted by a fresh key.

use std::path::Path;

use hoist_trust::gpg::Keyring;
use hoist_trust::named::Named;
use hoist_trust::payload::{self, MAX_PAYLOAD_SIZE, PayloadKind};
use hoist_trust::registries_d::RegistriesD;
use hoist_trust::sigstore::{PrivateKey, PublicKeys};
use hoist_trust::{Policy, PolicyTarget};

/// Runs one input (see the module docs).
pub fn check(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => policy(rest),
        1 => payload_round_trip(PayloadKind::SimpleSigning, rest),
        2 => payload_round_trip(PayloadKind::Cosign, rest),
        3 => registries_d(rest),
        4 => pgp_message(rest),
        _ => cosign_signature(rest),
    }
}

fn policy(data: &[u8]) {
    let Ok(p) = Policy::parse(data) else {
        return;
    };
    let targets = [
        PolicyTarget::docker("docker", &Named::parse("example.com/ns/app:1").unwrap()),
        PolicyTarget::docker("hoist", &Named::parse("a.b.example.org:5000/x").unwrap()),
        PolicyTarget::path("oci", Path::new("/srv/layout"), Some("v1")),
        PolicyTarget::path("dir", Path::new("/"), None),
    ];
    for t in &targets {
        let (_, reqs) = p.requirements_for(t);
        assert!(!reqs.is_empty(), "an accepted policy gave no requirement");
        for r in reqs {
            let _ = r.describe();
        }
    }
}

fn payload_round_trip(kind: PayloadKind, data: &[u8]) {
    let Ok(c) = payload::parse(kind, data) else {
        return;
    };
    assert!(
        data.len() <= MAX_PAYLOAD_SIZE,
        "payload over the limit accepted"
    );
    let again = payload::build(kind, &c.manifest_digest, &c.docker_reference, c.timestamp);
    let back = payload::parse(kind, &again).expect("hoist's own payload parses");
    assert_eq!(back.manifest_digest, c.manifest_digest);
    assert_eq!(back.docker_reference, c.docker_reference);
    assert_eq!(back.timestamp, c.timestamp);
}

fn registries_d(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = RegistriesD::parse(text) else {
        return;
    };
    for image in ["example.com/ns/app:1", "docker.io/library/busybox:latest"] {
        let e = r.entry_for(&Named::parse(image).unwrap());
        if let Some(u) = e.lookaside {
            assert!(
                ["file:///", "http://", "https://"]
                    .iter()
                    .any(|p| u.starts_with(p)),
                "lookaside {u:?} accepted"
            );
        }
    }
}

fn pgp_message(data: &[u8]) {
    assert!(
        Keyring::default().verify(data).is_err(),
        "an empty keyring accepted a signature"
    );
    // The same bytes as a keyring (key files are read from policies).
    let mut ring = Keyring::default();
    if ring.add(data, "fuzz input").is_ok() {
        let _ = ring.fingerprints();
    }
}

fn cosign_signature(data: &[u8]) {
    let Ok(sig) = std::str::from_utf8(data) else {
        return;
    };
    let key = PrivateKey::generate();
    let mut keys = PublicKeys::default();
    keys.add_pem(key.public_pem().as_bytes(), "fuzz key")
        .expect("hoist's own public key parses");
    assert!(
        keys.verify(b"fixed payload", sig).is_err(),
        "arbitrary text verified as a signature by a fresh key"
    );
}
