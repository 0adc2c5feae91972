//! Reading blobs while a pull of this process downloads them: `hoist rootfs REF` builds
//! from each layer as its bytes arrive instead of after the pull.
//!
//! A [`Downloads`] is the state of one pull (running, done, failed), set by whoever runs
//! it. A store handle made with [`Store::following`] reads a blob absent from `blobs/`
//! from its partial download in the ingest area ([`Store::open_partial_reader`], the
//! same mechanism `hoist serve --pull-through` streams from) up to the record's valid
//! offset, waiting while it grows; then from the published blob at the same offset.
//! Whatever the reader has handed out, it ends (returns end of file) only once the blob
//! is published, that is once the pull has checked its size and digest and renamed it
//! into `blobs/`; if the pull fails first, the read fails. So a consumer that reads a
//! blob to its end has read verified bytes, or gets an error.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hoist_types::Digest;

use crate::{PartialReader, Store, StoreError};

/// How often a followed download is looked at when it has nothing new.
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Running,
    Done,
    Failed(String),
}

/// The state of the pull a [`Store::following`] handle follows: running until
/// [`Downloads::finish`] says how it ended. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct Downloads {
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Default for Downloads {
    fn default() -> Self {
        Downloads::new()
    }
}

impl Downloads {
    /// A pull that is running.
    pub fn new() -> Downloads {
        Downloads {
            state: Arc::new((Mutex::new(State::Running), Condvar::new())),
        }
    }

    /// The pull ended: `Ok` when it committed, else why it failed (readers still waiting
    /// for a blob fail with this text). The first call counts; later ones change nothing
    /// (so a guard may call it with a failure when the pull's task goes away).
    pub fn finish(&self, result: Result<(), String>) {
        let (m, cv) = &*self.state;
        let mut state = m.lock().unwrap_or_else(|p| p.into_inner());
        if *state == State::Running {
            *state = match result {
                Ok(()) => State::Done,
                Err(why) => State::Failed(why),
            };
        }
        cv.notify_all();
    }

