//! Reading a blob stream while checking it: [`VerifyingRead`], for the copy engine's
//! consumers that are not destinations (recompression, schema 1 diff IDs).

use hoist_types::Descriptor;

use crate::transports::BlobStream;

/// A [`Read`](std::io::Read) over a blob stream that checks size and digest as it goes
/// and fails at the end if they do not match (so a recompressed layer is never made from
/// bytes that are not the source's).
pub(crate) struct VerifyingRead {
    inner: crate::transports::BlobRead,
    hasher: hoist_types::Hasher,
    expected: Descriptor,
    n: u64,
    checked: bool,
}

impl VerifyingRead {
    pub(crate) fn new(stream: BlobStream, desc: &Descriptor) -> VerifyingRead {
        VerifyingRead {
            inner: stream.into_read(),
            hasher: hoist_types::Hasher::new(desc.digest.algorithm()),
            expected: desc.clone(),
            n: 0,
            checked: false,
        }
    }
}

impl VerifyingRead {
    /// Read to the end (a decompressor may stop before it) and check.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        if self.checked {
            Ok(())
        } else {
            Err(std::io::Error::other("blob not read to its end"))
        }
    }
}

impl std::io::Read for VerifyingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        if self.n > self.expected.size {
            return Err(std::io::Error::other(format!(
                "blob {} is longer than its {} bytes",
                self.expected.digest, self.expected.size
            )));
        }
        self.hasher.update(&buf[..n]);
        if n == 0 && !self.checked {
            self.checked = true;
            let h = std::mem::replace(
                &mut self.hasher,
                hoist_types::Hasher::new(self.expected.digest.algorithm()),
            );
            let actual = h.finish();
            if self.n != self.expected.size || actual != self.expected.digest {
                return Err(std::io::Error::other(format!(
                    "blob {}: got {} bytes with digest {actual}",
                    self.expected.digest, self.n
                )));
            }
        }
        Ok(n)
    }
}
