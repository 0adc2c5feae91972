//! Where fetched bytes go ([`Sink`]): a resumable partial file ([`PartialBlob`]: the
//! store's ingest area, or a layout's), which keeps what arrived across runs and takes
//! Range slices in place; or a stream handed to a consumer ([`StreamSink`]: a copy into a
//! destination that verifies as it writes, a push body), which takes bytes in order only.
//! Every method is called from a blocking thread.

use bytes::Bytes;
use hoist_store::{PartialBlob, SliceWriter};

use crate::TransportError;

/// A blob being received, from [`offset`](Sink::offset) on.
pub(crate) trait Sink: Send + 'static {
    /// Whether it takes Range slices in place ([`slice_writer`](Sink::slice_writer)).
    const SLICES: bool;
    /// The bytes valid so far: where the next response starts.
    fn offset(&self) -> u64;
    /// Take the next bytes, at [`offset`](Sink::offset).
    fn append(&mut self, chunk: Bytes) -> Result<(), TransportError>;
    /// Make what was appended durable (a partial file's record); called after each
    /// response.
    fn checkpoint(&mut self) -> Result<(), TransportError>;
    /// Start again from byte 0 (a server answered a resume with the whole blob).
    fn restart(&mut self) -> Result<(), TransportError>;
    /// A writer of pieces at any position, for Range slices; `None` when the sink takes
    /// bytes in order only.
    fn slice_writer(&mut self) -> Result<Option<SliceWriter>, TransportError>;
    /// Count the bytes slice writers put in `[offset, end)` as valid (hashing them in
    /// order).
    fn hash_through(&mut self, end: u64) -> Result<(), TransportError>;
}

impl Sink for PartialBlob {
    const SLICES: bool = true;
    fn offset(&self) -> u64 {
        PartialBlob::offset(self)
    }
    fn append(&mut self, chunk: Bytes) -> Result<(), TransportError> {
        Ok(PartialBlob::append(self, &chunk)?)
    }
    fn checkpoint(&mut self) -> Result<(), TransportError> {
        Ok(PartialBlob::checkpoint(self)?)
    }
    fn restart(&mut self) -> Result<(), TransportError> {
        Ok(PartialBlob::restart(self)?)
    }
    fn slice_writer(&mut self) -> Result<Option<SliceWriter>, TransportError> {
        Ok(Some(PartialBlob::slice_writer(self)?))
    }
    fn hash_through(&mut self, end: u64) -> Result<(), TransportError> {
        Ok(PartialBlob::hash_through(self, end)?)
    }
}

/// Bytes handed on in order to `send` (which answers `false` once its consumer is
/// gone). A restart from 0 never sends a byte twice: what was sent already is skipped
/// when it comes again, so the consumer sees one continuous stream (and verifies it).
pub(crate) struct StreamSink<F> {
    send: F,
    /// Position of the next byte to arrive.
    pos: u64,
    /// Bytes handed on.
    sent: u64,
}

impl<F: FnMut(Bytes) -> bool + Send + 'static> StreamSink<F> {
    /// A stream whose consumer already has the first `offset` bytes.
    pub fn new(offset: u64, send: F) -> Self {
        StreamSink {
            send,
            pos: offset,
            sent: offset,
        }
    }
}

/// The consumer of a [`StreamSink`] went away: the fetch stops.
fn gone() -> TransportError {
    TransportError::Stream {
        what: "handing on a blob stream".to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader is gone"),
    }
}

impl<F: FnMut(Bytes) -> bool + Send + 'static> Sink for StreamSink<F> {
    const SLICES: bool = false;
    fn offset(&self) -> u64 {
        self.pos
    }
    fn append(&mut self, chunk: Bytes) -> Result<(), TransportError> {
        let end = self.pos + chunk.len() as u64;
        if end > self.sent {
            let skip = (self.sent - self.pos) as usize;
            if !(self.send)(chunk.slice(skip..)) {
                return Err(gone());
            }
            self.sent = end;
        }
        self.pos = end;
        Ok(())
    }
    fn checkpoint(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    fn restart(&mut self) -> Result<(), TransportError> {
        self.pos = 0;
        Ok(())
    }
    fn slice_writer(&mut self) -> Result<Option<SliceWriter>, TransportError> {
        Ok(None)
    }
    fn hash_through(&mut self, _end: u64) -> Result<(), TransportError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_sink_never_repeats_a_byte() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        let mut s = StreamSink::new(0, move |b: Bytes| {
            g.lock().unwrap().extend_from_slice(&b);
            true
        });
        s.append(Bytes::from_static(b"abcd")).unwrap();
        // The server answered the resume with the whole blob: start over, skip.
        s.restart().unwrap();
        s.append(Bytes::from_static(b"ab")).unwrap();
        s.append(Bytes::from_static(b"cdef")).unwrap();
        assert_eq!(s.offset(), 6);
        s.append(Bytes::from_static(b"g")).unwrap();
        assert_eq!(&*got.lock().unwrap(), b"abcdefg");
        let mut from_mid = StreamSink::new(3, |_| false);
        assert_eq!(from_mid.offset(), 3);
        assert!(from_mid.append(Bytes::from_static(b"x")).is_err());
    }
}
