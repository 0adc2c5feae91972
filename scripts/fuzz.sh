#!/usr/bin/env bash
# fuzz.sh - build and run hoist's fuzz targets (cargo-fuzz, libFuzzer) on the stable toolchain.
#
# Usage: scripts/fuzz.sh [TARGET...] [--time SECONDS] [--quick-build] [--build-only]
#   TARGET         reference, manifest, config, layer, docker_archive (default: all of them)
#   --time N       seconds per target (default 60)
#   --quick-build  cargo-fuzz's --dev build (opt-level 1, fuzz/Cargo.toml): a cheaper cold
#                  build, slower runs; for smoke runs (scripts/test.sh)
#   --build-only   build the targets and stop
#
# Installs cargo-fuzz when it is missing (`cargo install cargo-fuzz --locked`), builds every
# target once (release, debug assertions, no sanitizer: `-s none`, which needs only stable
# `-C` flags; the code under test is safe Rust, where AddressSanitizer finds nothing
# more and halves the speed), then runs each for the given time.
#
# The seeds in fuzz/corpus/<target>/ and the past crashes in fuzz/regressions/<target>/ are
# read, never written: inputs the fuzzer finds go to fuzz/work/<target>/ (git-ignored; kept
# between runs, so a later run starts from them). A crash, timeout or leak is written to
# fuzz/artifacts/<target>/ and the script exits non-zero after running the other targets.
# To keep a crash as a regression test, copy it into fuzz/regressions/<target>/:
# `cargo test -p hoist-fuzz --test replay` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }

time=60
build_only=0
quick=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) [ $# -ge 2 ] || { usage >&2; exit 2; }; time=$2; shift 2 ;;
    --time=*) time=${1#--time=}; shift ;;
    --build-only) build_only=1; shift ;;
    --quick-build) quick=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
case "$time" in ''|*[!0-9]*) echo "fuzz.sh: --time wants whole seconds, got '$time'" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked --quiet
fi

all=()
while IFS= read -r t; do all+=("$t"); done < <(cargo fuzz list --fuzz-dir fuzz)
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
  case " ${all[*]} " in *" $t "*) ;; *) echo "fuzz.sh: no target '$t' (have: ${all[*]})" >&2; exit 2 ;; esac
done

# cargo-fuzz's flags are stable `-C` flags with `-s none`; RUSTC_BOOTSTRAP lets stable rustc
# accept the `-Z` flags that other cargo-fuzz options (and older releases) add.
export RUSTC_BOOTSTRAP=1
build=(-s none --fuzz-dir fuzz)
[ "$quick" -eq 1 ] && build+=(--dev)

# One build of every target: they share all their dependencies.
echo "fuzz.sh: building the fuzz targets" >&2
cargo fuzz build "${build[@]}"
[ "$build_only" -eq 1 ] && exit 0

failed=()
for t in "${targets[@]}"; do
  work=fuzz/work/$t
  mkdir -p "$work"
  corpora=("$work" "fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && corpora+=("fuzz/regressions/$t")
  echo "fuzz.sh: running $t for ${time}s" >&2
  log=$(mktemp)
  set +e
  cargo fuzz run "${build[@]}" "$t" "${corpora[@]}" -- \
    -max_total_time="$time" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  # libFuzzer's closing statistics: runs and speed.
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ "$status" -ne 0 ]; then
    # The panic (or libFuzzer's verdict) and where the input went, else the log's end.
    grep -E -A6 'panicked at|ERROR: libFuzzer' "$log" >&2 || tail -40 "$log" >&2
    grep -E 'Test unit written|Reproduce with|cargo fuzz run' "$log" >&2 || true
    echo "fuzz.sh: $t FAILED (exit $status); the input is in fuzz/artifacts/$t/" >&2
    failed+=("$t")
  else
    echo "fuzz.sh: $t ok: ${runs:-?} runs, ${speed:-?} exec/s, ${cov:-cov: ?}" >&2
  fi
  rm -f "$log"
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
