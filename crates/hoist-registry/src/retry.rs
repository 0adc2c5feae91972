//! Retries: which failures are retried, how long to wait between attempts, and the
//! bounds that make every retry loop stop by itself.
//!
//! The policy is pure data ([`RetryPolicy`]); [`Backoff`] is the state of one operation's
//! loop. The client retries each request up to the response headers (and whole small
//! bodies: manifests, configs, listing pages); a blob body that breaks off is resumed by
//! the caller (`hoist-transport`) with its own [`Backoff`], so the two never multiply.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoist_types::{Progress, ProgressEvent};

use crate::RegistryError;

/// How failed requests are retried: exponential backoff with jitter, `Retry-After`
/// honoured up to a cap, a bounded number of retries and a bounded total time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (`--retry-times`); 0 turns retries off.
    pub max_retries: u32,
    /// The first wait (`--retry-delay`). Each further retry doubles it, up to
    /// [`max_delay`](Self::max_delay); the actual wait is drawn in `[d/2, d]` (jitter), so
    /// many clients that failed together do not come back together.
    pub initial_delay: Duration,
    /// The longest wait between two attempts, unless the server asks for more with
    /// `Retry-After` (see [`max_retry_after`](Self::max_retry_after)).
    pub max_delay: Duration,
    /// A server's `Retry-After` (seconds or HTTP date) is honoured up to this long; a
    /// longer one is cut to it.
    pub max_retry_after: Duration,
    /// No retry starts later than this after the operation's first attempt. Bounds the
    /// time spent failing, not a healthy transfer: a slow download that keeps making
    /// progress is never cut off.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (from 1): `initial_delay * 2^(retry-1)`, at
    /// most `max_delay`, scaled into `[d/2, d]` by `jitter` (in `[0, 1)`). A server's
    /// `Retry-After`, capped at `max_retry_after`, is used instead when it is longer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hoist_registry::RetryPolicy;
    ///
    /// let p = RetryPolicy::default(); // 500 ms first, doubling, at most 30 s
    /// assert_eq!(p.delay(1, None, 1.0), Duration::from_millis(500));
    /// assert_eq!(p.delay(3, None, 1.0), Duration::from_secs(2));
    /// assert_eq!(p.delay(3, None, 0.0), Duration::from_secs(1)); // jitter: [d/2, d]
    /// assert_eq!(p.delay(20, None, 1.0), Duration::from_secs(30));
    /// // A server's Retry-After wins when longer, up to max_retry_after (60 s).
    /// assert_eq!(p.delay(1, Some(Duration::from_secs(10)), 1.0), Duration::from_secs(10));
    /// assert_eq!(p.delay(1, Some(Duration::from_secs(600)), 1.0), Duration::from_secs(60));
    /// ```
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let base = self
            .initial_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let jitter = jitter.clamp(0.0, 1.0);
        let backoff = base / 2 + base.mul_f64(jitter) / 2;
        match retry_after {
            Some(ra) => ra.min(self.max_retry_after).max(backoff),
            None => backoff,
        }
    }
}

/// A random number in `[0, 1)` for jitter (from the std hasher's random keys; no crate).
pub fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        Instant::now()
            .elapsed()
            .as_nanos()
            .try_into()
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The state of one operation's retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    start: Instant,
    retries: u32,
}

impl Backoff {
    /// A fresh loop under `policy`.
    pub fn new(policy: &RetryPolicy) -> Backoff {
        Backoff {
            policy: policy.clone(),
            start: Instant::now(),
            retries: 0,
        }
    }

    /// Whether to retry after `err`, and after how long; `None` to give up (the error is
    /// not transient, or the count or time budget is spent).
    pub fn next(&mut self, err: &RegistryError) -> Option<Duration> {
        if !err.is_retryable() {
            return None;
        }
        self.next_delay(err.retry_after())
    }

    /// Like [`next`](Self::next) for a failure the caller already judged transient.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.retries >= self.policy.max_retries {
            return None;
        }
        let delay = self.policy.delay(self.retries + 1, retry_after, jitter());
        if self.start.elapsed() + delay > self.policy.max_elapsed {
            return None;
        }
        self.retries += 1;
        Some(delay)
    }

    /// Progress was made: the next failure starts a fresh count and time budget.
    pub fn reset(&mut self) {
        self.retries = 0;
        self.start = Instant::now();
    }

    /// Retries so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Time since the first attempt (or the last [`reset`](Self::reset)).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A progress reporter shared with a client, so that the retries it makes are reported
/// ([`ProgressEvent::Retry`]) to whoever shows progress.
#[derive(Clone)]
pub struct SharedProgress(pub Arc<dyn Progress>);

impl fmt::Debug for SharedProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedProgress(..)")
    }
}

impl SharedProgress {
    /// Report one retry of `what` (a URL), attempt number `attempt` (from 2), after
    /// `err`, waiting `delay`.
    pub fn retry(&self, what: &str, attempt: u32, err: &dyn std::error::Error, delay: Duration) {
        self.0.event(&ProgressEvent::Retry {
            what,
            attempt,
            reason: &format!(
                "{}; retrying in {}",
                hoist_types::error_chain(err),
                fmt_delay(delay)
            ),
        });
    }
}

/// A short human form of a delay: `250ms`, `1.5s`.
pub fn fmt_delay(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 4,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_are_capped_and_jittered() {
        let p = policy();
        let ms = |d: Duration| d.as_millis();
        // jitter 1.0 (upper end) gives d, jitter 0 gives d/2.
        let table: &[(u32, f64, u128)] = &[
            (1, 1.0, 100),
            (1, 0.0, 50),
            (2, 1.0, 200),
            (3, 1.0, 300),
            (3, 0.0, 150),
            (9, 1.0, 300),
            (40, 1.0, 300),
        ];
        for (retry, j, want) in table {
            assert_eq!(
                ms(p.delay(*retry, None, *j)),
                *want,
                "retry {retry} jitter {j}"
            );
        }
        // Retry-After wins when longer, up to its cap; a shorter one does not shorten.
        assert_eq!(ms(p.delay(1, Some(Duration::from_secs(1)), 1.0)), 1000);
        assert_eq!(ms(p.delay(1, Some(Duration::from_secs(3600)), 1.0)), 2000);
        assert_eq!(ms(p.delay(3, Some(Duration::from_millis(1)), 1.0)), 300);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn backoff_is_bounded_by_count_time_and_kind() {
        let transient = RegistryError::Http {
            method: "GET",
            url: "u".into(),
            status: 503,
            message: "busy".into(),
            retry_after: None,
        };
        let permanent = RegistryError::NotFound {
            url: "u".into(),
            what: "x".into(),
        };
        let mut b = Backoff::new(&policy());
        assert_eq!(b.next(&permanent), None);
        for _ in 0..4 {
            assert!(b.next(&transient).is_some());
        }
        assert_eq!(b.next(&transient), None, "count spent");
        assert_eq!(b.retries(), 4);
        b.reset();
        assert!(b.next(&transient).is_some(), "progress resets the count");

        let mut short = Backoff::new(&RetryPolicy {
            max_elapsed: Duration::from_millis(10),
            ..policy()
        });
        assert_eq!(short.next(&transient), None, "time budget spent");
        let mut none = Backoff::new(&RetryPolicy::none());
        assert_eq!(none.next(&transient), None);
    }

    #[test]
    fn delay_format() {
        assert_eq!(fmt_delay(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_delay(Duration::from_millis(1500)), "1.5s");
    }
}
