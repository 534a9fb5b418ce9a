#!/usr/bin/env bash
# A slow replica: fio's nbd engine against a 3-replica volume whose third replica sits
# behind delay-proxy (bench crate; userspace, this kernel has no netem), in one
# invocation:
#   healthy      every replica direct (the proxy adds 0 ms): the baseline
#   slow-kept    the third replica 200 ms slower, slow-replica ejection off
#                (--slow-replica-ratio 0): how the engine behaved before the rule
#   slow-default the same delay with the defaults (ratio 8, window 5 s)
#   stall-8s     the third replica stalled (60 s), ejection off, the default 8 s
#                request timeout
#   stall-1s     the same with --request-timeout 1s
# Each runs 4 KiB random writes at QD1, then at QD16, then 4 KiB random reads at QD16,
# and prints IOPS, mean, p99 and max latency, the ratio of IOPS to healthy, and each
# replica's mode and recent write latency as the engine saw it (`shorthorn info`).
# Usage: bench/slow-replica.sh [--quick] [--runtime 15] [--delay-ms 200]
set -euo pipefail
cd "$(dirname "$0")/.."

size=256M
runtime=15
delay=200
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) size=64M; runtime=6 ;;
        --runtime) runtime="$2"; shift ;;
        --delay-ms) delay="$2"; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

./scripts/setup.sh
cargo build --release -q -p shorthorn -p shorthorn-bench --bin shorthorn --bin delay-proxy
bin=$PWD/target/release/shorthorn
proxy=$PWD/target/release/delay-proxy
work=$PWD/target/bench-slow
rm -rf "$work"
mkdir -p "$work"
results="$work/results.tsv"
: > "$results"
source bench/lib.sh
trap 'stop_all; rm -rf "$work/data"' EXIT

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# Ports: replicas 11000/1, 11002/3, 11004/5; the proxy 11006 (data, delayed) and 11007
# (control); engine 11008; NBD 11009.
run_config() {   # run_config NAME DELAY_MS ENGINE_ARGS...
    local name=$1 ms=$2
    shift 2
    echo "== $name (third replica +${ms} ms; engine $*)" >&2
    local data=$work/data/$name
    mkdir -p "$data"
    rm -f "$work/delay-ms"
    for i in 0 1 2; do
        "$bin" replica "$data/r$i" --size "$size" --volume vol --no-unix-socket \
            --listen "127.0.0.1:$((11000 + 2 * i))" > "$work/$name-r$i.log" 2>&1 &
        procs[r$i]=$!
        wait_port $((11001 + 2 * i))
    done
    "$proxy" --listen 127.0.0.1:11006 --target 127.0.0.1:11004 --delay-ms 0 \
        --delay-file "$work/delay-ms" > /dev/null 2> "$work/$name-proxy.log" &
    procs[proxy-data]=$!
    "$proxy" --listen 127.0.0.1:11007 --target 127.0.0.1:11005 --delay-ms 0 \
        > /dev/null 2>> "$work/$name-proxy.log" &
    procs[proxy-control]=$!
    wait_port 11006
    wait_port 11007
    "$bin" engine vol --size "$size" --listen 127.0.0.1:11008 --frontend nbd \
        --frontend-listen 127.0.0.1:11009 --replica tcp://127.0.0.1:11000 \
        --replica tcp://127.0.0.1:11002 --replica tcp://127.0.0.1:11006 "$@" \
        > "$work/$name-engine.log" 2>&1 &
    procs[engine]=$!
    wait_port 11009
    local uri=nbd://127.0.0.1:11009/vol
    # Fill once so reads hit data, then make the third replica slow.
    fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1m --iodepth=8 \
        --size="$size" --output=/dev/null
    echo "$ms" > "$work/delay-ms"
    for job in randwrite-qd1 randwrite-qd16 randread-qd16; do
        local rw=${job%-*} depth=${job#*-qd}
        fio --name="$job" --ioengine=nbd --uri="$uri" --rw="$rw" --bs=4k \
            --iodepth="$depth" --size="$size" --time_based --runtime="$runtime" \
            --randrepeat=0 --output-format=json --output="$work/$name-$job.json"
        local replicas
        replicas=$("$bin" --engine 127.0.0.1:11008 info | sed -n 's/^  tcp:\/\/127.0.0.1:\(1100[0-9]\) /\1 /p' \
            | tr '\n' ';')
        python3 - "$work/$name-$job.json" "$name" "$job" "$replicas" >> "$results" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))["jobs"][0]
side = data["read"] if data["read"]["io_bytes"] > 0 else data["write"]
clat = side["clat_ns"]
p99 = clat["percentile"].get("99.000000", 0) / 1e6
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{side['iops']:.0f}\t{clat['mean'] / 1e6:.2f}\t{p99:.2f}\t{clat['max'] / 1e6:.0f}\t{sys.argv[4]}")
EOF
    done
    rm -f "$work/delay-ms"
    stop engine
    stop proxy-data
    stop proxy-control
    for i in 0 1 2; do stop "r$i"; done
    rm -rf "$data"
}

run_config healthy 0
run_config slow-kept "$delay" --slow-replica-ratio 0
run_config slow-default "$delay"
run_config stall-8s 60000 --slow-replica-ratio 0
run_config stall-1s 60000 --slow-replica-ratio 0 --request-timeout 1s

python3 - "$results" <<'EOF'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
base = {r[1]: float(r[2]) for r in rows if r[0] == "healthy"}
print(f"{'config':<13} {'job':<15} {'IOPS':>7} {'ratio':>6} {'avg ms':>8} {'p99 ms':>8} {'max ms':>7}  replicas after (port mode, recent write latency)")
for config, job, iops, avg, p99, peak, replicas in rows:
    ratio = float(iops) / base[job] if base.get(job) else float("nan")
    print(f"{config:<13} {job:<15} {iops:>7} {ratio:>6.2f} {avg:>8} {p99:>8} {peak:>7}  {replicas}")
EOF
echo "raw fio output: $work/*.json; logs: $work/*.log" >&2
