//! Pure lookups over a set of image records: resolving what a user typed, which record
//! owns a name, and parent/child links. No I/O; table-tested.

use std::collections::BTreeMap;

use hoist_types::{Algorithm, Digest, Reference};

use crate::StoreError;
use crate::record::{ImageManifest, ImageRecord};

/// Shortest image-ID prefix accepted, in hex characters.
pub const MIN_PREFIX: usize = 4;

/// What a user-supplied image string means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// A full digest: an image ID, a manifest or index digest.
    Digest(Digest),
    /// A name. `hex_fallback` is set when the input is also a plausible ID prefix.
    Name {
        reference: Reference,
        hex_fallback: Option<String>,
    },
    /// An ID prefix, maybe with its algorithm.
    Prefix {
        algorithm: Option<Algorithm>,
        hex: String,
    },
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Classify `s` the way `docker inspect` does: digest, then name, then ID prefix.
pub(crate) fn parse_query(s: &str) -> Result<Query, StoreError> {
    if let Ok(d) = Digest::parse(s) {
        return Ok(Query::Digest(d));
    }
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        if let Some(rest) = s
            .strip_prefix(alg.as_str())
            .and_then(|r| r.strip_prefix(':'))
            && is_hex(rest)
            && rest.len() < alg.hex_len()
        {
            return Ok(Query::Prefix {
                algorithm: Some(alg),
                hex: rest.to_ascii_lowercase(),
            });
        }
    }
    match Reference::parse(s) {
        Ok(reference) => Ok(Query::Name {
            hex_fallback: is_hex(s).then(|| s.to_owned()),
            reference,
        }),
        Err(_) if is_hex(s) => Ok(Query::Prefix {
            algorithm: None,
            hex: s.to_ascii_lowercase(),
        }),
        Err(source) => Err(StoreError::InvalidQuery {
            input: s.to_owned(),
            source,
        }),
    }
}

