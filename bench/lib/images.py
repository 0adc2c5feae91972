#!/usr/bin/env python3
"""Build hoist's benchmark images into one OCI image layout.

Every layer is written by GNU tar (pax format, sorted names, fixed mtimes, numeric owners,
xattrs) and compressed by pigz or zstd, both run with options that make the output
deterministic; this script only generates the input trees and assembles the layout
(blobs, config, manifest and index JSON with their sha256 digests). Nothing here calls
umoci: `umoci insert` 0.4.7 writes layer tars without end-of-archive blocks.

Tags (in LAYOUT/index.json, annotation org.opencontainers.image.ref.name):
  debian      1 layer: Debian bookworm minbase made with debootstrap from the machine's
              Debian mirror (apt caches and lists, /dev nodes and debootstrap logs removed)
  multi       6 layers, an "application" image:
                L1 the debian layer (the same blob)
                L2 ~48k small files: a synthetic node_modules tree (text sources, JSON,
                   maps, a few native binaries), pnpm-style hardlinks, .bin symlinks, and
                   one 4,000-entry flat directory of small incompressible icons
                L3 big files: 64 MiB incompressible, 32 MiB compressible log, 8 MiB zeros
                L4 deletions: 110 whiteouts of files and whole directories
                L5 edge cases: hardlinks, symlinks (relative, absolute, dangling, to a dir),
                   long and unicode names, setuid/setgid/sticky, fifo, user xattr, file
                   capability, uid 3000000, a 16 MiB mostly-zero file, 1970/2100 mtimes
                L6 opaque directories (.wh..wh..opq) over zoneinfo and an L2 package
  multi-zstd  the same 6 layers recompressed with zstd -3 (diff IDs equal)
  big1g       1 layer of 1 GiB: four 256 MiB incompressible files (gzip blob ~1 GiB)
  big64m      1 layer of 64 MiB, one incompressible file (the --quick stand-in for big1g)

Usage: images.py --work DIR --layout DIR --mirror URL TAG [TAG...]
A tag already in the layout, built by the same recipe version, is kept as it is.
"""

import argparse
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time

# Bump when a recipe changes: images with another version are rebuilt.
RECIPE = 1
# 2024-06-01T00:00:00Z: the mtime of every generated file (except L5's deliberate ones).
EPOCH = 1717200000
CREATED = "2024-06-01T00:00:00Z"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
CHUNK = 1 << 20


