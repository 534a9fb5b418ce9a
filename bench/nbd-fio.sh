#!/usr/bin/env bash
# Volume benchmark: fio's nbd engine runs kbench-shaped jobs (bench/fio/*.fio) against
#   1. qemu-nbd serving a raw file  (the yardstick: one unreplicated userspace NBD server)
#   2. a 1-replica Shorthorn volume
#   3. a 3-replica Shorthorn volume
# all on the same disk, in one invocation, and prints each result with its ratio to
# qemu-nbd. Usage: bench/nbd-fio.sh [--quick] [--size 1G] [--runtime 10]
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G
runtime=10
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) size=256M; runtime=3 ;;
        --size) size="$2"; shift ;;
        --runtime) runtime="$2"; shift ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

./scripts/setup.sh
cargo build --release -q -p shorthorn
bin=$PWD/target/release/shorthorn
work=$PWD/target/bench-nbd
rm -rf "$work"
mkdir -p "$work"
results="$work/results.tsv"
: > "$results"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work/data" "$work/raw.img"
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

# Runs every job against URI; TARGET names the row.
run_jobs() {
    local target=$1 uri=$2
    # Fill the volume once so reads hit data, not holes.
    URI=$uri SIZE=$size fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1m \
        --iodepth=8 --size="$size" --output=/dev/null
    for job in bench/fio/*.fio; do
        local name json
        name=$(basename "$job" .fio)
        json="$work/$target-$name.json"
        URI=$uri SIZE=$size RUNTIME=$runtime fio --output-format=json --output="$json" "$job"
        python3 - "$json" "$target" "$name" >> "$results" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))["jobs"][0]
side = data["read"] if data["read"]["io_bytes"] > 0 else data["write"]
lat_us = side["clat_ns"]["mean"] / 1000
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{side['iops']:.0f}\t{side['bw'] / 1024:.1f}\t{lat_us:.0f}")
EOF
    done
}

stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

echo "== qemu-nbd on a raw file ($size)" >&2
truncate -s "$size" "$work/raw.img"
qemu-nbd -f raw -x vol -p 10900 -b 127.0.0.1 --persistent --cache=writeback \
    --aio=threads "$work/raw.img" &
pids+=($!)
wait_port 10900
run_jobs qemu-nbd "nbd://127.0.0.1:10900/vol"
stop_all

for replicas in 1 3; do
    echo "== Shorthorn volume, $replicas replica(s)" >&2
    "$bin" launch-simple vol "$size" --replicas "$replicas" --data-dir "$work/data/r$replicas" \
        --nbd 127.0.0.1:10910 --engine-listen 127.0.0.1:10911 --replica-base-port 10920 \
        > "$work/launch-$replicas.log" 2>&1 &
    pids+=($!)
    wait_port 10910
    run_jobs "shorthorn-${replicas}r" "nbd://127.0.0.1:10910/vol"
    stop_all
done

python3 - "$results" <<'EOF'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
base = {r[1]: float(r[2]) for r in rows if r[0] == "qemu-nbd"}
print(f"{'target':<14} {'job':<20} {'IOPS':>9} {'MiB/s':>8} {'lat us':>8} {'ratio':>6}")
for target, job, iops, mib, lat in rows:
    ratio = float(iops) / base[job] if base.get(job) else float("nan")
    print(f"{target:<14} {job:<20} {iops:>9} {mib:>8} {lat:>8} {ratio:>6.2f}")
EOF
echo "raw fio output: $work/*.json" >&2
