//! What the two archive destinations (`docker-archive:`, `oci-archive:`) share: where the
//! archive goes ([`ArchiveTarget`]), the temp tar written by slots and published last
//! ([`SlotArchive`]), and which entries are in it or being written ([`Entries`]), so that
//! each blob enters the tar once even when several images share it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use hoist_archive::{SlotWriter, TempOutput};
use hoist_types::{Descriptor, Digest, Progress};

use super::{BlobStream, local};
use crate::{TransportError, blocking};

/// Where an archive being written goes: a file (a temp file beside it, renamed into
/// place when complete), or a stream (an anonymous temp file copied to it when complete:
/// entries are written at offsets, several at once).
pub enum ArchiveTarget {
    /// A file, replaced atomically.
    Path(PathBuf),
    /// A stream (stdout), written only once the archive is complete.
    Stream(Box<dyn Write + Send + Sync>),
}

impl std::fmt::Debug for ArchiveTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveTarget::Path(p) => f.debug_tuple("Path").field(p).finish(),
            ArchiveTarget::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl ArchiveTarget {
    /// The path, as named in messages (`-` for a stream).
    pub fn path(&self) -> PathBuf {
        match self {
            ArchiveTarget::Path(p) => p.clone(),
            ArchiveTarget::Stream(_) => PathBuf::from("-"),
        }
    }

    /// The directory temp files of a copy into this archive belong in (the target's, so
    /// on its file system; the system temp directory for a stream).
    pub fn temp_dir(&self) -> PathBuf {
        match self {
            ArchiveTarget::Path(p) => match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            },
            ArchiveTarget::Stream(_) => std::env::temp_dir(),
        }
    }
}

/// The file an archive is being written into.
pub(crate) enum ArchiveOut {
    Path(TempOutput),
    Stream(File, Box<dyn Write + Send + Sync>),
}

impl std::fmt::Debug for ArchiveOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveOut::Path(t) => f.debug_tuple("Path").field(t).finish(),
            ArchiveOut::Stream(..) => f.write_str("Stream"),
        }
    }
}

/// A temp file for `target` and a slot writer over it.
pub(crate) fn open_slots(
    target: ArchiveTarget,
) -> Result<(ArchiveOut, SlotWriter), TransportError> {
    match target {
        ArchiveTarget::Path(file) => {
            let out = TempOutput::beside(&file)?;
            let slots = SlotWriter::new(out.try_clone()?);
            Ok((ArchiveOut::Path(out), slots))
        }
        ArchiveTarget::Stream(w) => {
            let dir = std::env::temp_dir();
            let f = tempfile::tempfile_in(&dir).map_err(|source| TransportError::Io {
                op: "create a temp file in",
                path: Some(dir.to_path_buf()),
                source,
            })?;
            let slots = SlotWriter::new(f.try_clone().map_err(|source| TransportError::Io {
                op: "reopen the archive's temp file",
                path: None,
                source,
            })?);
            Ok((ArchiveOut::Stream(f, w), slots))
        }
    }
}

/// Finish the tar, then publish it over its path (or copy it to its stream).
pub(crate) fn publish_slots(
    out: ArchiveOut,
    slots: SlotWriter,
    file: &Path,
) -> Result<(), TransportError> {
    let io = |op: &'static str, path: Option<&Path>| {
        let path = path.map(Path::to_path_buf);
        move |source| TransportError::Io { op, path, source }
    };
    slots.finish().map_err(io("finish archive", Some(file)))?;
    match out {
        ArchiveOut::Path(t) => Ok(t.publish()?),
        ArchiveOut::Stream(mut f, mut w) => {
            f.rewind().map_err(io("read back the archive", None))?;
            std::io::copy(&mut f, &mut w).map_err(io("write the archive", None))?;
            w.flush().map_err(io("write the archive", None))
        }
    }
}

/// Stream a blob into a new slot `name` of `slots`, verified (size and digest) on the
/// way; a failure leaves the slot unfinished, a hole the next try of the blob fills.
pub(crate) async fn put_slot(
    slots: &SlotWriter,
    name: String,
    desc: &Descriptor,
    mut stream: BlobStream,
    progress: &dyn Progress,
) -> Result<(), TransportError> {
    let done = Arc::new(AtomicU64::new(0));
    let (slots, d, counter) = (slots.clone(), desc.clone(), done.clone());
    local::with_progress(&desc.digest, progress, done, move || {
        let io = |source| TransportError::Stream {
            what: format!("writing {name} of the archive"),
            source,
        };
        let mut slot = slots.reserve(&name, d.size).map_err(io)?;
        local::copy_verified(&mut stream, &d, &mut slot as &mut dyn Write, &counter)?;
        slot.finish().map_err(io)
    })
    .await
}

/// The entries of an archive being written: those in the tar and those being written
/// (claimed), so a blob several images share enters the tar once.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    done: HashSet<Digest>,
    writing: HashSet<Digest>,
}

impl Entries {
    /// Whether `d` is in the tar.
    pub(crate) fn contains(&self, d: &Digest) -> bool {
        self.done.contains(d)
    }

    /// Claim the entry of `d`: false when it is in the tar or being written.
    pub(crate) fn claim(&mut self, d: &Digest) -> bool {
        !self.done.contains(d) && self.writing.insert(d.clone())
    }

    /// The write of a claimed entry ended: in the tar only when it succeeded.
    pub(crate) fn settle(&mut self, d: &Digest, written: bool) {
        self.writing.remove(d);
        if written {
            self.done.insert(d.clone());
        }
    }
}

/// An archive being written, shared by the destinations of its images: its path, the
/// temp file and slot writer over it, and the format's bookkeeping `S`.
#[derive(Debug)]
pub(crate) struct SlotArchive<S> {
    pub(crate) file: PathBuf,
    out: ArchiveOut,
    pub(crate) slots: SlotWriter,
    state: Mutex<S>,
}

impl<S: Default + Send + 'static> SlotArchive<S> {
    /// Start the archive for `target`, its first entries written by `preamble`.
    pub(crate) async fn create(
        target: ArchiveTarget,
        preamble: fn(&SlotWriter) -> std::io::Result<()>,
    ) -> Result<SlotArchive<S>, TransportError> {
        let file = target.path();
        let f = file.clone();
        let (out, slots) = blocking(move || {
            let (out, slots) = open_slots(target)?;
            preamble(&slots).map_err(|source| TransportError::Io {
                op: "write archive",
                path: Some(f),
                source,
            })?;
            Ok::<_, TransportError>((out, slots))
        })
        .await??;
        Ok(SlotArchive {
            file,
            out,
            slots,
            state: Mutex::default(),
        })
    }

    /// The format's bookkeeping.
    pub(crate) fn state(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finish the archive when `this` is its last holder: `last` writes the format's
    /// closing entries from the bookkeeping, then the tar is published. `busy` says why
    /// another holder is an error.
    pub(crate) async fn finish(
        this: Arc<SlotArchive<S>>,
        busy: impl FnOnce(&Path) -> String,
        last: impl FnOnce(&mut SlotWriter, S, &Path) -> Result<(), TransportError> + Send + 'static,
    ) -> Result<(), TransportError> {
        let me = Arc::try_unwrap(this).map_err(|me| TransportError::Task {
            what: busy(&me.file),
        })?;
        blocking(move || {
            let SlotArchive {
                file,
                out,
                mut slots,
                state,
            } = me;
            last(
                &mut slots,
                state.into_inner().unwrap_or_else(|p| p.into_inner()),
                &file,
            )?;
            publish_slots(out, slots, &file)
        })
        .await?
    }
}
