//! Small filesystem helpers shared by every stage: whole-file-or-nothing writes.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

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
