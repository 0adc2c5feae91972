//! A background pull's state, as the pull-through requests and the streamed downloads
//! waiting on it see it, and how long they wait.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::ApiError;

/// A streamed blob whose download made no progress for this long ends in an error.
pub(crate) const STREAM_IDLE: Duration = Duration::from_secs(120);
/// The last chunk of a streamed blob waits at most this long for its pull to commit.
pub(crate) const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// A background pull's state.
#[derive(Debug, Clone)]
pub(crate) enum PullState {
    Running,
    Done(Instant),
    /// How it failed, as answered to a client (`Upstream`, or `Denied` by the policy).
    Failed(ApiError, Instant),
}

/// Wait for a pull to end, at most `limit`.
pub(crate) async fn wait_pull(mut rx: watch::Receiver<PullState>, limit: Duration) -> PullState {
    let wait = async {
        loop {
            let s = rx.borrow_and_update().clone();
            if !matches!(s, PullState::Running) {
                return s;
            }
            if rx.changed().await.is_err() {
                let s = rx.borrow().clone();
                return match s {
                    PullState::Running => PullState::Failed(
                        ApiError::Upstream("the pull ended without a result".into()),
                        Instant::now(),
                    ),
                    s => s,
                };
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or(PullState::Running)
}
