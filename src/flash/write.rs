//! Writing: the optional wipe of both ends of the disk, then the image stream in 4 MiB
//! direct writes. The calling thread reads and decompresses; a writer thread writes while
//! hasher threads take the SHA-256 of each block for the read-back, so decompression,
//! writing and hashing overlap and the image is read exactly once.
//!
//! Threads are scoped to the call (like the fetch pipeline's extractor) and a bounded pool
//! of page-aligned buffers caps memory at `BUFFERS` blocks whatever the image size.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};
use sha2::{Digest as _, Sha256};

use super::source::{decode_error, read_up_to};
use super::target::{AlignedBuffer, DeviceFile};
use crate::error::{Error, ErrorCode, Result};

/// Bytes per write, per read-back and per verified block.
pub(crate) const BLOCK: usize = 4 * 1024 * 1024;
/// Blocks in flight: one being filled, one being written, the rest being hashed or queued.
pub(crate) const BUFFERS: usize = 4;
/// SHA-256 is sequential per block, so two cores need two hashers.
pub(crate) const HASHERS: usize = 2;
/// How much of each end `--wipe` clears: covers the MBR, the primary GPT (34 sectors of 512
/// or 6 of 4096 bytes) and the backup GPT at the end, with room for other signatures.
pub(crate) const WIPE_BYTES: u64 = 1024 * 1024;

/// The SHA-256 of one block.
pub(crate) type Digest = [u8; 32];

/// What one write produced: the bytes written and the digests of the first `hash_limit`
/// bytes, block by block.
#[derive(Debug)]
pub(crate) struct WriteOutcome {
    pub bytes: u64,
    pub digests: Vec<Digest>,
}

/// What the writing loop needs besides the stream.
pub(crate) struct WriteJob<'a> {
    pub device: &'a DeviceFile,
    pub image: &'a Path,
    /// Hash the first this-many bytes (0: no verification, no hashing).
    pub hash_limit: u64,
    pub cancel: &'a AtomicBool,
}

/// A filled buffer shared by the writer and a hasher; it goes back to the pool when both
/// are done with it.
struct Block {
    index: usize,
    offset: u64,
    length: usize,
    buffer: Option<AlignedBuffer>,
    pool: Sender<AlignedBuffer>,
}

impl Block {
    fn data(&self) -> &[u8] {
        self.buffer
            .as_deref()
            .map_or(&[][..], |buffer| &buffer[..self.length])
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let _ = self.pool.send(buffer);
        }
    }
}

/// Zeroes the first and the last [`WIPE_BYTES`] of the device (all of it when smaller), so
/// no stale partition table survives at either end.
pub(crate) fn wipe(device: &DeviceFile) -> Result<u64> {
    let length = WIPE_BYTES.min(device.size);
    let zeros = AlignedBuffer::new(length as usize);
    let end = device.size - length;
    let end = end - end % device.logical_block;
    for offset in [end, 0] {
        device
            .write_all_at(&zeros, offset)
            .map_err(|error| device.io_error("wiping", error))?;
    }
    device
        .set_direct(true)
        .map_err(|error| device.io_error("wiping", error))?;
    Ok(if end == 0 { length } else { 2 * length })
}

/// Streams `source` onto the device from offset 0. `progress(bytes_written)` is called on
/// this thread after every block read.
pub(crate) fn write_stream(
    job: &WriteJob<'_>,
    source: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> Result<WriteOutcome> {
    let (pool_sender, pool) = bounded::<AlignedBuffer>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = pool_sender.send(AlignedBuffer::new(BLOCK));
    }
    let written = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (write_sender, write_receiver) = bounded::<Arc<Block>>(BUFFERS);
        let (hash_sender, hash_receiver) = bounded::<Arc<Block>>(BUFFERS);
        let writer = scope.spawn(|| write_blocks(job.device, write_receiver, &written, &failed));
        let hashers: Vec<_> = (0..if job.hash_limit > 0 { HASHERS } else { 0 })
            .map(|_| {
                let receiver = hash_receiver.clone();
                scope.spawn(move || hash_blocks(receiver, job.hash_limit))
            })
            .collect();
        drop(hash_receiver);
        let feeding = feed(
            job,
            source,
            &pool,
            &pool_sender,
            &write_sender,
            &hash_sender,
            &failed,
            &written,
            progress,
        );
        drop(write_sender);
        drop(hash_sender);
        let wrote = writer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the flash writer thread panicked")));
        let mut digests: Vec<(usize, Digest)> = Vec::new();
        for hasher in hashers {
            digests.extend(hasher.join().unwrap_or_default());
        }
        // A write failure explains a stopped feed better than the feed's own view.
        wrote?;
        let bytes = feeding?;
        progress(written.load(Ordering::Relaxed));
        digests.sort_by_key(|(index, _)| *index);
        let hashed = bytes.min(job.hash_limit).div_ceil(BLOCK as u64);
        if digests.len() as u64 != hashed {
            return Err(Error::internal(format!(
                "{} of {hashed} block digests were taken: a hasher thread failed",
                digests.len()
            )));
        }
        Ok(WriteOutcome {
            bytes,
            digests: digests.into_iter().map(|(_, digest)| digest).collect(),
        })
    })
}

