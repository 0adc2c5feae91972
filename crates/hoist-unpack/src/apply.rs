//! Applying layers to a directory: [`Rootfs`].
//!
//! Each layer is read in one streaming pass ([`LayerStream`] → [`TarReader`]) and its entries
//! are written with the primitives of `fsops`, which never leave the root. The diff ID is
//! checked at the end of the pass; callers apply into a temp directory and publish it only
//! when every layer checked out.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use hoist_types::{BlobKind, Digest, MediaType, Progress, ProgressEvent};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, XattrFlags, openat, statat};
use rustix::io::Errno;

use crate::fsops::{ROOTLESS_XATTR, Removed, RootFd, rootless_payload, times};
use crate::options::{WhiteoutMode, map_id};
use crate::path::{join, subtree_range};
use crate::stream::{LayerStream, Pumped, piped};
use crate::tar::{Entry, EntryKind, TarReader, Timestamp};
use crate::whiteout::{self, Whiteout};
use crate::{UnpackError, UnpackOptions};

/// File data is copied through a buffer of this size.
const COPY_BUFFER: usize = 1 << 20;
/// The overlayfs opaque-directory xattr.
pub const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";

/// A layer to apply: what its blob is and what it must hash to.
#[derive(Debug, Clone, Copy)]
pub struct LayerInput<'a> {
    /// The blob digest (for messages and progress).
    pub digest: &'a Digest,
    /// The blob's media type (compression).
    pub media_type: &'a MediaType,
    /// The diff ID from the config.
    pub diff_id: &'a Digest,
    /// The compressed size (for progress).
    pub size: u64,
}

/// What applying one layer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries applied (whiteouts included).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Whiteouts and opaque markers.
    pub whiteouts: u64,
    /// Decompressed bytes (the tar stream).
    pub tar_bytes: u64,
    /// Compressed bytes read.
    pub blob_bytes: u64,
    /// Device nodes skipped (rootless mode).
    pub skipped_devices: u64,
    /// Xattrs that could not be set (rootless mode, or a filesystem without them).
    pub skipped_xattrs: u64,
}

#[derive(Default)]
struct LayerState {
    /// Paths written by this layer (implicit parents included).
    written: BTreeSet<Vec<u8>>,
    /// Directory times, set when the layer is done.
    dir_times: Vec<(Vec<u8>, Timestamp)>,
    /// Overlay form: paths holding a whiteout device written by this layer.
    whiteouts: HashSet<Vec<u8>>,
    stats: LayerStats,
    created: Vec<Vec<u8>>,
}

impl LayerState {
    fn written_at_or_below(&self, p: &[u8]) -> bool {
        self.written.contains(p) || self.written.range(subtree_range(p)).next().is_some()
    }

    fn note_created(&mut self) {
        for c in self.created.drain(..) {
            self.written.insert(c);
        }
    }
}

/// A directory that layers are applied to, in order.
pub struct Rootfs {
    fd: RootFd,
    opts: UnpackOptions,
    /// Rootless: final modes of directories, set by [`Rootfs::finish`].
    dir_modes: BTreeMap<Vec<u8>, u32>,
    /// Rootless: device nodes skipped (hardlinks to them are skipped too).
    skipped: HashSet<Vec<u8>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Rootfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rootfs")
            .field("root", &self.fd.host())
            .field("rootless", &self.opts.rootless)
            .finish()
    }
}

