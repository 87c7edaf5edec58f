//! Verification: read the written bytes back around the page cache (`O_DIRECT`) and compare
//! the SHA-256 of every block with the one taken while writing. This thread reads while
//! hasher threads hash, through a bounded channel of aligned buffers; the first mismatch
//! stops the read-back and names its offset.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use super::target::{AlignedBuffer, DeviceFile};
use super::write::{BLOCK, BUFFERS, Digest, HASHERS};
use crate::error::{Error, ErrorCode, Result};

/// A passed verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// Bytes read back and compared, from the start of the device.
    pub bytes: u64,
    /// Bytes per compared block (the last may be shorter).
    pub block_size: u64,
    pub blocks: u64,
    /// SHA-256 over the concatenated block digests: one value for records and reports.
    pub digest: String,
}

/// One block read back, on its way to a hasher.
struct ReadBlock {
    index: usize,
    length: usize,
    buffer: AlignedBuffer,
}

/// Reads back the first `bytes` bytes and compares each block with `expected`.
pub(crate) fn verify(
    device: &DeviceFile,
    expected: &[Digest],
    bytes: u64,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<Verification> {
    device
        .set_direct(true)
        .map_err(|error| device.io_error("reading back", error))?;
    let (pool_sender, pool) = bounded::<AlignedBuffer>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = pool_sender.send(AlignedBuffer::new(BLOCK));
    }
    let first_mismatch = Mutex::new(None::<usize>);
    let mismatched = AtomicBool::new(false);
    let verified = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let (sender, receiver) = bounded::<ReadBlock>(BUFFERS);
        for _ in 0..HASHERS {
            let receiver = receiver.clone();
            let (pool_sender, first_mismatch, mismatched, verified) =
                (&pool_sender, &first_mismatch, &mismatched, &verified);
            scope.spawn(move || {
                let check = Check {
                    expected,
                    first_mismatch,
                    mismatched,
                    verified,
                };
                check.run(receiver, pool_sender);
            });
        }
        drop(receiver);
        let read = read_blocks(
            device,
            bytes,
            &pool,
            sender,
            &mismatched,
            cancel,
            &verified,
            progress,
        );
        read?;
        Ok::<(), Error>(())
    })?;
    let mismatch = *first_mismatch
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if let Some(index) = mismatch {
        return Err(mismatch_error(device, index));
    }
    progress(bytes);
    let mut overall = Sha256::new();
    for digest in expected {
        overall.update(digest);
    }
    Ok(Verification {
        bytes,
        block_size: BLOCK as u64,
        blocks: expected.len() as u64,
        digest: hex::encode(overall.finalize()),
    })
}

/// The reading side, on the calling thread. Stops at the first mismatch a hasher reports.
#[allow(clippy::too_many_arguments)]
fn read_blocks(
    device: &DeviceFile,
    bytes: u64,
    pool: &Receiver<AlignedBuffer>,
    sender: Sender<ReadBlock>,
    mismatched: &AtomicBool,
    cancel: &AtomicBool,
    verified: &AtomicU64,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let block = BLOCK as u64;
    let blocks = bytes.div_ceil(block) as usize;
    for index in 0..blocks {
        if mismatched.load(Ordering::Relaxed) {
            break;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorCode::Interrupted,
                format!("interrupted while verifying `{}`", device.path().display()),
            )
            .with_help("the image was written but not verified; flash again to be sure"));
        }
        let Ok(mut buffer) = pool.recv() else { break };
        let offset = index as u64 * block;
        let length = (bytes - offset).min(block) as usize;
        // Direct reads need whole logical blocks; only `length` bytes are compared.
        let aligned = (length as u64).next_multiple_of(device.logical_block) as usize;
        let read = device
            .read_at(&mut buffer[..aligned.min(BLOCK)], offset)
            .map_err(|error| device.io_error("reading back", error))?;
        // A short read (the device ended early) hashes fewer bytes, so the block fails.
        let length = length.min(read);
        if sender
            .send(ReadBlock {
                index,
                length,
                buffer,
            })
            .is_err()
        {
            break;
        }
        progress(verified.load(Ordering::Relaxed));
    }
    Ok(())
}

/// What a hasher thread compares against and where it reports.
struct Check<'a> {
    expected: &'a [Digest],
    first_mismatch: &'a Mutex<Option<usize>>,
    mismatched: &'a AtomicBool,
    verified: &'a AtomicU64,
}

impl Check<'_> {
    fn run(&self, blocks: Receiver<ReadBlock>, pool: &Sender<AlignedBuffer>) {
        for block in blocks {
            let digest: Digest = Sha256::digest(&block.buffer[..block.length]).into();
            if self.expected.get(block.index) == Some(&digest) {
                self.verified
                    .fetch_add(block.length as u64, Ordering::Relaxed);
            } else {
                self.mismatched.store(true, Ordering::Relaxed);
                let mut first = self
                    .first_mismatch
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                *first = Some(first.map_or(block.index, |known| known.min(block.index)));
            }
            let _ = pool.send(block.buffer);
        }
    }
}

fn mismatch_error(device: &DeviceFile, index: usize) -> Error {
    let offset = index as u64 * BLOCK as u64;
    Error::new(
        ErrorCode::FlashHashMismatch,
        format!(
            "`{}` does not hold what was written: the block at byte {offset} reads back different",
            device.path().display()
        ),
    )
    .with_help(
        "the medium did not keep the data (failing, or fake and smaller than it claims); \
         do not use it, try another card or stick",
    )
    .with_details(serde_json::json!({
        "device": device.path(),
        "offset": offset,
        "block_size": BLOCK,
    }))
}
