//! `hoist load`: every image and tag of a docker-archive or oci-archive into the store.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hoist_archive::spool_archive;
use hoist_transport::transports::load_archive_trusted;
use serde_json::json;

use crate::cmd::print_json;
use crate::opts::{Format, GlobalArgs};
use crate::progress::reporter;

/// Arguments of `hoist load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The archive (`-` or absent: stdin, spooled to an anonymous temp file first); it may
    /// be compressed (gzip, zstd, bzip2 or xz), as `docker load` reads it.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    pub trust: crate::cmd::verify::TrustArgs,
}

/// Run it.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let (file, name) = match a.input.as_deref() {
        Some(p) if p != Path::new("-") => (
            File::open(p).with_context(|| format!("opening {}", p.display()))?,
            p.to_path_buf(),
        ),
        _ => {
            // Random access is needed (the archive is indexed, then read by offset): stdin
            // goes to a temp file that has no name, so nothing is left behind; a compressed
            // archive is decompressed on the way, in one copy.
            let name = PathBuf::from("<stdin>");
            let f = spool_archive(std::io::stdin().lock(), &name)
                .context("reading the archive from stdin")?;
            (f, name)
        }
    };
    let progress = reporter(g.progress_mode());
    let policy = a.trust.load()?.map(|(p, _)| p);
    // The copy engine runs on the runtime while this thread waits (`block_in_place`).
    let (format, loaded) = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(load_archive_trusted(
            &store,
            file,
            &name,
            policy.as_deref(),
            progress.as_ref(),
        ))
    })
    .with_context(|| format!("loading {}", name.display()))?;
    drop(progress);
    match a.format {
        Format::Json => print_json(&json!({
            "format": format.as_str(),
            "images": loaded.iter().map(|l| json!({
                "Id": l.id.to_string(),
                "Manifest": l.manifest.to_string(),
                "Names": l.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }))?,
        Format::Table => {
            for l in &loaded {
                if l.names.is_empty() {
                    println!("Loaded image ID: {}", l.id);
                }
                for n in &l.names {
                    println!("Loaded image: {}", n.familiar());
                }
            }
        }
    }
    Ok(())
}
