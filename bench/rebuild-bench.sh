#!/usr/bin/env bash
# Rebuild benchmark (issue 4): how fast `shorthorn replica add` rebuilds a replica, in one
# invocation, each figure against a baseline measured in the same run:
#   1. full rebuild: a 16 GiB volume on 2 replicas gets 4 GiB of data (fio sequential
#      1 MiB writes over the volume's first 4 GiB, fsynced). A third replica starts on an
#      empty directory and `replica add` rebuilds it. Baseline: `cp --sparse=always` of
#      replica 0's layer-*.img files to a new directory on the same filesystem. Both are
#      timed from cold page cache (sync + drop_caches first) up to a final `sync` included.
#      Ratio cp time / rebuild time; target >= 0.8.
#   2. re-add after 1% differs: kill -9 the rebuilt third replica, write 1% of the data
#      (random 1 MiB writes inside the 4 GiB: 40 of them), restart its process on the same
#      directory and `replica add` it again. Ratio re-add time / full rebuild time;
#      target <= 0.10. Prints what it copied.
#   3. fio 4 KiB random writes, queue depth 32, 20 s (nbd engine, inside the data, so they
#      overwrite), on the 3-replica volume without a rebuild (before and after, averaged),
#      then while a fresh fourth replica is rebuilt (unlimited, then --bandwidth 100M; the
#      `replica add` starts 2 s after fio). IOPS during = fio's 100 ms IOPS log over the
#      time both ran; prints what fraction of the fio run that was. Ratio IOPS during /
#      IOPS without; target >= 0.5. Also the job with 4 RW replicas and no rebuild, and the
#      CPU time each Shorthorn process used during each rebuild.
# Usage: bench/rebuild-bench.sh [--quick] [--dir DIR]
# --quick: 2 GiB volume, 512 MiB of data (5 MiB of 1 MiB writes in part 2), fio 5 s.
# Data in DIR/shorthorn-rebuild-bench (default DIR /var/tmp: a real disk, not tmpfs),
# removed at the end, also on failure or Ctrl-C; logs and fio output stay in
# target/bench-rebuild. Must run as root (drop_caches). Ports 11100-11199 on 127.0.0.1.
set -euo pipefail
cmdline="bench/rebuild-bench.sh${*:+ $*}"
cd "$(dirname "$0")/.."

size=16G
data_size=4G
runtime=20
parent=/var/tmp
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) size=2G; data_size=512M; runtime=5 ;;
        --dir) parent="$2"; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: the benchmark drops the page cache (/proc/sys/vm/drop_caches)" >&2
    exit 1
fi

echo "\$ $cmdline"
./scripts/setup.sh
cargo build --release -q -p shorthorn
work=$PWD/target/bench-rebuild
data=$parent/shorthorn-rebuild-bench
data_bytes=$(numfmt --from=iec "$data_size")
dirty_mib=$(( data_bytes / 1048576 / 100 ))   # 1% of the data, in whole MiB
engine=127.0.0.1:11150
uri=nbd://127.0.0.1:11151/vol
declare -A port=([r0]=11100 [r1]=11110 [r2]=11120 [r3]=11130 [r4]=11140)

rm -rf "$work" "$data"
mkdir -p "$work" "$data"
# Our own copy: a build elsewhere must not swap the binary between two process starts.
cp target/release/shorthorn "$work/shorthorn"
bin=$work/shorthorn
results="$work/results.tsv"
: > "$results"
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # The engine first (it flushes to the replicas), then everything else.
    stop engine
    stop_all
    rm -f "$work/shorthorn"
    remove_data "$data"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# fio with a time limit, so a stuck volume cannot hang the benchmark.
# --foreground keeps them in our process group, so Ctrl-C reaches them.
fio_bounded() { timeout --foreground --signal=INT --kill-after=10 900 fio "$@"; }
cli() { timeout --foreground 1800 "$bin" --engine "$engine" "$@"; }

