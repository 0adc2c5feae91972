//! `hoist serve`: the store as a read-only registry (Distribution API), a containerd
//! mirror, optionally pulling through.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use hoist_registry::MirrorSources;
use hoist_serve::{
    DEFAULT_MAX_REQUESTS, Htpasswd, PullThrough, PushOptions, ServeOptions, Server, TlsFiles,
};
use hoist_transport::PullOptions;
use hoist_types::Platform;

use crate::opts::{GlobalArgs, RegistryArgs, parse_duration};

/// Arguments of `hoist serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen, `ADDR:PORT` (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:5050", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// The registry whose images requests without containerd's `?ns=` ask for
    /// (`docker.io`, `127.0.0.1:5000`) [default: the only registry holding the repository].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub registry: Option<String>,
    /// Pull what the store lacks from the upstream registry (the request's `?ns=`, or
    /// --registry) with hoist's pull engine, then serve it.
    #[arg(long)]
    pub pull_through: bool,
    /// With --pull-through: how long a tag checked upstream is trusted before it is
    /// checked again (the stored one is served when the upstream is unreachable).
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    pub tag_ttl: Duration,
    /// With --pull-through: the platform pulled from a multi-platform image,
    /// `os/arch[/variant]` [default: the host's].
    #[arg(long)]
    pub platform: Option<String>,
    /// At most this many requests are served at once; more wait.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUESTS, value_name = "N")]
    pub max_requests: usize,
    /// Print containerd's `hosts.toml` and containers' `registries.conf` snippets that
    /// point clients at this server, and exit.
    #[arg(long)]
    pub print_containerd_config: bool,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. There
    /// is no plain-HTTP fallback.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require Basic authentication by the users of this htpasswd file (bcrypt entries,
    /// as `htpasswd -B` writes them). Use it with TLS: Basic sends the password in clear.
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Accept pushes into the store (blob uploads, cross-repository mounts, image
    /// manifest puts; each verified before anything is visible). Off by default.
    #[arg(long)]
    pub allow_push: bool,
    /// No request log on stderr.
    #[arg(long)]
    pub no_log: bool,
    /// How pull-through reaches the upstream.
    #[command(flatten)]
    pub upstream: RegistryArgs,
    #[command(flatten)]
    pub trust: crate::cmd::verify::TrustArgs,
}

/// Run it.
pub async fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    if a.print_containerd_config {
        print_config(&a);
        return Ok(());
    }
    anyhow::ensure!(a.max_requests >= 1, "--max-requests must be at least 1");
    let store = g.open_store()?;
    let pull_through = if a.pull_through {
        let platform = match &a.platform {
            Some(p) => p.parse::<Platform>()?,
            None => Platform::host(),
        };
        let mirrors = MirrorSources::from_env()
            .load()
            .context("reading the mirror configuration")?;
        let trust = a.trust.for_pull()?;
        let mut pull = PullOptions::default();
        pull.platform = platform;
        pull.registry = a.upstream.client_options()?;
        pull.mirrors = mirrors;
        pull.trust = trust.0;
        pull.registries_d = trust.1;
        Some(PullThrough {
            pull,
            tag_ttl: a.tag_ttl,
        })
    } else {
        None
    };
    let mut opts = ServeOptions::default();
    opts.listen = a.listen;
    opts.registry = a.registry.clone();
    opts.max_requests = a.max_requests;
    opts.pull_through = pull_through;
    opts.tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    opts.htpasswd = a.htpasswd.as_deref().map(Htpasswd::load).transpose()?;
    opts.push = a.allow_push.then(PushOptions::default);
    let mut server = Server::bind(store, opts).await?;
    if !a.no_log {
        server = server.on_request(|r| {
            let _ = writeln!(std::io::stderr().lock(), "{r}");
        });
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "listening on {}://{}",
            server.scheme(),
            server.local_addr()
        )?;
        out.flush()?;
    }
    server.run(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn print_config(a: &Args) {
    let host_port = a.listen.to_string();
    let scheme = if a.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{host_port}");
    let registry = a.registry.as_deref();
    let dir = registry.unwrap_or("_default");
    let upstream = registry.map(|r| {
        if r == "docker.io" {
            "https://registry-1.docker.io".to_owned()
        } else {
            format!("https://{r}")
        }
    });
    println!("# containerd: /etc/containerd/certs.d/{dir}/hosts.toml");
    println!(
        "# (config_path = \"/etc/containerd/certs.d\" in the CRI registry section; `ctr --hosts-dir`)"
    );
    print!(
        "{}",
        hoist_serve::hosts_toml(&url, upstream.as_deref(), None)
    );
    println!();
    println!("# containers (podman, skopeo, CRI-O): /etc/containers/registries.conf.d/hoist.conf");
    print!(
        "{}",
        hoist_serve::registries_conf(
            &host_port,
            registry.unwrap_or("docker.io"),
            a.tls_cert.is_none()
        )
    );
}
