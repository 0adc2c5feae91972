//! The CLI tests' sandbox (`tests/support/mod.rs`) holds: every environment variable that
//! hoist's sources read is handled by it, and a hostile environment in the test process
//! reaches neither `env` nor a real `hoist pull` run through it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testkit::fake::FakeRegistry;
use hoist_testkit::images::{Entry, ImageSpec, LayerSpec};

/// Upper-case literals the scan finds in call position that are not variable names.
const NOT_VARIABLES: &[(&str, &str)] = &[("DIGEST", "a column header of `hoist images`")];

/// The workspace's `crates/` directory.
fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The hoist crates linked into the binary: hoist-cli and its `hoist-*` dependencies,
/// transitively (dev-dependencies excluded).
fn linked_crates() -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec!["hoist-cli".to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let toml = fs::read_to_string(crates_dir().join(&name).join("Cargo.toml")).unwrap();
        let mut in_deps = false;
        for line in toml.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_deps = line == "[dependencies]";
            } else if in_deps && line.starts_with("hoist-") {
                let dep: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                todo.push(dep);
            }
        }
    }
    seen
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The environment variables a piece of source reads: upper-case string literals passed
/// to a call (`var_os("HOME")`, a closure `p("DOCKER_CONFIG")`), clap's `env = "…"`,
/// and `TMPDIR` for `env::temp_dir()`. `env::vars()`/`vars_os()` read everything, so they
/// come back as `*`. The `#[cfg(test)] mod` at the end of a file is not scanned.
fn env_reads(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("(\"") {
            let called = line[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let rest = &line[at + 2..];
            if let (true, Some(end)) = (called, rest.find("\")")) {
                let lit = &rest[..end];
                if is_var_name(lit) {
                    found.insert(lit.to_string());
                }
            }
        }
        for (at, _) in line.match_indices("env = \"") {
            // `#[cfg(target_env = "gnu")]` names a target, not a variable.
            if line[..at].ends_with("target_") {
                continue;
            }
            let rest = &line[at + 7..];
            if let Some(end) = rest.find('"') {
                found.insert(rest[..end].to_string());
            }
        }
        if line.contains("temp_dir()") {
            found.insert("TMPDIR".into());
        }
        if line.contains("env::vars()") || line.contains("env::vars_os()") {
            found.insert("*".into());
        }
    }
    found
}

fn is_var_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether the sandbox sets, removes or deliberately passes on `var`.
fn handled(var: &str) -> bool {
    let upper = var.to_ascii_uppercase();
    support::SANDBOXED.iter().any(|(k, _)| *k == var)
        || support::REMOVED.contains(&var)
        || support::INHERITED.iter().any(|(k, _)| *k == var)
        || support::REMOVED_PREFIXES
            .iter()
            .any(|p| upper.starts_with(p))
        || support::REMOVED_SUFFIXES.iter().any(|s| upper.ends_with(s))
}

#[test]
fn the_scan_finds_reads_and_an_unhandled_one_is_caught() {
    let src = r#"
        let a = std::env::var_os("HOME");
        let p = |k: &str| std::env::var_os(k);
        let b = p("NEW_SETTING");
        #[arg(long, env = "HOIST_NEW")]
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let t = std::env::temp_dir();
        h.push("DIGEST");
        // var_os("IN_A_COMMENT")
        #[cfg(test)]
        mod tests { fn f() { std::env::var("ONLY_IN_TESTS"); } }
    "#;
    let got = env_reads(src);
    let want: BTreeSet<String> = ["HOME", "NEW_SETTING", "HOIST_NEW", "TMPDIR", "DIGEST"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
    assert!(!handled("NEW_SETTING"), "an unknown variable must not pass");
    assert!(handled("HOIST_NEW") && handled("XDG_STATE_HOME") && handled("https_proxy"));
}

#[test]
fn every_variable_hoist_reads_is_isolated() {
    let crates = linked_crates();
    for must in [
        "hoist-cli",
        "hoist-registry",
        "hoist-store",
        "hoist-transport",
    ] {
        assert!(crates.contains(must), "{crates:?}");
    }
    let mut reads: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for krate in &crates {
        let mut files = Vec::new();
        rust_files(&crates_dir().join(krate).join("src"), &mut files);
        for f in files {
            for var in env_reads(&fs::read_to_string(&f).unwrap()) {
                let rel = f.strip_prefix(crates_dir()).unwrap().display().to_string();
                reads.entry(var).or_default().push(rel);
            }
        }
    }
    // The scan must see the reads we know of, or it scans nothing.
    for known in [
        "HOME",
        "DOCKER_CONFIG",
        "HOIST_STORE",
        "HOIST_CONFIG",
        "PATH",
    ] {
        assert!(reads.contains_key(known), "scan missed {known}: {reads:?}");
    }
    let unhandled: Vec<String> = reads
        .iter()
        .filter(|(v, _)| !handled(v) && !NOT_VARIABLES.iter().any(|(n, _)| n == v))
        .map(|(v, files)| format!("{v} (read in {})", files.join(", ")))
        .collect();
    assert!(
        unhandled.is_empty(),
        "hoist reads variables that tests/support/mod.rs does not isolate: {unhandled:?}; \
         add each to SANDBOXED, REMOVED or INHERITED there (with the reason)"
    );
}

/// A hostile environment under `dir/hostile`: every variable hoist or its libraries read,
/// each pointing at garbage, a dead proxy, or a value clap refuses.
fn hostile_env(dir: &Path) -> Vec<(String, OsString)> {
    let h = dir.join("hostile");
    let garbage = "this is { not [ toml, json or pem\n";
    for f in [
        "config.toml",
        "registries.conf",
        "auth.json",
        "docker/config.json",
        "home/.docker/config.json",
        "xdg-config/hoist/config.toml",
        "xdg-config/containers/registries.conf",
        "run/containers/auth.json",
        "certs.d/_default/hosts.toml",
        "ca.pem",
    ] {
        let p = h.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, garbage).unwrap();
    }
    let dead = format!(
        "http://127.0.0.1:{}",
        hoist_testkit::registry::free_port().unwrap()
    );
    let path = |rel: &str| h.join(rel).into_os_string();
    let mut v: Vec<(String, OsString)> = vec![
        ("HOIST_STORE".into(), path("store")),
        ("HOIST_LOG".into(), "trace".into()),
        ("HOIST_CREDS".into(), "hostile:secret".into()),
        ("HOIST_RETRY_TIMES".into(), "not-a-number".into()),
        ("HOIST_RETRY_DELAY".into(), "not-a-duration".into()),
        ("HOIST_CONFIG".into(), path("config.toml")),
        ("HOIST_CONTAINERD_CERTS_D".into(), path("certs.d")),
        ("HOIST_SOME_FUTURE_SETTING".into(), "hostile".into()),
        ("CONTAINERS_REGISTRIES_CONF".into(), path("registries.conf")),
        ("REGISTRY_AUTH_FILE".into(), path("auth.json")),
        ("DOCKER_CONFIG".into(), path("docker")),
        ("HOME".into(), path("home")),
        ("XDG_CONFIG_HOME".into(), path("xdg-config")),
        ("XDG_RUNTIME_DIR".into(), path("run")),
        ("XDG_DATA_HOME".into(), path("data")),
        ("XDG_CACHE_HOME".into(), path("cache")),
        ("TMPDIR".into(), path("no-such-tmp")),
        ("SSL_CERT_FILE".into(), path("ca.pem")),
        ("SSL_CERT_DIR".into(), path("certs")),
        ("REQUEST_METHOD".into(), "GET".into()),
        ("NO_COLOR".into(), "hostile".into()),
        ("CLICOLOR_FORCE".into(), "hostile".into()),
        ("COLORTERM".into(), "hostile".into()),
        ("TERM".into(), "hostile-term".into()),
        ("COLUMNS".into(), "7".into()),
        ("CI".into(), "hostile".into()),
    ];
    for k in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "Ftp_Proxy",
    ] {
        v.push((k.into(), dead.clone().into()));
    }
    v.push(("NO_PROXY".into(), "hostile.invalid".into()));
    v.push(("PATH".into(), std::env::var_os("PATH").unwrap_or_default()));
    v
}

