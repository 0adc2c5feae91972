//! Canned images. Each returns a spec, so a test may tweak it before building; the same call always
//! builds the same bytes.

use super::{Entry, ImageFormat, ImageSpec, IndexSpec, LayerSpec};

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Three gzip layers, OCI, linux/amd64:
/// 1. a base tree: `etc/`, `usr/bin/hello` (0755), `bin -> usr/bin`, a hardlink, a setuid file,
///    a 64 KiB pseudo-random file, a file owned by 1000:1000 with an xattr;
/// 2. changes: a new `etc/app/` with a relative symlink, a whiteout of `etc/hostname`, a fifo;
/// 3. an opaque `opt/` with new content and a path longer than 100 bytes.
///
/// Config: Env PATH and `APP_MODE=test`, Entrypoint `/usr/bin/hello`, Cmd `--greet world`, User
/// `1000:1000`, WorkingDir `/srv`, labels, an exposed port and an empty-layer history entry.
pub fn sample_multi_layer() -> ImageSpec {
    let long_dir = "usr/share/doc/hoist-testkit/a-directory-name-that-is-long-enough-to-need-a-gnu-long-name-record";
    ImageSpec::oci()
        .layer(
            LayerSpec::gzip([
                Entry::dir("etc"),
                Entry::file("etc/hostname", "sample\n"),
                Entry::file("etc/os-release", "ID=hoist-testkit\nVERSION_ID=1\n"),
                Entry::dir("opt"),
                Entry::random_file("opt/data.bin", 64 * 1024, 1),
                Entry::file("opt/old.txt", "replaced by an opaque dir later\n"),
                Entry::dir("srv").owner(1000, 1000),
                Entry::file("srv/owned", "mine\n")
                    .owner(1000, 1000)
                    .xattr("user.hoist", "testkit"),
                Entry::dir("usr"),
                Entry::dir("usr/bin"),
                Entry::executable("usr/bin/hello", "#!/bin/sh\necho hello \"$@\"\n"),
                Entry::hardlink("usr/bin/hello-again", "usr/bin/hello"),
                Entry::executable("usr/bin/suid", "#!/bin/sh\n").mode(0o4755),
                Entry::symlink("bin", "usr/bin"),
            ])
            .created_by("ADD base.tar /"),
        )
        .empty_history("ENV APP_MODE=test")
        .layer(
            LayerSpec::gzip([
                Entry::dir("etc/app"),
                Entry::file("etc/app/config.toml", "mode = \"test\"\n"),
                Entry::symlink("etc/app/current", "config.toml"),
                Entry::whiteout("etc/hostname"),
                Entry::dir("run"),
                Entry::fifo("run/app.fifo"),
            ])
            .created_by("RUN configure-app"),
        )
        .layer(
            LayerSpec::gzip([
                Entry::dir("opt"),
                Entry::opaque("opt"),
                Entry::file("opt/readme.txt", "opaque replacement\n"),
                Entry::dir("usr/share"),
                Entry::dir("usr/share/doc"),
                Entry::dir("usr/share/doc/hoist-testkit"),
                Entry::dir(long_dir),
                Entry::file(&format!("{long_dir}/file-with-a-long-name.txt"), "long\n").mtime(0),
            ])
            .created_by("COPY opt /opt"),
        )
        .env(PATH_ENV)
        .env("APP_MODE=test")
        .entrypoint(["/usr/bin/hello"])
        .cmd(["--greet", "world"])
        .user("1000:1000")
        .workdir("/srv")
        .label("org.opencontainers.image.title", "sample-multi-layer")
        .label("org.opencontainers.image.version", "1.0.0")
        .expose("8080/tcp")
        .author("hoist-testkit")
}

/// Docker v2s2, two gzip layers, linux/amd64, with labels and a Cmd.
pub fn sample_docker() -> ImageSpec {
    ImageSpec::docker()
        .layer(
            LayerSpec::gzip([
                Entry::dir("etc"),
                Entry::file("etc/os-release", "ID=hoist-docker\n"),
                Entry::dir("usr"),
                Entry::dir("usr/bin"),
                Entry::executable("usr/bin/app", "#!/bin/sh\necho docker app\n"),
            ])
            .created_by("ADD rootfs.tar /"),
        )
        .layer(
            LayerSpec::gzip([
                Entry::dir("var"),
                Entry::dir("var/lib"),
                Entry::random_file("var/lib/state.bin", 16 * 1024, 2),
                Entry::whiteout("etc/os-release"),
            ])
            .created_by("RUN app --init"),
        )
        .env(PATH_ENV)
        .cmd(["/usr/bin/app"])
        .label("com.example.kind", "docker-v2s2")
}

/// OCI, linux/amd64, a gzip layer then a zstd layer.
pub fn sample_zstd() -> ImageSpec {
    ImageSpec::oci()
        .layer(LayerSpec::gzip([
            Entry::dir("etc"),
            Entry::file("etc/compression", "gzip\n"),
        ]))
        .layer(LayerSpec::zstd([
            Entry::file("etc/compression", "zstd\n"),
            Entry::dir("data"),
            Entry::random_file("data/random.bin", 32 * 1024, 3),
            Entry::file("data/text.txt", "zstd ".repeat(4096)),
        ]))
        .env(PATH_ENV)
        .cmd(["/bin/sh"])
}

fn arch_image(format: ImageFormat, arch: &str, variant: Option<&str>) -> ImageSpec {
    ImageSpec::new(format)
        .platform("linux", arch, variant)
        .layer(LayerSpec::gzip([
            Entry::dir("etc"),
            Entry::file("etc/arch", format!("{arch}{}\n", variant.unwrap_or(""))),
        ]))
        .env(PATH_ENV)
        .cmd(["/bin/sh"])
}

/// An OCI image index with linux/amd64 and linux/arm64/v8 images (one gzip layer each, with
/// different content).
pub fn sample_index() -> IndexSpec {
    IndexSpec::new(ImageFormat::Oci)
        .image(arch_image(ImageFormat::Oci, "amd64", None))
        .image(arch_image(ImageFormat::Oci, "arm64", Some("v8")))
}

/// The same two platforms as [`sample_index`], as a Docker manifest list of v2s2 images.
pub fn sample_index_docker() -> IndexSpec {
    IndexSpec::new(ImageFormat::DockerV2S2)
        .image(arch_image(ImageFormat::DockerV2S2, "amd64", None))
        .image(arch_image(ImageFormat::DockerV2S2, "arm64", Some("v8")))
}
