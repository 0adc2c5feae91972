//! `hoist push IMAGE [DEST]`: copy an image from the store to a registry.

use hoist_transport::transports::ImageRef;
use hoist_types::Reference;

use crate::cmd::copy::{CopyFlags, copy_refs};
use crate::opts::{GlobalArgs, SideArgs};

/// Arguments of `hoist push`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image in the store (a name, an ID or a digest).
    pub image: String,
    /// Where to push it, `HOST/REPO[:TAG]` (with or without `docker://`); default: the
    /// image's own name.
    pub destination: Option<String>,
    #[command(flatten)]
    pub flags: CopyFlags,
}

/// Run it.
pub async fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let src = ImageRef::parse(&format!("hoist:{}", a.image))?;
    let dest = match &a.destination {
        Some(d) => d.strip_prefix("docker://").unwrap_or(d).to_owned(),
        None => {
            let r = Reference::parse(&a.image).map_err(|e| {
                anyhow::anyhow!(
                    "{:?} is not a name to push to ({e}); give a destination",
                    a.image
                )
            })?;
            anyhow::ensure!(
                r.digest().is_none(),
                "{:?} names a digest; give a destination to push to",
                a.image
            );
            r.to_string()
        }
    };
    let dst = ImageRef::parse(&format!("docker://{dest}"))?;
    copy_refs(&src, &dst, &a.flags, &SideArgs::default(), g).await
}
