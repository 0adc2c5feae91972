//! The token server on its own, and Distribution verifying its tokens.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hoist_testkit::http::{self, basic_auth};
use hoist_testkit::images;
use hoist_testkit::skopeo::{self, SkopeoOpts};
use hoist_testkit::token::{Access, Grant, TokenServer, TokenServerConfig, TokenStats};
use hoist_testkit::{Registry, require_peers};

fn get(server: &TokenServer, query: &str, auth: Option<&str>) -> http::Response {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http::request(
        server.addr(),
        "GET",
        &format!("/token?{query}"),
        &headers,
        b"",
    )
    .unwrap()
}

fn post(server: &TokenServer, form: &str) -> http::Response {
    http::request(
        server.addr(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .unwrap()
}

/// Splits and checks a JWT: ES256 signature by the server's key, `x5c` = its certificate.
fn verify(server: &TokenServer, jwt: &str) -> serde_json::Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    let x5c = STANDARD.decode(header["x5c"][0].as_str().unwrap()).unwrap();
    assert_eq!(x5c, server.signing_cert_der());
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    assert_eq!(sig.len(), 64);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        server.public_key(),
    )
    .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
    .expect("signature verifies");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

#[test]
fn get_anonymous_basic_and_offline() {
    require_peers!(Peer::Openssl);
    let s = TokenServer::start_with(TokenServerConfig::default().lifetime(Duration::from_secs(90)));
    let svc = s.service().to_string();

    // Anonymous: pull only, never under private/.
    let r = get(
        &s,
        &format!(
            "service={svc}&scope=repository:pub/app:pull,push&scope=repository:private/x:pull"
        ),
        None,
    );
    assert_eq!(r.status, 200);
    let body = r.json().unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 90);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    assert!(body.get("refresh_token").is_none());
    let claims = verify(&s, body["token"].as_str().unwrap());
    assert_eq!(claims["iss"], s.issuer());
    assert_eq!(claims["aud"], svc.as_str());
    assert_eq!(claims["sub"], "");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        90
    );
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "pub/app", "actions": ["pull"]}])
    );

    // Basic: everything asked for, a refresh token with offline_token=true.
    let r = get(
        &s,
        &format!(
            "service={svc}&scope=repository:private/x:pull,push&offline_token=true&client_id=t"
        ),
        Some(&basic_auth("alice", "wonderland")),
    );
    assert_eq!(r.status, 200);
    let body = r.json().unwrap();
    assert!(body["refresh_token"].as_str().unwrap().len() >= 32);
    let claims = verify(&s, body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );

    // Bad credentials and a foreign service.
    let r = get(
        &s,
        "scope=repository:a:pull",
        Some(&basic_auth("alice", "x")),
    );
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    assert_eq!(get(&s, "service=other", None).status, 400);

    assert_eq!(
        s.stats(),
        TokenStats {
            total: 4,
            issued: 2,
            anonymous: 1,
            basic: 1,
            password: 0,
            refresh: 0,
            rejected: 2
        }
    );
    let reqs = s.requests();
    assert_eq!(reqs[1].grant, Grant::Basic("alice".into()));
    assert_eq!(reqs[0].scopes.len(), 2);
    s.reset_stats();
    assert_eq!(s.stats(), TokenStats::default());
}

