//! `hoist images`, `hoist tag`, `hoist rmi`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use bytesize::ByteSize;
use hoist_store::{ImageRecord, Store};
use hoist_types::{Digest, MAX_MANIFEST_SIZE, Manifest, Reference};
use serde_json::json;

use crate::cmd::print_json;
use crate::opts::{Format, GlobalArgs};

/// Arguments of `hoist images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only images of this repository (e.g. `alpine`, `127.0.0.1:5000/ns/repo`).
    pub repository: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Show manifest digests.
    #[arg(long)]
    pub digests: bool,
    /// Show full image IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show images as a tree of parent/child links (shared base layers).
    #[arg(long)]
    pub tree: bool,
    /// Also list the unnamed images that belong to a named multi-platform image (its
    /// other platforms and attestations, copied in with `--all`), which are hidden by
    /// default as Docker hides them.
    #[arg(short, long)]
    pub all: bool,
}

/// Arguments of `hoist tag`.
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The image: a name, an ID or an ID prefix.
    pub source: String,
    /// The new name.
    pub target: String,
}

/// Arguments of `hoist rmi`.
#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Images: names, IDs or ID prefixes.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove an image even when several names point at it.
    #[arg(short, long)]
    pub force: bool,
}

/// "3 days ago" for an RFC 3339 time.
pub fn ago(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| humantime::parse_rfc3339_weak(c).ok()) else {
        return "N/A".into();
    };
    let Ok(d) = SystemTime::now().duration_since(t) else {
        return "in the future".into();
    };
    let s = d.as_secs();
    let (n, unit) = match s {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=1_209_599 => (s / 86_400, "day"),
        1_209_600..=5_183_999 => (s / 604_800, "week"),
        5_184_000..=63_071_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The indexes of named images and the manifests they list: an unnamed image among them
/// (another platform, an attestation, copied or pushed in with the index) is part of a
/// named image.
fn named_members(store: &Store, images: &[ImageRecord]) -> BTreeSet<Digest> {
    let mut out = BTreeSet::new();
    for img in images.iter().filter(|i| !i.names.is_empty()) {
        for d in indexes_of(img) {
            if let Ok(bytes) = store.read_blob(&d, MAX_MANIFEST_SIZE)
                && let Ok((Manifest::Index(idx), _)) = Manifest::parse(&bytes, None)
            {
                out.extend(idx.manifests.iter().map(|e| e.digest.clone()));
            }
            out.insert(d);
        }
    }
    out
}

fn indexes_of(img: &ImageRecord) -> Vec<Digest> {
    img.index
        .iter()
        .chain(img.manifests.iter().filter_map(|m| m.index.as_ref()))
        .map(|d| d.digest.clone())
        .collect()
}

/// One row per name (or one `<none>` row for an unnamed image), each seen through the
/// manifest its name points at (its size and digest are that manifest's). Unnamed images
/// among `members` (see [`named_members`]) are part of a named one, and left out unless
/// `all`.
fn rows(
    images: &[ImageRecord],
    filter: Option<&Reference>,
    members: Option<&BTreeSet<Digest>>,
) -> Vec<(Option<Reference>, ImageRecord)> {
    let mut out = Vec::new();
    for img in images {
        if img.names.is_empty() {
            let part_of_named = members.is_some_and(|m| {
                m.contains(&img.manifest.digest)
                    || img.manifests.iter().any(|v| m.contains(&v.manifest.digest))
                    || indexes_of(img).iter().any(|d| m.contains(d))
            });
            if filter.is_none() && !part_of_named {
                out.push((None, img.clone()));
            }
            continue;
        }
        for n in &img.names {
            if filter.is_none_or(|f| f.name() == n.name()) {
                out.push((Some(n.clone()), img.pinned(&img.target_of(n))));
            }
        }
    }
    out.sort_by(|a, b| {
        (
            a.0.as_ref().map(Reference::name),
            a.0.as_ref().and_then(|r| r.tag().map(str::to_owned)),
        )
            .cmp(&(
                b.0.as_ref().map(Reference::name),
                b.0.as_ref().and_then(|r| r.tag().map(str::to_owned)),
            ))
    });
    out
}

/// `hoist images`.
pub fn images(a: ImagesArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let images = store.images()?;
    let filter = a
        .repository
        .as_deref()
        .map(Reference::parse_repository)
        .transpose()?;
    if a.tree {
        let parents = store.parents()?;
        return print_tree(&images, &parents, &a);
    }
    let members = (!a.all).then(|| named_members(&store, &images));
    let rows = rows(&images, filter.as_ref(), members.as_ref());
    if a.format == Format::Json {
        let v: Vec<_> = rows
            .iter()
            .map(|(name, img)| {
                json!({
                    "Repository": name.as_ref().map(Reference::name),
                    "Tag": name.as_ref().and_then(|n| n.tag()),
                    "Id": img.id,
                    "Digest": digest_of(name.as_ref(), img),
                    "Created": img.created,
                    "Size": img.size,
                    "Platform": img.platform.to_string(),
                })
            })
            .collect();
        return print_json(&v);
    }
    let mut table = vec![{
        let mut h = vec!["REPOSITORY", "TAG"];
        if a.digests {
            h.push("DIGEST");
        }
        h.extend(["IMAGE ID", "CREATED", "SIZE"]);
        h.into_iter().map(String::from).collect::<Vec<_>>()
    }];
    for (name, img) in &rows {
        let mut row = vec![
            name.as_ref()
                .map(|n| n.familiar_name())
                .unwrap_or_else(|| "<none>".into()),
            name.as_ref()
                .and_then(|n| n.tag().map(str::to_owned))
                .unwrap_or_else(|| "<none>".into()),
        ];
        if a.digests {
            row.push(digest_of(name.as_ref(), img).to_string());
        }
        row.push(if a.no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_owned()
        });
        row.push(ago(img.created.as_deref()));
        row.push(ByteSize(img.size).to_string());
        table.push(row);
    }
    print_table(&table);
    Ok(())
}

