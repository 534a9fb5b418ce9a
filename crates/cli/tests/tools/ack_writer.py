#!/usr/bin/python3
"""A verifying NBD writer for the end-to-end tests (Python 3 + Debian's python3-libnbd).

    ack_writer.py write  --uri URI --log FILE --seconds S --blocks N [--start-block B]
                         [--block-size 4096] [--flush-every K] [--seed X] [--unaligned]
                         [--fill] [--fill-chunk C] [--request-timeout T]
    ack_writer.py verify --uri URI --log FILE --mode acked|flushed [--seen FILE]
    ack_writer.py read   --uri URI [--offset O] [--length L]   (exit 1 if the read fails)
    ack_writer.py stable --uri URI --length L [--offset O] [--chunk C] [--passes P]
                         (reads the range P times; exit 1 if any two passes differ)

The data model
--------------
Every write has a sequence number `seq` (1, 2, 3, … in issue order). Think of
"version `seq` of the volume" as an image in which every block `b` holds
`content(b, seq)`: 4096 bytes made of 128 cells of 32 bytes, each cell

    magic "SHAW" | block u32 | seq u32 | cell index u16 | 14 filler bytes | crc32 u32

(little endian; the filler depends on block and seq; the crc covers the first 28
bytes). A write `(seq, offset, length)` writes exactly the bytes
`[offset, offset+length)` of version `seq`. A full aligned write therefore stamps
whole blocks; with --unaligned about half of the writes cover an arbitrary
sub-range instead: 512-byte aligned sectors inside a block, odd byte offsets
inside a block, or an odd range that crosses into the next block. After such a
write a block holds a mix of two known versions, and its expected content is
computed from the log by replaying the writes to it in order over the block's
initial content, which is taken to be zeros (a fresh volume).

Any torn, foreign or stale content is detected by comparing whole blocks with
the expected states; the cell stamps only serve to say what was found instead
("cells 0-63 seq 812, cells 64-127 zero").

The log
-------
One line per event, flushed at once (not fsynced):

    S seq block offset length   before sending a write (block = first block touched)
    A seq                       after the write was acknowledged
    F seq                       after a flush was acknowledged; seq is the last write
                                acknowledged before the flush was sent, so every
                                write up to seq is durable
    E message                   the first error; the writer stops there

One request is in flight at a time, so at most one write is started and not
acknowledged: the last one.

write stops after S seconds (after the fill phase, with --fill, which writes the
whole range once sequentially in chunks of --fill-chunk blocks first), at SIGTERM
or SIGINT (after the request in flight), or at the first error, and prints a
summary `writes=W acked=A bytes_acked=B flushed_seq=F error=none|MESSAGE`. It exits
0 in all these cases (an error is the test's business), non-zero only on misuse.

verify reads every block the log mentions three times (all passes must agree:
stable reads), then checks each block:
  acked   - it holds the result of every acknowledged write to it, possibly
            followed by the one write that was in flight at the error;
  flushed - it holds the result of every write up to the last acknowledged flush,
            followed by any subset (in order) of the later started writes.
With --seen FILE it also records what it found there and, if FILE exists already,
requires every block to hold what the earlier verify found (no write in between).
It prints a summary and exits 1 with one line per bad block on any mismatch.
"""

import argparse
import hashlib
import json
import os
import random
import signal
import struct
import sys
import time
import zlib

import nbd

MAGIC = b"SHAW"
CELL = 32
HEAD = struct.Struct("<4sIIH14s")
CRC = struct.Struct("<I")


