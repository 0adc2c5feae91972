//! OCI runtime bundles: `DIR/rootfs` plus `DIR/config.json` generated from the image config,
//! following the image spec's conversion rules (`conversion.md`) and runc's default spec.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;

use hoist_store::{ImageRecord, Store};
use hoist_types::{ImageConfig, Progress};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde_json::{Value, json};

use crate::image::{check_layers, image_config, publish_dir, unpack_into};
use crate::{UnpackError, UnpackOptions, UnpackReport};

/// The default `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest `/etc/passwd` or `/etc/group` read.
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// Options of [`runtime_config`].
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// A rootless config: a user namespace mapping the invoking user to root, no cgroup
    /// namespace or mount, `/sys` bind-mounted.
    pub rootless: bool,
    /// Host ids mapped to 0 in rootless mode (default: the effective uid and gid).
    pub host_ids: Option<(u32, u32)>,
}

/// A user resolved inside the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
struct User {
    uid: u32,
    gid: u32,
    additional: Vec<u32>,
}

/// Reads a small file of the root filesystem, resolved inside it (symlinks cannot lead out).
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &root,
        OsStr::new(path),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(MAX_ACCOUNT_FILE)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// `name:x:uid:gid:...` lines → (name, uid, gid).
fn passwd_entries(s: &str) -> Vec<(String, u32, u32)> {
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

/// `name:x:gid:member,member` lines → (name, gid, members).
fn group_entries(s: &str) -> Vec<(String, u32, Vec<String>)> {
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// Resolves the image's `User` (`name`, `uid`, `uid:gid`, `name:group`, ...) with the root
/// filesystem's `/etc/passwd` and `/etc/group`, as runc does.
fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<User, UnpackError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(User {
            uid: 0,
            gid: 0,
            additional: Vec::new(),
        });
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd_entries(passwd);
    let groups = group_entries(group);
    let (uid, name, mut gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let found = users.iter().find(|x| x.1 == uid);
            (uid, found.map(|x| x.0.clone()), found.map_or(0, |x| x.2))
        }
        Err(_) => {
            let found =
                users
                    .iter()
                    .find(|x| x.0 == u)
                    .ok_or_else(|| UnpackError::UnknownUser {
                        spec: spec.to_string(),
                        what: "a user",
                        file: "/etc/passwd",
                    })?;
            (found.1, Some(found.0.clone()), found.2)
        }
    };
    let mut additional = Vec::new();
    match g {
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups
                    .iter()
                    .find(|x| x.0 == g)
                    .map(|x| x.1)
                    .ok_or_else(|| UnpackError::UnknownUser {
                        spec: spec.to_string(),
                        what: "a group",
                        file: "/etc/group",
                    })?,
            };
        }
        None => {
            if let Some(name) = &name {
                for (_, id, members) in &groups {
                    if members.iter().any(|m| m == name) && *id != gid && !additional.contains(id) {
                        additional.push(*id);
                    }
                }
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional,
    })
}

fn default_mounts(rootless: bool) -> Vec<Value> {
    let mut m = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        if rootless {
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]})
        } else {
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]})
        },
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
    ];
    if rootless {
        m.push(
            json!({"destination": "/sys", "type": "none", "source": "/sys",
                      "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
        );
    } else {
        m.push(
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                      "options": ["nosuid", "noexec", "nodev", "ro"]}),
        );
        m.push(
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                      "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        );
    }
    m
}

/// The OCI runtime `config.json` for an image: process (user resolved in `rootfs`'s
/// `/etc/passwd` and `/etc/group`, args = Entrypoint + Cmd, env with a default `PATH`, cwd =
/// WorkingDir), runc's default mounts, namespaces, masked paths and capabilities, and
/// annotations from the config (labels, os, architecture, author, created, stop signal,
/// `org.opencontainers.image.exposedPorts`, and `io.hoist.image.volumes`).
pub fn runtime_config(
    config: &ImageConfig,
    rootfs: &Path,
    opts: &BundleOptions,
) -> Result<Value, UnpackError> {
    let rc = config.run_config();
    let passwd = read_in_root(rootfs, "/etc/passwd").unwrap_or_default();
    let group = read_in_root(rootfs, "/etc/group").unwrap_or_default();
    let user = resolve_user(rc.user.as_deref().unwrap_or(""), &passwd, &group)?;
    let mut env = rc.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let args: Vec<String> = rc
        .entrypoint
        .iter()
        .flatten()
        .chain(rc.cmd.iter().flatten())
        .cloned()
        .collect();
    let cwd = rc
        .working_dir
        .as_deref()
        .filter(|w| w.starts_with('/'))
        .unwrap_or("/");
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut annotations: BTreeMap<String, String> = rc.labels.clone().unwrap_or_default();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            annotations.insert(k.to_string(), v);
        }
    };
    put("org.opencontainers.image.os", Some(config.os.clone()));
    put(
        "org.opencontainers.image.architecture",
        Some(config.architecture.clone()),
    );
    put("org.opencontainers.image.variant", config.variant.clone());
    put("org.opencontainers.image.author", config.author.clone());
    put("org.opencontainers.image.created", config.created.clone());
    put(
        "org.opencontainers.image.stopSignal",
        rc.stop_signal.clone(),
    );
    put(
        "org.opencontainers.image.exposedPorts",
        rc.exposed_ports
            .as_ref()
            .map(|p| p.keys().cloned().collect::<Vec<_>>().join(",")),
    );
    put(
        "io.hoist.image.volumes",
        rc.volumes
            .as_ref()
            .map(|p| p.keys().cloned().collect::<Vec<_>>().join(",")),
    );
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "network"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    let mut linux = json!({
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
            "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    });
    if opts.rootless {
        let (hu, hg) = opts.host_ids.unwrap_or_else(|| {
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )
        });
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": hu, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": hg, "size": 1}]);
    } else {
        namespaces.push(json!({"type": "cgroup"}));
        linux["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    }
    linux["namespaces"] = Value::Array(namespaces);
    let mut user_json = json!({"uid": user.uid, "gid": user.gid});
    if !user.additional.is_empty() {
        user_json["additionalGids"] = json!(user.additional);
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": user_json,
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "hoist",
        "mounts": default_mounts(opts.rootless),
        "annotations": annotations,
        "linux": linux,
    }))
}

