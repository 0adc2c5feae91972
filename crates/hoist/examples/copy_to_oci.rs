//! Copy a registry image to an OCI image layout directory (no store involved).
//!
//! ```sh
//! cargo run -p hoist --example copy_to_oci -- 127.0.0.1:5000/library/alpine:3 /tmp/layout alpine
//! ```

use std::path::Path;

/// Copies `reference` from its registry into the layout `layout` under the name `tag`.
/// The store at `store` is opened, but a copy between two other transports leaves it alone.
pub async fn run(
    reference: &str,
    store: &Path,
    layout: &Path,
    tag: &str,
) -> hoist::Result<hoist::CopyReport> {
    let client = hoist::Client::builder().store(store).build()?;
    let destination = format!("oci:{}:{tag}", layout.display());
    client
        .copy(&format!("docker://{reference}"), &destination)
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [reference, layout, tag] = args.as_slice() else {
        return Err("usage: copy_to_oci REFERENCE LAYOUT_DIR TAG".into());
    };
    let store = std::env::var("HOIST_STORE").unwrap_or_else(|_| "hoist-store".into());
    let report = run(reference, Path::new(&store), Path::new(layout), tag).await?;
    println!("{:?} ({} blobs copied)", report.digest, report.blobs_copied);
    Ok(())
}
