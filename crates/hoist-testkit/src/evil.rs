//! Evil layer tars: the unpack escapes and parser tricks behind the CVEs of docker, containerd,
//! umoci and the Rust `tar` crate, generated deterministically in code.
//!
//! The tars are written byte by byte ([`RawTar`]), because a well-behaved writer (the `tar`
//! crate's `Builder`) refuses `..` components, contradictory sizes and the like. Cases that need
//! an absolute path outside the root take the absolute path of a *sentinel* directory
//! ([`make_sentinel`]), which the test places beside the root and snapshots before and after:
//! nothing in it may be created, changed, removed or chmod-ed.
//!
//! ```no_run
//! use hoist_testkit::evil;
//! let t = tempfile::tempdir().unwrap();
//! let sentinel = t.path().join("sentinel");
//! evil::make_sentinel(&sentinel).unwrap();
//! for case in evil::cases(&sentinel) {
//!     // apply case.layers in order to t.path().join("root"), as root and rootless, then check
//!     // case.expect, case.checks and the sentinel.
//!     let _ = case;
//! }
//! ```

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::images::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, sha256_digest};

/// What applying a case must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A clear error (in both root and rootless modes).
    Error,
    /// Success, with the [`Check`]s holding.
    Ok,
    /// Either a clear error or an in-root success; the sentinel decides.
    Either,
}

/// A property of the root after a successful apply. Paths are relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing at this path (not even a dangling symlink).
    Absent(Vec<u8>),
    /// A regular file with this content.
    File(Vec<u8>, Vec<u8>),
    /// A real directory (not a symlink to one).
    Dir(Vec<u8>),
    /// A symlink with this target.
    Symlink(Vec<u8>, Vec<u8>),
    /// Permission bits: in root mode, in rootless mode.
    Mode(Vec<u8>, u32, u32),
    /// This xattr is absent.
    NoXattr(Vec<u8>, String),
    /// A character device with these numbers in root mode; absent in rootless mode.
    CharIfRoot(Vec<u8>, u32, u32),
    /// An absolute host path that must not exist afterwards.
    HostAbsent(PathBuf),
}

/// One layer of a case: the blob as a registry would serve it.
#[derive(Debug, Clone)]
pub struct EvilLayer {
    /// The layer media type (which may lie about the content).
    pub media_type: &'static str,
    /// The blob bytes.
    pub blob: Vec<u8>,
    /// The diff ID the config would list: the SHA-256 of the intended uncompressed tar.
    pub diff_id: String,
}

/// One evil case: layers applied in order onto an empty root.
#[derive(Debug, Clone)]
pub struct EvilCase {
    /// A short name.
    pub name: &'static str,
    /// The layers, base first.
    pub layers: Vec<EvilLayer>,
    /// What must happen.
    pub expect: Expect,
    /// What must hold after a success.
    pub checks: Vec<Check>,
    /// A decompressed-size cap the unpacker must be given for this case (the bomb).
    pub max_layer_size: Option<u64>,
}

/// Creates the sentinel directory: `etc/passwd`, `file` (0644), `victim/` (0755) with
/// `victim/inner`.
pub fn make_sentinel(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir.join("etc"))?;
    fs::create_dir_all(dir.join("victim"))?;
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:sentinel:/root:/bin/sh\n",
    )?;
    fs::write(dir.join("file"), "sentinel file\n")?;
    fs::write(dir.join("victim/inner"), "inner\n")?;
    Ok(())
}

/// A tar writer that writes whatever it is told: raw names, lying sizes, PAX records.
#[derive(Debug, Default)]
pub struct RawTar {
    out: Vec<u8>,
}

/// The PAX forms of a GNU sparse file ([`RawTar::pax_sparse`]), named by GNU tar's
/// `--sparse-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaxSparse {
    /// 0.0: `GNU.sparse.offset` / `GNU.sparse.numbytes` records, one pair per segment.
    V0_0,
    /// 0.1: one `GNU.sparse.map` record.
    V0_1,
    /// 1.0: the map at the start of the data.
    V1_0,
}

