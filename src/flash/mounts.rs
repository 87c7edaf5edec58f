//! Who uses a disk right now: mounts (`/proc/self/mountinfo`), active swap (`/proc/swaps`)
//! and the system mounts (`/`, `/boot`, `/boot/efi`), followed down through device-mapper,
//! md and other stacked devices (`slaves/` in sysfs) to the whole disks underneath.
//!
//! A snapshot: read once per operation, so every check of one flash sees the same view.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::device::{DevNumber, Host, list_names, parent_disk_name, read_trimmed, sys_block};

/// Mountpoints whose disk a flash must never touch, even when the mount is indirect.
const SYSTEM_MOUNTPOINTS: [&str; 3] = ["/", "/boot", "/boot/efi"];
/// Stacking deeper than this is a loop in sysfs, not a real setup.
const MAX_STACK_DEPTH: usize = 16;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub dev: DevNumber,
    pub mountpoint: String,
    /// The mount source (`/dev/sda1`), used when `dev` is an anonymous number (btrfs).
    pub source: String,
}

/// The usage snapshot: mountpoints by device number and the system uses of whole disks.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    mounts: BTreeMap<DevNumber, Vec<String>>,
    system: BTreeMap<String, BTreeSet<String>>,
}

impl Usage {
    /// Reads the mount table and the swap list of `host`. Unreadable files count as empty:
    /// the kernel's own `O_EXCL` check still stands behind these.
    pub fn read(host: &Host) -> Usage {
        let mountinfo = fs::read_to_string(host.path("/proc/self/mountinfo")).unwrap_or_default();
        let swaps = fs::read_to_string(host.path("/proc/swaps")).unwrap_or_default();
        let swap_devices: Vec<DevNumber> = parse_swaps(&swaps)
            .iter()
            .filter_map(|path| swap_device(host, path))
            .collect();
        Usage::from_parts(host, &parse_mountinfo(&mountinfo), &swap_devices)
    }

    pub(crate) fn from_parts(host: &Host, entries: &[MountEntry], swaps: &[DevNumber]) -> Usage {
        let mut usage = Usage::default();
        for entry in entries {
            let dev = resolve_mount_device(host, entry);
            usage
                .mounts
                .entry(dev)
                .or_default()
                .push(entry.mountpoint.clone());
            if SYSTEM_MOUNTPOINTS.contains(&entry.mountpoint.as_str()) {
                usage.add_system_use(host, dev, &entry.mountpoint);
            }
        }
        for dev in swaps {
            usage.add_system_use(host, *dev, "swap");
        }
        usage
    }

    fn add_system_use(&mut self, host: &Host, dev: DevNumber, what: &str) {
        for disk in underlying_disks(host, dev) {
            self.system
                .entry(disk)
                .or_default()
                .insert(what.to_string());
        }
    }

    /// Where the device with this number is mounted directly.
    pub fn mountpoints_of(&self, dev: DevNumber) -> Vec<String> {
        self.mounts.get(&dev).cloned().unwrap_or_default()
    }

    /// What the system needs from the whole disk `name` (`/`, `/boot`, `swap`, ...).
    pub fn system_uses_of_disk(&self, name: &str) -> Vec<String> {
        self.system
            .get(name)
            .map(|uses| uses.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Parses `/proc/self/mountinfo`: `id parent major:minor root mountpoint options
/// [optional...] - fstype source superoptions`.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dev = DevNumber::parse(fields.get(2)?)?;
            let mountpoint = unescape(fields.get(4)?);
            let separator = fields.iter().position(|field| *field == "-")?;
            let source = unescape(fields.get(separator + 2).unwrap_or(&""));
            Some(MountEntry {
                dev,
                mountpoint,
                source,
            })
        })
        .collect()
}

/// Parses `/proc/swaps`: a header line, then `filename type size used priority`.
pub(crate) fn parse_swaps(text: &str) -> Vec<PathBuf> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(|name| PathBuf::from(unescape(name)))
        .collect()
}

