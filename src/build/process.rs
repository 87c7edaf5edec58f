//! Runs one `make image` as its own process group and supervises it: a deadline, a cancel
//! flag, and on either the whole group is stopped (SIGTERM, then SIGKILL after a grace
//! period), so no packaging tool outlives its build. The group is a new session without a
//! controlling terminal, so nothing in a build can push keystrokes into the user's shell
//! (`TIOCSTI`). Knows nothing about the Image Builder.
//!
//! The leader is never reaped before the group is known to be empty: while it is a zombie
//! its pid (= the group id) cannot be reused, so signalling `-pgid` cannot hit a stranger.

use std::fs;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode, Result};

/// Time between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);
const MAX_POLL: Duration = Duration::from_millis(100);

/// How a supervised run ended.
#[derive(Debug)]
pub(crate) enum Finish {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
}

/// Spawns `command` in a new session (and so a new process group, without a controlling
/// terminal) with umask 022 and waits for it, honouring the timeout and the cancel flag. Any
/// process left in the group afterwards is killed.
pub(crate) fn run_supervised(
    mut command: Command,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<Finish> {
    // SAFETY: setsid(2), umask(2) and prctl(2) are async-signal-safe and touch no memory;
    // nothing else runs between fork and exec. PR_SET_PDEATHSIG makes `make` die with
    // imagegen (kill -9, OOM) instead of living on in a slot the next apply will reset.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::umask(0o022);
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().map_err(|error| {
        if error.kind() == io::ErrorKind::NotFound {
            Error::new(
                ErrorCode::ImagebuilderError,
                format!("host tool missing: `{program}` is not installed"),
            )
            .with_help("the Image Builder needs GNU make and its other host tools on PATH")
        } else {
            Error::io("starting", std::path::Path::new(&program), error)
        }
    })?;
    let group = child.id() as i32;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    let finish = loop {
        if leader_exited(group)? {
            break None;
        }
        if cancel.load(Ordering::Relaxed) {
            break Some(Finish::Cancelled);
        }
        if Instant::now() >= deadline {
            break Some(Finish::TimedOut);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(MAX_POLL);
    };
    match finish {
        Some(stopped) => {
            stop_group(group);
            reap(&mut child)?;
            Ok(stopped)
        }
        None => {
            if group_alive(group) {
                // Stragglers (daemons a recipe started): the build is over, they go.
                signal_group(group, libc::SIGKILL);
                wait_group_gone(group, KILL_GRACE);
            }
            Ok(Finish::Exited(reap(&mut child)?))
        }
    }
}

/// Exit code or signal of a finished run.
pub(crate) fn describe(status: ExitStatus) -> super::failure::Ending {
    match (status.code(), status.signal()) {
        (Some(code), _) => super::failure::Ending::Code(code),
        (None, Some(signal)) => super::failure::Ending::Signal(signal),
        (None, None) => super::failure::Ending::Code(-1),
    }
}

/// SIGTERM to the group, SIGKILL to whatever is left after the grace period.
fn stop_group(group: i32) {
    signal_group(group, libc::SIGTERM);
    if !wait_group_gone(group, KILL_GRACE) {
        signal_group(group, libc::SIGKILL);
        wait_group_gone(group, KILL_GRACE);
    }
}

fn signal_group(group: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-group, signal);
    }
}

fn wait_group_gone(group: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while group_alive(group) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Whether the leader has exited, without reaping it (`waitid` with `WNOWAIT`).
fn leader_exited(pid: i32) -> Result<bool> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid value, and waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
    let status = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if status != 0 {
        let error = io::Error::last_os_error();
        return Err(Error::internal(format!(
            "waiting for process {pid}: {error}"
        )));
    }
    // SAFETY: after a successful waitid, si_pid is initialized (0 when nothing changed).
    Ok(unsafe { info.si_pid() } != 0)
}

fn reap(child: &mut Child) -> Result<ExitStatus> {
    child
        .wait()
        .map_err(|error| Error::internal(format!("waiting for `make`: {error}")))
}

/// Whether any live (non-zombie) process is still in the group. Reads `/proc`, because
/// `kill(-pgid, 0)` also succeeds for the zombie leader we deliberately keep.
pub(crate) fn group_alive(group: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.parse::<i32>().ok()) else {
            return false;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        matches!(parse_stat(&stat), Some((state, pgrp)) if pgrp == group && state != 'Z' && state != 'X')
    })
}

/// State and process group from `/proc/<pid>/stat` (the command name may contain spaces
/// and parentheses, so fields are counted from the last `)`).
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(
            parse_stat("1234 (sh) S 1 1234 1234 0 -1 4194560"),
            Some(('S', 1234))
        );
        assert_eq!(parse_stat("77 (a) b (c)) Z 5 70 70 0"), Some(('Z', 70)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn exit_status_is_reported() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let cancel = AtomicBool::new(false);
        match run_supervised(command, Duration::from_secs(30), &cancel).unwrap() {
            Finish::Exited(status) => assert_eq!(status.code(), Some(3)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
