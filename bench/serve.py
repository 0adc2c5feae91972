#!/usr/bin/env python3
"""bench/serve.py: `hoist serve` against the Distribution registry, as the source of
`skopeo copy`, on the same image, side by side.

    bench/serve.py [--hoist target/release/hoist] [--layout bench/work/images/oci]
                   [--image multi] [--runs 5] [--clients 16]

Needs the layout `bench/run` builds (bench/work/images/oci), docker-registry, skopeo.
It starts its own Distribution registry (plain HTTP, 127.0.0.1, storage in a temp dir),
pushes the image with `skopeo copy --preserve-digests`, pulls it into a fresh hoist store,
starts `hoist serve` on that store, then:

1. one `skopeo copy docker://SRC/bench/IMAGE oci:DEST` at a time, the two sources
   alternating (one warm-up each, then --runs counted), medians and the ratio
   registry/hoist (> 1: hoist serves faster);
2. --clients copies at once from each source into `dir:` destinations: wall time, and
   every copy verified (manifest digest, every blob's sha256 against its name).

Destinations are on /dev/shm when it exists, so the disk is out of the measurement.
All traffic stays on 127.0.0.1. Prints a markdown table.
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def wait_http(url, proc, what):
    for _ in range(200):  # 20 s at most
        if proc.poll() is not None:
            sys.exit(f"{what} exited")
        r = subprocess.run(["curl", "-fs", "-o", "/dev/null", "-m", "1", url])
        if r.returncode == 0:
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not answer on {url}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def copy(src, dest):
    t = time.monotonic()
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", src, dest],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - t


def verify_dir(d, manifest_digest):
    m = os.path.join(d, "manifest.json")
    if sha256_file(m) != manifest_digest:
        return f"{d}: manifest digest differs"
    doc = json.load(open(m))
    for desc in [doc["config"], *doc["layers"]]:
        p = os.path.join(d, desc["digest"].split(":", 1)[1])
        if os.path.getsize(p) != desc["size"] or sha256_file(p) != desc["digest"]:
            return f"{d}: blob {desc['digest']} differs"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hoist", default=os.path.join(ROOT, "target/release/hoist"))
    ap.add_argument("--layout", default=os.path.join(ROOT, "bench/work/images/oci"))
    ap.add_argument("--image", default="multi")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clients", type=int, default=16)
    a = ap.parse_args()

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="hoist-serve-bench-", dir=base)
    procs = []
    try:
        reg = f"127.0.0.1:{free_port()}"
        os.makedirs(f"{tmp}/registry")
        with open(f"{tmp}/registry/config.yml", "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: warn\n  accesslog: {disabled: true}\n"
                f"storage:\n  cache: {{blobdescriptor: inmemory}}\n"
                f"  filesystem: {{rootdirectory: {tmp}/registry/data}}\n"
                f"http:\n  addr: {reg}\n  secret: hoist-serve-bench\n"
            )
        rp = subprocess.Popen(
            ["docker-registry", "serve", f"{tmp}/registry/config.yml"],
            stdout=subprocess.DEVNULL,
            stderr=open(f"{tmp}/registry/log", "w"),
        )
        procs.append(rp)
        wait_http(f"http://{reg}/v2/", rp, "docker-registry")
        repo = f"bench/{a.image}:latest"
        run(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
             f"oci:{a.layout}:{a.image}", f"docker://{reg}/{repo}"])
        env = dict(os.environ, HOIST_STORE=f"{tmp}/store")
        run([a.hoist, "--quiet", "pull", f"{reg}/{repo}"], env=env)
        sp = subprocess.Popen(
            [a.hoist, "serve", "--listen", "127.0.0.1:0", "--no-log"],
            env=env, stdout=subprocess.PIPE, stderr=open(f"{tmp}/serve.log", "w"), text=True,
        )
        procs.append(sp)
        line = sp.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            sys.exit(f"hoist serve did not start: {line!r}")
        hoist = line.removeprefix("listening on http://")
        wait_http(f"http://{hoist}/v2/", sp, "hoist serve")
        manifest_digest = run(
            ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
             f"docker://{reg}/{repo}"]
        ).strip()

        sources = {"registry": f"docker://{reg}/{repo}", "hoist": f"docker://{hoist}/{repo}"}
        times = {k: [] for k in sources}
        for i in range(1 + a.runs):
            order = list(sources) if i % 2 == 0 else list(reversed(sources))
            for k in order:
                dest = f"{tmp}/out-{k}"
                shutil.rmtree(dest, ignore_errors=True)
                t = copy(sources[k], f"oci:{dest}:x")
                if i > 0:
                    times[k].append(t)
                shutil.rmtree(dest, ignore_errors=True)

        conc = {}
        for k, src in sources.items():
            dests = [f"{tmp}/c-{k}-{n}" for n in range(a.clients)]
            t = time.monotonic()
            ps = [subprocess.Popen(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                    src, f"dir:{d}"], stderr=subprocess.PIPE) for d in dests]
            codes = [p.wait(timeout=600) for p in ps]
            conc[k] = time.monotonic() - t
            if any(codes):
                sys.exit(f"{k}: {sum(1 for c in codes if c)} of {a.clients} copies failed")
            for d in dests:
                err = verify_dir(d, manifest_digest)
                if err:
                    sys.exit(f"{k}: {err}")
                shutil.rmtree(d)

        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"| `skopeo copy` from | {a.image}: median of {a.runs} (s) | "
              f"{a.clients} at once, all verified (s) |")
        print("|---|---|---|")
        for k in sources:
            print(f"| {k} | {med[k]:.3f} | {conc[k]:.2f} |")
        print(f"| ratio registry/hoist | {med['registry'] / med['hoist']:.2f}× | "
              f"{conc['registry'] / conc['hoist']:.2f}× |")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
