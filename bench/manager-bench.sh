#!/usr/bin/env bash
# Manager benchmark (issue 7): 100 volumes on one node run by `shorthorn up` (manager REST
# API + embedded state store + agent in one process; one `shorthorn replica` process per
# replica and one `shorthorn engine` process per attached volume, its children).
#   1. create + attach: for i in 1..100, one at a time, `volume create vol$i --size 1G
#      --replicas 1` then `volume attach vol$i` (which returns once the engine serves, with
#      its NBD URI). Time per volume = from the start of `create` to the return of
#      `attach`: mean, p50, p95 (nearest rank), max, and the total for all. Also create
#      and attach alone, and the mean of the first 10 against the last 10 volumes (does a
#      volume cost more when there are more of them?). No target.
#   2. `volume ls` with every volume attached: 5 runs, median (no target).
#   3. memory after every volume is attached and the node has been idle 10 s: VmRSS
#      (/proc/PID/status) of the `shorthorn up` process (manager + agent), and of every
#      `shorthorn engine` and `shorthorn replica` process: min / median / max per kind,
#      with RssAnon, RssFile (mostly the binary's pages, shared by all the processes),
#      Pss (smaps_rollup) and threads. Targets: an idle engine < 20 MiB RSS and an idle
#      replica < 20 MiB RSS, judged on the median of each kind (the max is printed beside
#      it, and whether it is under 20 MiB too). Also: RSS of `up` before the first volume
#      and after the last (growth per volume), and the CPU seconds every process used
#      during the 10 idle seconds.
#   4. stop: SIGTERM to `up`; time until it exits; then no engine or replica process may
#      be left (the benchmark fails, loudly, if one is).
# Usage: bench/manager-bench.sh [--quick] [--count N] [--dir DIR] [--no-build]
# --quick: 10 volumes. --count N: N volumes. --no-build: use target/release/shorthorn as
# it is (no cargo build).
# Data in DIR/shorthorn-manager-bench (default DIR /var/tmp: a real disk, not tmpfs),
# removed at the end, also on failure or Ctrl-C, after every process the benchmark started
# is stopped. Logs and command output stay in target/bench-manager. API on
# 127.0.0.1:11300; `up` gives the engines and replicas ports in 20000-30000 itself.
# `up` runs with minimal_available_percentage 0: with the default (25) the scheduler
# refuses every replica on a disk that is more than 75% full.
set -euo pipefail
cmdline="bench/manager-bench.sh${*:+ $*}"
cd "$(dirname "$0")/.."

count=100
parent=/var/tmp
build=yes
idle=10
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) count=10 ;;
        --count) count="$2"; shift ;;
        --dir) parent="$2"; shift ;;
        --no-build) build=no ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$count" -ge 1 ] 2>/dev/null || { echo "--count must be a positive number" >&2; exit 2; }

echo "\$ $cmdline"
./scripts/setup.sh
[ "$build" = no ] || cargo build --release -q -p shorthorn
work=$PWD/target/bench-manager
data=$parent/shorthorn-manager-bench
listen=127.0.0.1:11300
unset SHORTHORN_URL SHORTHORN_ENGINE

rm -rf "$work" "$data"
mkdir -p "$work" "$data"
# Our own copy: a build elsewhere must not swap the binary between two process starts.
# Synced, so that its pages in the page cache are clean, as for an installed binary (a
# just-written file's mapped pages count as Shared_Dirty).
cp target/release/shorthorn "$work/shorthorn"
sync "$work/shorthorn"
bin=$work/shorthorn
results="$work/results.tsv"
: > "$results"
up_pid=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

