//! The sandbox `make image` runs in: bubblewrap (`bwrap`) with its own PID, network, IPC
//! and UTS namespaces (and user namespace when imagegen is not root), an unprivileged user,
//! the host's system directories read-only, a private `/tmp`, and nothing writable but the
//! worker slot and the output directory. Decides per build whether the sandbox is used
//! ([`SandboxMode`]), probes once per process whether bwrap works here, and builds the
//! command line. Knows nothing about the Image Builder beyond the three paths it mounts.
//!
//! Why these choices, and what the sandbox guarantees: `docs/security.md` ("Build sandbox").

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};

/// Whether `make image` runs sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Sandboxed when the sandbox works on this host; otherwise unsandboxed, with a loud
    /// warning on every build.
    #[default]
    Auto,
    /// Always sandboxed; a build fails when the sandbox cannot be used.
    Sandbox,
    /// Never sandboxed (with a warning on every build).
    None,
}

impl SandboxMode {
    /// The accepted spellings, in the order `--help` should list them.
    pub const NAMES: [&'static str; 3] = ["auto", "sandbox", "none"];

    /// Parses a setting value (`auto`, `sandbox` or `none`).
    pub fn parse(text: &str) -> Result<SandboxMode> {
        match text {
            "auto" => Ok(SandboxMode::Auto),
            "sandbox" => Ok(SandboxMode::Sandbox),
            "none" => Ok(SandboxMode::None),
            other => Err(Error::new(
                ErrorCode::Validation,
                format!("unknown sandbox mode `{}`", other.escape_debug()),
            )
            .with_help("use `auto`, `sandbox` or `none`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Auto => "auto",
            SandboxMode::Sandbox => "sandbox",
            SandboxMode::None => "none",
        }
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for SandboxMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<SandboxMode> {
        SandboxMode::parse(text)
    }
}

/// How one build ran, for its manifest, record and report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    pub mode: SandboxMode,
    pub sandboxed: bool,
    /// Why the build was not sandboxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where the slot, the output directory and the overlay appear inside the sandbox. Fixed
/// paths: the build sees the same `TOPDIR`, `BIN_DIR` and `FILES` wherever imagegen keeps
/// its work directory, and none of the host's directory names.
pub(crate) const SANDBOX_SLOT: &str = "/imagegen/slot";
pub(crate) const SANDBOX_OUTPUT: &str = "/imagegen/out";
pub(crate) const SANDBOX_FILES: &str = "/imagegen/files";
/// The local copies of the pinned package feeds (read-only).
pub(crate) const SANDBOX_FEEDS: &str = "/imagegen/feeds";

/// The user a root imagegen runs builds as (`nobody`): it owns nothing on the host, so a
/// build can read only world-readable files and write only what imagegen hands it.
pub(crate) const BUILD_UID: u32 = 65534;
pub(crate) const BUILD_GID: u32 = 65534;

/// Host directories the sandbox sees, read-only: programs, libraries and system
/// configuration. Everything else (`/home`, `/root`, `/run`, `/var`, `/srv`, `/mnt`, the
/// fleet checkout, imagegen's state and caches) does not exist inside.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix",
];

/// Owner of everything a build may write, when imagegen runs as root; `None` otherwise
/// (the build then runs as imagegen's own user and needs no change of owner).
pub(crate) fn build_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    (unsafe { libc::geteuid() } == 0).then_some((BUILD_UID, BUILD_GID))
}

/// The decision for one build.
pub(crate) enum Isolation {
    Sandboxed(Bwrap),
    Unsandboxed {
        report: SandboxReport,
        warning: String,
    },
}

impl Isolation {
    pub fn report(&self, mode: SandboxMode) -> SandboxReport {
        match self {
            Isolation::Sandboxed(_) => SandboxReport {
                mode,
                sandboxed: true,
                reason: None,
            },
            Isolation::Unsandboxed { report, .. } => report.clone(),
        }
    }
}

/// A working bubblewrap, and whether the sandboxed command must drop root first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Bwrap {
    program: PathBuf,
    /// `Some` when imagegen is root: bwrap then runs privileged (no user namespace, which
    /// would map the build back to root on the host) and `setpriv` drops to this user.
    drop_to: Option<(u32, u32)>,
}

/// The host directories one build mounts.
pub(crate) struct Mounts<'a> {
    pub slot: &'a Path,
    /// The slot's bookkeeping (records, state): mounted read-only over its place in the
    /// slot, so a build cannot forge what the next reset trusts.
    pub meta: &'a Path,
    pub output: &'a Path,
    pub files: Option<&'a Path>,
    /// The local feed copies the slot's repository file points at.
    pub feeds: Option<&'a Path>,
}