/// Unpacks `image` as an OCI runtime bundle at `target` (absent or an empty directory):
/// `target/rootfs` and `target/config.json`, built in a temp directory and renamed into
/// place when every layer checked out.
pub fn unpack_bundle(
    store: &Store,
    image: &ImageRecord,
    target: &Path,
    opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<UnpackReport, UnpackError> {
    check_layers(image)?;
    let config = image_config(store, image)?;
    publish_dir(target, |tmp| {
        let rootfs = tmp.join("rootfs");
        std::fs::create_dir(&rootfs)
            .map_err(|e| UnpackError::io("create directory", &rootfs, e))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| UnpackError::io("chmod", &rootfs, e))?;
        }
        let report = unpack_into(store, image, &rootfs, opts, progress)?;
        let spec = runtime_config(
            &config,
            &rootfs,
            &BundleOptions {
                rootless: opts.rootless,
                host_ids: None,
            },
        )?;
        let path = tmp.join("config.json");
        let mut bytes = serde_json::to_vec_pretty(&spec).expect("a spec serializes");
        bytes.push(b'\n');
        std::fs::write(&path, bytes).map_err(|e| UnpackError::io("write", &path, e))?;
        Ok(report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nweb:x:33:33::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nwww:x:33:app\nextra:x:2000:app,web\n";

    #[test]
    fn users() {
        let r = |s| resolve_user(s, PASSWD, GROUP);
        let u = |uid, gid, additional: &[u32]| User {
            uid,
            gid,
            additional: additional.to_vec(),
        };
        assert_eq!(r("").unwrap(), u(0, 0, &[]));
        assert_eq!(r("app").unwrap(), u(1000, 1001, &[33, 2000]));
        assert_eq!(r("1000").unwrap(), u(1000, 1001, &[33, 2000]));
        assert_eq!(r("app:www").unwrap(), u(1000, 33, &[]));
        assert_eq!(r("1000:1000").unwrap(), u(1000, 1000, &[]));
        assert_eq!(r("4242").unwrap(), u(4242, 0, &[]));
        assert!(r("nobody").is_err());
        assert!(r("app:nogroup").is_err());
    }

    #[test]
    fn config_from_image() {
        let cfg = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000",
            "Env":["A=1"],"Entrypoint":["/init"],"Cmd":["run","x"],"WorkingDir":"/srv",
            "ExposedPorts":{"80/tcp":{},"53/udp":{}},"Volumes":{"/data":{}},
            "Labels":{"k":"v"},"StopSignal":"SIGTERM"},
            "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let t = tempfile::tempdir().unwrap();
        let v = runtime_config(&cfg, t.path(), &BundleOptions::default()).unwrap();
        assert_eq!(v["process"]["args"], json!(["/init", "run", "x"]));
        assert_eq!(v["process"]["env"], json!([DEFAULT_PATH, "A=1"]));
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["user"], json!({"uid": 1000, "gid": 1000}));
        assert_eq!(
            v["annotations"]["org.opencontainers.image.exposedPorts"],
            "53/udp,80/tcp"
        );
        assert_eq!(v["annotations"]["io.hoist.image.volumes"], "/data");
        assert_eq!(v["annotations"]["k"], "v");
        assert_eq!(v["root"]["path"], "rootfs");
        let rl = runtime_config(
            &cfg,
            t.path(),
            &BundleOptions {
                rootless: true,
                host_ids: Some((1234, 5678)),
            },
        )
        .unwrap();
        assert_eq!(rl["linux"]["uidMappings"][0]["hostID"], 1234);
        assert!(
            rl["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "user")
        );
    }
}
