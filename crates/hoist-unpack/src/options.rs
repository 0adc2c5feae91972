//! Unpack options: root or rootless, id maps, whiteout form, limits.

use std::str::FromStr;

use crate::{Limits, UnpackError};

/// One range of an id map: container ids `container..container+size` are host ids
/// `host..host+size`. Written `CONTAINER:HOST:SIZE`, as umoci's `--uid-map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the container (in the layer).
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// Number of ids.
    pub size: u32,
}

impl FromStr for IdMap {
    type Err = UnpackError;
    fn from_str(s: &str) -> Result<IdMap, UnpackError> {
        let bad = |reason| UnpackError::InvalidIdMap {
            input: s.chars().take(100).collect(),
            reason,
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [c, h, n] = parts[..] else {
            return Err(bad("three fields are needed"));
        };
        let num = |x: &str| x.parse::<u32>().map_err(|_| bad("not a number"));
        let m = IdMap {
            container: num(c)?,
            host: num(h)?,
            size: num(n)?,
        };
        if m.size == 0 {
            return Err(bad("size is 0"));
        }
        if u64::from(m.container) + u64::from(m.size) > u64::from(u32::MAX)
            || u64::from(m.host) + u64::from(m.size) > u64::from(u32::MAX)
        {
            return Err(bad("range past 4294967294"));
        }
        Ok(m)
    }
}

/// Maps a container id through `maps`; the identity when `maps` is empty; `None` when no
/// range holds it.
pub fn map_id(maps: &[IdMap], id: u32) -> Option<u32> {
    if maps.is_empty() {
        return Some(id);
    }
    maps.iter().find_map(|m| {
        (id >= m.container && id - m.container < m.size).then(|| m.host + (id - m.container))
    })
}

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Applied: the paths they name are removed (a flattened root filesystem).
    #[default]
    Apply,
    /// Kept in overlayfs form, for one layer applied onto an empty directory: `.wh.NAME`
    /// becomes a 0/0 character device `NAME`, `.wh..wh..opq` the xattr
    /// `trusted.overlay.opaque=y` on its directory. Needs root.
    Overlay,
}

/// How layers are applied.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Rootless mode: ownership is not applied but recorded in the `user.rootlesscontainers`
    /// xattr (as umoci does); device nodes are skipped with a warning; setuid and setgid
    /// bits are dropped from files; directories stay writable for their owner until the
    /// end.
    pub rootless: bool,
    /// Maps layer uids to host uids (root mode). Empty: identity.
    pub uid_map: Vec<IdMap>,
    /// Maps layer gids to host gids (root mode). Empty: identity.
    pub gid_map: Vec<IdMap>,
    /// Whiteout form.
    pub whiteouts: WhiteoutMode,
    /// Caps on the input.
    pub limits: Limits,
}

impl UnpackOptions {
    /// Defaults for this process: rootless unless the effective uid is 0.
    pub fn for_current_user() -> UnpackOptions {
        UnpackOptions {
            rootless: !is_root(),
            ..UnpackOptions::default()
        }
    }
}

/// Whether the effective uid is 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps() {
        let m: IdMap = "0:100000:65536".parse().unwrap();
        assert_eq!(
            m,
            IdMap {
                container: 0,
                host: 100_000,
                size: 65536
            }
        );
        for bad in [
            "",
            "1:2",
            "1:2:3:4",
            "a:1:1",
            "0:0:0",
            "4294967295:0:1",
            "-1:0:1",
        ] {
            assert!(bad.parse::<IdMap>().is_err(), "{bad}");
        }
        let maps = [m, "70000:5:2".parse().unwrap()];
        assert_eq!(map_id(&maps, 0), Some(100_000));
        assert_eq!(map_id(&maps, 65535), Some(165_535));
        assert_eq!(map_id(&maps, 65536), None);
        assert_eq!(map_id(&maps, 70001), Some(6));
        assert_eq!(map_id(&[], 42), Some(42));
    }
}
