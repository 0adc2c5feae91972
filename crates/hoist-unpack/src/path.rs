//! Tar paths, cleaned once: relative to the root, no `.` or empty components, `..` resolved
//! lexically and never above the root, within the length and depth limits.
//!
//! Pure logic, no I/O. A cleaned path is the only kind of path the rest of the crate uses;
//! it is never joined onto a host path: the filesystem code resolves it inside the root
//! with `openat2(RESOLVE_IN_ROOT)`.

use std::ops::Bound;

use crate::Limits;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// Empty, or only `/` and `.` where a name is needed.
    Empty,
    /// A NUL byte inside.
    Nul,
    /// `..` above the root.
    EscapesRoot,
    /// Longer than the limit.
    TooLong,
    /// A component longer than the limit.
    NameTooLong,
    /// More components than the limit.
    TooDeep,
}

impl PathProblem {
    /// A message for errors.
    pub fn as_str(self) -> &'static str {
        match self {
            PathProblem::Empty => "empty path",
            PathProblem::Nul => "NUL byte in path",
            PathProblem::EscapesRoot => "path escapes the root with '..'",
            PathProblem::TooLong => "path longer than the limit",
            PathProblem::NameTooLong => "path component longer than the limit",
            PathProblem::TooDeep => "path deeper than the limit",
        }
    }
}

/// Cleans a tar path: a leading `/` is dropped (absolute paths are relative to the root),
/// empty and `.` components are dropped, `..` removes the previous component and is an error
/// at the root. The result has no leading or trailing `/`; the root itself is `""`.
pub fn clean(raw: &[u8], limits: &Limits) -> Result<Vec<u8>, PathProblem> {
    if raw.contains(&0) {
        return Err(PathProblem::Nul);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(PathProblem::EscapesRoot);
                }
            }
            name => {
                if name.len() > limits.max_name_len {
                    return Err(PathProblem::NameTooLong);
                }
                parts.push(name);
            }
        }
    }
    if parts.len() > limits.max_depth {
        return Err(PathProblem::TooDeep);
    }
    let out = parts.join(&b'/');
    if out.len() > limits.max_path_len {
        return Err(PathProblem::TooLong);
    }
    Ok(out)
}

/// Splits a cleaned, non-root path into its parent (`""` for the root) and its last name.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `parent/name` (or `name` when the parent is the root).
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        v.extend_from_slice(parent);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// Whether `p` is `dir` or lies below it (cleaned paths; `""` contains everything).
pub fn is_under(p: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (p.starts_with(dir) && (p.len() == dir.len() || p[dir.len()] == b'/'))
}

/// Bounds, in byte order, of the paths strictly below `dir`: they all sort in `dir/` ..
/// `dir0` (`'0'` follows `'/'`); below the root is everything.
pub fn subtree_range(dir: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    if dir.is_empty() {
        return (Bound::Excluded(Vec::new()), Bound::Unbounded);
    }
    let mut lo = dir.to_vec();
    lo.push(b'/');
    let mut hi = dir.to_vec();
    hi.push(b'0');
    (Bound::Included(lo), Bound::Excluded(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_table() {
        let l = Limits::default();
        let ok: &[(&[u8], &[u8])] = &[
            (b"a", b"a"),
            (b"./a/b/", b"a/b"),
            (b"/etc/passwd", b"etc/passwd"),
            (b"//a//./b", b"a/b"),
            (b"a/../b", b"b"),
            (b"a/b/../../c", b"c"),
            (b".", b""),
            (b"./", b""),
            (b"/", b""),
            (b"caf\xe9", b"caf\xe9"),
            (b"a/..", b""),
        ];
        for (input, want) in ok {
            assert_eq!(clean(input, &l).as_deref(), Ok(*want), "{input:?}");
        }
        let bad: &[(&[u8], PathProblem)] = &[
            (b"..", PathProblem::EscapesRoot),
            (b"../x", PathProblem::EscapesRoot),
            (b"../../x", PathProblem::EscapesRoot),
            (b"a/../../x", PathProblem::EscapesRoot),
            (b"/../etc", PathProblem::EscapesRoot),
            (b"a\0b", PathProblem::Nul),
        ];
        for (input, want) in bad {
            assert_eq!(clean(input, &l), Err(*want), "{input:?}");
        }
        let long = vec![b'a'; 256];
        assert_eq!(clean(&long, &l), Err(PathProblem::NameTooLong));
        let deep = b"a/".repeat(257);
        assert_eq!(clean(&deep, &l), Err(PathProblem::TooDeep));
        let wide = [vec![b'b'; 200], b"/".to_vec()].concat().repeat(21);
        assert_eq!(clean(&wide, &l), Err(PathProblem::TooLong));
    }

    #[test]
    fn split_join_under() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"c"), b"c");
        assert_eq!(join(b"a", b"c"), b"a/c");
        assert!(is_under(b"a/b", b"a"));
        assert!(is_under(b"a", b"a"));
        assert!(!is_under(b"ab", b"a"));
        assert!(is_under(b"x", b""));
        let set: std::collections::BTreeSet<Vec<u8>> = [
            &b""[..],
            b"a",
            b"a.b",
            b"a/b",
            b"a/b/c",
            b"a/\xff",
            b"ab",
            b"b",
            b"\xff\xfe",
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect();
        let below = |d: &[u8]| -> Vec<Vec<u8>> { set.range(subtree_range(d)).cloned().collect() };
        assert_eq!(below(b"a"), [&b"a/b"[..], b"a/b/c", b"a/\xff"]);
        assert_eq!(below(b"").len(), set.len() - 1);
    }
}