/// Tar type flags.
pub mod flag {
    /// Regular file.
    pub const FILE: u8 = b'0';
    /// Hard link.
    pub const LINK: u8 = b'1';
    /// Symbolic link.
    pub const SYMLINK: u8 = b'2';
    /// Character device.
    pub const CHAR: u8 = b'3';
    /// Block device.
    pub const BLOCK: u8 = b'4';
    /// Directory.
    pub const DIR: u8 = b'5';
    /// Fifo.
    pub const FIFO: u8 = b'6';
    /// PAX extended header for the next entry.
    pub const PAX: u8 = b'x';
}

impl RawTar {
    /// An empty archive.
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// Appends one header (name and link name truncated to 100 bytes, which callers avoid by
    /// adding a PAX `path`/`linkpath` first) and `data`, padded to 512 bytes. `size` is written
    /// in the header as given, whatever `data` is.
    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        &mut self,
        name: &[u8],
        typeflag: u8,
        mode: u32,
        uid: u64,
        gid: u64,
        size: u64,
        link: &[u8],
        data: &[u8],
    ) -> &mut RawTar {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            let n = name.len().min(100);
            old.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            old.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(crate::images::DEFAULT_MTIME);
        h.set_size(size);
        h.as_old_mut().linkflag = [typeflag];
        if typeflag == flag::CHAR || typeflag == flag::BLOCK {
            let _ = h.set_device_major(1);
            let _ = h.set_device_minor(3);
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A character device `major:minor`.
    pub fn char_device(&mut self, name: &[u8], major: u32, minor: u32) -> &mut RawTar {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(0o666);
        h.set_mtime(crate::images::DEFAULT_MTIME);
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Char);
        let _ = h.set_device_major(major);
        let _ = h.set_device_minor(minor);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    /// A PAX extended header (`x`) with these records, applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut RawTar {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
        }
        let len = data.len() as u64;
        self.raw(b"PaxHeaders/x", flag::PAX, 0o644, 0, 0, len, b"", &data)
    }

    /// A regular file, mode 0644, root-owned.
    pub fn file(&mut self, name: &[u8], data: &[u8]) -> &mut RawTar {
        self.raw(name, flag::FILE, 0o644, 0, 0, data.len() as u64, b"", data)
    }

    /// A directory with `mode`.
    pub fn dir(&mut self, name: &[u8], mode: u32) -> &mut RawTar {
        self.raw(name, flag::DIR, mode, 0, 0, 0, b"", b"")
    }

    /// A symlink.
    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut RawTar {
        if target.len() > 100 {
            self.pax(&[("linkpath", target)]);
        }
        self.raw(name, flag::SYMLINK, 0o777, 0, 0, 0, target, b"")
    }

    /// A hard link with `mode` in its header.
    pub fn hardlink(&mut self, name: &[u8], target: &[u8], mode: u32) -> &mut RawTar {
        self.raw(name, flag::LINK, mode, 0, 0, 0, target, b"")
    }

    /// A sparse file as GNU tar writes it in its own format (type `S`): the `segments`
    /// (offset in the file, bytes) stored one after the other, their map in the header (four
    /// segments) and in extension blocks after it (21 each), `size` the file's real size.
    /// Written as given, valid or not.
    pub fn gnu_sparse(&mut self, name: &[u8], segments: &[(u64, &[u8])], size: u64) -> &mut RawTar {
        // Octal, or base-256 (GNU's form) where 11 octal digits do not hold the number.
        let octal = |v: u64| {
            if v < 1 << 33 {
                format!("{v:011o}\0").into_bytes()
            } else {
                let mut f = vec![0x80u8, 0, 0, 0];
                f.extend_from_slice(&v.to_be_bytes());
                f
            }
        };
        let entry = |at: u64, len: usize| [octal(at), octal(len as u64)].concat();
        let data: Vec<u8> = segments
            .iter()
            .flat_map(|(_, d)| d.iter().copied())
            .collect();
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(0o644);
        h.set_mtime(crate::images::DEFAULT_MTIME);
        h.set_size(data.len() as u64);
        h.as_old_mut().linkflag = [b'S'];
        let (head, rest) = segments.split_at(segments.len().min(4));
        let raw = h.as_mut_bytes();
        for (i, (at, d)) in head.iter().enumerate() {
            raw[386 + i * 24..410 + i * 24].copy_from_slice(&entry(*at, d.len()));
        }
        raw[482] = u8::from(!rest.is_empty());
        raw[483..495].copy_from_slice(&octal(size));
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        let blocks: Vec<_> = rest.chunks(21).collect();
        for (k, chunk) in blocks.iter().enumerate() {
            let mut block = [0u8; 512];
            for (i, (at, d)) in chunk.iter().enumerate() {
                block[i * 24..i * 24 + 24].copy_from_slice(&entry(*at, d.len()));
            }
            block[504] = u8::from(k + 1 < blocks.len());
            self.out.extend_from_slice(&block);
        }
        self.out.extend_from_slice(&data);
        self.out
            .extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        self
    }

    /// A sparse file as GNU tar writes it with `--format=posix --sparse-version=V`: the
    /// map in PAX records (0.0: `offset`/`numbytes` pairs; 0.1: `map`) or at the start of
    /// the data (1.0, with the real name and size in PAX records and a made-up name in
    /// the header). As [`gnu_sparse`](Self::gnu_sparse) otherwise.
    pub fn pax_sparse(
        &mut self,
        version: PaxSparse,
        name: &[u8],
        segments: &[(u64, &[u8])],
        size: u64,
    ) -> &mut RawTar {
        let mut data: Vec<u8> = segments
            .iter()
            .flat_map(|(_, d)| d.iter().copied())
            .collect();
        let n = segments.len().to_string();
        let real = size.to_string();
        let pairs: Vec<(String, String)> = segments
            .iter()
            .map(|(at, d)| (at.to_string(), d.len().to_string()))
            .collect();
        let mut records: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut header_name = name.to_vec();
        match version {
            PaxSparse::V0_0 => {
                records.push(("GNU.sparse.size", real.clone().into_bytes()));
                records.push(("GNU.sparse.numblocks", n.clone().into_bytes()));
                for (at, len) in &pairs {
                    records.push(("GNU.sparse.offset", at.clone().into_bytes()));
                    records.push(("GNU.sparse.numbytes", len.clone().into_bytes()));
                }
            }
            PaxSparse::V0_1 => {
                let map: Vec<String> = pairs.iter().map(|(a, l)| format!("{a},{l}")).collect();
                records.push(("GNU.sparse.size", real.clone().into_bytes()));
                records.push(("GNU.sparse.numblocks", n.clone().into_bytes()));
                records.push(("GNU.sparse.name", name.to_vec()));
                records.push(("GNU.sparse.map", map.join(",").into_bytes()));
                header_name = b"GNUSparseFile.0/f".to_vec();
            }
            PaxSparse::V1_0 => {
                records.push(("GNU.sparse.major", b"1".to_vec()));
                records.push(("GNU.sparse.minor", b"0".to_vec()));
                records.push(("GNU.sparse.name", name.to_vec()));
                records.push(("GNU.sparse.realsize", real.into_bytes()));
                header_name = b"GNUSparseFile.0/f".to_vec();
                let mut map = format!("{n}\n");
                for (at, len) in &pairs {
                    map.push_str(&format!("{at}\n{len}\n"));
                }
                let mut map = map.into_bytes();
                map.resize(map.len().div_ceil(512) * 512, 0);
                map.extend_from_slice(&data);
                data = map;
            }
        }
        let records: Vec<(&str, &[u8])> = records.iter().map(|(k, v)| (*k, &v[..])).collect();
        self.pax(&records);
        self.raw(
            &header_name,
            flag::FILE,
            0o644,
            0,
            0,
            data.len() as u64,
            b"",
            &data,
        )
    }

    /// The archive, with its two end-of-archive blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut v = self.out.clone();
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

