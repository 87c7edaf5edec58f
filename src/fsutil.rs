//! Small filesystem helpers shared by every stage: whole-file-or-nothing writes, and the
//! check that imagegen's work directory is private.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, ErrorCode, Result};

/// Writes a whole file or nothing: a temp file in the same directory, fsync, rename over
/// `path`, then fsync the directory so the rename itself is durable. Creates the parent.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(directory).map_err(|error| Error::io("creating", directory, error))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".imagegen-write.")
        .tempfile_in(directory)
        .map_err(|error| Error::io("creating a temporary file in", directory, error))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|error| Error::io("writing", temp.path(), error))?;
    temp.persist(path)
        .map_err(|error| Error::io("replacing", path, error.error))?;
    // A failure here still leaves a complete file behind; only durability of the rename is
    // at stake, so it is not an error.
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// Makes sure `path` is a directory only the current user can write to, creating it (mode
/// 0700) when missing. imagegen's work directory defaults to a place in the shared `$TMPDIR`
/// whose name anyone can predict: a symlink planted there would redirect what imagegen later
/// deletes and writes, a directory made by someone else would let them swap its content.
/// Refuses (with `permission_error`) a symlink, a non-directory, a directory owned by another
/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// user, and one that group or others may write to. The parent must exist or be creatable.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|error| Error::io("creating", parent, error))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(Error::io("creating", path, error)),
    }
    let metadata =
        std::fs::symlink_metadata(path).map_err(|error| Error::io("reading", path, error))?;
    let uid = effective_uid();
    let mode = metadata.permissions().mode() & 0o7777;
    let problem = if metadata.file_type().is_symlink() {
        "is a symbolic link".to_string()
    } else if !metadata.is_dir() {
        "is not a directory".to_string()
    } else if metadata.uid() != uid {
        format!("belongs to uid {}, not to you (uid {uid})", metadata.uid())
    } else if mode & 0o022 != 0 {
        format!("can be written by other users (mode {mode:04o})")
    } else {
        return Ok(());
    };
    Err(Error::new(
        ErrorCode::PermissionError,
        format!(
            "refusing the work directory `{}`: it {problem}",
            path.display()
        ),
    )
    .with_help(
        "remove it if you did not make it, or point `tmp_dir` (`OWRT_IMG_TMP_DIR`) at a \
         directory only you can write to",
    ))
}

/// Reads until `buffer` is full or the stream ends; returns the bytes read (0 only at the
/// end of the stream).
pub fn read_up_to(reader: &mut dyn std::io::Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(length) => filled += length,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_dir_is_made_0700_and_accepted_again() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("a/openwrt-imagegen-1000");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        ensure_private_dir(&dir).unwrap();
    }

    #[test]
    fn links_files_and_shared_dirs_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        let elsewhere = temp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = temp.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let error = ensure_private_dir(&link).unwrap_err();
        assert_eq!(error.code, ErrorCode::PermissionError);
        assert!(
            error.message.ends_with("it is a symbolic link"),
            "{}",
            error.message
        );
        let file = temp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(ensure_private_dir(&file).is_err());
        let shared = temp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let error = ensure_private_dir(&shared).unwrap_err();
        assert!(error.message.ends_with("(mode 1777)"), "{}", error.message);
    }
}
