//! The `reference` target: image references, digests, platforms and media types, all from
//! one string.

use hoist_types::{Digest, MediaType, Platform, Reference};

/// Parses `data` (when it is UTF-8) as a digest, a reference, a repository name, a platform
/// and a media type, and checks that whatever parses round-trips through its string form.
pub fn check(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    digest(s);
    reference(s);
    repository(s);
    platform(s);
    media_type(s);
}

fn digest(s: &str) {
    let Ok(d) = Digest::parse(s) else {
        return;
    };
    // Strict grammar: the string is already canonical.
    assert_eq!(d.to_string(), s, "a digest's string is its input");
    assert_eq!(d.hex().len(), d.algorithm().hex_len());
    assert!(
        d.hex().starts_with(d.short()),
        "short() is a prefix of hex()"
    );
    assert_eq!(Digest::parse(&d.to_string()).ok().as_ref(), Some(&d));
    let json = serde_json::to_string(&d).expect("a digest serialises");
    let back: Digest = serde_json::from_str(&json).expect("a serialised digest parses");
    assert_eq!(back, d, "serde round trip of {s:?}");
    // A digest is a file name: no separators, no dot-dot.
    assert!(!d.hex().contains(['/', '.']) && !d.hex().is_empty());
}

fn reference(s: &str) {
    let Ok(r) = Reference::parse(s) else {
        return;
    };
    assert!(
        r.tag().is_some() || r.digest().is_some(),
        "{s:?}: a parsed reference names a tag or a digest"
    );
    assert!(!r.registry().is_empty() && !r.repository().is_empty());
    assert!(
        r.registry().len() + 1 + r.repository().len() <= 255,
        "{s:?}: name over 255 bytes"
    );
    let shown = r.to_string();
    let again = Reference::parse(&shown)
        .unwrap_or_else(|e| panic!("{s:?} → {shown:?} does not parse again: {e}"));
    assert_eq!(again, r, "{s:?} → {shown:?}");
    assert_eq!(again.to_string(), shown, "to_string is stable");
    let familiar = r.familiar();
    let from_familiar = Reference::parse(&familiar)
        .unwrap_or_else(|e| panic!("{s:?}: familiar form {familiar:?} does not parse: {e}"));
    assert_eq!(from_familiar, r, "{s:?}: familiar form {familiar:?}");
    let parts = Reference::from_parts(r.registry(), r.repository(), r.tag(), r.digest().cloned())
        .unwrap_or_else(|e| panic!("{s:?}: from_parts of its own parts fails: {e}"));
    assert_eq!(parts, r, "{s:?}: from_parts");
    match r.digest() {
        Some(d) => assert_eq!(r.manifest_reference(), d.to_string()),
        None => assert_eq!(Some(r.manifest_reference().as_str()), r.tag()),
    }
    if let Some(t) = r.tag() {
        let retagged = r.with_tag(t).expect("a parsed tag is a valid tag");
        assert_eq!(retagged.tag(), Some(t));
        assert_eq!(retagged.digest(), None);
    }
}

fn repository(s: &str) {
    let Ok(r) = Reference::parse_repository(s) else {
        return;
    };
    assert!(r.tag().is_none() && r.digest().is_none());
    let name = r.name();
    let again = Reference::parse_repository(&name)
        .unwrap_or_else(|e| panic!("{s:?} → {name:?} does not parse again: {e}"));
    assert_eq!(again, r, "{s:?} → {name:?}");
}

fn platform(s: &str) {
    let Ok(p) = s.parse::<Platform>() else {
        return;
    };
    assert_eq!(
        p.clone().normalized(),
        p,
        "{s:?}: parsed platforms are normal"
    );
    let shown = p.to_string();
    let again: Platform = shown
        .parse()
        .unwrap_or_else(|e| panic!("{s:?} → {shown:?} does not parse again: {e}"));
    assert_eq!(again, p, "{s:?} → {shown:?}");
    assert!(p.matches(&p), "{s:?}: a platform matches itself");
}

fn media_type(s: &str) {
    let mt = MediaType::parse(s);
    let again = MediaType::parse(mt.as_str());
    assert_eq!(again, mt, "{s:?}: media type string round trip");
    // Classes are exclusive.
    let classes = [
        mt.is_image_manifest(),
        mt.is_index(),
        mt.is_schema1(),
        mt.is_config(),
        mt.layer_compression().is_some(),
    ];
    assert!(
        classes.iter().filter(|c| **c).count() <= 1,
        "{s:?}: media type {mt} is in several classes"
    );
}
