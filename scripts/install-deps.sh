#!/bin/bash
# install-deps.sh - install the Debian packages hoist's tests need. Idempotent and quiet.
#
# The tests start real peers on loopback: Distribution (docker-registry), skopeo, umoci, and use
# openssl (test CAs and token-signing keys), htpasswd (apache2-utils), curl, mke2fs/e2fsck
# (e2fsprogs), mkfs.erofs/fsck.erofs (erofs-utils) and gpg (gnupg: throwaway keys that sign
# images for the trust tests), and containerd (its daemon and `ctr`: `hoist serve` as a
# containerd mirror; the test starts a private daemon, no CRI plugin, its own socket).
#
# When every package is already installed this returns at once, without touching apt.
# Otherwise it runs `apt-get update` once, then `apt-get install` of the missing packages only.
# Exit status: 0 when all packages are present afterwards, non-zero (with a message) otherwise.
set -euo pipefail

PACKAGES=(docker-registry skopeo umoci openssl apache2-utils curl e2fsprogs erofs-utils gnupg cryptsetup-bin containerd)

installed() {
  # dpkg -s succeeds for half-removed packages too; require "install ok installed".
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "install-deps.sh: missing packages: ${missing[*]}; run as root (or install sudo)" >&2
    exit 1
  fi
else
  SUDO=()
fi

echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-deps.sh: apt-get update failed" >&2
  exit 1
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
     "${missing[@]}" >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-deps.sh: apt-get install ${missing[*]} failed" >&2
  exit 1
fi

still=()
for p in "${missing[@]}"; do installed "$p" || still+=("$p"); done
if [ ${#still[@]} -ne 0 ]; then
  echo "install-deps.sh: still not installed after apt-get: ${still[*]}" >&2
  exit 1
fi
