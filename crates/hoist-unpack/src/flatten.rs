//! Flattened export: all layers merged into one tar, whiteouts applied, streamed.
//!
//! Two passes over the layer blobs, nothing extracted to disk:
//!
//! 1. **Model.** Every layer is read with the one parser and applied to an in-memory tree
//!    (paths → directories or leaves sharing "inodes", so hardlinks stay hardlinks) by the
//!    same rules as the filesystem unpack: symlinks in parent paths resolve inside the root,
//!    an entry replaces what was at its path, whiteouts and opaque directories hide lower
//!    layers only, hardlink targets must exist. Each layer's diff ID is checked.
//! 2. **Emit.** The layers are read again; each node of the final tree is written at the
//!    position of the entry that created it (so hardlink targets precede their links and a
//!    file's data is streamed straight from its layer), under its resolved path, with its
//!    final metadata.
//!
//! The output is what `hoist unpack` would produce, as a tar.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::path::Path;

use hoist_store::{ImageRecord, Store};
use hoist_types::{Progress, ProgressEvent};

use crate::image::check_layers;
use crate::path::{join, split, subtree_range};
use crate::stream::{ChannelReader, LayerStream, piped};
use crate::tar::{Entry, EntryKind, TarReader, Timestamp};
use crate::whiteout::{self, Whiteout};
use crate::writer::{Header, TarWriter};
use crate::{Limits, UnpackError};

/// Symlinks followed in one lookup before `ELOOP`, as Linux.
const MAX_LINKS: usize = 40;

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Entries in the output.
    pub entries: u64,
    /// Bytes of the output tar.
    pub bytes: u64,
}

/// A position in the layer stream: (layer, entry index).
pub(crate) type Pos = (usize, u64);

#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A directory: its metadata (`None`: created implicitly), when it was created, the
    /// time of the entry that created it, and (overlay form) whether it is opaque.
    Dir {
        meta: Option<Box<Entry>>,
        born: Pos,
        mtime: Timestamp,
        opaque: bool,
    },
    /// A non-directory: an index into `Model::inodes`.
    Leaf(usize),
}

#[derive(Debug)]
pub(crate) struct Inode {
    pub(crate) entry: Entry,
    pub(crate) born: Pos,
}

/// The in-memory tree of pass 1.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) nodes: BTreeMap<Vec<u8>, Node>,
    pub(crate) inodes: Vec<Inode>,
    pub(crate) root_meta: Option<(Box<Entry>, Pos)>,
    /// Overlay form: the root directory is opaque.
    pub(crate) root_opaque: bool,
    /// Paths written by the current layer (as written in the tar, as the unpack does).
    written: BTreeSet<Vec<u8>>,
    /// Overlay form (one layer alone, whiteouts kept as overlayfs marks) instead of
    /// whiteouts applied.
    overlay: bool,
    /// Overlay form: paths holding a whiteout written by the current layer.
    whiteouts: HashSet<Vec<u8>>,
    /// The time of the entry being applied (for the directories it creates implicitly).
    cur_mtime: Timestamp,
}

fn parent_error(path: &[u8], parent: &[u8]) -> UnpackError {
    UnpackError::BadParent {
        path: crate::error::show(path),
        parent: crate::error::show(parent),
        reason: "is not a directory inside the root (a file, or a symlink that leads nowhere inside it)",
    }
}

impl Model {
    fn written_at_or_below(&self, p: &[u8]) -> bool {
        self.written.contains(p) || self.written.range(subtree_range(p)).next().is_some()
    }

