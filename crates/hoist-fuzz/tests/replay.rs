//! Replays every fuzz input kept in the repository through the fuzz targets' own checks:
//! the seed corpora (`fuzz/corpus/<target>/`) and the crashes found so far
//! (`fuzz/regressions/<target>/`). Plain `cargo test`: no nightly, no cargo-fuzz.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use hoist_fuzz::{TARGETS, target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(name: &str) {
    let t = target(name).expect("a known target");
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(
        corpus.len() >= 3,
        "fuzz/corpus/{name}/ has {} seeds; it should hold real inputs",
        corpus.len()
    );
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    let mut failed = Vec::new();
    for f in corpus.iter().chain(&regressions) {
        let data = std::fs::read(f).expect("read a fuzz input");
        if catch_unwind(AssertUnwindSafe(|| (t.check)(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of target {name} fail (panic messages above):\n  {}",
        failed.len(),
        corpus.len() + regressions.len(),
        failed.join("\n  ")
    );
}

#[test]
fn reference() {
    replay("reference");
}

#[test]
fn manifest() {
    replay("manifest");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn layer() {
    replay("layer");
}

#[test]
fn docker_archive() {
    replay("docker_archive");
}

#[test]
fn trust() {
    replay("trust");
}

/// Every directory of inputs belongs to a target, and every target has a test above, so
/// no input is silently skipped.
#[test]
fn every_input_directory_is_replayed() {
    let tested = [
        "reference",
        "manifest",
        "config",
        "layer",
        "docker_archive",
        "trust",
    ];
    for t in TARGETS {
        assert!(
            tested.contains(&t.name),
            "target {} has no replay test",
            t.name
        );
    }
    for sub in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(fuzz_dir().join(sub)) else {
            continue;
        };
        for e in rd {
            let e = e.expect("directory entry");
            if !e.path().is_dir() {
                continue; // a README
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            assert!(
                target(&name).is_some(),
                "fuzz/{sub}/{name}/ is not a fuzz target's directory"
            );
        }
    }
}
