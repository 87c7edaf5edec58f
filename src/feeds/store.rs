//! The local package cache: package files by sha256 (`<cache_dir>/packages/`, the same
//! content-addressed layout as the artifact store, [`crate::cas`]), shared by every build
//! and builder. A file enters only after its size and SHA-256 matched the signed index, and
//! is re-hashed whenever a build is about to use it, so a damaged blob is noticed (removed
//! and fetched again), never installed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::index::PackageFile;
use crate::cas::Cas;
use crate::error::{Error, ErrorCode, Result};
use crate::imagebuilder::MirrorClient;

/// The package cache below `cache_dir`.
pub fn open(cache_dir: &Path) -> Result<Cas> {
    Cas::open(&cache_dir.join("packages"))
}

/// Whether the cache holds the file (by name only: cheap, for plans).
pub(crate) fn has(cas: &Cas, sha256: &str) -> bool {
    cas.contains(sha256)
}

/// The cached blob for `file`, verified by re-hashing; a blob that no longer matches is
/// removed and `None` returned (so it is downloaded again).
pub(crate) fn verified(cas: &Cas, file: &PackageFile) -> Result<Option<PathBuf>> {
    if !cas.contains(file.sha256) {
        return Ok(None);
    }
    let path = cas.blob_path(file.sha256);
    let (sha256, size) = crate::cas::sha256_file(&path)?;
    if sha256 == file.sha256 && size == file.size {
        return Ok(Some(path));
    }
    tracing::warn!(path = %path.display(), "a cached package file was damaged; fetching it again");
    cas.remove(file.sha256)?;
    Ok(None)
}

/// Downloads `<feed_dir>/<filename>` into the cache. The file must have the index's size and
/// SHA-256: anything else is refused (`download_error`) and nothing is kept.
pub(crate) fn download(
    client: &MirrorClient,
    cas: &Cas,
    feed_dir: &str,
    file: &PackageFile,
    work_dir: &Path,
) -> Result<PathBuf> {
    std::fs::create_dir_all(work_dir).map_err(|error| Error::io("creating", work_dir, error))?;
    // Builds run in parallel and share many packages: every download gets its own file.
    static DOWNLOADS: AtomicU64 = AtomicU64::new(0);
    let partial = work_dir.join(format!(
        "{}.{}.{}.download",
        file.sha256,
        std::process::id(),
        DOWNLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let url_path = format!("{feed_dir}/{}", file.filename);
    let url = client.url_of(&url_path);
    let result = client.download(&url_path, &partial).and_then(|_| {
        let (sha256, size) = crate::cas::sha256_file(&partial)?;
        if size != file.size || sha256 != file.sha256 {
            return Err(Error::new(
                ErrorCode::DownloadError,
                format!(
                    "`{url}` does not match its signed feed index: expected {} bytes with sha256 {}, got {size} bytes with sha256 {sha256}",
                    file.size, file.sha256
                ),
            )
            .with_help("the mirror is mid-sync or tampered with; retry later or use another mirror, and check with `imagegen plan` whether the feed was re-published"));
        }
        cas.put_file(&partial).map(|_| cas.blob_path(file.sha256))
    });
    // A failed or refused download leaves nothing to resume from: package files are small.
    let _ = std::fs::remove_file(&partial);
    let _ = std::fs::remove_file(crate::imagebuilder::mirror::part_path(&partial));
    result
}