/// Which record owns each name. Normally each name is on one record; after a crash in
/// the middle of moving a tag it can be on two, and then the record `index.json` points
/// at wins (it is written last), else the first by ID.
pub(crate) fn name_owners(
    records: &[ImageRecord],
    index_owners: &BTreeMap<String, Digest>,
) -> BTreeMap<Reference, Digest> {
    let mut out: BTreeMap<Reference, Digest> = BTreeMap::new();
    for rec in records {
        for n in &rec.names {
            match out.get(n) {
                None => {
                    out.insert(n.clone(), rec.id.clone());
                }
                Some(_) if index_owners.get(&n.to_string()) == Some(&rec.id) => {
                    out.insert(n.clone(), rec.id.clone());
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// Find the record `q` designates, and the manifest of it that `q` reaches: a tag → the
/// manifest it points at; a manifest or index digest → that manifest; an ID or prefix →
/// the latest.
pub(crate) fn find_variant<'a>(
    records: &'a [ImageRecord],
    owners: &BTreeMap<Reference, Digest>,
    input: &str,
    q: &Query,
) -> Result<(&'a ImageRecord, ImageManifest), StoreError> {
    let rec = find(records, owners, input, q)?;
    let by_digest = |d: &Digest| rec.variant_with_digest(d).unwrap_or_else(|| rec.latest());
    let v = match q {
        Query::Digest(d) => by_digest(d),
        Query::Name { reference, .. } => match (reference.digest(), reference.tag()) {
            (Some(d), _) => by_digest(d),
            (None, Some(_)) if rec.names.contains(reference) => rec.target_of(reference),
            _ => rec.latest(),
        },
        Query::Prefix { .. } => rec.latest(),
    };
    Ok((rec, v))
}

/// Find the record `q` designates.
pub(crate) fn find<'a>(
    records: &'a [ImageRecord],
    owners: &BTreeMap<Reference, Digest>,
    input: &str,
    q: &Query,
) -> Result<&'a ImageRecord, StoreError> {
    let not_found = || StoreError::ImageNotFound {
        query: input.to_owned(),
    };
    let by_id = |id: &Digest| records.iter().find(|r| &r.id == id);
    match q {
        Query::Digest(d) => by_id(d)
            .or_else(|| records.iter().find(|r| r.matches_digest(d)))
            .ok_or_else(not_found),
        Query::Name {
            reference,
            hex_fallback,
        } => {
            let found = match (reference.digest(), reference.tag()) {
                (Some(d), _) => {
                    let repo_digest = format!("{}@{d}", reference.name());
                    records
                        .iter()
                        .find(|r| r.repo_digests.contains(&repo_digest))
                        .or_else(|| records.iter().find(|r| r.matches_digest(d)))
                }
                (None, Some(_)) => owners.get(reference).and_then(by_id),
                (None, None) => None,
            };
            match (found, hex_fallback) {
                (Some(r), _) => Ok(r),
                (None, Some(hex)) if hex.len() >= MIN_PREFIX => find(
                    records,
                    owners,
                    input,
                    &Query::Prefix {
                        algorithm: None,
                        hex: hex.to_ascii_lowercase(),
                    },
                ),
                (None, _) => Err(not_found()),
            }
        }
        Query::Prefix { algorithm, hex } => {
            if hex.len() < MIN_PREFIX {
                return Err(StoreError::PrefixTooShort {
                    prefix: input.to_owned(),
                    min: MIN_PREFIX,
                });
            }
            let hits: Vec<&ImageRecord> = records
                .iter()
                .filter(|r| algorithm.is_none_or(|a| r.id.algorithm() == a))
                .filter(|r| r.id.hex().starts_with(hex.as_str()))
                .collect();
            match hits.as_slice() {
                [one] => Ok(one),
                [] => Err(not_found()),
                many => Err(StoreError::AmbiguousPrefix {
                    prefix: input.to_owned(),
                    candidates: many.iter().map(|r| r.id.clone()).collect(),
                }),
            }
        }
    }
}

/// The parent of `rec`: the config's `parent` when that image is present, else the image
/// whose chain IDs are the longest strict, non-empty prefix of `rec`'s. Ties go to a
/// named image, then to the smallest ID.
pub(crate) fn parent_of(records: &[ImageRecord], rec: &ImageRecord) -> Option<Digest> {
    if let Some(p) = &rec.config_parent
        && p != &rec.id
        && records.iter().any(|r| &r.id == p)
    {
        return Some(p.clone());
    }
    records
        .iter()
        .filter(|c| {
            c.id != rec.id
                && !c.chain_ids.is_empty()
                && c.chain_ids.len() < rec.chain_ids.len()
                && rec.chain_ids.starts_with(&c.chain_ids)
        })
        .min_by(|a, b| {
            b.chain_ids
                .len()
                .cmp(&a.chain_ids.len())
                .then(a.names.is_empty().cmp(&b.names.is_empty()))
                .then(a.id.cmp(&b.id))
        })
        .map(|c| c.id.clone())
}

/// The images whose parent is `id`, sorted by ID.
pub(crate) fn children_of(records: &[ImageRecord], id: &Digest) -> Vec<Digest> {
    records
        .iter()
        .filter(|r| parent_of(records, r).as_ref() == Some(id))
        .map(|r| r.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn id_hex(hex_prefix: &str) -> Digest {
        let mut h = hex_prefix.to_owned();
        while h.len() < 64 {
            h.push('0');
        }
        Digest::parse(&format!("sha256:{h}")).unwrap()
    }

    fn rec(id: Digest, names: &[&str], layers: &[char]) -> ImageRecord {
        let diff_ids = layers.iter().map(|&c| d(c)).collect();
        let manifest = Digest::sha256_of(id.hex().as_bytes());
        crate::record::test_record(id, manifest, names, &[], diff_ids)
    }

    #[test]
    fn parse_query_table() {
        let full = d('a').to_string();
        let cases: Vec<(&str, &str)> = vec![
            (&full, "digest"),
            ("sha256:abcd", "prefix"),
            ("alpine", "name"),
            ("abcd", "name+hex"),
            ("ABCD12", "prefix"),
            ("abc", "name+hex"),
            ("alpine:3@sha256:x", "error"),
            ("Not A Ref", "error"),
        ];
        for (input, want) in cases {
            let got = match parse_query(input) {
                Ok(Query::Digest(_)) => "digest",
                Ok(Query::Prefix { .. }) => "prefix",
                Ok(Query::Name {
                    hex_fallback: Some(_),
                    ..
                }) => "name+hex",
                Ok(Query::Name { .. }) => "name",
                Err(_) => "error",
            };
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn find_table() {
        let mut a = rec(id_hex("abcd1"), &["alpine", "alpine:3"], &['1']);
        a.repo_digests = vec![format!("docker.io/library/alpine@{}", d('9'))];
        let b = rec(id_hex("abcd2"), &["127.0.0.1:5000/ns/r:t"], &['2']);
        let c = rec(id_hex("beef"), &[], &['3']);
        let recs = vec![a.clone(), b.clone(), c.clone()];
        let owners = name_owners(&recs, &BTreeMap::new());
        let cases: Vec<(String, Result<Digest, &str>)> = vec![
            ("alpine".into(), Ok(a.id.clone())),
            ("docker.io/library/alpine:3".into(), Ok(a.id.clone())),
            ("alpine:4".into(), Err("notfound")),
            ("127.0.0.1:5000/ns/r:t".into(), Ok(b.id.clone())),
            (format!("alpine@{}", d('9')), Ok(a.id.clone())),
            (a.id.to_string(), Ok(a.id.clone())),
            (a.manifest.digest.to_string(), Ok(a.id.clone())),
            (d('9').to_string(), Ok(a.id.clone())),
            (d('7').to_string(), Err("notfound")),
            ("abcd1".into(), Ok(a.id.clone())),
            ("sha256:abcd2".into(), Ok(b.id.clone())),
            ("beef".into(), Ok(c.id.clone())),
            (c.id.hex().to_owned(), Ok(c.id.clone())),
            ("abcd".into(), Err("ambiguous")),
            ("abc".into(), Err("notfound")),
            ("sha256:abc".into(), Err("short")),
            ("sha512:abcd".into(), Err("notfound")),
            ("ffff".into(), Err("notfound")),
        ];
        for (input, want) in cases {
            let q = parse_query(&input).unwrap();
            let got = find(&recs, &owners, &input, &q).map(|r| r.id.clone());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{input}"),
                (Err(StoreError::ImageNotFound { .. }), Err("notfound")) => {}
                (Err(StoreError::PrefixTooShort { .. }), Err("short")) => {}
                (Err(StoreError::AmbiguousPrefix { candidates, .. }), Err("ambiguous")) => {
                    assert_eq!(candidates, vec![a.id.clone(), b.id.clone()]);
                }
                (g, w) => panic!("{input}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn duplicate_names_resolved_by_index() {
        let a = rec(id_hex("a1"), &["x"], &['1']);
        let b = rec(id_hex("b1"), &["x"], &['2']);
        let recs = vec![a.clone(), b.clone()];
        let name = Reference::parse("x").unwrap();
        assert_eq!(name_owners(&recs, &BTreeMap::new())[&name], a.id);
        let idx = BTreeMap::from([(name.to_string(), b.id.clone())]);
        assert_eq!(name_owners(&recs, &idx)[&name], b.id);
    }

    #[test]
    fn lineage_table() {
        let base = rec(id_hex("ba5e"), &["debian"], &['1']);
        let base_twin = rec(id_hex("0001"), &[], &['1']);
        let mid = rec(id_hex("0002"), &["mid"], &['1', '2']);
        let app = rec(id_hex("0003"), &["app"], &['1', '2', '3']);
        let other = rec(id_hex("0004"), &["other"], &['1', '4']);
        let unrelated = rec(id_hex("0005"), &["u"], &['5', '1']);
        let empty = rec(id_hex("0006"), &["scratch"], &[]);
        let mut built = rec(id_hex("0007"), &["built"], &['1', '2']);
        built.config_parent = Some(app.id.clone());
        let recs = vec![
            base.clone(),
            base_twin.clone(),
            mid.clone(),
            app.clone(),
            other.clone(),
            unrelated.clone(),
            empty.clone(),
            built.clone(),
        ];
        let cases: Vec<(&ImageRecord, Option<&Digest>)> = vec![
            (&base, None),
            (&base_twin, None),
            (&mid, Some(&base.id)), // the named twin wins the tie
            (&app, Some(&mid.id)),  // longest prefix (or the twin `built`, by ID)
            (&other, Some(&base.id)),
            (&unrelated, None),
            (&empty, None),
            (&built, Some(&app.id)), // config parent wins
        ];
        for (r, want) in cases {
            assert_eq!(parent_of(&recs, r).as_ref(), want, "{}", r.names.len());
        }
        assert_eq!(
            children_of(&recs, &base.id),
            vec![mid.id.clone(), other.id.clone()]
        );
        assert_eq!(children_of(&recs, &app.id), vec![built.id.clone()]);
        assert!(children_of(&recs, &unrelated.id).is_empty());
    }
}
