//! nbdsh (libnbd's Python shell) scripts exercise the commands one by one: pread,
//! pwrite (FUA), flush, trim, zero (NO_HOLE), block_status (REQ_ONE), DF reads, errors
//! coming back from the server (libnbd's client-side checks are switched off so the
//! server is the one refusing), pipelined asynchronous I/O, option negotiation, and
//! two connections sharing one export (multi-conn).

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use common::{CLIENT_TIMEOUT, EXPORT, RO_EXPORT, TestServer, require, run};
use shorthorn_block::ExtentKind;

const MIB: u64 = 1 << 20;

/// Runs a Python script in nbdsh connected to `uri` with `base:allocation` requested.
/// The script's last line must print `OK`, so a script that stops early fails.
fn nbdsh(uri: &str, script: &str) -> String {
    let nbdsh = require("nbdsh", "python3-libnbd");
    // nbdsh runs `python3 -m nbd`; the module is installed for the distribution's
    // python3, which a python3 earlier on PATH (pyenv, venv) would not see.
    let path = format!(
        "/usr/bin:/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("import errno\n{script}\nprint('OK')\n");
    let env = std::path::PathBuf::from("/usr/bin/env");
    let args = [
        format!("PATH={path}"),
        nbdsh.display().to_string(),
        "--base-allocation".to_owned(),
        "-u".to_owned(),
        uri.to_owned(),
        "-c".to_owned(),
        script.clone(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = run(&env, &args, CLIENT_TIMEOUT);
    let all = format!("{}{}", outcome.stdout, outcome.stderr);
    if all.contains("No module named nbd") {
        panic!("nbdsh cannot import its Python module: install python3-libnbd\n{all}");
    }
    assert!(
        outcome.success() && outcome.stdout.trim_end().ends_with("OK"),
        "nbdsh script failed ({:?}):\n{all}\nscript:\n{script}",
        outcome.code
    );
    outcome.stdout
}

#[test]
fn reads_writes_flush_trim_and_zero() {
    let server = TestServer::start(16 * MIB);
    nbdsh(
        &server.uri(),
        r#"
assert h.get_structured_replies_negotiated()
assert h.can_meta_context("base:allocation")
assert h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero() and h.can_df()
assert h.get_size() == 16 << 20

h.pwrite(b"\xab" * 65536, 0)
assert h.pread(65536, 0) == b"\xab" * 65536
h.pwrite(b"hello", (2 << 20) + 5, nbd.CMD_FLAG_FUA)
assert h.pread(9, (2 << 20) + 3) == b"\0\0hello\0\0"
h.flush()

# (libnbd's argument order is count, offset.)
h.trim(8192, 4096)
assert h.pread(8192, 4096) == bytes(8192)
assert h.pread(4096, 0) == b"\xab" * 4096
h.zero(4096, 32768, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 32768) == bytes(4096)
h.zero(100, 1000)
assert h.pread(100, 1000) == bytes(100)
assert h.pread(10, 990) == b"\xab" * 10
# NO_HOLE zeroes stay allocated, the trimmed range is a hole.
status = []
h.block_status(65536, 0, lambda ctx, off, ents, err: status.append(list(ents)) or 0)
assert status[0] == [4096, 0, 8192, 3, 65536 - 12288, 0], status

expected = bytearray(b"\xab" * 65536)
expected[1000:1100] = bytes(100)
expected[4096:12288] = bytes(8192)
expected[32768:36864] = bytes(4096)
# A read over data and a hole comes in several chunks, the hole as OFFSET_HOLE...
chunks = []
def chunk(buf, offset, status, err):
    chunks.append((offset, len(buf), status))
    return 0
assert h.pread_structured(65536, 0, chunk) == expected
assert (4096, 8192, nbd.READ_HOLE) in chunks, chunks
# ... unless DF asks for a single data chunk.
chunks.clear()
assert h.pread_structured(65536, 0, chunk, nbd.CMD_FLAG_DF) == expected
assert chunks == [(0, 65536, nbd.READ_DATA)], chunks

# Zero the first MiB, holes allowed, durably.
h.zero(1 << 20, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == bytes(65536)
"#,
    );
    // Written data is on the volume; zeroing the first MiB without NO_HOLE left a hole.
    assert_eq!(server.read_store(2 * MIB + 5, 5), b"hello");
    let status = server.store.block_status(0, MIB).unwrap();
    assert!(
        status.iter().all(|e| e.kind == ExtentKind::Zero),
        "{status:?}"
    );
}

#[test]
fn block_status_reports_data_and_holes() {
    let server = TestServer::start(16 * MIB);
    nbdsh(
        &server.uri(),
        r#"
h.pwrite(b"x" * 8192, 1 << 20)
h.pwrite(b"y", 3 << 20)
extents = []
def cb(metacontext, offset, entries, err):
    assert metacontext == "base:allocation", metacontext
    extents.append((offset, list(entries)))
    return 0
h.block_status(4 << 20, 0, cb)
assert extents[-1] == (0, [1 << 20, 3, 8192, 0, (2 << 20) - 8192, 3, 4096, 0, (1 << 20) - 4096, 3]), extents

# REQ_ONE: a single extent, clipped to the request.
h.block_status(1 << 20, (1 << 20) + 4096, cb, nbd.CMD_FLAG_REQ_ONE)
assert extents[-1] == ((1 << 20) + 4096, [4096, 0]), extents

# After a trim the data is gone from the map.
h.trim(8192, 1 << 20)
h.block_status(4 << 20, 0, cb)
assert extents[-1][1][:2] == [3 << 20, 3], extents
"#,
    );
}

#[test]
fn errors_come_from_the_server_with_the_right_errno() {
    let server = TestServer::start(4 * MIB);
    let script = format!(
        r#"
# Let the requests reach the server instead of failing in libnbd.
h.set_strict_mode(0)
size = h.get_size()

def expect(errname, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        assert e.errno in (errname, getattr(errno, errname)), (fn, e.errno, e.string)
        return
    raise AssertionError(f"{{fn}} {{args}} did not fail")

expect("EINVAL", h.pread, 4096, size - 100)
expect("EINVAL", h.pread, 1, size)
expect("ENOSPC", h.pwrite, b"x" * 4096, size - 100)
expect("ENOSPC", h.zero, 8192, size - 4096)
expect("EINVAL", h.trim, 8192, size - 4096)
expect("EINVAL", h.block_status, 8192, size - 4096, lambda *a: 0)
expect("EINVAL", h.pread, (32 << 20) + 1, 0)
# Flags not valid for the command.
expect("EINVAL", h.flush, nbd.CMD_FLAG_NO_HOLE)
# The connection still works after every refusal.
h.pwrite(b"fine", 0)
assert h.pread(4, 0) == b"fine"

# The read-only export refuses writes with EPERM.
ro = nbd.NBD()
ro.set_strict_mode(0)
ro.connect_uri("{ro}")
assert ro.is_read_only()
expect("EPERM", ro.pwrite, b"x", 0)
expect("EPERM", ro.trim, 4096, 0)
expect("EPERM", ro.zero, 4096, 0)
assert ro.pread(4, 0) == bytes(4)
ro.shutdown()

# Without structured replies, errors come as simple replies.
plain = nbd.NBD()
plain.set_request_structured_replies(False)
plain.set_strict_mode(0)
plain.connect_uri("{uri}")
assert not plain.get_structured_replies_negotiated()
assert not plain.can_df()
expect("EINVAL", plain.pread, 4096, size - 100)
assert plain.pread(4, 0) == b"fine"
plain.shutdown()
"#,
        ro = server.uri_of(RO_EXPORT),
        uri = server.uri(),
    );
    nbdsh(&server.uri(), &script);
}

#[test]
fn pipelined_async_io_completes() {
    let server = TestServer::start(16 * MIB);
    nbdsh(
        &server.uri(),
        r#"
# 256 writes in flight at once, then 256 reads, completing in any order.
bufs = [nbd.Buffer.from_bytearray(bytearray([i % 251 + 1]) * 16384) for i in range(256)]
cookies = [h.aio_pwrite(bufs[i], i * 16384) for i in range(256)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
reads = [nbd.Buffer(16384) for _ in range(256)]
cookies = [h.aio_pread(reads[i], i * 16384) for i in range(256)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for i in range(256):
    assert reads[i].to_bytearray() == bytearray([i % 251 + 1]) * 16384, i
"#,
    );
    assert!(
        server
            .read_store(255 * 16384, 16384)
            .iter()
            .all(|&b| b == 255 % 251 + 1)
    );
}

#[test]
fn multi_conn_flush_on_one_connection_is_seen_on_another() {
    let server = TestServer::start(16 * MIB);
    let script = format!(
        r#"
assert h.can_multi_conn()
h2 = nbd.NBD()
h2.add_meta_context("base:allocation")
h2.connect_uri("{uri}")
assert h2.can_multi_conn()
h.pwrite(b"\x5a" * 65536, 1 << 20)
h.flush()
assert h2.pread(65536, 1 << 20) == b"\x5a" * 65536
h2.pwrite(b"\xa5" * 4096, 0, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 0) == b"\xa5" * 4096
seen = []
h2.block_status(2 << 20, 0, lambda ctx, off, ents, err: seen.append(list(ents)) or 0)
assert seen[0][:4] == [4096, 0, (1 << 20) - 4096, 3], seen
h2.shutdown()
"#,
        uri = server.uri()
    );
    nbdsh(&server.uri(), &script);
}

#[test]
fn option_negotiation_lists_exports_and_contexts() {
    let server = TestServer::start(4 * MIB);
    let script = format!(
        r#"
o = nbd.NBD()
o.set_opt_mode(True)
o.connect_uri("nbd://127.0.0.1:{port}")
names = []
o.opt_list(lambda name, desc: names.append((name, desc)) or 0)
assert names == [("{vol}", "{desc}"), ("{ro}", "read-only test volume")], names
contexts = []
o.set_export_name("{vol}")
o.opt_list_meta_context(lambda ctx: contexts.append(ctx) or 0)
assert contexts == ["base:allocation"], contexts
o.set_export_name("missing")
try:
    o.opt_info()
    raise AssertionError("info on a missing export succeeded")
except nbd.Error:
    pass
o.set_export_name("{vol}")
o.opt_info()
assert o.get_size() == 4 << 20
o.opt_go()
assert o.pread(4, 0) == bytes(4)
o.shutdown()
"#,
        port = server.port(),
        vol = EXPORT,
        ro = RO_EXPORT,
        desc = common::DESCRIPTION,
    );
    nbdsh(&server.uri(), &script);
}
