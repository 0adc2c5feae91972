//! `hoist serve --pull-through` streams what the store lacks: against the testkit's fake
//! registry (throttled, resetting, corrupting), a raw HTTP/1.1 client gets the manifest
//! at once and a layer's first bytes before the layer is complete in the store; what it
//! receives hashes to the digest; the store ends up with the verified image only, or with
//! nothing when the upstream lies.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hoist_testkit::fake::{FakeRegistry, Fault};
use hoist_testkit::images::{self, Entry, LayerSpec, sha256_digest};
use tempfile::TempDir;

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

fn serve(dir: &TempDir) -> Serve {
    serve_with(dir, &[])
}

fn serve_with(dir: &TempDir, extra: &[&str]) -> Serve {
    let log = dir.path().join("serve.log");
    let mut child = support::hoist_std(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--pull-through",
            "--retry-delay",
            "10ms",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(addr) = line.trim().strip_prefix("listening on http://") else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "hoist serve did not start: {line:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    Serve {
        addr: addr.to_owned(),
        child,
        log,
    }
}

/// A response read by hand: status, headers, and a body reader.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: BufReader<TcpStream>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> u64 {
        self.header("content-length")
            .expect("a Content-Length")
            .parse()
            .unwrap()
    }

    /// Read the body to its `Content-Length` or to the connection's end: the bytes, and
    /// the time the first one arrived.
    fn read_body(mut self) -> (Vec<u8>, Option<Instant>) {
        let len = self.content_length();
        let mut out = Vec::new();
        let mut first = None;
        let mut buf = vec![0u8; 64 * 1024];
        while (out.len() as u64) < len {
            match self.body.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    first.get_or_insert_with(Instant::now);
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
        (out, first)
    }
}

/// `GET path` on a fresh connection (closed after the answer).
fn get(addr: &str, path: &str) -> Raw {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    (&s).write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Raw {
        status,
        headers,
        body: r,
    }
}

/// An image with one layer of `big` incompressible bytes (uncompressed tar) and a small
/// gzip one.
fn big_image(big: usize) -> images::BuiltImage {
    images::ImageSpec::oci()
        .layer(LayerSpec::gzip([Entry::file("etc/hello", "hello\n")]))
        .layer(LayerSpec::uncompressed([Entry::random_file(
            "big.bin", big, 7,
        )]))
        .build()
        .unwrap()
}

fn blob_path(dir: &TempDir, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    support::store(dir.path()).join("blobs").join(alg).join(hex)
}

