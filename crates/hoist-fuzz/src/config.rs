//! The `config` target: image configs, diff IDs and chain IDs.

use hoist_types::{Digest, ImageConfig, MAX_CONFIG_SIZE, chain_ids};

/// Parses `data` as an image config and checks what is accepted: the size limit, the chain
/// IDs (Docker's definition, one per diff ID, prefix-stable), the layer count check, and a
/// serialisation round trip.
pub fn check(data: &[u8]) {
    let Ok(cfg) = ImageConfig::parse(data) else {
        return;
    };
    assert!(
        data.len() as u64 <= MAX_CONFIG_SIZE,
        "config over the size limit accepted"
    );
    let diff_ids = &cfg.rootfs.diff_ids;
    let chain = cfg.chain_ids();
    assert_eq!(chain.len(), diff_ids.len(), "one chain ID per diff ID");
    let mut prev: Option<&Digest> = None;
    for (c, d) in chain.iter().zip(diff_ids) {
        let want = match prev {
            None => d.clone(),
            Some(p) => Digest::sha256_of(format!("{p} {d}").as_bytes()),
        };
        assert_eq!(c, &want, "chain ID by Docker's definition");
        prev = Some(c);
    }
    // A chain ID depends only on the layers below it.
    for k in 0..diff_ids.len().min(8) {
        assert_eq!(
            chain_ids(&diff_ids[..k]),
            chain[..k],
            "chain IDs of a prefix"
        );
    }
    cfg.check_layer_count(diff_ids.len())
        .expect("a config fits as many layers as it has diff IDs");
    assert!(cfg.check_layer_count(diff_ids.len() + 1).is_err());
    let _ = cfg.run_config();
    let ser = serde_json::to_vec(&cfg).expect("a config serialises");
    let again = ImageConfig::parse(&ser)
        .unwrap_or_else(|e| panic!("a serialised config does not parse again: {e}"));
    assert_eq!(again, cfg, "config serialisation round trip");
}
