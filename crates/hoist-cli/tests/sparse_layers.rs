//! Layers that GNU tar wrote with `--sparse`, in each of its four forms (its own format's
//! `S` entries, and PAX sparse versions 0.0, 0.1 and 1.0): `hoist unpack` gives the file
//! that was archived, with its holes kept as holes, as umoci (Go's tar reader, which
//! containerd and Docker use too) gives it from the PAX forms (umoci 0.4.7 refuses the old
//! form's `S` entries, "unknown typeflag"; GNU tar and hoist read them); the ext4 image
//! holds the same bytes; a tar index refuses such a layer with a clear error and leaves
//! nothing behind.

mod support;

use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::Path;
use std::process::Command;

use hoist_testkit::images::{Compression, ImageSpec, LayerSpec};
use hoist_testkit::{Need, Peer, require};
use support::Env;

const MIB: u64 = 1 << 20;

/// A file of 4 MiB and 2 bytes: "head" at 0, 64 KiB of bytes at 1 MiB, "tail" at 3 MiB,
/// holes elsewhere (one at the end).
fn sparse_source(dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let f = std::fs::File::create(dir.join("disk.img")).unwrap();
    let mid: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8 + 1).collect();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(&mid, MIB).unwrap();
    f.write_all_at(b"tail", 3 * MIB).unwrap();
    f.set_len(4 * MIB + 2).unwrap();
    std::fs::write(dir.join("plain.txt"), "plain\n").unwrap();
    std::fs::read(dir.join("disk.img")).unwrap()
}

fn gnu_tar(src: &Path, args: &[&str]) -> Vec<u8> {
    support::run_ok(
        Command::new("tar")
            .args(args)
            .args(["--sparse", "--owner=0", "--group=0", "-cf", "-", "-C"])
            .arg(src)
            .args(["disk.img", "plain.txt"]),
    )
}

#[test]
fn sparse_layers_from_gnu_tar_unpack_as_umoci_unpacks_them_and_build() {
    require!(
        Need::Peer(Peer::Umoci),
        Need::Tool("tar"),
        Need::Tool("debugfs")
    );
    let env = Env::new();
    let want = sparse_source(&env.path("src"));
    let forms: [(&str, &[&str]); 4] = [
        ("gnu", &["--format=gnu"]),
        ("pax00", &["--format=posix", "--sparse-version=0.0"]),
        ("pax01", &["--format=posix", "--sparse-version=0.1"]),
        ("pax10", &["--format=posix", "--sparse-version=1.0"]),
    ];
    for (tag, args) in forms {
        let tar = gnu_tar(&env.path("src"), args);
        assert!(tar.len() < MIB as usize, "{tag}: GNU tar stored the holes");
        let layout = env.path(&format!("layout-{tag}"));
        ImageSpec::oci()
            .layer(LayerSpec::from_tar(Compression::Gzip, tar))
            .write_layout(&layout, tag)
            .unwrap();
        let image = format!("sparse:{tag}");
        env.ok(&[
            "-q",
            "copy",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("hoist:{image}"),
        ]);

        // hoist unpack: the bytes, and the holes kept.
        let dir = env.path(&format!("unpacked-{tag}"));
        env.ok(&["-q", "unpack", &image, dir.to_str().unwrap()]);
        let got = dir.join("disk.img");
        assert!(std::fs::read(&got).unwrap() == want, "{tag}: contents");
        let blocks = std::fs::metadata(&got).unwrap().blocks() * 512;
        assert!(
            blocks < 2 * MIB,
            "{tag}: {blocks} bytes allocated: holes filled"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("plain.txt")).unwrap(),
            "plain\n",
            "{tag}: the entry after the sparse file"
        );

        // umoci (Go's tar reader) gives the same file from the PAX forms.
        if tag != "gnu" {
            let bundle = env.path(&format!("umoci-{tag}"));
            support::run_ok(
                Command::new("umoci")
                    .args(["unpack", "--rootless", "--image"])
                    .arg(format!("{}:{tag}", layout.display()))
                    .arg(&bundle),
            );
            assert!(
                std::fs::read(bundle.join("rootfs/disk.img")).unwrap() == want,
                "{tag}: umoci's file differs"
            );
        }

        // The ext4 image holds the same bytes.
        let img = env.path(&format!("{tag}.ext4"));
        env.ok(&[
            "-q",
            "rootfs",
            &image,
            "--format",
            "ext4",
            "-o",
            img.to_str().unwrap(),
        ]);
        let dumped = env.path(&format!("{tag}-dumped"));
        support::run_ok(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("dump /disk.img {}", dumped.display()))
                .arg(&img),
        );
        assert!(
            std::fs::read(&dumped).unwrap() == want,
            "{tag}: ext4 contents"
        );

        // A tar index cannot point at segments: refused, nothing left.
        let ix = env.path(&format!("{tag}.erofs"));
        let out = env.run(&[
            "rootfs",
            &image,
            "--format",
            "erofs",
            "--tar-index",
            "-o",
            ix.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{tag}: the tar index was built");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("\"disk.img\": a sparse file"), "{tag}: {err}");
        assert!(!ix.exists(), "{tag}");
        support::assert_fsck_clean(env.dir.path(), &env.store());
    }
}