# Every running process started from our copy of the binary (`up` and its engines and
# replicas; nothing else runs it), as "PID ARGS" lines.
ours() {
    local dir pid args
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        args=$( { tr '\0' ' ' < "$dir/cmdline"; } 2>/dev/null) || continue
        case "$args" in "$bin "*) echo "$pid $args" ;; esac
    done
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid left
    if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
        # `up` stops its engines (after a flush) and replicas.
        kill -TERM "$up_pid" 2>/dev/null || true
        for _ in $(seq 1 600); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$up_pid" 2>/dev/null || true
        wait "$up_pid" 2>/dev/null || true
    fi
    # Whatever `up` left behind: it is ours (started from our copy of the binary).
    left=$(ours | cut -d' ' -f1)
    if [ -n "$left" ]; then
        echo "cleanup: killing $(echo "$left" | wc -l) leftover process(es) of $bin" >&2
        for pid in $left; do kill -TERM "$pid" 2>/dev/null || true; done
        sleep 2
        for pid in $(ours | cut -d' ' -f1); do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    rm -f "$work/shorthorn"
    remove_data "$data"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The CLI, with a time limit, so a stuck volume cannot hang the benchmark.
cli() { timeout --foreground 300 "$bin" "$@" --data-dir "$data"; }
# up_gone: if `up` is no longer running, says so (with what its log says about why).
up_gone() {
    kill -0 "$up_pid" 2>/dev/null && return 0
    echo "shorthorn up (pid $up_pid) is no longer running; its log says:" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$work/up.log" |
        grep -E 'shorthorn::daemon: (terminated|interrupted)|WARN|ERROR|panick' | head -5 >&2 || true
    echo "(a 'terminated; shutting down' line: someone sent it SIGTERM)" >&2
}

hz=$(getconf CLK_TCK)
# proc_line PID KIND: "KIND PID VmRSS RssAnon RssFile VmHWM Threads Pss CPU-seconds
# write_bytes" (kB, except CPU seconds and the bytes written to disk, /proc/PID/io).
proc_line() {
    local pid=$1 kind=$2 status pss cpu written
    status=$(awk '/^(VmRSS|RssAnon|RssFile|VmHWM|Threads):/ { v[$1] = $2 }
        END { print v["VmRSS:"], v["RssAnon:"], v["RssFile:"], v["VmHWM:"], v["Threads:"] }' \
        "/proc/$pid/status") || return 0
    pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    cpu=$(awk -v hz="$hz" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$pid/stat") || return 0
    written=$(awk '/^write_bytes:/ { print $2 }' "/proc/$pid/io" 2>/dev/null || echo 0)
    echo "$kind $pid $status ${pss:-0} $cpu ${written:-0}"
}
# snapshot FILE: proc_line of `up` and of each of its engine and replica children.
snapshot() {
    local pid args
    {
        proc_line "$up_pid" up
        for pid in $(pgrep -P "$up_pid"); do
            args=$( { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null) || continue
            case "$args" in
                "$bin engine "*) proc_line "$pid" engine ;;
                "$bin replica "*) proc_line "$pid" replica ;;
                *) proc_line "$pid" other ;;
            esac
        done
    } > "$1"
}

fs_type=$(findmnt -n -o FSTYPE --target "$data" || stat -f -c %T "$data")
put load.start "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------
echo "== setup: shorthorn up on $listen, data in $data" >&2
# setsid: Ctrl-C reaches only this script and its foreground command; the cleanup then
# stops `up`, which stops its engines and replicas.
setsid "$bin" up --data-dir "$data" --listen "$listen" --node bench \
    > "$work/up.log" 2>&1 < /dev/null &
up_pid=$!
for i in $(seq 1 300); do
    grep -q '^shorthorn is up' "$work/up.log" 2>/dev/null && break
    kill -0 "$up_pid" 2>/dev/null || { echo "shorthorn up exited; see $work/up.log" >&2; tail -5 "$work/up.log" >&2; exit 1; }
    [ "$i" -lt 300 ] || { echo "shorthorn up not ready after 30 s; see $work/up.log" >&2; exit 1; }
    sleep 0.1
done
cli setting set minimal_available_percentage 0 > "$work/setting.out"
sleep 1
snapshot "$work/mem-empty.txt"

