//! The `layer` target: arbitrary bytes through the one tar parser and applied into a fresh
//! root, with a sentinel directory beside it that must come out untouched.
//!
//! Input: `[flags, split, body...]`.
//! - `flags & 3`: how `body` is served: 0 a plain tar, 1 gzip-compressed here, 2 as is with
//!   the media type its magic bytes suggest (gzip, zstd or plain: raw compressed streams),
//!   3 zstd-compressed here.
//! - `flags & 4`: rootless mode (always, where the scratch directory is not a private
//!   `nodev` tmpfs; see [`crate::scratch`]).
//! - `flags & 8`: overlayfs-form whiteouts (root mode only).
//! - `flags & 16`: two layers, `body` cut at `split * 512`, the second applied over the
//!   first (replacing entries, whiteouts over real files).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hoist_types::{Algorithm, Digest, MediaType, NoProgress};
use hoist_unpack::path::clean;
use hoist_unpack::{
    Entry, EntryKind, LayerInput, LayerStream, Limits, Rootfs, TarReader, UnpackError,
    UnpackOptions, WhiteoutMode,
};

use crate::scratch::{Scratch, fixed_base, scratch};

/// Limits that keep one input cheap; the parser and the applier see the same.
pub fn limits() -> Limits {
    Limits {
        max_layer_size: 16 << 20,
        max_entries: 4096,
        ..Limits::default()
    }
}

/// Runs one input; panics when an invariant breaks.
pub fn check(data: &[u8]) {
    let [flags, split, body @ ..] = data else {
        return;
    };
    let sc = scratch();
    let rootless = !sc.nodev || flags & 4 != 0;
    let whiteouts = if !rootless && flags & 8 != 0 {
        WhiteoutMode::Overlay
    } else {
        WhiteoutMode::Apply
    };
    let parts: Vec<&[u8]> = if flags & 16 != 0 {
        let (a, b) = body.split_at((usize::from(*split) * 512).min(body.len()));
        vec![a, b]
    } else {
        vec![body]
    };
    let limits = limits();
    let opts = UnpackOptions {
        rootless,
        whiteouts,
        limits: limits.clone(),
        ..UnpackOptions::default()
    };
    let base = Base::new(&sc);
    let before = base.snapshot();
    let mut rootfs = Rootfs::open(&base.root(), &opts).expect("a fresh root opens");
    let mut all_ok = true;
    for part in parts {
        let (blob, media_type) = encode(part, flags & 3);
        let parsed = parse_only(&blob, &media_type, &limits);
        let blob_digest = Digest::sha256_of(&blob);
        // The diff ID the parser found, so a valid layer goes all the way through.
        let diff_id = parsed
            .as_ref()
            .map_or_else(|_| blob_digest.clone(), |p| p.diff_id.clone());
        let applied = rootfs.apply_layer(
            blob.as_slice(),
            LayerInput {
                digest: &blob_digest,
                media_type: &media_type,
                diff_id: &diff_id,
                size: blob.len() as u64,
            },
            &NoProgress,
        );
        assert_eq!(
            base.snapshot(),
            before,
            "the sentinel changed (flags {flags:#x})"
        );
        match (&applied, &parsed) {
            (Ok(stats), Ok(p)) => {
                assert_eq!(stats.entries, p.entries, "entries applied vs parsed");
                assert_eq!(stats.tar_bytes, p.total, "tar bytes applied vs parsed");
            }
            (Ok(_), Err(e)) => panic!("applied a layer that the parser refuses: {e}"),
            (Err(_), _) => {}
        }
        if applied.is_err() {
            all_ok = false;
            break;
        }
    }
    if all_ok {
        // Rootless: final directory modes.
        let _ = rootfs.finish();
        assert_eq!(base.snapshot(), before, "the sentinel changed in finish()");
    }
    base.remove();
}

fn encode(body: &[u8], how: u8) -> (Vec<u8>, MediaType) {
    match how {
        0 => (body.to_vec(), MediaType::OciLayer),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).expect("in-memory gzip");
            (e.finish().expect("in-memory gzip"), MediaType::OciLayerGzip)
        }
        2 => {
            let mt = match hoist_unpack::sniff(body) {
                "gzip" => MediaType::DockerLayerGzip,
                "zstd" => MediaType::OciLayerZstd,
                _ => MediaType::DockerLayer,
            };
            (body.to_vec(), mt)
        }
        _ => (
            zstd::bulk::compress(body, 1).expect("in-memory zstd"),
            MediaType::OciLayerZstd,
        ),
    }
}

/// What the parser alone makes of a layer.
struct Parsed {
    entries: u64,
    total: u64,
    diff_id: Digest,
}

