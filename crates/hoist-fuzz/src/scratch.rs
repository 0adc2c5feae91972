//! Where the layer and archive targets write: a private `nodev,nosuid` tmpfs when this
//! thread can have one, else the temp directory.
//!
//! Layers applied in root mode create device nodes. On a `nodev` mount a device node
//! cannot be opened as a device, so a fuzz input that made (say) the host's disk appear
//! inside the root and then got the unpacker to write through it would only hit an error.
//! The tmpfs is mounted in a mount namespace of the calling thread alone
//! (`unshare(CLONE_FS | CLONE_NEWNS)`, then `/` made recursively private), so no other
//! process sees it and it goes away with the thread's namespace. It is also fast.
//! Without the namespace (not root, or `unshare` refused) layers are applied in rootless
//! mode only, which never creates device nodes.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags, mount, mount_change};
use rustix::thread::UnshareFlags;

/// The mount point, the same for every process (each mounts its own private tmpfs on it).
fn mount_point() -> PathBuf {
    std::env::temp_dir().join("hoist-fuzz-nodev")
}

/// The scratch directory of this thread.
#[derive(Debug, Clone)]
pub struct Scratch {
    /// Where to make temp directories.
    pub dir: PathBuf,
    /// Whether `dir` is a private `nodev` tmpfs, so root mode is safe to use.
    pub nodev: bool,
}

thread_local! {
    static SCRATCH: OnceCell<Scratch> = const { OnceCell::new() };
}

/// This thread's scratch directory, set up on first use.
pub fn scratch() -> Scratch {
    SCRATCH.with(|s| s.get_or_init(setup).clone())
}

/// The fixed base directory used inside a private tmpfs: the layer target's root and
/// sentinel sit in it, so seeds can name the sentinel by its absolute path.
pub fn fixed_base() -> PathBuf {
    mount_point().join("b")
}

fn setup() -> Scratch {
    let fallback = || Scratch {
        dir: std::env::temp_dir(),
        nodev: false,
    };
    if !rustix::process::geteuid().is_root() {
        return fallback();
    }
    let mp = mount_point();
    if std::fs::create_dir_all(&mp).is_err() {
        return fallback();
    }
    // SAFETY: `unshare_unsafe` is unsafe only because `UnshareFlags::FILES` would give this
    // thread its own fd table while other threads may hold its fds. The flags here are FS
    // and NEWNS only: this thread gets its own cwd/root/umask and mount namespace; the fd
    // table stays shared, so every fd stays valid everywhere.
    #[allow(unsafe_code)]
    let unshared =
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) };
    if unshared.is_err() {
        return fallback();
    }
    // From here on the thread is in its own namespace; a failure leaves it there, harmless.
    if mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .is_err()
    {
        return fallback();
    }
    let flags = MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOATIME;
    if mount("tmpfs", &mp, "tmpfs", flags, Some(c"size=256m,mode=0700")).is_err() {
        return fallback();
    }
    Scratch {
        dir: mp,
        nodev: is_nodev(&mount_point()),
    }
}

fn is_nodev(p: &Path) -> bool {
    rustix::fs::statvfs(p).is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::NODEV))
}