# wait_line LOG PATTERN PID: until LOG has a line starting with PATTERN.
wait_line() {
    for _ in $(seq 1 300); do
        grep -q "^$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { echo "process $3 exited; see $1" >&2; tail -5 "$1" >&2; return 1; }
        sleep 0.1
    done
    echo "no '$2' in $1 after 30 s" >&2
    return 1
}

# start_replica NAME: serve $data/NAME (created if empty) on its port; log NAME-N.log.
declare -A starts=()
start_replica() {
    local name=$1 log
    starts[$name]=$(( ${starts[$name]:-0} + 1 ))
    log=$work/$name-${starts[$name]}.log
    setsid "$bin" replica "$data/$name" --volume vol --size "$size" --listen "127.0.0.1:${port[$name]}" \
        > "$log" 2>&1 &
    procs[$name]=$!
    wait_line "$log" "replica ready" "$!"
}

# CPU seconds (user + system) each Shorthorn process has used so far, as "name=seconds …".
hz=$(getconf CLK_TCK)
cpu_seconds() {
    local name
    for name in "${!procs[@]}"; do
        [ "$name" != fio ] || continue
        awk -v n="$name" -v hz="$hz" '{ printf "%s=%.2f ", n, ($14 + $15) / hz }' \
            "/proc/${procs[$name]}/stat" 2>/dev/null || true
    done
}

# add_replica NAME TAG [ARGS…]: times `replica add` of NAME (until it prints its result,
# and until a final sync) and records TAG.{wall,wall_sync,copied,checked,seconds,start,end}.
add_replica() {
    local name=$1 tag=$2 out t0 t1 t2
    shift 2
    out=$work/add-$tag.out
    put "$tag.cpu0" "$(cpu_seconds)"
    t0=$(now)
    if ! cli replica add "tcp://127.0.0.1:${port[$name]}" "$@" > "$out" 2> "$work/add-$tag.err"; then
        echo "replica add of $name failed:" >&2
        tail -5 "$work/add-$tag.err" >&2
        return 1
    fi
    t1=$(now)
    put "$tag.cpu1" "$(cpu_seconds)"
    sync
    t2=$(now)
    cat "$out" >&2
    put "$tag.start" "$t0"
    put "$tag.end" "$t1"
    put "$tag.wall" "$(elapsed "$t0" "$t1")"
    put "$tag.wall_sync" "$(elapsed "$t0" "$t2")"
    # rebuilt ADDR copied=BYTES checked=BYTES seconds=F
    local field
    for field in copied checked seconds; do
        put "$tag.$field" "$(tail -1 "$out" | tr ' ' '\n' | sed -n "s/^$field=//p")"
    done
}

# The engine's own figure (the CLI prints it to 0.1 s): from the engine log's last
# "replica rebuilt" line.
engine_seconds() {
    grep 'replica rebuilt' "$work/engine.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g' |
        sed -n 's/.*seconds=\([0-9.]*\).*/\1/p'
}

same_layers() {   # same_layers A B: the first $data_bytes of each layer file are equal
    local f
    for f in "$data/$1"/layer-*.img; do
        cmp -n "$data_bytes" "$f" "$data/$2/$(basename "$f")" >&2 || return 1
    done
}

fs_type=$(findmnt -n -o FSTYPE --target "$data" || stat -f -c %T "$data")
mount_opts=$(findmnt -n -o OPTIONS --target "$data" || echo '?')
put load.start "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------
echo "== 1. full rebuild: $size volume, 2 replicas, $data_size of data" >&2
start_replica r0
start_replica r1
# setsid (here and for the replicas): Ctrl-C reaches only this script and its
# foreground command; the cleanup then stops the engine first (it flushes), then the rest.
setsid "$bin" engine vol --size "$size" --listen "$engine" --replica "tcp://127.0.0.1:${port[r0]}" \
    --replica "tcp://127.0.0.1:${port[r1]}" --frontend nbd --frontend-listen 127.0.0.1:11151 \
    > "$work/engine.log" 2>&1 &
procs[engine]=$!
wait_line "$work/engine.log" "engine ready" "$!"

