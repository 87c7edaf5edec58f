//! What the kernel says about block devices: identity, size, flags, partitions and holders
//! from sysfs (and udev's database when there is one). Never guesses from device names.
//!
//! Everything is read under a [`Host`] root, `/` in real use and a fake tree in unit tests.
//! This module only reads; the refusals built from its answers live in `preflight`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::mounts::Usage;

/// Where the kernel's views (`/sys`, `/proc`, `/dev`, `/run/udev`) are found.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    /// The running system.
    pub fn real() -> Host {
        Host {
            root: PathBuf::from("/"),
        }
    }

    /// A fake system rooted at `root` (unit tests build `sys/`, `proc/`, ... under it).
    pub fn at(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// An absolute system path (`/sys/block`) under this host's root.
    pub(crate) fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }
}

/// A device number, `major:minor` as sysfs and `/proc/self/mountinfo` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct DevNumber {
    pub major: u64,
    pub minor: u64,
}

impl DevNumber {
    /// Splits a `dev_t` (`st_rdev`, `st_dev`) the way glibc's `major()`/`minor()` do.
    pub fn from_raw(raw: u64) -> DevNumber {
        DevNumber {
            major: ((raw >> 8) & 0xfff) | ((raw >> 32) & 0xffff_f000),
            minor: (raw & 0xff) | ((raw >> 12) & 0xffff_ff00),
        }
    }

