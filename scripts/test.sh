#!/usr/bin/env bash
# The test command: on a fresh Debian machine with a Rust toolchain, installs what the
# tests need (Debian packages through apt-get, crates through cargo) and runs every check:
# formatting, clippy with warnings denied, and all tests, including those against the
# real Distribution registry, skopeo and umoci that the tests start on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing test dependencies (apt-get)"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "fuzz smoke run: each target for ${HOIST_FUZZ_SECONDS:-10} s (scripts/fuzz.sh)"
# Installs cargo-fuzz when missing and builds the targets on the stable toolchain. A crash
# fails the run; its input is in fuzz/artifacts/<target>/. HOIST_FUZZ_SECONDS=0 skips it.
if [ "${HOIST_FUZZ_SECONDS:-10}" -gt 0 ]; then
  scripts/fuzz.sh --quick-build --time "${HOIST_FUZZ_SECONDS:-10}"
fi

step "cargo test"
# A test that needs a peer (registry, skopeo, umoci, mkfs tools), root or a mount the
# machine refuses prints `SKIP <test>: <why>` and passes; with CI set (CI=true, as CI
# services set it) it fails instead (hoist_testkit::skip_or_fail). The summary counts the
# skips. bench/run --quick builds with this same command (`cargo test --workspace
# --no-run`), so keep the two alike: they share their artifacts.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# --no-fail-fast: every test binary runs, so one failure does not hide the others.
cargo test --workspace --no-fail-fast -- --test-threads="${HOIST_TEST_THREADS:-4}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } /(^|\.\.\. )SKIP [A-Za-z0-9_:]+: / { s++ }
     END { printf "summary: %d passed (%d of them skipped), %d failed, %d ignored\n", p, s, f, i }' "$log"
exit "$status"
