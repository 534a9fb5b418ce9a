//! Writing command output to stdout without panicking when the reader goes away (for
//! example `shorthorn store snapshot ls DIR --json | head`).

use std::fmt;
use std::io::{ErrorKind, Write};

/// The API's name of an enum value, for plain-text output.
pub use shorthorn_manager::model::json_name;

/// Stdout was closed by its reader; the command stops quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes one line to stdout.
pub fn line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{args}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// Writes one line to stderr (progress and notes), ignoring a closed stderr.
pub fn note(args: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Writes one formatted line to stdout; evaluates to `anyhow::Result<()>`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
