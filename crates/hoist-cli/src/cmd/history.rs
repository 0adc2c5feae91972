//! `hoist history IMAGE`: the config's history entries, newest first, with the layer each
//! non-empty entry made and its size, like `docker history`.

use std::collections::BTreeMap;

use anyhow::Context as _;
use bytesize::ByteSize;
use hoist_store::ImageRecord;
use hoist_types::{Digest, History, ImageConfig, MAX_CONFIG_SIZE};
use serde::Serialize;

use crate::cmd::images::{ago, print_table};
use crate::cmd::print_json;
use crate::opts::{Format, GlobalArgs};

/// Arguments of `hoist history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: a name, an ID or an ID prefix.
    pub image: String,
    /// Don't truncate the commands and IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// One row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The image (in this store) whose top layer this entry made, if any.
    pub id: Option<Digest>,
    /// When.
    pub created: Option<String>,
    /// The command.
    pub created_by: String,
    /// Compressed size of the layer this entry made (0 for an empty layer).
    pub size: u64,
    /// Whether the entry made no layer.
    pub empty_layer: bool,
    /// The layer blob it made.
    pub layer: Option<Digest>,
    /// Its diff ID.
    pub diff_id: Option<Digest>,
    /// Comment.
    pub comment: Option<String>,
}

/// Pair history entries with layers (oldest first), then list newest first. An image
/// without history gets one row per layer. `tops` maps a chain ID to the image whose top
/// layer it is. Pure.
pub fn rows(image: &ImageRecord, history: &[History], tops: &BTreeMap<Digest, Digest>) -> Vec<Row> {
    let mut out = Vec::new();
    let mut layer = 0usize;
    let layer_row = |i: usize, h: Option<&History>| Row {
        id: image.chain_ids.get(i).and_then(|c| tops.get(c)).cloned(),
        created: h.and_then(|h| h.created.clone()),
        created_by: h.and_then(|h| h.created_by.clone()).unwrap_or_default(),
        size: image.layers.get(i).map_or(0, |l| l.size),
        empty_layer: false,
        layer: image.layers.get(i).map(|l| l.digest.clone()),
        diff_id: image.diff_ids.get(i).cloned(),
        comment: h.and_then(|h| h.comment.clone()),
    };
    for h in history {
        if h.empty_layer || layer >= image.layers.len() {
            out.push(Row {
                id: None,
                created: h.created.clone(),
                created_by: h.created_by.clone().unwrap_or_default(),
                size: 0,
                empty_layer: true,
                layer: None,
                diff_id: None,
                comment: h.comment.clone(),
            });
        } else {
            out.push(layer_row(layer, Some(h)));
            layer += 1;
        }
    }
    // Layers the history does not account for.
    while layer < image.layers.len() {
        out.push(layer_row(layer, None));
        layer += 1;
    }
    out.reverse();
    // The newest row is the image itself.
    if let Some(first) = out.first_mut() {
        first.id = Some(image.id.clone());
    }
    out
}

/// Run it.
pub fn run(a: Args, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = g.open_store()?;
    let image = store.resolve(&a.image)?;
    let raw = store
        .read_blob(&image.id, MAX_CONFIG_SIZE)
        .with_context(|| format!("reading the config of {}", a.image))?;
    let config =
        ImageConfig::parse(&raw).with_context(|| format!("parsing config {}", image.id))?;
    let tops: BTreeMap<Digest, Digest> = store
        .images()?
        .into_iter()
        .filter_map(|r| r.chain_ids.last().cloned().map(|c| (c, r.id)))
        .collect();
    let rows = rows(&image, &config.history, &tops);
    if a.format == Format::Json {
        return print_json(&rows);
    }
    let mut table = vec![vec![
        "IMAGE".to_string(),
        "CREATED".into(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for r in rows {
        let by = if a.no_trunc || r.created_by.chars().count() <= 45 {
            r.created_by.clone()
        } else {
            format!("{}…", r.created_by.chars().take(44).collect::<String>())
        };
        table.push(vec![
            match (&r.id, a.no_trunc) {
                (Some(id), true) => id.to_string(),
                (Some(id), false) => id.short().to_owned(),
                (None, _) => "<missing>".into(),
            },
            ago(r.created.as_deref()),
            by.replace('\n', " "),
            if r.empty_layer {
                "0B".into()
            } else {
                ByteSize(r.size).to_string()
            },
            r.comment.unwrap_or_default(),
        ]);
    }
    print_table(&table);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::{Descriptor, MediaType, Platform, chain_ids};

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn h(by: &str, empty: bool) -> History {
        History {
            created: Some("2024-01-01T00:00:00Z".into()),
            created_by: Some(by.into()),
            author: None,
            comment: None,
            empty_layer: empty,
        }
    }

    fn image(layers: &[(&str, u64)]) -> ImageRecord {
        let diff_ids: Vec<Digest> = layers
            .iter()
            .map(|(l, _)| d(&format!("diff-{l}")))
            .collect();
        let id = d("cfg");
        ImageRecord {
            id: id.clone(),
            names: vec![],
            repo_digests: vec![],
            manifest: Descriptor::new(MediaType::OciManifest, d("m"), 1),
            index: None,
            config_media_type: MediaType::OciConfig,
            config_size: 1,
            layers: layers
                .iter()
                .map(|(l, s)| Descriptor::new(MediaType::OciLayerGzip, d(l), *s))
                .collect(),
            chain_ids: chain_ids(&diff_ids),
            diff_ids,
            platform: Platform::new("linux", "amd64", None),
            created: None,
            size: 0,
            added: String::new(),
            source: None,
            config_parent: None,
            manifests: vec![],
            targets: vec![],
            digest_refs: vec![],
            oci_views: vec![],
        }
    }

    #[test]
    fn history_rows_table() {
        let img = image(&[("base", 100), ("app", 20)]);
        let base_img = d("base-image");
        let tops: BTreeMap<Digest, Digest> = [(img.chain_ids[0].clone(), base_img.clone())].into();
        let hist = vec![
            h("ADD rootfs.tar /", false),
            h("ENV A=1", true),
            h("COPY app /app", false),
            h("CMD [\"/app\"]", true),
        ];
        let got = rows(&img, &hist, &tops);
        let summary: Vec<(Option<Digest>, &str, u64, bool)> = got
            .iter()
            .map(|r| (r.id.clone(), r.created_by.as_str(), r.size, r.empty_layer))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some(img.id.clone()), "CMD [\"/app\"]", 0, true),
                (None, "COPY app /app", 20, false),
                (None, "ENV A=1", 0, true),
                (Some(base_img), "ADD rootfs.tar /", 100, false),
            ]
        );
        assert_eq!(got[1].layer, Some(d("app")));
        assert_eq!(got[3].diff_id, Some(d("diff-base")));
        // No history: a row per layer, newest first.
        let got = rows(&img, &[], &BTreeMap::new());
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].size, got[0].id.clone()), (20, Some(img.id.clone())));
        assert_eq!(got[1].size, 100);
        // More non-empty entries than layers: the extra ones are shown empty.
        let got = rows(
            &image(&[("base", 1)]),
            &[h("a", false), h("b", false)],
            &BTreeMap::new(),
        );
        assert_eq!(
            got.iter().map(|r| r.empty_layer).collect::<Vec<_>>(),
            [true, false]
        );
    }
}