fn stored_images(dir: &TempDir) -> serde_json::Value {
    let out = support::hoist(dir.path())
        .args(["images", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Wait (bounded) until the store lists an image.
fn wait_for_image(dir: &TempDir, within: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = stored_images(dir);
        if v.as_array().is_some_and(|a| !a.is_empty()) || start.elapsed() > within {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every blob of the store hashes to its name.
fn assert_store_verified(dir: &TempDir) {
    let blobs = support::store(dir.path()).join("blobs/sha256");
    let Ok(entries) = std::fs::read_dir(&blobs) else {
        return;
    };
    for e in entries {
        let e = e.unwrap();
        let name = format!("sha256:{}", e.file_name().to_string_lossy());
        assert_eq!(sha256_digest(&std::fs::read(e.path()).unwrap()), name);
    }
}

#[test]
fn pull_through_streams_the_manifest_at_once_and_a_layer_before_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    // 6 MiB at 1 MiB/s: the pull of the big layer takes about 6 s.
    let built = big_image(6 << 20);
    fake.push_image("ns/app", "1.0", &built);
    let big = built.layers[1].blob.clone();
    assert!(big.size > 6 << 20);
    fake.inject(Fault::Throttle(1 << 20).on_blob(&big.digest).forever());
    let srv = serve(&dir);
    let ns = format!("?ns={}", fake.host_port());

    let t0 = Instant::now();
    let m = get(&srv.addr, &format!("/v2/ns/app/manifests/1.0{ns}"));
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("docker-content-digest"),
        Some(built.manifest.digest.as_str())
    );
    assert_eq!(
        m.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let (body, _) = m.read_body();
    let manifest_after = t0.elapsed();
    assert_eq!(body, built.manifest_bytes);
    assert!(
        manifest_after < Duration::from_secs(3),
        "the manifest took {manifest_after:?}: answered only after the pull?"
    );
    // The by-digest request a client makes next is answered the same way.
    let m2 = get(
        &srv.addr,
        &format!("/v2/ns/app/manifests/{}{ns}", built.manifest.digest),
    );
    assert_eq!(m2.status, 200);
    assert_eq!(m2.read_body().0, built.manifest_bytes);
    // The config, before the pull commits it.
    let c = get(
        &srv.addr,
        &format!("/v2/ns/app/blobs/{}{ns}", built.config.digest),
    );
    assert_eq!(c.status, 200);
    assert_eq!(c.read_body().0, built.config_bytes);

    // A client that goes away mid-blob leaves the server and the pull alone.
    {
        let mut gone = get(&srv.addr, &format!("/v2/ns/app/blobs/{}{ns}", big.digest));
        assert_eq!(gone.status, 200);
        let mut some = [0u8; 1000];
        gone.body.read_exact(&mut some).unwrap();
    }

    let b = get(&srv.addr, &format!("/v2/ns/app/blobs/{}{ns}", big.digest));
    assert_eq!(b.status, 200);
    assert_eq!(b.content_length(), big.size);
    assert_eq!(b.header("docker-content-digest"), Some(big.digest.as_str()));
    let mut reader = b;
    let mut first = [0u8; 1];
    reader.body.read_exact(&mut first).unwrap();
    let first_at = t0.elapsed();
    // The first bytes came while the layer was still being downloaded.
    assert!(
        !blob_path(&dir, &big.digest).exists(),
        "the layer was complete in the store before its first byte reached the client ({first_at:?})"
    );
    let (rest, _) = reader.read_body();
    let mut all = first.to_vec();
    all.extend_from_slice(&rest);
    let done_at = t0.elapsed();
    assert_eq!(all.len() as u64, big.size, "short body");
    assert_eq!(sha256_digest(&all), big.digest);
    assert!(
        first_at + Duration::from_secs(2) < done_at,
        "first byte at {first_at:?}, last at {done_at:?}: not streamed"
    );
    eprintln!("manifest {manifest_after:?}, first layer byte {first_at:?}, layer done {done_at:?}");

    // The store holds the verified image, once (one download of the big layer).
    let images = wait_for_image(&dir, Duration::from_secs(60));
    assert_eq!(images[0]["Id"], built.config.digest, "{images}");
    for l in built.layer_digests() {
        assert_eq!(
            sha256_digest(&std::fs::read(blob_path(&dir, &l)).unwrap()),
            l
        );
    }
    assert_eq!(
        fake.blob_gets(&big.digest),
        1,
        "the big layer was downloaded more than once"
    );
    assert_store_verified(&dir);
    // Now from the store.
    let again = get(&srv.addr, &format!("/v2/ns/app/blobs/{}{ns}", big.digest));
    assert_eq!(again.status, 200);
    assert_eq!(sha256_digest(&again.read_body().0), big.digest);
    drop(srv);
    support::assert_fsck_clean(dir.path(), &support::store(dir.path()));
}

#[test]
fn pull_through_streaming_from_an_upstream_that_resets_mid_blob_completes_verified() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let built = big_image(4 << 20);
    fake.push_image("ns/app", "1.0", &built);
    let big = built.layers[1].blob.clone();
    // The first connection breaks a third into the body; the engine resumes with Range
    // over a slow link, while the client is streamed the bytes from before the break and
    // after. (The fake applies the first rule that matches a request.)
    fake.inject(Fault::ResetAfter(big.size / 3).on_blob(&big.digest));
    fake.inject(Fault::Throttle(1 << 20).on_blob(&big.digest).forever());
    let srv = serve(&dir);
    let ns = format!("?ns={}", fake.host_port());
    let m = get(&srv.addr, &format!("/v2/ns/app/manifests/1.0{ns}"));
    assert_eq!(m.status, 200);
    assert_eq!(m.read_body().0, built.manifest_bytes);
    for l in &built.layers {
        let b = get(
            &srv.addr,
            &format!("/v2/ns/app/blobs/{}{ns}", l.blob.digest),
        );
        assert_eq!(b.status, 200);
        let (body, _) = b.read_body();
        assert_eq!(body.len() as u64, l.blob.size);
        assert_eq!(sha256_digest(&body), l.blob.digest);
    }
    assert!(fake.hits(&format!("/v2/ns/app/blobs/{}", big.digest)) >= 2);
    let images = wait_for_image(&dir, Duration::from_secs(60));
    assert_eq!(images[0]["Id"], built.config.digest, "{images}");
    assert_store_verified(&dir);
    drop(srv);
    support::assert_fsck_clean(dir.path(), &support::store(dir.path()));
}

#[test]
fn pull_through_of_corrupt_upstream_bytes_never_completes_a_body_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let built = big_image(3 << 20);
    fake.push_image("ns/app", "1.0", &built);
    let big = built.layers[1].blob.clone();
    // Every answer for the layer has one wrong byte (the fake applies the first rule that
    // matches a request): the engine refetches once, then gives up.
    fake.inject(Fault::WrongBytes.on_blob(&big.digest).forever());
    let mut srv = serve(&dir);
    let ns = format!("?ns={}", fake.host_port());
    let m = get(&srv.addr, &format!("/v2/ns/app/manifests/1.0{ns}"));
    assert_eq!(m.status, 200);
    m.read_body();
    let b = get(&srv.addr, &format!("/v2/ns/app/blobs/{}{ns}", big.digest));
    if b.status == 200 {
        // Streamed while the pull ran: the body ends short of its Content-Length, which
        // every client sees as a broken transfer.
        let len = b.content_length();
        let (body, _) = b.read_body();
        assert!(
            (body.len() as u64) < len,
            "a whole body of wrong bytes was sent ({} bytes)",
            body.len()
        );
        eprintln!("corrupt upstream: 200, body cut at {} of {len}", body.len());
    } else {
        // The pull had already failed: an error status.
        assert!(b.status >= 500, "status {}", b.status);
        eprintln!("corrupt upstream: status {}", b.status);
    }
    // The pull fails (bounded wait): nothing of the image is stored.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30)
        && !std::fs::read_to_string(&srv.log)
            .unwrap_or_default()
            .contains("pull-through: pulling")
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(srv.child.try_wait().unwrap().is_none(), "the server died");
    assert!(!blob_path(&dir, &big.digest).exists());
    assert!(
        stored_images(&dir).as_array().is_none_or(|a| a.is_empty()),
        "an image was stored"
    );
    assert_store_verified(&dir);
    drop(srv);
    support::assert_fsck_clean(dir.path(), &support::store(dir.path()));
}

/// The trust policy is enforced on pull-through: an image the policy refuses is neither
/// served nor pulled, and the upstream is never asked for its blobs.
#[test]
fn pull_through_under_a_policy_that_refuses_serves_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let built = big_image(64 << 10);
    fake.push_image("ns/app", "1.0", &built);
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"default":[{"type":"reject"}]}"#).unwrap();
    let srv = serve_with(&dir, &["--policy", policy.to_str().unwrap()]);
    let ns = format!("?ns={}", fake.host_port());

    let m = get(&srv.addr, &format!("/v2/ns/app/manifests/1.0{ns}"));
    assert_eq!(m.status, 403, "a refused image was answered {}", m.status);
    // The distribution-spec's DENIED, with the policy's reason.
    let mut body = String::new();
    let mut m = m;
    m.body.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("\"DENIED\"") && body.contains("reject"),
        "{body}"
    );
    let by_digest = get(
        &srv.addr,
        &format!("/v2/ns/app/manifests/{}{ns}", built.manifest.digest),
    );
    assert!(
        (400..500).contains(&by_digest.status),
        "{}",
        by_digest.status
    );
    for layer in &built.layers {
        let b = get(
            &srv.addr,
            &format!("/v2/ns/app/blobs/{}{ns}", layer.blob.digest),
        );
        assert!((400..500).contains(&b.status), "{}", b.status);
        assert_eq!(
            fake.blob_gets(&layer.blob.digest),
            0,
            "a refused blob was fetched"
        );
    }
    // Nothing arrives later either.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stored_images(&dir), serde_json::json!([]));
    let blobs = support::store(dir.path()).join("blobs/sha256");
    let stored = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
    assert_eq!(stored, 0, "blobs were stored for a refused image");
    support::assert_fsck_clean(dir.path(), &support::store(dir.path()));
}
