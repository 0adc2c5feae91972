//! Where a pull's content comes from: the reference's mirrors, in the configured order,
//! then the registry itself. A client is created and pinged on first use, so a pull that a
//! mirror serves in full never talks to the registry. A mirror that cannot be reached is
//! marked down and skipped for the rest of the pull.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use hoist_registry::{ClientOptions, Endpoint, RegistryClient, RegistryError};
use hoist_types::{Progress, ProgressEvent, Reference};

use crate::TransportError;
use crate::options::PullOptions;

/// One place to pull from.
#[derive(Debug)]
pub(crate) struct Source {
    /// `Some` for a mirror, `None` for the registry the reference names.
    mirror: Option<Endpoint>,
    /// The repository on this source.
    pub repo: String,
    /// Whether it may resolve tags.
    pub resolve_tags: bool,
    /// What to call it in messages before it answered (`mirror.example`, `docker.io`).
    pub label: String,
    client: tokio::sync::OnceCell<RegistryClient>,
    down: AtomicBool,
}

impl Source {
    /// Whether this is a mirror.
    pub fn is_mirror(&self) -> bool {
        self.mirror.is_some()
    }
}

/// The ordered sources of one pull.
#[derive(Debug)]
pub(crate) struct Sources {
    list: Vec<Source>,
    registry: String,
    opts: ClientOptions,
}

impl Sources {
    /// The mirrors configured for `reference` (see [`hoist_registry::mirrors`]), then the
    /// registry.
    pub fn new(reference: &Reference, opts: &PullOptions) -> Sources {
        let mut list: Vec<Source> = opts
            .mirrors
            .mirrors_for(reference.registry(), reference.repository())
            .into_iter()
            .map(|m| Source {
                label: m.endpoint.to_string(),
                mirror: Some(m.endpoint),
                repo: m.repository,
                resolve_tags: m.resolve_tags,
                client: tokio::sync::OnceCell::new(),
                down: AtomicBool::new(false),
            })
            .collect();
        list.push(Source {
            mirror: None,
            repo: reference.repository().to_owned(),
            resolve_tags: true,
            label: reference.registry().to_owned(),
            client: tokio::sync::OnceCell::new(),
            down: AtomicBool::new(false),
        });
        Sources {
            list,
            registry: reference.registry().to_owned(),
            opts: opts.registry.clone(),
        }
    }

    /// The sources to try now: those not marked down (the registry always).
    pub fn usable(&self) -> impl Iterator<Item = &Source> {
        self.list
            .iter()
            .filter(|s| !s.is_mirror() || !s.down.load(Ordering::Relaxed))
    }

    fn build(&self, s: &Source) -> Result<RegistryClient, RegistryError> {
        match &s.mirror {
            Some(e) => RegistryClient::for_endpoint(e, self.opts.clone()),
            None => RegistryClient::new(&self.registry, self.opts.clone()),
        }
    }

    /// The client of `s`, created and pinged on first use. A mirror that fails the ping
    /// is marked down.
    pub async fn client<'a>(&self, s: &'a Source) -> Result<&'a RegistryClient, TransportError> {
        let r = s
            .client
            .get_or_try_init(|| async {
                let c = self.build(s)?;
                c.ping().await?;
                Ok::<_, RegistryError>(c)
            })
            .await;
        if r.is_err() && s.is_mirror() {
            s.down.store(true, Ordering::Relaxed);
        }
        Ok(r?)
    }

    /// A client with the registry's options that is never pinged (for foreign URLs,
    /// which get no credentials anyway).
    pub fn plain_client(&self) -> Result<RegistryClient, TransportError> {
        Ok(RegistryClient::new(&self.registry, self.opts.clone())?)
    }

    /// Mark a mirror down after a failure that says it is unreachable or broken.
    pub fn note_failure(&self, s: &Source, e: &TransportError) {
        if s.is_mirror() && is_unreachable(e) {
            s.down.store(true, Ordering::Relaxed);
        }
    }

    /// Run `op` on each usable source (only those that may resolve tags when `by_tag`) in
    /// order, until one succeeds. A mirror's failure is reported and the next source is
    /// tried; the registry's failure (or the last one) is returned.
    pub async fn first_ok<'s, T, F, Fut>(
        &'s self,
        by_tag: bool,
        progress: &dyn Progress,
        what: &str,
        mut op: F,
    ) -> Result<(T, &'s Source), TransportError>
    where
        F: FnMut(RegistryClient, String) -> Fut,
        Fut: Future<Output = Result<T, TransportError>>,
    {
        let candidates: Vec<&Source> = self
            .usable()
            .filter(|s| !by_tag || s.resolve_tags)
            .collect();
        let mut last = None;
        for (i, s) in candidates.iter().enumerate() {
            let result = match self.client(s).await {
                Ok(c) => op(c.clone(), s.repo.clone()).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok((v, s)),
                Err(e) if i + 1 < candidates.len() && !is_local(&e) => {
                    self.note_failure(s, &e);
                    progress.event(&ProgressEvent::Status {
                        message: &format!(
                            "{what}: {} failed ({}); trying {}",
                            s.label,
                            hoist_types::error_chain(&e),
                            candidates[i + 1].label
                        ),
                    });
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| TransportError::NoSource {
            what: what.to_string(),
        }))
    }
}

/// A failure of our side (store, disk, task), where trying another source is pointless.
pub(crate) fn is_local(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Store(_)
            | TransportError::Io { .. }
            | TransportError::Stream { .. }
            | TransportError::Task { .. }
    )
}

/// A failure that says a source cannot be reached or keeps failing.
fn is_unreachable(e: &TransportError) -> bool {
    match e {
        TransportError::Registry(r) => matches!(
            r,
            RegistryError::GaveUp { .. }
                | RegistryError::Connect { .. }
                | RegistryError::Timeout { .. }
                | RegistryError::Tls { .. }
        ),
        _ => false,
    }
}
