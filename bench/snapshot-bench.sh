#!/usr/bin/env bash
# Snapshot benchmark (issue 5), on 3-replica volumes served over NBD by launch-simple:
#   1. latency: fill a volume, start fio 4 KiB random writes at queue depth 32, then take
#      100 snapshots one after another with `shorthorn snapshot create` (a `shorthorn ls`
#      after every second one). Prints p50/p99/max wall time per call, CLI start included;
#      `--version` and `ls` calls before the first snapshot show the CLI's own cost.
#      Also fio's IOPS while snapshotting vs before and after. Target: snapshot create
#      p99 < 50 ms.
#   2. chain: two filled volumes side by side; on one, 50 times write a random 1/50th of
#      the volume in 4 KiB blocks and take a snapshot. Then bench/fio/randread-4k-qd32
#      runs against both, back to back, for some rounds (who goes first alternates), then
#      randwrite-4k-qd32 likewise; prints median IOPS and the median per-round ratio
#      50-snapshot / 0-snapshot. Target: >= 0.9x.
# Usage: bench/snapshot-bench.sh [--quick] [--size 512M] [--runtime 8] [--rounds 5]
#          [--snapshots 100] [--chain 50] [--dir DIR] [--only latency|chain]
# --quick: 256M volumes, 3 s jobs, 3 rounds (about 2 min); default: about 5 min.
# --dir DIR: keep the replicas' data in DIR/shorthorn-snapshot-bench (removed at the end)
# instead of /dev/shm (tmpfs; needs about 10x the volume size of free memory). On tmpfs
# the figures are Shorthorn's own costs, not a disk's (fsync is free) and cleanup is
# instant; on a disk, deleting layer files full of scattered 4 KiB blocks can take many
# minutes (ext4 mounted with `discard` trims each extent: ~2.6 ms each on this VM).
# --only runs one part. Ports 11000-11045 on 127.0.0.1; logs and fio JSON stay in
# target/bench-snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."

size=512M
runtime=8
rounds=5
quiet=5
snapshots=100
chain=50
data=
only=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) size=256M; runtime=3; rounds=3; quiet=3 ;;
        --size) size="$2"; shift ;;
        --runtime) runtime="$2"; shift ;;
        --snapshots) snapshots="$2"; shift ;;
        --chain) chain="$2"; shift ;;
        --rounds) rounds="$2"; shift ;;
        --dir) data="$2"; shift ;;
        --only) only="$2"; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$only" in ""|latency|chain) ;; *) echo "--only takes latency or chain" >&2; exit 2 ;; esac

./scripts/setup.sh
cargo build --release -q -p shorthorn
bin=$PWD/target/release/shorthorn
work=$PWD/target/bench-snapshot
if [ -n "$data" ]; then
    data=$data/shorthorn-snapshot-bench
else
    data=/dev/shm/shorthorn-snapshot-bench
    # Part 2 holds about 3 volumes' worth per replica: two fills, 50 layers, randwrites.
    need=$(( $(numfmt --from=iec "${size%iB}" 2>/dev/null || echo 0) * 10 / 1024 ))
    avail=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
    if [ "$avail" -lt "$need" ]; then
        echo "about $((need / 1048576)) GiB of free memory needed for $size volumes on tmpfs;" \
            "use a smaller --size or --dir on a disk" >&2
        exit 1
    fi
fi
rm -rf "$work" "$data"
mkdir -p "$work" "$data"
data=$(cd "$data" && pwd)
results="$work/results.tsv"
: > "$results"
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_all
    rm -rf "$data"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# launch NAME NBD_PORT ENGINE_PORT REPLICA_BASE_PORT: a fresh 3-replica volume.
launch() {
    "$bin" launch-simple vol "$size" --replicas 3 --data-dir "$data/$1" \
        --nbd "127.0.0.1:$2" --engine-listen "127.0.0.1:$3" --replica-base-port "$4" \
        > "$work/launch-$1.log" 2>&1 &
    pids+=($!)
    wait_port "$2"
}