/// The reading side: fills buffers from the stream and hands them to the writer and the
/// hashers. Returns the bytes read.
#[allow(clippy::too_many_arguments)]
fn feed(
    job: &WriteJob<'_>,
    source: &mut dyn Read,
    pool: &Receiver<AlignedBuffer>,
    pool_sender: &Sender<AlignedBuffer>,
    write_sender: &Sender<Arc<Block>>,
    hash_sender: &Sender<Arc<Block>>,
    failed: &AtomicBool,
    written: &AtomicU64,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let device = job.device;
    let mut offset: u64 = 0;
    for index in 0.. {
        if job.cancel.load(Ordering::Relaxed) {
            return Err(interrupted(device, written.load(Ordering::Relaxed)));
        }
        let Ok(mut buffer) = pool.recv() else { break };
        if failed.load(Ordering::Relaxed) {
            break;
        }
        let length =
            read_up_to(source, &mut buffer).map_err(|error| decode_error(job.image, &error))?;
        if length == 0 {
            break;
        }
        if offset + length as u64 > device.size {
            return Err(too_large_while_writing(job, offset + length as u64));
        }
        let block = Arc::new(Block {
            index,
            offset,
            length,
            buffer: Some(buffer),
            pool: pool_sender.clone(),
        });
        if offset < job.hash_limit && hash_sender.send(Arc::clone(&block)).is_err() {
            break;
        }
        if write_sender.send(block).is_err() {
            break;
        }
        offset += length as u64;
        progress(written.load(Ordering::Relaxed));
        if length < BLOCK {
            break;
        }
    }
    Ok(offset)
}

/// The writer thread. After a failure it keeps draining so buffers return to the pool and
/// the feeder never waits forever.
fn write_blocks(
    device: &DeviceFile,
    blocks: Receiver<Arc<Block>>,
    written: &AtomicU64,
    failed: &AtomicBool,
) -> Result<()> {
    let mut failure = None;
    for block in blocks {
        if failure.is_some() {
            continue;
        }
        match device.write_all_at(block.data(), block.offset) {
            Ok(()) => {
                written.fetch_add(block.length as u64, Ordering::Relaxed);
            }
            Err(error) => {
                failed.store(true, Ordering::Relaxed);
                let done = written.load(Ordering::Relaxed);
                failure = Some(device.io_error(&format!("writing at byte {done} of"), error));
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

fn hash_blocks(blocks: Receiver<Arc<Block>>, hash_limit: u64) -> Vec<(usize, Digest)> {
    blocks
        .iter()
        .map(|block| {
            let wanted = (hash_limit - block.offset).min(block.length as u64) as usize;
            (block.index, Sha256::digest(&block.data()[..wanted]).into())
        })
        .collect()
}

fn interrupted(device: &DeviceFile, written: u64) -> Error {
    Error::new(
        ErrorCode::Interrupted,
        format!(
            "interrupted after writing {written} bytes to `{}`",
            device.path().display()
        ),
    )
    .with_help("the device holds a partial image; flash it again before using it")
}

fn too_large_while_writing(job: &WriteJob<'_>, at_least: u64) -> Error {
    let device = job.device;
    Error::new(
        ErrorCode::ImageTooLarge,
        format!(
            "image `{}` is larger than `{}` ({} bytes): it decompresses to at least {at_least} bytes",
            job.image.display(),
            device.path().display(),
            device.size
        ),
    )
    .with_help(
        "gzip does not record the decompressed size, so this showed only while writing; the \
         device holds a partial image. `--dry-run` finds this without writing",
    )
    .with_details(serde_json::json!({ "device": device.path() }))
}