    /// Resolves a directory path inside the root, following symlinks as `openat2(
    /// RESOLVE_IN_ROOT)` does; missing literal components are created (when `create`) as
    /// the unpack creates missing parents. Returns the resolved path, or `None` when missing
    /// and not created.
    fn resolve_dir(
        &mut self,
        dir: &[u8],
        create: Option<Pos>,
        entry: &[u8],
    ) -> Result<Option<Vec<u8>>, UnpackError> {
        let mut stack: Vec<Vec<u8>> = Vec::new();
        let mut queue: VecDeque<(Vec<u8>, bool)> = dir
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .map(|c| (c.to_vec(), true))
            .collect();
        let mut links = 0;
        let mut literal_prefix_len = 0usize;
        while let Some((c, literal)) = queue.pop_front() {
            if literal {
                literal_prefix_len += c.len() + usize::from(literal_prefix_len > 0);
            }
            if c == b"." {
                continue;
            }
            if c == b".." {
                stack.pop();
                continue;
            }
            let mut cur = stack.join(&b'/');
            if !cur.is_empty() {
                cur.push(b'/');
            }
            cur.extend_from_slice(&c);
            match self.nodes.get(&cur) {
                Some(Node::Dir { .. }) => stack.push(c),
                Some(Node::Leaf(i)) => {
                    let EntryKind::Symlink(target) = &self.inodes[*i].entry.kind else {
                        return Err(parent_error(
                            entry,
                            &dir[..literal_prefix_len.min(dir.len())],
                        ));
                    };
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(UnpackError::entry_io(
                            entry,
                            "resolve the directory",
                            std::io::Error::from_raw_os_error(40),
                        ));
                    }
                    if target.starts_with(b"/") {
                        stack.clear();
                    }
                    let mut expanded: VecDeque<(Vec<u8>, bool)> = target
                        .split(|b| *b == b'/')
                        .filter(|x| !x.is_empty())
                        .map(|x| (x.to_vec(), false))
                        .collect();
                    expanded.extend(queue.drain(..));
                    queue = expanded;
                }
                None => {
                    let Some(born) = create else {
                        return Ok(None);
                    };
                    if !literal {
                        return Err(parent_error(
                            entry,
                            &dir[..literal_prefix_len.min(dir.len())],
                        ));
                    }
                    let meta = self.implicit_dir(&cur);
                    self.nodes.insert(
                        cur.clone(),
                        Node::Dir {
                            meta: Some(Box::new(meta)),
                            born,
                            mtime: self.cur_mtime,
                            opaque: false,
                        },
                    );
                    self.written.insert(dir[..literal_prefix_len].to_vec());
                    stack.push(c);
                }
            }
        }
        Ok(Some(stack.join(&b'/')))
    }

    /// The group a new node at resolved path `real` gets from the kernel when the unpack
    /// creates it without a chown: its parent's, when the parent is setgid; else root's.
    fn inherited_gid(&self, real: &[u8]) -> u32 {
        let (parent, _) = split(real);
        let meta = if parent.is_empty() {
            self.root_meta.as_ref().map(|(e, _)| e.as_ref())
        } else {
            match self.nodes.get(parent) {
                Some(Node::Dir { meta: Some(e), .. }) => Some(e.as_ref()),
                _ => None,
            }
        };
        meta.filter(|e| e.mode & 0o2000 != 0).map_or(0, |e| e.gid)
    }

    /// A directory the unpack creates implicitly (a missing parent, an opaque marker's
    /// directory): 0755, root's (the group as [`Model::inherited_gid`]), the time of the
    /// entry being applied.
    fn implicit_dir(&self, real: &[u8]) -> Entry {
        Entry {
            path: real.to_vec(),
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: self.inherited_gid(real),
            mtime: self.cur_mtime,
            xattrs: Vec::new(),
        }
    }

    /// Removes `p` and everything below it.
    fn remove_subtree(&mut self, p: &[u8]) {
        self.nodes.remove(p);
        let doomed: Vec<Vec<u8>> = self
            .nodes
            .range(subtree_range(p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Removes what is below the directory at resolved path `real` (literal path `lit`)
    /// that the current layer did not write, as the unpack's opaque handling does.
    fn remove_lower_below(&mut self, real: &[u8], lit: &[u8]) {
        let children: Vec<(Vec<u8>, bool)> = self
            .nodes
            .range(subtree_range(real))
            .filter(|(k, _)| !k[real.len() + usize::from(!real.is_empty())..].contains(&b'/'))
            .map(|(k, n)| (k.clone(), matches!(n, Node::Dir { .. })))
            .collect();
        for (child, is_dir) in children {
            let name = &child[real.len() + usize::from(!real.is_empty())..];
            let lit_child = join(lit, name);
            if self.written_at_or_below(&lit_child) {
                if is_dir {
                    self.remove_lower_below(&child, &lit_child);
                }
            } else {
                self.remove_subtree(&child);
            }
        }
    }

    /// Resolved path of a non-root path's parent + name; `None` when the parent is missing.
    fn locate(&mut self, path: &[u8], create: Option<Pos>) -> Result<Option<Vec<u8>>, UnpackError> {
        let (dir, name) = split(path);
        Ok(self.resolve_dir(dir, create, path)?.map(|d| join(&d, name)))
    }

    pub(crate) fn apply(&mut self, mut e: Entry, pos: Pos) -> Result<(), UnpackError> {
        self.cur_mtime = e.mtime;
        match whiteout::classify(&e.path).map_err(|p| UnpackError::bad(&e.path, p.as_str()))? {
            Whiteout::Meta => return Ok(()),
            Whiteout::Remove(target) if self.overlay => {
                return self.overlay_whiteout(&target, pos);
            }
            Whiteout::Opaque(dir) if self.overlay => return self.overlay_opaque(&dir, pos),
            Whiteout::Remove(target) => {
                if self.written_at_or_below(&target) {
                    if let Some(real) = self.dir_nofollow(&target)? {
                        self.remove_lower_below(&real, &target);
                    }
                    return Ok(());
                }
                if let Some(real) = self.locate(&target, None)? {
                    self.remove_subtree(&real);
                }
                return Ok(());
            }
            Whiteout::Opaque(dir) => {
                if let Some(real) = self.dir_nofollow(&dir)? {
                    self.remove_lower_below(&real, &dir);
                }
                return Ok(());
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
            let born = self.root_meta.as_ref().map_or(pos, |(_, b)| *b);
            self.root_meta = Some((Box::new(e), born));
            return Ok(());
        }
        let real = self
            .locate(&e.path, Some(pos))?
            .expect("created when missing");
        let lit = std::mem::take(&mut e.path);
        match &e.kind {
            EntryKind::Dir => {
                let (born, was_opaque) = match self.nodes.get(&real) {
                    Some(Node::Dir { born, opaque, .. }) => (*born, *opaque),
                    Some(Node::Leaf(_)) => {
                        self.remove_subtree(&real);
                        (pos, false)
                    }
                    None => (pos, false),
                };
                // Overlay form: whited out earlier in this layer, then created again, it
                // stays opaque (lower content stays hidden), as the unpack does.
                let opaque = was_opaque || (self.overlay && self.whiteouts.contains(&lit));
                e.path = real.clone();
                self.nodes.insert(
                    real,
                    Node::Dir {
                        mtime: e.mtime,
                        meta: Some(Box::new(e)),
                        born,
                        opaque,
                    },
                );
            }
            EntryKind::Hardlink(target) => {
                let inode = self.link_target(target, &lit)?;
                if !matches!(self.nodes.get(&real), Some(Node::Leaf(i)) if *i == inode) {
                    self.remove_subtree(&real);
                    // The target may have been below what was just removed.
                    let inode = self.link_target(target, &lit)?;
                    self.nodes.insert(real, Node::Leaf(inode));
                }
            }
            _ => {
                self.remove_subtree(&real);
                e.path = real.clone();
                self.inodes.push(Inode {
                    entry: e,
                    born: pos,
                });
                self.nodes.insert(real, Node::Leaf(self.inodes.len() - 1));
            }
        }
        self.written.insert(lit);
        Ok(())
    }

    /// A directory opened without following its last component (`None` when missing, not
    /// a directory, or a symlink).
    fn dir_nofollow(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>, UnpackError> {
        if path.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let (dir, name) = split(path);
        let Ok(Some(d)) = self.resolve_dir(dir, None, path) else {
            return Ok(None);
        };
        let real = join(&d, name);
        Ok(matches!(self.nodes.get(&real), Some(Node::Dir { .. })).then_some(real))
    }

    /// `.wh.NAME` in overlay form, as the unpack's: a 0/0 character device (mode 0600,
    /// root's, the whiteout's time), or an opaque directory when this layer also wrote
    /// below NAME.
    fn overlay_whiteout(&mut self, target: &[u8], pos: Pos) -> Result<(), UnpackError> {
        if self.written.contains(target) {
            if self.dir_nofollow(target)?.is_some() {
                return self.overlay_opaque(target, pos);
            }
            return Ok(());
        }
        if self.written_at_or_below(target) {
            return self.overlay_opaque(target, pos);
        }
        let real = self
            .locate(target, Some(pos))?
            .expect("created when missing");
        self.remove_subtree(&real);
        let gid = self.inherited_gid(&real);
        self.inodes.push(Inode {
            entry: Entry {
                path: real.clone(),
                kind: EntryKind::Char { major: 0, minor: 0 },
                size: 0,
                mode: 0o600,
                uid: 0,
                gid,
                mtime: self.cur_mtime,
                xattrs: Vec::new(),
            },
            born: pos,
        });
        self.nodes.insert(real, Node::Leaf(self.inodes.len() - 1));
        self.whiteouts.insert(target.to_vec());
        Ok(())
    }

    /// `.wh..wh..opq` in overlay form: the directory (created 0755 when missing) is marked
    /// opaque.
    fn overlay_opaque(&mut self, dir: &[u8], pos: Pos) -> Result<(), UnpackError> {
        if dir.is_empty() {
            self.root_opaque = true;
            return Ok(());
        }
        let real = self.locate(dir, Some(pos))?.expect("created when missing");
        match self.nodes.get_mut(&real) {
            Some(Node::Dir { opaque, .. }) => *opaque = true,
            Some(Node::Leaf(_)) => {
                return Err(UnpackError::entry_io(
                    dir,
                    "open the opaque directory",
                    std::io::Error::from_raw_os_error(20),
                ));
            }
            None => {
                let meta = self.implicit_dir(&real);
                self.nodes.insert(
                    real,
                    Node::Dir {
                        meta: Some(Box::new(meta)),
                        born: pos,
                        mtime: self.cur_mtime,
                        opaque: true,
                    },
                );
                self.written.insert(dir.to_vec());
            }
        }
        Ok(())
    }

    fn link_target(&mut self, target: &[u8], path: &[u8]) -> Result<usize, UnpackError> {
        let missing = || UnpackError::bad(path, "hardlink target does not exist");
        let real = self.locate(target, None)?.ok_or_else(missing)?;
        match self.nodes.get(&real) {
            Some(Node::Leaf(i)) => Ok(*i),
            Some(Node::Dir { .. }) => Err(UnpackError::bad(path, "hardlink to a directory")),
            None => Err(missing()),
        }
    }
}

/// What pass 2 writes at one position.
#[derive(Debug, Default)]
struct Plan {
    /// Directories created here (implicitly or by the entry), parents first.
    dirs: Vec<Vec<u8>>,
    /// The inode born here and all its final paths (sorted; the first carries the data).
    leaf: Option<(usize, Vec<Vec<u8>>)>,
    root: bool,
}

/// Streams a flattened tar of `image` (all layers merged, whiteouts applied) to `out`. Each
/// layer is read twice (model, then emit) and its diff ID checked in the first pass, before
/// anything is written.
pub fn export<W: Write>(
    store: &Store,
    image: &ImageRecord,
    out: W,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<ExportReport, UnpackError> {
    check_layers(image)?;
    export_layers(store, image, image.layers.len(), out, limits, progress)
}

/// Where a pass reads the layer blobs from: `open(i)` gives a reader of layer `i`'s blob
/// (an index into the image's layers) from its first byte: a blob of the store, or one
/// still downloading, followed as it grows. What it reads is checked against the layer's
/// diff ID.
pub type OpenBlob<'a> = dyn Fn(usize) -> Result<Box<dyn Read + Send + 'a>, UnpackError> + Sync + 'a;

/// Layers `range` of `image`, opened from the store once (the passes read them through
/// positioned readers, see [`read_at`]).
pub(crate) fn store_blobs(
    store: &Store,
    image: &ImageRecord,
    range: std::ops::Range<usize>,
) -> Result<Vec<std::fs::File>, UnpackError> {
    check_layers(image)?;
    let count = image.layers.len();
    range
        .map(|i| {
            let digest = &image
                .layers
                .get(i)
                .ok_or_else(|| UnpackError::LayerCount {
                    image: image.id.clone(),
                    layers: count,
                    diff_ids: image.diff_ids.len(),
                })?
                .digest;
            store
                .open_blob(digest)
                .map_err(|e| UnpackError::from(e).in_layer(i + 1, digest))
        })
        .collect()
}

/// A reader of `file` from its first byte, with its own offset (so threads, and the two
/// passes, share one descriptor).
pub(crate) fn read_at(file: &std::fs::File) -> Box<dyn Read + Send + '_> {
    Box::new(ReadAt { file, pos: 0 })
}

/// Positioned reads of a file shared by threads.
struct ReadAt<'a> {
    file: &'a std::fs::File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads layer `i` of `image` from `blob` with `consume` (decompressing on a second
/// thread) and checks its diff ID.
pub(crate) fn read_layer<R: Read + Send, T>(
    image: &ImageRecord,
    i: usize,
    blob: R,
    limits: &Limits,
    progress: &dyn Progress,
    consume: impl FnOnce(&mut TarReader<ChannelReader>) -> Result<T, UnpackError>,
) -> Result<T, UnpackError> {
    let desc = &image.layers[i];
    let stream = LayerStream::open(
        blob,
        &desc.media_type,
        image.diff_ids[i].algorithm(),
        limits,
        Some(&desc.digest),
        progress,
    )?;
    let (v, pumped) = piped(stream, limits, consume)?;
    if pumped.digest != image.diff_ids[i] {
        return Err(UnpackError::DiffIdMismatch {
            expected: image.diff_ids[i].clone(),
            actual: pumped.digest,
        });
    }
    Ok(v)
}

/// Like [`export`], for the first `count` layers of `image` only.
pub fn export_layers<W: Write>(
    store: &Store,
    image: &ImageRecord,
    count: usize,
    out: W,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<ExportReport, UnpackError> {
    check_layers(image)?;
    let count = count.min(image.layers.len());
    // The blobs, opened once for both passes.
    let blobs = store_blobs(store, image, 0..count)?;
    let open = |i: usize| Ok(read_at(&blobs[i]));
    // Pass 1: the model.
    let (model, _) = build_model(image, 0..count, false, None, &open, limits, progress)?;
    // The plan: what to write at each position.
    let mut plan: HashMap<Pos, Plan> = HashMap::new();
    let mut names: HashMap<usize, Vec<Vec<u8>>> = HashMap::new();
    for (path, node) in &model.nodes {
        match node {
            Node::Dir { born, .. } => plan.entry(*born).or_default().dirs.push(path.clone()),
            Node::Leaf(i) => names.entry(*i).or_default().push(path.clone()),
        }
    }
    for (inode, mut paths) in names {
        paths.sort();
        plan.entry(model.inodes[inode].born).or_default().leaf = Some((inode, paths));
    }
    if let Some((_, born)) = &model.root_meta {
        plan.entry(*born).or_default().root = true;
    }
    // Pass 2: emit.
    let mut w = TarWriter::new(out);
    let mut report = ExportReport::default();
    let mut buf = vec![0u8; 1 << 20];
    let default_dir = |path: &[u8], t: Timestamp| Entry {
        path: path.to_vec(),
        kind: EntryKind::Dir,
        size: 0,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: t,
        xattrs: Vec::new(),
    };
    let out_err = |source| UnpackError::Output { source };
    for (i, blob) in blobs.iter().enumerate() {
        let wrap = |e: UnpackError| e.in_layer(i + 1, &image.layers[i].digest);
        let message = format!(
            "writing layer {}/{count} {}",
            i + 1,
            image.layers[i].digest.short()
        );
        progress.event(&ProgressEvent::Status { message: &message });
        read_layer(image, i, read_at(blob), limits, progress, |tar| {
            let mut idx = 0u64;
            while let Some(e) = tar.next_entry()? {
                let Some(p) = plan.remove(&(i, idx)) else {
                    idx += 1;
                    continue;
                };
                idx += 1;
                if p.root
                    && let Some((meta, _)) = &model.root_meta
                {
                    write_meta(&mut w, b"", meta, None).map_err(out_err)?;
                    report.entries += 1;
                }
                for d in &p.dirs {
                    let fallback;
                    let meta = match model.nodes.get(d) {
                        Some(Node::Dir { meta: Some(m), .. }) => m.as_ref(),
                        _ => {
                            fallback = default_dir(d, e.mtime);
                            &fallback
                        }
                    };
                    write_meta(&mut w, d, meta, None).map_err(out_err)?;
                    report.entries += 1;
                }
                if let Some((inode, paths)) = p.leaf {
                    let meta = &model.inodes[inode].entry;
                    let first = &paths[0];
                    write_meta(&mut w, first, meta, None).map_err(out_err)?;
                    if meta.kind == EntryKind::File {
                        let mut left = meta.size;
                        while left > 0 {
                            let n = tar.read_data(&mut buf)?;
                            w.data(&buf[..n]).map_err(out_err)?;
                            left -= n as u64;
                        }
                        w.pad(meta.size).map_err(out_err)?;
                    }
                    report.entries += 1;
                    for other in &paths[1..] {
                        write_meta(&mut w, other, meta, Some(first)).map_err(out_err)?;
                        report.entries += 1;
                    }
                }
            }
            Ok(())
        })
        .map_err(wrap)?;
    }
    report.bytes = w.written() + 1024;
    w.finish().map_err(out_err)?;
    Ok(report)
}

/// The file data of one layer, written aside by pass 1 as it read the layer (so pass 2
/// copies it from here instead of decompressing the layer again): an unnamed file (its
/// name is removed as soon as it is created) holding every regular file's bytes, file
/// after file, in the layer's order.
///
/// These are the very bytes whose diff ID pass 1 checked; pass 2 reads them back through
/// the descriptor, which no other process can open by name.
#[derive(Debug)]
pub(crate) struct LayerSpool {
    file: std::fs::File,
    /// `(entry index, offset in the file)` of each regular file with data, by index.
    files: Vec<(u64, u64)>,
}

impl LayerSpool {
    /// Reads `buf.len()` bytes of the data of entry `idx` from offset `off` of its data.
    pub(crate) fn read(&self, idx: u64, off: u64, buf: &mut [u8]) -> Result<(), UnpackError> {
        use std::os::unix::fs::FileExt as _;
        let k = self
            .files
            .binary_search_by_key(&idx, |(i, _)| *i)
            .map_err(|_| UnpackError::bad(b"", "file data missing from the spool"))?;
        self.file
            .read_exact_at(buf, self.files[k].1 + off)
            .map_err(|source| UnpackError::Stream { source })
    }
}

/// Pass 1's writer of a [`LayerSpool`].
struct SpoolWriter {
    out: std::io::BufWriter<std::fs::File>,
    files: Vec<(u64, u64)>,
    at: u64,
    /// Entries of the layer already sent to the applying thread.
    sent: u64,
    buf: Vec<u8>,
}

impl SpoolWriter {
    fn new(dir: &Path) -> Result<SpoolWriter, UnpackError> {
        // Unnamed from the start where the kernel can (O_TMPFILE), else created and
        // unlinked at once; readable only by this user.
        let file = tempfile::tempfile_in(dir)
            .map_err(|e| UnpackError::io("create a temp file in", dir, e))?;
        Ok(SpoolWriter {
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            files: Vec::new(),
            at: 0,
            sent: 0,
            buf: vec![0u8; 1 << 20],
        })
    }

    /// Copies the data of entry `idx` (`e`, just read) to the spool.
    fn file_data(
        &mut self,
        tar: &mut TarReader<ChannelReader>,
        idx: u64,
        e: &Entry,
    ) -> Result<(), UnpackError> {
        use std::io::Write as _;
        self.files.push((idx, self.at));
        let mut left = e.size;
        while left > 0 {
            let n = tar.read_data(&mut self.buf)?;
            if n == 0 {
                return Err(UnpackError::bad(&e.path, "file data ends early"));
            }
            self.out
                .write_all(&self.buf[..n])
                .map_err(|source| UnpackError::Output { source })?;
            left -= n as u64;
        }
        self.at += e.size;
        Ok(())
    }

    fn finish(self) -> Result<LayerSpool, UnpackError> {
        let file = self.out.into_inner().map_err(|e| UnpackError::Output {
            source: e.into_error(),
        })?;
        Ok(LayerSpool {
            file,
            files: self.files,
        })
    }
}

/// Entries parsed ahead of the layer being applied, per layer: batches in flight.
const BATCHES: usize = 32;
/// A batch is sent once it holds this many entries, or about this many bytes.
const BATCH_ENTRIES: usize = 1024;
const BATCH_BYTES: usize = 256 << 10;

/// What a layer-reading thread hands to the thread that applies the layers.
enum Parsed {
    /// The next entries of the layer, in order.
    Entries(Vec<Entry>),
    /// The layer's end: read whole with its diff ID right (with its file data, when
    /// spooled), or the error that stopped it (wrapped with the layer), after the entries
    /// parsed before it.
    Done(Result<Option<LayerSpool>, UnpackError>),
}

/// Pass 1: applies layers `range` of `image` to a fresh model, each layer's diff ID
/// checked; `overlay` keeps whiteouts in overlayfs form (for one layer alone). The blobs
/// are read through `open` (see [`OpenBlob`]). With `spool`, every regular file's bytes
/// are also written to an unnamed file per layer there ([`LayerSpool`], returned in
/// layer order), for a second pass that copies them instead of reading the layers again.
///
/// The layers are decompressed, hashed and parsed on up to as many threads as there are
/// cores, several layers at once (each layer itself on two threads, see [`piped`]), and
/// applied in order on this thread, base first, as they come: a layer's entries may be
/// parsed ahead by at most [`BATCHES`] batches of [`BATCH_BYTES`] (so memory stays bounded
/// whatever the layers hold). The model, and the error reported for a bad layer, are the
/// same as reading the layers one after the other: a layer's entries are applied in
/// order; an entry that cannot be applied stops the build before the layer's own parse or
/// diff ID error, which comes before the next layer's.
pub(crate) fn build_model(
    image: &ImageRecord,
    range: std::ops::Range<usize>,
    overlay: bool,
    spool: Option<&Path>,
    open: &OpenBlob<'_>,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<(Model, Option<Vec<LayerSpool>>), UnpackError> {
    check_layers(image)?;
    let count = image.layers.len();
    if range.end > count {
        return Err(UnpackError::LayerCount {
            image: image.id.clone(),
            layers: count,
            diff_ids: image.diff_ids.len(),
        });
    }
    let mut model = Model {
        overlay,
        ..Model::default()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get().min(4))
        .clamp(1, range.len().max(1));
    let mut receivers = Vec::with_capacity(range.len());
    let mut queue = VecDeque::with_capacity(range.len());
    for i in range.clone() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Parsed>(BATCHES);
        queue.push_back((i, tx));
        receivers.push((i, rx));
    }
    let queue = std::sync::Mutex::new(queue);
    let mut spools = spool.map(|_| Vec::with_capacity(range.len()));
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let queue = &queue;
                s.spawn(move || {
                    loop {
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .pop_front();
                        let Some((i, tx)) = next else { return };
                        parse_layer(image, i, open, spool, limits, progress, &tx);
                    }
                })
            })
            .collect();
        let applied = apply_layers(&mut model, image, receivers, spools.as_mut());
        // On an error, the layers not started are not read; the ones being read stop at
        // their next batch (their receiver is gone).
        queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let mut panicked = false;
        for w in workers {
            panicked |= w.join().is_err();
        }
        applied?;
        if panicked {
            return Err(UnpackError::WorkerPanicked {
                what: "layer reading",
            });
        }
        Ok(())
    })?;
    Ok((model, spools))
}

