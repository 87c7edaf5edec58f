//! Directory-relative file operations (`openat`, `linkat`, `mkdirat`, `fstatat`, ...) on an
//! open directory descriptor. Slots create tens of thousands of entries; resolving a deep
//! path for every one of them is a measurable share of the time, a directory descriptor
//! avoids it. Thin wrappers only: no policy.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What `readdir` says about one entry, without a `stat`.
pub(crate) struct RawEntry {
    pub name: CString,
    pub ino: u64,
    pub kind: EntryKind,
}

impl RawEntry {
    pub fn os_name(&self) -> &OsStr {
        OsStr::from_bytes(self.name.to_bytes())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Directory,
    File,
    Symlink,
    Other,
}

impl EntryKind {
    fn from_mode(mode: u32) -> EntryKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => EntryKind::Directory,
            libc::S_IFREG => EntryKind::File,
            libc::S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
}

/// An open directory.
pub(crate) struct DirFd(OwnedFd);

fn check(status: libc::c_int) -> io::Result<libc::c_int> {
    if status < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(status)
    }
}

pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

impl DirFd {
    pub fn open(path: &Path) -> io::Result<DirFd> {
        let path = c_path(path)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: `path` is a valid C string; the returned descriptor is owned below.
        let fd = check(unsafe { libc::open(path.as_ptr(), flags) })?;
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(DirFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn raw(&self) -> libc::c_int {
        self.0.as_raw_fd()
    }

    /// The entries except `.` and `..`, in directory order.
    pub fn entries(&self) -> io::Result<Vec<RawEntry>> {
        // SAFETY: dup of a descriptor we own; fdopendir takes ownership of the copy, and
        // closedir releases it. Entry pointers are only read before the next readdir.
        unsafe {
            let fd = check(libc::dup(self.raw()))?;
            let dir = libc::fdopendir(fd);
            if dir.is_null() {
                let error = io::Error::last_os_error();
                libc::close(fd);
                return Err(error);
            }
            libc::rewinddir(dir);
            let mut entries = Vec::new();
            let result = loop {
                *libc::__errno_location() = 0;
                let entry = libc::readdir64(dir);
                if entry.is_null() {
                    let errno = *libc::__errno_location();
                    break if errno == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(errno))
                    };
                }
                let name = CStr::from_ptr((*entry).d_name.as_ptr());
                if name.to_bytes() == b"." || name.to_bytes() == b".." {
                    continue;
                }
                let kind = match (*entry).d_type {
                    libc::DT_DIR => EntryKind::Directory,
                    libc::DT_REG => EntryKind::File,
                    libc::DT_LNK => EntryKind::Symlink,
                    libc::DT_UNKNOWN => EntryKind::Other,
                    _ => EntryKind::Other,
                };
                let unknown = (*entry).d_type == libc::DT_UNKNOWN;
                entries.push((name.to_owned(), (*entry).d_ino, kind, unknown));
            };
            libc::closedir(dir);
            result?;
            entries
                .into_iter()
                .map(|(name, ino, kind, unknown)| {
                    let kind = if unknown {
                        EntryKind::from_mode(self.stat_at(&name)?.st_mode)
                    } else {
                        kind
                    };
                    Ok(RawEntry { name, ino, kind })
                })
                .collect()
        }
    }

