//! The settings of moving images from registries: what a pull (and a copy from a
//! `docker://` source) uses to reach the registry and its mirrors and to fetch blobs.
//! A leaf module: every other module may use it.

use std::time::Duration;

use hoist_registry::MirrorConfig;
use hoist_types::Platform;

/// Default number of layers fetched at once.
pub const DEFAULT_JOBS: usize = 6;
/// Blobs at least this large are fetched over several Range connections.
pub const DEFAULT_RANGE_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Connections per large blob.
pub const DEFAULT_RANGE_CONNECTIONS: usize = 4;
/// How long a large blob streams over one connection before its rate decides whether
/// the rest is worth slicing.
pub const DEFAULT_RANGE_PROBE: Duration = Duration::from_secs(1);

/// What to pull and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PullOptions {
    /// The platform to select from an index.
    pub platform: Platform,
    /// How many blobs are fetched at once (at least 1).
    pub jobs: usize,
    /// Registry client settings (TLS, credentials, timeouts, retries); mirrors get them
    /// too, except explicit credentials.
    pub registry: hoist_registry::ClientOptions,
    /// Mirrors tried, in order, before the registry ([`MirrorConfig::empty`]: none).
    pub mirrors: MirrorConfig,
    /// Blobs of at least this many bytes are fetched over several Range connections.
    pub range_threshold: u64,
    /// Connections per large blob (1: never split).
    pub range_connections: usize,
    /// A large blob first streams over one connection for this long; the rest is sliced
    /// only if that connection was slower than [`crate::FAST_LINK`] bytes a second (a
    /// fast connection is CPU-bound, and slicing would only add work). Zero slices at once.
    pub range_probe: Duration,
    /// Fetch foreign (non-distributable) layers from their `urls`, never with
    /// credentials. Off by default: such a layer is an error.
    pub foreign_layers: bool,
    /// The trust policy (containers-policy.json) enforced on the image's top manifest
    /// before any blob is fetched (`None`: accept anything).
    pub trust: Option<std::sync::Arc<hoist_trust::Policy>>,
    /// registries.d: lookaside stores of simple signatures, read when `trust` needs them.
    pub registries_d: Option<std::sync::Arc<hoist_trust::registries_d::RegistriesD>>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            jobs: DEFAULT_JOBS,
            registry: hoist_registry::ClientOptions::default(),
            mirrors: MirrorConfig::empty(),
            range_threshold: DEFAULT_RANGE_THRESHOLD,
            range_connections: DEFAULT_RANGE_CONNECTIONS,
            range_probe: DEFAULT_RANGE_PROBE,
            foreign_layers: false,
            trust: None,
            registries_d: None,
        }
    }
}
