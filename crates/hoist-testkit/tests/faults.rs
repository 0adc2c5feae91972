//! The fake registry's faults, Range support, token auth, storage listener and counters,
//! seen on the wire with the kit's raw HTTP client.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use hoist_testkit::fake::{FakeRegistry, Fault, RetryAfter, TokenAuth};
use hoist_testkit::http;
use hoist_testkit::images::{seeded_bytes, sha256_digest};

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Response {
    http::request(addr, "GET", path, headers, b"").unwrap()
}

/// A fake holding one 200 KB blob in `r`; returns (fake, digest, bytes, path).
fn with_blob() -> (FakeRegistry, String, Vec<u8>, String) {
    let fake = FakeRegistry::start();
    let bytes = seeded_bytes(200_000, 7);
    let d = sha256_digest(&bytes);
    fake.put_blob("r", &d, bytes.clone());
    let path = format!("/v2/r/blobs/{d}");
    (fake, d, bytes, path)
}

fn storage_addr(fake: &FakeRegistry) -> SocketAddr {
    fake.storage_url()
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn ranges_are_served_and_counted() {
    let (fake, d, bytes, path) = with_blob();
    let r = get(fake.addr(), &path, &[("Range", "bytes=100-199")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/200000"));
    assert_eq!(r.body, bytes[100..200]);
    let r = get(fake.addr(), &path, &[("Range", "bytes=199990-")]);
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = get(fake.addr(), &path, &[("Range", "bytes=200000-")]);
    assert_eq!(r.status, 416);
    let r = get(fake.addr(), &path, &[]);
    assert_eq!((r.status, r.body.len()), (200, bytes.len()));
    assert_eq!(fake.blob_gets(&d), 3);
    assert_eq!(fake.blob_bytes_sent(&d), 100 + 10 + 200_000);
    let log = fake.requests();
    assert_eq!(log[0].range.as_deref(), Some("bytes=100-199"));
    fake.reset_hits();
    assert_eq!((fake.blob_gets(&d), fake.blob_bytes_sent(&d)), (0, 0));
}

#[test]
fn statuses_and_retry_after_then_normal_service() {
    let (fake, _d, bytes, path) = with_blob();
    fake.inject(Fault::Status(502).on_path(&path).times(1));
    fake.inject(
        Fault::RetryAfter {
            status: 429,
            after: RetryAfter::Seconds(7),
        }
        .on_path(&path),
    );
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    fake.inject(
        Fault::RetryAfter {
            status: 503,
            after: RetryAfter::Date(when),
        }
        .on_path(&path),
    );
    assert_eq!(get(fake.addr(), &path, &[]).status, 502);
    let r = get(fake.addr(), &path, &[]);
    assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
    let r = get(fake.addr(), &path, &[]);
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("retry-after"),
        Some("Sun, 06 Nov 1994 08:49:37 GMT")
    );
    let r = get(fake.addr(), &path, &[]);
    assert_eq!((r.status, r.body), (200, bytes));
}

#[test]
fn skip_and_forever() {
    let (fake, _d, _b, path) = with_blob();
    fake.inject(Fault::Status(500).on_path(&path).skip(1).forever());
    let codes: Vec<u16> = (0..4)
        .map(|_| get(fake.addr(), &path, &[]).status)
        .collect();
    assert_eq!(codes, [200, 500, 500, 500]);
    fake.clear_faults();
    assert_eq!(get(fake.addr(), &path, &[]).status, 200);
}

#[test]
fn reset_truncate_content_length_and_wrong_bytes() {
    let (fake, d, bytes, path) = with_blob();
    // Reset: the full length is declared, 1000 bytes come, then the connection breaks.
    fake.inject(Fault::ResetAfter(1000).on_blob(&d));
    let r = get(fake.addr(), &path, &[]);
    assert_eq!(r.header("content-length"), Some("200000"));
    assert_eq!(r.body, bytes[..1000]);
    // Truncated: chunked, ends cleanly.
    fake.inject(Fault::Truncate(5000).on_blob(&d));
    let r = get(fake.addr(), &path, &[]);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body, bytes[..5000]);
    // A short Content-Length: a complete, short answer.
    fake.inject(Fault::ContentLength(10).on_blob(&d));
    let r = get(fake.addr(), &path, &[]);
    assert_eq!((r.header("content-length"), r.body.len()), (Some("10"), 10));
    // A long one: everything, then a break.
    fake.inject(Fault::ContentLength(300_000).on_blob(&d));
    let r = get(fake.addr(), &path, &[]);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.body, bytes);
    // Wrong bytes: same length, not the digest.
    fake.inject(Fault::WrongBytes.on_blob(&d));
    let r = get(fake.addr(), &path, &[]);
    assert_eq!(r.body.len(), bytes.len());
    assert_ne!(sha256_digest(&r.body), d);
    assert_eq!(get(fake.addr(), &path, &[]).body, bytes);
}