# ---------------------------------------------------------------------------------------
echo "== 1. create + attach $count volumes of 1G, 1 replica each, one at a time" >&2
: > "$work/times.tsv"   # i create-seconds attach-seconds total-seconds start-epoch
t_all=$(now)
for i in $(seq 1 "$count"); do
    t0=$(now)
    if ! cli volume create "vol$i" --size 1G --replicas 1 > "$work/create.out" 2> "$work/create.err"; then
        echo "volume create vol$i failed:" >&2
        cat "$work/create.out" "$work/create.err" >&2
        up_gone
        exit 1
    fi
    t1=$(now)
    if ! cli volume attach "vol$i" > "$work/attach.out" 2> "$work/attach.err"; then
        echo "volume attach vol$i failed (after $(elapsed "$t1" "$(now)") s):" >&2
        cat "$work/attach.out" "$work/attach.err" >&2
        up_gone
        cli volume get "vol$i" >&2 || true
        exit 1
    fi
    t2=$(now)
    grep -q '^nbd://' "$work/attach.out" ||
        { echo "volume attach vol$i printed no NBD URI:" >&2; cat "$work/attach.out" >&2; exit 1; }
    printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$(elapsed "$t0" "$t1")" "$(elapsed "$t1" "$t2")" \
        "$(elapsed "$t0" "$t2")" "$t0" >> "$work/times.tsv"
    if [ $((i % 10)) -eq 0 ] || [ "$i" -eq "$count" ]; then
        echo "   $i volumes attached ($(elapsed "$t_all" "$(now)") s)" >&2
    fi
done
put total.seconds "$(elapsed "$t_all" "$(now)")"

# ---------------------------------------------------------------------------------------
echo "== 2. volume ls with $count volumes (5 runs)" >&2
ls_times=()
for run in 1 2 3 4 5; do
    t0=$(now)
    cli volume ls > "$work/ls.out"
    ls_times+=("$(elapsed "$t0" "$(now)")")
done
put ls.seconds "${ls_times[*]}"
attached=$(awk 'NR > 1 && $2 == "attached" && $3 == "healthy"' "$work/ls.out" | wc -l)
put ls.attached_healthy "$attached"
if [ "$attached" -ne "$count" ]; then
    echo "volume ls shows $attached of $count volumes attached and healthy:" >&2
    cat "$work/ls.out" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------
echo "== 3. memory after ${idle} s idle" >&2
snapshot "$work/mem-idle0.txt"
sleep "$idle"
snapshot "$work/mem-idle.txt"
put idle.seconds "$idle"
engines=$(grep -c '^engine ' "$work/mem-idle.txt" || true)
replicas=$(grep -c '^replica ' "$work/mem-idle.txt" || true)
if [ "$engines" -ne "$count" ] || [ "$replicas" -ne "$count" ]; then
    echo "expected $count engine and $count replica processes under up, found $engines and $replicas" >&2
    exit 1
fi
put load.end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------
echo "== 4. stop: SIGTERM to shorthorn up" >&2
children=$(pgrep -P "$up_pid" | tr '\n' ' ')
t0=$(now)
kill -TERM "$up_pid"
stopped=no
for _ in $(seq 1 1200); do
    kill -0 "$up_pid" 2>/dev/null || { stopped=yes; break; }
    sleep 0.05
done
put stop.seconds "$(elapsed "$t0" "$(now)")"
put stop.exited "$stopped"
if [ "$stopped" = yes ]; then
    status=0
    wait "$up_pid" || status=$?
    put stop.status "$status"
    up_pid=
else
    put stop.status "still running after 60 s"
fi
sleep 1   # children that exit on their own (stdin EOF) get a moment
left=$(ours)
for pid in $children; do   # up's children, whatever their binary
    if kill -0 "$pid" 2>/dev/null && ! grep -q "^$pid " <<< "$left"; then
        left+=$'\n'"$pid $( { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null || true)"
    fi
done
left=$(sed '/^$/d' <<< "$left")
put stop.left "$(sed '/^$/d' <<< "$left" | wc -l)"

# ---------------------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
[ -z "$(git status --porcelain -- crates 2>/dev/null)" ] || commit="$commit+local changes"
built="built $(date -u -r target/release/shorthorn '+%Y-%m-%d %H:%M UTC')"
python3 - "$results" "$work" "$count" "$data" "$fs_type" "$commit" "$built" <<'EOF'
import math, os, statistics, sys
results, work, count, data, fs, commit, built = sys.argv[1:]
count = int(count)
r = {}
for line in open(results):
    key, value = line.rstrip("\n").split("\t")
    r[key] = value
