//! ext4 images written by the kernel: an empty ext4 image is loop-mounted in a private mount
//! namespace of a helper thread and the layers are applied straight into it, then the image
//! is shrunk to what it holds plus headroom.
//!
//! Why: `mke2fs -d` (e2fsprogs 1.47) inserts every directory entry with a linear scan, which
//! is quadratic in large directories (18k man pages take ~40 s); the kernel's ext4 indexes
//! directories. Tar goes straight to ext4 with no intermediate tree.
//!
//! Safety of the host: the mount exists only in the helper thread's own mount namespace
//! (`unshare(CLONE_FS | CLONE_NEWNS)`, then `/` made recursively private), so nobody else
//! sees it, and it vanishes with the thread even if the process is killed; the loop device
//! is released by the kernel when unmounted (autoclear, set by `losetup -d` on the busy
//! device). Where a loop device or the mount is refused, [`build`] says so and the caller
//! falls back to `mke2fs -d`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::io::Errno;

use crate::MkfsError;
use crate::size::Size;
use crate::tools::{self, MKE2FS, Tool};

const LOSETUP: Tool = Tool {
    name: "losetup",
    package: "mount",
};
const RESIZE2FS: Tool = Tool {
    name: "resize2fs",
    package: "e2fsprogs",
};
const DUMPE2FS: Tool = Tool {
    name: "dumpe2fs",
    package: "e2fsprogs",
};

/// Why the mounted path was not taken.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Built; the image size in bytes.
    Built(u64),
    /// This host cannot loop-mount here (the reason, for a status line).
    Unavailable(String),
}

