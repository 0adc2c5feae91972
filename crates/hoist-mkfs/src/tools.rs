//! The external programs: finding them and running them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::MkfsError;

/// A program hoist runs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// Program name.
    pub name: &'static str,
    /// Debian package.
    pub package: &'static str,
}

/// `mke2fs` (e2fsprogs): ext4 images from a directory (`-d`).
pub const MKE2FS: Tool = Tool {
    name: "mke2fs",
    package: "e2fsprogs",
};
/// `debugfs` (e2fsprogs): small fix-ups of ext4 images.
pub const DEBUGFS: Tool = Tool {
    name: "debugfs",
    package: "e2fsprogs",
};
/// `mkfs.erofs` (erofs-utils): erofs images from a directory.
pub const MKFS_EROFS: Tool = Tool {
    name: "mkfs.erofs",
    package: "erofs-utils",
};

/// Finds `tool` in `$PATH`, then in `/usr/sbin`, `/sbin`, `/usr/bin` and `/bin` (Debian puts
/// the mkfs programs in sbin, which is not in every user's `PATH`).
pub fn find(tool: Tool) -> Result<PathBuf, MkfsError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(tool.name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(MkfsError::ToolMissing {
        tool: tool.name,
        package: tool.package,
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a command to completion; a failure carries the end of its stderr.
pub(crate) fn run(tool: Tool, cmd: &mut Command, image: &Path) -> Result<String, MkfsError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| MkfsError::Spawn {
            tool: tool.name,
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: String = stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(MkfsError::ToolFailed {
            tool: tool.name,
            image: image.to_path_buf(),
            status: out.status.to_string(),
            stderr: tail.trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let e = find(Tool {
            name: "hoist-no-such-mkfs",
            package: "hoist-imaginary-utils",
        })
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("hoist-no-such-mkfs")
                && msg.contains("apt-get install hoist-imaginary-utils"),
            "{msg}"
        );
    }
}