/// Why `make image` cannot be sandboxed for this process (its user and `PATH`); `None` when
/// it can. For diagnostics (`imagegen config`, tests); builds decide with [`choose`].
pub fn sandbox_unavailable() -> Option<String> {
    available(std::env::var_os("PATH").as_deref()).err()
}

/// Kills what is left of earlier sandboxes of `slot`: bwrap processes whose command line
/// mounts it. When imagegen is killed while bwrap sets a sandbox up, bwrap's child is not
/// yet bound to die with its parent (bwrap arms that only later) and can live on, stuck or
/// running a build nobody supervises; the next use of the slot must not share it with that.
pub(crate) fn stop_stale_sandboxes(slot: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(slot) = fs::canonicalize(slot) else {
        return;
    };
    let slot = slot.as_os_str().as_bytes();
    // Scanned until none is left: a bwrap killed while it clones leaves a child with the same
    // command line that the scan before could not see yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stale = sandboxes_of(slot);
        if stale.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for pid in &stale {
            tracing::warn!(pid, "killing a stale build sandbox of this slot");
            // SAFETY: kill(2) of a process id; no memory is involved.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Live bwrap processes whose command line has `slot` as an argument (a killed one that is
/// a zombie has no command line left).
fn sandboxes_of(slot: &[u8]) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let is_bwrap =
                fs::read(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm == b"bwrap\n");
            is_bwrap
                && is_live(*pid)
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|byte| *byte == 0).any(|arg| arg == slot))
        })
        .collect()
}

/// Whether a process exists and is not a zombie.
fn is_live(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Decides how a build runs in `mode`. `path` is the `PATH` to find `bwrap` (and, as root,
/// `setpriv`) in. Fails only in [`SandboxMode::Sandbox`] when no sandbox is possible.
pub(crate) fn choose(mode: SandboxMode, path: Option<&OsStr>) -> Result<Isolation> {
    let reason = match mode {
        SandboxMode::None => "the sandbox is turned off (`sandbox = none`)".to_string(),
        SandboxMode::Auto | SandboxMode::Sandbox => match available(path) {
            Ok(bwrap) => return Ok(Isolation::Sandboxed(bwrap)),
            Err(reason) => reason,
        },
    };
    if mode == SandboxMode::Sandbox {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!("cannot sandbox `make image`: {reason}"),
        )
        .with_help(
            "install bubblewrap (Debian and Ubuntu: `apt-get install bubblewrap`), or set the \
             sandbox mode to `auto` to build unsandboxed with a warning",
        ));
    }
    let warning = warning(mode, &reason);
    Ok(Isolation::Unsandboxed {
        report: SandboxReport {
            mode,
            sandboxed: false,
            reason: Some(reason),
        },
        warning,
    })
}

fn warning(mode: SandboxMode, reason: &str) -> String {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let user = match unsafe { libc::geteuid() } {
        0 => "root".to_string(),
        uid => format!("uid {uid}"),
    };
    let hint = match mode {
        SandboxMode::None => "set the sandbox mode to `auto` (the default) to sandbox builds",
        _ => {
            "install bubblewrap (`apt-get install bubblewrap`); set the sandbox mode to \
             `sandbox` to refuse unsandboxed builds"
        }
    };
    format!(
        "WARNING: `make image` runs WITHOUT a sandbox: {reason}\n\
         WARNING: package scripts and overlay files of the fleet run as {user} on this host, \
         with its network and files\n\
         hint: {hint}"
    )
}