#[test]
fn range_answered_with_200_or_a_wrong_content_range() {
    let (fake, d, bytes, path) = with_blob();
    fake.inject(Fault::IgnoreRange.on_blob(&d));
    let r = get(fake.addr(), &path, &[("Range", "bytes=10-")]);
    assert_eq!((r.status, r.body.len()), (200, bytes.len()));
    fake.inject(Fault::WrongContentRange.on_blob(&d));
    let r = get(fake.addr(), &path, &[("Range", "bytes=10-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 11-199999/200000"));
    // ranged_only: a plain GET passes, the next ranged one is hit.
    fake.inject(Fault::Status(500).on_blob(&d).ranged_only());
    assert_eq!(get(fake.addr(), &path, &[]).status, 200);
    assert_eq!(
        get(fake.addr(), &path, &[("Range", "bytes=1-")]).status,
        500
    );
}

#[test]
fn drip_stall_and_delay() {
    let (fake, d, _b, path) = with_blob();
    let small = b"0123456789".to_vec();
    let sd = sha256_digest(&small);
    fake.put_blob("r", &sd, small.clone());
    fake.inject(Fault::Drip(Duration::from_millis(30)).on_blob(&sd));
    let t = Instant::now();
    let r = get(fake.addr(), &format!("/v2/r/blobs/{sd}"), &[]);
    assert_eq!(r.body, small);
    assert!(
        t.elapsed() >= Duration::from_millis(9 * 30),
        "{:?}",
        t.elapsed()
    );
    // A cap of 1 MB/s: 200 KB take about 0.2 s.
    fake.inject(Fault::Throttle(1_000_000).on_blob(&d));
    let t = Instant::now();
    assert_eq!(get(fake.addr(), &path, &[]).body.len(), 200_000);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(130), "{took:?}");
    fake.inject(Fault::Delay(Duration::from_millis(300)).on_path(&path));
    let t = Instant::now();
    assert_eq!(get(fake.addr(), &path, &[]).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // A stall keeps the connection open with no bytes: the client's timeout ends it.
    fake.inject(Fault::StallAfter(100).on_blob(&d));
    let mut s = std::net::TcpStream::connect(fake.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    use std::io::{Read, Write};
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("the stalled answer ended"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    let head = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(got.len() - head - 4, 100);
}

#[test]
fn redirects_to_the_storage_listener_with_expiring_signatures() {
    let (fake, d, bytes, path) = with_blob();
    fake.inject(Fault::Redirect.on_any_blob().forever());
    fake.presigned_uses(Some(1));
    let r = get(fake.addr(), &path, &[]);
    assert_eq!(r.status, 307);
    let loc = r.header("location").unwrap().to_string();
    assert!(
        loc.starts_with(&format!("{}/storage/r/blobs/{d}?sig=", fake.storage_url())),
        "{loc}"
    );
    let target = loc.strip_prefix(&fake.storage_url()).unwrap();
    let s = get(storage_addr(&fake), target, &[("Range", "bytes=5-9")]);
    assert_eq!((s.status, s.body.as_slice()), (206, &bytes[5..10]));
    // Used once: expired.
    let s = get(storage_addr(&fake), target, &[]);
    assert_eq!(s.status, 403);
    assert!(String::from_utf8_lossy(&s.body).contains("expired"));
    // A fresh redirect gets a fresh signature.
    let loc2 = get(fake.addr(), &path, &[])
        .header("location")
        .unwrap()
        .to_string();
    assert_ne!(loc, loc2);
    let log = fake.requests();
    assert!(log.iter().any(|r| r.storage && r.status == 206));
    assert_eq!(fake.blob_gets(&d), 1);
    assert_eq!(fake.blob_bytes_sent(&d), 5);
}

#[test]
fn token_auth_with_expiring_tokens() {
    let (fake, _d, _b, path) = with_blob();
    fake.require_token(Some(TokenAuth {
        uses_per_token: Some(2),
        reject_all: false,
    }));
    let r = get(fake.addr(), &path, &[]);
    assert_eq!(r.status, 401);
    let ch = r.header("www-authenticate").unwrap();
    assert!(
        ch.contains(&format!("realm=\"{}/token\"", fake.url()))
            && ch.contains("scope=\"repository:r:pull\""),
        "{ch}"
    );
    let t = get(fake.addr(), "/token?scope=repository:r:pull", &[]);
    let tok = t.json().unwrap()["token"].as_str().unwrap().to_string();
    let auth = format!("Bearer {tok}");
    assert_eq!(
        get(fake.addr(), &path, &[("Authorization", &auth)]).status,
        200
    );
    assert_eq!(
        get(fake.addr(), &path, &[("Authorization", &auth)]).status,
        200
    );
    assert_eq!(
        get(fake.addr(), &path, &[("Authorization", &auth)]).status,
        401,
        "expired"
    );
    assert_eq!(fake.tokens_issued(), 1);
    fake.require_token(Some(TokenAuth {
        uses_per_token: None,
        reject_all: true,
    }));
    let t = get(fake.addr(), "/token", &[]);
    let tok = t.json().unwrap()["token"].as_str().unwrap().to_string();
    assert_eq!(
        get(
            fake.addr(),
            &path,
            &[("Authorization", &format!("Bearer {tok}"))]
        )
        .status,
        401
    );
    fake.require_token(None);
    assert_eq!(get(fake.addr(), &path, &[]).status, 200);
}
