#!/usr/bin/env bash
# Fuzzes the parsers that read text from outside (the targets in fuzz/)
# with libFuzzer through cargo-fuzz, one target after the other.
#
#   scripts/fuzz.sh short|long [target...]
#
# short: 15 s per target (`make test`); long: 120 s per target (`make
# fuzz`); FUZZ_SECONDS overrides both. Log lines go to stderr, prefixed
# `fuzz:`; the last line, on stdout, is the summary:
#   fuzz: targets=4 runs=<executions> crashes=<n> seconds=<s>
#
# cargo-fuzz is installed from crates.io when missing. It needs nightly
# flags, which the stable toolchain accepts under RUSTC_BOOTSTRAP=1. The
# build goes to $CARGO_TARGET_DIR/fuzz (default target/fuzz) without a
# sanitizer: the fuzzed code is safe Rust, so ASan would only slow it down;
# debug assertions (overflow checks) are on. The checked-in corpus is read,
# never written: new corpus entries go to a temporary directory. A crash
# (or timeout, or OOM) is copied to fuzz/regressions/<target>/ and makes the
# script exit non-zero; the owning crate's `fuzz_replay` test replays it.
#
# Installing or building cargo-fuzz may fail on a machine without network
# or a C++ compiler: with `short` outside CI that is a loud skip; under
# CI=true, or with `long`, it is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALL_TARGETS=(event_decoder reflector_parser script_extractor scap_results)

log() { echo "fuzz: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}
usage() {
  echo "usage: scripts/fuzz.sh short|long [target...]  (targets: ${ALL_TARGETS[*]})" >&2
  exit 2
}

mode=${1:-}
[[ $# -gt 0 ]] && shift
case "$mode" in
  short) seconds=${FUZZ_SECONDS:-15} ;;
  long) seconds=${FUZZ_SECONDS:-120} ;;
  *) usage ;;
esac
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a positive number of seconds, not '$seconds'"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "unknown target '$t' (targets: ${ALL_TARGETS[*]})"
done

# Installing or building the fuzzer failed: an error under CI or for `long`.
unavailable() {
  if [[ ${CI:-} == true || $mode == long ]]; then
    die "$*"
  fi
  log "SKIPPED, not fuzzed (an error under CI=true): $*"
  echo "fuzz: skipped: $*"
  exit 0
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "cargo-fuzz missing: cargo install cargo-fuzz --locked"
  start=$SECONDS
  # Its own temporary build dir, not the workspace's.
  env -u CARGO_TARGET_DIR cargo install cargo-fuzz --locked >&2 ||
    unavailable "cannot install cargo-fuzz"
  log "installed $(cargo fuzz --version) in $((SECONDS - start)) s"
fi

export RUSTC_BOOTSTRAP=1
fuzz_target_dir=${CARGO_TARGET_DIR:-$ROOT/target}/fuzz
triple=$(rustc -vV | sed -n 's/^host: //p')
start=$SECONDS
log "building ${#ALL_TARGETS[@]} targets into $fuzz_target_dir"
cargo fuzz build --release --debug-assertions --sanitizer none \
  --target-dir "$fuzz_target_dir" >&2 ||
  unavailable "cannot build the fuzz targets"
log "built in $((SECONDS - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

total_runs=0
crashes=0
fuzz_start=$SECONDS
for t in "${targets[@]}"; do
  bin=$fuzz_target_dir/$triple/release/$t
  [[ -x $bin ]] || die "no binary $bin after the build"
  mkdir -p "$work/$t/new" "$work/$t/artifacts"
  # libFuzzer writes new entries to the first directory only.
  dirs=("$work/$t/new" "fuzz/corpus/$t")
  [[ -d fuzz/regressions/$t ]] && dirs+=("fuzz/regressions/$t")
  args=(
    -max_total_time="$seconds"
    -timeout=30
    -rss_limit_mb=2048
    -print_final_stats=1
    -artifact_prefix="$work/$t/artifacts/"
  )
  [[ -f fuzz/dict/$t.dict ]] && args+=(-dict="fuzz/dict/$t.dict")
  t_start=$SECONDS
  rc=0
  "$bin" "${args[@]}" "${dirs[@]}" >"$work/$t/log" 2>&1 || rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/$t/log" | tail -n 1)
  if [[ -z $runs ]]; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$work/$t/log" | tail -n 1)
  fi
  runs=${runs:-0}
  total_runs=$((total_runs + runs))
  found=0
  for artifact in "$work/$t/artifacts"/*; do
    [[ -f $artifact ]] || continue
    mkdir -p "fuzz/regressions/$t"
    cp "$artifact" "fuzz/regressions/$t/"
    log "$t: crashing input saved as fuzz/regressions/$t/$(basename "$artifact")"
    found=$((found + 1))
  done
  if [[ $rc -ne 0 || $found -gt 0 ]]; then
    crashes=$((crashes + (found > 0 ? found : 1)))
    log "$t: libFuzzer exited $rc; the panic and the end of its log:"
    { grep -A 2 'panicked at' "$work/$t/log" | head -n 12 || true; tail -n 14 "$work/$t/log"; } |
      sed 's/^/fuzz:   /' >&2
  fi
  log "$t: runs=$runs seconds=$((SECONDS - t_start)) corpus_new=$(find "$work/$t/new" -type f | wc -l)"
done

echo "fuzz: targets=${#targets[@]} runs=$total_runs crashes=$crashes seconds=$((SECONDS - fuzz_start))"
[[ $crashes -eq 0 ]]
