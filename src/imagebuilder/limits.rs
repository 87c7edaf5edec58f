//! Caps on an Image Builder archive, enforced while it streams in: the hash of an archive is
//! known only at the end of the stream, so these bound what a wrong or hostile archive can
//! make imagegen download, write and hold in memory before that.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use crate::error::{Error, ErrorCode};

/// Most bytes the tar reader may consume on its own between two reads of ours: headers,
/// GNU long names and pax records, which it holds in memory whole. Real ones are a few
/// hundred bytes; a 4 GiB "long name" must not become a 4 GiB allocation.
pub(crate) const METADATA_BUDGET: u64 = 4 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

/// Caps on one Image Builder archive, enforced while streaming, before its hash is known:
/// what an archive with a wrong hash can write is bounded by these. The defaults leave wide
/// headroom over real Image Builders (23.05–24.10: 100–250 MB compressed, about 20,000
/// entries, 0.5–1 GB unpacked, largest file a few tens of MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveLimits {
    /// Compressed bytes of the download.
    pub max_download_bytes: u64,
    /// Total bytes of all files unpacked.
    pub max_unpacked_bytes: u64,
    /// Entries in the archive (files, directories, links).
    pub max_entries: u64,
    /// Bytes of any one file.
    pub max_file_bytes: u64,
}

impl Default for ArchiveLimits {
    fn default() -> ArchiveLimits {
        ArchiveLimits {
            max_download_bytes: 2048 * MIB,
            max_unpacked_bytes: 8192 * MIB,
            max_entries: 500_000,
            max_file_bytes: 1024 * MIB,
        }
    }
}

/// The error for an archive over one of its [`ArchiveLimits`].
pub(crate) fn over_limit(what: String) -> Error {
    Error::new(
        ErrorCode::DownloadError,
        format!("the archive is too large: {what}"),
    )
    .with_help(
        "real Image Builders stay far below these limits; the mirror may serve something else. \
         Nothing was installed",
    )
}

/// The tar reader's input, failing once the reader consumed more than the budget on its
/// own; the extractor refills the budget whenever it reads entry data itself.
pub(crate) struct BudgetReader<R> {
    pub(crate) inner: R,
    pub(crate) budget: Rc<Cell<u64>>,
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            return Err(io::Error::other(format!(
                "an entry header (long name or pax record) is larger than {} MiB",
                METADATA_BUDGET / MIB
            )));
        }
        let wanted = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buffer[..wanted])?;
        self.budget.set(left - read as u64);
        Ok(read)
    }
}
