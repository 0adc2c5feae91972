//! Shared by the integration tests: load testkit images into a hoist store.

#![allow(dead_code)]

use hoist_store::{ImageCommit, ImageRecord, Store};
use hoist_testkit::images::{BuiltImage, Entry, ImageSpec, LayerSpec};
use hoist_types::{Descriptor, Digest, MediaType, Reference};

/// Puts every blob of `built` into `store` and commits it as `name`.
pub fn load(store: &Store, built: &BuiltImage, name: &str) -> ImageRecord {
    for (d, bytes) in built.blobs() {
        store.put_blob(&Digest::parse(d).unwrap(), bytes).unwrap();
    }
    let m = &built.manifest;
    store
        .commit_image(ImageCommit {
            name: Some(Reference::parse(name).unwrap()),
            manifest: Descriptor::new(
                MediaType::parse(&m.media_type),
                Digest::parse(&m.digest).unwrap(),
                m.size,
            ),
            index: None,
            source: None,
        })
        .unwrap()
}

/// An image with what the samples lack: devices, a file capability, big ids, sticky and
/// setgid directories, type changes across layers, a hardlink chain, odd modes.
pub fn special_image() -> ImageSpec {
    ImageSpec::oci()
        .layer(LayerSpec::gzip([
            Entry::dir("dev"),
            Entry::char_device("dev/null", 1, 3),
            Entry::char_device("dev/tty0", 4, 0).mode(0o620).owner(0, 5),
            Entry::hardlink("dev/null-again", "dev/null"),
            Entry::dir("bin"),
            Entry::executable("bin/ping", "ELF").xattr(
                "security.capability",
                vec![
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            Entry::file("bin/big-ids", "ids").owner(3_000_000, 3_000_001),
            Entry::dir("tmp").mode(0o1777),
            Entry::dir("srv").mode(0o2775).owner(0, 50),
            Entry::file("srv/a", "chain"),
            Entry::hardlink("srv/b", "srv/a"),
            Entry::hardlink("srv/c", "srv/b"),
            Entry::dir("was-dir"),
            Entry::file("was-dir/inner", "gone"),
            Entry::file("was-file", "gone"),
            Entry::file("private", "secret")
                .mode(0o600)
                .owner(1000, 1000),
            Entry::file("noperm", "none").mode(0o000),
            Entry::executable("bin/sgid", "x").mode(0o2755),
            Entry::dir("ro-dir").mode(0o555),
            Entry::file("ro-dir/f", "in a read-only dir"),
        ]))
        .layer(LayerSpec::gzip([
            Entry::file("was-dir", "now a file"),
            Entry::dir("was-file").mode(0o700),
            Entry::file("was-file/inner", "now in a dir"),
            Entry::dir("ro-dir").mode(0o555),
            Entry::file("ro-dir/g", "second layer writes in a read-only dir"),
            // Layer producers write the parent of a change (its mtime changed); per-layer
            // images rely on it: an implicit parent would show as 0755 root:root in the
            // overlayfs stack.
            Entry::dir("srv").mode(0o2775).owner(0, 50),
            Entry::whiteout("srv/a"),
            Entry::symlink("dev/stdout", "/proc/self/fd/1"),
            Entry::dir("empty")
                .mode(0o750)
                .owner(7, 8)
                .xattr("user.note", "empty dir"),
        ]))
        .cmd(["/bin/sh"])
}
