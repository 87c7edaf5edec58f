//! Turns SIGINT and SIGTERM into a cancel flag the executor polls.
//!
//! The only place that installs signal handlers. It must not exit the process or do anything
//! but set the flag: the coordinator stops scheduling, running builds kill their process
//! groups, finished results are recorded, and the command exits 130 on its own.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Error, Result};

/// The process-wide flag, so a second call (several runs in one process) shares it.
static INTERRUPT_FLAG: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);

/// Installs handlers for SIGINT and SIGTERM that set the returned flag; idempotent.
///
/// A second Ctrl-C sets the flag again and nothing more. Exiting on it would orphan the build
/// process groups still being stopped and could cut off the recording of steps that finished;
/// the wait is bounded by how fast builds die, and SIGKILL stays the last resort.
pub fn install_interrupt_handler() -> Result<Arc<AtomicBool>> {
    let mut installed = INTERRUPT_FLAG
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if let Some(flag) = installed.as_ref() {
        return Ok(Arc::clone(flag));
    }
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag)).map_err(|error| {
            Error::internal(format!(
                "installing the handler for signal {signal}: {error}"
            ))
        })?;
    }
    *installed = Some(Arc::clone(&flag));
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn sigterm_sets_the_flag_and_installation_is_shared() {
        let flag = install_interrupt_handler().unwrap();
        let again = install_interrupt_handler().unwrap();
        assert!(Arc::ptr_eq(&flag, &again));
        // SAFETY: raising a signal we handle ourselves; the handler only stores a bool.
        let status = unsafe { libc::raise(SIGTERM) };
        assert_eq!(status, 0);
        assert!(flag.load(Ordering::SeqCst));
    }
}
