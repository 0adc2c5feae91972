//! Parsers for the HTTP headers the client relies on: `WWW-Authenticate` (RFC 7235),
//! `Link` (RFC 8288), `Retry-After` and `Content-Range`. Pure functions, table-tested.

use std::time::{Duration, SystemTime};

/// One authentication challenge: a scheme (lower-cased) and its parameters (names
/// lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer`, `basic`, …
    pub scheme: String,
    /// Parameters in order.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    /// A quoted string, the opening quote under the cursor. Backslash escapes the next
    /// byte. An unterminated string takes the rest of the input.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    /// A token68 or any run of bytes up to a comma or blank (lenient value).
    fn bare(&mut self) -> String {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| !matches!(c, b',' | b' ' | b'\t'))
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
}

/// A token68 (`abc/+def==`) right at the cursor, followed by the end or a comma. Runs
/// without `/` or `+` that contain `=` are left to the parameter parser (`realm=`).
fn token68_at(c: &Cursor<'_>) -> Option<String> {
    let b = &c.s[c.i..];
    let mut j = 0;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b"-._~+/".contains(&b[j])) {
        j += 1;
    }
    let body = j;
    while j < b.len() && b[j] == b'=' {
        j += 1;
    }
    if body == 0 {
        return None;
    }
    let mut k = j;
    while k < b.len() && matches!(b[k], b' ' | b'\t') {
        k += 1;
    }
    if k < b.len() && b[k] != b',' {
        return None;
    }
    let run = &b[..j];
    let has_eq = j > body;
    if has_eq && !run.iter().any(|x| *x == b'/' || *x == b'+') {
        return None;
    }
    Some(String::from_utf8_lossy(run).into_owned())
}

/// Parse one `WWW-Authenticate` header value into its challenges.
///
/// Handles several challenges in one value, several parameters, quoted strings with
/// backslash escapes, optional blanks around `=`, and token68 forms (kept as a parameter
/// with an empty name). Never loops forever and never panics on garbage.
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: value.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        c.skip_ws_commas();
        if c.peek().is_none() {
            break;
        }
        let Some(scheme) = c.token() else {
            // Not a token: skip one byte and resynchronise.
            c.i += 1;
            continue;
        };
        let mut ch = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        c.skip_ws();
        if let Some(t) = token68_at(&c) {
            ch.params.push((String::new(), t));
            c.i += ch.params[0].1.len();
            out.push(ch);
            continue;
        }
        // Parameters until the next challenge (a token not followed by '=').
        loop {
            c.skip_ws();
            let save = c.i;
            let Some(name) = c.token() else {
                break;
            };
            c.skip_ws();
            if c.peek() != Some(b'=') {
                // The token starts the next challenge.
                c.i = save;
                break;
            }
            c.i += 1;
            // A token68 like `abc==` ends in '=' runs; treat `name=` + (end|,) as such.
            c.skip_ws();
            let v = match c.peek() {
                Some(b'"') => c.quoted(),
                Some(b',') | None => String::new(),
                Some(_) => c.bare(),
            };
            ch.params.push((name.to_ascii_lowercase(), v));
            c.skip_ws();
            if c.peek() == Some(b',') {
                c.i += 1;
                continue;
            }
            if c.peek().is_none() {
                break;
            }
        }
        out.push(ch);
    }
    out
}

/// The target of the `rel="next"` link in a `Link` header value, if any.
pub fn parse_link_next(value: &str) -> Option<String> {
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Find the next '<'.
        while i < b.len() && b[i] != b'<' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i + 1;
        let end = start + value[start..].find('>')?;
        let target = &value[start..end];
        i = end + 1;
        // Parameters up to the next top-level comma.
        let mut params = String::new();
        let mut in_quote = false;
        while i < b.len() {
            let ch = b[i];
            if ch == b'"' {
                in_quote = !in_quote;
            } else if ch == b',' && !in_quote {
                i += 1;
                break;
            }
            params.push(ch as char);
            i += 1;
        }
        for p in params.split(';') {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("rel") {
                continue;
            }
            let v = v.trim().trim_matches('"');
            if v.split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("next"))
            {
                return Some(target.trim().to_owned());
            }
        }
    }
    None
}

/// `Retry-After`: seconds or an HTTP date. Capped at one hour.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(CAP));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or_default().min(CAP))
}

/// Seconds since the epoch for a UTC civil date (Howard Hinnant's algorithm).
pub(crate) fn civil_to_system_time(
    y: i64,
    m: u32,
    d: u32,
    hh: u32,
    mm: u32,
    ss: u32,
) -> Option<SystemTime> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh as i64 * 3600 + mm as i64 * 60 + ss as i64;
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Parse an RFC 3339 timestamp (`2024-01-02T03:04:05.678+01:00`, `…Z`).
pub fn parse_rfc3339(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    let b = v.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = v.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)? as i64;
            let om = num(i + 4..i + 6)? as i64;
            let o = oh * 3600 + om * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let t = civil_to_system_time(y as i64, mo, d, hh, mm, ss)?;
    if offset >= 0 {
        t.checked_sub(Duration::from_secs(offset as u64))
    } else {
        t.checked_add(Duration::from_secs(offset.unsigned_abs()))
    }
}

