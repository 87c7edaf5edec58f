//! The opened target: an exclusive (`O_EXCL`) handle on the whole disk that writes and
//! reads around the page cache (`O_DIRECT`), the block-device ioctls, and the page-aligned
//! buffers direct I/O needs.
//!
//! The only `unsafe` of the flash module lives here: `ioctl(2)` and the aligned allocation.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use super::preflight::{self, Target, TargetKind};
use crate::error::{Error, ErrorCode, Result};

/// Alignment of every buffer handed to direct I/O: a page, which covers any logical block
/// size a disk reports (512 or 4096).
pub(crate) const BUFFER_ALIGN: usize = 4096;

// Block-device ioctls from <linux/fs.h> (the generic `_IO`/`_IOR` encoding of x86, arm and
// riscv). libc does not define all of them.
const BLKROGET: u64 = 0x125e;
const BLKRRPART: u64 = 0x125f;
const BLKFLSBUF: u64 = 0x1261;
const BLKSSZGET: u64 = 0x1268;
const BLKGETSIZE64: u64 = 0x8000_1272 | ((size_of::<usize>() as u64) << 16);

/// An exclusive handle on the device being flashed.
pub(crate) struct DeviceFile {
    file: File,
    path: PathBuf,
    kind: TargetKind,
    /// Bytes, from `BLKGETSIZE64` (the kernel's current answer, not sysfs's).
    pub size: u64,
    /// The unit of direct I/O.
    pub logical_block: u64,
    direct: AtomicBool,
    /// False for a regular file on a filesystem without direct I/O.
    direct_capable: bool,
}