    /// `lstat` of an entry.
    pub fn stat_at(&self, name: &CStr) -> io::Result<libc::stat> {
        // SAFETY: stat is plain data, filled by fstatat on success.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, C string and out-pointer.
        check(unsafe {
            libc::fstatat(
                self.raw(),
                name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(stat)
    }

    pub fn mkdir_at(&self, name: &CStr, mode: u32) -> io::Result<()> {
        // SAFETY: valid descriptor and C string.
        check(unsafe { libc::mkdirat(self.raw(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
    }

    /// Hardlinks `name` here as `target_name` in `target`.
    pub fn link_at(&self, name: &CStr, target: &DirFd, target_name: &CStr) -> io::Result<()> {
        // SAFETY: valid descriptors and C strings; flags 0 (do not follow symlinks).
        check(unsafe {
            libc::linkat(
                self.raw(),
                name.as_ptr(),
                target.raw(),
                target_name.as_ptr(),
                0,
            )
        })
        .map(drop)
    }

    pub fn symlink_at(&self, target: &CStr, name: &CStr) -> io::Result<()> {
        // SAFETY: valid descriptor and C strings.
        check(unsafe { libc::symlinkat(target.as_ptr(), self.raw(), name.as_ptr()) }).map(drop)
    }

    /// Sets an entry's mtime without following a symlink (atime untouched).
    pub fn set_mtime_at(&self, name: &CStr, seconds: i64, nanoseconds: i64) -> io::Result<()> {
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: seconds,
                tv_nsec: nanoseconds,
            },
        ];
        // SAFETY: valid descriptor, C string and two valid timespecs.
        check(unsafe {
            libc::utimensat(
                self.raw(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
    }

    pub fn read_link_at(&self, name: &CStr) -> io::Result<CString> {
        let mut buffer = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: the buffer is writable for its full length.
        let length = unsafe {
            libc::readlinkat(
                self.raw(),
                name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if length < 0 {
            return Err(io::Error::last_os_error());
        }
        buffer.truncate(length as usize);
        CString::new(buffer)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "link target contains NUL"))
    }

    /// Opens a subdirectory, refusing a symlink.
    pub fn open_dir_at(&self, name: &CStr) -> io::Result<DirFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: valid descriptor and C string; the new descriptor is owned below.
        let fd = check(unsafe { libc::openat(self.raw(), name.as_ptr(), flags) })?;
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(DirFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn open_file_at(&self, name: &CStr) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: valid descriptor and C string; the new descriptor is owned by the File.
        let fd = check(unsafe { libc::openat(self.raw(), name.as_ptr(), flags) })?;
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Creates a new file (failing if the name exists), mode 0600 until the caller sets it.
    pub fn create_file_at(&self, name: &CStr) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
        // SAFETY: as for open_file_at; the mode argument is required with O_CREAT.
        let fd = check(unsafe {
            libc::openat(self.raw(), name.as_ptr(), flags, 0o600 as libc::c_uint)
        })?;
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Changes an entry's owner without following a symlink.
    pub fn chown_at(&self, name: &CStr, (uid, gid): (u32, u32)) -> io::Result<()> {
        // SAFETY: valid descriptor and C string.
        check(unsafe {
            libc::fchownat(
                self.raw(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
    }

    pub fn unlink_at(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: valid descriptor and C string.
        check(unsafe { libc::unlinkat(self.raw(), name.as_ptr(), 0) }).map(drop)
    }

    pub fn stat(&self) -> io::Result<libc::stat> {
        // SAFETY: stat is plain data, filled by fstat on success.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out-pointer.
        check(unsafe { libc::fstat(self.raw(), &mut stat) })?;
        Ok(stat)
    }

    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        // SAFETY: valid descriptor.
        check(unsafe { libc::fchmod(self.raw(), (mode & 0o7777) as libc::mode_t) }).map(drop)
    }
}

/// Reads a file a build wrote at `relative` below `dir`: no symlink is followed below `dir`,
/// a FIFO or device is refused instead of blocking, and at most `limit` bytes are read. A
/// sandboxed build can plant a link to `/root/...` that only imagegen could follow; this
/// read does not. `Ok(None)` when the file does not exist.
pub(crate) fn read_build_file(
    dir: &Path,
    relative: &Path,
    limit: u64,
) -> io::Result<Option<Vec<u8>>> {
    let not_found = |error: &io::Error| error.kind() == io::ErrorKind::NotFound;
    let mut parts: Vec<CString> = Vec::new();
    for part in relative.components() {
        match part {
            std::path::Component::Normal(name) => parts.push(c_path(Path::new(name))?),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a plain relative path",
                ));
            }
        }
    }
    let Some((name, parents)) = parts.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
    };
    let mut current = match DirFd::open(dir) {
        Ok(fd) => fd,
        Err(error) if not_found(&error) => return Ok(None),
        Err(error) => return Err(error),
    };
    for parent in parents {
        current = match current.open_dir_at(parent) {
            Ok(fd) => fd,
            Err(error) if not_found(&error) => return Ok(None),
            Err(error) => return Err(error),
        };
    }
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    // SAFETY: valid descriptor and C string; the new descriptor is owned by the File.
    let fd = unsafe { libc::openat(current.raw(), name.as_ptr(), flags) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return if not_found(&error) {
            Ok(None)
        } else {
            Err(error)
        };
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, limit), &mut bytes)?;
    Ok(Some(bytes))
}
