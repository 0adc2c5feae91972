#!/usr/bin/env python3
"""Time hoist against its peers, side by side, and write a markdown report.

Called by bench/run, which has already built hoist, started a registry and pushed the
images. Each case runs hoist and the peer alternately (hoist, peer, hoist, peer, ...):
WARMUP uncounted pairs, then RUNS counted ones. Before every run an untimed `prepare`
step gives it a cold state: fresh store, layout and target directories on tmpfs. A run is
timed from fork to exit; its peak RSS comes from GNU time (`/usr/bin/time -f %M`), which
for a shell pipeline of several programs is the largest of them.
"""

import argparse
import atexit
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

import images
import serving

IMAGES = {  # layout tag -> registry repository:tag
    "debian": "bench/debian:latest",
    "multi": "bench/multi:latest",
    "multi-zstd": "bench/multi:zstd",
    "big1g": "bench/big:1g",
    "big64m": "bench/big:64m",
}
TARGETS = {  # scenario number -> (kind, value, text)
    1: ("ratio", 2.0, "≥ 2.0"),  # issue 12 (was 1.5)
    2: ("ratio", 2.0, "≥ 2.0"),
    3: ("ratio", 2.0, "≥ 2.0"),
    4: ("ratio", 10.0, "≥ 10"),
    5: ("ratio", 10.0, "≥ 10"),
    (4, "vs-unpack"): ("ratio", 1.0, "≥ 1.0 (faster than hoist unpack)"),
    (5, "vs-unpack"): ("ratio", 1.0, "≥ 1.0 (faster than hoist unpack)"),
    6: ("wall", 0.050, "≤ 50 ms"),
    7: ("ratio", 2.0, "≥ 2.0"),
    8: ("rss", 100e6, "RSS ≤ 100 MB"),  # bytes
    9: ("ratio", 1.5, "≥ 1.5"),
    10: ("ratio", 2.0, "≥ 2.0"),
    11: ("ratio", 0.95, "≥ 0.95 (≤ 5% over unsigned)"),
    12: ("ratio", 2.0, "≥ 2.0"),
    (12, "second"): ("ratio", 10.0, "≥ 10"),  # a (number, variant) key wins over the number
    (11, "gpg-skopeo"): ("ratio", 2.0, "≥ 2.0 (as a pull)"),
    # the erofs tar index at most half the time of the full erofs build: full/index >= 2
    (5, "tar-index"): ("ratio", 2.0, "≥ 2.0 (tar index ≤ 0.5× the full build)"),
    (5, "tar-index-second"): ("ratio", 2.0, "≥ 2.0 (tar index ≤ 0.5× the full build)"),
    # the cold rootfs within 1.2x of the pull alone: pull/rootfs (peer/hoist) >= 1/1.2
    (13, "vs-pull"): ("ratio", 1 / 1.2, "≥ 0.83 (rootfs ≤ 1.2× pull)"),
    14: ("ratio", 1.0, "≥ 1.0"),
    15: ("ratio", 1.0, "≥ 1.0"),
}
SCENARIOS = {
    1: "pull into a store",
    2: "pull + unpack to a rootfs dir",
    3: "unpack from the local store",
    4: "ext4 rootfs",
    5: "erofs rootfs",
    6: "warm `hoist rootfs`",
    7: "copy to docker-archive:",
    8: "pull of one big layer",
    9: "push to the registry",
    10: "load a docker-archive",
    11: "pull under a sigstoreSigned policy (peer: the same pull without policy)",
    12: "sync 3 repositories × 4 tags into a registry",
    13: "cold `hoist rootfs REF --format ext4` (empty store)",
    14: "skopeo copy from hoist serve (peer: from the Distribution registry)",
    15: "skopeo copy through a pull-through cache, cold (peer: Distribution's proxy mode)",
    16: "unpack a layer GNU tar wrote with --sparse (a 512 MiB disk image, 8 MiB of data)",
    17: "copy between two repositories of the registry with --preserve-digests (a mirror)",
    18: "delete a tag from the registry",
}
VARIANTS = {  # (number, variant) -> the text after the scenario's, where the variant needs words
    (11, "gpg-skopeo"): "signedBy (GPG simple signing, lookaside store); peer: skopeo copy under the same policy",
    (5, "tar-index"): "`--tar-index`, first build (the layer tars written into the store); peer: hoist's full erofs build from the same store copy",
    (5, "tar-index-second"): "`--tar-index --force` with the layer tars already in the store; peer: hoist's full erofs build from the same store copy",
    (12, "empty"): "into an empty registry",
    (12, "second"): "second run, nothing to copy; peer: hoist's first run into an empty registry",
    (4, "vs-unpack"): "peer: hoist unpack of the same image",
    (5, "vs-unpack"): "peer: hoist unpack of the same image",
    (2, "ref"): "one command, `hoist unpack REF DIR` into an empty store: the layers unpacked as they download",
    (13, "vs-pull"): "peer: `hoist pull REF` alone",
    (13, "vs-skopeo"): "peer: skopeo copy + umoci unpack + mke2fs -d",
    (14, "1client"): "one client",
    (14, "16clients"): "16 clients at once, every copy's digests verified",
    (15, "cold"): "both caches empty, upstream: the bench registry",
}
# Scenario 12's source: 3 repositories x 4 tags in the source registry, made once from the
# multi image's layers (pushed as bench/multi:latest) and one small layer of its own per tag,
# as an application's releases share their base: repository -> indexes of multi's layers
# (0 = the debian layer, shared by all three; 1 = the node_modules layer; 2 = the big files).
SYNC_REPOS = {"app1": [0], "app2": [0, 1], "app3": [0, 2]}
SYNC_TAGS = ["t1", "t2", "t3", "t4"]
SYNC_NS = "bench/sync"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Run an untimed shell step; raise on failure."""
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"`{cmd}` failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    return r.stdout


def q(*parts):
    return " ".join(shlex.quote(str(p)) for p in parts)


class Tool:
    """One side of a case: a prepare step and the timed command (both shell text)."""

    def __init__(self, label, cmd, prepare="true", check=None, na=None):
        self.label, self.cmd, self.prepare, self.check, self.na = label, cmd, prepare, check, na
        self.times, self.rss, self.error = [], [], None

    def run(self, logf, tmpdir):
        if self.na or self.error:
            return
        try:
            sh(self.prepare)
        except RuntimeError as e:
            self.error = f"prepare failed: {e}"
            return
        rssf = os.path.join(tmpdir, "rss")
        logf.write(f"$ {self.cmd}\n")
        logf.flush()
        t0 = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rssf, "bash", "-c", self.cmd],
                           stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            logf.flush()
            self.error = f"exit status {r.returncode}: " + tail(logf.name)
            return
        with open(rssf) as f:
            rss_kb = int(f.read().split()[-1])
        if self.check:
            try:
                sh(self.check)
            except RuntimeError as e:
                self.error = f"result check failed: {e}"
                return
        return dt, rss_kb

    def stats(self):
        if not self.times:
            return None
        return statistics.median(self.times), min(self.times), max(self.times)


def tail(path, n=300):
    with open(path, errors="replace") as f:
        data = f.read()
    lines = [l for l in data.strip().splitlines() if l and not l.startswith("$ ")]
    return (lines[-1] if lines else "(no output)")[-n:]


class Case:
    def __init__(self, num, image, hoist, peer, variant="", setup=None):
        self.num, self.image, self.hoist, self.peer, self.variant = num, image, hoist, peer, variant
        self.setup = setup  # an untimed step run once before the case (e.g. warm the cache)

    @property
    def name(self):
        return f"s{self.num}-{self.image}" + (f"-{self.variant}" if self.variant else "")


class Bench:
    def __init__(self, a):
        self.a = a
        self.hoist = a.hoist
        self.reg = a.registry
        self.shm = a.shm
        self.layout = a.layout
        self.caps = self.detect()
        self.seeds = {}
        self.refsize = {}
        self.sync_reg = a.sync_registry
        self.sync_restart = a.sync_restart
        self.sync_facts = None

    # -------------------------------------------------------------- hoist's abilities
    def detect(self):
        def help_of(*cmd):
            r = subprocess.run([self.hoist, *cmd, "--help"], capture_output=True, text=True)
            return r.stdout if r.returncode == 0 else None

        caps = {c: help_of(c) is not None
                for c in ["pull", "unpack", "rootfs", "copy", "save", "export", "load", "sync", "delete"]}
        rh = help_of("rootfs") or ""
        caps["policy"] = "--policy" in (help_of("pull") or "")
        caps["rootfs-formats"] = {f for f in ("dir", "ext4", "erofs") if re.search(rf"\b{f}\b", rh)}
        caps["tar-index"] = "--tar-index" in rh
        log(f"hoist abilities: {json.dumps({k: (sorted(v) if isinstance(v, set) else v) for k, v in caps.items()})}")
        return caps

    def ref(self, image):
        return f"{self.reg}/{IMAGES[image]}"

    def H(self, store, *args):
        return q(self.hoist, "--store", store, "-q", *args)

    def skopeo(self, image, dest):
        return q("skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{self.ref(image)}", dest)

    def d(self, *parts):
        return os.path.join(self.shm, *parts)

    # -------------------------------------------------------------- seeds (untimed)
    def seed_store(self, image):
        """A store holding IMAGE, pulled once; runs copy it."""
        key = ("store", image)
        if key not in self.seeds:
            s = self.d(f"seed-store-{image}")
            sh(f"rm -rf {q(s)} && {self.H(s, 'pull', self.ref(image))} >/dev/null")
            self.seeds[key] = s
        return self.seeds[key]

    def seed_oci(self, image):
        """An OCI layout holding IMAGE as :latest, copied by skopeo once; runs copy it."""
        key = ("oci", image)
        if key not in self.seeds:
            o = self.d(f"seed-oci-{image}")
            sh(f"rm -rf {q(o)} && {self.skopeo(image, 'oci:' + o + ':latest')}")
            self.seeds[key] = o
        return self.seeds[key]

    def seed_docker_archive(self, image):
        """A docker-archive of IMAGE (tagged as in the registry), written by skopeo once."""
        key = ("docker-archive", image)
        if key not in self.seeds:
            f = self.d(f"seed-{image}.docker.tar")
            sh(f"rm -f {q(f)} && {self.skopeo(image, 'docker-archive:' + f + ':' + IMAGES[image])}")
            self.seeds[key] = f
        return self.seeds[key]

    def seed_sparse(self):
        """An OCI layout (`:latest`) of one gzip layer that GNU tar wrote with `--sparse
        --format=posix` (PAX 1.0, the form umoci reads too): `disk.img`, 512 MiB with 8
        MiB of data in 1 MiB pieces, and `etc/os-release`. Written once."""
        key = ("sparse",)
        if key not in self.seeds:
            import gzip
            import hashlib
            w = self.d("seed-sparse-src")
            o = self.d("seed-oci-sparse")
            sh(f"rm -rf {q(w)} {q(o)} && mkdir -p {q(w + '/etc')}")
            with open(f"{w}/etc/os-release", "w") as f:
                f.write("ID=sparse\n")
            with open(f"{w}/disk.img", "wb") as f:
                for i in range(8):
                    f.seek(i * 64 << 20)
                    f.write(os.urandom(1 << 20))
                f.truncate(512 << 20)
            tar = subprocess.run(["tar", "--sparse", "--format=posix", "--owner=0", "--group=0", "-C", w,
                                  "-cf", "-", "etc", "disk.img"], capture_output=True, check=True).stdout
            layout = images.Layout(o)
            digest, size = layout.put_bytes(gzip.compress(tar, compresslevel=1, mtime=0))
            images.write_image(layout, "latest", [{
                "digest": digest, "size": size, "media_type": images.GZIP,
                "diff_id": "sha256:" + hashlib.sha256(tar).hexdigest()}], ["tar --sparse --format=posix"])
            st = self.d("seed-store-sparse")
            sh(f"rm -rf {q(st)} && {self.H(st, 'copy', 'oci:' + o + ':latest', 'hoist:bench/sparse:latest')}"
               " >/dev/null")
            shutil.rmtree(w)
            self.seeds[key] = (o, st)
        return self.seeds[key]

    def ext4_size(self, image):
        """The unpacked tree's bytes and entries, and mke2fs arguments for the peer: MiB =
        1.3 x the tree + 64 MiB, and inodes = entries + 25% + 1024 (the headroom hoist gives
        itself; mke2fs's default of one inode per 16 KiB runs out on the multi image)."""
        if image not in self.refsize:
            b = self.d(f"ref-{image}")
            sh(f"rm -rf {q(b)} && umoci unpack --image {q(self.seed_oci(image) + ':latest')} {q(b)} >/dev/null")
            du = int(sh(f"du -sb {q(b + '/rootfs')}").split()[0])
            n = int(sh(f"find {q(b + '/rootfs')} | wc -l"))
            self.refsize[image] = (du, n, (du * 13 // 10) // (1 << 20) + 64, n + n // 4 + 1024)
            sh(f"rm -rf {q(b)}")
        return self.refsize[image]

    def seed_signed(self, image):
        """A cosign signature of IMAGE in the registry (`sha256-HEX.sig`), made once: an
        openssl P-256 key, the payload cosign writes, an ECDSA-SHA256 DER signature, the
        `.sig` image assembled as an OCI layout and pushed by skopeo; and a policy that
        requires it for the registry. Returns the policy's path."""
        key = ("signed", image)
        if key in self.seeds:
            return self.seeds[key]
        import base64
        import hashlib
        w = self.d(f"trust-{image}")
        sh(f"rm -rf {q(w)} && mkdir -p {q(w + '/sig/blobs/sha256')}")
        sh(f"openssl ecparam -name prime256v1 -genkey -noout -out {q(w + '/k.pem')} && "
           f"openssl pkey -in {q(w + '/k.pem')} -pubout -out {q(w + '/k.pub')}")
        digest = sh(q("skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                      f"docker://{self.ref(image)}")).strip()
        repo = self.ref(image).rsplit(":", 1)[0]
        payload = json.dumps({"critical": {"identity": {"docker-reference": self.ref(image)},
                                           "image": {"docker-manifest-digest": digest},
                                           "type": "cosign container image signature"},
                              "optional": None}, separators=(",", ":")).encode()

        def blob(data):
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            with open(f"{w}/sig/blobs/sha256/{d[7:]}", "wb") as f:
                f.write(data)
            return d

        pd = blob(payload)
        with open(f"{w}/payload", "wb") as f:
            f.write(payload)
        sh(f"openssl dgst -sha256 -sign {q(w + '/k.pem')} -out {q(w + '/sig.der')} {q(w + '/payload')}")
        with open(f"{w}/sig.der", "rb") as f:
            signature = base64.b64encode(f.read()).decode()
        config = json.dumps({"architecture": "", "os": "", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [pd]}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": blob(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                        "digest": pd, "size": len(payload),
                        "annotations": {"dev.cosignproject.cosign/signature": signature}}]}).encode()
        md = blob(manifest)
        with open(f"{w}/sig/oci-layout", "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        with open(f"{w}/sig/index.json", "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "sig"}}]}, f)
        sh(q("skopeo", "copy", "-q", "--dest-tls-verify=false", "--preserve-digests", f"oci:{w}/sig:sig",
             f"docker://{repo}:{digest.replace(':', '-')}.sig"))
        policy = f"{w}/policy.json"
        with open(policy, "w") as f:
            json.dump({"default": [{"type": "reject"}], "transports": {"docker": {
                self.reg: [{"type": "sigstoreSigned", "keyPath": f"{w}/k.pub"}]}}}, f)
        self.seeds[key] = policy
        return policy

    def seed_sync(self):
        """Scenario 12's source, made once: SYNC_REPOS x SYNC_TAGS in the source registry
        under SYNC_NS, each tag = its repository's base layers (mounted from bench/multi or
        bench/debian, where bench/run pushed them) + a layer of its own (a seeded random
        file of 1-2.5 MiB, so every tag has its own manifest); the skopeo-sync YAML naming
        the three repositories with every tag (`[]`). Deterministic: a second bench run finds
        the same digests in the registry and pushes nothing. Returns (yaml path, [(repo,
        tag, manifest digest)])."""
        if "sync" in self.seeds:
            return self.seeds["sync"]
        import gzip
        import hashlib
        import io
        import random
        import tarfile
        import urllib.error
        import urllib.parse
        import urllib.request
        base = f"http://{self.reg}"
        OCI_M = "application/vnd.oci.image.manifest.v1+json"

        def req(method, url, data=None, headers=None):
            r = urllib.request.Request(url if url.startswith("http") else base + url, data=data,
                                       method=method, headers=headers or {})
            try:
                with urllib.request.urlopen(r, timeout=120) as resp:
                    return resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers, e.read()

        def layout_image(tag):
            with open(os.path.join(self.layout, "index.json")) as f:
                idx = json.load(f)
            m = [x for x in idx["manifests"] if x["annotations"]["org.opencontainers.image.ref.name"] == tag]
            if not m:
                raise RuntimeError(f"scenario 12 needs the {tag} image in {self.layout}")
            blob = lambda d: json.load(open(os.path.join(self.layout, "blobs", "sha256", d[7:])))
            man = blob(m[0]["digest"])
            return man, blob(man["config"]["digest"])

        def put_blob(repo, data):
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            if req("HEAD", f"/v2/{repo}/blobs/{d}")[0] == 200:
                return d
            st, h, body = req("POST", f"/v2/{repo}/blobs/uploads/")
            if st != 202:
                raise RuntimeError(f"upload to {repo}: {st} {body[:200]!r}")
            loc = urllib.parse.urljoin(base + "/", h["Location"])
            loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(d)
            st, _, body = req("PUT", loc, data, {"Content-Type": "application/octet-stream"})
            if st != 201:
                raise RuntimeError(f"upload to {repo}: {st} {body[:200]!r}")
            return d

        def mount(repo, d, frm):
            if req("HEAD", f"/v2/{repo}/blobs/{d}")[0] == 200:
                return
            st, _, body = req("POST", f"/v2/{repo}/blobs/uploads/?mount={urllib.parse.quote(d)}&from={frm}")
            if st != 201:
                raise RuntimeError(f"mount {d} from {frm} into {repo}: {st} {body[:200]!r}")

        def own_layer(name, size):
            """A gzip layer holding app/NAME/blob (SIZE seeded random bytes) and app/NAME/VERSION."""
            rnd = random.Random(name)
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
                for path, data in [(f"app/{name}/VERSION", name.encode() + b"\n"),
                                   (f"app/{name}/blob", rnd.randbytes(size))]:
                    ti = tarfile.TarInfo(path)
                    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = len(data), 1700000000, 0o644, 0, 0
                    t.addfile(ti, io.BytesIO(data))
            tar = raw.getvalue()
            return gzip.compress(tar, compresslevel=6, mtime=0), "sha256:" + hashlib.sha256(tar).hexdigest()

        quick = self.a.quick
        base_img = "debian" if quick else "multi"
        bman, bcfg = layout_image(base_img)
        frm = IMAGES[base_img].split(":")[0]
        images, facts = [], []
        for repo_short, idxs in SYNC_REPOS.items():
            idxs = [0] if quick else idxs
            repo = f"{SYNC_NS}/{repo_short}"
            for k, tag in enumerate(SYNC_TAGS):
                gz, diff = own_layer(f"{repo_short}-{tag}", (1 << 20) + k * (512 << 10))
                layers = [bman["layers"][i] for i in idxs]
                for l in layers:
                    mount(repo, l["digest"], frm)
                own = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": put_blob(repo, gz), "size": len(gz)}
                cfg = dict(bcfg)
                cfg["rootfs"] = {"type": "layers",
                                 "diff_ids": [bcfg["rootfs"]["diff_ids"][i] for i in idxs] + [diff]}
                cfg["history"] = [{"created": bcfg.get("created", ""), "created_by": f"{base_img} layer {i}"}
                                  for i in idxs] + [{"created": bcfg.get("created", ""),
                                                     "created_by": f"{repo_short}:{tag}"}]
                cfg["config"] = dict(cfg.get("config", {}),
                                     Labels={"org.opencontainers.image.title": f"hoist bench {repo}:{tag}"})
                cb = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
                man = {"schemaVersion": 2, "mediaType": OCI_M,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": put_blob(repo, cb), "size": len(cb)},
                       "layers": layers + [own]}
                mb = json.dumps(man, sort_keys=True, separators=(",", ":")).encode()
                md = "sha256:" + hashlib.sha256(mb).hexdigest()
                st, h, _ = req("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_M})
                if st != 200 or h.get("Docker-Content-Digest") != md:
                    st, _, body = req("PUT", f"/v2/{repo}/manifests/{tag}", mb, {"Content-Type": OCI_M})
                    if st != 201:
                        raise RuntimeError(f"manifest {repo}:{tag}: {st} {body[:200]!r}")
                images.append((repo_short, tag, md))
                facts.append((repo, tag, man))
        yml = self.d("sync.yml")
        with open(yml, "w") as f:
            f.write(f"{self.reg}:\n  tls-verify: false\n  images:\n")
            for repo_short in SYNC_REPOS:
                f.write(f"    {SYNC_NS}/{repo_short}: []\n")
        self.sync_facts = facts
        self.seeds["sync"] = (yml, images)
        log(f"scenario 12 source: {len(images)} images in {self.reg}/{SYNC_NS}/, {yml}")
        return self.seeds["sync"]

    def sync_check(self):
        """Shell text: every image of the sync source in the sync registry under `mirror/`,
        with the source's manifest digest (both tools keep it: no conversion asked)."""
        _, images = self.seed_sync()
        acc = "application/vnd.oci.image.manifest.v1+json"
        parts = []
        for repo, tag, md in images:
            url = f"http://{self.sync_reg}/v2/mirror/{repo}/manifests/{tag}"
            parts.append(f"curl -fsI -H {q('Accept: ' + acc)} {q(url)} | grep -qi {q('docker-content-digest: ' + md)}")
        return " && ".join(parts)

    def seed_gpg_signed(self, image):
        """IMAGE signed by `skopeo copy --sign-by` with a throwaway GPG key (made once), the
        signature in a file:// lookaside store; returns (policy, registries.d): signedBy that
        key for the registry, and a registries.d naming the store."""
        key = ("gpg-signed", image)
        if key in self.seeds:
            return self.seeds[key]
        w = self.d(f"gpg-{image}")
        home, rd, store = f"{w}/gnupg", f"{w}/registries.d", f"{w}/lookaside"
        sh(f"rm -rf {q(w)} && mkdir -p {q(home)} {q(rd)} {q(store)} && chmod 700 {q(home)}")
        env = f"GNUPGHOME={q(home)}"
        sh(f"{env} gpg --batch --passphrase '' --quick-gen-key 'hoist bench <bench@hoist.invalid>' "
           f"rsa2048 sign never")
        fpr = sh(f"{env} gpg --batch --with-colons --list-keys | awk -F: '/^fpr/ {{print $10; exit}}'").strip()
        sh(f"{env} gpg --batch --export -a > {q(w + '/pub.gpg')}")
        host = self.reg
        with open(f"{rd}/bench.yaml", "w") as f:
            f.write(f"docker:\n  {host}:\n    lookaside: file://{store}\n"
                    f"    lookaside-staging: file://{store}\n")
        # Copied onto itself: the same manifest, and its signature written to the store.
        sh(f"{env} " + q("skopeo", "--registries.d", rd, "copy", "-q", "--src-tls-verify=false",
                         "--dest-tls-verify=false", "--sign-by", fpr, f"docker://{self.ref(image)}",
                         f"docker://{self.ref(image)}"))
        policy = f"{w}/policy.json"
        with open(policy, "w") as f:
            json.dump({"default": [{"type": "reject"}], "transports": {"docker": {
                host: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": f"{w}/pub.gpg"}]}}}, f)
        self.seeds[key] = (policy, rd)
        return self.seeds[key]

    # -------------------------------------------------------------- cases
    def cases(self):
        quick = self.a.quick
        small = ["debian"]
        main = small if quick else ["debian", "multi"]
        big = "big64m" if quick else "big1g"
        c = self.caps
        out = []
        S, O, T, B, F = self.d("run-store"), self.d("run-oci"), self.d("run-target"), self.d("run-bundle"), \
            self.d("run-out")
        clean = q("rm", "-rf", S, O, T, B, F)
        osrel_h = f"test -e {q(T + '/etc/os-release')}"
        osrel_p = f"test -e {q(B + '/rootfs/etc/os-release')}"
        na_cmd = lambda cmd: f"n/a (hoist has no `{cmd}` command yet)"

        def copy_store(img):
            return lambda: f"{clean} && cp -a {q(self.seed_store(img))} {q(S)}"

        def copy_oci(img):
            return lambda: f"{clean} && cp -a {q(self.seed_oci(img))} {q(O)}"

        # 1. pull
        for img in (small if quick else ["debian", "multi", "multi-zstd"]):
            out.append(Case(1, img,
                            Tool("hoist pull", self.H(S, "pull", self.ref(img)), clean),
                            Tool("skopeo copy", self.skopeo(img, f"oci:{O}:latest"), clean)))
        # 2. pull + unpack
        for img in main:
            h = Tool("hoist pull + unpack",
                     f"{self.H(S, 'pull', self.ref(img))} >/dev/null && {self.H(S, 'unpack', self.ref(img), T)}",
                     clean, check=osrel_h, na=None if c["unpack"] else na_cmd("unpack"))
            p = Tool("skopeo copy + umoci unpack",
                     f"{self.skopeo(img, f'oci:{O}:latest')} && umoci unpack --image {q(O + ':latest')} {q(B)}",
                     clean, check=osrel_p)
            out.append(Case(2, img, h, p))
            h2 = Tool("hoist unpack REF", self.H(S, "unpack", self.ref(img), T), clean, check=osrel_h,
                      na=None if c["unpack"] else na_cmd("unpack"))
            p2 = Tool(p.label, p.cmd, clean, check=osrel_p)
            out.append(Case(2, img, h2, p2, variant="ref"))
        # 3. unpack from the store / layout
        for img in (small if quick else ["debian", "multi", "multi-zstd"]):
            h = Tool("hoist unpack", self.H(S, "unpack", self.ref(img), T), copy_store(img), check=osrel_h,
                     na=None if c["unpack"] else na_cmd("unpack"))
            p = Tool("umoci unpack", f"umoci unpack --image {q(O + ':latest')} {q(B)}", copy_oci(img),
                     check=osrel_p,
                     na="n/a (umoci 0.4.7 cannot unpack zstd layers)" if "zstd" in img else None)
            out.append(Case(3, img, h, p))
        # 4, 5. ext4 and erofs images
        for num, fmt in [(4, "ext4"), (5, "erofs")]:
            for img in main:
                na = None if c["rootfs"] else na_cmd("rootfs")
                if not na and fmt not in c["rootfs-formats"]:
                    na = f"n/a (hoist rootfs has no {fmt} format yet)"
                h = Tool(f"hoist rootfs --format {fmt}", self.H(S, "rootfs", self.ref(img), "--format", fmt),
                         copy_store(img), na=na)
                if fmt == "ext4":
                    mk = lambda img=img: (f"mke2fs -q -t ext4 -N {self.ext4_size(img)[3]} -d {q(B + '/rootfs')} "
                                          f"-F {q(F)} {self.ext4_size(img)[2]}M")
                    label = "umoci unpack + mke2fs -d"
                else:
                    mk = lambda: f"mkfs.erofs --quiet {q(F)} {q(B + '/rootfs')}"
                    label = "umoci unpack + mkfs.erofs"
                p = Tool(label, None, copy_oci(img))
                p.cmd_fn = lambda img=img, mk=mk: f"umoci unpack --image {q(O + ':latest')} {q(B)} >/dev/null && {mk()}"
                out.append(Case(num, img, h, p))
                # the same build against hoist's own unpack of the image (issue 14: faster)
                h2 = Tool(h.label, h.cmd, copy_store(img), na=na)
                p2 = Tool("hoist unpack", self.H(S, "unpack", self.ref(img), T), copy_store(img), check=osrel_h,
                          na=None if c["unpack"] else na_cmd("unpack"))
                out.append(Case(num, img, h2, p2, variant="vs-unpack"))
                if fmt == "erofs":
                    # the erofs tar index against the full erofs build, from the same store
                    # copy: first with the layer tars still to write, then with them stored
                    ix_na = na or (None if c["tar-index"] else "n/a (hoist rootfs has no --tar-index)")
                    ix = self.H(S, "rootfs", self.ref(img), "--format", "erofs", "--tar-index")
                    full = Tool(h.label, h.cmd, copy_store(img), na=na)
                    out.append(Case(5, img, Tool(f"{h.label} --tar-index", ix, copy_store(img), na=ix_na),
                                    full, variant="tar-index"))
                    warm = lambda img=img, ix=ix: f"{copy_store(img)()} && {ix} >/dev/null"
                    full2 = Tool(h.label, h.cmd, copy_store(img), na=na)
                    out.append(Case(5, img, Tool(f"{h.label} --tar-index --force", f"{ix} --force", warm,
                                                 na=ix_na),
                                    full2, variant="tar-index-second"))
        # 13. cold `hoist rootfs REF --format ext4` (empty store): against the pull alone, and
        #     against skopeo copy + umoci unpack + mke2fs -d
        for img in main:
            na = None if c["rootfs"] else na_cmd("rootfs")
            if not na and "ext4" not in c["rootfs-formats"]:
                na = "n/a (hoist rootfs has no ext4 format yet)"
            cold = f"{self.H(S, 'rootfs', self.ref(img), '--format', 'ext4')} >/dev/null"
            out.append(Case(13, img, Tool("hoist rootfs REF --format ext4", cold, clean, na=na),
                            Tool("hoist pull REF", self.H(S, "pull", self.ref(img)), clean), variant="vs-pull"))
            p = Tool("skopeo copy + umoci unpack + mke2fs -d", None, clean)
            p.cmd_fn = lambda img=img: (f"{self.skopeo(img, f'oci:{O}:latest')} && "
                                        f"umoci unpack --image {q(O + ':latest')} {q(B)} >/dev/null && "
                                        f"mke2fs -q -t ext4 -N {self.ext4_size(img)[3]} -d {q(B + '/rootfs')} "
                                        f"-F {q(F)} {self.ext4_size(img)[2]}M")
            out.append(Case(13, img, Tool("hoist rootfs REF --format ext4", cold, clean, na=na), p,
                            variant="vs-skopeo"))
        # 6. warm rootfs, hoist alone
        for img in main:
            for fmt in ("dir", "ext4", "erofs"):
                na = None if c["rootfs"] else na_cmd("rootfs")
                if not na and fmt not in c["rootfs-formats"]:
                    na = f"n/a (hoist rootfs has no {fmt} format yet)"
                W = self.d(f"warm-store-{img}")
                h = Tool(f"hoist rootfs --format {fmt} (warm)", self.H(W, "rootfs", self.ref(img), "--format", fmt),
                         na=na)
                case = Case(6, img, h, Tool("(none)", None, na="hoist alone"), variant=fmt)
                # dir first: the ext4 and erofs builds start from the cached tree, as they would
                case.setup = (lambda img=img, W=W, fmt=fmt:
                              (f"test -d {q(W)} || cp -a {q(self.seed_store(img))} {q(W)}; "
                               f"{self.H(W, 'rootfs', self.ref(img), '--format', fmt)} >/dev/null"))
                out.append(case)
        # 7. docker-archive
        for img in main:
            name = IMAGES[img]
            if c["copy"]:
                hc, na = self.H(S, "copy", f"docker://{self.ref(img)}", f"docker-archive:{F}:{name}"), None
            elif c["save"]:
                hc, na = (f"{self.H(S, 'pull', self.ref(img))} >/dev/null && "
                          f"{self.H(S, 'save', '-o', F, self.ref(img))}"), None
            else:
                hc, na = None, na_cmd("copy")
            out.append(Case(7, img, Tool("hoist copy", hc, clean, na=na),
                            Tool("skopeo copy", self.skopeo(img, f"docker-archive:{F}:{name}"), clean)))
        # 8. the big image: 1 connection, 4 Range connections from the start, and the
        #    default (one connection probed for 1 s, sliced only if slower than 128 MiB/s)
        for variant, extra in [("1conn", ["--range-connections", "1"]),
                               ("4conn", ["--range-connections", "4", "--range-probe", "0s"]),
                               ("default", [])]:
            out.append(Case(8, big, Tool(f"hoist pull ({variant})", self.H(S, "pull", *extra, self.ref(big)), clean),
                            Tool("skopeo copy", self.skopeo(big, f"oci:{O}:latest"), clean), variant=variant))
        # 9. push from local content into a repository the registry has never seen (a new
        #    name per run, so every blob is uploaded: no HEAD hit, no mount source)
        for img in main:
            new_repo = lambda side: f"docker://{self.reg}/bench/push-{side}-$(date +%s%N):latest"
            hc = (f"{q(self.hoist, '--store', S, '-q', 'copy', 'oci:' + O + ':latest')} "
                  f"{new_repo('hoist')}")
            pc = (f"skopeo copy -q --dest-tls-verify=false {q('oci:' + O + ':latest')} {new_repo('skopeo')}")
            # skopeo's blob-info cache would otherwise mount every blob from the repository
            # the images were first pushed to, and upload nothing
            nobic = ("rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb "
                     "\"$HOME/.local/share/containers/cache/blob-info-cache-v1.boltdb\"")
            out.append(Case(9, img, Tool("hoist copy oci: docker://", hc, copy_oci(img),
                                         na=None if c["copy"] else na_cmd("copy")),
                            Tool("skopeo copy oci: docker://", pc,
                                 lambda img=img: f"{copy_oci(img)()} && {nobic}")))
        # 10. load a docker-archive (written by skopeo once) into a fresh store / layout
        for img in main:
            arch = lambda img=img: self.seed_docker_archive(img)
            h = Tool("hoist load", None, clean, na=None if c["load"] else na_cmd("load"))
            h.cmd_fn = lambda arch=arch: self.H(S, "load", "-i", arch())
            p = Tool("skopeo copy docker-archive: oci:", None, clean)
            p.cmd_fn = lambda arch=arch: q("skopeo", "copy", "-q", "docker-archive:" + arch(), f"oci:{O}:latest")
            out.append(Case(10, img, h, p))
        # 11. the cost of trust: a pull under a sigstoreSigned policy (the `.sig` tag fetched
        #     and verified before any blob) against the same pull with no policy
        for img in (small if quick else ["debian", "multi"]):
            na = None if c.get("policy") else "n/a (hoist has no --policy yet)"
            h = Tool("hoist pull --policy (signed)", None, clean, na=na)
            h.cmd_fn = lambda img=img: self.H(S, "pull", "--policy", self.seed_signed(img), self.ref(img))
            p = Tool("hoist pull --insecure-policy", None, clean, na=na)
            p.cmd_fn = lambda img=img: self.H(S, "pull", "--insecure-policy", self.ref(img))
            out.append(Case(11, img, h, p))
            # A verified pull against skopeo's, under one policy file: GPG simple signing
            # (Debian's skopeo is built without sigstore), signatures in a file:// lookaside
            # store that registries.d names for the registry.
            h2 = Tool("hoist pull --policy (GPG-signed)", None, clean, na=na)
            h2.cmd_fn = lambda img=img: self.H(S, "pull", "--policy", self.seed_gpg_signed(img)[0],
                                               "--registries.d", self.seed_gpg_signed(img)[1], self.ref(img))
            p2 = Tool("skopeo copy --policy (GPG-signed)", None, clean, na=na)
            p2.cmd_fn = lambda img=img: q(
                "skopeo", "--policy", self.seed_gpg_signed(img)[0], "--registries.d", self.seed_gpg_signed(img)[1],
                "copy", "-q", "--remove-signatures", "--src-tls-verify=false", f"docker://{self.ref(img)}",
                f"oci:{O}:latest")
            out.append(Case(11, img, h2, p2, variant="gpg-skopeo"))
        # 12. sync 3 repositories x 4 tags (SYNC_REPOS, a skopeo-sync YAML) into the second
        #     registry: (empty) both tools into the registry emptied and restarted before each
        #     run; (second) hoist into a registry that holds everything (the untimed prepare
        #     syncs once), against hoist's own first run into an empty registry
        if self.sync_reg:
            na = None if c["sync"] else na_cmd("sync")
            dest = f"{self.sync_reg}/mirror"
            hsync = lambda: self.H(S, "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                                   "--format", "json", self.seed_sync()[0], dest)
            ssync = lambda: q("skopeo", "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                              self.seed_sync()[0], dest)
            empty = f"{clean} && {q(self.sync_restart)}"
            # skopeo's blob-info cache remembers blob locations in the destination of the
            # previous run, which the restart deleted (scenario 9 removes it too)
            nobic = ("rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb "
                     "\"$HOME/.local/share/containers/cache/blob-info-cache-v1.boltdb\"")
            h = Tool("hoist sync", None, empty, na=na)
            h.cmd_fn = hsync
            p = Tool("skopeo sync", None, f"{empty} && {nobic}")
            p.cmd_fn = ssync
            # the destination registry's CPU time (user + system) at the end of each run
            # (it restarts before each), read before the check, into the run's log directory
            cpuf = os.path.join(self.a.logdir, "s12-empty-registry-cpu.txt")
            pidf = os.path.join(os.path.dirname(self.sync_restart), "pid")
            cpu = lambda side: (f"echo {side} $(awk '{{print ($14 + $15) / 100}}' /proc/$(cat {q(pidf)})/stat)"
                                f" >> {q(cpuf)}")
            h.check_fn = lambda: f"{cpu('hoist')} && {self.sync_check()}"
            p.check_fn = lambda: f"{cpu('skopeo')} && {self.sync_check()}"
            out.append(Case(12, "apps3x4", h, p, variant="empty"))
            h2 = Tool("hoist sync (second run)", None, na=na)
            h2.cmd_fn = hsync
            h2.prepare_fn = lambda: f"{clean} && {hsync()} >/dev/null"
            p2 = Tool("hoist sync (first run)", None, empty, na=na)
            p2.cmd_fn = hsync
            for t in (h2, p2):
                t.check_fn = self.sync_check
            out.append(Case(12, "apps3x4", h2, p2, variant="second"))
        # 16. a layer with a sparse file (GNU tar --sparse), unpacked: hoist keeps the holes
        #     as holes, umoci writes them out as zeros
        sparse_ok = (f"test $(stat -c %s {q(T + '/disk.img')}) -eq {512 << 20}",
                     f"test $(stat -c %s {q(B + '/rootfs/disk.img')}) -eq {512 << 20}")
        h = Tool("hoist unpack", self.H(S, "unpack", "bench/sparse:latest", T), None, check=sparse_ok[0],
                 na=None if c["unpack"] else na_cmd("unpack"))
        h.prepare_fn = lambda: f"{clean} && cp -a {q(self.seed_sparse()[1])} {q(S)}"
        p = Tool("umoci unpack", None, clean, check=sparse_ok[1])
        p.cmd_fn = lambda: f"umoci unpack --image {q(self.seed_sparse()[0] + ':latest')} {q(B)}"
        out.append(Case(16, "sparse", h, p))
        # 17. a mirror's copy: one repository of the registry into a new one each run, digests
        #     preserved, each side's TLS setting given on its own
        for img in main:
            new_repo = lambda side: f"docker://{self.reg}/bench/mirror-{side}-$(date +%s%N):latest"
            opts = ["--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"]
            hc = f"{q(self.hoist, '--store', S, '-q', 'copy', *opts, 'docker://' + self.ref(img))} {new_repo('hoist')}"
            pc = f"{q('skopeo', 'copy', '-q', *opts, 'docker://' + self.ref(img))} {new_repo('skopeo')}"
            out.append(Case(17, img, Tool("hoist copy docker:// docker://", hc, clean,
                                          na=None if c["copy"] else na_cmd("copy")),
                            Tool("skopeo copy docker:// docker://", pc, clean)))
        # 18. delete a tag: each run first tags the image anew (untimed: a mount and a
        #     manifest put), then deletes it
        img = small[0]
        tag_ref = lambda side: f"{self.reg}/bench/delete-{side}:latest"
        retag = lambda side: q("skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
                               f"docker://{self.ref(img)}", f"docker://{tag_ref(side)}")
        gone = lambda side: f"! skopeo inspect --raw --tls-verify=false {q('docker://' + tag_ref(side))} >/dev/null 2>&1"
        h = Tool("hoist delete", self.H(S, "delete", f"docker://{tag_ref('hoist')}"), retag("hoist"),
                 check=gone("hoist"), na=None if c.get("delete") else na_cmd("delete"))
        p = Tool("skopeo delete", q("skopeo", "delete", "--tls-verify=false", f"docker://{tag_ref('skopeo')}"),
                 retag("skopeo"), check=gone("skopeo"))
        out.append(Case(18, img, h, p))
        # 14, 15. hoist serve against the Distribution registry, read by skopeo copy: the
        #     store served (one client; 16 at once), and a cold pull-through cache against
        #     Distribution's proxy mode (lib/serving.py)
        out += serving.cases(self, Tool, Case, small if quick else ["multi"], lambda img: IMAGES[img], clean, O)
        if self.a.only:
            out = [x for x in out if re.search(self.a.only, x.name)]
        return out

    # -------------------------------------------------------------- running
    def run_case(self, case, logdir):
        log(f"{case.name}: {case.hoist.label} vs {case.peer.label}")
        for t in (case.hoist, case.peer):
            if callable(t.prepare):
                t.prepare = t.prepare()
            if getattr(t, "cmd_fn", None):
                t.cmd = t.cmd_fn()
            if getattr(t, "prepare_fn", None):
                t.prepare = t.prepare_fn()
            if getattr(t, "check_fn", None):
                t.check = t.check_fn()
        if case.setup and not case.hoist.na:
            try:
                sh(case.setup())
            except RuntimeError as e:
                case.hoist.error = f"setup failed: {e}"
        tmpdir = self.d("tmp")
        os.makedirs(tmpdir, exist_ok=True)
        logs = {id(t): open(os.path.join(logdir, f"{case.name}.{side}.log"), "w")
                for side, t in (("hoist", case.hoist), ("peer", case.peer))}
        try:
            for i in range(self.a.warmup + self.a.runs):
                for t in (case.hoist, case.peer):  # alternate run by run
                    r = t.run(logs[id(t)], tmpdir)
                    if r and i >= self.a.warmup:
                        t.times.append(r[0])
                        t.rss.append(r[1])
        finally:
            for f in logs.values():
                f.close()
        for t in (case.hoist, case.peer):
            s = t.stats()
            if s:
                log(f"  {t.label}: median {s[0]:.3f}s min {s[1]:.3f}s max {s[2]:.3f}s, "
                    f"peak RSS {max(t.rss) / 1024:.0f} MiB")
            elif t.error:
                log(f"  {t.label}: {t.error}")
        sh(f"rm -rf {q(self.d('run-store'), self.d('run-oci'), self.d('run-target'), self.d('run-bundle'), self.d('run-out'))}")


# ------------------------------------------------------------------ report


def fmt_t(s):
    med, lo, hi = s
    return f"{med:.3f} ({lo:.3f}–{hi:.3f})"


def cell(t):
    if t.na:
        return t.na
    if t.error and not t.times:
        return f"failed: {t.error}"
    return fmt_t(t.stats())


def verdict(case):
    tgt = TARGETS.get((case.num, case.variant)) or TARGETS.get(case.num)
    if not tgt or (case.num == 8 and case.variant != "default"):
        return ""
    kind, val, text = tgt
    h, p = case.hoist.stats(), case.peer.stats()
    if kind == "ratio":
        if case.peer.na:
            return ""
        if not (h and p):
            return f"{text}: —"
        return f"{text}: " + ("met" if p[0] / h[0] >= val else "**missed**")
    if kind == "wall":
        if not h:
            return f"{text}: —"
        return f"{text}: " + ("met" if h[0] <= val else "**missed**")
    if kind == "rss":
        if not case.hoist.rss:
            return f"{text}: —"
        return f"{text}: " + ("met" if max(case.hoist.rss) * 1024 <= val else "**missed**")
    return ""


def table(cases):
    rows = ["| # | scenario | image | hoist | hoist s: median (min–max) | peer | peer s: median (min–max) "
            "| peer/hoist | target | peak RSS MiB hoist / peer |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        h, p = c.hoist.stats(), c.peer.stats()
        ratio = f"{p[0] / h[0]:.2f}×" if h and p else "—"
        rss = " / ".join(f"{max(t.rss) / 1024:.0f}" if t.rss else "—" for t in (c.hoist, c.peer))
        v = VARIANTS.get((c.num, c.variant), c.variant)
        scen = SCENARIOS[c.num] + (f" ({v})" if v else "")
        rows.append(f"| {c.num} | {scen} | {c.image} | {c.hoist.label} | {cell(c.hoist)} | {c.peer.label} | "
                    f"{cell(c.peer)} | {ratio} | {verdict(c)} | {rss} |")
    return "\n".join(rows)


def raw(cases):
    out = []
    for c in cases:
        for t in (c.hoist, c.peer):
            if t.times:
                out.append(f"- `{c.name}` {t.label}: " + ", ".join(f"{x:.3f}" for x in t.times) +
                           f" s; peak RSS " + ", ".join(f"{r / 1024:.0f}" for r in t.rss) + " MiB")
    return "\n".join(out)


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return cpu, os.cpu_count(), mem_kb / (1 << 20), platform.release()


def versions():
    def dpkg(p):
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", p], capture_output=True, text=True)
        return r.stdout.strip() or "?"
    return ", ".join(f"{p} {dpkg(p)}" for p in ["skopeo", "umoci", "e2fsprogs", "erofs-utils", "docker-registry"])


def image_facts(b, images):
    rows = ["| image | registry ref | layers | compressed MB | rootfs entries | rootfs MB | manifest digest |",
            "|---|---|---|---|---|---|---|"]
    with open(os.path.join(b.layout, "index.json")) as f:
        idx = json.load(f)
    for img in images:
        m = [x for x in idx["manifests"] if x["annotations"]["org.opencontainers.image.ref.name"] == img]
        if not m:
            continue
        with open(os.path.join(b.layout, "blobs", "sha256", m[0]["digest"][7:])) as f:
            man = json.load(f)
        comp = sum(l["size"] for l in man["layers"])
        ent = mb = "—"
        if img in b.refsize:
            du, n = b.refsize[img][:2]
            ent, mb = str(n), f"{du / 1e6:.0f}"
        rows.append(f"| {img} | {IMAGES[img]} | {len(man['layers'])} | {comp / 1e6:.1f} | {ent} | {mb} | "
                    f"`{m[0]['digest'][:19]}…` |")
    return "\n".join(rows)


def sync_facts(b):
    """Scenario 12's source: each repository's tags and layers, the bytes a sync moves."""
    if not b.sync_facts:
        return ""
    rows = ["| repository | tags | layers per tag | compressed MB per tag |", "|---|---|---|---|"]
    per_repo, distinct = {}, {}
    for repo, tag, man in b.sync_facts:
        per_repo.setdefault(repo, []).append((tag, man))
        for l in man["layers"] + [man["config"]]:
            distinct[l["digest"]] = l["size"]
    repo_bytes = 0
    for repo, tags in per_repo.items():
        blobs = {l["digest"]: l["size"] for _, man in tags for l in man["layers"] + [man["config"]]}
        repo_bytes += sum(blobs.values())
        sizes = ", ".join(f"{sum(l['size'] for l in man['layers']) / 1e6:.1f}" for _, man in tags)
        rows.append(f"| {repo} | {', '.join(t for t, _ in tags)} | {len(tags[0][1]['layers'])} | {sizes} |")
    return ("\n\n## Scenario 12's source\n\n"
            f"{len(b.sync_facts)} images in `{b.reg}`, synced with a skopeo-sync YAML (every tag of each "
            f"repository, `[]`) to `{b.sync_reg}/mirror/NAME:TAG`. Each tag is its repository's base layers "
            "(from bench/multi: the debian layer in all three, the node_modules layer in app2, the "
            "big-files layer in app3) and a 1–2.5 MiB layer of its own. Distinct blobs: "
            f"{distinct and sum(distinct.values()) / 1e6:.1f} MB; per destination repository (what a tool "
            f"that neither mounts across repositories nor skips known blobs uploads): {repo_bytes / 1e6:.1f} MB."
            "\n\n" + "\n".join(rows))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hoist", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--registry-pid", default="", help="the bench registry's pid (scenario 14 logs its CPU)")
    ap.add_argument("--layout", required=True)
    ap.add_argument("--shm", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--commit", default="?")
    ap.add_argument("--build-note", default="")
    ap.add_argument("--sync-registry", default="", help="scenario 12's destination registry (host:port)")
    ap.add_argument("--sync-restart", default="", help="a command that empties and restarts it")
    a = ap.parse_args()
    os.makedirs(a.logdir, exist_ok=True)
    os.makedirs(a.shm, exist_ok=True)
    b = Bench(a)
    atexit.register(serving.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cases = b.cases()
    load0 = open("/proc/loadavg").read().split()[:3]
    t0 = time.time()
    for c in cases:
        try:
            b.run_case(c, a.logdir)
        except RuntimeError as e:  # a seed (untimed pull or copy) failed: report, go on
            for t in (c.hoist, c.peer):
                if not t.na and not t.times:
                    t.error = t.error or str(e)
            log(f"  {c.name}: {e}")
    elapsed = time.time() - t0
    load1 = open("/proc/loadavg").read().split()[:3]
    images = sorted({c.image for c in cases if c.image in IMAGES}, key=list(IMAGES).index)
    for img in images:  # entries and size of each image's rootfs, for the report
        try:
            if img not in b.refsize and "big" not in img:
                b.ext4_size(img)
        except RuntimeError:
            pass
    cpu, cores, mem, kernel = machine()
    hv = subprocess.run([a.hoist, "--version"], capture_output=True, text=True).stdout.strip()
    tbl = table(cases)
    print(tbl)
    sync_note = ("\n- scenario 12 writes into a second registry of the same kind (its storage on the same disk, "
                 "under bench/work/registry-sync/PID), which an untimed prepare step stops, empties and starts "
                 "again before every first run; skopeo's blob-info cache is removed before each of its runs"
                 if any(c.num == 12 for c in cases) else "")
    mode = "quick (1 run, no warm-up, small images)" if a.quick else f"{a.warmup} warm-up + {a.runs} counted runs"
    doc = f"""# hoist bench, {time.strftime('%Y-%m-%d %H:%M %Z')}

- machine: {cpu}, {cores} cores, {mem:.1f} GiB RAM, kernel {kernel}, Debian {open('/etc/debian_version').read().strip()}
- hoist: {hv}, commit {a.commit}{('; ' + a.build_note) if a.build_note else ''}
- peers: {versions()}
- mode: {mode} per case, hoist and peer alternating run by run; total {elapsed / 60:.1f} min
- load average at start {' '.join(load0)}, at end {' '.join(load1)}. Other engineers compile on this
  machine (2 cores) while it runs, which adds noise; the ratios are the figures to read, not
  the absolute times.
- cold state: every run starts from a fresh store / layout / target directory on tmpfs
  (`/dev/shm`), made by an untimed prepare step; the registry (Distribution 2.8 on
  127.0.0.1, plain HTTP) serves from its disk storage through a warm page cache.{sync_note}

## Images

{image_facts(b, images) if images else "(no case of this run uses the bench images directly)"}{sync_facts(b)}

## Results

{tbl}

Ratios are peer median / hoist median: above 1, hoist is faster. "peak RSS" is the largest
of the counted runs (for a chain of programs, the largest program in it).

## Raw times (counted runs)

{raw(cases)}
"""
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(doc)
    log(f"report written to {a.out}")


if __name__ == "__main__":
    main()