/// The layer through the same stream and parser, without a filesystem: every entry is
/// checked for what the parser promises, its data read to the end.
fn parse_only(blob: &[u8], mt: &MediaType, limits: &Limits) -> Result<Parsed, UnpackError> {
    let stream = LayerStream::open(blob, mt, Algorithm::Sha256, limits, None, &NoProgress)?;
    let mut tar = TarReader::new(stream, limits);
    let mut entries = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while let Some(e) = tar.next_entry()? {
        entries += 1;
        check_entry(&e, limits);
        let mut got = 0u64;
        loop {
            let n = tar.read_data(&mut buf)?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        assert_eq!(
            got,
            e.size,
            "data bytes of {:?}",
            String::from_utf8_lossy(&e.path)
        );
    }
    assert!(entries <= limits.max_entries, "over the entry limit");
    let ended = tar.saw_end();
    let (diff_id, total) = tar.into_inner().finish(ended)?;
    assert!(total <= limits.max_layer_size, "over the size limit");
    Ok(Parsed {
        entries,
        total,
        diff_id,
    })
}

/// What every entry the parser hands out satisfies.
fn check_entry(e: &Entry, limits: &Limits) {
    let name = String::from_utf8_lossy(&e.path);
    assert_eq!(
        clean(&e.path, limits).as_deref(),
        Ok(e.path.as_slice()),
        "entry path {name:?} is not clean"
    );
    match &e.kind {
        EntryKind::Hardlink(target) => {
            assert!(!target.is_empty(), "{name:?}: hard link to the root");
            assert_eq!(
                clean(target, limits).as_deref(),
                Ok(target.as_slice()),
                "{name:?}: hard link target not clean"
            );
        }
        EntryKind::Symlink(target) => {
            assert!(
                target.len() <= limits.max_path_len,
                "{name:?}: long symlink"
            );
            assert!(!target.contains(&0), "{name:?}: NUL in a symlink target");
        }
        _ => {}
    }
    if e.kind != EntryKind::File {
        assert_eq!(e.size, 0, "{name:?}: data on a header-only entry");
    }
    assert!(e.mode <= 0o7777, "{name:?}: mode {:#o}", e.mode);
    assert!(e.mtime.nanos < 1_000_000_000, "{name:?}: nanoseconds");
    assert!(e.uid != u32::MAX && e.gid != u32::MAX, "{name:?}: owner -1");
    let mut total = 0usize;
    for (k, v) in &e.xattrs {
        assert!(
            !k.starts_with(b"trusted.overlay."),
            "{name:?}: overlay xattr kept"
        );
        assert!(
            v.len() <= limits.max_xattr_value,
            "{name:?}: xattr value size"
        );
        total += k.len() + v.len();
    }
    assert!(total <= limits.max_xattrs_total, "{name:?}: xattrs size");
}

/// A base directory holding `root/`, where layers go, and `sentinel/` beside it.
struct Base {
    dir: PathBuf,
    /// Kept for its drop when the base is a random temp directory.
    _tmp: Option<tempfile::TempDir>,
}

/// One sentinel file or directory: everything about it that an escape could change.
type Snap = BTreeMap<PathBuf, (u32, u32, u32, u64, u64, i64, i64, Vec<u8>)>;

impl Base {
    fn new(sc: &Scratch) -> Base {
        let (dir, tmp) = if sc.nodev {
            let dir = fixed_base();
            if dir.exists() {
                force_remove(&dir);
            }
            fs::create_dir(&dir).expect("base directory");
            (dir, None)
        } else {
            let t = tempfile::Builder::new()
                .prefix("hoist-fuzz-")
                .tempdir_in(&sc.dir)
                .expect("temp directory");
            (t.path().to_owned(), Some(t))
        };
        let s = dir.join("sentinel");
        fs::create_dir_all(s.join("sub")).expect("sentinel");
        fs::write(s.join("keep"), b"sentinel\n").expect("sentinel file");
        fs::write(s.join("sub/inner"), b"inner\n").expect("sentinel file");
        fs::create_dir(dir.join("root")).expect("root");
        for (p, m) in [
            ("", 0o755),
            ("sub", 0o755),
            ("keep", 0o644),
            ("sub/inner", 0o600),
        ] {
            fs::set_permissions(s.join(p), fs::Permissions::from_mode(m)).expect("chmod");
        }
        Base { dir, _tmp: tmp }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The base's entries, and everything about the sentinel tree.
    fn snapshot(&self) -> (Vec<String>, Snap) {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .expect("base listing")
            .map(|e| {
                e.expect("base entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        let root = fs::symlink_metadata(self.root()).expect("root is still there");
        assert!(root.is_dir(), "the root was replaced by a non-directory");
        let mut snap = Snap::new();
        walk(&self.dir.join("sentinel"), Path::new(""), &mut snap);
        (names, snap)
    }

    fn remove(self) {
        force_remove(&self.dir);
    }
}

fn walk(base: &Path, rel: &Path, out: &mut Snap) {
    let p = base.join(rel);
    let m = fs::symlink_metadata(&p).expect("sentinel entry");
    let content = if m.is_file() {
        let mut v = Vec::new();
        fs::File::open(&p)
            .and_then(|mut f| f.read_to_end(&mut v))
            .expect("sentinel content");
        v
    } else {
        Vec::new()
    };
    out.insert(
        rel.to_owned(),
        (
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            content,
        ),
    );
    if m.is_dir() {
        for e in fs::read_dir(&p).expect("sentinel listing") {
            walk(base, &rel.join(e.expect("sentinel entry").file_name()), out);
        }
    }
}

/// Removes a tree even where a layer left directories without write or search permission.
fn force_remove(dir: &Path) {
    if fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    fn open_up(p: &Path) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.is_dir() {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(dir);
    fs::remove_dir_all(dir).expect("remove the fuzz root");
}
