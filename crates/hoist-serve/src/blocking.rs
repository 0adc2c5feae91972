//! Work the async handlers hand to the blocking pool, and positioned reads of blob files.

use std::os::unix::fs::FileExt;

use crate::error::ApiError;

/// Runs `f` on tokio's blocking pool (store reads and writes, bcrypt) and returns its result.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// Up to `want` bytes of `f` from `pos` (fewer at its end), with positioned reads.
pub(crate) fn read_at(f: &std::fs::File, pos: u64, want: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match FileExt::read_at(f, &mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}