/// The digest a name points at (its own manifest, or the index it came through); the
/// latest manifest for an unnamed image.
fn digest_of(name: Option<&Reference>, img: &ImageRecord) -> Digest {
    match name {
        Some(n) => img.target_of(n).top().digest.clone(),
        None => img.index.as_ref().unwrap_or(&img.manifest).digest.clone(),
    }
}

/// The children of each image, and the roots (images without a parent in the store).
fn forest(
    images: &[ImageRecord],
    parents: &BTreeMap<Digest, Option<Digest>>,
) -> (Vec<Digest>, BTreeMap<Digest, Vec<Digest>>) {
    let mut roots = Vec::new();
    let mut children: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
    for img in images {
        match parents.get(&img.id).cloned().flatten() {
            Some(p) if images.iter().any(|i| i.id == p) => {
                children.entry(p).or_default().push(img.id.clone())
            }
            _ => roots.push(img.id.clone()),
        }
    }
    (roots, children)
}

fn tree_json(
    id: &Digest,
    by_id: &BTreeMap<&Digest, &ImageRecord>,
    children: &BTreeMap<Digest, Vec<Digest>>,
    depth: usize,
) -> serde_json::Value {
    let img = by_id[id];
    let kids: Vec<serde_json::Value> = if depth > 64 {
        Vec::new()
    } else {
        children
            .get(id)
            .map(|c| {
                c.iter()
                    .map(|k| tree_json(k, by_id, children, depth + 1))
                    .collect()
            })
            .unwrap_or_default()
    };
    json!({
        "Id": img.id,
        "Names": img.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "Layers": img.layers.len(),
        "Size": img.size,
        "Children": kids,
    })
}

/// What the text tree is drawn from.
struct Tree<'a> {
    by_id: BTreeMap<&'a Digest, &'a ImageRecord>,
    children: BTreeMap<Digest, Vec<Digest>>,
    no_trunc: bool,
}

impl Tree<'_> {
    fn lines(&self, id: &Digest, prefix: &str, last: bool, root: bool, out: &mut Vec<String>) {
        let img = self.by_id[id];
        let names = if img.names.is_empty() {
            "<none>".to_owned()
        } else {
            img.names
                .iter()
                .map(Reference::familiar)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let shown = if self.no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_owned()
        };
        let branch = match (root, last) {
            (true, _) => "",
            (false, true) => "└─ ",
            (false, false) => "├─ ",
        };
        out.push(format!(
            "{prefix}{branch}{shown}  {names}  ({} layers, {})",
            img.layers.len(),
            ByteSize(img.size)
        ));
        if prefix.len() > 256 {
            return; // parents have fewer layers, so no cycle; bound the depth anyway
        }
        let kids = self.children.get(id).cloned().unwrap_or_default();
        let next = match (root, last) {
            (true, _) => prefix.to_owned(),
            (false, true) => format!("{prefix}   "),
            (false, false) => format!("{prefix}│  "),
        };
        for (i, k) in kids.iter().enumerate() {
            self.lines(k, &next, i + 1 == kids.len(), false, out);
        }
    }
}

fn print_tree(
    images: &[ImageRecord],
    parents: &BTreeMap<Digest, Option<Digest>>,
    a: &ImagesArgs,
) -> anyhow::Result<()> {
    let (roots, children) = forest(images, parents);
    let by_id: BTreeMap<&Digest, &ImageRecord> = images.iter().map(|i| (&i.id, i)).collect();
    if a.format == Format::Json {
        let v: Vec<_> = roots
            .iter()
            .map(|r| tree_json(r, &by_id, &children, 0))
            .collect();
        return print_json(&v);
    }
    let tree = Tree {
        by_id,
        children,
        no_trunc: a.no_trunc,
    };
    let mut out = Vec::new();
    for r in &roots {
        tree.lines(r, "", true, true, &mut out);
    }
    for l in out {
        println!("{l}");
    }
    Ok(())
}

/// Print rows with columns padded to their widest cell.
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `hoist tag`.
pub fn tag(a: TagArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let target = Reference::parse(&a.target)?;
    anyhow::ensure!(
        target.digest().is_none(),
        "a new name cannot carry a digest: {target}"
    );
    store.tag(&a.source, &target)?;
    Ok(())
}

/// `hoist rmi`.
pub fn rmi(a: RmiArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let mut failed = 0;
    for i in &a.images {
        match store.remove_image(i, a.force) {
            Ok(r) => {
                for u in r.untagged {
                    println!("Untagged: {u}");
                }
                for d in r.deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(e) => {
                eprintln!(
                    "hoist: error: removing {i}: {}",
                    hoist_types::error_chain(&e)
                );
                failed += 1;
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} images could not be removed",
        a.images.len()
    );
    Ok(())
}