    pub fn parse(text: &str) -> Option<DevNumber> {
        let (major, minor) = text.trim().split_once(':')?;
        Some(DevNumber {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DevNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One whole disk as the kernel describes it. `imagegen devices` lists these; a flash
/// plan shows the one it would overwrite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceInfo {
    /// The kernel name (`sdb`, `mmcblk0`, `loop3`): what a confirmation asks to type back.
    pub name: String,
    /// The device node (`/dev/sdb`).
    #[schema(value_type = String)]
    pub node: PathBuf,
    /// `major:minor`.
    pub dev: String,
    /// Bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// How it is attached: `usb`, `mmc`, `nvme`, `virtio`, `scsi`, `ata`, `loop`, `file`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Stable links in `/dev/disk/by-id` that point at this disk.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub by_id: Vec<PathBuf>,
    pub removable: bool,
    pub rotational: bool,
    pub read_only: bool,
    /// The file behind a loop device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub backing_file: Option<PathBuf>,
    #[serde(default)]
    pub partitions: Vec<PartitionInfo>,
    /// Devices stacked on this disk (device-mapper, md, bcache), named by kernel name.
    #[serde(default)]
    pub holders: Vec<String>,
    /// Where the whole disk itself is mounted (a filesystem without a partition table).
    #[serde(default)]
    pub mountpoints: Vec<String>,
    /// What the running system needs from this disk (`/`, `/boot`, `/boot/efi`, `swap`),
    /// also through device-mapper or md.
    #[serde(default)]
    pub system_uses: Vec<String>,
}

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PartitionInfo {
    pub name: String,
    #[schema(value_type = String)]
    pub node: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    pub size: u64,
    #[serde(default)]
    pub mountpoints: Vec<String>,
    #[serde(default)]
    pub holders: Vec<String>,
}

impl DeviceInfo {
    /// `SanDisk Ultra (sdb, 29.7 GiB, serial 4C53...)`, for confirmations and messages.
    pub fn describe(&self) -> String {
        let mut text = self.model.clone().unwrap_or_else(|| {
            self.backing_file.as_ref().map_or_else(
                || "unnamed device".to_string(),
                |file| format!("loop device over `{}`", file.display()),
            )
        });
        text.push_str(&format!(" ({}, {}", self.name, format_size(self.size)));
        if let Some(serial) = &self.serial {
            text.push_str(&format!(", serial {serial}"));
        }
        text.push(')');
        text
    }

    /// Every mountpoint on the disk or its partitions.
    pub fn all_mountpoints(&self) -> Vec<String> {
        let mut all = self.mountpoints.clone();
        for partition in &self.partitions {
            all.extend(partition.mountpoints.iter().cloned());
        }
        all
    }

    /// Holders of the disk and of its partitions.
    pub fn all_holders(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.holders.iter().cloned().collect();
        for partition in &self.partitions {
            all.extend(partition.holders.iter().cloned());
        }
        all.into_iter().collect()
    }
}

/// `512 B`, `4.0 MiB`, `29.7 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The sysfs directory of a block device by number, and whether it is a partition.
pub(crate) struct SysBlock {
    pub dir: PathBuf,
    pub name: String,
    pub is_partition: bool,
}

/// Looks a device number up in `/sys/dev/block`.
pub(crate) fn sys_block(host: &Host, dev: DevNumber) -> Option<SysBlock> {
    let dir = fs::canonicalize(host.path(&format!("/sys/dev/block/{dev}"))).ok()?;
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let is_partition = dir.join("partition").exists();
    Some(SysBlock {
        dir,
        name,
        is_partition,
    })
}

/// The whole disk a partition's sysfs directory belongs to (its parent directory).
pub(crate) fn parent_disk_name(partition_dir: &Path) -> Option<String> {
    Some(
        partition_dir
            .parent()?
            .file_name()?
            .to_string_lossy()
            .into_owned(),
    )
}

/// Every whole disk with media (size > 0), sorted by name, described with `usage`.
pub(crate) fn list_disks(host: &Host, usage: &Usage) -> Vec<DeviceInfo> {
    list_names(&host.path("/sys/block"))
        .iter()
        .filter_map(|name| describe_disk(host, name, usage))
        // Empty card readers and unused loop devices have no medium to write; hidden
        // devices are NVMe multipath internals.
        .filter(|info| info.size > 0)
        .filter(|info| !read_flag(&host.path(&format!("/sys/block/{}/hidden", info.name))))
        .collect()
}

/// Describes the whole disk `name` (a directory of `/sys/block`).
pub(crate) fn describe_disk(host: &Host, name: &str, usage: &Usage) -> Option<DeviceInfo> {
    let dir = host.path(&format!("/sys/block/{name}"));
    let dev = DevNumber::parse(&read_trimmed(&dir.join("dev"))?)?;
    let node = host.path(&format!("/dev/{name}"));
    let partitions = partitions(&dir, usage);
    let model = model(&dir);
    let backing_file = read_trimmed(&dir.join("loop/backing_file")).map(PathBuf::from);
    Some(DeviceInfo {
        name: name.to_string(),
        dev: dev.to_string(),
        size: read_u64(&dir.join("size")).unwrap_or(0).saturating_mul(512),
        serial: serial(host, &dir, dev),
        transport: transport(&dir),
        by_id: by_id_links(host, &node),
        removable: read_flag(&dir.join("removable")),
        rotational: read_flag(&dir.join("queue/rotational")),
        read_only: read_flag(&dir.join("ro")),
        holders: list_names(&dir.join("holders")),
        mountpoints: usage.mountpoints_of(dev),
        system_uses: usage.system_uses_of_disk(name),
        node: PathBuf::from(format!("/dev/{name}")),
        model,
        backing_file,
        partitions,
    })
}

fn partitions(disk_dir: &Path, usage: &Usage) -> Vec<PartitionInfo> {
    let Ok(entries) = fs::read_dir(disk_dir) else {
        return Vec::new();
    };
    let mut found: Vec<PartitionInfo> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join("partition").is_file())
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let dev = DevNumber::parse(&read_trimmed(&path.join("dev"))?)?;
            Some(PartitionInfo {
                node: PathBuf::from(format!("/dev/{name}")),
                number: read_u64(&path.join("partition")).and_then(|n| u32::try_from(n).ok()),
                size: read_u64(&path.join("size"))
                    .unwrap_or(0)
                    .saturating_mul(512),
                mountpoints: usage.mountpoints_of(dev),
                holders: list_names(&path.join("holders")),
                name,
            })
        })
        .collect();
    found.sort_by_key(|partition| (partition.number, partition.name.clone()));
    found
}