impl DeviceFile {
    /// Opens `target` exclusively: `O_EXCL` on a block device fails while anything else
    /// holds it (a mount, device-mapper, another flash). `write: false` is for `--dry-run`,
    /// which must not change anything.
    pub fn open(target: &Target, write: bool) -> Result<DeviceFile> {
        let path = target.info.node.clone();
        let mut flags = libc::O_CLOEXEC | libc::O_DIRECT;
        if target.kind == TargetKind::BlockDevice {
            flags |= libc::O_EXCL;
        }
        let open = |flags: i32| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(flags)
                .open(&path)
        };
        let (file, direct) = match open(flags) {
            Ok(file) => (file, true),
            // Some filesystems (regular-file targets only) do not do direct I/O.
            Err(error)
                if error.raw_os_error() == Some(libc::EINVAL)
                    && target.kind == TargetKind::RegularFile =>
            {
                let file =
                    open(flags & !libc::O_DIRECT).map_err(|error| open_error(&path, error))?;
                (file, false)
            }
            Err(error) => return Err(open_error(&path, error)),
        };
        let mut device = DeviceFile {
            file,
            path,
            kind: target.kind,
            size: 0,
            logical_block: 512,
            direct: AtomicBool::new(direct),
            direct_capable: direct,
        };
        device.read_geometry(write)?;
        Ok(device)
    }

    fn read_geometry(&mut self, write: bool) -> Result<()> {
        if self.kind == TargetKind::RegularFile {
            self.size = self
                .file
                .metadata()
                .map_err(|error| Error::io("reading", &self.path, error))?
                .len();
            return Ok(());
        }
        let failed = |what: &str, error: io::Error| {
            Error::new(
                ErrorCode::DeviceError,
                format!("{what} of `{}`: {error}", self.path.display()),
            )
        };
        let mut size: u64 = 0;
        ioctl(&self.file, BLKGETSIZE64, &mut size).map_err(|e| failed("reading the size", e))?;
        let mut block: libc::c_int = 0;
        ioctl(&self.file, BLKSSZGET, &mut block)
            .map_err(|e| failed("reading the block size", e))?;
        let mut read_only: libc::c_int = 0;
        ioctl(&self.file, BLKROGET, &mut read_only)
            .map_err(|e| failed("reading the read-only flag", e))?;
        if write && read_only != 0 {
            return Err(preflight::read_only(&self.path));
        }
        self.size = size;
        self.logical_block = u64::try_from(block).ok().filter(|b| *b > 0).unwrap_or(512);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Switches direct I/O on or off (a tail shorter than a block goes through the cache).
    pub fn set_direct(&self, on: bool) -> io::Result<()> {
        if self.direct.load(Ordering::Relaxed) == on || (on && !self.direct_capable) {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with integer arguments only.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.direct.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Writes all of `data` at `offset`. Whole blocks go direct; a shorter tail is written
    /// through the page cache (and reaches the disk with the final `sync`).
    pub fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let block = self.logical_block as usize;
        let aligned = if offset.is_multiple_of(self.logical_block) {
            data.len() - data.len() % block
        } else {
            0
        };
        if aligned > 0 {
            self.file.write_all_at(&data[..aligned], offset)?;
        }
        if aligned < data.len() {
            self.set_direct(false)?;
            self.file
                .write_all_at(&data[aligned..], offset + aligned as u64)?;
        }
        Ok(())
    }

    /// Reads into `buffer` at `offset` until it is full or the device ends; returns the
    /// bytes read.
    pub fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self
                .file
                .read_at(&mut buffer[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(length) => filled += length,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(filled)
    }

    /// `fsync`, then drop the device's page cache so nothing stale can answer a read.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|error| self.io_error("flushing", error))?;
        if self.kind == TargetKind::BlockDevice {
            // Best effort: needs CAP_SYS_ADMIN; direct reads bypass the cache anyway.
            let _ = ioctl(&self.file, BLKFLSBUF, &mut 0u64);
        }
        Ok(())
    }

    /// Asks the kernel to read the new partition table. Best effort: loop devices without
    /// partition scanning refuse, and udev does the same when we close the device.
    pub fn reread_partitions(&self) {
        if self.kind == TargetKind::BlockDevice {
            let _ = ioctl(&self.file, BLKRRPART, &mut 0u64);
        }
    }

    pub fn io_error(&self, what: &str, error: io::Error) -> Error {
        Error::new(
            ErrorCode::FlashError,
            format!("{what} `{}`: {error}", self.path.display()),
        )
        .with_details(serde_json::json!({ "device": self.path }))
    }
}

fn open_error(path: &Path, error: io::Error) -> Error {
    match error.raw_os_error() {
        Some(libc::EBUSY) => preflight::device_error(
            ErrorCode::DeviceBusy,
            path,
            format!(
                "`{}` is busy: another program has it open exclusively",
                path.display()
            ),
        )
        .with_help(
            "close whatever uses it (a mount, a running flash, a virtual machine) and retry",
        ),
        Some(libc::EROFS) => preflight::read_only(path),
        Some(libc::ENOENT | libc::ENXIO | libc::ENOMEDIUM) => preflight::device_error(
            ErrorCode::DeviceNotFound,
            path,
            format!("`{}` has no medium or went away", path.display()),
        )
        .with_help("insert the card or stick and retry"),
        _ => Error::io("opening", path, error),
    }
}

/// `ioctl(fd, request, &mut value)`.
fn ioctl<T>(file: &File, request: u64, value: &mut T) -> io::Result<()> {
    // SAFETY: every request used here reads or writes at most `size_of::<T>()` bytes through
    // the pointer, and callers pass a `T` of the size the kernel expects for it.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), request as _, value as *mut T) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A zeroed, page-aligned heap buffer for direct I/O.
pub(crate) struct AlignedBuffer {
    pointer: NonNull<u8>,
    length: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a `Box<[u8]>`.
unsafe impl Send for AlignedBuffer {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedBuffer {}

impl AlignedBuffer {
    pub fn new(length: usize) -> AlignedBuffer {
        let layout = Self::layout(length);
        // SAFETY: the layout has a non-zero size (at least one alignment unit).
        let raw = unsafe { alloc_zeroed(layout) };
        let pointer = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuffer { pointer, length }
    }

    fn layout(length: usize) -> Layout {
        Layout::from_size_align(length.max(BUFFER_ALIGN), BUFFER_ALIGN)
            .expect("direct-I/O buffers are a few MiB, far below the layout limit")
    }
}

impl std::ops::Deref for AlignedBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `pointer` is valid for `length` initialised bytes for the buffer's life.
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr(), self.length) }
    }
}

impl std::ops::DerefMut for AlignedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr(), self.length) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this same layout.
        unsafe { dealloc(self.pointer.as_ptr(), Self::layout(self.length)) }
    }
}
