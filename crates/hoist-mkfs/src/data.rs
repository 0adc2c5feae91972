//! The data pass the native writers share ([`data_pass`]): each pass-2 thread gets a sink
//! that takes `(inode, offset, bytes)` and writes through a [`SeqWriter`], which coalesces
//! adjacent writes into large `pwrite`s; [`path_of`] names an inode in messages.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use hoist_unpack::UnpackError;
use hoist_unpack::tree::{FsTree, InodeId, InodeKind};

use crate::MkfsError;

/// The block size of both native writers: a gap shorter than this between two writes is
/// the tail of a file's last block, bridged with zeros.
const B: u64 = 4096;

/// A data sink: `(inode, offset, bytes)`.
pub type DataSink<'a> = dyn FnMut(InodeId, u64, &[u8]) -> Result<(), UnpackError> + 'a;

/// A factory of data sinks, one per pass-2 thread.
pub type SinkFactory<'s> = dyn Fn() -> Box<DataSink<'s>> + Sync + 's;

/// Pass 2 into `file` (the image at `out`): `stream` gets a factory of sinks, one per
/// thread, each writing through its own [`SeqWriter`] with `write(writer, inode, offset,
/// bytes)` and flushed when dropped. A failed write ends the pass with its error; a failed
/// flush is reported once the pass is over.
pub(crate) fn data_pass<'f, W>(
    file: &'f File,
    out: &Path,
    write: W,
    stream: impl for<'s> FnOnce(&'s SinkFactory<'s>) -> Result<(), UnpackError>,
) -> Result<(), MkfsError>
where
    W: Fn(&mut SeqWriter<'f>, InodeId, u64, &[u8]) -> Result<(), UnpackError> + Sync,
{
    let flush_error = Mutex::new(None);
    {
        let (write, flush_error) = (&write, &flush_error);
        let make_sink = move || -> Box<DataSink<'_>> {
            let mut w = FlushOnDrop {
                w: SeqWriter::new(file),
                error: flush_error,
            };
            Box::new(move |id, off, bytes| write(&mut w.w, id, off, bytes))
        };
        stream(&make_sink)?;
    }
    match flush_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(MkfsError::io("write", out, e)),
        None => Ok(()),
    }
}

/// A pass-2 thread's writer, flushed when its sink is dropped (the first error kept).
struct FlushOnDrop<'f, 'e> {
    w: SeqWriter<'f>,
    error: &'e Mutex<Option<std::io::Error>>,
}

impl Drop for FlushOnDrop<'_, '_> {
    fn drop(&mut self) {
        if let Err(e) = self.w.flush() {
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
    }
}

/// A path of `id` for messages (its first name, from the root).
pub(crate) fn path_of(tree: &FsTree, id: InodeId) -> String {
    if id == FsTree::ROOT {
        return "/".into();
    }
    // Breadth-first search is fine for an error message.
    let mut parent: HashMap<InodeId, (InodeId, &[u8])> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([FsTree::ROOT]);
    while let Some(d) = queue.pop_front() {
        if let InodeKind::Dir { entries } = &tree.inodes[d as usize].kind {
            for (name, c) in entries {
                parent.entry(*c).or_insert((d, name));
                if matches!(tree.inodes[*c as usize].kind, InodeKind::Dir { .. }) {
                    queue.push_back(*c);
                }
            }
        }
    }
    let mut parts = Vec::new();
    let mut cur = id;
    while let Some((p, name)) = parent.get(&cur) {
        parts.push(String::from_utf8_lossy(name).into_owned());
        cur = *p;
    }
    parts.reverse();
    format!("/{}", parts.join("/"))
}

/// Coalesces writes at increasing, adjacent offsets into large `pwrite`s.
pub(crate) struct SeqWriter<'f> {
    file: &'f File,
    buf: Vec<u8>,
    at: u64,
}

impl<'f> SeqWriter<'f> {
    pub(crate) fn new(file: &'f File) -> Self {
        SeqWriter {
            file,
            buf: Vec::with_capacity(4 << 20),
            at: 0,
        }
    }

    pub(crate) fn write_at(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        let end = self.at + self.buf.len() as u64;
        // The tail of the previous file's last block is a short gap: zeros bridge it.
        if at > end
            && at - end < B
            && !self.buf.is_empty()
            && self.buf.len() + bytes.len() <= 4 << 20
        {
            self.buf.resize(self.buf.len() + (at - end) as usize, 0);
        } else if at != end || self.buf.len() + bytes.len() > 4 << 20 {
            self.flush()?;
            self.at = at;
        }
        if bytes.len() >= 4 << 20 {
            self.file.write_all_at(bytes, at)?;
            self.at = at + bytes.len() as u64;
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.at)?;
            self.at += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}
