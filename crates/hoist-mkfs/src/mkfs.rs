//! Running mke2fs and mkfs.erofs on a directory.

use std::path::Path;
use std::process::Command;

use crate::MkfsError;
use crate::size::{Size, Usage};
use crate::tools::{self, DEBUGFS, MKE2FS, MKFS_EROFS};

/// A filesystem type hoist builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    /// ext4, read-write.
    Ext4,
    /// erofs, read-only, uncompressed.
    Erofs,
}

impl FsType {
    /// `ext4` or `erofs`.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Erofs => "erofs",
        }
    }
}

/// Builds an ext4 image at `image` from the directory `src` with `mke2fs -t ext4 -d`:
/// 4 KiB blocks, no reserved blocks, enough inodes for the tree plus headroom; owners,
/// modes, xattrs, devices, hardlinks and times come from `src` (so it must have been unpacked
/// as root). The root directory gets `src`'s owner and mode (mke2fs 1.47 does not copy
/// them). With [`Size::Auto`] the size is estimated from the tree and retried larger if
/// mke2fs runs out of space. Returns the image size in bytes.
pub fn make_ext4(src: &Path, image: &Path, size: Size) -> Result<u64, MkfsError> {
    let mke2fs = tools::find(MKE2FS)?;
    let usage = Usage::of(src)?;
    let (mut bytes, auto) = match size {
        Size::Auto => (usage.ext4_bytes(), true),
        Size::Bytes(b) => (b, false),
    };
    let inodes = usage.ext4_inodes();
    let mut attempt = 0;
    loop {
        let _ = std::fs::remove_file(image);
        let mut cmd = Command::new(&mke2fs);
        cmd.args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-N"])
            .arg(inodes.to_string())
            .arg("-d")
            .arg(src)
            .arg(image)
            .arg(format!("{}k", bytes / 1024));
        match tools::run(MKE2FS, &mut cmd, image) {
            Ok(_) => break,
            Err(MkfsError::ToolFailed { stderr, .. })
                if stderr.contains("Could not allocate")
                    || stderr.contains("No space left")
                    || stderr.contains("Not enough space")
                    || stderr.contains("too small") =>
            {
                if !auto || attempt >= 3 {
                    let _ = std::fs::remove_file(image);
                    return Err(MkfsError::TooSmall {
                        size: bytes,
                        needed: usage.ext4_bytes().max(bytes + bytes / 2),
                        image: image.to_path_buf(),
                    });
                }
                attempt += 1;
                bytes = (bytes + bytes / 2).div_ceil(4 << 20) * (4 << 20);
            }
            Err(e) => {
                let _ = std::fs::remove_file(image);
                return Err(e);
            }
        }
    }
    fix_ext4_root(src, image)?;
    Ok(bytes)
}

/// Gives the image's root directory the owner and mode of `src` (mke2fs leaves 0:0 0755).
fn fix_ext4_root(src: &Path, image: &Path) -> Result<(), MkfsError> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(src).map_err(|e| MkfsError::io("stat", src, e))?;
    let (uid, gid, mode) = (m.uid(), m.gid(), m.mode() & 0o7777);
    if (uid, gid, mode) == (0, 0, 0o755) {
        return Ok(());
    }
    let debugfs = tools::find(DEBUGFS)?;
    let script = format!(
        "sif / uid {uid}\nsif / gid {gid}\nsif / mode 0{:o}\n",
        0o040000 | mode
    );
    let script_path = image.with_extension("debugfs");
    std::fs::write(&script_path, script).map_err(|e| MkfsError::io("write", &script_path, e))?;
    let r = tools::run(
        DEBUGFS,
        Command::new(debugfs)
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(image),
        image,
    );
    let _ = std::fs::remove_file(&script_path);
    r.map(|_| ())
}

/// Builds an erofs image at `image` from the directory `src` with `mkfs.erofs` (no
/// compression, per-file mtimes kept); owners, modes, xattrs (overlayfs ones included),
/// devices and hardlinks come from `src`. Returns the image size in bytes.
pub fn make_erofs(src: &Path, image: &Path) -> Result<u64, MkfsError> {
    let mkfs = tools::find(MKFS_EROFS)?;
    let _ = std::fs::remove_file(image);
    let mut cmd = Command::new(mkfs);
    // erofs-utils 1.5 takes --quiet, not -q.
    cmd.args(["--quiet", "--preserve-mtime"])
        .arg(image)
        .arg(src);
    if let Err(e) = tools::run(MKFS_EROFS, &mut cmd, image) {
        let _ = std::fs::remove_file(image);
        return Err(e);
    }
    std::fs::metadata(image)
        .map(|m| m.len())
        .map_err(|e| MkfsError::io("stat", image, e))
}