def log(msg):
    print(f"[images {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


# ------------------------------------------------------------------------ layout


class Layout:
    def __init__(self, path):
        self.path = path
        self.blobs = os.path.join(path, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        ol = os.path.join(path, "oci-layout")
        if not os.path.exists(ol):
            with open(ol, "w") as f:
                f.write('{"imageLayoutVersion":"1.0.0"}')
        self.index_path = os.path.join(path, "index.json")
        if os.path.exists(self.index_path):
            with open(self.index_path) as f:
                self.index = json.load(f)
        else:
            self.index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                          "manifests": []}

    def blob_path(self, digest):
        return os.path.join(self.blobs, digest.split(":", 1)[1])

    def has(self, digest):
        return os.path.exists(self.blob_path(digest))

    def put_bytes(self, data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        p = self.blob_path(d)
        if not os.path.exists(p):
            tmp = p + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, p)
        return d, len(data)

    def entry(self, tag):
        for m in self.index["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m
        return None

    def tag_ok(self, tag):
        """The tag exists, with its recipe version, and all its blobs are present."""
        m = self.entry(tag)
        if not m or m.get("annotations", {}).get("bench.hoist.recipe") != str(RECIPE):
            return False
        if not self.has(m["digest"]):
            return False
        with open(self.blob_path(m["digest"])) as f:
            man = json.load(f)
        return all(self.has(d["digest"]) for d in [man["config"]] + man["layers"])

    def set_tag(self, tag, digest, size):
        self.index["manifests"] = [m for m in self.index["manifests"]
                                   if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
        self.index["manifests"].append({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag, "bench.hoist.recipe": str(RECIPE)}})
        self.index["manifests"].sort(key=lambda m: m["annotations"]["org.opencontainers.image.ref.name"])
        tmp = self.index_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.index, f, indent=1, sort_keys=True)
        os.rename(tmp, self.index_path)

    def gc(self):
        keep = set()
        for m in self.index["manifests"]:
            keep.add(m["digest"])
            if self.has(m["digest"]):
                with open(self.blob_path(m["digest"])) as f:
                    man = json.load(f)
                keep.update(d["digest"] for d in [man["config"]] + man["layers"])
        for name in os.listdir(self.blobs):
            if "sha256:" + name not in keep:
                os.unlink(os.path.join(self.blobs, name))


def host_arch():
    a = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    return a or "amd64"


def write_image(layout, tag, layers, history):
    """layers: layer records (dicts with digest, size, diff_id, media_type)."""
    config = {
        "created": CREATED, "architecture": host_arch(), "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/bash"], "WorkingDir": "/",
                   "Labels": {"org.opencontainers.image.title": f"hoist bench {tag}"}},
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [{"created": CREATED, "created_by": h} for h in history],
    }
    cd, cs = layout.put_bytes(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": l["media_type"], "digest": l["digest"], "size": l["size"]} for l in layers],
    }
    md, ms = layout.put_bytes(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    layout.set_tag(tag, md, ms)
    log(f"tag {tag}: {len(layers)} layers, {sum(l['size'] for l in layers) / 1e6:.1f} MB compressed, "
        f"manifest {md}")


# ------------------------------------------------------------------------ layers

TAR_BASE = ["tar", "--create", "--file=-", "--format=pax", "--sort=name", "--numeric-owner",
            "--xattrs", "--xattrs-include=user.*", "--xattrs-include=security.capability",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"]


def compressor(kind):
    if kind == "gzip":
        return ["pigz", "-6", "-n", "-c"], GZIP
    return ["zstd", "-3", "-q", "-c", "-T1"], ZSTD


def make_layer(work, layout, name, tree, members, kind="gzip", fixed_mtime=True, created_by=""):
    """Tar `members` (paths relative to `tree`) into a compressed blob in the layout.
    Cached by name in WORK/layers/NAME.json."""
    rec_path = os.path.join(work, "layers", f"{name}.json")
    if os.path.exists(rec_path):
        with open(rec_path) as f:
            rec = json.load(f)
        if rec.get("recipe") == RECIPE and layout.has(rec["digest"]):
            return rec
    os.makedirs(os.path.dirname(rec_path), exist_ok=True)
    cmd = TAR_BASE + (["--mtime=@%d" % EPOCH] if fixed_mtime else []) + ["-C", tree, "--"] + members
    comp, media_type = compressor(kind)
    tmp = os.path.join(layout.blobs, f".{name}.tmp")
    log(f"layer {name}: tar | {comp[0]}")
    with open(tmp, "wb") as out:
        tar = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        z = subprocess.Popen(comp, stdin=subprocess.PIPE, stdout=out)
        h, n = hashlib.sha256(), 0
        while True:
            b = tar.stdout.read(CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
            z.stdin.write(b)
        z.stdin.close()
        if tar.wait() != 0 or z.wait() != 0:
            raise SystemExit(f"layer {name}: tar or {comp[0]} failed")
    return finish_blob(layout, tmp, rec_path, {"name": name, "diff_id": "sha256:" + h.hexdigest(),
                                                "tar_size": n, "media_type": media_type,
                                                "created_by": created_by})


def recompress(work, layout, src, name):
    """A zstd copy of a gzip layer (same diff ID)."""
    rec_path = os.path.join(work, "layers", f"{name}.json")
    if os.path.exists(rec_path):
        with open(rec_path) as f:
            rec = json.load(f)
        if rec.get("recipe") == RECIPE and rec.get("diff_id") == src["diff_id"] and layout.has(rec["digest"]):
            return rec
    tmp = os.path.join(layout.blobs, f".{name}.tmp")
    log(f"layer {name}: pigz -d | zstd -3")
    with open(tmp, "wb") as out:
        d = subprocess.Popen(["pigz", "-dc", layout.blob_path(src["digest"])], stdout=subprocess.PIPE)
        run(["zstd", "-3", "-q", "-c", "-T1"], stdin=d.stdout, stdout=out)
        if d.wait() != 0:
            raise SystemExit(f"layer {name}: pigz -d failed")
    rec = dict(src, name=name, media_type=ZSTD)
    return finish_blob(layout, tmp, rec_path, rec)


def finish_blob(layout, tmp, rec_path, rec):
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    rec["digest"] = "sha256:" + h.hexdigest()
    rec["size"] = os.path.getsize(tmp)
    rec["recipe"] = RECIPE
    os.rename(tmp, layout.blob_path(rec["digest"]))
    with open(rec_path, "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    log(f"  {rec['digest'][:19]}: {rec['size'] / 1e6:.1f} MB compressed, {rec['tar_size'] / 1e6:.1f} MB tar")
    return rec


def top_members(tree):
    return sorted(os.listdir(tree))


def fresh(path):
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


# ------------------------------------------------------------------------ debian


def debian_rootfs(work, mirror):
    rf = os.path.join(work, "debian-rootfs")
    done = rf + ".done"
    if os.path.exists(done):
        return rf
    tmp = rf + ".tmp"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    logf = os.path.join(work, "debootstrap.log")
    log(f"debootstrap --variant=minbase bookworm {tmp} {mirror} (log: {logf}; a few minutes)")
    with open(logf, "w") as f:
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", tmp, mirror], stdout=f, stderr=f)
    if r.returncode != 0:
        raise SystemExit(f"debootstrap failed, see {logf}")
    clean_rootfs(tmp)
    if os.path.lexists(rf):
        shutil.rmtree(rf)
    os.rename(tmp, rf)
    open(done, "w").close()
    return rf


def clean_rootfs(rf):
    """What the official debian images drop too."""
    for sub in ["var/cache/apt/archives", "var/lib/apt/lists", "dev"]:
        d = os.path.join(rf, sub)
        for n in os.listdir(d) if os.path.isdir(d) else []:
            p = os.path.join(d, n)
            if os.path.isdir(p) and not os.path.islink(p):
                if sub != "var/cache/apt/archives":  # keep archives/partial
                    shutil.rmtree(p)
            elif sub != "var/cache/apt/archives" or n.endswith(".deb"):
                os.unlink(p)
    for n in os.listdir(os.path.join(rf, "var/cache/apt")):
        if n.endswith(".bin"):
            os.unlink(os.path.join(rf, "var/cache/apt", n))
    for p in ["var/log/bootstrap.log", "debootstrap"]:
        p = os.path.join(rf, p)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)


def debian_layer(work, layout, mirror):
    rf = debian_rootfs(work, mirror)
    return make_layer(work, layout, "debian", rf, top_members(rf),
                      created_by="debootstrap --variant=minbase bookworm")


# ------------------------------------------------------------------------ multi: L2


SYLL = ["re", "act", "con", "fig", "util", "par", "se", "ser", "ial", "iz", "load", "er", "tr", "ans",
        "form", "pro", "mise", "stream", "buf", "fer", "node", "path", "han", "dle", "ev", "ent", "emit",
        "call", "back", "val", "id", "ate", "sch", "ema", "cache", "key", "map", "list", "ob", "ject"]
KEYWORDS = ["const", "let", "var", "function", "return", "if", "else", "for", "while", "new", "this",
            "typeof", "null", "undefined", "true", "false", "async", "await", "export", "import", "from",
            "require", "module.exports", "=", "===", "!==", "=>", "(", ")", "{", "}", "[", "]", ";", ",",
            ".", "+", "-", "*", "&&", "||", "?", ":", "'use strict';", "0", "1", "2", "err", "options",
            "value", "result", "args", "opts", "cb", "self", "i", "length", "push", "Object.keys",
            "JSON.stringify", "Promise", "Error", "throw", "try", "catch", "prototype", "exports"]


def text_pool(rng, size):
    """A pool of JavaScript-looking text (about 3-4x compressible by gzip)."""
    words = sorted({"".join(rng.choice(SYLL) for _ in range(rng.randint(1, 3))) for _ in range(6000)})
    words = [w[0].upper() + w[1:] if rng.random() < 0.2 else w for w in words]
    vocab = KEYWORDS + words
    weights = [1.0 / (i + 1) ** 0.9 for i in range(len(vocab))]
    rng.shuffle(vocab)
    cum = list(itertools.accumulate(weights))
    out, n, depth = [], 0, 0
    while n < size:
        toks = rng.choices(vocab, cum_weights=cum, k=200000)
        i = 0
        while i < len(toks):
            k = rng.randint(4, 14)
            s = "  " * depth + " ".join(toks[i:i + k]) + "\n"
            out.append(s)
            n += len(s)
            i += k
            depth = max(0, min(6, depth + rng.choice((-1, 0, 0, 1))))
    return "".join(out).encode()[:size]


MIT = ("MIT License\n\nCopyright (c) {year} {name} contributors\n\n"
       "Permission is hereby granted, free of charge, to any person obtaining a copy of this software "
       "and associated documentation files (the \"Software\"), to deal in the Software without "
       "restriction, including without limitation the rights to use, copy, modify, merge, publish, "
       "distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the "
       "Software is furnished to do so, subject to the following conditions:\n\nThe above copyright "
       "notice and this permission notice shall be included in all copies or substantial portions of "
       "the Software.\n\nTHE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.\n")


def gen_app_tree(root):
    """L2: ~48k files, deterministic. Returns a few names later layers refer to."""
    rng = random.Random(20240601)
    pool = text_pool(rng, 24 << 20)

    def text(n):
        n = max(1, min(n, len(pool)))
        off = rng.randrange(0, len(pool) - n + 1)
        return pool[off:off + n]

    def size(median, sigma=1.1, cap=512 << 10):
        return int(min(cap, max(16, rng.lognormvariate(0, sigma) * median)))

    def write(path, data, mode=0o644):
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)

    nm = os.path.join(root, "app", "node_modules")
    os.makedirs(os.path.join(nm, ".bin"))
    store = os.path.join(nm, ".pnpm-store")
    os.makedirs(store)
    shared_license = os.path.join(store, "LICENSE-MIT")
    write(shared_license, MIT.format(year=2024, name="shared").encode())
    names = sorted({"".join(rng.choice(SYLL) for _ in range(rng.randint(2, 4))) for _ in range(1200)})[:900]
    pkgs = []
    for i, name in enumerate(names):
        p = os.path.join(nm, name)
        os.makedirs(os.path.join(p, "lib"))
        pkgs.append(name)
        ver = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"
        pj = {"name": name, "version": ver, "main": "lib/index.js", "license": "MIT",
              "dependencies": {rng.choice(names): f"^{rng.randint(1, 5)}.0.0" for _ in range(rng.randint(0, 6))},
              "description": text(80).decode(errors="replace").replace("\n", " ")}
        write(os.path.join(p, "package.json"), json.dumps(pj, indent=2, sort_keys=True).encode())
        write(os.path.join(p, "README.md"), text(size(3000)))
        # pnpm-style: most LICENSE files are hardlinks to one inode
        if rng.random() < 0.8:
            os.link(shared_license, os.path.join(p, "LICENSE"))
        else:
            write(os.path.join(p, "LICENSE"), MIT.format(year=rng.randint(2010, 2024), name=name).encode())
        nfiles = max(1, int(rng.lognormvariate(3.0, 0.9)))
        subdirs = ["lib"] + [f"lib/{rng.choice(SYLL)}{j}" for j in range(rng.randint(0, 4))]
        for d in subdirs[1:]:
            os.makedirs(os.path.join(p, d), exist_ok=True)
        for j in range(nfiles):
            d = os.path.join(p, rng.choice(subdirs))
            base = f"{rng.choice(SYLL)}{rng.choice(SYLL)}{j}"
            write(os.path.join(d, base + ".js"), text(size(2500)))
            if rng.random() < 0.35:
                write(os.path.join(d, base + ".d.ts"), text(size(700)))
            if rng.random() < 0.15:
                write(os.path.join(d, base + ".js.map"), text(size(6000)))
        write(os.path.join(p, "lib", "index.js"), text(size(1500)))
        if rng.random() < 0.25:
            os.makedirs(os.path.join(p, "dist"))
            write(os.path.join(p, "dist", f"{name}.min.js"), text(size(60000, 0.8)))
        if rng.random() < 0.12:
            os.makedirs(os.path.join(p, "bin"))
            write(os.path.join(p, "bin", "cli.js"), b"#!/usr/bin/env node\n" + text(size(800)), 0o755)
            os.symlink(f"../{name}/bin/cli.js", os.path.join(nm, ".bin", name))
        if rng.random() < 0.03:  # a native addon: incompressible
            os.makedirs(os.path.join(p, "build", "Release"))
            write(os.path.join(p, "build", "Release", f"{name}.node"),
                  rng.randbytes(size(400 << 10, 0.7, 4 << 20)), 0o755)
    # one big flat directory of small incompressible files
    icons = os.path.join(root, "app", "public", "icons")
    os.makedirs(icons)
    for j in range(4000):
        write(os.path.join(icons, f"icon-{j:05d}.png"), b"\x89PNG\r\n\x1a\n" + rng.randbytes(size(900, 0.8, 16384)))
    write(os.path.join(root, "app", "server.js"), text(20000))
    return pkgs


def app_layer(work, layout):
    rec_path = os.path.join(work, "layers", "multi-l2.json")
    meta_path = os.path.join(work, "layers", "multi-l2.pkgs.json")
    if os.path.exists(rec_path) and os.path.exists(meta_path):
        with open(rec_path) as f:
            rec = json.load(f)
        if rec.get("recipe") == RECIPE and layout.has(rec["digest"]):
            with open(meta_path) as f:
                return rec, json.load(f)
    tree = fresh(os.path.join(work, "tree-l2"))
    log("generating the L2 application tree (~48k files)")
    pkgs = gen_app_tree(tree)
    rec = make_layer(work, layout, "multi-l2", tree, top_members(tree),
                     created_by="L2 app: synthetic node_modules (~45k small files, hardlinks, symlinks), 4k icons")
    with open(meta_path, "w") as f:
        json.dump(pkgs, f)
    shutil.rmtree(tree)
    return rec, pkgs


# ------------------------------------------------------------------------ multi: L3-L6


def random_file(path, nbytes, seed):
    """Incompressible, deterministic: AES-128-CTR keystream (openssl)."""
    key = hashlib.sha256(seed.encode()).hexdigest()[:32]
    with open(path, "wb") as out:
        o = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-nosalt", "-K", key, "-iv", "0",
                              "-in", "/dev/zero"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        left = nbytes
        while left:
            b = o.stdout.read(min(CHUNK, left))
            out.write(b)
            left -= len(b)
        o.kill()
        o.wait()


def big_files_layer(work, layout):
    tree = fresh(os.path.join(work, "tree-l3"))
    big = os.path.join(tree, "opt", "big")
    os.makedirs(big)
    random_file(os.path.join(big, "random.bin"), 64 << 20, "multi-l3")
    rng = random.Random(3)
    with open(os.path.join(big, "app.log"), "wb") as f:
        n, i, buf = 0, 0, []
        while n < 32 << 20:
            s = (f"2024-05-{1 + i % 28:02d}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z "
                 f"INFO svc=api req={rng.getrandbits(32):08x} path=/v1/items/{rng.randrange(5000)} "
                 f"status={200 if rng.random() < 0.97 else 500} bytes={rng.randrange(65536)} ua=\"curl/7.88\"\n")
            buf.append(s)
            n += len(s)
            i += 1
        f.write("".join(buf).encode()[:32 << 20])
    with open(os.path.join(big, "zeros.img"), "wb") as f:
        f.write(bytes(8 << 20))
    rec = make_layer(work, layout, "multi-l3", tree, ["opt"],
                     created_by="L3 big files: random.bin 64MiB, app.log 32MiB, zeros.img 8MiB")
    shutil.rmtree(tree)
    return rec


def dirs_for(tree, rel):
    d = os.path.join(tree, rel)
    os.makedirs(d, exist_ok=True)
    return d


def whiteout_layer(work, layout, debian_rf, removed, readmes):
    tree = fresh(os.path.join(work, "tree-l4"))

    def wh(rel):
        parent, name = os.path.split(rel)
        open(os.path.join(dirs_for(tree, parent), ".wh." + name), "w").close()

    for dirpath, _, files in os.walk(os.path.join(debian_rf, "usr/share/doc")):
        if "changelog.Debian.gz" in files:
            wh(os.path.relpath(os.path.join(dirpath, "changelog.Debian.gz"), debian_rf))
    for rel in ["usr/share/info", "usr/share/man/man3", "etc/motd", "usr/share/locale"]:
        if os.path.lexists(os.path.join(debian_rf, rel)):
            wh(rel)
    wh("opt/big/zeros.img")
    for name in removed:  # whole packages (directory whiteouts)
        wh(f"app/node_modules/{name}")
    for name in readmes:  # single files
        wh(f"app/node_modules/{name}/README.md")
    rec = make_layer(work, layout, "multi-l4", tree, top_members(tree),
                     created_by="L4 deletions: doc changelogs, info, locale, motd, zeros.img, 12 packages, 20 READMEs")
    shutil.rmtree(tree)
    return rec


def edge_layer(work, layout):
    tree = fresh(os.path.join(work, "tree-l5"))
    e = dirs_for(tree, "srv/edge")

    def write(name, data, mode=0o644):
        p = os.path.join(e, name)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        return p

    write("hl-a", b"hardlinked content\n")
    os.link(os.path.join(e, "hl-a"), os.path.join(e, "hl-b"))
    os.link(os.path.join(e, "hl-a"), os.path.join(e, "hl-c"))
    os.symlink("hl-a", os.path.join(e, "sym-rel"))
    os.symlink("/etc/os-release", os.path.join(e, "sym-abs"))
    os.symlink("does/not/exist", os.path.join(e, "sym-dangling"))
    os.symlink("../../usr/share", os.path.join(e, "sym-dir"))
    long = e
    for i in range(1, 7):
        long = os.path.join(long, f"directory-level-{i}-with-a-rather-long-name-xxxxxxxxxxxx")
    os.makedirs(long)
    with open(os.path.join(long, "f" * 200), "wb") as f:
        f.write(b"deep\n")
    write("ünïcødé-文件 with spaces.txt", b"unicode\n")
    with open("/bin/true", "rb") as f:
        true = f.read()
    write("suid-true", true, 0o755)
    os.chmod(os.path.join(e, "suid-true"), 0o4755)
    for d, m in [("sgid-dir", 0o2775), ("sticky-dir", 0o1777), ("empty-dir", 0o755)]:
        os.mkdir(os.path.join(e, d))
        os.chmod(os.path.join(e, d), m)
    write("empty-file", b"")
    os.mkfifo(os.path.join(e, "fifo"))
    os.chmod(os.path.join(e, "fifo"), 0o644)
    os.chown(write("bigid", b"big-ids\n"), 3000000, 3000000)
    os.setxattr(write("xattr-file", b"xattr\n"), "user.bench", b"hello")
    write("cap-true", true, 0o755)
    run(["setcap", "cap_net_raw+ep", os.path.join(e, "cap-true")])
    sparse = bytearray(16 << 20)
    sparse[8 << 20:(8 << 20) + 18] = b"data-in-the-middle"
    write("sparse.img", bytes(sparse))
    # deterministic mtimes, and two odd ones
    for dirpath, dirs, files in os.walk(tree, topdown=False):
        for n in files + dirs:
            os.utime(os.path.join(dirpath, n), (EPOCH, EPOCH), follow_symlinks=False)
        os.utime(dirpath, (EPOCH, EPOCH))
    os.utime(write("mtime-1970", b"old\n"), (1, 1))
    os.utime(write("mtime-2100", b"future\n"), (4102444800, 4102444800))
    os.utime(e, (EPOCH, EPOCH))
    rec = make_layer(work, layout, "multi-l5", tree, ["srv"], fixed_mtime=False,
                     created_by="L5 edge cases in /srv/edge")
    shutil.rmtree(tree)
    return rec


def opaque_layer(work, layout, name):
    tree = fresh(os.path.join(work, "tree-l6"))
    z = dirs_for(tree, "usr/share/zoneinfo/Etc")
    with open(os.path.join(z, "UTC"), "wb") as f:
        f.write(b"TZif2\x00" + bytes(40) + b"\nUTC0\n")
    os.symlink("Etc/UTC", os.path.join(tree, "usr/share/zoneinfo/UTC"))
    open(os.path.join(tree, "usr/share/zoneinfo/.wh..wh..opq"), "w").close()
    p = dirs_for(tree, f"app/node_modules/{name}")
    open(os.path.join(p, ".wh..wh..opq"), "w").close()
    with open(os.path.join(p, "package.json"), "w") as f:
        f.write(json.dumps({"name": name, "version": "99.0.0", "main": "index.js"}))
    with open(os.path.join(p, "index.js"), "w") as f:
        f.write("module.exports = {};\n")
    rec = make_layer(work, layout, "multi-l6", tree, ["app", "usr"],
                     created_by=f"L6 opaque dirs: /usr/share/zoneinfo, /app/node_modules/{name}")
    shutil.rmtree(tree)
    return rec


def plan(pkgs):
    """Which L2 packages L4 removes (whole, or their README) and which L6 makes opaque."""
    rng = random.Random(4)
    removed = sorted(rng.sample(pkgs, 12))
    rest = [p for p in pkgs if p not in removed]
    readmes = sorted(rng.sample(rest, 20))
    opaque = [p for p in rest if p not in readmes][len(rest) // 2]
    return removed, readmes, opaque


def multi_layers(work, layout, mirror):
    l1 = debian_layer(work, layout, mirror)
    l2, pkgs = app_layer(work, layout)
    removed, readmes, opaque = plan(pkgs)
    l3 = cached(work, layout, "multi-l3") or big_files_layer(work, layout)
    l4 = cached(work, layout, "multi-l4") or whiteout_layer(work, layout, debian_rootfs(work, mirror),
                                                            removed, readmes)
    l5 = cached(work, layout, "multi-l5") or edge_layer(work, layout)
    l6 = cached(work, layout, "multi-l6") or opaque_layer(work, layout, opaque)
    return [l1, l2, l3, l4, l5, l6]


def cached(work, layout, name):
    p = os.path.join(work, "layers", f"{name}.json")
    if os.path.exists(p):
        with open(p) as f:
            rec = json.load(f)
        if rec.get("recipe") == RECIPE and layout.has(rec["digest"]):
            return rec
    return None


# ------------------------------------------------------------------------ big


def big_layer(work, layout, name, files, each):
    rec = cached(work, layout, name)
    if rec:
        return rec
    tree = fresh(os.path.join(work, f"tree-{name}"))
    os.makedirs(os.path.join(tree, "data"))
    for i in range(files):
        random_file(os.path.join(tree, "data", f"blob-{i}.bin"), each, f"{name}-{i}")
    rec = make_layer(work, layout, name, tree, ["data"],
                     created_by=f"{files} x {each >> 20} MiB incompressible files")
    shutil.rmtree(tree)
    return rec


# ------------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--layout", required=True)
    ap.add_argument("--mirror", default="http://deb.debian.org/debian")
    ap.add_argument("tags", nargs="+", choices=["debian", "multi", "multi-zstd", "big1g", "big64m"])
    a = ap.parse_args()
    os.umask(0o022)
    os.makedirs(a.work, exist_ok=True)
    layout = Layout(a.layout)
    for tag in a.tags:
        if layout.tag_ok(tag):
            log(f"tag {tag}: already built")
            continue
        if tag == "debian":
            l = debian_layer(a.work, layout, a.mirror)
            write_image(layout, tag, [l], [l["created_by"]])
        elif tag in ("multi", "multi-zstd"):
            ls = multi_layers(a.work, layout, a.mirror)
            if tag == "multi-zstd":
                ls = [recompress(a.work, layout, l, l["name"] + "-zstd") for l in ls]
            write_image(layout, tag, ls, [l["created_by"] for l in ls])
        elif tag == "big1g":
            l = big_layer(a.work, layout, "big1g", 4, 256 << 20)
            write_image(layout, tag, [l], [l["created_by"]])
        elif tag == "big64m":
            l = big_layer(a.work, layout, "big64m", 1, 64 << 20)
            write_image(layout, tag, [l], [l["created_by"]])
    layout.gc()


if __name__ == "__main__":
    main()