t0=$(now)
fio_bounded --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1m --iodepth=8 \
    --size="$data_size" --end_fsync=1 --output="$work/fill.txt"
put fill.seconds "$(elapsed "$t0" "$(now)")"
put layer.bytes "$(du -cB1 "$data/r0"/layer-*.img | tail -1 | cut -f1)"

echo "   baseline: cp --sparse=always of r0's layer files, then sync (cold cache)" >&2
mkdir "$data/cp"
cold
t0=$(now)
cp --sparse=always "$data/r0"/layer-*.img "$data/cp/"
sync
put cp.seconds "$(elapsed "$t0" "$(now)")"
rm -rf "$data/cp"
sync
sleep 2   # let the filesystem's discards of the deleted copy settle

echo "   replica add of r2 (empty directory, cold cache)" >&2
start_replica r2
cold
add_replica r2 full
put full.engine_seconds "$(engine_seconds)"
if same_layers r0 r2; then put full.same yes; else put full.same NO; fi

# ---------------------------------------------------------------------------------------
echo "== 2. re-add after 1% differs: kill -9 r2, $dirty_mib random 1 MiB writes, re-add" >&2
stop r2 KILL
fio_bounded --name=dirty --ioengine=nbd --uri="$uri" --rw=randwrite --bs=1m --iodepth=8 \
    --size="$data_size" --io_size="${dirty_mib}m" --randrepeat=0 --end_fsync=1 \
    --output="$work/dirty.txt"
cli ls > "$work/ls-after-kill.txt"
cat "$work/ls-after-kill.txt" >&2
start_replica r2
cold
add_replica r2 readd
put readd.engine_seconds "$(engine_seconds)"
if same_layers r0 r2; then put readd.same yes; else put readd.same NO; fi

# ---------------------------------------------------------------------------------------
echo "== 3. fio randwrite 4k qd32 ${runtime} s, without and during a rebuild" >&2
cat > "$work/randwrite.fio" <<'EOF'
; 4 KiB random writes at depth 32 over the data written in part 1 (overwrites), with a
; 100 ms IOPS log stamped in unix-epoch milliseconds.
[global]
ioengine=nbd
uri=${URI}
size=${SIZE}
time_based=1
runtime=${RUNTIME}
ramp_time=1
randrepeat=0
norandommap=1
write_iops_log=${LOG}
log_avg_msec=100
log_unix_epoch=1

[randwrite]
rw=randwrite
bs=4k
iodepth=32
EOF
# fio_run TAG: runs the job; its JSON and IOPS log are $work/fio-TAG.*
fio_args() { echo "--output-format=json --output=$work/fio-$1.json $work/randwrite.fio"; }
fio_run() {
    # shellcheck disable=SC2046
    URI=$uri SIZE=$data_size RUNTIME=$runtime LOG=$work/fio-$1 fio_bounded $(fio_args "$1")
}

cold
fio_run base1
# rebuild_under_fio NAME TAG [ARGS…]: fio starts; 2 s later `replica add` of a fresh NAME.
rebuild_under_fio() {
    local name=$1 tag=$2
    shift 2
    start_replica "$name"
    cold
    # Not through a function, so that $! is fio's timeout itself (cleanup can stop it).
    # shellcheck disable=SC2046
    URI=$uri SIZE=$data_size RUNTIME=$runtime LOG=$work/fio-$tag \
        timeout --signal=INT --kill-after=10 900 fio $(fio_args "$tag") &
    procs[fio]=$!
    sleep 2
    add_replica "$name" "$tag" "$@"
    put "$tag.engine_seconds" "$(engine_seconds)"
    wait "${procs[fio]}"
    unset 'procs[fio]'
    if [ "$tag" = limited ]; then
        # What the extra replica costs by itself: the same job with 4 RW replicas, no
        # rebuild.
        echo "   4 RW replicas (the rebuilt one included), no rebuild" >&2
        cold
        fio_run four
    fi
    # Back to 3 replicas for what follows; the directory stays until the end (deleting a
    # file of scattered 4 KiB extents with online discard takes long, and would load the
    # disk during the next measurement).
    cli replica rm "tcp://127.0.0.1:${port[$name]}" >&2
    stop "$name"
    cli ls > "$work/ls-after-rm-$name.txt"
    put "$tag.extents" "$(filefrag "$data/$name"/layer-*.img | awk '{ n += $2 } END { print n }')"
}
echo "   during a rebuild of r3, unlimited bandwidth" >&2
rebuild_under_fio r3 unlimited
echo "   during a rebuild of r4, --bandwidth 100M" >&2
rebuild_under_fio r4 limited --bandwidth 100M
cold
fio_run base2
put load.end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
[ -z "$(git status --porcelain -- crates 2>/dev/null)" ] || commit="$commit+local changes"
python3 - "$results" "$work" "$size" "$data_size" "$runtime" "$dirty_mib" "$data" \
    "$fs_type" "$mount_opts" "$commit" <<'EOF'