/// Applies each layer's entries as its reading thread sends them, base first.
fn apply_layers(
    model: &mut Model,
    image: &ImageRecord,
    receivers: Vec<(usize, std::sync::mpsc::Receiver<Parsed>)>,
    mut spools: Option<&mut Vec<LayerSpool>>,
) -> Result<(), UnpackError> {
    for (i, rx) in receivers {
        let digest = &image.layers[i].digest;
        model.written.clear();
        model.whiteouts.clear();
        let mut idx = 0u64;
        loop {
            match rx.recv() {
                Ok(Parsed::Entries(batch)) => {
                    for e in batch {
                        model
                            .apply(e, (i, idx))
                            .map_err(|e| e.in_layer(i + 1, digest))?;
                        idx += 1;
                    }
                }
                Ok(Parsed::Done(r)) => {
                    if let (Some(spools), Some(spool)) = (spools.as_deref_mut(), r?) {
                        spools.push(spool);
                    }
                    break;
                }
                // The reading thread went away without a word: it panicked.
                Err(_) => {
                    return Err(UnpackError::WorkerPanicked {
                        what: "layer reading",
                    });
                }
            }
        }
    }
    Ok(())
}

/// Reads layer `i` (diff ID checked) and sends its entries in batches through `tx`, then
/// how it ended.
fn parse_layer(
    image: &ImageRecord,
    i: usize,
    open: &OpenBlob<'_>,
    spool: Option<&Path>,
    limits: &Limits,
    progress: &dyn Progress,
    tx: &std::sync::mpsc::SyncSender<Parsed>,
) {
    let count = image.layers.len();
    let digest = &image.layers[i].digest;
    let message = format!("reading layer {}/{count} {}", i + 1, digest.short());
    progress.event(&ProgressEvent::Status { message: &message });
    let stopped = || UnpackError::Stream {
        source: std::io::Error::other("the layers are no longer read"),
    };
    let r = open(i)
        .and_then(|blob| {
            read_layer(image, i, blob, limits, progress, |tar| {
                let mut spool = spool.map(SpoolWriter::new).transpose()?;
                let mut batch = Vec::new();
                let mut bytes = 0usize;
                while let Some(e) = tar.next_entry()? {
                    if let Some(w) = &mut spool
                        && e.kind == EntryKind::File
                        && e.size > 0
                    {
                        w.file_data(tar, batch.len() as u64 + w.sent, &e)?;
                    }
                    bytes += 128
                        + e.path.len()
                        + e.xattrs
                            .iter()
                            .map(|(k, v)| k.len() + v.len() + 48)
                            .sum::<usize>()
                        + match &e.kind {
                            EntryKind::Symlink(t) | EntryKind::Hardlink(t) => t.len(),
                            _ => 0,
                        };
                    batch.push(e);
                    if batch.len() >= BATCH_ENTRIES || bytes >= BATCH_BYTES {
                        if let Some(w) = &mut spool {
                            w.sent += batch.len() as u64;
                        }
                        tx.send(Parsed::Entries(std::mem::take(&mut batch)))
                            .map_err(|_| stopped())?;
                        bytes = 0;
                    }
                }
                if !batch.is_empty() {
                    tx.send(Parsed::Entries(batch)).map_err(|_| stopped())?;
                }
                spool.map(SpoolWriter::finish).transpose()
            })
        })
        .map_err(|e| e.in_layer(i + 1, digest));
    let _ = tx.send(Parsed::Done(r));
}

