//! Writes the ext4 or erofs image of an image in a hoist store with hoist's own writers,
//! optionally with a dm-verity tree, and prints what it did and how long each step took.
//!
//! ```text
//! cargo run --release -p hoist-mkfs --example rootfs_image -- STORE IMAGE ext4|erofs OUT [--layer N] [--verity]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use hoist_mkfs::erofs::{ErofsSource, build_erofs};
use hoist_mkfs::ext4::{Ext4Options, Ext4Source, build_ext4};
use hoist_store::Store;
use hoist_types::NoProgress;
use hoist_unpack::Limits;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, image, format, out, rest @ ..] = &args[..] else {
        return Err("usage: rootfs_image STORE IMAGE ext4|erofs OUT [--layer N] [--verity]".into());
    };
    let layer = rest
        .iter()
        .position(|a| a == "--layer")
        .and_then(|i| rest.get(i + 1))
        .map(|n| n.parse::<usize>())
        .transpose()?;
    let verity = rest.iter().any(|a| a == "--verity");
    let store = Store::open(store)?;
    let rec = store.resolve(image)?;
    let out = PathBuf::from(out);
    let limits = Limits::default();
    if rest.iter().any(|a| a == "--passes") {
        // Each pass alone: pass 1 (the tree, the file data spooled beside OUT) and pass 2
        // (the data from the spool, into nothing; on one thread, then on every core).
        let spool = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let started = Instant::now();
        let tree = hoist_unpack::tree::FsTree::flattened_spooled(
            &store,
            &rec,
            &spool,
            &limits,
            &NoProgress,
        )?;
        println!(
            "pass 1 ({} inodes): {:?}",
            tree.inodes.len(),
            started.elapsed()
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        for threads in [1, cores] {
            let started = Instant::now();
            let bytes = std::sync::atomic::AtomicU64::new(0);
            tree.stream_data(&rec, &NoProgress, threads, || {
                |_, _, b: &[u8]| {
                    bytes.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
            })?;
            println!(
                "pass 2 ({} bytes) on {threads} threads: {:?}",
                bytes.into_inner(),
                started.elapsed()
            );
        }
    }
    let started = Instant::now();
    let size = match format.as_str() {
        "erofs" => build_erofs(
            &store,
            &rec,
            layer.map_or(ErofsSource::Flattened, ErofsSource::Layer),
            &out,
            &limits,
            &NoProgress,
        )?,
        "ext4" => build_ext4(
            &store,
            &rec,
            layer.map_or(Ext4Source::Flattened, Ext4Source::Layer),
            &out,
            &Ext4Options::default(),
            &limits,
            &NoProgress,
        )?,
        other => return Err(format!("unknown format {other}: want ext4 or erofs").into()),
    };
    let built = started.elapsed();
    println!(
        "{format} image {} of {size} bytes in {built:?}",
        out.display()
    );
    if verity {
        let started = Instant::now();
        let key = match layer {
            None => format!(
                "flat:{}",
                rec.chain_ids
                    .last()
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ),
            Some(i) => format!("layer:{}", rec.diff_ids[i]),
        };
        let v = hoist_mkfs::verity::append_verity(&out, key.as_bytes())?;
        println!(
            "verity tree in {:?}: {}",
            started.elapsed(),
            serde_json::to_string(&v)?
        );
    }
    Ok(())
}
