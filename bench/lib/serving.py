"""Scenarios 14 and 15 of bench.py: hoist as a registry server, against the Distribution
registry, both read by `skopeo copy`.

14. `skopeo copy` from `hoist serve` (a store holding the image, pulled once) against the
    same from the bench's Distribution registry (the image pushed once, served from its
    disk storage through the page cache); hoist's store is on the same disk
    (bench/work/serving/PID/), not on tmpfs. Variants: one client (into an OCI layout on
    tmpfs), and 16 clients at once (each into its own `dir:`); every copy of every run is
    checked afterwards (manifest digest, each blob's size and sha256: verify_copy.py).
15. A pull-through cache, cold: `skopeo copy` through `hoist serve --pull-through
    --registry SRC` whose store is empty, against the same through a Distribution registry
    in proxy mode (`proxy: remoteurl: http://SRC`), its storage empty; SRC is the bench's
    registry for both. Before every run an untimed step stops the server, deletes its
    storage and starts it again.

The servers run under scripts written into the scratch directory (stop the previous one
by its pid file, reset its storage, start it with setsid, wait for `/v2/`); `stop_all`
stops them (bench.py calls it at exit).
"""

import json
import os
import shlex
import shutil
import socket
import time

CLIENTS = 16
_PIDFILES = []
_WORKDIRS = []


def q(*parts):
    return " ".join(shlex.quote(str(p)) for p in parts)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def server_script(path, name, start, url, log, reset="true"):
    """Write a script that (re)starts one server: stop the previous one, run `reset`,
    start `start` in its own session, wait (bounded) for `url`. Returns the script."""
    pidf = path + ".pid"
    _PIDFILES.append(pidf)
    with open(path, "w") as f:
        f.write(f"""#!/bin/bash
# (re)start {name}
set -eu
if [ -s {q(pidf)} ]; then
  p=$(cat {q(pidf)}); kill "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
fi
{reset}
setsid {start} </dev/null >>{q(log)} 2>&1 &
echo $! > {q(pidf)}
for _ in $(seq 1 200); do curl -fs -o /dev/null -m 1 {q(url)} && exit 0; sleep 0.05; done
echo "{name} did not answer on {url}" >&2; exit 1
""")
    os.chmod(path, 0o755)
    return path


def stop_all():
    """Stop every server started by a script of this process, remove their storage."""
    for pidf in _PIDFILES:
        try:
            with open(pidf) as f:
                pid = int(f.read().strip())
            os.kill(pid, 15)
            for _ in range(100):  # 5 s at most
                os.kill(pid, 0)
                time.sleep(0.05)
        except (OSError, ValueError):
            pass
    for d in _WORKDIRS:
        shutil.rmtree(d, ignore_errors=True)


def manifest_digest(layout, image):
    with open(os.path.join(layout, "index.json")) as f:
        idx = json.load(f)
    return [m["digest"] for m in idx["manifests"]
            if m["annotations"]["org.opencontainers.image.ref.name"] == image][0]


