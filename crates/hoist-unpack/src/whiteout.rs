//! Whiteout rules of the OCI image spec, as pure logic.
//!
//! - `DIR/.wh.NAME` removes `DIR/NAME` of lower layers; NAME must be non-empty and neither
//!   `.` nor `..`.
//! - `DIR/.wh..wh..opq` makes `DIR` opaque: everything below it in lower layers is hidden;
//!   entries of the same layer stay, whatever their order in the tar.
//! - Other `.wh..wh.*` names are AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`); they are
//!   skipped, as Docker does.
//! - A whiteout name as a non-final component (`a/.wh.b/c`) is refused: it would create a
//!   directory that downstream readers take for a whiteout.

use crate::path::split;

/// The opaque-directory marker.
pub const OPAQUE: &[u8] = b".wh..wh..opq";
/// The whiteout prefix.
pub const PREFIX: &[u8] = b".wh.";
/// The prefix of AUFS metadata names.
pub const META_PREFIX: &[u8] = b".wh..wh.";

/// What a (cleaned) tar path means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout {
    /// An ordinary entry.
    None,
    /// Remove this path of lower layers.
    Remove(Vec<u8>),
    /// Make this directory opaque.
    Opaque(Vec<u8>),
    /// AUFS metadata: skip the entry.
    Meta,
}

/// Why a whiteout is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutProblem {
    /// `.wh.`, `.wh..` or `.wh...`: no name, `.` or `..`.
    BadName,
    /// A whiteout name used as a directory.
    NotLast,
}

impl WhiteoutProblem {
    /// A message for errors.
    pub fn as_str(self) -> &'static str {
        match self {
            WhiteoutProblem::BadName => {
                "invalid whiteout: the name after .wh. is empty, '.' or '..'"
            }
            WhiteoutProblem::NotLast => "whiteout name used as a directory",
        }
    }
}

/// Classifies a cleaned tar path.
pub fn classify(path: &[u8]) -> Result<Whiteout, WhiteoutProblem> {
    let (parent, base) = split(path);
    if parent.split(|b| *b == b'/').any(|c| c.starts_with(PREFIX)) {
        return Err(WhiteoutProblem::NotLast);
    }
    if !base.starts_with(PREFIX) {
        return Ok(Whiteout::None);
    }
    if base == OPAQUE {
        return Ok(Whiteout::Opaque(parent.to_vec()));
    }
    if base.starts_with(META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    let name = &base[PREFIX.len()..];
    if name.is_empty() || name == b"." || name == b".." {
        return Err(WhiteoutProblem::BadName);
    }
    Ok(Whiteout::Remove(crate::path::join(parent, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases: &[(&[u8], Result<Whiteout, WhiteoutProblem>)] = &[
            (b"etc/passwd", Ok(Whiteout::None)),
            (b"etc/.whatever", Ok(Whiteout::None)),
            (
                b"etc/.wh.passwd",
                Ok(Whiteout::Remove(b"etc/passwd".to_vec())),
            ),
            (b".wh.etc", Ok(Whiteout::Remove(b"etc".to_vec()))),
            (
                b"a/.wh..hidden",
                Ok(Whiteout::Remove(b"a/.hidden".to_vec())),
            ),
            (b"a/.wh....", Ok(Whiteout::Remove(b"a/...".to_vec()))),
            (b"usr/.wh..wh..opq", Ok(Whiteout::Opaque(b"usr".to_vec()))),
            (b".wh..wh..opq", Ok(Whiteout::Opaque(Vec::new()))),
            (b"a/.wh..wh.plnk", Ok(Whiteout::Meta)),
            (b".wh..wh.aufs", Ok(Whiteout::Meta)),
            (b".wh.", Err(WhiteoutProblem::BadName)),
            (b".wh..", Err(WhiteoutProblem::BadName)),
            (b".wh...", Err(WhiteoutProblem::BadName)),
            (b"etc/.wh..", Err(WhiteoutProblem::BadName)),
            (b"a/.wh.b/c", Err(WhiteoutProblem::NotLast)),
            (b".wh.x/.wh.y", Err(WhiteoutProblem::NotLast)),
        ];
        for (input, want) in cases {
            assert_eq!(&classify(input), want, "{}", String::from_utf8_lossy(input));
        }
    }
}
