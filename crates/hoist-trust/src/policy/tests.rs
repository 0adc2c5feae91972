//! Table tests: parsing, malformed files with their errors, and scope precedence.

use super::*;
use crate::identity::SignedIdentity;

fn parse(s: &str) -> Result<Policy, String> {
    Policy::parse(s.as_bytes()).map_err(|e| e.to_string())
}

const ACCEPT: &str = r#"[{"type":"insecureAcceptAnything"}]"#;

#[test]
fn parses_every_requirement_and_identity() {
    let p = parse(
        r#"{
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "example.com/a": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}],
                "example.com/b": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/1", "/2"],
                                   "signedIdentity": {"type": "matchExact"}}],
                "example.com/c": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "aGVsbG8=",
                                   "signedIdentity": {"type": "matchRepository"}}],
                "example.com/d": [{"type": "sigstoreSigned", "keyPath": "/c.pub",
                                   "signedIdentity": {"type": "exactReference", "dockerReference": "example.com/x:1"}}],
                "example.com/e": [{"type": "sigstoreSigned", "keyData": "aGVsbG8=",
                                   "signedIdentity": {"type": "exactRepository", "dockerRepository": "example.com/x"}}],
                "example.com/f": [{"type": "sigstoreSigned", "keyPaths": ["/c.pub"],
                                   "signedIdentity": {"type": "remapIdentity", "prefix": "mirror.local", "signedPrefix": "example.com"}}],
                "example.com/g": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k",
                                   "signedIdentity": {"type": "matchRepoDigestOrExact"}}],
                "": [{"type": "insecureAcceptAnything"}]
            },
            "oci": {"/srv/layouts": [{"type": "reject"}]},
            "containers-storage": {"anything goes here": [{"type": "reject"}]}
        }
    }"#,
    )
    .unwrap();
    assert_eq!(p.default, vec![Requirement::Reject]);
    let d = &p.transports["docker"];
    assert_eq!(
        d["example.com/a"],
        vec![Requirement::SignedBy {
            keys: KeySource::Path("/k.gpg".into()),
            identity: SignedIdentity::MatchRepoDigestOrExact
        }]
    );
    assert_eq!(
        d["example.com/b"],
        vec![Requirement::SignedBy {
            keys: KeySource::Paths(vec!["/1".into(), "/2".into()]),
            identity: SignedIdentity::MatchExact
        }]
    );
    assert_eq!(
        d["example.com/c"],
        vec![Requirement::SignedBy {
            keys: KeySource::Data(b"hello".to_vec()),
            identity: SignedIdentity::MatchRepository
        }]
    );
    assert!(matches!(
        &d["example.com/d"][0],
        Requirement::SigstoreSigned { identity: SignedIdentity::ExactReference(r), .. } if r.to_string() == "example.com/x:1"
    ));
    assert!(matches!(
        &d["example.com/e"][0],
        Requirement::SigstoreSigned { identity: SignedIdentity::ExactRepository(r), keys: KeySource::Data(_) } if r.name() == "example.com/x"
    ));
    assert!(matches!(
        &d["example.com/f"][0],
        Requirement::SigstoreSigned { identity: SignedIdentity::RemapIdentity { prefix, signed_prefix }, .. }
            if prefix == "mirror.local" && signed_prefix == "example.com"
    ));
    assert_eq!(d[""], vec![Requirement::InsecureAcceptAnything]);
    assert_eq!(
        p.transports["oci"]["/srv/layouts"],
        vec![Requirement::Reject]
    );
}

