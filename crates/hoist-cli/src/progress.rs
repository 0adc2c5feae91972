//! Progress reporters: bars on a terminal, plain lines on a pipe, or JSON lines.
//! Everything goes to stderr.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use hoist_types::{Digest, NoProgress, Progress, ProgressEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::opts::ProgressMode;

/// Build the reporter for a mode.
pub fn reporter(mode: ProgressMode) -> Box<dyn Progress> {
    let mode = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        m => m,
    };
    match mode {
        ProgressMode::Tty => Box::new(Bars::new()),
        ProgressMode::Plain => Box::new(Lines::new(false)),
        ProgressMode::Json => Box::new(Lines::new(true)),
        ProgressMode::None | ProgressMode::Auto => Box::new(NoProgress),
    }
}

/// indicatif bars: one per blob in flight plus a total.
struct Bars {
    multi: MultiProgress,
    state: Mutex<BarState>,
}

struct BarState {
    total: Option<ProgressBar>,
    blobs: HashMap<Digest, (ProgressBar, u64)>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            state: Mutex::new(BarState {
                total: None,
                blobs: HashMap::new(),
            }),
        }
    }

    fn blob_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix:>8} {msg:14} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
        )
        .expect("valid template")
        .progress_chars("=> ")
    }
}

impl Progress for Bars {
    fn event(&self, ev: &ProgressEvent<'_>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            ProgressEvent::Resolved {
                reference,
                digest,
                layers,
                total_bytes,
            } => {
                let _ = self.multi.println(format!(
                    "{reference}: resolved to {digest} ({layers} layers, {})",
                    ByteSize(*total_bytes)
                ));
                let pb = self.multi.add(ProgressBar::new(*total_bytes));
                pb.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>8} {msg:14} [{bar:30.green/white}] {bytes:>10}/{total_bytes:<10} {elapsed_precise}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                pb.set_prefix("total");
                st.total = Some(pb);
            }
            ProgressEvent::BlobStart {
                digest, size, kind, ..
            } => {
                if st.blobs.contains_key(*digest) {
                    // The same blob from another endpoint (a mirror fell back): keep its bar.
                    return;
                }
                let pb = self.multi.insert_from_back(1, ProgressBar::new(*size));
                pb.set_style(Self::blob_style());
                pb.set_prefix(kind.as_str());
                pb.set_message(digest.short().to_owned());
                st.blobs.insert((*digest).clone(), (pb, 0));
            }
            ProgressEvent::BlobProgress { digest, done } => {
                let mut delta = 0;
                if let Some((pb, last)) = st.blobs.get_mut(*digest) {
                    pb.set_position(*done);
                    delta = done.saturating_sub(*last);
                    *last = *done;
                }
                if let Some(t) = &st.total {
                    t.inc(delta);
                }
            }
            ProgressEvent::BlobDone {
                digest,
                size,
                kind,
                skipped,
            } => {
                let (done, bar) = match st.blobs.remove(*digest) {
                    Some((pb, last)) => (last, Some(pb)),
                    None => (0, None),
                };
                if let Some(t) = &st.total {
                    t.inc(size.saturating_sub(done));
                }
                if let Some(pb) = bar {
                    pb.finish_and_clear();
                    self.multi.remove(&pb);
                }
                let what = if *skipped { "exists" } else { "done" };
                let _ = self.multi.println(format!(
                    "{:>8} {} {what} ({})",
                    kind.as_str(),
                    digest.short(),
                    ByteSize(*size)
                ));
            }
            ProgressEvent::Retry {
                what,
                attempt,
                reason,
            } => {
                let _ = self
                    .multi
                    .println(format!("retry {attempt} of {what}: {reason}"));
            }
            ProgressEvent::Status { message } => {
                if let Some(t) = &st.total
                    && message.starts_with("writing")
                {
                    t.finish_and_clear();
                }
                let _ = self.multi.println(message);
            }
            _ => {}
        }
    }
}

/// Plain lines or JSON lines, with per-blob progress throttled.
struct Lines {
    json: bool,
    last: Mutex<HashMap<Digest, Instant>>,
}

impl Lines {
    fn new(json: bool) -> Lines {
        Lines {
            json,
            last: Mutex::new(HashMap::new()),
        }
    }

    fn emit(&self, line: String) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}

impl Progress for Lines {
    fn event(&self, ev: &ProgressEvent<'_>) {
        let interval = if self.json {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(2)
        };
        let line = match ev {
            ProgressEvent::Resolved {
                reference,
                digest,
                layers,
                total_bytes,
            } => {
                if self.json {
                    json!({"event":"resolved","reference":reference,"digest":digest,"layers":layers,"total_bytes":total_bytes}).to_string()
                } else {
                    format!(
                        "{reference}: resolved to {digest} ({layers} layers, {})",
                        ByteSize(*total_bytes)
                    )
                }
            }
            ProgressEvent::BlobStart {
                digest,
                size,
                kind,
                endpoint,
            } => {
                self.last
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((*digest).clone(), Instant::now());
                if self.json {
                    json!({"event":"blob_start","digest":digest,"size":size,"kind":kind.as_str(),"endpoint":endpoint}).to_string()
                } else if *endpoint == "unpack" {
                    format!("{} {digest}: unpacking {}", kind.as_str(), ByteSize(*size))
                } else {
                    format!(
                        "{} {digest}: fetching {} from {endpoint}",
                        kind.as_str(),
                        ByteSize(*size)
                    )
                }
            }
            ProgressEvent::BlobProgress { digest, done } => {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                match last.get_mut(*digest) {
                    Some(t) if now.duration_since(*t) >= interval => *t = now,
                    _ => return,
                }
                if self.json {
                    json!({"event":"blob_progress","digest":digest,"done":done}).to_string()
                } else {
                    format!("  {}: {}", digest.short(), ByteSize(*done))
                }
            }
            ProgressEvent::BlobDone {
                digest,
                size,
                kind,
                skipped,
            } => {
                self.last
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(*digest);
                if self.json {
                    json!({"event":"blob_done","digest":digest,"size":size,"kind":kind.as_str(),"skipped":skipped}).to_string()
                } else {
                    let what = if *skipped { "already present" } else { "done" };
                    format!("{} {digest}: {what} ({})", kind.as_str(), ByteSize(*size))
                }
            }
            ProgressEvent::Retry {
                what,
                attempt,
                reason,
            } => {
                if self.json {
                    json!({"event":"retry","what":what,"attempt":attempt,"reason":reason})
                        .to_string()
                } else {
                    format!("retry {attempt} of {what}: {reason}")
                }
            }
            ProgressEvent::Status { message } => {
                if self.json {
                    json!({"event":"status","message":message}).to_string()
                } else {
                    message.to_string()
                }
            }
            _ => return,
        };
        self.emit(line);
    }
}
