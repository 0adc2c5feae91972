//! The fake registry on its own (raw HTTP), and skopeo pulling from it.

use hoist_testkit::fake::{FakeRegistry, FakeRequest, FakeResponse, Framing};
use hoist_testkit::http;
use hoist_testkit::images::{self, OciLayout, sha256_digest};
use hoist_testkit::require_peers;
use hoist_testkit::skopeo::{self, SkopeoOpts};

fn get(fake: &FakeRegistry, path: &str) -> http::Response {
    http::request(fake.addr(), "GET", path, &[], b"").unwrap()
}

fn head(fake: &FakeRegistry, path: &str) -> http::Response {
    http::request(fake.addr(), "HEAD", path, &[], b"").unwrap()
}

#[test]
fn ping_answers_200() {
    let fake = FakeRegistry::start();
    let r = get(&fake, "/v2/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(r.body, b"{}");
    assert_eq!(fake.url(), format!("http://{}", fake.host_port()));
    assert!(fake.host_port().starts_with("127.0.0.1:"));
    assert_eq!(
        fake.image_ref("a/b:c"),
        format!("127.0.0.1:{}/a/b:c", fake.addr().port())
    );
}

#[test]
fn manifests_by_tag_and_by_digest_get_and_head() {
    let fake = FakeRegistry::start();
    let bytes = br#"{"schemaVersion":2,"whatever":true}"#.to_vec();
    let digest = fake.put_manifest("ns/app", "v1", images::OCI_MANIFEST, bytes.clone());
    assert_eq!(digest, sha256_digest(&bytes));
    for path in [
        "/v2/ns/app/manifests/v1".to_string(),
        format!("/v2/ns/app/manifests/{digest}"),
    ] {
        let r = get(&fake, &path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, bytes);
        assert_eq!(r.header("content-type"), Some(images::OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(
            r.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        let h = head(&fake, &path);
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty(), "HEAD has no body");
        assert_eq!(
            h.header("content-length"),
            Some(bytes.len().to_string().as_str()),
            "HEAD announces the GET's length"
        );
        assert_eq!(h.header("docker-content-digest"), Some(digest.as_str()));
    }
    // Another repository does not see it.
    let r = get(&fake, "/v2/ns/other/manifests/v1");
    assert_eq!(r.status, 404);
    assert_eq!(r.json().unwrap()["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[test]
fn content_digest_can_be_turned_off() {
    let fake = FakeRegistry::start();
    fake.put_manifest("r", "t", images::DOCKER_MANIFEST, b"{}".to_vec());
    assert!(
        get(&fake, "/v2/r/manifests/t")
            .header("docker-content-digest")
            .is_some()
    );
    fake.send_content_digest(false);
    let r = get(&fake, "/v2/r/manifests/t");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), None);
    assert_eq!(r.header("content-type"), Some(images::DOCKER_MANIFEST));
}

#[test]
fn blobs_are_served_raw_and_unverified() {
    let fake = FakeRegistry::start();
    let name = sha256_digest(b"the real content");
    fake.put_blob("ns/app", &name, b"something else entirely".to_vec());
    let path = format!("/v2/ns/app/blobs/{name}");
    let r = get(&fake, &path);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"something else entirely");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let h = head(&fake, &path);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("23"));
    assert!(h.body.is_empty());
    // Any string is a name, even one no registry would accept.
    fake.put_blob("ns/app", "sha256:../../etc", b"x".to_vec());
    assert_eq!(get(&fake, "/v2/ns/app/blobs/sha256:../../etc").body, b"x");
    let missing = get(&fake, &format!("/v2/ns/app/blobs/{}", sha256_digest(b"")));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json().unwrap()["errors"][0]["code"], "BLOB_UNKNOWN");
}

#[test]
fn unknown_paths_and_methods() {
    let fake = FakeRegistry::start();
    assert_eq!(get(&fake, "/").status, 404);
    let r = get(&fake, "/v2/ns/app/tags/list");
    assert_eq!(r.status, 404);
    assert_eq!(r.json().unwrap()["errors"][0]["code"], "NAME_UNKNOWN");
    let r = http::request(fake.addr(), "PUT", "/v2/ns/app/manifests/v1", &[], b"{}").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(get(&fake, "/v2/ns/app/manifests/v1").status, 404);
}

#[test]
fn routes_override_status_headers_and_body() {
    let fake = FakeRegistry::start();
    fake.put_manifest("r", "t", images::OCI_MANIFEST, b"{}".to_vec());
    let path = "/v2/r/manifests/t";
    fake.set_route(
        path,
        FakeResponse {
            status: 429,
            headers: vec![("Retry-After".into(), "7".into())],
            body: b"slow down".to_vec(),
            ..FakeResponse::default()
        },
    );
    let r = get(&fake, path);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.body, b"slow down");
    // Every method, and also paths with nothing stored.
    assert_eq!(head(&fake, path).status, 429);
    fake.set_route("/v2/", FakeResponse::error(401, "UNAUTHORIZED", "no"));
    let r = get(&fake, "/v2/");
    assert_eq!(r.status, 401);
    assert_eq!(r.json().unwrap()["errors"][0]["message"], "no");
    // Cleared, the stored content is back.
    fake.clear_route(path);
    assert_eq!(get(&fake, path).status, 200);
    // An invalid header is reported, not a panic.
    fake.set_route("/x", FakeResponse::ok("").header("bad name", "v"));
    let r = get(&fake, "/x");
    assert_eq!(r.status, 500);
    assert!(String::from_utf8_lossy(&r.body).contains("invalid header"));
}

