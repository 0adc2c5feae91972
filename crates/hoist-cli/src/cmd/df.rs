//! `hoist df`: disk usage by kind, shared against unique per image, reclaimable.

use bytesize::ByteSize;
use hoist_store::Amount;

use crate::cmd::images::print_table;
use crate::cmd::print_json;
use crate::opts::{Format, GlobalArgs};

/// Arguments of `hoist df`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn row(kind: &str, a: Amount, reclaim: Amount) -> Vec<String> {
    vec![
        kind.to_owned(),
        a.count.to_string(),
        ByteSize(a.bytes).to_string(),
        format!("{} ({})", ByteSize(reclaim.bytes), reclaim.count),
    ]
}

/// Run it.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let u = store.disk_usage()?;
    if a.format == Format::Json {
        return print_json(&u);
    }
    let r = &u.reclaimable;
    let temp = Amount {
        count: r.ingests.count + r.temp_files.count,
        bytes: r.ingests.bytes + r.temp_files.bytes,
    };
    print_table(&[
        vec![
            "TYPE".into(),
            "COUNT".into(),
            "SIZE".into(),
            "RECLAIMABLE".into(),
        ],
        row("blobs", u.blobs, r.blobs),
        row("layer tars", u.layer_tars, Amount::default()),
        row("rootfs (flattened)", u.rootfs_flat, r.rootfs_flat),
        row("rootfs (per layer)", u.rootfs_layer, r.rootfs_layer),
        row("ingests", u.ingests, temp),
    ]);
    println!();
    let mut table = vec![vec![
        "IMAGE ID".to_string(),
        "NAMES".into(),
        "SIZE".into(),
        "SHARED".into(),
        "UNIQUE".into(),
        "ROOTFS UNIQUE".into(),
        "ROOTFS SHARED".into(),
        "LAYER TARS".into(),
    ]];
    for i in &u.images {
        table.push(vec![
            i.id.short().to_owned(),
            if i.names.is_empty() {
                "<none>".into()
            } else {
                i.names.join(",")
            },
            ByteSize(i.size).to_string(),
            ByteSize(i.shared).to_string(),
            ByteSize(i.unique).to_string(),
            ByteSize(i.rootfs_unique).to_string(),
            ByteSize(i.rootfs_shared).to_string(),
            ByteSize(i.layer_tars).to_string(),
        ]);
    }
    print_table(&table);
    Ok(())
}
