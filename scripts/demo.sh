#!/usr/bin/env bash
# demo.sh - the main job on an embedded default, from a fresh Debian machine with a Rust
# toolchain: install the peers, build hoist, start a local Distribution registry on
# 127.0.0.1, push a generated sample image to it with skopeo, then pull it with hoist
# (progress bars on a terminal, plain lines otherwise), list it, inspect it in the store
# and in the registry, list the repository's tags, pull again to show that every blob is
# skipped, unpack it into a directory, build its root filesystem (an ext4 image written by
# hoist itself, as any user, with a dm-verity tree) and build it again from the cache.
#
# Work directory: ${HOIST_DEMO_DIR:-/tmp/hoist-demo}, wiped at the start (only if it is
# empty or an earlier demo's). The registry is stopped when the script exits, however it
# exits. Nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${HOIST_DEMO_DIR:-/tmp/hoist-demo}
MARKER=.hoist-demo

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
[ -t 1 ] || step() { printf '\n==> %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "installing dependencies (scripts/install-deps.sh)"
scripts/install-deps.sh

step "building hoist and hoist-testkit (cargo build --release)"
cargo build --release -p hoist-cli -p hoist-testkit
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
HOIST=${TARGET_DIR:-target}/release/hoist
TESTKIT=${TARGET_DIR:-target}/release/hoist-testkit

step "preparing the work directory $WORK"
case "$WORK" in
  "" | / | "$HOME" | "$HOME/") echo "demo.sh: refusing to use $WORK as the work directory" >&2; exit 1 ;;
esac
if [ -e "$WORK" ] && [ ! -e "$WORK/$MARKER" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
  echo "demo.sh: $WORK exists, is not empty and is not a demo directory; set HOIST_DEMO_DIR" >&2
  exit 1
fi
rm -rf "$WORK"
mkdir -p "$WORK"
touch "$WORK/$MARKER"
export HOIST_STORE=$WORK/store

step "starting a Distribution registry on 127.0.0.1"
PORT_FILE=$WORK/registry.addr
# The registry's stdin is a pipe held open by this script (fd 3): if the script dies, even
# by SIGKILL, the pipe closes and hoist-testkit stops the registry. The trap stops it on
# any ordinary exit.
exec 3> >(exec "$TESTKIT" serve-registry --port-file "$PORT_FILE")
REGISTRY_PID=$!
stop_registry() {
  exec 3>&- || true
  kill -TERM "$REGISTRY_PID" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$REGISTRY_PID" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$REGISTRY_PID" 2>/dev/null || true
}
trap stop_registry EXIT
for _ in $(seq 100); do
  [ -s "$PORT_FILE" ] && break
  kill -0 "$REGISTRY_PID" 2>/dev/null || { echo "demo.sh: the registry failed to start" >&2; exit 1; }
  sleep 0.1
done
[ -s "$PORT_FILE" ] || { echo "demo.sh: the registry did not start within 10 s" >&2; exit 1; }
REG=$(cat "$PORT_FILE")
REF=$REG/demo/sample:latest
echo "registry: http://$REG"

step "writing a sample image into an OCI layout and pushing it with skopeo"
show "$TESTKIT" sample-layout "$WORK/layout"
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$WORK/policy.json"
show skopeo --policy "$WORK/policy.json" copy --quiet --dest-tls-verify=false --dest-no-creds \
  "oci:$WORK/layout:sample" "docker://$REF"

step "hoist pull $REF"
show "$HOIST" pull "$REF"

step "hoist images"
show "$HOIST" images

step "hoist inspect $REF (the image in the store)"
show "$HOIST" inspect "$REF"

step "hoist inspect docker://$REF (the image in the registry)"
show "$HOIST" inspect "docker://$REF"

step "hoist tags $REG/demo/sample"
show "$HOIST" tags "$REG/demo/sample"

step "hoist pull $REF again: every blob is already in the store"
show "$HOIST" pull "$REF" 2>&1 | tee "$WORK/second-pull.log"
grep -q ' 0 blobs fetched' "$WORK/second-pull.log" || {
  echo "demo.sh: the second pull fetched blobs again" >&2
  exit 1
}

step "hoist unpack $REF $WORK/rootfs (layers applied in order, safely inside the root)"
show "$HOIST" unpack "$REF" "$WORK/rootfs"
show ls -l "$WORK/rootfs"

# The ext4 image is written by hoist itself from the layer blobs (no mke2fs, no loop
# device, no root), with a dm-verity hash tree whose root hash is in the JSON result.
FORMAT=ext4
step "hoist rootfs $REF --format $FORMAT (a bootable root filesystem, cached in the store)"
show "$HOIST" rootfs "$REF" --format "$FORMAT" --verity | tee "$WORK/rootfs.json"

step "hoist rootfs $REF --format $FORMAT again: answered from the cache"
show "$HOIST" rootfs "$REF" --format "$FORMAT" --verity | tee "$WORK/rootfs-warm.json"
grep -q '"cached": *true' "$WORK/rootfs-warm.json" || {
  echo "demo.sh: the second rootfs build was not cached" >&2
  exit 1
}

step "hoist df (disk usage by kind)"
show "$HOIST" df

step "done: the store is $HOIST_STORE (an OCI layout: skopeo and umoci read it too)"
