//! How `make image` is started: sandboxed or not (see `sandbox`), with a cleared
//! environment, its output in the build log behind a header that says exactly what ran, and
//! (as root, sandboxed) the output directory and overlay handed to the build user.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::process::{Finish, run_supervised};
use super::run::{BuildRequest, make_arguments, now_rfc3339};
use super::sandbox::{Isolation, Mounts, SANDBOX_FILES, SANDBOX_OUTPUT, build_owner};
use super::slot::meta_dir;
use crate::error::{Error, Result};

/// Environment variables a build inherits; everything else is dropped, because GNU make
/// turns every environment variable into a make variable and a stray `BIN_DIR`, `FILES` or
/// `MAKEFLAGS` would change the build behind the key's back.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TZ",
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The `make image` command for this build, sandboxed or not, with its arguments (for the
/// log). Inside the sandbox the slot, overlay and output appear at fixed paths.
pub(crate) fn make_command(
    request: &BuildRequest,
    slot: &Path,
    files: Option<&Path>,
    isolation: &Isolation,
) -> Result<(Command, Vec<OsString>)> {
    let (mut command, arguments) = match isolation {
        Isolation::Sandboxed(bwrap) => {
            if let Some(owner) = build_owner() {
                hand_over(request.output_dir, files, owner)?;
            }
            let arguments = make_arguments(
                request.inputs,
                files.map(|_| Path::new(SANDBOX_FILES)),
                Path::new(SANDBOX_OUTPUT),
            )?;
            let meta = meta_dir(slot);
            let feeds = request.feeds.map(|_| super::feeds::feeds_dir(slot));
            let mounts = Mounts {
                slot,
                meta: &meta,
                output: request.output_dir,
                files,
                feeds: feeds.as_deref(),
            };
            (bwrap.command(&mounts, "make", &arguments), arguments)
        }
        Isolation::Unsandboxed { .. } => {
            let arguments = make_arguments(request.inputs, files, request.output_dir)?;
            let mut command = Command::new("make");
            command.args(&arguments).current_dir(slot);
            (command, arguments)
        }
    };
    command
        .stdin(Stdio::null())
        .env_clear()
        .envs(inherited_env())
        .env("LC_ALL", "C")
        .env("LANG", "C");
    if matches!(isolation, Isolation::Sandboxed(_)) {
        // The host's home and temp dirs do not exist inside; the private /tmp does.
        command.env("HOME", "/tmp").env("TMPDIR", "/tmp");
    }
    Ok((command, arguments))
}

/// Runs the command with its output in the build log; warns on stderr (and in the log) when
/// it runs unsandboxed.
pub(crate) fn run_logged(
    mut command: Command,
    request: &BuildRequest,
    slot: &Path,
    arguments: &[OsString],
    isolation: &Isolation,
) -> Result<Finish> {
    let sandbox_line = match isolation {
        Isolation::Sandboxed(bwrap) => format!("sandbox: {}", bwrap.describe()),
        Isolation::Unsandboxed { warning, .. } => {
            eprintln!("{warning}");
            warning.replace('\n', "\n# imagegen: ")
        }
    };
    let log = open_log(request, slot, arguments, &sandbox_line)?;
    let output_log = log
        .try_clone()
        .map_err(|error| Error::io("opening", request.log_path, error))?;
    command
        .stdout(Stdio::from(output_log))
        .stderr(Stdio::from(log));
    run_supervised(command, request.timeout, request.cancel)
}

/// As root, the sandboxed build runs as the build user: it gets the (fresh, empty) output
/// directory and the overlay it must read (files of mode 0600 included). The overlay is
/// mounted read-only, so owning it lets the build read it, not change it.
fn hand_over(output_dir: &Path, files: Option<&Path>, owner: (u32, u32)) -> Result<()> {
    chown_tree(output_dir, owner)?;
    match files {
        Some(files) => chown_tree(files, owner),
        None => Ok(()),
    }
}

/// `chown -R` without following symlinks. A change of owner clears setuid and setgid bits,
/// so modes are put back afterwards (the image must keep them).
fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    let metadata = fs::symlink_metadata(path).map_err(|error| Error::io("reading", path, error))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|error| Error::io("changing the owner of", path, error))?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    if metadata.permissions().mode() & 0o6000 != 0 {
        fs::set_permissions(path, metadata.permissions())
            .map_err(|error| Error::io("setting permissions of", path, error))?;
    }
    if metadata.is_dir() {
        for entry in fs::read_dir(path).map_err(|error| Error::io("listing", path, error))? {
            let entry = entry.map_err(|error| Error::io("listing", path, error))?;
            chown_tree(&entry.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Opens the build log (appending) and writes the exact command as its first line.
fn open_log(
    request: &BuildRequest,
    slot: &Path,
    arguments: &[OsString],
    sandbox_line: &str,
) -> Result<File> {
    if let Some(parent) = request.log_path.parent() {
        fs::create_dir_all(parent).map_err(|error| Error::io("creating", parent, error))?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(request.log_path)
        .map_err(|error| Error::io("opening", request.log_path, error))?;
    let command: Vec<String> = std::iter::once("make".to_string())
        .chain(
            arguments
                .iter()
                .map(|argument| shell_quote(&argument.to_string_lossy())),
        )
        .collect();
    let header = format!(
        "{}\n# imagegen: build {} in {} at {}\n# imagegen: {sandbox_line}\n",
        command.join(" "),
        request.build_key,
        slot.display(),
        now_rfc3339()
    );
    log.write_all(header.as_bytes())
        .map_err(|error| Error::io("writing", request.log_path, error))?;
    Ok(log)
}

fn inherited_env() -> Vec<(String, OsString)> {
    INHERITED_ENV
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (name.to_string(), value)))
        .collect()
}

/// Quotes a word for display the way a shell would need it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_header_quotes_like_a_shell() {
        assert_eq!(shell_quote("PACKAGES=a -b"), "'PACKAGES=a -b'");
        assert_eq!(shell_quote("BIN_DIR=/x/y"), "BIN_DIR=/x/y");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
