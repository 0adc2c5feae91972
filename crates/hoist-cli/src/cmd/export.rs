//! `hoist export`: a flattened root filesystem tar, whiteouts applied, streamed.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use bytesize::ByteSize;
use hoist_unpack::Limits;

use crate::opts::GlobalArgs;
use crate::progress::reporter;

/// Arguments of `hoist export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image in the store: a name, an ID or an ID prefix.
    pub image: String,
    /// The tar file to write (`-` for stdout). A file appears only when complete.
    #[arg(short, long, value_name = "FILE.tar")]
    pub output: PathBuf,
}

/// Run it.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let image = store.resolve(&a.image)?;
    let progress = reporter(g.progress_mode());
    let start = Instant::now();
    let limits = Limits::default();
    let report = if a.output == Path::new("-") {
        let stdout = std::io::stdout().lock();
        hoist_unpack::export(
            &store,
            &image,
            BufWriter::with_capacity(1 << 20, stdout),
            &limits,
            progress.as_ref(),
        )
        .with_context(|| format!("exporting {}", a.image))?
    } else {
        let dir = match a.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".hoist-export-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temp file in {}", dir.display()))?;
        let report = {
            let w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            hoist_unpack::export(&store, &image, w, &limits, progress.as_ref())
                .with_context(|| format!("exporting {}", a.image))?
        };
        tmp.as_file_mut().flush()?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
        }
        tmp.persist(&a.output)
            .with_context(|| format!("writing {}", a.output.display()))?;
        report
    };
    drop(progress);
    if !g.quiet {
        eprintln!(
            "exported {} ({}) in {:.2}s: {} entries, {}",
            a.image,
            image.id.short(),
            start.elapsed().as_secs_f64(),
            report.entries,
            ByteSize(report.bytes)
        );
    }
    Ok(())
}
