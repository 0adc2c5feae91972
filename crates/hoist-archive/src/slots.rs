//! A tar file written by reserved slots: each entry's place (header, data, padding) is
//! reserved at the end of the file when its size is known, its header written at once,
//! and its data written straight into the slot by whoever holds it (`pwrite`), while
//! other slots are being filled. Every byte is written once; no staging copy.
//!
//! The archive is complete only after [`SlotWriter::finish`], which refuses when a slot
//! was dropped before it had all its bytes ([`Slot::finish`] checks the count): the caller
//! then discards the file (an [`crate::Output`] temp file, never renamed into place).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::writer::{ZEROS, header, pad};

#[derive(Debug)]
struct Shared {
    file: File,
    /// Where the next slot starts.
    end: Mutex<u64>,
    /// A slot was dropped unfinished: the archive has a hole.
    broken: AtomicBool,
}

/// A tar file being filled by slots (see the module docs).
#[derive(Debug, Clone)]
pub struct SlotWriter {
    shared: Arc<Shared>,
}

/// One reserved entry: exactly `size` bytes to write, in order.
#[derive(Debug)]
pub struct Slot {
    shared: Arc<Shared>,
    name: String,
    pos: u64,
    end: u64,
    done: bool,
}

impl SlotWriter {
    /// Write an archive into `file` from its current start (offset 0).
    pub fn new(file: File) -> SlotWriter {
        SlotWriter {
            shared: Arc::new(Shared {
                file,
                end: Mutex::new(0),
                broken: AtomicBool::new(false),
            }),
        }
    }

    fn place(&self, len: u64) -> u64 {
        let mut end = self.shared.end.lock().unwrap_or_else(|p| p.into_inner());
        let at = *end;
        *end += len;
        at
    }

    /// Reserve the entry `name` of `size` bytes (a regular file) and write its header.
    pub fn reserve(&self, name: &str, size: u64) -> io::Result<Slot> {
        let h = header(name, size, false)?;
        let at = self.place(h.len() as u64 + size + pad(size));
        self.shared.file.write_all_at(&h, at)?;
        let pos = at + h.len() as u64;
        Ok(Slot {
            shared: self.shared.clone(),
            name: name.to_owned(),
            pos,
            end: pos + size,
            done: false,
        })
    }

    /// A regular file with these bytes.
    pub fn bytes(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut slot = self.reserve(name, data.len() as u64)?;
        slot.write_all(data)?;
        slot.finish()
    }

    /// A directory entry (`name` without trailing slash).
    pub fn dir(&self, name: &str) -> io::Result<()> {
        let h = header(&format!("{name}/"), 0, true)?;
        let at = self.place(h.len() as u64);
        self.shared.file.write_all_at(&h, at)
    }

    /// Write the end-of-archive marker after the last slot and return the file (its
    /// length is the archive's). Refused when a slot was left unfinished.
    pub fn finish(self) -> io::Result<File> {
        if self.shared.broken.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "an entry of the archive was not completely written",
            ));
        }
        let at = self.place(ZEROS.len() as u64);
        self.shared.file.write_all_at(&ZEROS, at)?;
        self.shared.file.set_len(at + ZEROS.len() as u64)?;
        let shared = Arc::try_unwrap(self.shared).map_err(|_| {
            io::Error::other("the archive is finished while an entry is still being written")
        })?;
        Ok(shared.file)
    }
}

impl Slot {
    /// Bytes still to write.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// Check that every byte was written and pad the entry to its block.
    pub fn finish(mut self) -> io::Result<()> {
        if self.pos != self.end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: {} bytes short", self.name, self.end - self.pos),
            ));
        }
        let p = pad(self.end) as usize;
        // The padding of the entry's last block: the data's offset from the header is a
        // multiple of 512, so padding by the data end's offset in its block is the same.
        self.shared.file.write_all_at(&ZEROS[..p], self.end)?;
        self.done = true;
        Ok(())
    }
}

impl Write for Slot {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.end - self.pos {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: longer than its {} bytes", self.name, self.end),
            ));
        }
        self.shared.file.write_all_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.done {
            self.shared.broken.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArchiveIndex, TarWriter};
    use std::io::{Read, Seek};

    #[test]
    fn slots_filled_out_of_order_make_the_same_tar() {
        let w = SlotWriter::new(tempfile::tempfile().unwrap());
        w.dir("blobs").unwrap();
        let mut a = w.reserve("a", 700).unwrap();
        let mut b = w.reserve(&format!("b/{}", "x".repeat(120)), 3).unwrap();
        b.write_all(b"xyz").unwrap();
        a.write_all(&[7u8; 600]).unwrap();
        a.write_all(&[8u8; 100]).unwrap();
        b.finish().unwrap();
        a.finish().unwrap();
        w.bytes("c", b"last").unwrap();
        let mut f = w.finish().unwrap();
        let mut got = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut got).unwrap();

        let mut t = TarWriter::new(Vec::new());
        t.dir("blobs").unwrap();
        let mut data = vec![7u8; 600];
        data.extend_from_slice(&[8u8; 100]);
        t.bytes("a", &data).unwrap();
        t.bytes(&format!("b/{}", "x".repeat(120)), b"xyz").unwrap();
        t.bytes("c", b"last").unwrap();
        assert_eq!(got, t.finish().unwrap());
        let idx = ArchiveIndex::from_file(f, std::path::Path::new("t.tar")).unwrap();
        assert_eq!(idx.read_document("c", "c").unwrap(), b"last");
    }

    #[test]
    fn short_or_long_slots_are_refused() {
        let w = SlotWriter::new(tempfile::tempfile().unwrap());
        let mut s = w.reserve("a", 4).unwrap();
        assert!(s.write_all(b"12345").is_err());
        s.write_all(b"123").unwrap();
        assert!(s.finish().is_err());
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("not completely written"), "{err}");
        // A slot dropped unwritten (a failed blob) breaks the archive too.
        let w = SlotWriter::new(tempfile::tempfile().unwrap());
        drop(w.reserve("a", 4).unwrap());
        assert!(w.finish().is_err());
    }
}
