#!/usr/bin/env bash
# Backup and restore benchmark (issue 6): `shorthorn backup create` and `backup restore`
# against a local S3-compatible server (s3s-fs on loopback), each figure against the plain
# `aws s3 cp` client measured in the same run on the same data:
#   1. full backup: a 4 GiB volume (1 replica) gets 2 GiB of data (fio sequential 1 MiB
#      writes over its first 2 GiB, 50% compressible: --buffer_compress_percentage=50
#      --refill_buffers), then `snapshot create s1`. Baseline: those 2 GiB, exported over
#      NBD into one regular file, uploaded with `aws s3 cp FILE s3://bucket/baseline/obj`
#      (awscli defaults: multipart, 10 threads, no compression). Then `backup create s1`
#      (defaults: lz4, --parallel 8). Each is timed from cold page cache (sync +
#      drop_caches) up to a final `sync` included. Ratio aws seconds / backup seconds;
#      target >= 1.0. Also prints the bytes the backup uploaded (`backup inspect`:
#      stats.uploaded_bytes, after compression) against the data size.
#   2. incremental after 1% changed: 1% of the data (20 MiB; --quick: 1 write) is
#      rewritten as 2 MiB writes at distinct random 2 MiB-aligned offsets inside the data
#      (fio randwrite bs=2M, same 50%-compressible buffers), then `snapshot create s2` and
#      `backup create s2` (timed as in 1). The changed-data shape matters: the backup
#      block size is 2 MiB, so each write changes exactly one block; scattered 4 KiB
#      writes would touch up to 512x more blocks. Ratio stats.uploaded_bytes / data
#      bytes; target <= 0.02. Also prints stats.read_bytes (what was read from s2).
#   3. restore: from cold cache, `aws s3 cp s3://bucket/baseline/obj FILE` + sync against
#      `backup restore URL-of-s1 --to DIR` (a new replica directory) + sync. Ratio aws
#      seconds / restore seconds; target >= 0.8. Verified: `store export DIR IMG`; the
#      first 2 GiB of IMG must hash like the baseline file, the rest must read as zeros,
#      and the downloaded object must hash like the baseline file too.
#   Check (no target): `backup restore` of s2 into the same directory (an in-place
#   update) must give the volume's content after the writes of part 2.
# For each timed step it prints the CPU seconds used by the client (aws or shorthorn,
# /usr/bin/time), s3s-fs, and the volume's engine and replica processes.
# Usage: bench/backup-bench.sh [--quick] [--dir DIR] [--no-build]
# --quick: 1 GiB volume, 256 MiB of data (1% rounds up to one 2 MiB write).
# --no-build: use target/release/shorthorn as it is (no cargo build).
# Data in DIR/shorthorn-backup-bench (default DIR /var/tmp: a real disk, not tmpfs):
# volume, S3 objects, baseline files and restored directory; removed at the end, also on
# failure or Ctrl-C. Logs and command output stay in target/bench-backup. Must run as
# root (drop_caches). Ports 11200-11299 on 127.0.0.1: s3s-fs 11200, replica 11210-11211,
# engine 11250, NBD 11251.
set -euo pipefail
cmdline="bench/backup-bench.sh${*:+ $*}"
cd "$(dirname "$0")/.."

size=4G
data_size=2G
parent=/var/tmp
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) size=1G; data_size=256M ;;
        --dir) parent="$2"; shift ;;
        --no-build) build=no ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
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
[ "$build" = no ] || cargo build --release -q -p shorthorn
s3s_fs=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
[ -x "$s3s_fs" ] || { echo "s3s-fs not found (scripts/setup.sh installs it)" >&2; exit 1; }
if ! command -v aws >/dev/null 2>&1; then
    echo "installing awscli (the baseline client)" >&2
    python3 -m pip install --quiet awscli
fi

