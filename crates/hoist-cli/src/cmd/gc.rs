//! `hoist gc`: remove what no image, name or work in flight needs.

use std::time::Duration;

use anyhow::Context as _;
use bytesize::ByteSize;
use hoist_store::{Amount, DEFAULT_INGEST_GRACE, GcOptions};

use crate::cmd::print_json;
use crate::opts::{Format, GlobalArgs, parse_duration};

/// Arguments of `hoist gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep unreferenced blobs younger than this (e.g. 10m) [default: 0s].
    #[arg(long, value_parser = parse_duration)]
    pub grace: Option<Duration>,
    /// Keep resumable partial downloads unused for less than this [default: 24h].
    #[arg(long, value_parser = parse_duration)]
    pub ingest_grace: Option<Duration>,
    /// List each removed item.
    #[arg(long)]
    pub list: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn line(label: &str, a: Amount) -> String {
    format!("{label:<22}{:>6}  {}", a.count, ByteSize(a.bytes))
}

/// Run it.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let mut opts = GcOptions::default();
    opts.dry_run = a.dry_run;
    opts.blob_grace = a.grace.unwrap_or(Duration::ZERO);
    opts.ingest_grace = a.ingest_grace.unwrap_or(DEFAULT_INGEST_GRACE);
    let report = store.gc(&opts).with_context(|| {
        format!(
            "collecting garbage in {} (if a record is broken, run `hoist fsck --repair`)",
            store.root().display()
        )
    })?;
    if a.format == Format::Json {
        return print_json(&report);
    }
    if a.list {
        for item in &report.removed {
            println!(
                "{} {} ({})",
                item.kind,
                item.path.display(),
                ByteSize(item.bytes)
            );
        }
    }
    let verb = if a.dry_run { "Would remove" } else { "Removed" };
    println!("{verb}:");
    println!("{}", line("  blobs", report.blobs));
    println!("{}", line("  rootfs (flattened)", report.rootfs_flat));
    println!("{}", line("  rootfs (per layer)", report.rootfs_layer));
    println!("{}", line("  stale ingests", report.ingests));
    println!("{}", line("  temp files", report.temp_files));
    println!("{}", line("  dead leases", report.dead_leases));
    println!("{}", line("  total", report.total()));
    println!(
        "Kept {} blobs ({}) and {} rootfs entries ({}); {} live leases hold {} digests{}; {} ms",
        report.kept_blobs.count,
        ByteSize(report.kept_blobs.bytes),
        report.kept_rootfs.count,
        ByteSize(report.kept_rootfs.bytes),
        report.live_leases,
        report.leased_digests,
        if report.busy > 0 {
            format!("; {} rootfs entries busy (being built), left", report.busy)
        } else {
            String::new()
        },
        report.elapsed_ms
    );
    Ok(())
}
