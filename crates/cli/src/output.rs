//! Writing results to stdout. A reader that goes away early (`| head`) ends
//! the output quietly instead of panicking, as Unix tools do.

use std::io::{ErrorKind, Write};

/// Writes `text` and a newline to stdout; a closed pipe is not an error.
pub fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