work=$PWD/target/bench-backup
data=$parent/shorthorn-backup-bench
vol_bytes=$(numfmt --from=iec "$size")
data_bytes=$(numfmt --from=iec "$data_size")
block=$((2 * 1048576))
dirty_writes=$(( data_bytes / 100 / block ))   # 1% of the data in 2 MiB writes, at least 1
[ "$dirty_writes" -ge 1 ] || dirty_writes=1
s3_port=11200
endpoint=http://127.0.0.1:$s3_port
engine=127.0.0.1:11250
uri=nbd://127.0.0.1:11251/vol
target=s3://bucket@us-east-1/bench

export AWS_ACCESS_KEY_ID=shorthorn-bench
export AWS_SECRET_ACCESS_KEY=shorthorn-bench-secret
export AWS_ENDPOINT_URL=$endpoint
export AWS_DEFAULT_REGION=us-east-1
unset AWS_ENDPOINTS AWS_PROFILE SHORTHORN_ENGINE

rm -rf "$work" "$data"
mkdir -p "$work" "$data/s3/bucket"
# Our own copy: a build elsewhere must not swap the binary between two commands.
cp target/release/shorthorn "$work/shorthorn"
bin=$work/shorthorn
results="$work/results.tsv"
: > "$results"
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # The volume first (launch-simple flushes the engine, then stops the replica).
    stop volume
    stop_all
    rm -f "$work/shorthorn"
    remove_data "$data"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# fio with a time limit, so a stuck volume cannot hang the benchmark.
fio_bounded() { timeout --foreground --signal=INT --kill-after=10 900 fio "$@"; }
# Commands, with a time limit (as arrays: `timed` runs them under /usr/bin/time).
cli=(timeout --foreground 1800 "$bin" --engine "$engine")
aws_cp=(timeout --foreground 1800 aws --endpoint-url "$endpoint" --only-show-errors s3 cp)
cli() { "${cli[@]}" "$@"; }

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

# CPU seconds (user + system) used so far by s3s-fs and the volume's processes,
# as "name=seconds …".
hz=$(getconf CLK_TCK)
declare -A cpu_pids=()
cpu_seconds() {
    local name
    for name in "${!cpu_pids[@]}"; do
        awk -v n="$name" -v hz="$hz" '{ printf "%s=%.2f ", n, ($14 + $15) / hz }' \
            "/proc/${cpu_pids[$name]}/stat" 2>/dev/null || true
    done
}

# timed TAG COMMAND…: runs COMMAND from cold cache, then syncs; records TAG.seconds
# (wall clock, sync included), TAG.client (the command's user + system CPU seconds) and
# TAG.cpu0/TAG.cpu1 (cpu_seconds before and after). Output in $work/TAG.{out,err}.
timed() {
    local tag=$1 t0 t1
    shift
    cold
    put "$tag.cpu0" "$(cpu_seconds)"
    t0=$(now)
    if ! /usr/bin/time -f '%U %S' -o "$work/$tag.time" "$@" > "$work/$tag.out" 2> "$work/$tag.err"; then
        echo "$tag failed: $*" >&2
        tail -5 "$work/$tag.err" >&2
        return 1
    fi
    sync
    t1=$(now)
    put "$tag.cpu1" "$(cpu_seconds)"
    put "$tag.seconds" "$(elapsed "$t0" "$t1")"
    put "$tag.client" "$(awk '{ printf "%.2f", $1 + $2 }' "$work/$tag.time")"
}

# stats TAG URL: records TAG.url and TAG.<field> for each of `backup inspect URL`'s stats.
stats() {
    cli backup inspect "$2" > "$work/$1.json"
    put "$1.url" "$2"
    python3 - "$work/$1.json" "$1" >> "$results" <<'EOF'
import json, sys
record = json.load(open(sys.argv[1]))
for key, value in record["stats"].items():
    print(f"{sys.argv[2]}.{key}\t{value}")
print(f"{sys.argv[2]}.blocks\t{record['blocks']}")
print(f"{sys.argv[2]}.base\t{record['base']}")
EOF
}