def cases(b, Tool, Case, images, repo_of, clean, O):
    """The cases of scenarios 14 and 15 for `images` (bench image tags); `repo_of(img)` is
    the image's `repository:tag` in the bench registry; `clean` empties the run's scratch,
    `O` is the scratch OCI layout / directory of copies."""
    out = []
    work = os.path.join(os.path.dirname(os.path.dirname(b.layout)), "serving", str(os.getpid()))
    _WORKDIRS.append(work)
    scripts = b.d("servers")
    os.makedirs(scripts, exist_ok=True)
    verify = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verify_copy.py")
    skopeo = lambda src, dest: q("skopeo", "copy", "-q", "--src-tls-verify=false", src, dest)
    for img in images:
        repo = repo_of(img)
        want = manifest_digest(b.layout, img)
        # 14. hoist serve over a store holding the image, on the bench's disk
        port = free_port()
        hoist_addr = f"127.0.0.1:{port}"
        store = os.path.join(work, f"store-{img}")
        start14 = server_script(
            os.path.join(scripts, f"serve-{img}"), "hoist serve",
            q(b.hoist, "--store", store, "serve", "--listen", hoist_addr, "--no-log"),
            f"http://{hoist_addr}/v2/", os.path.join(scripts, f"serve-{img}.log"))
        setup = (lambda img=img, store=store, start14=start14:
                 f"test -d {q(store)} || (mkdir -p {q(os.path.dirname(store))} && "
                 f"cp -a {q(b.seed_store(img))} {q(store)}); {q(start14)}")
        one_check = q("python3", verify, "--manifest", want, f"oci:{O}:latest")
        h = Tool("skopeo copy from hoist serve", skopeo(f"docker://{hoist_addr}/{repo}", f"oci:{O}:latest"),
                 clean, check=one_check)
        p = Tool("skopeo copy from Distribution",
                 skopeo(f"docker://{b.reg}/{repo}", f"oci:{O}:latest"), clean, check=one_check)
        c = Case(14, img, h, p, variant="1client")
        c.setup = setup
        out.append(c)

        def many(src):
            # CLIENTS copies at once, each into its own dir:; fails if any one fails
            one = f"{q('skopeo', 'copy', '-q', '--src-tls-verify=false', src)} {q('dir:' + O + '/c')}\"$i\""
            return (f"mkdir -p {q(O)}; pids=(); for i in $(seq 1 {CLIENTS}); do {one} & pids+=($!); done; "
                    f"rc=0; for p in \"${{pids[@]}}\"; do wait $p || rc=1; done; exit $rc")
        many_check = q("python3", verify, "--manifest", want, *[f"dir:{O}/c{i}" for i in range(1, CLIENTS + 1)])
        # Each server's CPU time (user + system) during each run, into the run's log directory
        # (s14-<img>-16clients-server-cpu.txt): read in the untimed prepare and check steps.
        cpu_log = os.path.join(b.a.logdir, f"s14-{img}-{CLIENTS}clients-server-cpu.txt")
        mark = os.path.join(scripts, f"cpu-mark-{img}")

        def cpu_steps(side, pid_expr):
            now = f"awk '{{print $14 + $15}}' /proc/{pid_expr}/stat"
            spent = (f"awk -v a=\"$(cat {q(mark)})\" '{{printf \"%.2f\", ($14 + $15 - a) / 100}}' "
                     f"/proc/{pid_expr}/stat")
            return (f"{clean} && {now} > {q(mark)}",
                    f"echo {q(side)} $({spent}) CPU-s >> {q(cpu_log)} && {many_check}")
        hp, hc = cpu_steps("hoist serve", f"$(cat {q(os.path.join(scripts, f'serve-{img}') + '.pid')})")
        h = Tool(f"{CLIENTS}× skopeo copy from hoist serve", many(f"docker://{hoist_addr}/{repo}"), hp, check=hc)
        if b.a.registry_pid:
            pp, pc = cpu_steps("Distribution", b.a.registry_pid)
        else:
            pp, pc = clean, many_check
        p = Tool(f"{CLIENTS}× skopeo copy from Distribution", many(f"docker://{b.reg}/{repo}"), pp, check=pc)
        c = Case(14, img, h, p, variant=f"{CLIENTS}clients")
        c.setup = setup
        out.append(c)

        # 15. pull-through, cold: both caches emptied and restarted before every run
        pt_addr = f"127.0.0.1:{free_port()}"
        pt_store = os.path.join(work, f"pt-store-{img}")
        start_pt = server_script(
            os.path.join(scripts, f"pull-through-{img}"), "hoist serve --pull-through",
            q(b.hoist, "--store", pt_store, "serve", "--listen", pt_addr, "--no-log", "--pull-through",
              "--registry", b.reg),
            f"http://{pt_addr}/v2/", os.path.join(scripts, f"pull-through-{img}.log"),
            reset=f"rm -rf {q(pt_store)} && mkdir -p {q(os.path.dirname(pt_store))}")
        px_addr = f"127.0.0.1:{free_port()}"
        px_dir = os.path.join(work, f"proxy-{img}")
        px_conf = os.path.join(scripts, f"proxy-{img}.yml")
        with open(px_conf, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\n  accesslog: {disabled: true}\n"
                    f"storage:\n  cache: {{blobdescriptor: inmemory}}\n"
                    f"  filesystem: {{rootdirectory: {px_dir}/data}}\n"
                    "  delete: {enabled: true}\n"
                    f"http:\n  addr: {px_addr}\n  secret: hoist-bench-proxy-{os.getpid()}\n"
                    f"proxy:\n  remoteurl: http://{b.reg}\n")
        start_px = server_script(
            os.path.join(scripts, f"proxy-{img}"), "Distribution (proxy)",
            q("/usr/bin/docker-registry", "serve", px_conf),
            f"http://{px_addr}/v2/", os.path.join(scripts, f"proxy-{img}.log"),
            reset=f"rm -rf {q(px_dir)} && mkdir -p {q(px_dir + '/data')}")
        h = Tool("skopeo copy through hoist serve --pull-through",
                 skopeo(f"docker://{pt_addr}/{repo}", f"oci:{O}:latest"),
                 f"{clean} && {q(start_pt)}", check=one_check)
        p = Tool("skopeo copy through Distribution (proxy)",
                 skopeo(f"docker://{px_addr}/{repo}", f"oci:{O}:latest"),
                 f"{clean} && {q(start_px)}", check=one_check)
        out.append(Case(15, img, h, p, variant="cold"))
    return out
