//! `hoist login` and `hoist logout`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context as _;
use hoist_registry::{Credentials, RegistryClient, auth_config};

use crate::opts::{GlobalArgs, RegistryArgs};

/// Arguments of `hoist login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The registry, `host[:port]`.
    pub registry_host: String,
    /// User name.
    #[arg(short, long)]
    pub username: String,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Store the credentials without checking them against the registry.
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Arguments of `hoist logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The registry, `host[:port]`.
    pub registry_host: String,
    /// The credentials file [default: as for login].
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

/// `hoist login`.
pub async fn login(a: LoginArgs, _g: &GlobalArgs) -> anyhow::Result<()> {
    let password = match (&a.password, a.password_stdin) {
        (Some(_), true) => anyhow::bail!("give either --password or --password-stdin"),
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, false) => {
            anyhow::ensure!(
                !std::io::stdin().is_terminal(),
                "give --password-stdin (and the password on stdin) or --password"
            );
            anyhow::bail!("no password given: use --password-stdin")
        }
    };
    let creds = Credentials {
        username: a.username.clone(),
        password,
    };
    let host = a
        .registry_host
        .trim_start_matches("docker://")
        .trim_end_matches('/');
    if !a.no_verify {
        let mut opts = a.registry.client_options()?;
        opts.credentials = Some(creds.clone());
        let client = RegistryClient::new(host, opts)?;
        client
            .check_credentials()
            .await
            .with_context(|| format!("logging in to {host}"))?;
    }
    let file = auth_config::login(host, &creds, a.registry.authfile.as_deref())?;
    eprintln!("Login succeeded; credentials stored in {}", file.display());
    Ok(())
}

/// `hoist logout`.
pub fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    let host = a
        .registry_host
        .trim_start_matches("docker://")
        .trim_end_matches('/');
    if auth_config::logout(host, a.authfile.as_deref())? {
        eprintln!("Removed credentials for {host}");
        Ok(())
    } else {
        anyhow::bail!("not logged in to {host}")
    }
}
