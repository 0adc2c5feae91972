//! Filesystem primitives relative to a root directory fd.
//!
//! Every lookup of a tar path's parent goes through `openat2` with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`: symlinks on the way, absolute or relative, resolve inside the root
//! and `..` stops at it. The last component is then handled with `*at` calls that never
//! follow it (`mkdirat`, `symlinkat`, `mknodat`, `linkat` without `AT_SYMLINK_FOLLOW`,
//! `openat(O_CREAT|O_EXCL|O_NOFOLLOW)`, `unlinkat`, `fchownat`/`utimensat` with
//! `AT_SYMLINK_NOFOLLOW`); metadata of files and directories is set through their fd.
//!
//! Parent fds are cached by path. Removing or replacing a directory or a symlink can change
//! what any cached path resolves to, so it clears the cache.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps, XattrFlags, openat, openat2, statat,
    unlinkat,
};
use rustix::io::Errno;

use crate::UnpackError;
use crate::path::split;

/// How parents are resolved.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
/// Cached parent fds beyond this are dropped.
const CACHE_MAX: usize = 4096;

/// Why a parent cannot be used.
const PARENT_NOT_DIR: &str =
    "is not a directory inside the root (a file, or a symlink that leads nowhere inside it)";

/// The xattr that records ownership in rootless mode (umoci's convention).
pub const ROOTLESS_XATTR: &str = "user.rootlesscontainers";

/// A root directory and a cache of directory fds below it.
pub(crate) struct RootFd {
    root: Arc<OwnedFd>,
    host: PathBuf,
    cache: BTreeMap<Vec<u8>, Arc<OwnedFd>>,
    proc_fd: Option<OwnedFd>,
}

/// A resolved parent directory and the last name of a path.
pub(crate) type Parent<'p> = (Arc<OwnedFd>, &'p [u8]);

/// What was at a path before it was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removed {
    Nothing,
    NonDir,
    Dir,
}

impl RootFd {
    /// Opens the root directory (a trusted host path).
    pub(crate) fn open(host: &Path) -> Result<RootFd, UnpackError> {
        let fd = rustix::fs::open(
            host,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::io("open", host, e.into()))?;
        // openat2 needs Linux 5.6; say so clearly rather than failing on the first entry.
        match openat2(
            &fd,
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        ) {
            Ok(_) => {}
            Err(Errno::NOSYS) => {
                return Err(UnpackError::Unsupported {
                    what: "unpacking without openat2 (Linux 5.6 or later is needed)",
                });
            }
            Err(e) => return Err(UnpackError::io("resolve in", host, e.into())),
        }
        let proc_fd = rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        Ok(RootFd {
            root: Arc::new(fd),
            host: host.to_path_buf(),
            cache: BTreeMap::new(),
            proc_fd,
        })
    }

    /// The host path of the root (for messages).
    pub(crate) fn host(&self) -> &Path {
        &self.host
    }

    /// The root's fd.
    pub(crate) fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Forgets every cached fd.
    pub(crate) fn invalidate(&mut self) {
        self.cache.clear();
    }

    fn resolve(&self, dir: &[u8]) -> Result<OwnedFd, Errno> {
        let mut tries = 0;
        loop {
            match openat2(
                self.root.as_fd(),
                OsStr::from_bytes(dir),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            ) {
                Err(Errno::AGAIN) if tries < 32 => tries += 1,
                r => return r,
            }
        }
    }

