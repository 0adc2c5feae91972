//! Configuration snippets that point clients at `hoist serve`: containerd's `hosts.toml`
//! (its `certs.d` directories; containerd adds `?ns=<registry>` to each mirrored request)
//! and containers' `registries.conf` (podman, skopeo, buildah, CRI-O).

/// `hosts.toml` for `/etc/containerd/certs.d/<registry>/hosts.toml` (or `_default/` for
/// every registry): `hoist serve` at `url` is asked first for pulls and tag resolution.
/// `upstream` is the `server` line (the registry itself), if known.
pub fn hosts_toml(url: &str, upstream: Option<&str>, ca_file: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(u) = upstream {
        s.push_str(&format!("server = {}\n\n", toml_str(u)));
    }
    s.push_str(&format!("[host.{}]\n", toml_str(url)));
    s.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
    if let Some(ca) = ca_file {
        s.push_str(&format!("  ca = {}\n", toml_str(ca)));
    } else if url.starts_with("http://") {
        // containerd refuses plain HTTP to a host that is not loopback unless told.
        s.push_str("  skip_verify = true\n");
    }
    s
}

/// The `registries.conf` (v2) stanza making `hoist serve` at `host_port` a mirror of
/// `registry`. These clients do not say which registry a mirrored request is for: run
/// `hoist serve --registry REGISTRY` (or serve one registry's images) so names resolve.
pub fn registries_conf(host_port: &str, registry: &str, insecure: bool) -> String {
    format!(
        "[[registry]]\nprefix = {reg}\nlocation = {reg}\n\n[[registry.mirror]]\nlocation = {loc}\ninsecure = {insecure}\n",
        reg = toml_str(registry),
        loc = toml_str(host_port),
    )
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_shape() {
        let s = hosts_toml(
            "http://127.0.0.1:5050",
            Some("https://registry-1.docker.io"),
            None,
        );
        assert_eq!(
            s,
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://127.0.0.1:5050\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
        );
        let s = hosts_toml("https://h:1", None, Some("/x/ca.pem"));
        assert!(s.contains("ca = \"/x/ca.pem\""), "{s}");
        assert!(!s.contains("server"), "{s}");
    }

    #[test]
    fn registries_conf_shape() {
        let s = registries_conf("127.0.0.1:5050", "docker.io", true);
        assert!(s.contains("prefix = \"docker.io\""), "{s}");
        assert!(
            s.contains("location = \"127.0.0.1:5050\"\ninsecure = true"),
            "{s}"
        );
        assert_eq!(toml_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