verdict = lambda ok: "PASS" if ok else "MISS"
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
print(f"Shorthorn manager benchmark: {count} volumes of 1G (1 replica each) on one node "
      f"(shorthorn up), commit {commit} (binary {built}); data on {fs} ({data}); "
      f"{os.cpu_count()} CPUs, {mem:.0f} GiB RAM; load average {r['load.start']} at start, "
      f"{r['load.end']} at end")

def p(values, q):   # nearest-rank percentile
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]
def summary(values):
    return (f"mean {statistics.mean(values):.3f}  p50 {p(values, 50):.3f}  "
            f"p95 {p(values, 95):.3f}  max {max(values):.3f}")

rows = [line.split("\t") for line in open(f"{work}/times.tsv")]
create = [float(x[1]) for x in rows]
attach = [float(x[2]) for x in rows]
total = [float(x[3]) for x in rows]
print()
print(f"1. create + attach, {count} volumes one at a time (seconds per volume, from the start "
      f"of `volume create` to the return of `volume attach`)")
print(f"   create + attach: {summary(total)}")
print(f"   create alone:    {summary(create)}")
print(f"   attach alone:    {summary(attach)}")
slowest = max(rows, key=lambda x: float(x[3]))
print(f"   slowest: vol{slowest[0]} ({float(slowest[1]):.3f} s create + {float(slowest[2]):.3f} s attach)")
if count >= 20:
    first, last = total[:10], total[-10:]
    print(f"   mean of the first 10 volumes {statistics.mean(first):.3f} s, of the last 10 "
          f"{statistics.mean(last):.3f} s (x{statistics.mean(last) / statistics.mean(first):.2f}); "
          f"by tens: " + " ".join(f"{statistics.mean(total[k:k + 10]):.2f}"
                                  for k in range(0, len(total), 10)))