#[test]
fn post_password_and_refresh_grants() {
    require_peers!(Peer::Openssl);
    let s = TokenServer::start_with(TokenServerConfig::default().user("bob", "builder"));
    let svc = s.service().to_string();
    let scope = "repository%3Aa%3Apull+repository%3Ab%3Apull%2Cpush";

    let r = post(
        &s,
        &format!(
            "grant_type=password&username=bob&password=builder&client_id=hoist&service={svc}&scope={scope}&access_type=offline"
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(body["scope"], "repository:a:pull repository:b:pull,push");
    let claims = verify(&s, body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["access"].as_array().unwrap().len(), 2);

    // No access_type=offline: no refresh token.
    let r = post(
        &s,
        "grant_type=password&username=bob&password=builder&client_id=hoist",
    );
    assert!(r.json().unwrap().get("refresh_token").is_none());

    let r = post(
        &s,
        &format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id=hoist&scope=repository%3Ac%3Apush"
        ),
    );
    assert_eq!(r.status, 200);
    let body = r.json().unwrap();
    assert_eq!(body["refresh_token"], refresh.as_str());
    let claims = verify(&s, body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["access"][0]["name"], "c");

    assert_eq!(
        post(
            &s,
            "grant_type=refresh_token&refresh_token=nope&client_id=h"
        )
        .status,
        401
    );
    assert_eq!(
        post(
            &s,
            "grant_type=password&username=bob&password=x&client_id=h"
        )
        .status,
        401
    );
    assert_eq!(
        post(&s, "grant_type=password&username=bob&password=builder").status,
        400
    );
    assert_eq!(post(&s, "grant_type=magic&client_id=h").status, 400);
    s.revoke_refresh_tokens();
    let r = post(
        &s,
        &format!("grant_type=refresh_token&refresh_token={refresh}&client_id=h"),
    );
    assert_eq!(r.status, 401);

    let st = s.stats();
    assert_eq!(
        (st.password, st.refresh, st.rejected, st.total),
        (2, 1, 5, 8)
    );
}

#[test]
fn distribution_accepts_our_tokens_and_enforces_their_scopes() {
    require_peers!();
    let reg = Registry::token();
    let ts = reg.token_server().unwrap();
    assert_eq!(reg.credentials(), Some(("alice", "wonderland")));

    // The challenge names our realm and service.
    let r = http::request(reg.addr(), "GET", "/v2/", &[], b"").unwrap();
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").unwrap().to_string();
    assert!(
        challenge.contains(&format!("realm=\"{}\"", ts.realm())),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("service=\"{}\"", ts.service())),
        "{challenge}"
    );

    // A minted token with the x5c header (self-signed leaf = rootcertbundle) is accepted.
    let bearer = |t: &str| format!("Bearer {t}");
    let t = ts.mint("alice", &[], Duration::from_secs(60));
    let r = http::request(
        reg.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &bearer(&t))],
        b"",
    )
    .unwrap();
    assert_eq!(
        r.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&r.body),
        reg.log()
    );

    // Scopes are enforced: pull on a/b does not open c/d.
    let access = [Access {
        kind: "repository".into(),
        name: "a/b".into(),
        actions: vec!["pull".into()],
    }];
    let t = ts.mint("alice", &access, Duration::from_secs(60));
    let auth = [("Authorization", bearer(&t))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ok = http::request(reg.addr(), "GET", "/v2/a/b/tags/list", &auth, b"").unwrap();
    assert_eq!(ok.status, 404, "unknown repo, but authorized"); // NAME_UNKNOWN
    let denied = http::request(reg.addr(), "GET", "/v2/c/d/tags/list", &auth, b"").unwrap();
    assert_eq!(denied.status, 401);

    // The catalog needs registry:catalog:*, which the policy gives to authenticated users only.
    let q = format!("service={}&scope=registry:catalog:*", ts.service());
    let anon = get(ts, &q, None).json().unwrap();
    assert_eq!(
        anon["token"]
            .as_str()
            .map(|t| verify(ts, t)["access"].clone()),
        Some(serde_json::json!([]))
    );
    let t = get(ts, &q, Some(&basic_auth("alice", "wonderland")))
        .json()
        .unwrap();
    let t = t["token"].as_str().unwrap();
    let r = http::request(
        reg.addr(),
        "GET",
        "/v2/_catalog",
        &[("Authorization", &bearer(t))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t = anon["token"].as_str().unwrap();
    let r = http::request(
        reg.addr(),
        "GET",
        "/v2/_catalog",
        &[("Authorization", &bearer(t))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Distribution allows 60 s of clock skew: a token that expired 20 s ago still works.
    let t = ts.mint_claims(&serde_json::json!({"iss": ts.issuer(), "sub": "alice",
        "aud": ts.service(), "exp": now - 20, "nbf": now - 100, "iat": now - 100, "jti": "0",
        "access": []}));
    let r = http::request(
        reg.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &bearer(&t))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "token expired 20 s ago");

    // Wrong audience and long-expired tokens are refused (Distribution allows 60 s of skew).
    for claims in [
        serde_json::json!({"iss": ts.issuer(), "sub": "alice", "aud": "elsewhere",
            "exp": now + 60, "nbf": now, "iat": now, "jti": "1", "access": []}),
        serde_json::json!({"iss": ts.issuer(), "sub": "alice", "aud": ts.service(),
            "exp": now - 600, "nbf": now - 900, "iat": now - 900, "jti": "2", "access": []}),
    ] {
        let t = ts.mint_claims(&claims);
        let r = http::request(
            reg.addr(),
            "GET",
            "/v2/",
            &[("Authorization", &bearer(&t))],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 401, "{claims}");
    }
}

#[test]
fn token_registry_with_skopeo_public_private_and_counts() {
    require_peers!();
    let reg = Registry::token();
    let ts = reg.token_server().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let built = images::sample_multi_layer()
        .write_layout(dir.path(), "t")
        .unwrap();
    let with_creds = SkopeoOpts::for_registry(&reg);
    let anon = SkopeoOpts::anonymous(&reg);
    let public = reg.image_ref("public/app:v1");
    let private = reg.image_ref("private/x:v1");

    // Anonymous push is refused even to a public repository.
    assert!(skopeo::push_with_skopeo(dir.path(), "t", &public, &anon).is_err());
    for dest in [&public, &private] {
        skopeo::push_with_skopeo(dir.path(), "t", dest, &with_creds).unwrap();
    }
    assert!(ts.stats().basic > 0, "{:?}", ts.stats());

    // Anonymous pull of a public repository works, of private/ it does not.
    ts.reset_stats();
    let raw = skopeo::skopeo_inspect_raw(&public, &anon).unwrap();
    assert_eq!(sha256_digest(&raw), built.manifest.digest);
    let st = ts.stats();
    assert!(st.anonymous >= 1 && st.basic == 0, "{st:?}");
    let err = skopeo::skopeo_inspect_raw(&private, &anon).unwrap_err();
    assert!(
        err.stderr.contains("unauthorized") || err.stderr.contains("denied"),
        "{err}"
    );
    let raw = skopeo::skopeo_inspect_raw(&private, &with_creds).unwrap();
    assert_eq!(raw, built.manifest_bytes);
    let info = skopeo::skopeo_inspect(&private, &with_creds).unwrap();
    assert_eq!(info["Digest"], built.manifest.digest.as_str());
    // Wrong password: the token server says 401, skopeo fails.
    let bad = SkopeoOpts::for_registry(&reg).creds("alice", "nope");
    assert!(skopeo::skopeo_inspect_raw(&private, &bad).is_err());
}

fn sha256_digest(b: &[u8]) -> String {
    images::sha256_digest(b)
}

#[test]
fn tls_registry_with_token_auth() {
    require_peers!();
    let reg = Registry::builder()
        .tls(true)
        .token_auth(
            TokenServerConfig::default()
                .user("ci", "s3cret")
                .lifetime(Duration::from_secs(5)),
        )
        .start();
    assert!(reg.url().starts_with("https://"));
    let ts = reg.token_server().unwrap();
    let opts = SkopeoOpts::for_registry(&reg).creds("ci", "s3cret");
    let built = skopeo::push_spec(&images::sample_zstd(), &reg, "private/z:1");
    // push_spec uses the registry's first user (alice), which this config also has.
    let built = built.unwrap();
    let raw = skopeo::skopeo_inspect_raw(&reg.image_ref("private/z:1"), &opts).unwrap();
    assert_eq!(raw, built.manifest_bytes);
    assert!(
        ts.requests()
            .iter()
            .any(|r| r.grant == Grant::Basic("ci".into()))
    );
    assert_eq!(
        reg.token_server().unwrap().config().lifetime,
        Duration::from_secs(5)
    );
}