# export_data FILE: the volume's first $data_bytes, over NBD, as one regular file.
export_data() {
    nbdcopy "$uri" "$1"
    truncate -s "$data_bytes" "$1"
}
# check_image IMG SHA256 WHAT: the first $data_bytes of the raw volume image IMG hash to
# SHA256 and the rest reads as zeros.
check_image() {
    local got
    [ "$(stat -c %s "$1")" -eq "$vol_bytes" ] || { echo "$3: $1 is not $vol_bytes bytes" >&2; return 1; }
    got=$(head -c "$data_bytes" "$1" | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$2" ]; then
        echo "$3: WRONG CONTENT: first $data_size of $1 hash $got, expected $2" >&2
        return 1
    fi
    if ! cmp -s -i "$data_bytes:0" -n "$((vol_bytes - data_bytes))" "$1" /dev/zero; then
        echo "$3: WRONG CONTENT: $1 is not zero after the first $data_size" >&2
        return 1
    fi
}

fs_type=$(findmnt -n -o FSTYPE --target "$data" || stat -f -c %T "$data")
put load.start "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------
echo "== setup: s3s-fs on $endpoint, $size volume with 1 replica" >&2
setsid "$s3s_fs" --host 127.0.0.1 --port "$s3_port" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$data/s3" > "$work/s3s-fs.log" 2>&1 < /dev/null &
procs[s3]=$!
cpu_pids[s3s-fs]=$!
for i in $(seq 1 200); do
    (exec 3<> "/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && break
    kill -0 "${procs[s3]}" 2>/dev/null || { echo "s3s-fs exited; see $work/s3s-fs.log" >&2; exit 1; }
    [ "$i" -lt 200 ] || { echo "s3s-fs does not accept connections after 20 s" >&2; exit 1; }
    sleep 0.1
done
# setsid: Ctrl-C reaches only this script and its foreground command; the cleanup stops
# launch-simple, which stops the engine (after a flush) and the replica.
setsid "$bin" launch-simple vol "$size" --replicas 1 --data-dir "$data/volumes" \
    --nbd 127.0.0.1:11251 --engine-listen "$engine" --replica-base-port 11210 \
    > "$work/launch.log" 2>&1 < /dev/null &
procs[volume]=$!
wait_line "$work/launch.log" "volume vol .* ready at" "$!"
for pid in $(pgrep -P "${procs[volume]}"); do
    case "$(tr '\0' ' ' < "/proc/$pid/cmdline")" in
        *" engine "*) cpu_pids[engine]=$pid ;;
        *" replica "*) cpu_pids[replica]=$pid ;;
    esac
