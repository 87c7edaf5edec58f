//! Moves the MCP protocol off descriptors 0 and 1 before anything else runs.
//!
//! stdout belongs to the protocol alone, but a server process has many ways to write to it by
//! accident: a `println!` deep in some library, a child process (`git`, `make`) that inherits
//! descriptor 1, a panic hook. Rather than auditing every path forever, the server keeps
//! private close-on-exec copies of the original stdin and stdout for the protocol, then points
//! descriptor 1 at stderr and descriptor 0 at `/dev/null`. Anything that still writes to
//! "stdout" lands in the log, and no child can read the client's requests.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::error::{Error, Result};

/// The protocol's input and output: the process's original stdin and stdout.
pub(crate) fn take_protocol_streams() -> Result<(File, File)> {
    use std::io::Write;
    let failed = |what: &str, error: std::io::Error| {
        Error::internal(format!(
            "cannot set up the MCP stdio streams ({what}): {error}"
        ))
    };
    let _ = std::io::stdout().flush();
    // `try_clone_to_owned` duplicates with close-on-exec, so children never inherit them.
    let input: OwnedFd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|error| failed("stdin", error))?;
    let output: OwnedFd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|error| failed("stdout", error))?;
    let null = File::open("/dev/null").map_err(|error| failed("/dev/null", error))?;
    redirect(null.as_raw_fd(), 0).map_err(|error| failed("stdin to /dev/null", error))?;
    redirect(2, 1).map_err(|error| failed("stdout to stderr", error))?;
    Ok((File::from(input), File::from(output)))
}

/// `dup2(from, to)`.
fn redirect(from: i32, to: i32) -> std::io::Result<()> {
    // SAFETY: dup2 on descriptors this process owns; it only replaces what `to` refers to,
    // and every Rust handle to `to` (std's stdin/stdout) keeps working on the new target.
    match unsafe { libc::dup2(from, to) } {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}