/// A usable bwrap for this process's user, probed once per process and program path.
fn available(path: Option<&OsStr>) -> std::result::Result<Bwrap, String> {
    let program = find_program(path, "bwrap")
        .ok_or_else(|| "bubblewrap (`bwrap`) is not installed or not on `PATH`".to_string())?;
    let drop_to = build_owner();
    if drop_to.is_some() && find_program(path, "setpriv").is_none() {
        return Err(
            "`setpriv` (util-linux), needed to drop root inside the sandbox, is not on `PATH`"
                .to_string(),
        );
    }
    let bwrap = Bwrap { program, drop_to };
    static PROBES: OnceLock<Mutex<HashMap<Bwrap, std::result::Result<(), String>>>> =
        OnceLock::new();
    let probes = PROBES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut probes = probes.lock().unwrap_or_else(|poison| poison.into_inner());
    let outcome = probes
        .entry(bwrap.clone())
        .or_insert_with(|| bwrap.probe(path))
        .clone();
    outcome.map(|()| bwrap)
}

fn find_program(path: Option<&OsStr>, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

impl Bwrap {
    /// Runs `true` in an otherwise complete sandbox: user namespaces can be disabled, bwrap
    /// can lack privileges in a container, a seccomp policy can forbid `unshare`.
    fn probe(&self, path: Option<&OsStr>) -> std::result::Result<(), String> {
        let mut command = Command::new(&self.program);
        command
            .args(self.namespace_args())
            .args(system_args())
            .args(self.user_args())
            .arg("true")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null());
        if let Some(path) = path {
            command.env("PATH", path);
        }
        let output = command
            .output()
            .map_err(|error| format!("`{}` cannot be started: {error}", self.program.display()))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail = stderr.lines().find(|line| !line.trim().is_empty());
        Err(format!(
            "`{}` does not work here ({}): {}",
            self.program.display(),
            output.status,
            detail.unwrap_or("no message")
        ))
    }

    /// The sandboxed command `program arguments...`. The caller sets the environment; the
    /// working directory is the slot.
    pub fn command(&self, mounts: &Mounts, program: &str, arguments: &[OsString]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(self.namespace_args())
            .args(system_args())
            .args(mount_args(mounts))
            .args(["--chdir", SANDBOX_SLOT])
            .args(self.user_args())
            .arg(program)
            .args(arguments)
            // bwrap itself runs outside; `--chdir` moves the build into the slot.
            .current_dir("/");
        command
    }

    /// A one-line description for the build log.
    pub fn describe(&self) -> String {
        let user = match self.drop_to {
            Some((uid, gid)) => format!("uid {uid} gid {gid}"),
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            None => format!("uid {} in a user namespace", unsafe { libc::geteuid() }),
        };
        format!(
            "bubblewrap `{}`: {user}, no network, host read-only, slot at {SANDBOX_SLOT}, \
             output at {SANDBOX_OUTPUT}",
            self.program.display()
        )
    }

    fn namespace_args(&self) -> Vec<&'static str> {
        let mut args = vec![
            // The sandbox dies with bwrap, and bwrap with imagegen (kill -9 included).
            "--die-with-parent",
            "--unshare-pid",
            // Its own network namespace: not even the host's loopback is reachable.
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            // No `--new-session`: the build already runs in a session of its own without a
            // terminal (`process`), and staying in that process group keeps every process
            // of the sandbox, its PID namespace's init included, under imagegen's group
            // signals and its wait for an empty group.
            "--hostname",
            "imagegen-build",
        ];
        if self.drop_to.is_none() {
            args.push("--unshare-user");
        }
        args
    }

    /// As root: bwrap keeps only what `setpriv` needs to become the build user, and
    /// `setpriv` gives that up too (no capabilities, no bounding set, no groups).
    fn user_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["--cap-drop", "ALL"].map(OsString::from).to_vec();
        let Some((uid, gid)) = self.drop_to else {
            args.push("--".into());
            return args;
        };
        for capability in ["CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"] {
            args.push("--cap-add".into());
            args.push(capability.into());
        }
        args.extend(
            [
                "--".to_string(),
                "setpriv".to_string(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_string(),
                "--inh-caps=-all".to_string(),
                "--bounding-set=-all".to_string(),
                "--".to_string(),
            ]
            .map(OsString::from),
        );
        args
    }
}