#[test]
fn malformed_policies_are_refused_with_their_reason() {
    let sb = |extra: &str| {
        format!(r#"{{"default": [{{"type": "signedBy", "keyType": "GPGKeys", {extra}}}]}}"#)
    };
    let ss = |extra: &str| format!(r#"{{"default": [{{"type": "sigstoreSigned", {extra}}}]}}"#);
    let docker = |scope: &str| {
        format!(r#"{{"default": {ACCEPT}, "transports": {{"docker": {{"{scope}": {ACCEPT}}}}}}}"#)
    };
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "not JSON"),
        ("[]".into(), "top level is not an object"),
        ("{}".into(), "\"default\" is missing"),
        (r#"{"default": []}"#.into(), "empty list"),
        (r#"{"default": {}}"#.into(), "not a list"),
        (format!(r#"{{"default": {ACCEPT}, "extra": 1}}"#), "unknown key \"extra\""),
        (r#"{"default": [{"type": "acceptAll"}]}"#.into(), "unknown requirement type \"acceptAll\""),
        (r#"{"default": [{}]}"#.into(), "no string \"type\""),
        (r#"{"default": [{"type": "reject", "keyPath": "/x"}]}"#.into(), "unknown key \"keyPath\""),
        (r#"{"default": [{"type": "signedBy", "keyPath": "/x"}]}"#.into(), "needs \"keyType\""),
        (r#"{"default": [{"type": "signedBy", "keyType": "X509Certificates", "keyPath": "/x"}]}"#.into(), "keyType \"X509Certificates\" is not supported"),
        (sb(r#""signedIdentity": {"type": "matchExact"}"#), "one of keyPath, keyPaths or keyData is required"),
        (sb(r#""keyPath": "/a", "keyData": "aGk=""#), "only one of keyPath, keyPaths and keyData"),
        (sb(r#""keyPath": "rel/a""#), "not an absolute path"),
        (sb(r#""keyPaths": []"#), "keyPaths is empty"),
        (sb(r#""keyData": "***""#), "not base64"),
        (sb(r#""keyPath": "/a", "signedIdentity": {"type": "matchSomething"}"#), "unknown signedIdentity type"),
        (sb(r#""keyPath": "/a", "signedIdentity": {"type": "exactReference"}"#), "needs \"dockerReference\""),
        (sb(r#""keyPath": "/a", "signedIdentity": {"type": "exactReference", "dockerReference": "example.com/a"}"#), "names neither a tag nor a digest"),
        (sb(r#""keyPath": "/a", "signedIdentity": {"type": "exactRepository", "dockerRepository": "example.com/a:1"}"#), "names a tag or digest"),
        (sb(r#""keyPath": "/a", "signedIdentity": {"type": "matchExact", "dockerReference": "example.com/a:1"}"#), "unknown key \"dockerReference\""),
        (sb(r#""keyPath": "/a", "signedIdentity": {"type": "remapIdentity", "prefix": "*.example.com", "signedPrefix": "example.com"}"#), "wildcards"),
        (sb(r#""keyPath": "/a", "signedIdentity": {"type": "remapIdentity", "prefix": "example.com/a:1", "signedPrefix": "example.com"}"#), "a tag is not allowed"),
        (ss(r#""keyPath": "/c.pub", "rekorPublicKeyPath": "/r.pub""#), "\"rekorPublicKeyPath\" is not supported"),
        (ss(r#""fulcio": {"caPath": "/ca", "oidcIssuer": "https://x", "subjectEmail": "a@b"}"#), "\"fulcio\" is not supported"),
        (ss(r#""keyPath": "/c.pub", "rekorPublicKeyData": "aGk=""#), "checks neither Fulcio"),
        (ss(r#""keyDatas": ["aGk="]"#), "\"keyDatas\" is not supported"),
        (ss(r#""signedIdentity": {"type": "matchRepository"}"#), "one of keyPath"),
        (docker("busybox:latest"), "not a host[:port], repository or reference"),
        (docker("docker.io/busybox"), "not in canonical form"),
        (docker("example.com/Upper"), "invalid Docker reference"),
        (docker("*.example.com/ns"), "wildcard scope"),
        (docker("*"), "not a host"),
        (docker("a.*.example.com"), "not a host"),
        (format!(r#"{{"default": {ACCEPT}, "transports": {{"oci": {{"relative/path": {ACCEPT}}}}}}}"#), "must be absolute"),
        (format!(r#"{{"default": {ACCEPT}, "transports": {{"dir": {{"/a/../b": {ACCEPT}}}}}}}"#), "must be clean"),
        (format!(r#"{{"default": {ACCEPT}, "transports": {{"docker": []}}}}"#), "transports.docker is not an object"),
        (format!(r#"{{"default": {ACCEPT}, "transports": []}}"#), "\"transports\" is not an object"),
    ];
    for (input, want) in cases {
        let err = parse(&input).expect_err(&input);
        assert!(
            err.contains(want),
            "policy {input}\nerror {err:?}\ndoes not mention {want:?}"
        );
    }
}

#[test]
fn valid_scopes() {
    for scope in [
        "",
        "example.com",
        "example.com:5000",
        "127.0.0.1:5000",
        "localhost",
        "*.example.com",
        "example.com/ns",
        "example.com/ns/repo",
        "example.com/ns/repo:tag",
        "docker.io/library/busybox",
        "docker.io/library/busybox:latest",
        "example.com/r@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let p = format!(
            r#"{{"default": {ACCEPT}, "transports": {{"docker": {{"{scope}": {ACCEPT}}}}}}}"#
        );
        parse(&p).unwrap_or_else(|e| panic!("{scope}: {e}"));
    }
}

fn named(s: &str) -> crate::Named {
    crate::Named::parse(s).unwrap()
}

#[test]
fn docker_scopes_most_specific_first() {
    let t = PolicyTarget::docker("docker", &named("a.b.example.com:5000/ns/sub/repo:1"));
    assert_eq!(
        t.scopes,
        vec![
            "a.b.example.com:5000/ns/sub/repo:1",
            "a.b.example.com:5000/ns/sub/repo",
            "a.b.example.com:5000/ns/sub",
            "a.b.example.com:5000/ns",
            "a.b.example.com:5000",
            "*.b.example.com",
            "*.example.com",
            "*.com",
        ]
    );
    let t = PolicyTarget::path("oci", Path::new("/srv/l/img"), Some("v1"));
    assert_eq!(
        t.scopes,
        vec!["/srv/l/img:v1", "/srv/l/img", "/srv/l", "/srv"]
    );
    let t = PolicyTarget::path("dir", Path::new("/srv/d"), None);
    assert_eq!(t.scopes, vec!["/srv/d", "/srv"]);
    assert!(t.docker_reference.is_none());
}

#[test]
fn scope_precedence_table() {
    // Each scope's requirement list is a keyData requirement whose data names the scope, so
    // the chosen list identifies its scope.
    let req = |tag: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(tag);
        format!(r#"[{{"type": "signedBy", "keyType": "GPGKeys", "keyData": "{b}"}}]"#)
    };
    let policy_with = |scopes: &[&str], transport_default: bool| {
        let mut entries: Vec<String> = scopes
            .iter()
            .map(|s| format!("\"{s}\": {}", req(s)))
            .collect();
        if transport_default {
            entries.push(format!("\"\": {}", req("docker-default")));
        }
        let p = format!(
            r#"{{"default": {}, "transports": {{"docker": {{{}}}, "oci": {{"/srv": {}}}}}}}"#,
            req("global-default"),
            entries.join(","),
            req("/srv")
        );
        Policy::parse(p.as_bytes()).unwrap()
    };
    let chosen = |p: &Policy, t: &PolicyTarget| -> String {
        let (_, reqs) = p.requirements_for(t);
        match &reqs[0] {
            Requirement::SignedBy {
                keys: KeySource::Data(d),
                ..
            } => String::from_utf8(d.clone()).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let all = [
        "reg.example.com/ns/repo:1",
        "reg.example.com/ns/repo",
        "reg.example.com/ns",
        "reg.example.com",
        "*.example.com",
        "*.com",
    ];
    let img = PolicyTarget::docker("docker", &named("reg.example.com/ns/repo:1"));
    // Remove the most specific scope one at a time: the next one wins each time.
    for i in 0..all.len() {
        let p = policy_with(&all[i..], true);
        assert_eq!(chosen(&p, &img), all[i], "with scopes {:?}", &all[i..]);
    }
    assert_eq!(chosen(&policy_with(&[], true), &img), "docker-default");
    assert_eq!(chosen(&policy_with(&[], false), &img), "global-default");
    // Other tags, repositories and hosts fall through to what matches them.
    let p = policy_with(&all, true);
    let cases = [
        ("reg.example.com/ns/repo:2", "reg.example.com/ns/repo"),
        ("reg.example.com/ns/other:1", "reg.example.com/ns"),
        ("reg.example.com/other:1", "reg.example.com"),
        ("x.example.com/a:1", "*.example.com"),
        ("example.com/a:1", "*.com"),
        ("example.org/a:1", "docker-default"),
        // A port is part of the host scope but not of the wildcard's domain.
        ("reg.example.com:5000/ns/repo:1", "*.example.com"),
        // A namespace prefix must end at a '/': reg.example.com/nsx is not under /ns.
        ("reg.example.com/nsx/repo:1", "reg.example.com"),
    ];
    for (image, want) in cases {
        let t = PolicyTarget::docker("docker", &named(image));
        assert_eq!(chosen(&p, &t), want, "{image}");
    }
    // Path transports: parents match, other transports fall to the global default.
    let oci = PolicyTarget::path("oci", Path::new("/srv/a/b"), Some("t"));
    assert_eq!(chosen(&p, &oci), "/srv");
    let oci = PolicyTarget::path("oci", Path::new("/srvx/a"), None);
    assert_eq!(chosen(&p, &oci), "global-default");
    let dir = PolicyTarget::path("dir", Path::new("/srv/a"), None);
    assert_eq!(chosen(&p, &dir), "global-default");
    // The scope is reported for messages.
    let (scope, _) = p.requirements_for(&img);
    assert_eq!(
        scope.to_string(),
        "transports.docker.\"reg.example.com/ns/repo:1\""
    );
}

#[test]
fn policy_file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("hoist-trust-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("policy.json");
    std::fs::write(&f, r#"{"default": [{"type": "nope"}]}"#).unwrap();
    let err = Policy::from_file(&f).unwrap_err().to_string();
    assert!(
        err.contains(&f.display().to_string()) && err.contains("nope"),
        "{err}"
    );
    let missing = dir.join("missing.json");
    let err = Policy::from_file(&missing).unwrap_err().to_string();
    assert!(err.contains("missing.json"), "{err}");
    std::fs::write(&f, vec![b' '; (MAX_POLICY_SIZE + 1) as usize]).unwrap();
    let err = Policy::from_file(&f).unwrap_err().to_string();
    assert!(err.contains("larger than"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