import json, os, sys
results, work, size, data_size, runtime, dirty_mib, data, fs, mount, commit = sys.argv[1:]
r = {}
for line in open(results):
    key, value = line.rstrip("\n").split("\t")
    r[key] = value
f = lambda key: float(r[key])
mib = lambda n: n / 1048576
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
print(f"Shorthorn rebuild benchmark: {size} volume, {data_size} of data, commit {commit}; "
      f"data on {fs} ({data}, {mount}); {os.cpu_count()} CPUs, {mem:.0f} GiB RAM; "
      f"load average {r['load.start']} at start, {r['load.end']} at end")
verdict = lambda ok: "PASS" if ok else "MISS"

print()
data_bytes = f("layer.bytes")
full, cp = f("full.wall_sync"), f("cp.seconds")
ratio1 = cp / full
print(f"1. full rebuild ({mib(data_bytes):.0f} MiB allocated in replica 0's layer files; "
      f"fill took {f('fill.seconds'):.1f} s)")
print(f"   {'':<36} {'seconds':>8} {'MiB/s':>7}")
print(f"   {'cp --sparse=always + sync':<36} {cp:>8.2f} {mib(data_bytes) / cp:>7.0f}")
print(f"   {'replica add + sync':<36} {full:>8.2f} {mib(data_bytes) / full:>7.0f}")
print(f"   {'  replica add alone (wall)':<36} {f('full.wall'):>8.2f}")
print(f"   {'  engine seconds=':<36} {f('full.engine_seconds'):>8.2f}")
print(f"   copied={r['full.copied']} checked={r['full.checked']}; "
      f"layer files equal to replica 0's: {r['full.same']}")
print(f"   ratio cp / rebuild {ratio1:.2f}, target >= 0.8: {verdict(ratio1 >= 0.8)}")
def cpu(tag):
    parse = lambda text: {k: float(v) for k, v in (w.split("=") for w in text.split())}
    before, after = parse(r.get(tag + ".cpu0", "")), parse(r.get(tag + ".cpu1", ""))
    used = {k: after[k] - before.get(k, 0) for k in sorted(after)}
    wall = f(tag + ".wall")
    return (", ".join(f"{k} {v:.1f}" for k, v in used.items()) +
            f"; total {sum(used.values()):.1f} in {wall:.1f} s wall "
            f"= {sum(used.values()) / wall:.2f} of {os.cpu_count()} CPUs busy")
print(f"   CPU seconds while it ran: {cpu('full')}")

print()
readd = f("readd.wall_sync")
ratio2 = readd / full
print(f"2. re-add after {dirty_mib} random 1 MiB writes (1% of the data) while it was down")
print(f"   replica add + sync {readd:.2f} s (replica add alone {f('readd.wall'):.2f} s, "
      f"engine seconds={f('readd.engine_seconds'):.3f}); copied={r['readd.copied']} "
      f"({mib(int(r['readd.copied'])):.0f} MiB) checked={r['readd.checked']} "
      f"({mib(int(r['readd.checked'])):.0f} MiB)")