/// `program` with exactly `vars` as its environment, as if the test process had them.
fn in_env(program: &str, vars: &[(String, OsString)]) -> Command {
    let mut c = Command::new(program);
    c.env_clear();
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

#[test]
fn a_hostile_environment_reaches_no_child() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = hostile_env(dir.path());
    let mut c = in_env("/usr/bin/env", &hostile);
    support::isolate_from(&mut c, dir.path(), hostile.iter().map(|(k, v)| (k, v)));
    let out = c.output().unwrap();
    assert!(out.status.success());
    let seen: BTreeMap<String, String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &hostile {
        if support::INHERITED.iter().any(|(n, _)| n == k) {
            continue;
        }
        assert_ne!(
            seen.get(k).map(String::as_str),
            v.to_str(),
            "{k} reached the child with the host's value"
        );
    }
    for (k, rel) in support::SANDBOXED {
        assert_eq!(
            seen.get(*k).map(PathBuf::from),
            Some(dir.path().join(rel)),
            "{k}"
        );
    }
    let leaked: Vec<&String> = seen.keys().filter(|k| !handled(k)).collect();
    assert_eq!(
        leaked,
        Vec::<&String>::new(),
        "only PATH and sandboxed variables are expected"
    );
}

#[test]
fn hoist_pulls_the_same_under_a_hostile_environment() {
    let fake = FakeRegistry::start();
    let img = ImageSpec::oci()
        .layer(LayerSpec::gzip([
            Entry::dir("etc"),
            Entry::file("etc/hostname", "isolated\n"),
        ]))
        .build()
        .unwrap();
    fake.push_image("iso/app", "v1", &img);
    let reference = fake.image_ref("iso/app:v1");

    let dir = tempfile::tempdir().unwrap();
    let hostile = hostile_env(dir.path());
    let before = files(&dir.path().join("hostile"));

    // Control: without the sandbox the hostile environment breaks the pull, so the
    // assertions below can fail.
    let bare = in_env(env!("CARGO_BIN_EXE_hoist"), &hostile)
        .args(["pull", &reference])
        .output()
        .unwrap();
    assert!(
        !bare.status.success(),
        "the hostile environment must break an unisolated pull:\n{}",
        String::from_utf8_lossy(&bare.stderr)
    );

    let mut c = in_env(env!("CARGO_BIN_EXE_hoist"), &hostile);
    support::isolate_from(&mut c, dir.path(), hostile.iter().map(|(k, v)| (k, v)));
    let out = c
        .args(["--progress", "none", "pull", &reference])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "isolated pull failed:\n{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        img.config.digest
    );
    assert!(
        !stderr.contains("TRACE") && !stderr.contains("DEBUG"),
        "HOIST_LOG reached hoist:\n{stderr}"
    );
    let config_blob = support::store(dir.path())
        .join("blobs/sha256")
        .join(img.config.digest.strip_prefix("sha256:").unwrap());
    assert!(config_blob.is_file(), "{}", config_blob.display());
    assert_eq!(
        files(&dir.path().join("hostile")),
        before,
        "hoist wrote into the hostile paths"
    );
}