fn is_enospc(e: &MkfsError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(Errno::NOSPC.raw_os_error())
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Builds the ext4 image `img` with `apply`, which fills the mounted filesystem at the path
/// it is given. `work` is an empty scratch directory; `hint` is the compressed size of the
/// content (for the first capacity guess with [`Size::Auto`]).
pub(crate) fn build(
    img: &Path,
    work: &Path,
    size: Size,
    hint: u64,
    apply: &(dyn Fn(&Path) -> Result<(), MkfsError> + Sync),
) -> Result<Outcome, MkfsError> {
    let mut capacity = match size {
        Size::Bytes(b) => b,
        Size::Auto => {
            (hint.saturating_mul(16) + (1 << 30))
                .max(4 << 30)
                .div_ceil(4 << 20)
                * (4 << 20)
        }
    };
    for attempt in 0..3 {
        let mnt = work.join(format!("mnt{attempt}"));
        std::fs::create_dir(&mnt).map_err(|e| MkfsError::io("create directory", &mnt, e))?;
        mkfs_empty(img, capacity)?;
        match populate(img, &mnt, apply) {
            Ok(None) => break,
            Ok(Some(reason)) => return Ok(Outcome::Unavailable(reason)),
            Err(e) if is_enospc(&e) && matches!(size, Size::Auto) && attempt < 2 => {
                capacity = capacity.saturating_mul(4);
            }
            Err(e) if is_enospc(&e) => {
                return Err(MkfsError::TooSmall {
                    size: capacity,
                    needed: capacity.saturating_mul(2),
                    image: img.to_path_buf(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    let bytes = match size {
        Size::Auto => shrink(img)?,
        Size::Bytes(b) => b,
    };
    Ok(Outcome::Built(bytes))
}

/// An empty ext4 of `bytes` (a sparse file): 4 KiB blocks, no reserved blocks, inode tables
/// and journal initialised lazily (they are sparse until written).
fn mkfs_empty(img: &Path, bytes: u64) -> Result<(), MkfsError> {
    let _ = std::fs::remove_file(img);
    let mke2fs = tools::find(MKE2FS)?;
    tools::run(
        MKE2FS,
        Command::new(mke2fs)
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0"])
            .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
            .arg(img)
            .arg(format!("{}k", bytes / 1024)),
        img,
    )
    .map(|_| ())
}

/// Attaches `img` to a loop device, mounts it in a private namespace and runs `apply`.
/// `Ok(Some(reason))` when loop devices or mounts are refused here.
fn populate(
    img: &Path,
    mnt: &Path,
    apply: &(dyn Fn(&Path) -> Result<(), MkfsError> + Sync),
) -> Result<Option<String>, MkfsError> {
    let losetup = match tools::find(LOSETUP) {
        Ok(p) => p,
        Err(e) => return Ok(Some(hoist_types::error_chain(&e))),
    };
    let dev = match tools::run(
        LOSETUP,
        Command::new(&losetup).args(["--find", "--show"]).arg(img),
        img,
    ) {
        Ok(out) => PathBuf::from(out.trim()),
        Err(e) => return Ok(Some(hoist_types::error_chain(&e))),
    };
    let detach = || {
        let _ = Command::new(&losetup).arg("-d").arg(&dev).output();
    };
    // (result, whether the loop device was handed to the kernel's autoclear). Once it was,
    // it must never be detached by number again: the number may belong to someone else by
    // then.
    let (result, released) = std::thread::scope(|s| {
        s.spawn(|| -> (Result<Option<String>, MkfsError>, bool) {
            // SAFETY: `unshare_unsafe` is unsafe only because `UnshareFlags::FILES` would
            // give this thread its own fd table while other threads may hold its fds. The
            // flags here are FS and NEWNS only: this thread gets its own cwd/root/umask and
            // mount namespace; the fd table stays shared, so every fd stays valid everywhere.
            #[allow(unsafe_code)]
            let unshared = unsafe {
                rustix::thread::unshare_unsafe(
                    rustix::thread::UnshareFlags::FS | rustix::thread::UnshareFlags::NEWNS,
                )
            };
            if let Err(e) = unshared {
                return (
                    Ok(Some(format!("cannot make a private mount namespace: {e}"))),
                    false,
                );
            }
            if let Err(e) = rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::PRIVATE
                    | rustix::mount::MountPropagationFlags::REC,
            ) {
                return (Ok(Some(format!("cannot make mounts private: {e}"))), false);
            }
            if let Err(e) = rustix::mount::mount(
                dev.as_path(),
                mnt,
                "ext4",
                rustix::mount::MountFlags::NOATIME,
                None,
            ) {
                return (
                    Ok(Some(format!("cannot mount {}: {e}", dev.display()))),
                    false,
                );
            }
            // Busy now: this only marks it autoclear, so the kernel frees it on unmount (or
            // when this namespace goes away with the process).
            detach();
            let applied = apply(mnt);
            let unmounted = unmount(mnt);
            let r = applied.and_then(|()| {
                unmounted.map_err(|e| MkfsError::io("unmount", mnt, e.into()))?;
                Ok(None)
            });
            (r, true)
        })
        .join()
        .expect("the mount thread does not panic")
    });
    if !released {
        detach();
    }
    result
}

/// Unmounts, retrying while busy: a `fork` in another thread of this process briefly holds
/// copies of every fd (ours into the mount too) until its `exec` closes them.
fn unmount(mnt: &Path) -> Result<(), Errno> {
    let mut tries = 0;
    loop {
        match rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::empty()) {
            Err(Errno::BUSY) if tries < 200 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            r => return r,
        }
    }
}

/// Shrinks a populated image to its use plus headroom (10% and 16 MiB, in 4 MiB steps);
/// returns the new size.
fn shrink(img: &Path) -> Result<u64, MkfsError> {
    let dumpe2fs = tools::find(DUMPE2FS)?;
    let resize2fs = tools::find(RESIZE2FS)?;
    let info = tools::run(DUMPE2FS, Command::new(&dumpe2fs).arg("-h").arg(img), img)?;
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (count, free) = (field("Block count:"), field("Free blocks:"));
    let min_out = tools::run(RESIZE2FS, Command::new(&resize2fs).arg("-P").arg(img), img)?;
    let min: u64 = min_out
        .lines()
        .find_map(|l| {
            l.split_once("filesystem:")
                .map(|(_, v)| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let used = count.saturating_sub(free).max(min);
    let target = (used + used / 10 + 4096).div_ceil(1024) * 1024;
    if target >= count {
        return Ok(count * 4096);
    }
    tools::run(
        RESIZE2FS,
        Command::new(&resize2fs)
            .arg("-f")
            .arg(img)
            .arg(target.to_string()),
        img,
    )?;
    let bytes = target * 4096;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .map_err(|e| MkfsError::io("open", img, e))?;
    f.set_len(bytes)
        .map_err(|e| MkfsError::io("truncate", img, e))?;
    Ok(bytes)
}
