#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ and runs each for SECONDS (default 20), all at
# the same time (so the run takes SECONDS of wall time plus the build). Prints one
# summary line per target; exits non-zero if any target crashed, hung, ran out of memory,
# or did not build.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]          all targets
#   FUZZ_TARGETS="wire_frame" scripts/fuzz.sh 300  some targets, longer
#   FUZZ_JOBS=1 scripts/fuzz.sh                    one target at a time
#
# Needs stable Rust only: the coverage instrumentation cargo-fuzz would add is passed
# here as plain (stable) -C flags, so neither nightly nor cargo-fuzz is required. The one
# system dependency, a C++ compiler for libFuzzer itself, is installed if missing.
# Crashes land in fuzz/artifacts/<target>/; see fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
read -r -a targets <<<"${FUZZ_TARGETS:-wire_frame nbd_handshake nbd_transmission}"
jobs=${FUZZ_JOBS:-${#targets[@]}}

# libfuzzer-sys compiles libFuzzer (C++) in its build script.
if ! command -v c++ >/dev/null 2>&1; then
    echo "installing g++ (libFuzzer is C++)" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq g++ >/dev/null
fi

# What `cargo fuzz build --sanitizer none` passes, plus debug assertions and overflow
# checks (so arithmetic overflow in the decoders is found), minus `-Ccodegen-units=1`
# (which more than doubles the cold build for ~30% more executions per second: the wrong
# trade for short CI runs). All stable flags. `--target` keeps them away from build
# scripts and proc macros, as cargo-fuzz does.
triple=$(rustc -vV | sed -n 's/^host: //p')
rustflags="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks ${RUSTFLAGS:-}"
bin_args=()
for t in "${targets[@]}"; do bin_args+=(--bin "$t"); done

build_start=$(date +%s)
echo "fuzz: building ${targets[*]} (release, $triple)" >&2
if ! RUSTFLAGS="$rustflags" cargo build --quiet --manifest-path fuzz/Cargo.toml --release \
    --target "$triple" --target-dir fuzz/target/libfuzzer "${bin_args[@]}"; then
    echo "fuzz: BUILD FAILED"
    exit 1
fi
bin_dir=fuzz/target/libfuzzer/$triple/release
echo "fuzz: built in $(($(date +%s) - build_start))s" >&2

run_target() {
    local t=$1
    local work=fuzz/work/$t artifacts=fuzz/artifacts/$t
    local start rc=0
    mkdir -p "$work" "$artifacts" "fuzz/corpus/$t"
    start=$(date +%s)
    # New inputs go to the scratch corpus (first directory); the checked-in corpus
    # (second) is only read, so the tree stays clean.
    "$bin_dir/$t" "$work" "fuzz/corpus/$t" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 \
        >"$artifacts/last-run.log" 2>&1 || rc=$?
    echo $(($(date +%s) - start)) >"$artifacts/last-run.seconds"
    return "$rc"
}

summarize() {
    local t=$1 rc=$2
    local log=fuzz/artifacts/$t/last-run.log
    local elapsed
    elapsed=$(cat "fuzz/artifacts/$t/last-run.seconds" 2>/dev/null || echo "?")
    local execs rate cov corpus artifact
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1) || true
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1) || true
    cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -n1 | cut -d' ' -f2)
    corpus=$( (grep -o 'corp: [0-9]*' "$log" || true) | tail -n1 | cut -d' ' -f2)
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1) || true
    if [ "$rc" -eq 0 ]; then
        echo "fuzz $t: ok, ${execs:-?} execs in ${elapsed}s (${rate:-?}/s), cov ${cov:-?}, corpus ${corpus:-?}"
        return 0
    fi
    echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} execs in ${elapsed}s; input: ${artifact:-none written}; log: $log"
    echo "----- $t: what failed -----"
    {
        grep -m1 -A12 'panicked at' "$log" || true
        grep -E 'ERROR: libFuzzer|SUMMARY: |ALARM: |out-of-memory|Test unit written' "$log" || true
    } | head -n 40
    echo "----- reproduce: $bin_dir/$t ${artifact:-<input>} -----"
    return 1
}

failed=0
pids=()
names=()
flush_batch() {
    local i rc
    for i in "${!pids[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        summarize "${names[$i]}" "$rc" || failed=1
    done
    pids=()
    names=()
}
for t in "${targets[@]}"; do
    run_target "$t" &
    pids+=("$!")
    names+=("$t")
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        flush_batch
    fi
done
flush_batch
exit "$failed"