    /// The directory at cleaned path `dir`, resolved inside the root. When it is missing and
    /// `create` is set, it and its missing parents are created (mode 0755); the paths of
    /// the directories created are pushed to `created`. `Ok(None)` when missing and not
    /// created.
    pub(crate) fn dir(
        &mut self,
        dir: &[u8],
        create: bool,
        created: &mut Vec<Vec<u8>>,
    ) -> Result<Option<Arc<OwnedFd>>, UnpackError> {
        if dir.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(fd) = self.cache.get(dir) {
            return Ok(Some(fd.clone()));
        }
        match self.resolve(dir) {
            Ok(fd) => return Ok(Some(self.remember(dir, fd))),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) | Err(Errno::NOTDIR) if !create => return Ok(None),
            Err(e) => return Err(UnpackError::entry_io(dir, "resolve the directory", e)),
        }
        // Slow path: walk the prefixes, creating what is missing.
        let mut parent = self.root.clone();
        let mut start = 0;
        for name in dir.split(|b| *b == b'/') {
            let prefix = &dir[..start + name.len()];
            start += name.len() + 1;
            let fd = match self.cache.get(prefix).cloned() {
                Some(fd) => fd,
                None => match self.resolve(prefix) {
                    Ok(fd) => self.remember(prefix, fd),
                    Err(Errno::NOENT) => {
                        self.mkdir_implicit(&parent, name, prefix)?;
                        created.push(prefix.to_vec());
                        let fd = self.resolve(prefix).map_err(|e| {
                            UnpackError::entry_io(prefix, "resolve the directory", e)
                        })?;
                        self.remember(prefix, fd)
                    }
                    Err(Errno::NOTDIR) => {
                        return Err(UnpackError::bad(prefix, PARENT_NOT_DIR));
                    }
                    Err(e) => {
                        return Err(UnpackError::entry_io(prefix, "resolve the directory", e));
                    }
                },
            };
            parent = fd;
        }
        Ok(Some(parent))
    }

    /// Creates a missing parent directory, mode 0755 whatever the umask.
    fn mkdir_implicit(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), UnpackError> {
        match rustix::fs::mkdirat(parent, OsStr::from_bytes(name), Mode::from(0o755)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(UnpackError::bad(path, PARENT_NOT_DIR));
            }
            Err(e) => return Err(UnpackError::entry_io(path, "create the directory", e)),
        }
        let d = openat(
            parent,
            OsStr::from_bytes(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::entry_io(path, "open the directory", e))?;
        rustix::fs::fchmod(&d, Mode::from(0o755))
            .map_err(|e| UnpackError::entry_io(path, "chmod", e))
    }

    fn remember(&mut self, dir: &[u8], fd: OwnedFd) -> Arc<OwnedFd> {
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        let fd = Arc::new(fd);
        self.cache.insert(dir.to_vec(), fd.clone());
        fd
    }

    /// Parent fd and last name of a cleaned, non-root path.
    pub(crate) fn parent_of<'p>(
        &mut self,
        path: &'p [u8],
        create: bool,
        created: &mut Vec<Vec<u8>>,
    ) -> Result<Option<Parent<'p>>, UnpackError> {
        let (dir, name) = split(path);
        let fd = self.dir(dir, create, created).map_err(|e| match e {
            UnpackError::BadEntry {
                path: parent,
                reason,
            } => UnpackError::BadParent {
                path: crate::error::show(path),
                parent,
                reason,
            },
            UnpackError::EntryIo {
                path: parent,
                action,
                source,
            } if parent != crate::error::show(path) => UnpackError::EntryIo {
                path: crate::error::show(path),
                action,
                source: std::io::Error::new(source.kind(), format!("parent {parent:?}: {source}")),
            },
            e => e,
        })?;
        Ok(fd.map(|fd| (fd, name)))
    }

    /// Removes whatever is at `name` in `dirfd` (never following it); a directory goes with
    /// everything in it. Clears the cache when a directory or symlink went.
    pub(crate) fn remove_at(
        &mut self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<Removed, UnpackError> {
        let st = match statat(dirfd, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(Removed::Nothing),
            Err(e) => return Err(UnpackError::entry_io(path, "stat", e)),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            remove_tree(dirfd, name)
                .map_err(|e| UnpackError::entry_io(path, "remove the directory", e))?;
            self.invalidate();
            return Ok(Removed::Dir);
        }
        unlinkat(dirfd, OsStr::from_bytes(name), AtFlags::empty())
            .map_err(|e| UnpackError::entry_io(path, "remove", e))?;
        if ft == FileType::Symlink {
            self.invalidate();
        }
        Ok(Removed::NonDir)
    }

    /// `lsetxattr` on `name` in `dirfd` without following it, through `/proc/self/fd`.
    /// `Err(NOTSUP)` when `/proc` is not mounted.
    pub(crate) fn lsetxattr_at(
        &self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        xname: &[u8],
        value: &[u8],
    ) -> Result<(), Errno> {
        if self.proc_fd.is_none() {
            return Err(Errno::NOTSUP);
        }
        let mut p =
            format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(&dirfd)).into_bytes();
        p.extend_from_slice(name);
        rustix::fs::lsetxattr(
            OsStr::from_bytes(&p),
            OsStr::from_bytes(xname),
            value,
            XattrFlags::empty(),
        )
    }

    /// chmod of a device or fifo node `name` in `dirfd`, never following a symlink: the
    /// node is opened `O_PATH|O_NOFOLLOW` and changed through its `/proc/self/fd` link.
    pub(crate) fn chmod_node(
        &self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        mode: u32,
    ) -> Result<(), Errno> {
        let fd = openat(
            dirfd,
            OsStr::from_bytes(name),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(Errno::LOOP);
        }
        match &self.proc_fd {
            Some(proc_fd) => {
                let n = std::os::fd::AsRawFd::as_raw_fd(&fd).to_string();
                rustix::fs::chmodat(proc_fd, n.as_str(), Mode::from(mode), AtFlags::empty())
            }
            // Without /proc: the node was just created by us in a directory only we write,
            // and it was checked above not to be a symlink.
            None => rustix::fs::chmodat(
                dirfd,
                OsStr::from_bytes(name),
                Mode::from(mode),
                AtFlags::empty(),
            ),
        }
    }
}

