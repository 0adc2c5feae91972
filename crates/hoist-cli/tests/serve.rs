//! `hoist serve` end to end against real clients on loopback: skopeo copies from it
//! byte for byte, curl drives the HTTP semantics (Range matrix, HEAD, ETag, Accept
//! negotiation, paging, errors), a client that disconnects mid-blob leaves server and
//! store healthy. The upstream Distribution registry is killed before serving, so every
//! byte comes from the store.
//!
//! The distribution-spec conformance suite cannot be built here (Debian's Go is too old);
//! these tests cover its pull and content-discovery workflows instead.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hoist_testkit::images::{self, sha256_digest};
use hoist_testkit::registry::Registry;
use hoist_testkit::skopeo::{self, SkopeoOpts};
use hoist_testkit::{Need, Peer, require};
use serde_json::Value;
use tempfile::TempDir;

/// A test's sandbox and store.
struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn store(&self) -> PathBuf {
        support::store(self.dir.path())
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = support::hoist(self.dir.path()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "hoist {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        let (alg, hex) = digest.split_once(':').unwrap();
        std::fs::read(self.store().join("blobs").join(alg).join(hex)).unwrap()
    }

    /// Every file under the store with its size and mtime: what "touch nothing" compares.
    fn store_listing(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let mut stack = vec![self.store()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else if !e.path().starts_with(self.store().join("hoist/leases"))
                    && !e.path().starts_with(self.store().join("hoist/locks"))
                {
                    out.push((e.path(), m.len(), m.modified().unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    /// Start `hoist serve` on a free port.
    fn serve(&self, extra: &[&str]) -> Serve {
        let log = self.dir.path().join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = support::hoist_std(self.dir.path());
        cmd.arg("serve");
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .or_else(|| line.trim().strip_prefix("listening on https://"))
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hoist serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        Serve { child, addr, log }
    }
}

/// A running `hoist serve`, killed (by its own pid) when dropped.
struct Serve {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// One curl answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// `curl` with `args` (method, headers) on `url`: status, headers and body.
fn curl(dir: &Path, url: &str, args: &[&str]) -> Answer {
    let body = dir.join("curl-body");
    let heads = dir.join("curl-headers");
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "60", "--path-as-is", "-g"])
        .arg("-o")
        .arg(&body)
        .arg("-D")
        .arg(&heads)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let headers = std::fs::read_to_string(&heads)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = std::fs::read(&body).unwrap_or_default();
    if args.contains(&"-I") {
        // curl writes a HEAD answer's headers as its output: nothing else may follow them.
        assert_eq!(
            body,
            std::fs::read(&heads).unwrap(),
            "HEAD {url} sent a body"
        );
        body.clear();
    }
    Answer {
        status,
        headers,
        body,
    }
}

/// Push `spec` to a fresh registry as `ns/app:1.0`, pull it into the env's store, then
/// kill the registry: whatever `hoist serve` answers comes from the store.
fn stored_image(env: &Env) -> (images::BuiltImage, String) {
    let mut reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/app:1.0").unwrap();
    env.ok(&["--quiet", "pull", &reg.image_ref("ns/app:1.0")]);
    let host = reg.host_port();
    reg.kill();
    (built, host)
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn skopeo_copies_from_serve_byte_identical_to_the_store() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("curl")
    );
    let env = Env::new();
    let (built, _) = stored_image(&env);
    let mut srv = env.serve(&[]);
    let src = format!("docker://{}/ns/app:1.0", srv.addr);
    let opts = SkopeoOpts::default().tls_verify(false);

    // dir: keeps the manifest bytes and names every blob by digest.
    let out = env.dir.path().join("copy");
    skopeo::skopeo_copy(
        &src,
        &format!("dir:{}", out.display()),
        Some(&opts),
        None,
        false,
    )
    .unwrap();
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&manifest), built.manifest.digest);
    assert_eq!(manifest, env.blob(&built.manifest.digest));
    for d in built.layer_digests().iter().chain([&built.config.digest]) {
        let copied = std::fs::read(out.join(d.strip_prefix("sha256:").unwrap())).unwrap();
        assert_eq!(sha256_digest(&copied), *d);
        assert_eq!(copied, env.blob(d), "{d}");
    }
    // skopeo inspect --raw is the stored manifest, and its digest is the pulled one.
    let raw = skopeo::skopeo_inspect_raw(&src, &opts).unwrap();
    assert_eq!(raw, manifest);
    let by_digest = format!("docker://{}/ns/app@{}", srv.addr, built.manifest.digest);
    assert_eq!(
        skopeo::skopeo_inspect_raw(&by_digest, &opts).unwrap(),
        manifest
    );
    assert_eq!(
        skopeo::skopeo_list_tags(&format!("docker://{}/ns/app", srv.addr), &opts).unwrap(),
        vec!["1.0".to_owned()]
    );
    // One log line per request: method, path, status, bytes, time.
    let log = srv.log();
    let line = log
        .lines()
        .find(|l| l.contains(&built.layer_digests()[0]) && l.starts_with("GET "))
        .unwrap_or_else(|| panic!("no log line for the layer:\n{log}"));
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 5, "{line}");
    assert_eq!(f[2], "200", "{line}");
    assert_eq!(f[3], built.layers[0].blob.size.to_string(), "{line}");
    assert!(f[4].ends_with("ms"), "{line}");
    assert!(srv.is_running());
    support::assert_fsck_clean(env.dir.path(), &env.store());
}

