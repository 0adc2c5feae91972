#!/usr/bin/env python3
"""Check copies of one image byte for byte: each `dir:` or `oci:` destination's manifest
has the expected digest, and every blob it names is there with its size and sha256.

    verify_copy.py --manifest sha256:HEX dir:/path [oci:/path:tag ...]

Exits non-zero, naming the first copy and blob that differ. Used by bench.py's
scenarios 14 and 15 as the untimed check after every run (16 concurrent copies: all 16).
"""

import argparse
import hashlib
import json
import os
import sys


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def check_blobs(where, doc, path_of):
    for desc in [doc["config"], *doc["layers"]]:
        p = path_of(desc["digest"])
        if not os.path.exists(p):
            return f"{where}: blob {desc['digest']} missing"
        if os.path.getsize(p) != desc["size"]:
            return f"{where}: blob {desc['digest']} has {os.path.getsize(p)} bytes, not {desc['size']}"
        if sha256_file(p) != desc["digest"]:
            return f"{where}: blob {desc['digest']} does not hash to its digest"
    return None


def check_dir(d, want):
    m = os.path.join(d, "manifest.json")
    got = sha256_file(m)
    if got != want:
        return f"dir:{d}: manifest is {got}, not {want}"
    with open(m, "rb") as f:
        doc = json.load(f)
    return check_blobs(f"dir:{d}", doc, lambda dg: os.path.join(d, dg.split(":", 1)[1]))


def check_oci(spec, want):
    d, _, tag = spec.rpartition(":") if spec.count(":") else (spec, "", "")
    with open(os.path.join(d, "index.json")) as f:
        idx = json.load(f)
    ms = idx["manifests"]
    if tag:
        ms = [m for m in ms if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    if len(ms) != 1:
        return f"oci:{spec}: {len(ms)} manifests for the tag"
    blob = lambda dg: os.path.join(d, "blobs", *dg.split(":", 1))
    if ms[0]["digest"] != want or sha256_file(blob(want)) != want:
        return f"oci:{spec}: manifest {ms[0]['digest']}, not {want}"
    with open(blob(want), "rb") as f:
        doc = json.load(f)
    return check_blobs(f"oci:{spec}", doc, blob)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="the expected manifest digest")
    ap.add_argument("copies", nargs="+", help="dir:PATH or oci:PATH[:TAG]")
    a = ap.parse_args()
    for c in a.copies:
        kind, _, rest = c.partition(":")
        if kind == "dir":
            err = check_dir(rest, a.manifest)
        elif kind == "oci":
            err = check_oci(rest, a.manifest)
        else:
            err = f"{c}: not dir: or oci:"
        if err:
            sys.exit(err)
    print(f"{len(a.copies)} copies verified")


if __name__ == "__main__":
    main()
