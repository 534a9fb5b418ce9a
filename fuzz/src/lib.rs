//! Fuzz targets for Shorthorn's two network decoders.
//!
//! Each target is a plain function from bytes to `()` that panics when an invariant is
//! broken, so the same code runs under libFuzzer (`fuzz_targets/*.rs`) and under plain
//! `cargo test` (`tests/corpus.rs` replays the checked-in corpus):
//!
//! * [`wire_frame`]: `shorthorn_wire::frame::decode_frame` and everything that interprets
//!   a decoded frame (`Frame::extents`, `Frame::error`, `Request::from_frame`), with
//!   exact round trips through the encoder.
//! * [`nbd_handshake`]: the NBD option decoders of `shorthorn_nbd::proto` (round-tripped
//!   through a spec encoder written here) and the whole handshake, driven through
//!   `NbdServer::serve_stream` over an in-memory pipe.
//! * [`nbd_transmission`]: `decode_request`/`encode_request`, and the transmission phase
//!   of the server after one of several fixed handshakes, its output checked by an
//!   independent reply parser (`replies.rs`).
//!
//! Besides "never panics", the server targets check "never hangs": the runtime's clock is
//! paused, so it only moves when every task is idle, and with the client's bytes all
//! sent (then EOF) an idle server that has not closed the connection is a deadlock.

mod mem;
mod nbd;
mod replies;
mod wire;

pub use mem::{FuzzDevice, HugeDevice, MemDevice};
pub use nbd::{Setup, check_setups, exchange, handshake_prefix, nbd_handshake, nbd_transmission};
pub use wire::{build_frame, wire_frame};

/// A fuzz target: bytes in, panic on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target, by name, for tools that replay or generate corpora.
pub const TARGETS: [(&str, Target); 3] = [
    ("wire_frame", wire_frame),
    ("nbd_handshake", nbd_handshake),
    ("nbd_transmission", nbd_transmission),
];

/// Makes any panic, also one inside a tokio task (which tokio would otherwise catch and
/// turn into a `JoinError` the server merely logs), abort the process. libFuzzer's
/// `fuzz_target!` installs the same kind of hook; this is for runs outside libFuzzer.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}