#[test]
fn http_semantics_range_matrix_headers_paging_and_errors() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("curl")
    );
    let env = Env::new();
    let (built, host) = stored_image(&env);
    // More tags for paging.
    for t in ["a", "b", "c", "d"] {
        env.ok(&[
            "tag",
            &format!("{host}/ns/app:1.0"),
            &format!("{host}/ns/app:{t}"),
        ]);
    }
    env.ok(&[
        "tag",
        &format!("{host}/ns/app:1.0"),
        &format!("{host}/other/x:1"),
    ]);
    let srv = env.serve(&[]);
    let d = env.dir.path();
    let before = env.store_listing();

    // /v2/
    let a = curl(d, &srv.url("/v2/"), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // Manifest by tag, GET and HEAD.
    let m = curl(d, &srv.url("/v2/ns/app/manifests/1.0"), &[]);
    assert_eq!(m.status, 200);
    assert_eq!(m.body, built.manifest_bytes);
    assert_eq!(
        m.header("content-type"),
        Some(built.manifest.media_type.as_str())
    );
    assert_eq!(
        m.header("docker-content-digest"),
        Some(built.manifest.digest.as_str())
    );
    assert_eq!(
        m.header("etag"),
        Some(format!("\"{}\"", built.manifest.digest).as_str())
    );
    let h = curl(d, &srv.url("/v2/ns/app/manifests/1.0"), &["-I"]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(
        h.header("content-length"),
        Some(built.manifest_bytes.len().to_string().as_str())
    );
    assert_eq!(
        h.header("docker-content-digest"),
        Some(built.manifest.digest.as_str())
    );
    let etag = format!("If-None-Match: \"{}\"", built.manifest.digest);
    assert_eq!(
        curl(d, &srv.url("/v2/ns/app/manifests/1.0"), &["-H", &etag]).status,
        304
    );

    // Blob: full, HEAD, and the Range matrix.
    let layer = built.layers.iter().max_by_key(|l| l.blob.size).unwrap();
    let bytes = env.blob(&layer.blob.digest);
    let size = bytes.len();
    assert!(size > 2000, "the layer is big enough for the matrix");
    let url = srv.url(&format!("/v2/ns/app/blobs/{}", layer.blob.digest));
    let full = curl(d, &url, &[]);
    assert_eq!(full.status, 200);
    assert_eq!(full.body, bytes);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        full.header("docker-content-digest"),
        Some(layer.blob.digest.as_str())
    );
    let head = curl(d, &url, &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    // Single ranges: 206 with exactly those bytes.
    let cases: Vec<(&str, usize, usize)> = vec![
        ("bytes=500-1499", 500, 1499),
        ("bytes=500-", 500, size - 1),
        ("bytes=-500", size - 500, size - 1),
        ("bytes=0-0", 0, 0),
        ("bytes=500-99999999999", 500, size - 1),
    ];
    for (range, s, e) in cases {
        let a = curl(d, &url, &["-H", &format!("Range: {range}")]);
        assert_eq!(a.status, 206, "{range}");
        assert_eq!(a.body, &bytes[s..=e], "{range}");
        assert_eq!(
            a.header("content-range"),
            Some(format!("bytes {s}-{e}/{size}").as_str()),
            "{range}"
        );
    }
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 10, size + 20),
        "bytes=abc".to_owned(),
        "bytes=5-1".to_owned(),
        "bytes=-0".to_owned(),
    ] {
        let a = curl(d, &url, &["-H", &format!("Range: {range}")]);
        assert_eq!(a.status, 416, "{range}");
        assert_eq!(
            a.header("content-range"),
            Some(format!("bytes */{size}").as_str()),
            "{range}"
        );
        assert!(a.body.is_empty(), "{range}");
    }

    // Tags, sorted, paged with Link.
    let t = curl(d, &srv.url("/v2/ns/app/tags/list"), &[]).json();
    assert_eq!(t["name"], "ns/app");
    assert_eq!(t["tags"], serde_json::json!(["1.0", "a", "b", "c", "d"]));
    let mut seen = Vec::new();
    let mut next = Some("/v2/ns/app/tags/list?n=2".to_owned());
    let mut pages = 0;
    while let Some(p) = next.take() {
        pages += 1;
        assert!(pages <= 5, "paging does not end");
        let a = curl(d, &srv.url(&p), &[]);
        assert_eq!(a.status, 200, "{p}");
        for t in a.json()["tags"].as_array().unwrap() {
            seen.push(t.as_str().unwrap().to_owned());
        }
        next = a.header("link").map(|l| {
            l.split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .unwrap()
                .0
                .to_owned()
        });
    }
    assert_eq!(seen, ["1.0", "a", "b", "c", "d"]);
    assert_eq!(pages, 3);
    let a = curl(d, &srv.url("/v2/ns/app/tags/list?n=2&last=b"), &[]).json();
    assert_eq!(a["tags"], serde_json::json!(["c", "d"]));
    let huge = curl(
        d,
        &srv.url("/v2/ns/app/tags/list?n=99999999999999999999999999999999"),
        &[],
    );
    assert_eq!(huge.status, 200);
    assert_eq!(huge.json()["tags"].as_array().unwrap().len(), 5);

    // Catalog.
    let c = curl(d, &srv.url("/v2/_catalog"), &[]).json();
    assert_eq!(c["repositories"], serde_json::json!(["ns/app", "other/x"]));
    let c = curl(d, &srv.url("/v2/_catalog?n=1"), &[]);
    assert_eq!(c.json()["repositories"], serde_json::json!(["ns/app"]));
    assert!(c.header("link").unwrap().contains("last=ns%2Fapp"), "{c:?}");

    // Referrers: an empty index.
    let r = curl(
        d,
        &srv.url(&format!("/v2/ns/app/referrers/{}", built.manifest.digest)),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.json()["manifests"], serde_json::json!([]));

    // Errors: the code and status the spec gives, and the store untouched.
    let zero = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(String, &[&str], u16, &str)> = vec![
        (
            "/v2/ns/app/manifests/nope".into(),
            &[],
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/ns/app/manifests/{zero}"),
            &[],
            404,
            "MANIFEST_UNKNOWN",
        ),
        (format!("/v2/ns/app/blobs/{zero}"), &[], 404, "BLOB_UNKNOWN"),
        ("/v2/no/such/manifests/1.0".into(), &[], 404, "NAME_UNKNOWN"),
        ("/v2/no/such/tags/list".into(), &[], 404, "NAME_UNKNOWN"),
        (
            "/v2/../../etc/passwd/manifests/1.0".into(),
            &[],
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/ns/%2e%2e/app/manifests/1.0".into(),
            &[],
            400,
            "NAME_INVALID",
        ),
        ("/v2/ns/app/manifests/..".into(), &[], 400, "TAG_INVALID"),
        (
            "/v2/ns/app/blobs/sha256:../../../../etc/passwd".into(),
            &[],
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/ns/app/blobs/sha384:{}", "0".repeat(96)),
            &[],
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/ns/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".into(),
            &[],
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/ns/app/tags/list?n=-1".into(),
            &[],
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "/v2/ns/app/tags/list?n=abc".into(),
            &[],
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "/v2/ns/app/blobs/uploads/".into(),
            &["-X", "POST"],
            405,
            "UNSUPPORTED",
        ),
        (
            "/v2/ns/app/manifests/1.0".into(),
            &["-X", "DELETE"],
            405,
            "UNSUPPORTED",
        ),
        (
            "/v2/ns/app/manifests/1.0".into(),
            &["-X", "PUT", "--data-binary", "{}"],
            405,
            "UNSUPPORTED",
        ),
    ];
    for (path, args, status, code) in cases {
        let a = curl(d, &srv.url(&path), args);
        assert_eq!(
            a.status,
            status,
            "{path}: {:?}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.error_code(), code, "{path}");
        assert!(
            a.header("content-type")
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
    }
    // A blob of the store is served only under a repository whose images use it.
    assert_eq!(
        curl(
            d,
            &srv.url(&format!("/v2/other/x/blobs/{}", layer.blob.digest)),
            &[]
        )
        .status,
        200
    );
    assert_eq!(env.store_listing(), before, "requests changed the store");
    support::assert_fsck_clean(env.dir.path(), &env.store());
}

#[test]
fn accept_negotiates_between_an_index_and_its_platform_manifest() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("curl")
    );
    let env = Env::new();
    let mut reg = Registry::plain();
    let built = skopeo::push_index_spec(&images::sample_index(), &reg, "ns/multi:1").unwrap();
    env.ok(&[
        "--quiet",
        "pull",
        "--platform",
        "linux/amd64",
        &reg.image_ref("ns/multi:1"),
    ]);
    reg.kill();
    let amd64 = &built.images[0];
    let arm64 = &built.images[1];
    let srv = env.serve(&[]);
    let d = env.dir.path();
    let url = srv.url("/v2/ns/multi/manifests/1");

    // A client that takes indexes gets the index, as pulled.
    let a = curl(
        d,
        &url,
        &["-H", &format!("Accept: {OCI_MANIFEST}, {OCI_INDEX}")],
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.body, built.index_bytes);
    assert_eq!(a.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        a.header("docker-content-digest"),
        Some(built.index.digest.as_str())
    );
    // No Accept: as stored.
    assert_eq!(curl(d, &url, &[]).body, built.index_bytes);
    // Only image manifests: the platform manifest stored for the tag.
    let a = curl(d, &url, &["-H", &format!("Accept: {OCI_MANIFEST}")]);
    assert_eq!(a.status, 200);
    assert_eq!(a.body, amd64.manifest_bytes);
    assert_eq!(
        a.header("docker-content-digest"),
        Some(amd64.manifest.digest.as_str())
    );
    // By digest: the index and the stored platform; the other platform is not stored.
    let a = curl(
        d,
        &srv.url(&format!("/v2/ns/multi/manifests/{}", built.index.digest)),
        &[],
    );
    assert_eq!(a.body, built.index_bytes);
    let a = curl(
        d,
        &srv.url(&format!("/v2/ns/multi/manifests/{}", amd64.manifest.digest)),
        &[],
    );
    assert_eq!(a.body, amd64.manifest_bytes);
    let a = curl(
        d,
        &srv.url(&format!("/v2/ns/multi/manifests/{}", arm64.manifest.digest)),
        &[],
    );
    assert_eq!(a.status, 404);
    assert_eq!(a.error_code(), "MANIFEST_UNKNOWN");

    // skopeo resolves the index to its (stored) amd64 image and copies it byte for byte.
    let out = d.join("copy");
    skopeo::skopeo_copy(
        &format!("docker://{}/ns/multi:1", srv.addr),
        &format!("dir:{}", out.display()),
        Some(&SkopeoOpts::default().tls_verify(false)),
        None,
        false,
    )
    .unwrap();
    let m = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(m, amd64.manifest_bytes);
}

