//! Pull an image and build its erofs root filesystem, in one call (cached by chain ID).
//!
//! ```sh
//! cargo run -p hoist --example pull_rootfs -- 127.0.0.1:5000/library/alpine:3 /tmp/hoist-store
//! ```

use std::path::Path;

/// Pulls `reference` into the store at `store` (when missing) and builds its erofs rootfs.
pub fn run(reference: &str, store: &Path) -> hoist::Result<hoist::BuildResult> {
    let client = hoist::blocking::Client::builder().store(store).build()?;
    let opts = hoist::RootfsOptions::new(hoist::Format::Erofs);
    client.rootfs(reference, &opts)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let reference = args
        .next()
        .ok_or("usage: pull_rootfs REFERENCE [STORE_DIR]")?;
    let store = args.next().unwrap_or_else(|| "hoist-store".into());
    let built = run(&reference, Path::new(&store))?;
    println!("{}", built.rootfs_path.display());
    Ok(())
}