    fn state(&self) -> State {
        self.state
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits at most `d` for the pull to end; its state then.
    fn wait_for(&self, d: Duration) -> State {
        let (m, cv) = &*self.state;
        let g = m.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = cv
            .wait_timeout_while(g, d, |s| *s == State::Running)
            .unwrap_or_else(|p| p.into_inner());
        g.clone()
    }

    /// Waits for the pull to end: `Ok` when it committed.
    pub fn wait(&self) -> Result<(), StoreError> {
        let (m, cv) = &*self.state;
        let g = m.lock().unwrap_or_else(|p| p.into_inner());
        let g = cv
            .wait_while(g, |s| *s == State::Running)
            .unwrap_or_else(|p| p.into_inner());
        match &*g {
            State::Failed(why) => Err(StoreError::PullFailed {
                reason: why.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl Store {
    /// This store, with blobs read through [`Store::blob_reader`] followed while
    /// `downloads` runs (see the module docs). Other operations are as on `self`.
    pub fn following(&self, downloads: Downloads) -> Store {
        Store {
            inner: self.inner.clone(),
            downloads: Some(downloads),
        }
    }

    /// The pull this handle follows, if any ([`Store::following`]).
    pub fn downloads(&self) -> Option<&Downloads> {
        self.downloads.as_ref()
    }

    /// A reader of blob `d` (of `size` bytes) from its first byte: the stored blob; on a
    /// [`Store::following`] handle, a blob not stored yet is read as its download grows,
    /// and ends only once it is published (verified), or fails with the pull.
    pub fn blob_reader(&self, d: &Digest, size: u64) -> Result<Box<dyn Read + Send>, StoreError> {
        let downloads = match (&self.downloads, self.open_blob(d)) {
            (_, Ok(f)) => return Ok(Box::new(AtReader { file: f, pos: 0 })),
            (Some(dl), Err(StoreError::BlobNotFound { .. })) => dl.clone(),
            (_, Err(e)) => return Err(e),
        };
        Ok(Box::new(Follower {
            store: self.clone(),
            digest: d.clone(),
            size,
            downloads,
            pos: 0,
            partial: None,
            published: None,
        }))
    }
}

/// Reads of a file at its own offset.
struct AtReader {
    file: File,
    pos: u64,
}

impl Read for AtReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A blob read while it downloads (see the module docs).
struct Follower {
    store: Store,
    digest: Digest,
    size: u64,
    downloads: Downloads,
    pos: u64,
    partial: Option<PartialReader>,
    published: Option<AtReader>,
}

impl Follower {
    /// Bytes at `pos` from the partial download, if it has any valid there.
    fn read_partial(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.partial.as_ref().is_none_or(PartialReader::removed) {
            self.partial = self
                .store
                .open_partial_reader(&self.digest)
                .map_err(io::Error::other)?;
        }
        let Some(p) = &self.partial else {
            return Ok(0);
        };
        let Some((size, valid)) = p.valid() else {
            return Ok(0);
        };
        if size != self.size || valid <= self.pos {
            return Ok(0);
        }
        let want = buf.len().min((valid - self.pos) as usize);
        let n = p.data().read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut last_look = false;
        loop {
            if let Some(r) = &mut self.published {
                return r.read(buf);
            }
            match self.store.open_blob(&self.digest) {
                Ok(file) => {
                    // Published, so verified: read on from here.
                    self.partial = None;
                    self.published = Some(AtReader {
                        file,
                        pos: self.pos,
                    });
                    continue;
                }
                Err(StoreError::BlobNotFound { .. }) => {}
                Err(e) => return Err(io::Error::other(e)),
            }
            if self.pos < self.size {
                let n = self.read_partial(buf)?;
                if n > 0 {
                    return Ok(n);
                }
            }
            if last_look {
                let why = match self.downloads.state() {
                    State::Failed(why) => why,
                    _ => "the pull ended without it".to_owned(),
                };
                return Err(io::Error::other(format!(
                    "blob {} was not downloaded: {why}",
                    self.digest
                )));
            }
            if self.downloads.wait_for(POLL) != State::Running {
                // One more look: it may have been published just before the pull ended.
                last_look = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads blob `d` through `store` on a thread; the bytes or the error text.
    fn read_on_thread(
        store: &Store,
        d: &Digest,
        size: u64,
    ) -> std::thread::JoinHandle<Result<Vec<u8>, String>> {
        let (store, d) = (store.clone(), d.clone());
        std::thread::spawn(move || {
            let mut r = store.blob_reader(&d, size).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            r.read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        })
    }

    #[test]
    fn a_blob_is_read_as_it_downloads_and_ends_once_published() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("s")).unwrap();
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        let d = Digest::sha256_of(&data);
        let downloads = Downloads::new();
        let following = store.following(downloads.clone());
        // Not stored and not followed: an error at once.
        assert!(matches!(
            store.blob_reader(&d, data.len() as u64),
            Err(StoreError::BlobNotFound { .. })
        ));
        let _lock = store.lock_blob(&d).unwrap();
        let mut p = store.open_partial(&d, data.len() as u64).unwrap();
        p.append(&data[..2 << 20]).unwrap();
        let reader = read_on_thread(&following, &d, data.len() as u64);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "it waits for the rest");
        p.append(&data[2 << 20..]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !reader.is_finished(),
            "every byte is there, but not yet published"
        );
        p.commit().unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), data);
        downloads.finish(Ok(()));
        assert!(downloads.wait().is_ok());
    }

    #[test]
    fn a_failed_pull_fails_the_reader_and_counts_once() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("s")).unwrap();
        let data = vec![1u8; 2 << 20];
        let d = Digest::sha256_of(&data);
        let downloads = Downloads::new();
        let following = store.following(downloads.clone());
        let _lock = store.lock_blob(&d).unwrap();
        let mut p = store.open_partial(&d, data.len() as u64).unwrap();
        p.append(&data[..1 << 20]).unwrap();
        let reader = read_on_thread(&following, &d, data.len() as u64);
        std::thread::sleep(Duration::from_millis(30));
        downloads.finish(Err("the registry went away".into()));
        downloads.finish(Ok(()));
        let e = reader.join().unwrap().unwrap_err();
        assert!(e.contains("the registry went away"), "{e}");
        assert!(matches!(
            downloads.wait(),
            Err(StoreError::PullFailed { .. })
        ));
    }
}
