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

/// The first line of a `--status` report: how many of `total` tasks are
/// done in `dir` and, while some are not, that the tables cover only those.
pub fn status_line(done: usize, total: usize, what: &str, dir: &std::path::Path) -> String {
    let scope = if done < total {
        " (partial: the tables cover those tasks only)"
    } else {
        ""
    };
    format!(
        "{done} of {total} tasks done{what} in {}{scope}",
        dir.display()
    )
}