#[test]
fn chunked_framing_has_no_content_length() {
    let fake = FakeRegistry::start();
    let body = images::seeded_bytes(300 * 1024, 7);
    fake.set_route("/big", FakeResponse::ok(body.clone()).chunked());
    let r = get(&fake, "/big");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, body, "http::request de-chunks");
}

#[test]
fn declared_length_promises_more_than_is_sent() {
    let fake = FakeRegistry::start();
    let body = images::seeded_bytes(100 * 1024, 8);
    fake.set_route(
        "/short",
        FakeResponse::ok(body.clone()).framing(Framing::DeclaredLength(1 << 20)),
    );
    // The raw client reads to the end of the connection: the server sent what it had and
    // closed instead of hanging on the missing bytes.
    let r = get(&fake, "/short");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1048576"));
    assert_eq!(r.body, body);
    // A truthful declared length is an ordinary response.
    fake.set_route("/exact", FakeResponse::ok("abc").declared_length(3));
    let r = get(&fake, "/exact");
    assert_eq!(
        (r.header("content-length"), r.body.as_slice()),
        (Some("3"), &b"abc"[..])
    );
}

#[test]
fn requests_are_counted_per_path() {
    let fake = FakeRegistry::start();
    fake.put_blob("r", "sha256:aa", b"x".to_vec());
    get(&fake, "/v2/");
    get(&fake, "/v2/r/blobs/sha256:aa");
    head(&fake, "/v2/r/blobs/sha256:aa");
    get(&fake, "/v2/r/blobs/sha256:bb?x=1");
    assert_eq!(fake.hits("/v2/"), 1);
    assert_eq!(fake.hits("/v2/r/blobs/sha256:aa"), 2);
    assert_eq!(
        fake.hits("/v2/r/blobs/sha256:bb"),
        1,
        "the query is not part of the path"
    );
    assert_eq!(fake.hits("/nothing"), 0);
    let log = fake.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(
        log[3],
        FakeRequest {
            method: "GET".into(),
            path: "/v2/r/blobs/sha256:bb".into(),
            query: Some("x=1".into()),
            status: 404,
            range: None,
            authorization: None,
            storage: false,
        }
    );
    assert_eq!(log[2].method, "HEAD");
    fake.reset_hits();
    assert_eq!(fake.hits("/v2/"), 0);
    assert!(fake.requests().is_empty());
}

#[test]
fn push_image_and_index_serve_every_blob() {
    let fake = FakeRegistry::start();
    let img = images::sample_multi_layer().build().unwrap();
    fake.push_image("ns/multi", "v1", &img);
    let m = get(&fake, "/v2/ns/multi/manifests/v1");
    assert_eq!(m.body, img.manifest_bytes);
    assert_eq!(
        m.header("docker-content-digest"),
        Some(img.manifest.digest.as_str())
    );
    assert_eq!(m.header("content-type"), Some(images::OCI_MANIFEST));
    for d in img.layer_digests().iter().chain([&img.config.digest]) {
        let b = get(&fake, &format!("/v2/ns/multi/blobs/{d}"));
        assert_eq!(b.status, 200, "{d}");
        assert_eq!(sha256_digest(&b.body), *d);
    }

    let idx = images::sample_index_docker().build().unwrap();
    fake.push_index("ns/list", "all", &idx);
    let r = get(&fake, "/v2/ns/list/manifests/all");
    assert_eq!(r.body, idx.index_bytes);
    assert_eq!(r.header("content-type"), Some(images::DOCKER_MANIFEST_LIST));
    for i in &idx.images {
        let r = get(
            &fake,
            &format!("/v2/ns/list/manifests/{}", i.manifest.digest),
        );
        assert_eq!(r.body, i.manifest_bytes);
        assert_eq!(r.header("content-type"), Some(images::DOCKER_MANIFEST));
        for l in i.layer_digests() {
            assert_eq!(get(&fake, &format!("/v2/ns/list/blobs/{l}")).status, 200);
        }
    }
}

/// skopeo, the reference client, pulls from the fake as from a registry, and verifies every
/// digest on the way.
#[test]
fn skopeo_pulls_from_the_fake() {
    require_peers!(Peer::Skopeo);
    let fake = FakeRegistry::start();
    let img = images::sample_multi_layer().build().unwrap();
    fake.push_image("ns/multi", "v1", &img);
    let opts = SkopeoOpts::default().tls_verify(false).no_creds();
    let raw = skopeo::skopeo_inspect_raw(&fake.image_ref("ns/multi:v1"), &opts).unwrap();
    assert_eq!(raw, img.manifest_bytes);
    let dir = tempfile::tempdir().unwrap();
    skopeo::pull_with_skopeo(
        &fake.image_ref("ns/multi:v1"),
        dir.path(),
        "v1",
        &opts,
        false,
    )
    .unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    for l in img.layer_digests() {
        assert_eq!(sha256_digest(&layout.read_blob(&l).unwrap()), l);
    }
    assert!(fake.hits(&format!("/v2/ns/multi/blobs/{}", img.config.digest)) >= 1);

    // And skopeo refuses a blob that does not hash to its digest: the point of the fake.
    let bad = &img.layers[1].blob.digest;
    fake.put_blob(
        "ns/multi",
        bad,
        images::seeded_bytes(img.layers[1].blob.size as usize, 9),
    );
    let dir2 = tempfile::tempdir().unwrap();
    let err = skopeo::pull_with_skopeo(
        &fake.image_ref("ns/multi:v1"),
        dir2.path(),
        "v1",
        &opts,
        false,
    )
    .unwrap_err();
    assert!(
        format!("{err:?}").contains(bad.trim_start_matches("sha256:")),
        "{err:?}"
    );
}