fn no_follow_dir() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Rootfs {
    /// Prepares to apply layers to the existing directory `dir`.
    pub fn open(dir: &Path, opts: &UnpackOptions) -> Result<Rootfs, UnpackError> {
        if opts.rootless && opts.whiteouts == WhiteoutMode::Overlay {
            return Err(UnpackError::Unsupported {
                what: "overlayfs-form whiteouts in rootless mode (they are device nodes and trusted.* xattrs)",
            });
        }
        Ok(Rootfs {
            fd: RootFd::open(dir)?,
            opts: opts.clone(),
            dir_modes: BTreeMap::new(),
            skipped: HashSet::new(),
            buf: vec![0u8; COPY_BUFFER],
        })
    }

    /// The options in use.
    pub fn options(&self) -> &UnpackOptions {
        &self.opts
    }

    /// Applies one layer blob in one streaming pass and checks its diff ID. On any error the
    /// directory is left half-written: discard it.
    pub fn apply_layer<R: Read + Send>(
        &mut self,
        blob: R,
        layer: LayerInput<'_>,
        progress: &dyn Progress,
    ) -> Result<LayerStats, UnpackError> {
        progress.event(&ProgressEvent::BlobStart {
            digest: layer.digest,
            size: layer.size,
            kind: BlobKind::Layer,
            endpoint: "unpack",
        });
        let stream = LayerStream::open(
            blob,
            layer.media_type,
            layer.diff_id.algorithm(),
            &self.opts.limits,
            Some(layer.digest),
            progress,
        )?;
        // Every new layer may resolve paths differently.
        self.fd.invalidate();
        let limits = self.opts.limits.clone();
        let (mut st, pumped) = piped(stream, &limits, |tar| {
            let mut st = LayerState::default();
            while let Some(e) = tar.next_entry()? {
                st.stats.entries += 1;
                self.apply_entry(&e, tar, &mut st)?;
            }
            self.finish_layer(&mut st);
            Ok(st)
        })?;
        let Pumped {
            digest: actual,
            total,
            compressed,
        } = pumped;
        if &actual != layer.diff_id {
            return Err(UnpackError::DiffIdMismatch {
                expected: layer.diff_id.clone(),
                actual,
            });
        }
        st.stats.tar_bytes = total;
        st.stats.blob_bytes = compressed;
        if st.stats.skipped_devices > 0 || st.stats.skipped_xattrs > 0 {
            let message = format!(
                "warning: layer {}: skipped {} device nodes and {} xattrs that need root",
                layer.digest.short(),
                st.stats.skipped_devices,
                st.stats.skipped_xattrs
            );
            progress.event(&ProgressEvent::Status { message: &message });
        }
        progress.event(&ProgressEvent::BlobDone {
            digest: layer.digest,
            size: layer.size,
            kind: BlobKind::Layer,
            skipped: false,
        });
        Ok(st.stats)
    }

    /// Finishes: in rootless mode, gives directories their final modes (deepest first).
    pub fn finish(mut self) -> Result<(), UnpackError> {
        let modes = std::mem::take(&mut self.dir_modes);
        for (path, mode) in modes.iter().rev() {
            if let Some(fd) = self.open_dir_nofollow(path) {
                rustix::fs::fchmod(&fd, Mode::from(*mode))
                    .map_err(|e| UnpackError::entry_io(path, "chmod", e))?;
            }
        }
        Ok(())
    }

    fn open_dir_nofollow(&mut self, path: &[u8]) -> Option<OwnedFd> {
        if path.is_empty() {
            return openat(self.fd.root_fd(), ".", no_follow_dir(), Mode::empty()).ok();
        }
        let mut created = Vec::new();
        let (pfd, name) = self.fd.parent_of(path, false, &mut created).ok()??;
        openat(
            &*pfd,
            OsStr::from_bytes(name),
            no_follow_dir(),
            Mode::empty(),
        )
        .ok()
    }

    fn finish_layer(&mut self, st: &mut LayerState) {
        for (path, t) in std::mem::take(&mut st.dir_times).iter().rev() {
            if let Some(fd) = self.open_dir_nofollow(path) {
                let _ = rustix::fs::futimens(&fd, &times(*t));
            }
        }
    }

    fn apply_entry<R: Read>(
        &mut self,
        e: &Entry,
        tar: &mut TarReader<R>,
        st: &mut LayerState,
    ) -> Result<(), UnpackError> {
        match whiteout::classify(&e.path).map_err(|p| UnpackError::bad(&e.path, p.as_str()))? {
            Whiteout::Meta => return Ok(()),
            Whiteout::Remove(target) => {
                st.stats.whiteouts += 1;
                return match self.opts.whiteouts {
                    WhiteoutMode::Apply => self.whiteout(&target, st),
                    WhiteoutMode::Overlay => self.overlay_whiteout(&target, st),
                };
            }
            Whiteout::Opaque(dir) => {
                st.stats.whiteouts += 1;
                return match self.opts.whiteouts {
                    WhiteoutMode::Apply => self.opaque(&dir, st),
                    WhiteoutMode::Overlay => self.overlay_opaque(&dir, st),
                };
            }
            Whiteout::None => {}
        }
        if e.path.is_empty() {
            if e.kind != EntryKind::Dir {
                return Err(UnpackError::bad(
                    b".",
                    "a non-directory entry would replace the root",
                ));
            }
            let fd = openat(self.fd.root_fd(), ".", no_follow_dir(), Mode::empty())
                .map_err(|err| UnpackError::entry_io(b".", "open the root", err))?;
            self.dir_meta(e, &fd, true, st)?;
            st.dir_times.push((Vec::new(), e.mtime));
            return Ok(());
        }
        let (pfd, name) = self
            .fd
            .parent_of(&e.path, true, &mut st.created)?
            .expect("created when missing");
        st.note_created();
        let pfd = pfd.as_fd();
        match &e.kind {
            EntryKind::File => self.file(e, pfd, name, tar, st)?,
            EntryKind::Dir => self.dir(e, pfd, name, st)?,
            EntryKind::Symlink(target) => {
                self.create(&e.path, pfd, name, |d, n| {
                    rustix::fs::symlinkat(OsStr::from_bytes(target), d, n)
                })?;
                self.node_meta(e, pfd, name, st)?;
            }
            EntryKind::Hardlink(target) if self.skipped.contains(target) => {
                st.stats.skipped_devices += 1;
                self.skipped.insert(e.path.clone());
                return Ok(());
            }
            EntryKind::Hardlink(target) => self.hardlink(e, target, pfd, name, st)?,
            EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => {
                if self.opts.rootless {
                    st.stats.skipped_devices += 1;
                    self.skipped.insert(e.path.clone());
                    return Ok(());
                }
                let ft = if matches!(e.kind, EntryKind::Char { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                let dev = rustix::fs::makedev(*major, *minor);
                self.create(&e.path, pfd, name, |d, n| {
                    rustix::fs::mknodat(d, n, ft, Mode::from(0o600), dev)
                })?;
                self.node_meta(e, pfd, name, st)?;
            }
            EntryKind::Fifo => {
                self.create(&e.path, pfd, name, |d, n| {
                    rustix::fs::mknodat(d, n, FileType::Fifo, Mode::from(0o600), 0)
                })?;
                self.node_meta(e, pfd, name, st)?;
            }
        }
        if !self.skipped.is_empty() {
            self.skipped.remove(&e.path);
        }
        st.written.insert(e.path.clone());
        Ok(())
    }

    /// Runs `make` at `name`; if something is there, removes it (never following it) and
    /// retries once.
    fn create(
        &mut self,
        path: &[u8],
        pfd: BorrowedFd<'_>,
        name: &[u8],
        make: impl Fn(BorrowedFd<'_>, &OsStr) -> Result<(), Errno>,
    ) -> Result<(), UnpackError> {
        match make(pfd, OsStr::from_bytes(name)) {
            Ok(()) => return Ok(()),
            Err(Errno::EXIST) => {}
            Err(err) => return Err(UnpackError::entry_io(path, "create", err)),
        }
        self.fd.remove_at(pfd, name, path)?;
        self.forget_modes_under(path);
        make(pfd, OsStr::from_bytes(name)).map_err(|err| UnpackError::entry_io(path, "create", err))
    }

    fn forget_modes_under(&mut self, path: &[u8]) {
        if self.dir_modes.is_empty() {
            return;
        }
        self.dir_modes.remove(path);
        let doomed: Vec<Vec<u8>> = self
            .dir_modes
            .range(subtree_range(path))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.dir_modes.remove(&k);
        }
    }

    fn ids(&self, e: &Entry) -> Result<(u32, u32), UnpackError> {
        let uid = map_id(&self.opts.uid_map, e.uid).ok_or_else(|| UnpackError::Unmapped {
            kind: "uid",
            id: e.uid,
            path: crate::error::show(&e.path),
        })?;
        let gid = map_id(&self.opts.gid_map, e.gid).ok_or_else(|| UnpackError::Unmapped {
            kind: "gid",
            id: e.gid,
            path: crate::error::show(&e.path),
        })?;
        Ok((uid, gid))
    }

    /// The mode to give a non-directory: rootless drops setuid and setgid.
    fn file_mode(&self, e: &Entry) -> u32 {
        if self.opts.rootless {
            e.mode & !0o6000
        } else {
            e.mode
        }
    }

    /// Whether an xattr from a layer is applied in this mode.
    fn xattr_wanted(&self, name: &[u8]) -> bool {
        !(self.opts.rootless && name == ROOTLESS_XATTR.as_bytes())
    }

    /// Sets the entry's xattrs (and, rootless, the ownership record) with `set`.
    fn xattrs(
        &self,
        e: &Entry,
        st: &mut LayerState,
        set: impl Fn(&[u8], &[u8]) -> Result<(), Errno>,
    ) -> Result<(), UnpackError> {
        for (name, value) in &e.xattrs {
            if !self.xattr_wanted(name) {
                continue;
            }
            match set(name, value) {
                Ok(()) => {}
                Err(Errno::NOTSUP | Errno::PERM)
                    if self.opts.rootless || !name.starts_with(b"user.") =>
                {
                    st.stats.skipped_xattrs += 1;
                }
                Err(Errno::NOTSUP) => st.stats.skipped_xattrs += 1,
                Err(err) => return Err(UnpackError::entry_io(&e.path, "set an xattr", err)),
            }
        }
        if self.opts.rootless
            && let Some(payload) = rootless_payload(e.uid, e.gid)
        {
            match set(ROOTLESS_XATTR.as_bytes(), &payload) {
                Ok(()) => {}
                // Symlinks cannot carry user.* xattrs; umoci skips them too.
                Err(Errno::PERM | Errno::NOTSUP) => st.stats.skipped_xattrs += 1,
                Err(err) => return Err(UnpackError::entry_io(&e.path, "record the owner", err)),
            }
        }
        Ok(())
    }

    /// Owner, xattrs, mode and times of a file or directory, through its fd.
    fn fd_meta(
        &self,
        e: &Entry,
        fd: &OwnedFd,
        mode: u32,
        st: &mut LayerState,
    ) -> Result<(), UnpackError> {
        if !self.opts.rootless {
            let (uid, gid) = self.ids(e)?;
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|err| UnpackError::entry_io(&e.path, "chown", err))?;
        }
        self.xattrs(e, st, |n, v| {
            rustix::fs::fsetxattr(fd, OsStr::from_bytes(n), v, XattrFlags::empty())
        })?;
        rustix::fs::fchmod(fd, Mode::from(mode))
            .map_err(|err| UnpackError::entry_io(&e.path, "chmod", err))
    }

    /// Owner, xattrs, mode and times of a symlink, device or fifo, without following it.
    fn node_meta(
        &self,
        e: &Entry,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        st: &mut LayerState,
    ) -> Result<(), UnpackError> {
        let n = OsStr::from_bytes(name);
        if !self.opts.rootless {
            let (uid, gid) = self.ids(e)?;
            rustix::fs::chownat(
                pfd,
                n,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|err| UnpackError::entry_io(&e.path, "chown", err))?;
        }
        self.xattrs(e, st, |xn, v| self.fd.lsetxattr_at(pfd, name, xn, v))?;
        if !matches!(e.kind, EntryKind::Symlink(_)) {
            self.fd
                .chmod_node(pfd, name, self.file_mode(e))
                .map_err(|err| UnpackError::entry_io(&e.path, "chmod", err))?;
        }
        rustix::fs::utimensat(pfd, n, &times(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|err| UnpackError::entry_io(&e.path, "set times", err))
    }

    fn file<R: Read>(
        &mut self,
        e: &Entry,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        tar: &mut TarReader<R>,
        st: &mut LayerState,
    ) -> Result<(), UnpackError> {
        let open = |d: BorrowedFd<'_>, n: &OsStr| {
            openat(
                d,
                n,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from(0o600),
            )
        };
        let fd = match open(pfd, OsStr::from_bytes(name)) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                self.fd.remove_at(pfd, name, &e.path)?;
                self.forget_modes_under(&e.path);
                open(pfd, OsStr::from_bytes(name))
                    .map_err(|err| UnpackError::entry_io(&e.path, "create", err))?
            }
            Err(err) => return Err(UnpackError::entry_io(&e.path, "create", err)),
        };
        let mut file = std::fs::File::from(fd);
        let mut left = e.size;
        while left > 0 {
            // A sparse file's holes stay holes: passed over, the size set at the end.
            let hole = tar.skip_hole();
            if hole > 0 {
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Current(hole as i64))
                    .map_err(|err| UnpackError::entry_io(&e.path, "seek", err))?;
                left -= hole;
                continue;
            }
            let n = tar.read_data(&mut self.buf)?;
            std::io::Write::write_all(&mut file, &self.buf[..n])
                .map_err(|err| UnpackError::entry_io(&e.path, "write", err))?;
            left -= n as u64;
        }
        if tar.is_sparse() {
            file.set_len(e.size)
                .map_err(|err| UnpackError::entry_io(&e.path, "set the size", err))?;
        }
        let fd = OwnedFd::from(file);
        self.fd_meta(e, &fd, self.file_mode(e), st)?;
        rustix::fs::futimens(&fd, &times(e.mtime))
            .map_err(|err| UnpackError::entry_io(&e.path, "set times", err))?;
        st.stats.files += 1;
        Ok(())
    }

    fn dir(
        &mut self,
        e: &Entry,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        st: &mut LayerState,
    ) -> Result<(), UnpackError> {
        let n = OsStr::from_bytes(name);
        let merged = match rustix::fs::mkdirat(pfd, n, Mode::from(0o700)) {
            Ok(()) => false,
            Err(Errno::EXIST) => {
                let st_ = statat(pfd, n, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| UnpackError::entry_io(&e.path, "stat", err))?;
                if FileType::from_raw_mode(st_.st_mode) == FileType::Directory {
                    true
                } else {
                    self.fd.remove_at(pfd, name, &e.path)?;
                    rustix::fs::mkdirat(pfd, n, Mode::from(0o700)).map_err(|err| {
                        UnpackError::entry_io(&e.path, "create the directory", err)
                    })?;
                    false
                }
            }
            Err(err) => return Err(UnpackError::entry_io(&e.path, "create the directory", err)),
        };
        let fd = openat(pfd, n, no_follow_dir(), Mode::empty())
            .map_err(|err| UnpackError::entry_io(&e.path, "open the directory", err))?;
        self.dir_meta(e, &fd, merged, st)?;
        if self.opts.whiteouts == WhiteoutMode::Overlay && st.whiteouts.contains(&e.path) {
            // Whited out earlier in this layer, then created again: lower content stays
            // hidden.
            rustix::fs::fsetxattr(&fd, OVERLAY_OPAQUE, b"y", XattrFlags::empty())
                .map_err(|err| UnpackError::entry_io(&e.path, "set trusted.overlay.opaque", err))?;
        }
        st.dir_times.push((e.path.clone(), e.mtime));
        Ok(())
    }

    fn dir_meta(
        &mut self,
        e: &Entry,
        fd: &OwnedFd,
        merged: bool,
        st: &mut LayerState,
    ) -> Result<(), UnpackError> {
        if merged {
            // The new entry's xattrs replace the old directory's (the host's SELinux label
            // and our own overlay markers stay).
            clear_xattrs(fd, &e.xattrs);
        }
        let mode = if self.opts.rootless {
            self.dir_modes.insert(e.path.clone(), e.mode);
            e.mode | 0o700
        } else {
            e.mode
        };
        self.fd_meta(e, fd, mode, st)
    }

    fn hardlink(
        &mut self,
        e: &Entry,
        target: &[u8],
        pfd: BorrowedFd<'_>,
        name: &[u8],
        st: &mut LayerState,
    ) -> Result<(), UnpackError> {
        let mut created = Vec::new();
        let Some((tfd, tname)) = self.fd.parent_of(target, false, &mut created)? else {
            return Err(UnpackError::bad(&e.path, "hardlink target does not exist"));
        };
        let tst = match statat(&*tfd, OsStr::from_bytes(tname), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::NOENT) => {
                return Err(UnpackError::bad(&e.path, "hardlink target does not exist"));
            }
            Err(err) => {
                return Err(UnpackError::entry_io(
                    &e.path,
                    "stat the hardlink target",
                    err,
                ));
            }
        };
        if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
            return Err(UnpackError::bad(&e.path, "hardlink to a directory"));
        }
        let link = |d: BorrowedFd<'_>, n: &OsStr| {
            rustix::fs::linkat(&*tfd, OsStr::from_bytes(tname), d, n, AtFlags::empty())
        };
        match link(pfd, OsStr::from_bytes(name)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let same = statat(pfd, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| s.st_ino == tst.st_ino && s.st_dev == tst.st_dev);
                if !same {
                    if self.fd.remove_at(pfd, name, &e.path)? == Removed::Dir {
                        self.forget_modes_under(&e.path);
                    }
                    // The target may have been reached through what was just removed.
                    let Some((tfd2, tname2)) = self.fd.parent_of(target, false, &mut created)?
                    else {
                        return Err(UnpackError::bad(&e.path, "hardlink target does not exist"));
                    };
                    rustix::fs::linkat(
                        &*tfd2,
                        OsStr::from_bytes(tname2),
                        pfd,
                        OsStr::from_bytes(name),
                        AtFlags::empty(),
                    )
                    .map_err(|err| UnpackError::entry_io(&e.path, "create the hardlink", err))?;
                }
            }
            Err(Errno::NOENT) => {
                return Err(UnpackError::bad(&e.path, "hardlink target does not exist"));
            }
            Err(err) => return Err(UnpackError::entry_io(&e.path, "create the hardlink", err)),
        }
        // A hardlink shares its target's inode: its header's metadata is not applied (that
        // would chmod the target, or through a symlink).
        let _ = st;
        Ok(())
    }

    /// `.wh.NAME` in a flattened tree: remove NAME of lower layers.
    fn whiteout(&mut self, target: &[u8], st: &mut LayerState) -> Result<(), UnpackError> {
        if st.written_at_or_below(target) {
            // Content of this same layer stays; only lower content below it goes.
            return self.remove_lower_below(target, st);
        }
        let mut created = Vec::new();
        let Some((pfd, name)) = self.fd.parent_of(target, false, &mut created)? else {
            return Ok(());
        };
        self.fd.remove_at(pfd.as_fd(), name, target)?;
        self.forget_modes_under(target);
        Ok(())
    }

    /// `.wh..wh..opq` in a flattened tree: remove everything below DIR that this layer did
    /// not write.
    fn opaque(&mut self, dir: &[u8], st: &mut LayerState) -> Result<(), UnpackError> {
        self.remove_lower_below(dir, st)
    }

    fn remove_lower_below(&mut self, dir: &[u8], st: &mut LayerState) -> Result<(), UnpackError> {
        let Some(fd) = self.open_dir_nofollow(dir) else {
            return Ok(()); // missing, or not a directory: nothing below it
        };
        let mut children: Vec<(Vec<u8>, bool)> = Vec::new();
        let listing = rustix::fs::Dir::read_from(&fd)
            .map_err(|err| UnpackError::entry_io(dir, "list", err))?;
        for entry in listing {
            let entry = entry.map_err(|err| UnpackError::entry_io(dir, "list", err))?;
            let n = entry.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => statat(&fd, OsStr::from_bytes(n), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory),
                _ => false,
            };
            children.push((n.to_vec(), is_dir));
        }
        for (name, is_dir) in children {
            let path = join(dir, &name);
            if st.written_at_or_below(&path) {
                if is_dir {
                    self.remove_lower_below(&path, st)?;
                }
            } else {
                self.fd.remove_at(fd.as_fd(), &name, &path)?;
                self.forget_modes_under(&path);
            }
        }
        Ok(())
    }

    /// `.wh.NAME` in overlay form: a 0/0 character device (or, when this layer also wrote
    /// below NAME, an opaque directory).
    fn overlay_whiteout(&mut self, target: &[u8], st: &mut LayerState) -> Result<(), UnpackError> {
        if st.written.contains(target) {
            let is_dir = self.open_dir_nofollow(target).is_some();
            if is_dir {
                return self.overlay_opaque(target, st);
            }
            return Ok(());
        }
        if st.written_at_or_below(target) {
            return self.overlay_opaque(target, st);
        }
        let (pfd, name) = self
            .fd
            .parent_of(target, true, &mut st.created)?
            .expect("created when missing");
        st.note_created();
        self.create(target, pfd.as_fd(), name, |d, n| {
            rustix::fs::mknodat(
                d,
                n,
                FileType::CharacterDevice,
                Mode::from(0o600),
                rustix::fs::makedev(0, 0),
            )
        })?;
        st.whiteouts.insert(target.to_vec());
        Ok(())
    }

    /// `.wh..wh..opq` in overlay form: the directory gets `trusted.overlay.opaque=y`.
    fn overlay_opaque(&mut self, dir: &[u8], st: &mut LayerState) -> Result<(), UnpackError> {
        let fd = if dir.is_empty() {
            None
        } else {
            let (pfd, name) = self
                .fd
                .parent_of(dir, true, &mut st.created)?
                .expect("created when missing");
            st.note_created();
            let n = OsStr::from_bytes(name);
            match rustix::fs::mkdirat(&*pfd, n, Mode::from(0o755)) {
                Ok(()) => {
                    let d = openat(&*pfd, n, no_follow_dir(), Mode::empty())
                        .map_err(|err| UnpackError::entry_io(dir, "open the directory", err))?;
                    rustix::fs::fchmod(&d, Mode::from(0o755))
                        .map_err(|err| UnpackError::entry_io(dir, "chmod", err))?;
                    st.written.insert(dir.to_vec());
                }
                Err(Errno::EXIST) => {}
                Err(err) => return Err(UnpackError::entry_io(dir, "create the directory", err)),
            }
            Some(
                openat(&*pfd, n, no_follow_dir(), Mode::empty())
                    .map_err(|err| UnpackError::entry_io(dir, "open the opaque directory", err))?,
            )
        };
        let fd = match fd {
            Some(fd) => fd,
            None => openat(self.fd.root_fd(), ".", no_follow_dir(), Mode::empty())
                .map_err(|err| UnpackError::entry_io(b".", "open the root", err))?,
        };
        rustix::fs::fsetxattr(&fd, OVERLAY_OPAQUE, b"y", XattrFlags::empty())
            .map_err(|err| UnpackError::entry_io(dir, "set trusted.overlay.opaque", err))
    }
}

/// Removes the xattrs of `fd` that `keep` does not name, except `security.selinux` and
/// `trusted.overlay.*`. Best effort.
fn clear_xattrs(fd: &OwnedFd, keep: &[(Vec<u8>, Vec<u8>)]) {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::flistxattr(fd, &mut names[..]) else {
        return;
    };
    for name in names[..n].split(|b| *b == 0).filter(|x| !x.is_empty()) {
        if name == b"security.selinux"
            || name.starts_with(b"trusted.overlay.")
            || keep.iter().any(|(k, _)| k == name)
        {
            continue;
        }
        let _ = rustix::fs::fremovexattr(fd, OsStr::from_bytes(name));
    }
}
