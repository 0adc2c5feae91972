//! Garbage collection with a lease held: a sandbox keeps using an image's blobs while the
//! image is removed and the store collected; once the lease is dropped, gc frees them.
//!
//! ```sh
//! cargo run -p hoist --example gc_lease -- 127.0.0.1:5000/library/alpine:3 /tmp/hoist-store
//! ```

use std::path::Path;

/// What the two collections removed.
#[derive(Debug)]
pub struct Outcome {
    /// Blobs removed while the lease was held.
    pub freed_while_held: usize,
    /// Blobs removed after the lease was dropped.
    pub freed_after: usize,
    /// Whether the image's layers were still readable while held.
    pub layers_kept: bool,
}

/// Pulls `reference` under a lease, removes the image, collects twice: with the lease
/// held, then after dropping it.
pub fn run(reference: &str, store: &Path) -> hoist::Result<Outcome> {
    let client = hoist::blocking::Client::builder().store(store).build()?;
    let held = client.leased()?; // everything `held` touches survives gc
    let image = held.pull(reference)?.image;
    client.remove(&image.id.to_string(), true)?;
    let freed_while_held = client.gc()?.blobs.count;
    let mut layers_kept = true;
    for layer in &image.layers {
        layers_kept &= client.store().has_blob(&layer.digest)?.is_some();
    }
    drop(held);
    let freed_after = client.gc()?.blobs.count;
    Ok(Outcome {
        freed_while_held,
        freed_after,
        layers_kept,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let reference = args.next().ok_or("usage: gc_lease REFERENCE [STORE_DIR]")?;
    let store = args.next().unwrap_or_else(|| "hoist-store".into());
    println!("{:?}", run(&reference, Path::new(&store))?);
    Ok(())
}
