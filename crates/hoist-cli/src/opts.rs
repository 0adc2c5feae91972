//! Options shared by several commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args, ValueEnum};
use hoist_registry::{ClientOptions, Credentials, RetryPolicy};
use hoist_store::Store;

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The store directory [default: /var/lib/hoist as root, else $XDG_DATA_HOME/hoist].
    #[arg(long, global = true, env = "HOIST_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How progress is shown on stderr.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// More logging on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

/// Progress styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Bars.
    Tty,
    /// Plain lines.
    Plain,
    /// One JSON object per line.
    Json,
    /// Nothing.
    None,
}

/// Output formats of read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// A table or plain text.
    #[default]
    Table,
    /// JSON.
    Json,
}

impl GlobalArgs {
    /// Set up tracing on stderr.
    pub fn init_logging(&self) {
        let level = match self.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }

    /// Open the store.
    pub fn open_store(&self) -> anyhow::Result<Store> {
        let root = self.store.clone().unwrap_or_else(Store::default_root);
        Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))
    }

    /// The effective progress mode.
    pub fn progress_mode(&self) -> ProgressMode {
        if self.quiet {
            ProgressMode::None
        } else {
            self.progress
        }
    }
}

/// How to reach a registry.
#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Verify TLS certificates (`--tls-verify=false` accepts any certificate).
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// Use plain HTTP (loopback registries fall back to it automatically).
    #[arg(long)]
    pub plain_http: bool,
    /// A directory of CA certificates (*.crt) and client.cert/client.key for the registry.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Credentials, `USER:PASSWORD`.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "HOIST_CREDS",
        hide_env_values = true
    )]
    pub creds: Option<String>,
    /// The credentials file to read [default: $REGISTRY_AUTH_FILE, containers auth.json, ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Connect timeout in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Idle timeout: the longest wait for response headers or for the next bytes of a
    /// body (`60`, `90s`, `500ms`). There is no total timeout.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub read_timeout: Duration,
    /// How many times a failed request is retried (5xx, 408, 429, connection errors,
    /// broken bodies; other 4xx are not). 0 turns retries off.
    #[arg(long, default_value_t = 3, env = "HOIST_RETRY_TIMES", value_name = "N")]
    pub retry_times: u32,
    /// The first wait before a retry (`500ms`, `2s`); it doubles with each retry (with
    /// jitter), up to 30s. A server's Retry-After is honoured up to 60s.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, env = "HOIST_RETRY_DELAY", value_name = "DURATION")]
    pub retry_delay: Duration,
}

/// Settings for one side of a copy between two registries, as skopeo's `--src-*` and
/// `--dest-*` options: each, when given, overrides the shared option for its side only.
#[derive(Debug, Args, Clone, Default)]
pub struct SideArgs {
    /// Credentials for the source registry, `USER:PASSWORD`.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub src_creds: Option<String>,
    /// Credentials for the destination registry, `USER:PASSWORD`.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub dest_creds: Option<String>,
    /// TLS verification for the source registry.
    #[arg(long, action = ArgAction::Set, value_name = "BOOL")]
    pub src_tls_verify: Option<bool>,
    /// TLS verification for the destination registry.
    #[arg(long, action = ArgAction::Set, value_name = "BOOL")]
    pub dest_tls_verify: Option<bool>,
    /// CA certificates (*.crt) and client.cert/client.key for the source registry.
    #[arg(long, value_name = "DIR")]
    pub src_cert_dir: Option<PathBuf>,
    /// CA certificates (*.crt) and client.cert/client.key for the destination registry.
    #[arg(long, value_name = "DIR")]
    pub dest_cert_dir: Option<PathBuf>,
    /// The credentials file for the source registry.
    #[arg(long, value_name = "FILE")]
    pub src_authfile: Option<PathBuf>,
    /// The credentials file for the destination registry.
    #[arg(long, value_name = "FILE")]
    pub dest_authfile: Option<PathBuf>,
}

impl SideArgs {
    /// The client options of the source and of the destination: `base` with each side's
    /// overrides.
    pub fn split(&self, base: &ClientOptions) -> anyhow::Result<(ClientOptions, ClientOptions)> {
        let side = |creds: &Option<String>,
                    tls: Option<bool>,
                    certs: &Option<PathBuf>,
                    auth: &Option<PathBuf>|
         -> anyhow::Result<ClientOptions> {
            let mut o = base.clone();
            if let Some(c) = creds {
                o.credentials = Some(parse_creds(c)?);
            }
            if let Some(v) = tls {
                o.tls_verify = v;
            }
            if let Some(d) = certs {
                o.cert_dir = Some(d.clone());
            }
            if let Some(f) = auth {
                o.auth_file = Some(f.clone());
            }
            Ok(o)
        };
        Ok((
            side(
                &self.src_creds,
                self.src_tls_verify,
                &self.src_cert_dir,
                &self.src_authfile,
            )?,
            side(
                &self.dest_creds,
                self.dest_tls_verify,
                &self.dest_cert_dir,
                &self.dest_authfile,
            )?,
        ))
    }
}

/// A duration: a number of seconds, or a humantime span (`500ms`, `2s`, `1m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 30, 30s or 500ms)"))
}

impl RegistryArgs {
    /// The registry client options these arguments describe.
    pub fn client_options(&self) -> anyhow::Result<ClientOptions> {
        let mut o = ClientOptions::default();
        o.tls_verify = self.tls_verify;
        o.cert_dir = self.cert_dir.clone();
        o.auth_file = self.authfile.clone();
        o.connect_timeout = Duration::from_secs(self.connect_timeout);
        o.read_timeout = self.read_timeout;
        o.retry.max_retries = self.retry_times;
        o.retry.initial_delay = self.retry_delay;
        o.retry.max_delay = self.retry_delay.max(RetryPolicy::default().max_delay);
        if self.plain_http {
            o.plain_http = Some(true);
        }
        if let Some(c) = &self.creds {
            o.credentials = Some(parse_creds(c)?);
        }
        Ok(o)
    }
}

/// Parse `USER:PASSWORD`.
pub fn parse_creds(s: &str) -> anyhow::Result<Credentials> {
    let (u, p) = s
        .split_once(':')
        .context("credentials must be given as USER:PASSWORD")?;
    anyhow::ensure!(!u.is_empty(), "credentials have an empty user name");
    Ok(Credentials {
        username: u.to_owned(),
        password: p.to_owned(),
    })
}