#[test]
fn a_client_that_disconnects_mid_blob_leaves_server_and_store_healthy() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("curl")
    );
    let env = Env::new();
    let (built, _) = stored_image(&env);
    let mut srv = env.serve(&["--max-requests", "4"]);
    let layer = built.layers.iter().max_by_key(|l| l.blob.size).unwrap();
    let path = format!("/v2/ns/app/blobs/{}", layer.blob.digest);
    // Many more abandoned downloads than request permits: each must give its permit back.
    for _ in 0..12 {
        let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            srv.addr
        )
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        drop(s);
    }
    // The server still answers, completely, within a bounded time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let full = curl(env.dir.path(), &srv.url(&path), &[]);
    assert!(Instant::now() < deadline);
    assert_eq!(full.status, 200);
    assert_eq!(sha256_digest(&full.body), layer.blob.digest);
    assert!(srv.is_running());
    support::assert_fsck_clean(env.dir.path(), &env.store());
}

#[test]
fn print_containerd_config_names_the_server() {
    let env = Env::new();
    let out = env.ok(&[
        "serve",
        "--listen",
        "127.0.0.1:5999",
        "--registry",
        "docker.io",
        "--print-containerd-config",
    ]);
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains("certs.d/docker.io/hosts.toml"), "{s}");
    assert!(
        s.contains("server = \"https://registry-1.docker.io\""),
        "{s}"
    );
    assert!(s.contains("[host.\"http://127.0.0.1:5999\"]"), "{s}");
    assert!(s.contains("capabilities = [\"pull\", \"resolve\"]"), "{s}");
    assert!(
        s.contains("[[registry.mirror]]\nlocation = \"127.0.0.1:5999\""),
        "{s}"
    );
}