/// Removes the directory `name` in `dirfd` and everything below it, never following a
/// symlink. Directories without write permission for their owner are made writable first
/// (rootless mode).
pub(crate) fn remove_tree(dirfd: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let fd = openat(
        dirfd,
        OsStr::from_bytes(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & 0o300 != 0o300 {
        let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & 0o7777 | 0o700));
    }
    let mut names: Vec<(Vec<u8>, bool)> = Vec::new();
    {
        let dir = rustix::fs::Dir::read_from(&fd)?;
        for entry in dir {
            let entry = entry?;
            let n = entry.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => {
                    statat(&fd, OsStr::from_bytes(n), AtFlags::SYMLINK_NOFOLLOW)
                        .map(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)?
                }
                _ => false,
            };
            names.push((n.to_vec(), is_dir));
        }
    }
    for (n, is_dir) in names {
        if is_dir {
            remove_tree(fd.as_fd(), &n)?;
        } else {
            match unlinkat(&fd, OsStr::from_bytes(&n), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
    }
    unlinkat(dirfd, OsStr::from_bytes(name), AtFlags::REMOVEDIR)
}

/// Removes a host directory tree (a temp dir of ours) safely: relative to its parent's fd,
/// never following symlinks inside. A missing directory is fine.
pub(crate) fn remove_host_tree(path: &Path) -> Result<(), UnpackError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let pfd = match rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(UnpackError::io("open", parent, e.into())),
    };
    match statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(UnpackError::io("stat", path, e.into())),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            remove_tree(pfd.as_fd(), name.as_bytes())
                .map_err(|e| UnpackError::io("remove", path, e.into()))
        }
        Ok(_) => unlinkat(&pfd, name, AtFlags::empty())
            .map_err(|e| UnpackError::io("remove", path, e.into())),
    }
}

/// Timestamps with access = modification = `t`.
pub(crate) fn times(t: crate::tar::Timestamp) -> Timestamps {
    let ts = rustix::fs::Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos),
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// The `user.rootlesscontainers` payload for an owner: a protobuf `Resource { uint32 uid = 1;
/// uint32 gid = 2; }` where 4294967295 means "unchanged" (that is, 0); `None` for 0:0.
pub fn rootless_payload(uid: u32, gid: u32) -> Option<Vec<u8>> {
    if uid == 0 && gid == 0 {
        return None;
    }
    let noop = u32::MAX;
    let mut out = Vec::with_capacity(12);
    for (tag, v) in [
        (0x08u8, if uid == 0 { noop } else { uid }),
        (0x10, if gid == 0 { noop } else { gid }),
    ] {
        out.push(tag);
        let mut v = v;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_payloads() {
        assert_eq!(rootless_payload(0, 0), None);
        assert_eq!(
            rootless_payload(1000, 1000),
            Some(vec![0x08, 0xe8, 0x07, 0x10, 0xe8, 0x07])
        );
        assert_eq!(
            rootless_payload(1000, 0),
            Some(vec![0x08, 0xe8, 0x07, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f])
        );
    }

    #[test]
    fn dir_creation_and_removal() {
        let t = tempfile::tempdir().unwrap();
        let mut r = RootFd::open(t.path()).unwrap();
        let mut created = Vec::new();
        r.dir(b"a/b/c", true, &mut created).unwrap().unwrap();
        assert_eq!(created, [&b"a"[..], b"a/b", b"a/b/c"]);
        assert!(t.path().join("a/b/c").is_dir());
        std::os::unix::fs::symlink("/a/b", t.path().join("s")).unwrap();
        created.clear();
        // An absolute symlink resolves inside the root.
        r.dir(b"s/c/d", true, &mut created).unwrap().unwrap();
        assert_eq!(created, [&b"s/c/d"[..]]);
        assert!(t.path().join("a/b/c/d").is_dir());
        let root = r.root.clone();
        assert_eq!(r.remove_at(root.as_fd(), b"a", b"a").unwrap(), Removed::Dir);
        assert!(!t.path().join("a").exists());
        assert!(r.dir(b"s/c", false, &mut created).unwrap().is_none());
    }
}