# fio with a time limit, so a stuck volume cannot hang the benchmark.
fio_bounded() { timeout --signal=INT --kill-after=10 $((runtime + 180)) fio "$@"; }

# Sequential 1 MiB writes over the whole volume, flushed, so reads hit data.
fill() {
    fio_bounded --name=fill --ioengine=nbd --uri="$1" --rw=write --bs=1m --iodepth=8 \
        --size="$size" --end_fsync=1 --output=/dev/null
}

printf 'load\tstart\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$results"

# ---------------------------------------------------------------------------------------
if [ "$only" != chain ]; then
echo "== 1. snapshot creation under fio randwrite 4k qd32 ($size, 3 replicas)" >&2
launch latency 11000 11001 11010
fill nbd://127.0.0.1:11000/vol
cat > "$work/snapshot-load.fio" <<'EOF'
; randwrite-4k-qd32 plus a 100 ms IOPS log with unix-epoch timestamps, so any time
; window's IOPS can be cut out of the one run; stopped with SIGINT when done.
[global]
ioengine=nbd
uri=${URI}
size=${SIZE}
time_based=1
runtime=${RUNTIME}
ramp_time=1
randrepeat=0
norandommap=1
group_reporting=1
write_iops_log=${IOPS_LOG}
log_avg_msec=100
log_unix_epoch=1

[snapshot-load]
rw=randwrite
bs=4k
iodepth=32
EOF
python3 - "$bin" 127.0.0.1:11001 nbd://127.0.0.1:11000/vol "$size" "$work" "$snapshots" \
    "$quiet" >> "$results" <<'EOF'
import json, os, signal, subprocess, sys, time
bin, engine, uri, size, work, count, quiet = sys.argv[1:]
count, quiet = int(count), float(quiet)
cli = [bin, "--engine", engine]

env = dict(os.environ, URI=uri, SIZE=size, RUNTIME="900", IOPS_LOG=f"{work}/load")
fio = subprocess.Popen(
    ["fio", "--output-format=json", f"--output={work}/load.json", f"{work}/snapshot-load.fio"],
    env=env, stdout=subprocess.DEVNULL)

def timed(args):
    if fio.poll() is not None:
        sys.exit(f"fio stopped early (exit status {fio.returncode})")
    start = time.perf_counter()
    run = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    elapsed = (time.perf_counter() - start) * 1000
    if run.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {run.stderr.decode().strip()}")
    return elapsed