/// Vendor and model as the driver reports them (SCSI/USB `vendor` + `model`, NVMe `model`,
/// MMC `name`).
fn model(disk_dir: &Path) -> Option<String> {
    let device = disk_dir.join("device");
    // virtio and PCI devices put a numeric id (`0x1af4`) in `vendor`: not a name.
    let vendor = read_trimmed(&device.join("vendor"))
        .filter(|vendor| !vendor.is_empty() && !vendor.starts_with("0x"));
    let model = read_trimmed(&device.join("model"))
        .or_else(|| read_trimmed(&device.join("name")))
        .filter(|model| !model.is_empty());
    match (vendor, model) {
        (Some(vendor), Some(model)) => Some(format!("{vendor} {model}")),
        (vendor, model) => model.or(vendor),
    }
}

/// The serial number: udev's `ID_SERIAL_SHORT` when udev runs, else what sysfs has (MMC
/// and NVMe `serial`, virtio's `serial`, the SCSI unit serial VPD page, the USB device).
fn serial(host: &Host, disk_dir: &Path, dev: DevNumber) -> Option<String> {
    let udev = fs::read_to_string(host.path(&format!("/run/udev/data/b{dev}"))).ok();
    let from_udev = udev.as_deref().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("E:ID_SERIAL_SHORT="))
            .map(str::to_string)
    });
    from_udev
        .or_else(|| read_trimmed(&disk_dir.join("device/serial")))
        .or_else(|| read_trimmed(&disk_dir.join("serial")))
        .or_else(|| vpd_serial(&disk_dir.join("device/vpd_pg80")))
        .or_else(|| usb_serial(disk_dir))
        .filter(|serial| !serial.is_empty())
}

/// The SCSI Unit Serial Number VPD page: a 4-byte header, then the serial in ASCII.
fn vpd_serial(path: &Path) -> Option<String> {
    let page = fs::read(path).ok()?;
    let length = usize::from(*page.get(3)?);
    let serial = page.get(4..4 + length)?;
    Some(String::from_utf8_lossy(serial).trim().to_string())
}

/// The USB device's iSerial: the nearest ancestor of the disk's device with a `serial` file
/// in the `usb` subsystem.
fn usb_serial(disk_dir: &Path) -> Option<String> {
    let device = fs::canonicalize(disk_dir.join("device")).ok()?;
    device
        .ancestors()
        .filter(|dir| subsystem(dir).as_deref() == Some("usb"))
        .find_map(|dir| read_trimmed(&dir.join("serial")))
}

fn subsystem(dir: &Path) -> Option<String> {
    let link = fs::read_link(dir.join("subsystem")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// How the disk is attached, from the subsystems of its device's ancestors (a USB card
/// reader is `usb` even though the disk itself is SCSI).
fn transport(disk_dir: &Path) -> Option<String> {
    if disk_dir.join("loop").is_dir() {
        return Some("loop".to_string());
    }
    let device = fs::canonicalize(disk_dir.join("device")).ok()?;
    let subsystems: Vec<String> = device.ancestors().filter_map(subsystem).collect();
    ["usb", "mmc", "nvme", "virtio", "ata", "scsi"]
        .into_iter()
        .find(|wanted| subsystems.iter().any(|found| found == wanted))
        .map(str::to_string)
        .or_else(|| subsystems.into_iter().next())
}

/// Links in `/dev/disk/by-id` resolving to `node`, `wwn-` links last.
fn by_id_links(host: &Host, node: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(host.path("/dev/disk/by-id")) else {
        return Vec::new();
    };
    let target = fs::canonicalize(node).unwrap_or_else(|_| node.to_path_buf());
    let mut links: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|link| fs::canonicalize(link).is_ok_and(|resolved| resolved == target))
        .map(|link| match link.strip_prefix(host.path("/")) {
            Ok(relative) => Path::new("/").join(relative),
            Err(_) => link,
        })
        .collect();
    links.sort_by_key(|link| {
        let name = link
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        (
            name.as_deref().is_some_and(|name| name.starts_with("wwn-")),
            link.clone(),
        )
    });
    links
}

/// The entries of a sysfs directory such as `holders/` or `slaves/`, sorted.
pub(crate) fn list_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

fn read_flag(path: &Path) -> bool {
    read_u64(path) == Some(1)
}