done
[ -n "${cpu_pids[engine]:-}" ] && [ -n "${cpu_pids[replica]:-}" ] ||
    { echo "did not find launch-simple's engine and replica processes" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
echo "== 1. full backup: $data_size of 50%-compressible data, aws s3 cp vs backup create" >&2
compressible=(--buffer_compress_percentage=50 --refill_buffers)
t0=$(now)
fio_bounded --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 \
    --size="$data_size" "${compressible[@]}" --end_fsync=1 --output="$work/fill.txt"
put fill.seconds "$(elapsed "$t0" "$(now)")"
cli snapshot create s1 > /dev/null
export_data "$data/baseline.img"
sha1=$(sha256sum < "$data/baseline.img" | cut -d' ' -f1)
put baseline.bytes "$(stat -c %s "$data/baseline.img")"
# What lz4 makes of the same bytes, for comparison with what the backup uploads.
if command -v lz4 >/dev/null; then put baseline.lz4 "$(lz4 -1 -c "$data/baseline.img" | wc -c)"; fi

echo "   aws s3 cp FILE s3://bucket/baseline/obj" >&2
timed upload "${aws_cp[@]}" "$data/baseline.img" s3://bucket/baseline/obj
echo "   backup create s1" >&2
timed full "${cli[@]}" backup create s1 --target "$target"
stats full "$(tail -1 "$work/full.out")"
grep -v '^backup: ' "$work/full.err" >&2 || true

# ---------------------------------------------------------------------------------------
echo "== 2. incremental: $dirty_writes random 2 MiB writes (1% of the data), backup create s2" >&2
fio_bounded --name=dirty --ioengine=nbd --uri="$uri" --rw=randwrite --bs=2M --iodepth=4 \
    --size="$data_size" --io_size=$((dirty_writes * 2))M "${compressible[@]}" --randrepeat=0 \
    --end_fsync=1 --write_iolog="$work/dirty.iolog" --output="$work/dirty.txt"
put dirty.distinct "$(awk '$3 == "write" { print $4 }' "$work/dirty.iolog" | sort -u | wc -l)"
put dirty.unaligned "$(awk -v b="$block" '$3 == "write" && ($4 % b || $5 != b)' "$work/dirty.iolog" | wc -l)"
cli snapshot create s2 > /dev/null
export_data "$data/after.img"
sha2=$(sha256sum < "$data/after.img" | cut -d' ' -f1)
rm -f "$data/after.img"
timed incr "${cli[@]}" backup create s2 --target "$target"
stats incr "$(tail -1 "$work/incr.out")"
grep -v '^backup: ' "$work/incr.err" >&2 || true

# ---------------------------------------------------------------------------------------
echo "== 3. restore: aws s3 cp s3://bucket/baseline/obj FILE vs backup restore (s1)" >&2
timed download "${aws_cp[@]}" s3://bucket/baseline/obj "$data/download.img"
if [ "$(sha256sum < "$data/download.img" | cut -d' ' -f1)" != "$sha1" ]; then
    echo "the object aws downloaded differs from the file it uploaded" >&2
    exit 1
fi
rm -f "$data/download.img"
url1=$(grep -P '^full\.url\t' "$results" | cut -f2)
url2=$(grep -P '^incr\.url\t' "$results" | cut -f2)
timed restore "${cli[@]}" backup restore "$url1" --to "$data/restored"
{ grep -v '^restore: ' "$work/restore.err" || true; cat "$work/restore.out"; } >&2
put restore.disk "$(du -sB1 "$data/restored" | cut -f1)"
cli store export "$data/restored" "$data/restored.img" > "$work/export1.out" 2>&1
check_image "$data/restored.img" "$sha1" "restore of s1"
put restore.same yes
rm -f "$data/restored.img"

echo "   check: restore s2 over the s1 restore (in place)" >&2
timed restore2 "${cli[@]}" backup restore "$url2" --to "$data/restored"
{ grep -v '^restore: ' "$work/restore2.err" || true; cat "$work/restore2.out"; } >&2
put restore2.summary "$(grep '^restored ' "$work/restore2.out" | tail -1 | grep -o 'fetched_blocks=.*unchanged_blocks=[0-9]*' || true)"
cli store export "$data/restored" "$data/restored.img" > "$work/export2.out" 2>&1
check_image "$data/restored.img" "$sha2" "restore of s2 in place"
put restore2.same yes
rm -f "$data/restored.img"
put load.end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
[ -z "$(git status --porcelain -- crates 2>/dev/null)" ] || commit="$commit+local changes"
built="built $(date -u -r target/release/shorthorn '+%Y-%m-%d %H:%M UTC')"
# With --no-build the binary may predate the sources: say so.
if [ -n "$(find crates Cargo.toml Cargo.lock -newer target/release/shorthorn -type f -print -quit)" ]; then
    built="$built, OLDER than some sources"
fi
python3 - "$results" "$size" "$data_size" "$data" "$fs_type" "$commit" "$built" \
    "$dirty_writes" <<'EOF'
import os, sys
results, size, data_size, data, fs, commit, built, dirty_writes = sys.argv[1:]
dirty_writes = int(dirty_writes)
r = {}
for line in open(results):
    key, value = line.rstrip("\n").split("\t")
    r[key] = value
f = lambda key: float(r[key])
i = lambda key: int(r[key])
mib = lambda n: n / 1048576
human = lambda n: f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
verdict = lambda ok: "PASS" if ok else "MISS"
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
data_bytes = i("baseline.bytes")
print(f"Shorthorn backup benchmark: {size} volume (1 replica), {data_size} of data, commit "
      f"{commit} (binary {built}); data on {fs} ({data}); {os.cpu_count()} CPUs, "
      f"{mem:.0f} GiB RAM; load average {r['load.start']} at start, {r['load.end']} at end")

def cpu(tag, client):
    parse = lambda text: {k: float(v) for k, v in (w.split("=") for w in text.split())}
    before, after = parse(r[tag + ".cpu0"]), parse(r[tag + ".cpu1"])
    used = {client: f(tag + ".client")}
    used.update({k: after[k] - before.get(k, 0) for k in sorted(after)})
    wall = f(tag + ".seconds")
    total = sum(used.values())
    return (", ".join(f"{k} {v:.1f}" for k, v in used.items()) +
            f"; total {total:.1f} in {wall:.1f} s = {total / wall:.2f} of {os.cpu_count()} CPUs")

print()
up, full = f("upload.seconds"), f("full.seconds")
ratio1 = up / full
lz4 = f" (lz4 -1 of the baseline file: {mib(int(r['baseline.lz4'])):.0f} MiB)" if r.get("baseline.lz4") else ""
print(f"1. full backup of {human(data_bytes)} (fill took {f('fill.seconds'):.1f} s)")
print(f"   full backup: {human(data_bytes)} in {full:.1f} s vs aws s3 cp {up:.1f} s -> "
      f"ratio {ratio1:.2f} (target >= 1.0) {verdict(ratio1 >= 1.0)}")
print(f"   MiB/s of data: backup {mib(data_bytes) / full:.0f}, aws s3 cp {mib(data_bytes) / up:.0f}")
print(f"   uploaded {i('full.uploaded_bytes')} bytes ({mib(i('full.uploaded_bytes')):.0f} MiB, "
      f"{i('full.uploaded_bytes') / data_bytes:.2f} of the {human(data_bytes)} of data) in "
      f"{r['full.uploaded_blocks']} blocks; read {mib(i('full.read_bytes')):.0f} MiB, "
      f"logical {mib(i('full.logical_bytes')):.0f} MiB{lz4}")
print(f"   CPU seconds, aws s3 cp: {cpu('upload', 'aws')}")
print(f"   CPU seconds, backup:    {cpu('full', 'shorthorn')}")

print()
incr = f("incr.seconds")
ratio2 = i("incr.uploaded_bytes") / data_bytes
print(f"2. incremental after {dirty_writes} random 2 MiB write{'s' if dirty_writes > 1 else ''} ({r['dirty.distinct']} distinct "
      f"offsets, {r['dirty.unaligned']} not 2 MiB-aligned), base {r['incr.base']}")
print(f"   incremental backup: uploaded {mib(i('incr.uploaded_bytes')):.1f} MiB "
      f"({r['incr.uploaded_blocks']} blocks) of {human(data_bytes)} in {incr:.1f} s -> "
      f"ratio {ratio2:.4f} (target <= 0.02) {verdict(ratio2 <= 0.02)}")
print(f"   read {mib(i('incr.read_bytes')):.1f} MiB ({i('incr.read_bytes') / data_bytes:.4f} of "
      f"the data); changed {dirty_writes * 2} MiB")
print(f"   CPU seconds: {cpu('incr', 'shorthorn')}")

print()
down, rest = f("download.seconds"), f("restore.seconds")
ratio3 = down / rest
print(f"3. restore of the full backup (s1)")
print(f"   restore: {human(data_bytes)} in {rest:.1f} s vs aws s3 cp {down:.1f} s -> "
      f"ratio {ratio3:.2f} (target >= 0.8) {verdict(ratio3 >= 0.8)}")
print(f"   MiB/s of data: restore {mib(data_bytes) / rest:.0f}, aws s3 cp {mib(data_bytes) / down:.0f}; "
      f"restored directory {mib(i('restore.disk')):.0f} MiB on disk; "
      f"content equal to s1: {r['restore.same']}")
print(f"   CPU seconds, aws s3 cp: {cpu('download', 'aws')}")
print(f"   CPU seconds, restore:   {cpu('restore', 'shorthorn')}")
print(f"   check: restore of s2 over it in place {f('restore2.seconds'):.1f} s "
      f"({r['restore2.summary'] or '?'}), "
      f"content equal to s2: {r['restore2.same']}")
EOF
echo "logs, command output and inspect JSON: $work" >&2
