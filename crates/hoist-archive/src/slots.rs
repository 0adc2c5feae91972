//! A tar file written by reserved slots: each entry's place (header, data, padding) is
//! reserved at the end of the file when its size is known, its header written at once,
//! and its data written straight into the slot by whoever holds it (`pwrite`), while
//! other slots are being filled. Every byte is written once; no staging copy.
//!
//! The archive is complete only after [`SlotWriter::finish`]. A slot dropped before it had
//! all its bytes ([`Slot::finish`] checks the count: a blob refused as short, long or
//! corrupt) leaves a hole: the next entry reserved with the same footprint (the same
//! blob, tried again) takes its place, and `finish` turns a hole nobody took into an
//! inert, zero-filled `.hoist-unused-<offset>` member, so a destination that refused one
//! blob can still complete its archive. A slot still held when `finish` runs is refused.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use crate::writer::{ZEROS, header, pad};

#[derive(Debug)]
struct Shared {
    file: File,
    /// Where the next slot starts.
    end: Mutex<u64>,
    /// Slots dropped unfinished: (offset of the header, whole footprint).
    holes: Mutex<Vec<(u64, u64)>>,
}

/// A tar file being filled by slots: each entry's place (header, data, padding) is reserved
/// at the end of the file once its size is known, and its data written straight into the
/// slot by whoever holds it, while other slots are being filled; every byte is written
/// once. A [`Slot`] dropped before all its bytes were written leaves a hole that the next
/// entry of the same footprint takes, or that [`finish`](SlotWriter::finish) turns into an
/// inert zero-filled member. Clones share the file.
///
/// ```
/// use std::io::Write as _;
/// use hoist_archive::{ArchiveIndex, SlotWriter};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("out.tar");
/// let tar = SlotWriter::new(std::fs::File::create(&path)?);
/// let mut big = tar.reserve("blobs/big", 6)?;
/// let mut small = tar.reserve("blobs/small", 2)?;
/// // Slots are filled in any order, from any thread.
/// std::thread::scope(|s| {
///     s.spawn(|| small.write_all(b"hi"));
///     s.spawn(|| big.write_all(b"abcdef"));
/// });
/// small.finish()?;
/// big.finish()?;
/// tar.bytes("index.json", b"{}")?;
/// tar.finish()?;
///
/// let index = ArchiveIndex::open(&path)?;
/// assert_eq!(index.read_document("blobs/big", "a blob")?, b"abcdef");
/// assert_eq!(index.read_document("index.json", "the index")?, b"{}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SlotWriter {
    shared: Arc<Shared>,
}

/// One reserved entry: exactly `size` bytes to write, in order.
#[derive(Debug)]
pub struct Slot {
    shared: Arc<Shared>,
    name: String,
    /// Where its header starts, and its whole footprint (header, data, padding).
    start: u64,
    len: u64,
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
                holes: Mutex::new(Vec::new()),
            }),
        }
    }

    fn place(&self, len: u64) -> u64 {
        let mut end = lock(&self.shared.end);
        let at = *end;
        *end += len;
        at
    }

    /// Reserve the entry `name` of `size` bytes (a regular file) and write its header:
    /// in a hole of the same footprint if a dropped slot left one, else at the end.
    pub fn reserve(&self, name: &str, size: u64) -> io::Result<Slot> {
        let h = header(name, size, false)?;
        let len = h.len() as u64 + size + pad(size);
        let hole = {
            let mut holes = lock(&self.shared.holes);
            holes
                .iter()
                .position(|&(_, l)| l == len)
                .map(|i| holes.swap_remove(i).0)
        };
        let at = match hole {
            Some(at) => at,
            None => self.place(len),
        };
        let slot = Slot {
            shared: self.shared.clone(),
            name: name.to_owned(),
            start: at,
            len,
            pos: at + h.len() as u64,
            end: at + h.len() as u64 + size,
            done: false,
        };
        // On failure the slot is dropped unfinished: its place becomes a hole again.
        self.shared.file.write_all_at(&h, at)?;
        Ok(slot)
    }

    /// A regular file with these bytes.
    pub fn bytes(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut slot = self.reserve(name, data.len() as u64)?;
        slot.write_all(data)?;
        slot.finish()
    }

    /// Turn the hole at `at` (`len` bytes, a multiple of 512 and at least one header)
    /// into a zero-filled regular member no reader looks for.
    fn fill(&self, at: u64, len: u64) -> io::Result<()> {
        let h = header(&format!(".hoist-unused-{at}"), len - 512, false)?;
        debug_assert_eq!(h.len(), 512);
        self.shared.file.write_all_at(&h, at)?;
        let mut pos = at + 512;
        let zeros = vec![0u8; 1 << 20];
        while pos < at + len {
            let n = (at + len - pos).min(zeros.len() as u64) as usize;
            self.shared.file.write_all_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// A directory entry (`name` without trailing slash).
    pub fn dir(&self, name: &str) -> io::Result<()> {
        let h = header(&format!("{name}/"), 0, true)?;
        let at = self.place(h.len() as u64);
        self.shared.file.write_all_at(&h, at)
    }

    /// Fill the holes nobody took with inert members, write the end-of-archive marker
    /// after the last slot and return the file (its length is the archive's). Refused
    /// while a slot is still held.
    pub fn finish(self) -> io::Result<File> {
        if Arc::strong_count(&self.shared) > 1 {
            return Err(io::Error::other(
                "the archive is finished while an entry is still being written",
            ));
        }
        let holes = std::mem::take(&mut *lock(&self.shared.holes));
        for (at, len) in holes {
            self.fill(at, len)?;
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
            lock(&self.shared.holes).push((self.start, self.len));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    fn read_all(f: &mut File) -> Vec<u8> {
        let mut got = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn short_or_long_slots_are_refused_and_their_place_reused() {
        let w = SlotWriter::new(tempfile::tempfile().unwrap());
        let mut s = w.reserve("a", 4).unwrap();
        assert!(s.write_all(b"12345").is_err());
        s.write_all(b"123").unwrap();
        assert!(s.finish().is_err());
        // The same entry tried again takes the hole: the tar is as if it never failed.
        w.bytes("a", b"1234").unwrap();
        w.bytes("b", b"x").unwrap();
        let got = read_all(&mut w.finish().unwrap());
        let mut t = TarWriter::new(Vec::new());
        t.bytes("a", b"1234").unwrap();
        t.bytes("b", b"x").unwrap();
        assert_eq!(got, t.finish().unwrap());
    }

    #[test]
    fn a_hole_nobody_takes_becomes_an_inert_member() {
        let w = SlotWriter::new(tempfile::tempfile().unwrap());
        let mut s = w.reserve("a", 1000).unwrap();
        s.write_all(&[9u8; 600]).unwrap();
        drop(s);
        w.bytes("b", b"bee").unwrap();
        let held = w.reserve("c", 1).unwrap();
        let w2 = w.clone();
        assert!(w2.finish().is_err(), "finished while a slot is held");
        drop(held);
        let mut f = w.finish().unwrap();
        let got = read_all(&mut f);
        assert!(
            !got.windows(600).any(|b| b == [9u8; 600]),
            "refused bytes kept"
        );
        let idx = ArchiveIndex::from_file(f, std::path::Path::new("t.tar")).unwrap();
        assert_eq!(idx.read_document("b", "b").unwrap(), b"bee");
        assert!(!idx.contains("a"));
        assert!(!idx.contains("c"));
        assert_eq!(
            idx.read_document(".hoist-unused-0", "u").unwrap(),
            vec![0u8; 1024]
        );
    }
}
