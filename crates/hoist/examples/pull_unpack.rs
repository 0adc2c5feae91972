//! Pull an image (async) and unpack it into a directory.
//!
//! ```sh
//! cargo run -p hoist --example pull_unpack -- 127.0.0.1:5000/library/alpine:3 /tmp/rootfs
//! ```

use std::path::Path;

/// Pulls `reference` into the store at `store`, then unpacks it into `dir` (created; it
/// must be absent or empty).
pub async fn run(reference: &str, store: &Path, dir: &Path) -> hoist::Result<hoist::PullReport> {
    let client = hoist::Client::builder().store(store).build()?;
    let pulled = client.pull(reference).await?;
    client.unpack(&pulled.image.id.to_string(), dir).await?;
    Ok(pulled)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [reference, dir] = args.as_slice() else {
        return Err("usage: pull_unpack REFERENCE DIR".into());
    };
    let store = std::env::var("HOIST_STORE").unwrap_or_else(|_| "hoist-store".into());
    let pulled = run(reference, Path::new(&store), Path::new(dir)).await?;
    println!("{} unpacked into {dir}", pulled.image.id);
    Ok(())
}