/// `Content-Range: bytes START-END/TOTAL`: returns (start, end inclusive, total), the
/// total `None` when sent as `*`. Strict: digits only, `START <= END < TOTAL`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b) = (num(a)?, num(b)?);
    let total = match total.trim() {
        "*" => None,
        t => Some(num(t)?),
    };
    (a <= b && total.is_none_or(|t| b < t)).then_some((a, b, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn www_authenticate_table() {
        let cases: Vec<(&str, Vec<Challenge>)> = vec![
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
                vec![ch(
                    "bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                        ("scope", "repository:library/alpine:pull"),
                    ],
                )],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                vec![ch("basic", &[("realm", "Registry Realm")])],
            ),
            (
                r#"BEARER Realm = "http://127.0.0.1:5001/token" , Service=reg"#,
                vec![ch(
                    "bearer",
                    &[("realm", "http://127.0.0.1:5001/token"), ("service", "reg")],
                )],
            ),
            (
                r#"Bearer realm="a\"b\\c",error="insufficient_scope""#,
                vec![ch(
                    "bearer",
                    &[("realm", "a\"b\\c"), ("error", "insufficient_scope")],
                )],
            ),
            (
                r#"Basic realm="x", Bearer realm="https://r/t",scope="a,b""#,
                vec![
                    ch("basic", &[("realm", "x")]),
                    ch("bearer", &[("realm", "https://r/t"), ("scope", "a,b")]),
                ],
            ),
            ("Negotiate", vec![ch("negotiate", &[])]),
            ("Negotiate abc", vec![ch("negotiate", &[("", "abc")])]),
            (
                "Negotiate abc/+def==, Basic realm=x",
                vec![
                    ch("negotiate", &[("", "abc/+def==")]),
                    ch("basic", &[("realm", "x")]),
                ],
            ),
            ("", vec![]),
            (",,, ,", vec![]),
            (
                r#"Bearer realm="unterminated"#,
                vec![ch("bearer", &[("realm", "unterminated")])],
            ),
            (r#"Bearer realm="#, vec![ch("bearer", &[("realm", "")])]),
            ("\"\"\"===", vec![]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_www_authenticate(input), want, "input {input:?}");
        }
        // Garbage terminates.
        for g in ["=\"\\", "a=b=c,,=", "\\\\\\", "B \u{1F600} r=\"x\""] {
            let _ = parse_www_authenticate(g);
        }
    }

    #[test]
    fn link_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"</v2/x/tags/list?n=2&last=b>; rel="next""#,
                Some("/v2/x/tags/list?n=2&last=b"),
            ),
            (
                r#"<https://h/v2/_catalog?last=a>; rel=next"#,
                Some("https://h/v2/_catalog?last=a"),
            ),
            (r#"</p>; rel="prev", </n>; rel="next""#, Some("/n")),
            (r#"</p>; title="a, rel=next"; rel="prev""#, None),
            (r#"</n>; rel="prev next""#, Some("/n")),
            (r#"</n>; REL="Next""#, Some("/n")),
            ("", None),
            ("<unterminated; rel=next", None),
            ("garbage", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_link_next(input).as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn times() {
        let epoch = SystemTime::UNIX_EPOCH;
        let at = |s: u64| epoch + Duration::from_secs(s);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        assert_eq!(
            parse_rfc3339("2009-11-10T23:00:00.123456Z"),
            Some(at(1_257_894_000))
        );
        assert_eq!(
            parse_rfc3339("2009-11-11T00:00:00+01:00"),
            Some(at(1_257_894_000))
        );
        assert_eq!(
            parse_rfc3339("2009-11-10T22:00:00-01:00"),
            Some(at(1_257_894_000))
        );
        for bad in [
            "",
            "2009-11-10",
            "2009-13-10T00:00:00Z",
            "2009-11-10T00:00:00",
            "x009-11-10T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            parse_retry_after("Tue, 10 Nov 2009 23:00:10 GMT", at(1_257_894_000)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("5", epoch), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("999999", epoch),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_retry_after("soon", epoch), None);
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 10-19/100"),
            Some((10, 19, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 5-1/9"), None);
        assert_eq!(parse_content_range("bytes 5-9/9"), None, "end past total");
        assert_eq!(parse_content_range("bytes +5-9/90"), None);
        assert_eq!(parse_content_range("bytes 5-9/x"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
