//! `hoist fsck`: check (and with `--repair`, fix) the store.

use std::io::Write as _;

use anyhow::Context as _;
use bytesize::ByteSize;
use hoist_store::FsckOptions;

use crate::cmd::print_json;
use crate::opts::{Format, GlobalArgs};

/// Arguments of `hoist fsck`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove what is corrupt or orphaned (an image that needs a missing or corrupt blob
    /// is removed too: pull it again) and rewrite index.json.
    #[arg(long)]
    pub repair: bool,
    /// Threads re-hashing blobs.
    #[arg(short, long, default_value_t = 2)]
    pub jobs: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Run it. Exits 0 when the store is clean, 1 when problems were found and all repaired,
/// 2 when problems remain.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let mut opts = FsckOptions::default();
    opts.repair = a.repair;
    opts.jobs = a.jobs;
    let report = store
        .fsck(&opts)
        .with_context(|| format!("checking the store at {}", store.root().display()))?;
    if a.format == Format::Json {
        print_json(&report)?;
    } else {
        println!(
            "Checked layout version {}, {} blobs ({} re-hashed), {} images, {} names, {} rootfs entries in {} ms",
            report.layout_version,
            report.blobs_checked,
            ByteSize(report.bytes_hashed),
            report.images_checked,
            report.names_checked,
            report.rootfs_checked,
            report.elapsed_ms
        );
        for p in &report.problems {
            let at = p
                .path
                .as_ref()
                .map(|p| format!(" [{}]", p.display()))
                .unwrap_or_default();
            let kind = serde_json::to_value(p.kind)?;
            println!("{}: {}{at}", kind.as_str().unwrap_or("problem"), p.detail);
            if let Some(r) = &p.repaired {
                println!("  repaired: {r}");
            }
        }
        for r in &report.resumable {
            println!(
                "resumable download of {}: {} of {} bytes kept{} [{}]",
                r.digest,
                r.offset,
                r.size.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                if r.in_use { ", in use" } else { "" },
                r.path.display()
            );
        }
        if report.is_clean() {
            println!("The store is clean.");
        } else if report.unrepaired() == 0 {
            println!("{} problems found, all repaired.", report.problems.len());
        } else {
            println!(
                "{} problems found, {} not repaired{}.",
                report.problems.len(),
                report.unrepaired(),
                if a.repair { "" } else { " (run with --repair)" }
            );
        }
    }
    std::io::stdout().flush()?;
    let code = if report.is_clean() {
        0
    } else if report.unrepaired() == 0 {
        1
    } else {
        2
    };
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