/// The kernel escapes space, tab, newline and backslash in these files as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[index], octal) {
            (b'\\', Some(value)) => {
                out.push(value);
                index += 4;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The block device behind a mount. btrfs (and others) report an anonymous `0:N`; their
/// source names the real device.
fn resolve_mount_device(host: &Host, entry: &MountEntry) -> DevNumber {
    if entry.dev.major != 0 || !entry.source.starts_with("/dev/") {
        return entry.dev;
    }
    fs::metadata(host.path(&entry.source))
        .ok()
        .filter(|metadata| metadata.file_type().is_block_device())
        .map_or(entry.dev, |metadata| DevNumber::from_raw(metadata.rdev()))
}

/// A swap partition is the device itself; a swap file lives on its filesystem's device.
fn swap_device(host: &Host, path: &Path) -> Option<DevNumber> {
    let metadata = fs::metadata(host.path(&path.to_string_lossy())).ok()?;
    Some(if metadata.file_type().is_block_device() {
        DevNumber::from_raw(metadata.rdev())
    } else {
        DevNumber::from_raw(metadata.dev())
    })
}

/// The whole disks under a device: itself, its parent disk when it is a partition, and for
/// a stacked device (dm, md) every disk under its `slaves/`, recursively.
pub(crate) fn underlying_disks(host: &Host, dev: DevNumber) -> BTreeSet<String> {
    let mut disks = BTreeSet::new();
    if let Some(block) = sys_block(host, dev) {
        collect_disks(host, &block.dir, 0, &mut disks);
    }
    disks
}

fn collect_disks(host: &Host, dir: &Path, depth: usize, disks: &mut BTreeSet<String>) {
    if depth > MAX_STACK_DEPTH {
        return;
    }
    let slaves = list_names(&dir.join("slaves"));
    if slaves.is_empty() {
        let name = if dir.join("partition").exists() {
            parent_disk_name(dir)
        } else {
            dir.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        };
        disks.extend(name);
        return;
    }
    for slave in slaves {
        let link = host.path(&format!("/sys/class/block/{slave}"));
        if let Ok(slave_dir) = fs::canonicalize(&link) {
            collect_disks(host, &slave_dir, depth + 1, disks);
        } else if read_trimmed(&link.join("dev")).is_none() {
            disks.insert(slave);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_mountpoint_and_source() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    40 27 7:3 / /mnt/with\\040space rw shared:5 - ext4 /dev/loop3 rw\n\
                    41 27 0:45 / /data rw - btrfs /dev/sdb1 rw\n";
        let entries = parse_mountinfo(text);
        assert_eq!(
            entries,
            vec![
                MountEntry {
                    dev: DevNumber {
                        major: 254,
                        minor: 0
                    },
                    mountpoint: "/".into(),
                    source: "/dev/vda".into()
                },
                MountEntry {
                    dev: DevNumber { major: 7, minor: 3 },
                    mountpoint: "/mnt/with space".into(),
                    source: "/dev/loop3".into()
                },
                MountEntry {
                    dev: DevNumber {
                        major: 0,
                        minor: 45
                    },
                    mountpoint: "/data".into(),
                    source: "/dev/sdb1".into()
                },
            ]
        );
    }

    #[test]
    fn swaps_list_file_names() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/sda2                               partition\t8388604\t\t0\t\t-2\n\
                    /swap\\040file                           file\t\t1048572\t\t0\t\t-3\n";
        assert_eq!(
            parse_swaps(text),
            vec![PathBuf::from("/dev/sda2"), PathBuf::from("/swap file")]
        );
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        // glibc's makedev(), with numbers that need the high bits of both halves.
        let (major, minor): (u64, u64) = (4100, 70000);
        let raw = ((major & 0xfff) << 8)
            | ((major & 0xffff_f000) << 32)
            | (minor & 0xff)
            | ((minor & 0xffff_ff00) << 12);
        assert_eq!(DevNumber::from_raw(raw), DevNumber { major, minor });
    }
}