/// The read-only system directories (symlinks such as `/bin -> usr/bin` recreated as
/// symlinks), a fresh `/proc` and `/dev`, private `/tmp`, `/var/tmp` and `/dev/shm`, and
/// the mount points' parent `/imagegen`.
fn system_args() -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for dir in SYSTEM_DIRS {
        let Ok(metadata) = fs::symlink_metadata(dir) else {
            continue;
        };
        if metadata.file_type().is_symlink() {
            if let Ok(target) = fs::read_link(dir) {
                args.extend(["--symlink".into(), target.into_os_string(), (*dir).into()]);
            }
        } else if metadata.is_dir() {
            args.extend(["--ro-bind".into(), (*dir).into(), (*dir).into()]);
        }
    }
    // bwrap makes directories 0700 unless told otherwise, and the build user is not the
    // one making them when imagegen is root.
    let rest: [&str; 16] = [
        "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm", "--perms",
        "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/var/tmp",
    ];
    args.extend(rest.map(OsString::from));
    args.extend(["--perms", "0755", "--dir", "/imagegen"].map(OsString::from));
    args
}

fn mount_args(mounts: &Mounts) -> Vec<OsString> {
    let mut binds: Vec<(&str, &Path, PathBuf)> = vec![("--bind", mounts.slot, SANDBOX_SLOT.into())];
    if let Ok(relative) = mounts.meta.strip_prefix(mounts.slot) {
        binds.push((
            "--ro-bind",
            mounts.meta,
            Path::new(SANDBOX_SLOT).join(relative),
        ));
    }
    binds.push(("--bind", mounts.output, SANDBOX_OUTPUT.into()));
    if let Some(files) = mounts.files {
        binds.push(("--ro-bind", files, SANDBOX_FILES.into()));
    }
    if let Some(feeds) = mounts.feeds {
        binds.push(("--ro-bind", feeds, SANDBOX_FEEDS.into()));
    }
    binds
        .into_iter()
        .flat_map(|(option, host, inside)| {
            [
                OsString::from(option),
                host.as_os_str().to_owned(),
                inside.into_os_string(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for name in SandboxMode::NAMES {
            assert_eq!(SandboxMode::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(SandboxMode::default(), SandboxMode::Auto);
        let error = SandboxMode::parse("off").unwrap_err();
        assert_eq!(error.code, ErrorCode::Validation);
        assert_eq!(error.message, "unknown sandbox mode `off`");
        assert_eq!(
            serde_json::to_string(&SandboxMode::None).unwrap(),
            "\"none\""
        );
    }

    #[test]
    fn sandbox_mode_without_bwrap_is_refused_and_auto_falls_back() {
        let empty = tempfile::tempdir().unwrap();
        let path = empty.path().as_os_str();
        let error = match choose(SandboxMode::Sandbox, Some(path)) {
            Err(error) => error,
            Ok(_) => panic!("a sandbox without bwrap"),
        };
        assert_eq!(error.code, ErrorCode::Precondition);
        assert!(error.message.contains("`bwrap`"), "{}", error.message);
        match choose(SandboxMode::Auto, Some(path)).unwrap() {
            Isolation::Unsandboxed { report, warning } => {
                assert!(!report.sandboxed);
                assert!(warning.contains("WITHOUT a sandbox"));
            }
            Isolation::Sandboxed(_) => panic!("sandboxed without bwrap"),
        }
    }

    #[test]
    fn mounts_put_the_slot_bookkeeping_read_only_over_the_writable_slot() {
        let mounts = Mounts {
            slot: Path::new("/w/slots/slot-1"),
            meta: Path::new("/w/slots/slot-1/.imagegen-slot"),
            output: Path::new("/w/out/slot-1"),
            files: Some(Path::new("/w/stage/slot-1")),
            feeds: None,
        };
        let args: Vec<String> = mount_args(&mounts)
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "--bind /w/slots/slot-1 /imagegen/slot \
             --ro-bind /w/slots/slot-1/.imagegen-slot /imagegen/slot/.imagegen-slot \
             --bind /w/out/slot-1 /imagegen/out \
             --ro-bind /w/stage/slot-1 /imagegen/files"
        );
    }
}
