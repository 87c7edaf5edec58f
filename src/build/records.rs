//! A slot's memory of what it took from the pristine tree: one record per shared or copied
//! file, stored in a compact binary file inside the slot. Resets use it to tell untouched
//! entries from ones the last build replaced; the integrity check uses it to notice a build
//! that wrote through a hardlink into the pristine tree. No policy here, only the format.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorCode, Result};

const MAGIC: &[u8; 8] = b"IGSLOT1\n";

/// What a slot did with one pristine regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// Hardlinked: the slot entry *is* the pristine inode.
    Shared,
    /// A private copy (real or reflink) whose own inode and ctime are remembered.
    Copied,
    /// A real directory; the pristine mode and mtime are restored after every pass.
    Dir,
    /// A symlink the slot created; its own inode is remembered (`copy.ino`).
    Symlink,
}

/// The facts of a pristine file that a write would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileFacts {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
}

impl FileFacts {
    pub fn of(metadata: &fs::Metadata) -> FileFacts {
        FileFacts {
            ino: metadata.ino(),
            size: metadata.size(),
            mtime_ns: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
            mode: metadata.mode(),
        }
    }

    pub fn of_stat(stat: &libc::stat) -> FileFacts {
        FileFacts {
            ino: stat.st_ino,
            size: stat.st_size as u64,
            mtime_ns: stat.st_mtime * 1_000_000_000 + stat.st_mtime_nsec,
            mode: stat.st_mode,
        }
    }

    /// Same content and metadata as far as a write can tell (the inode number aside).
    pub fn same_state(&self, other: &FileFacts) -> bool {
        self.size == other.size && self.mtime_ns == other.mtime_ns && self.mode == other.mode
    }
}

/// The identity of a slot's private copy: any write or replacement changes the inode or the
/// ctime, and user space cannot set a ctime back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CopyIdentity {
    pub ino: u64,
    pub ctime_ns: i64,
}

impl CopyIdentity {
    pub fn of_stat(stat: &libc::stat) -> CopyIdentity {
        CopyIdentity {
            ino: stat.st_ino,
            ctime_ns: stat.st_ctime * 1_000_000_000 + stat.st_ctime_nsec,
        }
    }

    pub fn of(metadata: &fs::Metadata) -> CopyIdentity {
        CopyIdentity {
            ino: metadata.ino(),
            ctime_ns: metadata.ctime() * 1_000_000_000 + metadata.ctime_nsec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub kind: RecordKind,
    /// Relative to the Image Builder root.
    pub path: PathBuf,
    /// The pristine file when the slot took it.
    pub pristine: FileFacts,
    /// For [`RecordKind::Copied`]: the slot's copy.
    pub copy: CopyIdentity,
}

pub(crate) fn write_records(path: &Path, records: &[Record]) -> Result<()> {
    let temp_path = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut out = BufWriter::new(File::create(&temp_path)?);
        out.write_all(MAGIC)?;
        for record in records {
            let kind: u8 = match record.kind {
                RecordKind::Shared => b'S',
                RecordKind::Copied => b'C',
                RecordKind::Dir => b'D',
                RecordKind::Symlink => b'L',
            };
            let path_bytes = record.path.as_os_str().as_bytes();
            out.write_all(&[kind])?;
            out.write_all(&record.pristine.ino.to_le_bytes())?;
            out.write_all(&record.pristine.size.to_le_bytes())?;
            out.write_all(&record.pristine.mtime_ns.to_le_bytes())?;
            out.write_all(&record.pristine.mode.to_le_bytes())?;
            out.write_all(&record.copy.ino.to_le_bytes())?;
            out.write_all(&record.copy.ctime_ns.to_le_bytes())?;
            out.write_all(&(path_bytes.len() as u32).to_le_bytes())?;
            out.write_all(path_bytes)?;
        }
        out.into_inner()
            .map_err(|error| error.into_error())?
            .sync_all()
    };
    write().map_err(|error| Error::io("writing", &temp_path, error))?;
    fs::rename(&temp_path, path).map_err(|error| Error::io("writing", path, error))
}

pub(crate) fn read_records(path: &Path) -> Result<Vec<Record>> {
    let file = File::open(path).map_err(|error| Error::io("reading", path, error))?;
    let mut input = BufReader::new(file);
    let corrupt = || {
        Error::new(
            ErrorCode::InternalError,
            format!("the slot record file `{}` is damaged", path.display()),
        )
    };
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(|_| corrupt())?;
    if &magic != MAGIC {
        return Err(corrupt());
    }
    let mut records = Vec::new();
    loop {
        let mut kind = [0u8; 1];
        match input.read_exact(&mut kind) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(error) => return Err(Error::io("reading", path, error)),
        }
        let record = read_one(&mut input, kind[0]).ok_or_else(corrupt)?;
        records.push(record);
    }
    Ok(records)
}

fn read_one(input: &mut impl Read, kind: u8) -> Option<Record> {
    let kind = match kind {
        b'S' => RecordKind::Shared,
        b'C' => RecordKind::Copied,
        b'D' => RecordKind::Dir,
        b'L' => RecordKind::Symlink,
        _ => return None,
    };
    let pristine = FileFacts {
        ino: u64::from_le_bytes(read_array(input)?),
        size: u64::from_le_bytes(read_array(input)?),
        mtime_ns: i64::from_le_bytes(read_array(input)?),
        mode: u32::from_le_bytes(read_array(input)?),
    };
    let copy = CopyIdentity {
        ino: u64::from_le_bytes(read_array(input)?),
        ctime_ns: i64::from_le_bytes(read_array(input)?),
    };
    let length = u32::from_le_bytes(read_array(input)?) as usize;
    if length > 64 * 1024 {
        return None;
    }
    let mut path = vec![0u8; length];
    input.read_exact(&mut path).ok()?;
    Some(Record {
        kind,
        path: PathBuf::from(OsStr::from_bytes(&path)),
        pristine,
        copy,
    })
}

fn read_array<const N: usize>(input: &mut impl Read) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_any_path_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            Record {
                kind: RecordKind::Shared,
                path: PathBuf::from("staging_dir/host/bin/mkhash"),
                pristine: FileFacts {
                    ino: 7,
                    size: 12,
                    mtime_ns: -5,
                    mode: 0o100755,
                },
                copy: CopyIdentity::default(),
            },
            Record {
                kind: RecordKind::Copied,
                path: PathBuf::from(OsStr::from_bytes(b"odd\nname\xff")),
                pristine: FileFacts {
                    ino: 1,
                    size: 2,
                    mtime_ns: 3,
                    mode: 0o100644,
                },
                copy: CopyIdentity {
                    ino: 9,
                    ctime_ns: 1_700_000_000_123_456_789,
                },
            },
        ];
        let path = dir.path().join("records");
        write_records(&path, &records).unwrap();
        assert_eq!(read_records(&path).unwrap(), records);
    }

    #[test]
    fn truncated_records_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records");
        fs::write(&path, b"IGSLOT1\nS\x01\x02").unwrap();
        assert!(read_records(&path).is_err());
        fs::write(&path, b"nonsense").unwrap();
        assert!(read_records(&path).is_err());
    }
}