def content(block, seq, block_size):
    """Version `seq` of `block`: block_size // 32 stamped cells."""
    filler = zlib.crc32(struct.pack("<II", block, seq)).to_bytes(4, "little")
    filler = (filler * 4)[:14]
    cells = []
    for cell in range(block_size // CELL):
        head = HEAD.pack(MAGIC, block, seq, cell & 0xFFFF, filler)
        cells.append(head)
        cells.append(CRC.pack(zlib.crc32(head)))
    return b"".join(cells)


def image(seq, offset, length, block_size):
    """Bytes [offset, offset+length) of version `seq` of the volume."""
    first = offset // block_size
    last = (offset + length - 1) // block_size
    data = b"".join(content(b, seq, block_size) for b in range(first, last + 1))
    start = offset - first * block_size
    return data[start : start + length]


def describe(data, block, block_size):
    """What a block holds, cell by cell: runs like `cells 0-63 seq 5`."""
    runs = []
    for cell in range(block_size // CELL):
        raw = data[cell * CELL : (cell + 1) * CELL]
        if raw == bytes(CELL):
            what = "zero"
        else:
            magic, b, seq, idx, _ = HEAD.unpack(raw[:28])
            (crc,) = CRC.unpack(raw[28:])
            if magic != MAGIC or crc != zlib.crc32(raw[:28]) or idx != cell & 0xFFFF:
                what = "torn/foreign"
            elif b != block:
                what = f"block {b}'s seq {seq}"
            else:
                what = f"seq {seq}"
        if runs and runs[-1][2] == what:
            runs[-1][1] = cell
        else:
            runs.append([cell, cell, what])
    return ", ".join(
        f"cell {a} {w}" if a == b else f"cells {a}-{b} {w}" for a, b, w in runs
    )


class Log:
    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")

    def line(self, text):
        self.file.write(text + "\n")
        self.file.flush()


def wait_for(handle, cookie, timeout):
    """Waits for one aio command; raises nbd.Error or TimeoutError."""
    deadline = time.monotonic() + timeout
    while not handle.aio_command_completed(cookie):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no reply within {timeout} s")
        handle.poll(max(1, min(200, int(left * 1000))))


def pick_range(rng, args, first, end):
    """(offset, length) of the next random write."""
    bs = args.block_size
    block = rng.randrange(first, end)
    if not args.unaligned or rng.random() < 0.5:
        return block * bs, bs
    kind = rng.randrange(3)
    if kind == 0 and bs >= 1024:
        sectors = bs // 512
        lo = rng.randrange(sectors)
        hi = rng.randrange(lo + 1, sectors + 1)
        return block * bs + lo * 512, (hi - lo) * 512
    if kind == 1 or block + 1 >= end:
        lo = rng.randrange(bs)
        hi = rng.randrange(lo + 1, bs + 1)
        return block * bs + lo, hi - lo
    # Crosses into the next block, at odd offsets.
    lo = rng.randrange(1, bs)
    length = rng.randrange(bs - lo + 1, 2 * bs - lo)
    return block * bs + lo, length


def write(args):
    blocked = {signal.SIGTERM, signal.SIGINT}
    # Blocked, and polled between requests, so a stop request never interrupts one.
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    rng = random.Random(args.seed)
    bs = args.block_size
    first, end = args.start_block, args.start_block + args.blocks
    log = Log(args.log)
    writes = acked = bytes_acked = flushed = 0
    seq = 0
    error = None
    handle = nbd.NBD()
    start = time.monotonic()

    def stop_requested():
        return bool(signal.sigpending() & blocked)

    try:
        handle.connect_uri(args.uri)
        size = handle.get_size()
        if end * bs > size:
            raise ValueError(f"blocks up to {end} do not fit a volume of {size} bytes")
        fill = []
        if args.fill:
            fill = [
                (b * bs, min(args.fill_chunk, end - b) * bs)
                for b in range(first, end, args.fill_chunk)
            ]
        fill.reverse()
        deadline = None
        while not stop_requested():
            if fill:
                offset, length = fill.pop()
            else:
                if deadline is None:
                    deadline = time.monotonic() + args.seconds
                if time.monotonic() >= deadline:
                    break
                offset, length = pick_range(rng, args, first, end)
            seq += 1
            data = image(seq, offset, length, bs)
            log.line(f"S {seq} {offset // bs} {offset} {length}")
            writes += 1
            cookie = handle.aio_pwrite(nbd.Buffer.from_bytearray(data), offset)
            wait_for(handle, cookie, args.request_timeout)
            log.line(f"A {seq}")
            acked += 1
            bytes_acked += length
            if args.flush_every and seq % args.flush_every == 0:
                cookie = handle.aio_flush()
                wait_for(handle, cookie, args.request_timeout)
                log.line(f"F {seq}")
                flushed = seq
    except (nbd.Error, TimeoutError, OSError, ValueError) as e:
        error = " ".join(str(e).split()) or type(e).__name__
        log.line(f"E {error}")
    if error is None:
        # After an error (a request may still be pending) the socket just closes at exit.
        try:
            handle.shutdown()
        except nbd.Error:
            pass
    print(
        f"ran {time.monotonic() - start:.1f}s; writes={writes} acked={acked} "
        f"bytes_acked={bytes_acked} flushed_seq={flushed} error={error or 'none'}",
        flush=True,
    )
    return 0


def parse_log(path):
    """writes: seq -> (offset, length); acked: set; flushed: last flushed seq."""
    writes, acked, flushed, errors = {}, set(), 0, []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            tag = fields[0]
            if tag == "S" and len(fields) == 5:
                seq, _block, offset, length = map(int, fields[1:])
                writes[seq] = (offset, length)
            elif tag == "A" and len(fields) == 2:
                acked.add(int(fields[1]))
            elif tag == "F" and len(fields) == 2:
                flushed = max(flushed, int(fields[1]))
            elif tag == "E":
                errors.append(line[2:].strip())
            else:
                raise SystemExit(f"{path}:{number}: malformed log line {line!r}")
    return writes, acked, flushed, errors


def expected_states(block, base_writes, optional, bs, limit=4096):
    """Every allowed content of `block`: the base writes applied in order, then any
    subset of the optional ones in order. None if there are too many subsets."""
    def apply(buf, seq, offset, length):
        lo = max(offset, block * bs)
        hi = min(offset + length, (block + 1) * bs)
        if lo < hi:
            version = content(block, seq, bs)
            buf[lo - block * bs : hi - block * bs] = version[lo - block * bs : hi - block * bs]

    base = bytearray(bs)
    for seq, offset, length in base_writes:
        apply(base, seq, offset, length)
    states = [bytes(base)]
    if 2 ** len(optional) > limit:
        return None, bytes(base)
    for seq, offset, length in optional:
        grown = []
        for state in states:
            buf = bytearray(state)
            apply(buf, seq, offset, length)
            grown.append(bytes(buf))
        states.extend(grown)
    return list(dict.fromkeys(states)), bytes(base)


def verify(args):
    bs = args.block_size
    writes, acked, flushed, errors = parse_log(args.log)
    if not writes:
        print(f"verify: {args.log} holds no write; nothing to check")
        return 0
    per_block = {}
    for seq in sorted(writes):
        offset, length = writes[seq]
        for b in range(offset // bs, (offset + length - 1) // bs + 1):
            per_block.setdefault(b, []).append((seq, offset, length))

    handle = nbd.NBD()
    handle.connect_uri(args.uri)
    blocks = sorted(per_block)
    # Contiguous runs of at most 256 blocks, read in two full passes.
    runs = []
    for b in blocks:
        if runs and runs[-1][1] == b and b - runs[-1][0] < 256:
            runs[-1][1] = b + 1
        else:
            runs.append([b, b + 1])
    # Three passes: the engine spreads reads over its replicas, so a block is likely
    # read from more than one of them.
    passes = []
    for _ in range(3):
        data = {}
        for lo, hi in runs:
            raw = handle.pread((hi - lo) * bs, lo * bs)
            for b in range(lo, hi):
                data[b] = raw[(b - lo) * bs : (b - lo + 1) * bs]
        passes.append(data)
    handle.shutdown()

    problems = []
    for b in blocks:
        first = passes[0][b]
        other = next((p[b] for p in passes[1:] if p[b] != first), None)
        if other is not None:
            problems.append(
                f"block {b}: unstable reads: one read found {describe(first, b, bs)}; "
                f"another {describe(other, b, bs)}"
            )
            continue
        history = per_block[b]
        if args.mode == "acked":
            base = [w for w in history if w[0] in acked]
            optional = [w for w in history if w[0] not in acked]
        else:
            base = [w for w in history if w[0] <= flushed]
            optional = [w for w in history if w[0] > flushed]
        states, base_state = expected_states(b, base, optional, bs)
        if states is not None:
            if first in states:
                continue
        else:
            # Too many optional writes for every subset: each byte must come from the
            # base or from one of the optional writes covering it.
            allowed = [{v} for v in base_state]
            for seq, offset, length in optional:
                lo = max(offset, b * bs) - b * bs
                hi = min(offset + length, (b + 1) * bs) - b * bs
                version = content(b, seq, bs)
                for i in range(lo, hi):
                    allowed[i].add(version[i])
            if all(first[i] in allowed[i] for i in range(bs)):
                continue
        base_seqs = [w[0] for w in base]
        problems.append(
            f"block {b}: expected the writes {base_seqs[-3:] or 'none'} (last 3 of "
            f"{len(base_seqs)} {'acknowledged' if args.mode == 'acked' else 'flushed'}) "
            f"optionally followed by {[w[0] for w in optional] or 'nothing'}; "
            f"found {describe(first, b, bs)}"
        )

    if args.seen:
        # What an earlier verify found must still be there: no write happened since.
        now = {
            str(b): [hashlib.sha256(passes[0][b]).hexdigest(), describe(passes[0][b], b, bs)]
            for b in blocks
        }
        if os.path.exists(args.seen):
            with open(args.seen, encoding="utf-8") as f:
                before = json.load(f)
            for b in blocks:
                was = before.get(str(b))
                if was is not None and was[0] != now[str(b)][0]:
                    problems.append(
                        f"block {b}: unstable across verifies: earlier {was[1]}; "
                        f"now {now[str(b)][1]}"
                    )
        with open(args.seen, "w", encoding="utf-8") as f:
            json.dump(now, f)

    summary = (
        f"verify --mode {args.mode}: {len(blocks)} blocks, {len(writes)} writes, "
        f"{len(acked)} acknowledged, flushed up to {flushed}, "
        f"writer error: {errors[0] if errors else 'none'}; "
        f"{len(problems)} bad blocks"
    )
    for p in problems[:50]:
        print(p)
    if len(problems) > 50:
        print(f"... and {len(problems) - 50} more bad blocks")
    print(summary)
    return 1 if problems else 0


def read(args):
    """One read; exit 0 if it succeeded, 1 (with the error) if it failed."""
    handle = nbd.NBD()
    try:
        handle.connect_uri(args.uri)
        buf = nbd.Buffer(args.length)
        cookie = handle.aio_pread(buf, args.offset)
        wait_for(handle, cookie, args.request_timeout)
    except (nbd.Error, TimeoutError, OSError) as e:
        print(f"read failed: {' '.join(str(e).split())}")
        return 1
    print(f"read {args.length} bytes at {args.offset}")
    return 0


def stable(args):
    """Reads [offset, offset+length) `passes` times in chunks; every pass must return the
    same bytes. (The engine spreads reads over its replicas, so passes of a chunk count
    that is not a multiple of the replica count read each chunk from several.)"""
    handle = nbd.NBD()
    handle.connect_uri(args.uri)
    end = args.offset + args.length
    chunks = [(o, min(args.chunk, end - o)) for o in range(args.offset, end, args.chunk)]
    first = {}
    problems = []
    for number in range(args.passes):
        for offset, length in chunks:
            data = handle.pread(length, offset)
            if number == 0:
                first[offset] = data
                continue
            if data == first[offset]:
                continue
            bad = [
                offset + i
                for i in range(0, length, 4096)
                if data[i : i + 4096] != first[offset][i : i + 4096]
            ]
            problems.append(
                f"pass {number + 1} read other bytes than pass 1 in {len(bad)} 4 KiB "
                f"blocks of the chunk at {offset}: at offsets {bad[:8]}"
            )
    handle.shutdown()
    for p in problems[:50]:
        print(p)
    print(
        f"stable: {args.passes} passes over {args.length} bytes at {args.offset} in "
        f"{len(chunks)} reads each; {len(problems)} unstable chunks"
    )
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("--uri", required=True)
    w.add_argument("--log", required=True)
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--blocks", type=int, required=True)
    w.add_argument("--start-block", type=int, default=0)
    w.add_argument("--block-size", type=int, default=4096)
    w.add_argument("--flush-every", type=int, default=0)
    w.add_argument("--seed", type=int, default=None)
    w.add_argument("--unaligned", action="store_true")
    w.add_argument("--fill", action="store_true")
    w.add_argument("--fill-chunk", type=int, default=64)
    w.add_argument("--request-timeout", type=float, default=60.0)
    v = sub.add_parser("verify")
    v.add_argument("--uri", required=True)
    v.add_argument("--log", required=True)
    v.add_argument("--mode", choices=["acked", "flushed"], required=True)
    v.add_argument("--block-size", type=int, default=4096)
    v.add_argument("--seen", default=None)
    r = sub.add_parser("read")
    r.add_argument("--uri", required=True)
    r.add_argument("--offset", type=int, default=0)
    r.add_argument("--length", type=int, default=4096)
    r.add_argument("--request-timeout", type=float, default=30.0)
    st = sub.add_parser("stable")
    st.add_argument("--uri", required=True)
    st.add_argument("--offset", type=int, default=0)
    st.add_argument("--length", type=int, required=True)
    st.add_argument("--chunk", type=int, default=1 << 20)
    st.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    if args.command == "stable":
        return stable(args)
    if args.command == "read":
        return read(args)
    if args.command == "write":
        if args.block_size % CELL or args.block_size < CELL:
            parser.error(f"--block-size must be a multiple of {CELL}")
        if args.blocks < 1 or args.start_block < 0 or args.fill_chunk < 1:
            parser.error("--blocks and --fill-chunk must be positive")
        if args.seed is None:
            args.seed = random.randrange(1 << 32)
        print(f"seed {args.seed}", flush=True)
        return write(args)
    return verify(args)


if __name__ == "__main__":
    sys.exit(main())