print(f"   layer files equal to replica 0's: {r['readd.same']}")
engine_ratio = f("readd.engine_seconds") / f("full.engine_seconds")
print(f"   ratio re-add / full rebuild {ratio2:.3f}, target <= 0.10: {verdict(ratio2 <= 0.10)} "
      f"(engine seconds= alone: {engine_ratio:.3f})")

def fio(tag, window=None):
    job = json.load(open(f"{work}/fio-{tag}.json"))["jobs"][0]["write"]
    log = []
    for line in open(f"{work}/fio-{tag}_iops.1.log"):
        fields = line.split(",")
        log.append((int(fields[0]) / 1000, int(fields[1])))
    # Each entry is the mean over the 100 ms ending at its timestamp.
    begin, end = log[0][0] - 0.1, log[-1][0]
    pct = job["clat_ns"]["percentile"]
    out = {"iops": job["iops"], "begin": begin, "end": end,
           "p99": pct["99.000000"] / 1e6, "max": job["clat_ns"]["max"] / 1e6}
    if window:
        lo, hi = max(begin, window[0]), min(end, window[1])
        inside = [v for t, v in log if lo + 0.1 <= t <= hi]
        out["overlap"] = max(0.0, hi - lo) / (end - begin)
        out["during"] = sum(inside) / len(inside) if inside else float("nan")
    return out

print()
base = [fio("base1")["iops"], fio("base2")["iops"]]
without = sum(base) / 2
print(f"3. fio randwrite 4k qd32, {runtime} s runs (3 replicas; +1 WO replica while rebuilding)")
runs = {tag: fio(tag) for tag in ("base1", "base2", "four")}
print(f"   without a rebuild: {base[0]:.0f} IOPS before, {base[1]:.0f} after; mean {without:.0f}; "
      f"write latency p99 {runs['base1']['p99']:.1f} / {runs['base2']['p99']:.1f} ms, "
      f"max {runs['base1']['max']:.0f} / {runs['base2']['max']:.0f} ms")
four = runs["four"]
print(f"   for comparison, 4 RW replicas and no rebuild: {four['iops']:.0f} IOPS "
      f"({four['iops'] / without:.2f} of 3 replicas), p99 {four['p99']:.1f} ms, "
      f"max {four['max']:.0f} ms")
print(f"   {'rebuild of a 4th replica':<26} {'IOPS run':>8} {'IOPS dur':>8} {'overlap':>7} "
      f"{'rebuild s':>9} {'MiB/s':>6} {'p99 ms':>6} {'max ms':>6} {'ratio':>6}  target >= 0.5")
for tag, name in (("unlimited", "unlimited bandwidth"), ("limited", "--bandwidth 100M")):
    run = fio(tag, (f(f"{tag}.start"), f(f"{tag}.end")))
    ratio = run["during"] / without
    rate = mib(int(r[f"{tag}.copied"])) / f(f"{tag}.engine_seconds")
    print(f"   {name:<26} {run['iops']:>8.0f} {run['during']:>8.0f} {run['overlap']:>7.0%} "
          f"{f(tag + '.wall'):>9.1f} {rate:>6.0f} {run['p99']:>6.1f} {run['max']:>6.0f} "
          f"{ratio:>6.2f}  {verdict(ratio >= 0.5)}")
print("   (IOPS run: fio's whole run; IOPS dur: its 100 ms log while `replica add` ran; overlap:")
print("   that time as a fraction of the fio run; MiB/s: copied / engine seconds=; p99, max:")
print("   fio's write completion latency over its whole run)")
for tag in ("unlimited", "limited"):
    print(f"   CPU seconds during the {tag} rebuild: {cpu(tag)}")
print("   extents in the rebuilt layer files: " + ", ".join(
    f"{tag} {r[tag + '.extents']}" for tag in ("unlimited", "limited")))
EOF
if grep -q 'WARN\|ERROR' "$work/engine.log"; then
    echo "engine warnings and errors (expected: r2's kill -9, r3/r4 stopping after rm):" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$work/engine.log" | grep 'WARN\|ERROR' | cut -c1-300 >&2
fi
echo "logs, replica add output and fio JSON: $work" >&2