print(f"   total for {count} volumes: {float(r['total.seconds']):.1f} s")
# When the agent had the engine serving, from up's log ("started name=volN-e what=engine",
# logged once the engine process reports ready): what `attach` returns after, once its
# next poll of the volume sees the endpoint.
import datetime, re
started = {}
for line in open(f"{work}/up.log", errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.match(r'(\S+Z) .*agent: started name="vol(\d+)-e" what="engine"', line)
    if m:
        started[m.group(2)] = datetime.datetime.fromisoformat(m.group(1)).timestamp()
serving = [started[x[0]] - float(x[4]) for x in rows if x[0] in started]
if len(serving) == len(rows):
    print(f"   engine serving (up's log) after the start of create: {summary(serving)}")
else:
    print(f"   (up's log has an engine start for {len(serving)} of {len(rows)} volumes)")

print()
ls = [float(x) for x in r["ls.seconds"].split()]
print(f"2. volume ls with {count} volumes attached: median {statistics.median(ls):.3f} s of "
      f"{len(ls)} runs (min {min(ls):.3f}, max {max(ls):.3f}); attached and healthy: "
      f"{r['ls.attached_healthy']}/{count}")

def load(name):
    procs = {}
    for line in open(f"{work}/{name}"):
        kind, pid, rss, anon, file, hwm, threads, pss, cpu, written = line.split()
        procs[(kind, pid)] = dict(kind=kind, rss=int(rss), anon=int(anon), file=int(file),
                                  hwm=int(hwm), threads=int(threads), pss=int(pss),
                                  cpu=float(cpu), written=int(written))
    return procs
empty, idle0, idle = load("mem-empty.txt"), load("mem-idle0.txt"), load("mem-idle.txt")
mib = lambda kb: kb / 1024
print()
print(f"3. memory after {r['idle.seconds']} s idle, {count} volumes attached (MiB; VmRSS, "
      f"RssAnon, RssFile from /proc/PID/status, Pss from smaps_rollup)")
print(f"   {'process':<20} {'n':>4} {'RSS min':>8} {'median':>7} {'max':>6}   "
      f"{'Anon med':>8} {'File med':>8} {'Pss med':>7} {'threads':>7}")
kinds = {}
for kind, label in (("up", "up (manager+agent)"), ("engine", "engine"), ("replica", "replica")):
    ps = [v for v in idle.values() if v["kind"] == kind]
    kinds[kind] = ps
    rss = [v["rss"] for v in ps]
    med = lambda key: statistics.median(v[key] for v in ps)
    print(f"   {label:<20} {len(ps):>4} {mib(min(rss)):>8.1f} {mib(statistics.median(rss)):>7.1f} "
          f"{mib(max(rss)):>6.1f}   {mib(med('anon')):>8.1f} {mib(med('file')):>8.1f} "
          f"{mib(med('pss')):>7.1f} {med('threads'):>7.0f}")
others = [v for v in idle.values() if v["kind"] == "other"]
if others:
    print(f"   (and {len(others)} other child process(es) of up)")
for kind in ("engine", "replica"):
    rss = [v["rss"] for v in kinds[kind]]
    median, top = mib(statistics.median(rss)), mib(max(rss))
    print(f"   idle {kind} < 20 MiB RSS (judged on the median): median {median:.1f} MiB "
          f"{verdict(median < 20)}; max {top:.1f} MiB ({'under' if top < 20 else 'OVER'} 20 MiB)")
up_empty = [v for v in empty.values() if v["kind"] == "up"][0]
up_idle = kinds["up"][0]
growth = (up_idle["rss"] - up_empty["rss"]) / count
print(f"   up: RSS {mib(up_empty['rss']):.1f} MiB before the first volume, "
      f"{mib(up_idle['rss']):.1f} MiB with {count} ({growth:+.0f} KiB per volume); "
      f"peak (VmHWM) {mib(up_idle['hwm']):.1f} MiB; RssAnon {mib(up_empty['anon']):.1f} -> "
      f"{mib(up_idle['anon']):.1f} MiB")
rss_sum = sum(v["rss"] for v in idle.values())
pss_sum = sum(v["pss"] for v in idle.values())
print(f"   all {len(idle)} processes: sum of RSS {mib(rss_sum):.0f} MiB, sum of Pss "
      f"{mib(pss_sum):.0f} MiB (Pss divides the shared pages, the binary's among them, "
      f"between the processes mapping them)")
cpu = {"up": 0.0, "engine": 0.0, "replica": 0.0, "other": 0.0}
written = dict(cpu)
for key, v in idle.items():
    if key in idle0:
        cpu[v["kind"]] += v["cpu"] - idle0[key]["cpu"]
        written[v["kind"]] += v["written"] - idle0[key]["written"]
seconds = float(r["idle.seconds"])
print(f"   CPU seconds used in the {r['idle.seconds']} idle seconds: up {cpu['up']:.2f}, "
      f"engines {cpu['engine']:.2f} (all), replicas {cpu['replica']:.2f} (all)")
print(f"   written to disk in them (/proc/PID/io write_bytes): up {written['up'] / seconds / 1024:.0f} KiB/s, "
      f"engines {written['engine'] / seconds / 1024:.0f} KiB/s, "
      f"replicas {written['replica'] / seconds / 1024:.0f} KiB/s")

print()
left = int(r["stop.left"])
print(f"4. stop: SIGTERM to up; exited: {r['stop.exited']} after {float(r['stop.seconds']):.1f} s "
      f"(status {r['stop.status']}); engine/replica processes left: {left} "
      f"{verdict(left == 0 and r['stop.exited'] == 'yes')}")
EOF
if [ -n "$left" ]; then
    echo "!!! FAILED: processes left after shorthorn up stopped (SIGTERM):" >&2
    echo "$left" | cut -c1-300 >&2
    exit 1
fi
[ "$stopped" = yes ] || { echo "!!! FAILED: shorthorn up still running 60 s after SIGTERM" >&2; exit 1; }
if grep -q 'WARN\|ERROR' "$work/up.log"; then
    echo "warnings and errors in up's log:" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$work/up.log" | grep 'WARN\|ERROR' | cut -c1-300 | head -20 >&2
fi
echo "logs and command output: $work" >&2