/// `skopeo copy` from the server into a `dir:` layout; the manifest bytes copied.
fn skopeo_from(srv: &Serve, env: &Env, reference: &str, out: &str) -> Vec<u8> {
    let out = env.dir.path().join(out);
    skopeo::skopeo_copy(
        &format!("docker://{}/{reference}", srv.addr),
        &format!("dir:{}", out.display()),
        Some(&SkopeoOpts::default().tls_verify(false)),
        None,
        false,
    )
    .unwrap();
    std::fs::read(out.join("manifest.json")).unwrap()
}

#[test]
fn pull_through_fetches_verifies_stores_then_serves_the_stored_tag_when_upstream_is_gone() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("curl")
    );
    let env = Env::new();
    let mut reg = Registry::plain();
    let built = skopeo::push_spec(&images::sample_multi_layer(), &reg, "ns/app:1.0").unwrap();
    let host = reg.host_port();
    // A read-only server does not fetch: the store is empty.
    {
        let srv = env.serve(&["--registry", &host]);
        let a = curl(env.dir.path(), &srv.url("/v2/ns/app/manifests/1.0"), &[]);
        assert_eq!(a.status, 404);
        assert_eq!(a.error_code(), "NAME_UNKNOWN");
    }
    assert!(
        !env.store()
            .join(format!("blobs/{}", built.manifest.digest.replace(':', "/")))
            .exists()
    );

    let srv = env.serve(&["--pull-through", "--tag-ttl", "0s", "--registry", &host]);
    let m = skopeo_from(&srv, &env, "ns/app:1.0", "first");
    assert_eq!(m, built.manifest_bytes);
    // Pulled into the store, verified, under its upstream name.
    let images: Value = serde_json::from_slice(&env.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(images[0]["Repository"], format!("{host}/ns/app"));
    assert_eq!(images[0]["Id"], built.config.digest);
    for d in built.layer_digests() {
        assert_eq!(sha256_digest(&env.blob(&d)), d);
    }
    support::assert_fsck_clean(env.dir.path(), &env.store());

    // Upstream gone: the tag (TTL 0: checked every time) falls back to the stored one.
    reg.kill();
    let m = skopeo_from(&srv, &env, "ns/app:1.0", "second");
    assert_eq!(m, built.manifest_bytes);
    // What the store never had is an error, not a hang.
    let a = curl(env.dir.path(), &srv.url("/v2/ns/app/manifests/2.0"), &[]);
    assert!(a.status >= 400, "{a:?}");
}

#[test]
fn pull_through_with_ns_from_an_upstream_that_resets_connections_stores_verified_content_only() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("curl")
    );
    use hoist_testkit::fake::{FakeRegistry, Fault};
    let env = Env::new();
    let fake = FakeRegistry::start();
    let built = images::sample_multi_layer().build().unwrap();
    fake.push_image("ns/app", "1.0", &built);
    // Every layer breaks off mid-body once, one is served with a wrong byte once: the pull
    // engine resumes and refetches; nothing unverified may reach the store.
    for l in &built.layers {
        fake.inject(Fault::ResetAfter(l.blob.size / 2).on_blob(&l.blob.digest));
    }
    fake.inject(Fault::WrongBytes.on_blob(&built.layer_digests()[0]).skip(1));
    let srv = env.serve(&["--pull-through", "--retry-delay", "10ms"]);
    let ns = format!("?ns={}", fake.host_port());
    let a = curl(
        env.dir.path(),
        &srv.url(&format!("/v2/ns/app/manifests/1.0{ns}")),
        &[],
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.body, built.manifest_bytes);
    for l in &built.layers {
        let b = curl(
            env.dir.path(),
            &srv.url(&format!("/v2/ns/app/blobs/{}{ns}", l.blob.digest)),
            &[],
        );
        assert_eq!(b.status, 200);
        assert_eq!(sha256_digest(&b.body), l.blob.digest);
    }
    // The faults were hit: every layer took more than one request upstream.
    for d in built.layer_digests() {
        let hits = fake.hits(&format!("/v2/ns/app/blobs/{d}"));
        assert!(hits >= 2, "{d}: {hits} request(s) upstream");
    }
    // Every blob of the store hashes to its name.
    for alg in ["sha256"] {
        for e in std::fs::read_dir(env.store().join("blobs").join(alg)).unwrap() {
            let e = e.unwrap();
            let name = format!("{alg}:{}", e.file_name().to_string_lossy());
            assert_eq!(sha256_digest(&std::fs::read(e.path()).unwrap()), name);
        }
    }
    support::assert_fsck_clean(env.dir.path(), &env.store());
}