try:
    time.sleep(2)  # connect + fio's ramp_time
    # The CLI's own cost: process start alone, and start + connect + a small call.
    start_only = [timed([bin, "--version"]) for _ in range(count // 4)]
    ls_empty = [timed(cli + ["ls"]) for _ in range(count // 4)]
    quiet_window = (time.time(), time.time() + quiet)
    time.sleep(quiet)
    # `ls` after every second snapshot: the CLI's own cost under the same conditions.
    ls, snaps = [], []
    begin = time.time()
    for i in range(1, count + 1):
        snaps.append(timed(cli + ["snapshot", "create", f"load-{i:03}"]))
        if i % 2 == 0:
            ls.append(timed(cli + ["ls"]))
    snap_window = (begin, time.time())
    after_window = (time.time(), time.time() + quiet)
    time.sleep(quiet)
finally:
    fio.send_signal(signal.SIGINT)
    fio.wait(timeout=60)

log = []
for line in open(f"{work}/load_iops.1.log"):
    fields = line.split(",")
    log.append((int(fields[0]) / 1000, int(fields[1])))
def iops(window):
    # Each entry is the average over the 100 ms ending at its timestamp.
    inside = [v for t, v in log if window[0] + 0.1 <= t <= window[1]]
    return (sum(inside) / len(inside), min(inside)) if inside else (float("nan"),) * 2
text = open(f"{work}/load.json").read()  # fio prints a line before the JSON on SIGINT
job = json.loads(text[text.index("{"):])["jobs"][0]["write"]

def pct(values, p):
    ordered = sorted(values)  # nearest rank: p99 of 100 calls is the second slowest
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]
def row(name, values):
    print(f"lat\t{name}\t{len(values)}\t{pct(values, 50):.1f}\t{pct(values, 99):.1f}\t"
          f"{max(values):.1f}\t{values[0]:.1f}\t{sum(v > 50 for v in values)}")
row("--version", start_only)
row("ls, no snapshots", ls_empty)
row("snapshot create", snaps)
row("ls, between snapshots", ls)
for name, window in (("before, no snapshots", quiet_window),
                     ("while snapshotting", snap_window),
                     ("after, no snapshots", after_window)):
    mean, low = iops(window)
    print(f"iops\t{name} ({window[1] - window[0]:.1f} s)\t{mean:.0f}\t{low}")
print(f"maxlat\t{job['clat_ns']['max'] / 1e6:.1f}")
EOF
stop_all
rm -rf "$data/latency"
fi

# ---------------------------------------------------------------------------------------
if [ "$only" != latency ]; then
echo "== 2. IOPS with 0 vs $chain snapshots in the chain ($size, 3 replicas)" >&2
# Two volumes side by side, "flat" (0 snapshots) and "layered": in each round the same
# job runs on both back to back (flat first in odd rounds, layered first in even ones) and
# the ratio is taken per round, so load from elsewhere on the machine hits both alike.
declare -A uris=([flat]=nbd://127.0.0.1:11020/vol [layered]=nbd://127.0.0.1:11022/vol)
launch layered 11022 11023 11040
fill "${uris[layered]}"
layer_bytes=$(( $(nbdinfo --size "${uris[layered]}") / chain / 4096 * 4096 ))
echo "   $chain times: $((layer_bytes / 1024)) KiB of random 4 KiB writes, then a snapshot" >&2
start=$(date +%s%N)
for i in $(seq -w 1 "$chain"); do
    fio_bounded --name=layer --ioengine=nbd --uri="${uris[layered]}" --rw=randwrite --bs=4k \
        --iodepth=32 --size="$size" --io_size="$layer_bytes" --randrepeat=0 --output=/dev/null
    timeout 60 "$bin" --engine 127.0.0.1:11023 snapshot create "chain-$i" > /dev/null
done
printf 'layers\t%s\n' "$(( ($(date +%s%N) - start) / 1000000 ))" >> "$results"
# What the chain now holds, from the replica itself (offline), then serve it again.
stop_all
"$bin" store info "$data/layered/vol/replica-1" --json > "$work/store-info.json"
launch layered 11022 11023 11040
launch flat 11020 11021 11030
fill "${uris[flat]}"

# Every read round before any write: the writes land in the layered volume's head and
# would hide the chain from later reads.
for job in bench/fio/randread-4k-qd32.fio bench/fio/randwrite-4k-qd32.fio; do
    name=$(basename "$job" .fio)
    for round in $(seq 1 "$rounds"); do
        order="flat layered"
        [ $((round % 2)) -eq 0 ] && order="layered flat"
        echo "   $name round $round of $rounds ($order)" >&2
        for side in $order; do
            json="$work/$side-$name-$round.json"
            URI=${uris[$side]} SIZE=$size RUNTIME=$runtime fio_bounded --output-format=json \
                --output="$json" "$job"
            python3 - "$json" "$side" "$name" "$round" >> "$results" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))["jobs"][0]
io = data["read"] if data["read"]["io_bytes"] > 0 else data["write"]
print(f"chain\t{sys.argv[2]}\t{sys.argv[3]}\t{io['iops']:.0f}\t{io['clat_ns']['mean'] / 1000:.0f}"
      f"\t{sys.argv[4]}")
EOF
        done
    done
done
stop_all
fi
printf 'load\tend\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$results"

# ---------------------------------------------------------------------------------------
python3 - "$results" "$work/store-info.json" "$size" "$runtime" "$chain" "$data" "$rounds" <<'EOF'
import json, os, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
size, runtime, chain, data, rounds = sys.argv[3:]
kind = {r[0] for r in rows}
load = {r[1]: r[2] for r in rows if r[0] == "load"}
fs = os.popen(f"stat -f -c %T {data}").read().strip() or "?"
print(f"Shorthorn snapshot benchmark: {size} volumes, 3 replicas, data on {fs} ({data}), "
      f"{os.cpu_count()} CPUs, load average {load['start']} at start, {load['end']} at end")

if "lat" in kind:
    print()
    print(f"1. snapshot creation under fio randwrite-4k-qd32 (volume filled first)")
    print(f"   {'CLI call, wall ms':<23} {'calls':>5} {'p50':>7} {'p99':>7} {'max':>7} "
          f"{'first':>7} {'>50ms':>6}")
    lat = {}
    for r in rows:
        if r[0] == "lat":
            lat[r[1]] = r
            print(f"   {r[1]:<23} {r[2]:>5} {r[3]:>7} {r[4]:>7} {r[5]:>7} {r[6]:>7} {r[7]:>6}")
    p99 = float(lat["snapshot create"][4])
    start50, ls50 = float(lat["--version"][3]), float(lat["ls, no snapshots"][3])
    print(f"   snapshot create p99 {p99:.1f} ms: {p99 - start50:.1f} ms without the process start "
          f"(--version p50), {p99 - ls50:.1f} ms without the p50 of ls with no snapshots")
    print(f"   target p99 < 50 ms (CLI included): {'PASS' if p99 < 50 else 'MISS'}")
    print(f"   {'fio IOPS':<35} {'mean':>7} {'min/100ms':>10}")
    iops = [r for r in rows if r[0] == "iops"]
    for r in iops:
        print(f"   {r[1]:<35} {r[2]:>7} {r[3]:>10}")
    maxlat = [r[1] for r in rows if r[0] == "maxlat"][0]
    during = float(iops[1][2]) / ((float(iops[0][2]) + float(iops[2][2])) / 2)
    print(f"   while snapshotting / mean of before and after: {during:.2f}; "
          f"fio's slowest write took {maxlat} ms")

if "chain" in kind:
    info = json.load(open(sys.argv[2]))
    took = [r[1] for r in rows if r[0] == "layers"][0]
    def median(values):
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    print()
    print(f"2. IOPS with 0 vs {chain} snapshots in the chain ({runtime} s per job, "
          f"{rounds} rounds; medians)")
    print(f"   {chain} layers of random 4 KiB writes (1/{chain} of the volume each) + snapshots "
          f"took {int(took) / 1000:.1f} s; replica 1 then: {info['layers_in_chain']} layers, "
          f"{info['map_extents']} map extents")
    print(f"   {'job':<20} {'IOPS 0':>8} {'IOPS ' + chain:>8} {'lat us 0':>9} "
          f"{'lat us ' + chain:>9} {'ratio':>6}  target >= 0.90")
    rounds_text = []
    for job in ("randread-4k-qd32", "randwrite-4k-qd32"):
        runs = {(r[1], r[5]): (int(r[3]), int(r[4])) for r in rows
                if r[0] == "chain" and r[2] == job}
        numbers = sorted({n for _, n in runs}, key=int)
        flat = [runs[("flat", n)] for n in numbers]
        layered = [runs[("layered", n)] for n in numbers]
        # Both sides of a round ran back to back, so the ratio is taken per round.
        ratios = [l[0] / f[0] for f, l in zip(flat, layered)]
        ratio = median(ratios)
        print(f"   {job:<20} {median([f[0] for f in flat]):>8.0f} "
              f"{median([l[0] for l in layered]):>8.0f} {median([f[1] for f in flat]):>9.0f} "
              f"{median([l[1] for l in layered]):>9.0f} {ratio:>6.2f}  "
              f"{'PASS' if ratio >= 0.9 else 'MISS'}")
        rounds_text.append(f"   {job + ' rounds':<27} " + "  ".join(
            f"{f[0]}/{l[0]}={r:.2f}" for f, l, r in zip(flat, layered, ratios)))
    print(f"   (ratio: median over rounds of IOPS {chain} / IOPS 0 measured back to back)")
    print("\n".join(rounds_text))
EOF
echo "raw fio output and logs: $work" >&2