/// One PAX record: `"<len> <key>=<value>\n"`, `<len>` counting the whole record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).expect("in-memory gzip");
    enc.finish().expect("in-memory gzip")
}

fn gz_layer(tar: &[u8]) -> EvilLayer {
    EvilLayer {
        media_type: OCI_LAYER_GZIP,
        blob: gzip(tar),
        diff_id: sha256_digest(tar),
    }
}

fn tar_layer(tar: &[u8]) -> EvilLayer {
    EvilLayer {
        media_type: OCI_LAYER_TAR,
        blob: tar.to_vec(),
        diff_id: sha256_digest(tar),
    }
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn case(
    name: &'static str,
    layers: Vec<EvilLayer>,
    expect: Expect,
    checks: Vec<Check>,
) -> EvilCase {
    EvilCase {
        name,
        layers,
        expect,
        checks,
        max_layer_size: None,
    }
}

fn one(name: &'static str, t: &RawTar, expect: Expect, checks: Vec<Check>) -> EvilCase {
    case(name, vec![gz_layer(&t.finish())], expect, checks)
}

/// Every evil case, aimed at the sentinel directory `sentinel` (an absolute path).
// One push per case reads better than one huge vec![] with blocks in it.
#[allow(clippy::vec_init_then_push)]
pub fn cases(sentinel: &Path) -> Vec<EvilCase> {
    let abs = sentinel.as_os_str().as_bytes().to_vec();
    let abs_in = |rest: &str| {
        let mut v = abs.clone();
        v.extend_from_slice(rest.as_bytes());
        v
    };
    // The sentinel's absolute path, as it lands inside the root.
    let abs_rel = |rest: &str| {
        let mut v = abs[1..].to_vec();
        v.extend_from_slice(rest.as_bytes());
        v
    };
    let mut out = Vec::new();

    out.push(one(
        "dotdot-relative",
        RawTar::new().file(b"../../x", b"pwned"),
        Expect::Error,
        vec![],
    ));
    out.push(one(
        "dotdot-to-sibling",
        RawTar::new().file(b"../sentinel/pwned", b"pwned"),
        Expect::Error,
        vec![],
    ));
    out.push(one(
        "absolute-paths",
        RawTar::new()
            .file(&abs_in("/pwned"), b"pwned")
            .file(b"/etc/hoist-evil-x", b"pwned"),
        Expect::Ok,
        vec![
            Check::File(abs_rel("/pwned"), b("pwned")),
            Check::File(b("etc/hoist-evil-x"), b("pwned")),
            Check::HostAbsent(PathBuf::from("/etc/hoist-evil-x")),
        ],
    ));
    out.push(one(
        "symlink-abs-then-write",
        RawTar::new()
            .symlink(b"a", &abs_in("/etc"))
            .file(b"a/passwd", b"pwned"),
        Expect::Either,
        vec![],
    ));
    out.push(one(
        "symlink-etc-then-write",
        RawTar::new()
            .dir(b"etc", 0o755)
            .symlink(b"a", b"/etc")
            .file(b"a/passwd", b"pwned"),
        Expect::Ok,
        vec![
            Check::File(b("etc/passwd"), b("pwned")),
            Check::Symlink(b("a"), b("/etc")),
        ],
    ));
    out.push(one(
        "symlink-dotdot-then-write",
        RawTar::new()
            .dir(b"etc", 0o755)
            .symlink(b"a", b"../../../etc")
            .file(b"a/shadow", b"pwned")
            .symlink(b"s", b"../sentinel")
            .file(b"s/pwned", b"pwned"),
        Expect::Either,
        vec![Check::File(b("etc/shadow"), b("pwned"))],
    ));
    out.push(case(
        "symlink-named-dot-then-layer",
        vec![
            gz_layer(&RawTar::new().symlink(b".", &abs).finish()),
            gz_layer(&RawTar::new().file(b"pwned", b"pwned").finish()),
        ],
        Expect::Either,
        vec![],
    ));
    out.push(case(
        "symlink-named-slash-then-layer",
        vec![
            gz_layer(&RawTar::new().symlink(b"/", &abs).finish()),
            gz_layer(&RawTar::new().file(b"./pwned", b"pwned").finish()),
        ],
        Expect::Either,
        vec![],
    ));
    out.push(one(
        "hardlink-dotdot",
        RawTar::new().hardlink(b"h", b"../../etc/passwd", 0o644),
        Expect::Error,
        vec![],
    ));
    out.push(one(
        "hardlink-through-symlinked-dir",
        RawTar::new()
            .symlink(b"s", &abs_in("/etc"))
            .hardlink(b"h", b"s/passwd", 0o644),
        Expect::Error,
        vec![],
    ));
    out.push(one(
        "hardlink-to-outside-symlink-then-chmod",
        RawTar::new()
            .symlink(b"s", &abs_in("/file"))
            .hardlink(b"h", b"s", 0o777)
            .hardlink(b"h2", b"h", 0o4777)
            .raw(b"h", flag::LINK, 0o777, 0, 0, 0, b"s", b""),
        Expect::Either,
        vec![],
    ));
    out.push(one(
        "symlink-then-dir-0777",
        RawTar::new()
            .symlink(b"foo", &abs_in("/victim"))
            .dir(b"foo", 0o777),
        Expect::Ok,
        vec![Check::Dir(b("foo")), Check::Mode(b("foo"), 0o777, 0o777)],
    ));
    out.push(one(
        "link-then-file",
        RawTar::new()
            .symlink(b"f", &abs_in("/file"))
            .file(b"f", b"replaced")
            .file(b"orig", b"orig")
            .hardlink(b"g", b"orig", 0o644)
            .file(b"g", b"new"),
        Expect::Ok,
        vec![
            Check::File(b("f"), b("replaced")),
            Check::File(b("orig"), b("orig")),
            Check::File(b("g"), b("new")),
        ],
    ));
    for (name, path) in [
        ("whiteout-dot", ".wh.."),
        ("whiteout-dotdot", ".wh..."),
        ("whiteout-nested-dot", "etc/.wh.."),
        ("whiteout-bare", ".wh."),
    ] {
        out.push(case(
            name,
            vec![
                gz_layer(
                    &RawTar::new()
                        .dir(b"etc", 0o755)
                        .file(b"etc/keep", b"keep")
                        .finish(),
                ),
                gz_layer(&RawTar::new().file(path.as_bytes(), b"").finish()),
            ],
            Expect::Error,
            vec![],
        ));
    }
    out.push(case(
        "whiteout-under-symlinked-parent",
        vec![
            gz_layer(
                &RawTar::new()
                    .symlink(b"a", &abs)
                    .symlink(b"r", b"../sentinel")
                    .finish(),
            ),
            gz_layer(
                &RawTar::new()
                    .file(b"a/.wh.file", b"")
                    .file(b"a/.wh.victim", b"")
                    .file(b"r/.wh.etc", b"")
                    .finish(),
            ),
        ],
        Expect::Either,
        vec![],
    ));
    out.push(case(
        "opaque-under-symlinked-parent",
        vec![
            gz_layer(&RawTar::new().symlink(b"a", &abs).finish()),
            gz_layer(&RawTar::new().file(b"a/.wh..wh..opq", b"").finish()),
        ],
        Expect::Either,
        vec![],
    ));
    out.push(case(
        "opaque-plus-new-files-same-layer",
        vec![
            gz_layer(
                &RawTar::new()
                    .dir(b"d", 0o755)
                    .file(b"d/old", b"old")
                    .dir(b"d/sub", 0o755)
                    .file(b"d/sub/deep", b"deep")
                    .finish(),
            ),
            gz_layer(
                &RawTar::new()
                    .dir(b"d", 0o755)
                    .file(b"d/new1", b"1")
                    .file(b"d/.wh..wh..opq", b"")
                    .file(b"d/new2", b"2")
                    .finish(),
            ),
        ],
        Expect::Ok,
        vec![
            Check::Absent(b("d/old")),
            Check::Absent(b("d/sub")),
            Check::File(b("d/new1"), b("1")),
            Check::File(b("d/new2"), b("2")),
        ],
    ));
    {
        // The PAX size says 1024 bytes, the ustar header 10: a parser that believes the header
        // reads the next "header" from inside the data.
        let mut inner = RawTar::new();
        inner.file(&abs_in("/pwned-by-pax"), b"smuggled");
        let smuggled = inner.finish();
        let mut data = b"0123456789".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(&smuggled[..512 + 512]);
        let mut t = RawTar::new();
        t.pax(&[("size", b"1024")]);
        t.raw(b"p", flag::FILE, 0o644, 0, 0, 10, b"", &data);
        out.push(one("pax-size-contradicts-ustar", &t, Expect::Error, vec![]));
    }
    out.push(one(
        "duplicate-paths",
        RawTar::new()
            .file(b"x", b"one")
            .file(b"x", b"two")
            .dir(b"d", 0o755)
            .file(b"d", b"file now")
            .file(b"e", b"file")
            .dir(b"e", 0o700)
            .dir(b"e", 0o750),
        Expect::Ok,
        vec![
            Check::File(b("x"), b("two")),
            Check::File(b("d"), b("file now")),
            Check::Dir(b("e")),
            Check::Mode(b("e"), 0o750, 0o750),
        ],
    ));
    out.push(one(
        "hardlink-missing-target",
        RawTar::new().hardlink(b"h", b"nope", 0o644),
        Expect::Error,
        vec![],
    ));
    out.push(one(
        "hardlink-to-directory",
        RawTar::new()
            .dir(b"etc", 0o755)
            .hardlink(b"h", b"etc", 0o755),
        Expect::Error,
        vec![],
    ));
    {
        let t = RawTar::new().file(b"f", &[7u8; 100_000]).finish();
        let gz = gzip(&t);
        let mut truncated = gz.clone();
        truncated.truncate(gz.len() - 12);
        out.push(case(
            "gzip-truncated",
            vec![EvilLayer {
                media_type: OCI_LAYER_GZIP,
                blob: truncated,
                diff_id: sha256_digest(&t),
            }],
            Expect::Error,
            vec![],
        ));
        let mut garbage = gz.clone();
        garbage.extend_from_slice(b"trailing garbage after the gzip member");
        out.push(case(
            "gzip-trailing-garbage",
            vec![EvilLayer {
                media_type: OCI_LAYER_GZIP,
                blob: garbage,
                diff_id: sha256_digest(&t),
            }],
            Expect::Error,
            vec![],
        ));
        out.push(case(
            "zstd-labelled-gzip",
            vec![EvilLayer {
                media_type: OCI_LAYER_GZIP,
                blob: zstd::stream::encode_all(t.as_slice(), 3).expect("in-memory zstd"),
                diff_id: sha256_digest(&t),
            }],
            Expect::Error,
            vec![],
        ));
        out.push(case(
            "gzip-labelled-uncompressed",
            vec![EvilLayer {
                media_type: OCI_LAYER_TAR,
                blob: gz,
                diff_id: sha256_digest(&t),
            }],
            Expect::Error,
            vec![],
        ));
        out.push(case(
            "gzip-labelled-zstd",
            vec![EvilLayer {
                media_type: OCI_LAYER_ZSTD,
                blob: gzip(&t),
                diff_id: sha256_digest(&t),
            }],
            Expect::Error,
            vec![],
        ));
    }
    {
        let mut t = RawTar::new();
        t.pax(&[("uid", b"4294967295")]);
        t.file(b"u", b"uid -1");
        out.push(one("uid-4294967295-pax", &t, Expect::Error, vec![]));
        let mut t = RawTar::new();
        t.raw(b"u", flag::FILE, 0o644, 0, 4_294_967_295, 1, b"", b"x");
        out.push(one("gid-4294967295-base256", &t, Expect::Error, vec![]));
    }
    out.push(one(
        "non-utf8-name",
        RawTar::new().file(b"caf\xe9-\xff\xfe", b"latin1"),
        Expect::Ok,
        vec![Check::File(b"caf\xe9-\xff\xfe".to_vec(), b("latin1"))],
    ));
    {
        let long: Vec<u8> = std::iter::repeat_n(b"abcdefghijklmnop/".as_slice(), 300)
            .flatten()
            .copied()
            .chain(b"f".iter().copied())
            .collect();
        let mut t = RawTar::new();
        t.pax(&[("path", &long)]);
        t.file(b"short-name", b"x");
        out.push(one("path-over-path-max", &t, Expect::Error, vec![]));
        let deep: Vec<u8> = std::iter::repeat_n(b"a/".as_slice(), 600)
            .flatten()
            .copied()
            .chain(b"f".iter().copied())
            .collect();
        let mut t = RawTar::new();
        t.pax(&[("path", &deep)]);
        t.file(b"short-name", b"x");
        out.push(one("path-too-deep", &t, Expect::Error, vec![]));
    }
    {
        let mut t = RawTar::new();
        t.pax(&[("SCHILY.xattr.user.big", &vec![b'x'; 200 * 1024])]);
        t.file(b"f", b"x");
        out.push(one("xattr-too-large", &t, Expect::Error, vec![]));
    }
    {
        let zeros = vec![0u8; 32 << 20];
        let t = RawTar::new().file(b"bomb", &zeros).finish();
        out.push(EvilCase {
            name: "decompression-bomb",
            layers: vec![gz_layer(&t)],
            expect: Expect::Error,
            checks: vec![],
            max_layer_size: Some(4 << 20),
        });
    }
    {
        // GNU sparse files (GNU tar's `--sparse`) in its four forms, read as Go's reader (so
        // containerd, Docker and umoci) reads them: the file, with zeros in its holes. Six
        // segments, so the old format needs an extension block; a hole at the end.
        let segs: [(u64, &[u8]); 6] = [
            (0, b"head"),
            (1024, b"one"),
            (2048, b"two"),
            (3000, b"three"),
            (4096, b"four"),
            (6000, b"tail!"),
        ];
        let mut want = vec![0u8; 8192];
        for (at, d) in segs {
            want[at as usize..][..d.len()].copy_from_slice(d);
        }
        let ok =
            |name, t: &RawTar| one(name, t, Expect::Ok, vec![Check::File(b("s"), want.clone())]);
        out.push(ok(
            "sparse-gnu",
            RawTar::new().gnu_sparse(b"s", &segs, 8192),
        ));
        for (name, v) in [
            ("sparse-pax-0.0", PaxSparse::V0_0),
            ("sparse-pax-0.1", PaxSparse::V0_1),
            ("sparse-pax-1.0", PaxSparse::V1_0),
        ] {
            out.push(ok(name, RawTar::new().pax_sparse(v, b"s", &segs, 8192)));
        }
        let refused = |name, t: &RawTar| one(name, t, Expect::Error, vec![]);
        out.push(refused(
            "sparse-overlapping",
            RawTar::new().gnu_sparse(b"s", &[(0, b"abcd"), (2, b"xy")], 16),
        ));
        out.push(refused(
            "sparse-past-its-size",
            RawTar::new().pax_sparse(PaxSparse::V0_1, b"s", &[(10, b"abcdef")], 12),
        ));
        out.push(refused(
            "sparse-out-of-order",
            RawTar::new().pax_sparse(PaxSparse::V1_0, b"s", &[(100, b"a"), (0, b"b")], 200),
        ));
        let mut t = RawTar::new();
        t.pax(&[("GNU.sparse.size", b"100"), ("GNU.sparse.map", b"0,10")]);
        t.file(b"s", b"abcd");
        out.push(refused("sparse-map-not-the-data-stored", &t));
        // 1 TiB of hole in a few hundred bytes: over the layer size limit (64 GiB).
        out.push(refused(
            "sparse-hole-bomb",
            RawTar::new().gnu_sparse(b"s", &[((1 << 40) - 1, b"x")], 1 << 40),
        ));
    }
    out.push(one(
        "dir-replaced-by-symlink-same-layer",
        RawTar::new()
            .dir(b"d", 0o755)
            .file(b"d/x", b"x")
            .symlink(b"d", &abs)
            .file(b"d/pwned", b"pwned"),
        Expect::Either,
        vec![],
    ));
    out.push(case(
        "dir-replaced-by-symlink-next-layer",
        vec![
            gz_layer(&RawTar::new().dir(b"d", 0o755).file(b"d/x", b"x").finish()),
            gz_layer(&RawTar::new().symlink(b"d", &abs).finish()),
            gz_layer(&RawTar::new().file(b"d/pwned", b"pwned").finish()),
        ],
        Expect::Either,
        vec![],
    ));
    out.push(one(
        "symlink-loop",
        RawTar::new().symlink(b"l", b"l").file(b"l/x", b"x"),
        Expect::Error,
        vec![],
    ));
    {
        let mut t = RawTar::new();
        t.pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.kept", b"1"),
        ]);
        t.dir(b"o", 0o755);
        out.push(one(
            "trusted-overlay-xattr-dropped",
            &t,
            Expect::Ok,
            vec![
                Check::Dir(b("o")),
                Check::NoXattr(b("o"), "trusted.overlay.opaque".into()),
            ],
        ));
    }
    out.push(one(
        "device-and-setuid",
        RawTar::new()
            .char_device(b"null", 1, 3)
            .raw(b"suid", flag::FILE, 0o4755, 0, 0, 2, b"", b"#!")
            .raw(b"fifo", flag::FIFO, 0o644, 0, 0, 0, b"", b""),
        Expect::Ok,
        vec![
            Check::CharIfRoot(b("null"), 1, 3),
            Check::Mode(b("suid"), 0o4755, 0o755),
        ],
    ));
    out.push(case(
        "plain-tar-layer-with-dotdot-symlink-chain",
        vec![tar_layer(
            &RawTar::new()
                .symlink(b"l1", b"l2/..")
                .symlink(b"l2", b"../..")
                .file(b"l1/pwned", b"pwned")
                .finish(),
        )],
        Expect::Either,
        vec![],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_deterministic_and_readable() {
        let s = Path::new("/tmp/some/sentinel");
        let a = cases(s);
        let b = cases(s);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.name, y.name);
            for (l1, l2) in x.layers.iter().zip(&y.layers) {
                assert_eq!(l1.blob, l2.blob, "{}", x.name);
            }
        }
        let names: std::collections::BTreeSet<_> = a.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), a.len(), "names are unique");
        // A plain entry reads back with the tar crate.
        let t = RawTar::new().file(b"a", b"hello").finish();
        let mut ar = tar::Archive::new(t.as_slice());
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), b"a");
        assert_eq!(e.header().size().unwrap(), 5);
    }
}
