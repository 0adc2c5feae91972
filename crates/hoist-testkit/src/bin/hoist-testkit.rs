//! `hoist-testkit`: the kit's fixtures as a program, for `scripts/demo.sh` and manual testing.
//!
//! ```text
//! hoist-testkit sample-layout DIR
//!     Write a realistic sample image (4 gzip layers, about 3 MB) into the OCI layout DIR
//!     (created if needed), tagged `sample`, and print its manifest digest.
//!
//! hoist-testkit serve-registry --port-file FILE
//!     Start a plain-HTTP Distribution registry on 127.0.0.1 (a fresh one, storage in a
//!     temporary directory), write its HOST:PORT to FILE, and run until SIGTERM, SIGINT or
//!     SIGHUP, or until stdin reaches its end when stdin is a pipe. The registry is stopped
//!     and FILE removed on the way out; if this program is killed outright, the kernel kills
//!     the registry (it runs with a parent-death signal).
//! ```

use std::io::Read as _;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hoist_testkit::images::{Entry, ImageSpec, LayerSpec};
use hoist_testkit::registry::RegistryBuilder;

const USAGE: &str = "\
usage:
  hoist-testkit sample-layout DIR
  hoist-testkit serve-registry --port-file FILE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("sample-layout") => match &args[1..] {
            [dir] => sample_layout(Path::new(dir)),
            _ => return usage("sample-layout takes one argument, the layout directory"),
        },
        Some("serve-registry") => match port_file_arg(&args[1..]) {
            Some(file) => serve_registry(&file),
            None => return usage("serve-registry needs --port-file FILE"),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => return usage(&format!("unknown command {other:?}")),
        None => return usage("no command given"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoist-testkit: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("hoist-testkit: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn port_file_arg(args: &[String]) -> Option<PathBuf> {
    match args {
        [flag, file] if flag == "--port-file" => Some(PathBuf::from(file)),
        [one] => one.strip_prefix("--port-file=").map(PathBuf::from),
        _ => None,
    }
}

/// The OCI architecture of this machine, so the sample runs where the demo runs.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The demo image: a small distribution-like base, a layer of data files, the application,
/// and a last layer that changes the base.
fn sample_image() -> ImageSpec {
    const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let base = LayerSpec::gzip([
        Entry::dir("etc"),
        Entry::file(
            "etc/os-release",
            "NAME=\"hoist demo\"\nID=hoist-demo\nVERSION_ID=1.0\nPRETTY_NAME=\"hoist demo 1.0\"\n",
        ),
        Entry::file("etc/hostname", "hoist-demo\n"),
        Entry::file(
            "etc/hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\ndemo:x:1000:1000:demo:/srv/demo:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
        Entry::file("etc/group", "root:x:0:\ndemo:x:1000:\nnogroup:x:65534:\n"),
        Entry::file("etc/profile", format!("export {PATH}\nexport PS1='\\u@\\h:\\w\\$ '\n")),
        Entry::file("etc/motd", "Welcome to the hoist demo image.\n"),
        Entry::dir("root").mode(0o700),
        Entry::dir("tmp").mode(0o1777),
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::executable("usr/bin/hello", "#!/bin/sh\necho \"hello from $(hostname)\"\n"),
        Entry::hardlink("usr/bin/hi", "usr/bin/hello"),
        Entry::symlink("bin", "usr/bin"),
        Entry::dir("usr/sbin"),
        Entry::executable("usr/sbin/nologin", "#!/bin/sh\necho 'This account is not available.'\nexit 1\n"),
        Entry::dir("var"),
        Entry::dir("var/log"),
        Entry::dir("srv"),
        Entry::dir("srv/demo").owner(1000, 1000),
    ])
    .created_by("ADD rootfs.tar /");

    // Incompressible files of a few hundred KiB each: about 3 MB that gzip cannot shrink.
    let sizes_kib = [256, 320, 384, 448, 512, 288, 416, 480];
    let mut data = LayerSpec::gzip([
        Entry::dir("usr/share"),
        Entry::dir("usr/share/demo"),
        Entry::dir("usr/share/demo/data"),
    ])
    .created_by("COPY data/ /usr/share/demo/data/");
    for (i, kib) in sizes_kib.iter().enumerate() {
        data = data.entry(Entry::random_file(
            &format!("usr/share/demo/data/chunk-{i:02}.bin"),
            kib * 1024,
            100 + i as u64,
        ));
    }

    let readme =
        "hoist demo\n==========\n\nThis image was generated by hoist-testkit for scripts/demo.sh.\n"
            .to_string()
            + &"It has a base layer, a data layer, an application layer and a fix-up layer.\n"
                .repeat(2000);
    let app = LayerSpec::gzip([
        Entry::dir("usr/local"),
        Entry::dir("usr/local/bin"),
        Entry::executable(
            "usr/local/bin/demo",
            "#!/bin/sh\nset -e\necho \"demo $DEMO_VERSION starting with: $*\"\nls /usr/share/demo/data\n",
        ),
        Entry::dir("etc/demo"),
        Entry::file(
            "etc/demo/config.toml",
            "[server]\nport = 8080\nlog_level = \"info\"\n",
        ),
        Entry::symlink("etc/demo/current.toml", "config.toml"),
        Entry::dir("usr/share/doc"),
        Entry::dir("usr/share/doc/demo"),
        Entry::file("usr/share/doc/demo/README", readme),
    ])
    .created_by("COPY app/ /");

    let fixup = LayerSpec::gzip([
        Entry::whiteout("etc/motd"),
        Entry::dir("var/lib"),
        Entry::dir("var/lib/demo").owner(1000, 1000),
        Entry::file("var/lib/demo/state.json", "{\"initialised\":true}\n").owner(1000, 1000),
    ])
    .created_by("RUN demo --init && rm /etc/motd");

    ImageSpec::oci()
        .platform("linux", host_arch(), None)
        .layer(base)
        .empty_history("ENV LANG=C.UTF-8 DEMO_VERSION=1.0.0")
        .layer(data)
        .layer(app)
        .layer(fixup)
        .env(PATH)
        .env("LANG=C.UTF-8")
        .env("DEMO_VERSION=1.0.0")
        .entrypoint(["/usr/local/bin/demo"])
        .cmd(["--serve", "--port", "8080"])
        .user("1000:1000")
        .workdir("/srv/demo")
        .expose("8080/tcp")
        .stop_signal("SIGTERM")
        .author("hoist-testkit")
        .label("org.opencontainers.image.title", "hoist demo sample")
        .label(
            "org.opencontainers.image.description",
            "A generated image for the hoist demo",
        )
        .label("org.opencontainers.image.version", "1.0.0")
        .label("org.opencontainers.image.licenses", "Apache-2.0")
        .label("org.opencontainers.image.vendor", "hoist")
}

fn sample_layout(dir: &Path) -> Result<(), String> {
    let built = sample_image()
        .write_layout(dir, "sample")
        .map_err(|e| format!("writing the sample layout to {}: {e}", dir.display()))?;
    let total: u64 = built.layers.iter().map(|l| l.blob.size).sum::<u64>() + built.config.size;
    eprintln!(
        "hoist-testkit: wrote {}:sample ({} layers, {} bytes of blobs)",
        dir.display(),
        built.layers.len(),
        total
    );
    println!("{}", built.manifest.digest);
    Ok(())
}

/// Why the server stops.
enum Stop {
    Signal(&'static str),
    StdinClosed,
    RegistryDied,
}

fn serve_registry(port_file: &Path) -> Result<(), String> {
    let reg = RegistryBuilder::new()
        .try_start()
        .map_err(|e| format!("starting the registry: {e}"))?;
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", reg.host_port()))
        .and_then(|()| std::fs::rename(&tmp, port_file))
        .map_err(|e| format!("writing {}: {e}", port_file.display()))?;
    eprintln!(
        "hoist-testkit: registry listening on {} (pid {}, storage {})",
        reg.host_port(),
        reg.pid(),
        reg.storage_dir().display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let stop = rt.block_on(wait_for_stop(reg.pid()));
    let _ = std::fs::remove_file(port_file);
    match stop {
        Ok(Stop::Signal(name)) => {
            eprintln!("hoist-testkit: {name}: stopping the registry");
            Ok(())
        }
        Ok(Stop::StdinClosed) => {
            eprintln!("hoist-testkit: stdin closed: stopping the registry");
            Ok(())
        }
        Ok(Stop::RegistryDied) => Err(format!(
            "the registry (pid {}) exited on its own; its log ends with:\n{}",
            reg.pid(),
            reg.log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )),
        Err(e) => Err(e),
    }
    // `reg` drops here: the registry is killed and its directory removed.
}

async fn wait_for_stop(pid: u32) -> Result<Stop, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let sig = |k: SignalKind, name: &str| signal(k).map_err(|e| format!("handling {name}: {e}"));
    let mut term = sig(SignalKind::terminate(), "SIGTERM")?;
    let mut int = sig(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = sig(SignalKind::hangup(), "SIGHUP")?;
    let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::channel::<()>(1);
    if stdin_is_pipe() {
        // A plain thread: a blocking read of stdin cannot be cancelled, and need not be.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = stdin_tx.blocking_send(());
        });
    } else {
        // Not a pipe (a terminal, /dev/null for a background job): only signals stop us.
        drop(stdin_tx);
    }
    let mut alive = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(Stop::Signal("SIGTERM")),
            _ = int.recv() => return Ok(Stop::Signal("SIGINT")),
            _ = hup.recv() => return Ok(Stop::Signal("SIGHUP")),
            Some(()) = stdin_rx.recv() => return Ok(Stop::StdinClosed),
            _ = alive.tick() => {
                if !process_alive(pid) {
                    return Ok(Stop::RegistryDied);
                }
            }
        }
    }
}

/// Whether stdin is a pipe or a socket, whose end means the parent went away.
fn stdin_is_pipe() -> bool {
    std::fs::metadata("/dev/stdin")
        .is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_socket())
}

/// Whether `pid` runs (a zombie, exited but not yet reaped, does not count).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