fn write_meta<W: Write>(
    w: &mut TarWriter<W>,
    path: &[u8],
    e: &Entry,
    link: Option<&[u8]>,
) -> std::io::Result<()> {
    w.header(&Header {
        path,
        kind: &e.kind,
        link,
        size: if link.is_none() && e.kind == EntryKind::File {
            e.size
        } else {
            0
        },
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        xattrs: &e.xattrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Timestamp::default(),
            xattrs: Vec::new(),
        }
    }

    fn paths(m: &Model) -> Vec<String> {
        m.nodes
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn model_follows_the_unpack_rules() {
        let mut m = Model::default();
        let layer1 = [
            entry("usr", EntryKind::Dir),
            entry("usr/lib", EntryKind::Dir),
            entry("lib", EntryKind::Symlink(b"/usr/lib".to_vec())),
            entry("usr/lib/a", EntryKind::File),
            entry("lib/b", EntryKind::File),
            entry("lib/h", EntryKind::Hardlink(b"usr/lib/a".to_vec())),
            entry("opt/x/y", EntryKind::File),
        ];
        for (i, e) in layer1.into_iter().enumerate() {
            m.apply(e, (0, i as u64)).unwrap();
        }
        assert_eq!(
            paths(&m),
            [
                "lib",
                "opt",
                "opt/x",
                "opt/x/y",
                "usr",
                "usr/lib",
                "usr/lib/a",
                "usr/lib/b",
                "usr/lib/h"
            ]
        );
        m.written.clear();
        let layer2 = [
            entry("usr/lib/.wh.a", EntryKind::File),
            entry("opt/new", EntryKind::File),
            entry("opt/.wh..wh..opq", EntryKind::File),
            entry("lib", EntryKind::Dir),
        ];
        for (i, e) in layer2.into_iter().enumerate() {
            m.apply(e, (1, i as u64)).unwrap();
        }
        // a is gone but its hardlink h keeps the inode; opt keeps only new; lib is a dir now.
        assert_eq!(
            paths(&m),
            [
                "lib",
                "opt",
                "opt/new",
                "usr",
                "usr/lib",
                "usr/lib/b",
                "usr/lib/h"
            ]
        );
        let Some(Node::Leaf(h)) = m.nodes.get(&b"usr/lib/h"[..]) else {
            panic!()
        };
        assert_eq!(m.inodes[*h].entry.path, b"usr/lib/a");
        // A dangling symlink as a parent is an error, as in the unpack.
        m.apply(
            entry("dangling", EntryKind::Symlink(b"nowhere".to_vec())),
            (1, 9),
        )
        .unwrap();
        assert!(
            m.apply(entry("dangling/f", EntryKind::File), (1, 10))
                .is_err()
        );
        assert!(
            m.apply(
                entry("h2", EntryKind::Hardlink(b"usr/lib/a".to_vec())),
                (1, 11)
            )
            .is_err()
        );
    }
}
