//! Reading the files a fleet repository holds (manifest, profiles, lock) as untrusted input:
//! a pull request can put a symlink, a FIFO or a device where a profile should be. So a read
//! accepts a regular file only (checked with `fstat` on the opened descriptor, opened
//! `O_NONBLOCK` so a FIFO cannot block), inside the fleet root after resolving links, and
//! never more than a hard size limit. Problems name the file, never its content.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Location, Problem};

/// Where a file may be.
#[derive(Debug, Clone, Copy)]
pub enum Containment<'a> {
    /// Anywhere: the user named the file on the command line (`profiles import FILE`).
    Anywhere,
    /// Inside this directory (the fleet root) once every link is resolved.
    Inside(&'a Path),
}

/// Reads a whole file for parsing under `containment`, refusing anything that is not a
/// regular file or is larger than `max_size` bytes.
pub fn read_bytes(
    path: &Path,
    display_name: &str,
    max_size: u64,
    containment: Containment<'_>,
) -> Result<Vec<u8>, Problem> {
    let problem = |message: String| Problem::validation(message).at(Location::file(display_name));
    let unreadable = |error: io::Error| problem(format!("cannot read `{display_name}`: {error}"));
    let (open_path, follow) = match containment {
        Containment::Anywhere => (path.to_path_buf(), true),
        Containment::Inside(root) => (inside(path, root, display_name)?, false),
    };
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !follow {
        // The canonical path has no link left; one swapped in since is refused, not followed.
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(&open_path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => problem(format!(
                "`{display_name}` changed into a symbolic link while being read"
            )),
            _ => unreadable(error),
        })?;
    let metadata = file.metadata().map_err(unreadable)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        return Err(problem(format!(
            "`{display_name}` is {}, not a regular file",
            describe(&file_type)
        ))
        .with_help("profiles, the manifest and the lock file must be plain files"));
    }
    let too_big = |size: u64| {
        problem(format!(
            "`{display_name}` is {size} bytes, more than the limit of {max_size} bytes"
        ))
    };
    if metadata.len() > max_size {
        return Err(too_big(metadata.len()));
    }
    read_limited(file, max_size)
        .map_err(unreadable)?
        .ok_or_else(|| too_big(max_size + 1))
}

/// The canonical path of `path`, which must stay inside `root` (also canonicalized).
fn inside(path: &Path, root: &Path, display_name: &str) -> Result<PathBuf, Problem> {
    let problem = |message: String| Problem::validation(message).at(Location::file(display_name));
    let canonical_root = std::fs::canonicalize(root).map_err(|error| {
        problem(format!(
            "cannot resolve the fleet root `{}`: {error}",
            root.display()
        ))
    })?;
    let canonical = std::fs::canonicalize(path)
        .map_err(|error| problem(format!("cannot read `{display_name}`: {error}")))?;
    if canonical.starts_with(&canonical_root) {
        Ok(canonical)
    } else {
        Err(problem(format!(
            "`{display_name}` resolves to `{}`, outside the fleet repository",
            canonical.display()
        ))
        .with_help(
            "files of the fleet must stay inside its root; a link leaving it is never followed",
        ))
    }
}

/// At most `max_size` bytes; `None` when the file holds more (it may have grown since fstat).
fn read_limited(file: File, max_size: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    file.take(max_size.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max_size).then_some(bytes))
}

fn describe(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path, root: &Path) -> Result<Vec<u8>, String> {
        read_bytes(path, "p.yaml", 1024, Containment::Inside(root)).map_err(|p| p.to_string())
    }

    #[test]
    fn refuses_links_out_of_the_root_fifos_devices_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fleet");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ok.yaml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink("ok.yaml", root.join("inner.yaml")).unwrap();
        std::fs::write(dir.path().join("outside.yaml"), "secret\n").unwrap();
        std::os::unix::fs::symlink("../outside.yaml", root.join("out.yaml")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.yaml")).unwrap();
        std::fs::write(root.join("big.yaml"), vec![b'x'; 1025]).unwrap();
        let fifo =
            std::ffi::CString::new(root.join("fifo.yaml").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        assert_eq!(read(&root.join("ok.yaml"), &root).unwrap(), b"a: 1\n");
        assert_eq!(read(&root.join("inner.yaml"), &root).unwrap(), b"a: 1\n");
        let out = read(&root.join("out.yaml"), &root).unwrap_err();
        assert!(out.contains("outside the fleet repository"), "{out}");
        assert!(!out.contains("secret"), "{out}");
        let zero = read(&root.join("zero.yaml"), &root).unwrap_err();
        assert!(zero.contains("outside the fleet"), "{zero}");
        let zero = read_bytes(&root.join("zero.yaml"), "z", 1024, Containment::Anywhere)
            .unwrap_err()
            .to_string();
        assert!(
            zero.contains("a character device, not a regular file"),
            "{zero}"
        );
        let fifo = read(&root.join("fifo.yaml"), &root).unwrap_err();
        assert!(fifo.contains("a FIFO, not a regular file"), "{fifo}");
        let big = read(&root.join("big.yaml"), &root).unwrap_err();
        assert!(
            big.contains("1025 bytes, more than the limit of 1024"),
            "{big}"
        );
    }
}