/// `--tls-cert/--tls-key` and `--htpasswd`: skopeo pulls over verified TLS with
/// credentials; no or wrong credentials get 401 with a Basic challenge; plain HTTP on the
/// TLS port gets no HTTP answer at all; a bad key or htpasswd file stops the server
/// before it listens.
#[test]
fn tls_and_htpasswd_skopeo_with_cert_dir_and_creds_curl_401_no_plain_fallback() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Peer(Peer::Openssl),
        Need::Peer(Peer::Htpasswd),
        Need::Tool("curl")
    );
    let env = Env::new();
    let (built, _) = stored_image(&env);
    let tls_dir = env.dir.path().join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let tls = hoist_testkit::certs::TlsMaterial::generate(&tls_dir).unwrap();
    let htpasswd = env.dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!(
            "# users\n{}\n{}\n",
            hoist_testkit::certs::htpasswd_line("alice", "s3cret pass").unwrap(),
            hoist_testkit::certs::htpasswd_line("bob", "other").unwrap()
        ),
    )
    .unwrap();
    let (cert, key) = (
        tls.server_cert.to_str().unwrap(),
        tls.server_key.to_str().unwrap(),
    );
    let srv = env.serve(&[
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--htpasswd",
        htpasswd.to_str().unwrap(),
    ]);
    let ca = tls.ca_pem.to_str().unwrap();
    let https = |path: &str| format!("https://{}{path}", srv.addr);

    let anon = curl(env.dir.path(), &https("/v2/"), &["--cacert", ca]);
    assert_eq!(anon.status, 401);
    assert_eq!(anon.error_code(), "UNAUTHORIZED");
    let challenge = anon.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic realm=\""), "{challenge:?}");
    for creds in [
        "alice:wrong",
        "alice:",
        "carol:s3cret pass",
        "bob:s3cret pass",
    ] {
        let a = curl(
            env.dir.path(),
            &https("/v2/ns/app/manifests/1.0"),
            &["--cacert", ca, "-u", creds],
        );
        assert_eq!(a.status, 401, "{creds}");
        assert!(a.header("www-authenticate").is_some(), "{creds}");
        assert!(
            !String::from_utf8_lossy(&a.body).contains("layers"),
            "{creds}"
        );
    }
    let ok = curl(
        env.dir.path(),
        &https("/v2/ns/app/manifests/1.0"),
        &["--cacert", ca, "-u", "alice:s3cret pass"],
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, env.blob(&built.manifest.digest));

    // Plain HTTP to the TLS port: no HTTP answer (curl fails, or sees no status).
    let plain = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{}/v2/", srv.addr))
        .output()
        .unwrap();
    assert!(
        !plain.status.success() || String::from_utf8_lossy(&plain.stdout).trim() == "000",
        "plain HTTP answered: {}",
        String::from_utf8_lossy(&plain.stdout)
    );

    // skopeo with --src-cert-dir (verifying) and --src-creds: byte-identical copy.
    let mut opts = SkopeoOpts::default().creds("alice", "s3cret pass");
    opts.cert_dir = Some(tls.cert_dir.clone());
    let out = env.dir.path().join("copy");
    skopeo::skopeo_copy(
        &format!("docker://{}/ns/app:1.0", srv.addr),
        &format!("dir:{}", out.display()),
        Some(&opts),
        None,
        false,
    )
    .unwrap();
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(manifest, env.blob(&built.manifest.digest));
    for d in built.layer_digests().iter().chain([&built.config.digest]) {
        let copied = std::fs::read(out.join(d.strip_prefix("sha256:").unwrap())).unwrap();
        assert_eq!(copied, env.blob(d), "{d}");
    }
    // Without the CA skopeo refuses the certificate; with a wrong password it is refused.
    let mut no_ca = SkopeoOpts::default().creds("alice", "s3cret pass");
    no_ca.cert_dir = Some(env.dir.path().join("empty-certs"));
    std::fs::create_dir_all(no_ca.cert_dir.as_ref().unwrap()).unwrap();
    assert!(
        skopeo::skopeo_inspect_raw(&format!("docker://{}/ns/app:1.0", srv.addr), &no_ca).is_err()
    );
    let mut wrong = opts.clone();
    wrong.creds = Some(("alice".into(), "nope".into()));
    let e = skopeo::skopeo_inspect_raw(&format!("docker://{}/ns/app:1.0", srv.addr), &wrong)
        .unwrap_err();
    assert!(
        e.stderr.contains("401") || e.stderr.to_lowercase().contains("unauthorized"),
        "{}",
        e.stderr
    );
    drop(srv);

    // A key that does not match the certificate, or an htpasswd file with a non-bcrypt
    // entry: hoist serve exits before listening.
    let other = env.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other = hoist_testkit::certs::TlsMaterial::generate(&other).unwrap();
    let md5 = env.dir.path().join("htpasswd-md5");
    std::fs::write(&md5, "alice:$apr1$q8Pk4pVy$dTZ3a0bQWh4n7cHWnLxyy/\n").unwrap();
    for (args, needle) in [
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                other.server_key.to_str().unwrap(),
            ],
            "does not match",
        ),
        (vec!["--htpasswd", md5.to_str().unwrap()], "bcrypt"),
    ] {
        let out = support::hoist(env.dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        assert!(
            out.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `--allow-push`: skopeo pushes an OCI layout into `hoist serve`, `hoist images` lists
/// it, a pull back is byte-identical; curl drives chunked uploads (Content-Range order,
/// 416 on a gap), a mount, and the refusals: a corrupt upload, a wrong monolithic blob, a
/// manifest naming a missing blob or a wrong digest. Nothing refused becomes visible and
/// fsck stays clean. Without the flag a write is 405 UNSUPPORTED.
#[test]
fn allow_push_skopeo_push_then_pull_byte_identical_and_corrupt_uploads_refused() {
    require!(Need::Peer(Peer::Skopeo), Need::Tool("curl"));
    let env = Env::new();
    let dir = env.dir.path();
    {
        let ro = env.serve(&[]);
        let a = curl(dir, &ro.url("/v2/ns/app/blobs/uploads/"), &["-X", "POST"]);
        assert_eq!((a.status, a.error_code().as_str()), (405, "UNSUPPORTED"));
    }
    let srv = env.serve(&["--allow-push"]);
    let layout = dir.join("layout");
    let built = images::sample_multi_layer()
        .write_layout(&layout, "push")
        .unwrap();
    let dest = format!("docker://{}/ns/app:1", srv.addr);
    let plain = SkopeoOpts::default().tls_verify(false);
    skopeo::skopeo_copy(
        &format!("oci:{}:push", layout.display()),
        &dest,
        None,
        Some(&plain),
        false,
    )
    .unwrap();
    let images = String::from_utf8(env.ok(&["images"])).unwrap();
    let line = images
        .lines()
        .find(|l| l.contains(&format!("{}/ns/app", srv.addr)))
        .unwrap_or_else(|| panic!("pushed image not listed:\n{images}"));
    assert!(line.split_whitespace().any(|w| w == "1"), "{line}");
    assert_eq!(env.blob(&built.manifest.digest), built.manifest_bytes);
    for d in built.layer_digests().iter().chain([&built.config.digest]) {
        assert_eq!(sha256_digest(&env.blob(d)), *d);
    }
    let manifest = skopeo_from(&srv, &env, "ns/app:1", "back");
    assert_eq!(manifest, built.manifest_bytes);
    for d in built.layer_digests() {
        let copied =
            std::fs::read(dir.join("back").join(d.strip_prefix("sha256:").unwrap())).unwrap();
        assert_eq!(sha256_digest(&copied), *d);
    }
    support::assert_fsck_clean(dir, &env.store());

    // A chunked upload in two PATCHes with Content-Range, a gap refused with 416.
    let data = b"hello, chunked upload world".to_vec();
    let digest = sha256_digest(&data);
    let part = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        format!("@{}", p.display())
    };
    let start = curl(dir, &srv.url("/v2/other/blobs/uploads/"), &["-X", "POST"]);
    assert_eq!(start.status, 202);
    let loc = start.header("location").unwrap().to_owned();
    assert!(loc.starts_with("/v2/other/blobs/uploads/"), "{loc}");
    let p1 = part("p1", &data[..10]);
    let a = curl(
        dir,
        &srv.url(&loc),
        &[
            "-X",
            "PATCH",
            "-H",
            "Content-Range: 0-9",
            "--data-binary",
            &p1,
        ],
    );
    assert_eq!((a.status, a.header("range")), (202, Some("0-9")));
    let p2 = part("p2", &data[10..]);
    let gap = curl(
        dir,
        &srv.url(&loc),
        &[
            "-X",
            "PATCH",
            "-H",
            "Content-Range: 12-40",
            "--data-binary",
            &p2,
        ],
    );
    assert_eq!(gap.status, 416);
    let range = format!("Content-Range: 10-{}", data.len() - 1);
    let a = curl(
        dir,
        &srv.url(&loc),
        &["-X", "PATCH", "-H", &range, "--data-binary", &p2],
    );
    assert_eq!(a.status, 202);
    let done = curl(
        dir,
        &srv.url(&format!("{loc}?digest={digest}")),
        &["-X", "PUT"],
    );
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(done.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(env.blob(&digest), data);
    // Pushed to `other` (no manifest yet): served there, mountable from there, and
    // nowhere else.
    let a = curl(dir, &srv.url(&format!("/v2/other/blobs/{digest}")), &["-I"]);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    let a = curl(
        dir,
        &srv.url(&format!("/v2/fourth/blobs/{digest}")),
        &["-I"],
    );
    assert_eq!(a.status, 404);
    let a = curl(
        dir,
        &srv.url(&format!(
            "/v2/third/blobs/uploads/?mount={digest}&from=other"
        )),
        &["-X", "POST"],
    );
    assert_eq!(a.status, 201);
    let a = curl(dir, &srv.url(&format!("/v2/third/blobs/{digest}")), &[]);
    assert_eq!((a.status, a.body.as_slice()), (200, data.as_slice()));
    // A mount from a repository that never had it starts an upload instead.
    let a = curl(
        dir,
        &srv.url(&format!(
            "/v2/third/blobs/uploads/?mount={digest}&from=fourth"
        )),
        &["-X", "POST"],
    );
    assert_eq!(a.status, 202);

    // A corrupt upload: the bytes are not the digest's. Refused, nothing visible.
    let wanted = sha256_digest(b"what the client claims");
    let start = curl(dir, &srv.url("/v2/other/blobs/uploads/"), &["-X", "POST"]);
    let loc = start.header("location").unwrap().to_owned();
    let bad = part("bad", b"corrupted bytes");
    let a = curl(
        dir,
        &srv.url(&format!("{loc}?digest={wanted}")),
        &["-X", "PUT", "--data-binary", &bad],
    );
    assert_eq!((a.status, a.error_code().as_str()), (400, "DIGEST_INVALID"));
    let (alg, hex) = wanted.split_once(':').unwrap();
    assert!(!env.store().join("blobs").join(alg).join(hex).exists());
    // The session is gone after a failed final PUT.
    let a = curl(dir, &srv.url(&loc), &["-X", "PATCH", "--data-binary", &bad]);
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (404, "BLOB_UPLOAD_UNKNOWN")
    );
    // Monolithic POST ?digest= with the wrong bytes.
    let a = curl(
        dir,
        &srv.url(&format!("/v2/other/blobs/uploads/?digest={wanted}")),
        &["-X", "POST", "--data-binary", &bad],
    );
    assert_eq!((a.status, a.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert!(!env.store().join("blobs").join(alg).join(hex).exists());

    // A mount from a repository that holds the blob: 201 without a body.
    let layer = &built.layer_digests()[0];
    let a = curl(
        dir,
        &srv.url(&format!(
            "/v2/other/blobs/uploads/?mount={layer}&from=ns/app"
        )),
        &["-X", "POST"],
    );
    assert_eq!(a.status, 201);
    assert_eq!(a.header("docker-content-digest"), Some(layer.as_str()));

    // A manifest naming a blob never pushed: refused, no name appears.
    let mut m: Value = serde_json::from_slice(&built.manifest_bytes).unwrap();
    m["layers"][0]["digest"] = Value::String(wanted.clone());
    let mbytes = serde_json::to_vec(&m).unwrap();
    let mfile = part("m.json", &mbytes);
    let ct = format!("Content-Type: {OCI_MANIFEST}");
    let a = curl(
        dir,
        &srv.url("/v2/other/manifests/broken"),
        &["-X", "PUT", "-H", &ct, "--data-binary", &mfile],
    );
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN"),
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    // The right manifest under a digest that is not its own.
    let good = part("good.json", &built.manifest_bytes);
    let a = curl(
        dir,
        &srv.url(&format!("/v2/other/manifests/{wanted}")),
        &["-X", "PUT", "-H", &ct, "--data-binary", &good],
    );
    assert_eq!((a.status, a.error_code().as_str()), (400, "DIGEST_INVALID"));
    // A client naming another registry (`Host: docker.io`) cannot write under it.
    let a = curl(
        dir,
        &srv.url("/v2/library/alpine/manifests/latest"),
        &[
            "-X",
            "PUT",
            "-H",
            &ct,
            "-H",
            "Host: docker.io",
            "--data-binary",
            &good,
        ],
    );
    assert_eq!((a.status, a.error_code().as_str()), (400, "NAME_INVALID"));
    let images = String::from_utf8(env.ok(&["images"])).unwrap();
    assert!(!images.contains("alpine"), "{images}");
    assert!(!images.contains("broken"), "{images}");
    assert!(!images.contains("/other"), "{images}");
    // By its own digest it is accepted and served under the new repository.
    let a = curl(
        dir,
        &srv.url(&format!("/v2/other/manifests/{}", built.manifest.digest)),
        &["-X", "PUT", "-H", &ct, "--data-binary", &good],
    );
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let back = curl(
        dir,
        &srv.url(&format!("/v2/other/manifests/{}", built.manifest.digest)),
        &["-H", &format!("Accept: {OCI_MANIFEST}")],
    );
    assert_eq!(back.status, 200);
    assert_eq!(back.body, built.manifest_bytes);
    support::assert_fsck_clean(dir, &env.store());
}

/// A private containerd daemon (its own root, state, sockets and config, no CRI plugin),
/// killed by its own pid when dropped.
struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {root:?}\nstate = {state:?}\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = {sock:?}\n[ttrpc]\n  address = {ttrpc:?}\n\
                 [debug]\n  address = {debug:?}\n[metrics]\n  address = \"\"\n",
                root = dir.join("root"),
                state = dir.join("state"),
                sock = socket,
                ttrpc = dir.join("containerd.sock.ttrpc"),
                debug = dir.join("debug.sock"),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = socket.exists()
                && Command::new("ctr")
                    .arg("--address")
                    .arg(&socket)
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success());
            if up {
                break;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "containerd exited ({st}):\n{}",
                    std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up in 30 s:\n{}",
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Containerd { child, socket }
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// containerd as a client: `ctr images pull --hosts-dir` with the `hosts.toml` that
/// `hoist serve --print-containerd-config` prints, for an upstream that is gone. Every
/// blob comes from hoist, asked with containerd's `?ns=` naming the upstream.
#[test]
fn ctr_pulls_through_hosts_toml_mirror_from_serve_with_ns() {
    require!(
        Need::Peer(Peer::Registry),
        Need::Peer(Peer::Skopeo),
        Need::Tool("containerd"),
        Need::Tool("ctr")
    );
    let env = Env::new();
    let (built, upstream) = stored_image(&env);
    let port = hoist_testkit::registry::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let printed = String::from_utf8(env.ok(&[
        "serve",
        "--listen",
        &listen,
        "--registry",
        &upstream,
        "--print-containerd-config",
    ]))
    .unwrap();
    // The hosts.toml part: after its comment lines, up to containers' section.
    let hosts_toml: String = printed
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .take_while(|l| !l.starts_with("# containers"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        hosts_toml.contains(&format!("[host.\"http://{listen}\"]")),
        "{printed}"
    );
    let hosts_dir = env.dir.path().join("certs.d");
    std::fs::create_dir_all(hosts_dir.join(&upstream)).unwrap();
    std::fs::write(hosts_dir.join(&upstream).join("hosts.toml"), &hosts_toml).unwrap();

    let srv = env.serve(&["--listen", &listen]);
    let ctd = Containerd::start(&env.dir.path().join("containerd"));
    let image = format!("{upstream}/ns/app:1.0");
    let out = ctd.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts_dir.to_str().unwrap(),
        "--plain-http",
        "--all-platforms",
        &image,
    ]);
    assert!(
        out.status.success(),
        "ctr pull failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        srv.log()
    );
    let listed = String::from_utf8(ctd.ctr(&["images", "ls"]).stdout).unwrap();
    let row = listed
        .lines()
        .find(|l| l.starts_with(&image))
        .unwrap_or_else(|| panic!("{image} not in ctr images ls:\n{listed}"));
    assert!(row.contains(&built.manifest.digest), "{row}");
    let content = String::from_utf8(ctd.ctr(&["content", "ls", "-q"]).stdout).unwrap();
    let log = srv.log();
    let ns_plain = format!("ns={upstream}");
    let ns_enc = format!("ns={}", upstream.replace(':', "%3A"));
    for d in built.layer_digests().iter().chain([&built.config.digest]) {
        assert!(
            content.lines().any(|l| l == d),
            "{d} not in containerd:\n{content}"
        );
        let served = log.lines().any(|l| {
            l.starts_with("GET ")
                && l.contains(&format!("/v2/ns/app/blobs/{d}"))
                && (l.contains(&ns_plain) || l.contains(&ns_enc))
                && l.split(' ').nth(2) == Some("200")
        });
        assert!(served, "hoist did not serve {d} with ?ns=:\n{log}");
    }
}

/// An index pushed with `skopeo copy --all` into `hoist serve --allow-push`: every
/// platform recorded, the tag answering the index to clients that take it, and a copy
/// back (`--all`) byte-identical, index and children.
#[test]
fn allow_push_an_index_with_skopeo_all_and_copy_it_back_byte_identical() {
    require!(Need::Peer(Peer::Skopeo));
    let env = Env::new();
    let dir = env.dir.path();
    let srv = env.serve(&["--allow-push"]);
    let layout = dir.join("layout");
    // Two platforms and an attestation manifest, as buildkit writes them.
    let built = images::sample_index()
        .image(images::ImageSpec::oci().platform("unknown", "unknown", None))
        .entry_annotation("vnd.docker.reference.type", "attestation-manifest")
        .write_layout(&layout, "multi")
        .unwrap();
    let plain = SkopeoOpts::default().tls_verify(false);
    skopeo::skopeo_copy(
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{}/ns/multi:1", srv.addr),
        None,
        Some(&plain),
        true,
    )
    .unwrap();
    assert_eq!(env.blob(&built.index.digest), built.index_bytes);
    let images = String::from_utf8(env.ok(&["images"])).unwrap();
    assert!(
        images.contains(&format!("{}/ns/multi", srv.addr)),
        "{images}"
    );
    // The other platform and the attestation, pushed by digest before the index, are
    // part of the named image: no <none> row for them unless -a.
    let rows = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["images", "--format", "json"];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_slice(&env.ok(&args)).unwrap();
        v.as_array().unwrap().clone()
    };
    let named = rows(&[]);
    assert!(
        named.iter().all(|r| !r["Repository"].is_null()),
        "{named:?}"
    );
    let every = rows(&["-a"]);
    assert_eq!(every.len(), built.images.len(), "{every:?}");
    let out = dir.join("back");
    skopeo::skopeo_copy(
        &format!("docker://{}/ns/multi:1", srv.addr),
        &format!("dir:{}", out.display()),
        Some(&plain),
        None,
        true,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        built.index_bytes
    );
    for img in &built.images {
        let hex = img.manifest.digest.strip_prefix("sha256:").unwrap();
        let copied = std::fs::read(out.join(format!("{hex}.manifest.json"))).unwrap();
        assert_eq!(copied, img.manifest_bytes, "{:?}", img.platform);
        for d in img.layer_digests() {
            let b = std::fs::read(out.join(d.strip_prefix("sha256:").unwrap())).unwrap();
            assert_eq!(sha256_digest(&b), d);
        }
    }
    support::assert_fsck_clean(dir, &env.store());
}

/// `hoist gc` beside `hoist serve`: an image removed while one of its blobs is being
/// downloaded keeps that blob until the download ends (the request holds the server's
/// lease), the client gets every byte, and once the server is gone the same gc frees it.
#[test]
fn gc_beside_serve_keeps_a_blob_being_served_and_frees_it_after() {
    require!(Need::Peer(Peer::Registry), Need::Peer(Peer::Skopeo));
    let env = Env::new();
    // A 24 MiB incompressible layer: far more than the socket buffers hold, so the
    // request stays open while the client does not read.
    let spec = images::ImageSpec::oci().layer(images::LayerSpec::gzip([
        images::Entry::dir("data"),
        images::Entry::random_file("data/big.bin", 24 << 20, 7),
    ]));
    let mut reg = Registry::plain();
    let built = skopeo::push_spec(&spec, &reg, "ns/big:1").unwrap();
    let reference = reg.image_ref("ns/big:1");
    env.ok(&["--quiet", "pull", &reference]);
    reg.kill();
    let layer = &built.layers[0].blob;
    let (alg, hex) = layer.digest.split_once(':').unwrap();
    let stored = env.store().join("blobs").join(alg).join(hex);
    assert!(stored.exists());

    let mut srv = env.serve(&[]);
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /v2/ns/big/blobs/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        layer.digest, srv.addr
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // The headers and the first bytes of the body, then the client stops reading.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed before the headers");
        got.extend_from_slice(&buf[..n]);
    }

    env.ok(&["rmi", &reference]);
    env.ok(&["gc"]);
    assert!(
        stored.exists(),
        "gc removed a blob while hoist serve was sending it"
    );

    // The client reads the rest: every byte, the right digest.
    s.read_to_end(&mut got).unwrap();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(got.len() - split, layer.size as usize);
    assert_eq!(sha256_digest(&got[split..]), layer.digest);
    assert!(srv.is_running());

    // The server's lease is what kept it: with the server gone, gc frees the blob.
    drop(srv);
    env.ok(&["gc"]);
    assert!(
        !stored.exists(),
        "gc kept a blob no image and no live lease needs"
    );
    support::assert_fsck_clean(env.dir.path(), &env.store());
}
