//! The safety checks before anything is written: resolve the path the user gave to one
//! whole disk and refuse, each with its own error code, anything that is not safe to
//! overwrite. Reads only; nothing here opens the device for writing.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::json;

use super::device::{DevNumber, DeviceInfo, Host, describe_disk, parent_disk_name, sys_block};
use super::mounts::Usage;
use crate::error::{Error, ErrorCode, Result};

/// What a flash writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    BlockDevice,
    /// Only for library callers that ask for it (tests, benchmarks); never from the CLI.
    RegularFile,
}

#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub kind: TargetKind,
    pub info: DeviceInfo,
}

const LIST_HINT: &str = "`imagegen devices` lists the disks of this machine";

/// Resolves `given` (following `/dev/disk/by-id/...` and any other links) to a whole disk
/// and describes it, or refuses.
pub(crate) fn resolve(host: &Host, given: &Path, allow_regular_file: bool) -> Result<Target> {
    let node = fs::canonicalize(given).map_err(|error| not_found(given, &error))?;
    let metadata = fs::metadata(&node).map_err(|error| not_found(given, &error))?;
    if metadata.file_type().is_block_device() {
        let info = describe_block_device(host, given, &node, metadata.rdev())?;
        return Ok(Target {
            kind: TargetKind::BlockDevice,
            info,
        });
    }
    if metadata.is_file() && allow_regular_file {
        return Ok(Target {
            kind: TargetKind::RegularFile,
            info: describe_file(&node, metadata.len()),
        });
    }
    Err(device_error(
        ErrorCode::DeviceNotBlock,
        &node,
        format!("`{}` is not a block device", given.display()),
    )
    .with_help(format!(
        "give the node of a whole disk, such as `/dev/sdb` or a `/dev/disk/by-id/` link; {LIST_HINT}"
    )))
}

fn not_found(given: &Path, error: &io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::NotFound => device_error(
            ErrorCode::DeviceNotFound,
            given,
            format!("`{}` does not exist", given.display()),
        )
        .with_help(format!(
            "insert the card or stick and check the path; {LIST_HINT}"
        )),
        _ => Error::io(
            "resolving",
            given,
            io::Error::new(error.kind(), error.to_string()),
        ),
    }
}

fn describe_block_device(host: &Host, given: &Path, node: &Path, rdev: u64) -> Result<DeviceInfo> {
    let dev = DevNumber::from_raw(rdev);
    let block = sys_block(host, dev).ok_or_else(|| {
        device_error(
            ErrorCode::DeviceError,
            node,
            format!("sysfs has no entry for `{}` ({dev})", node.display()),
        )
        .with_help("is /sys mounted? imagegen asks the kernel, never guesses from names")
    })?;
    if block.is_partition {
        let disk = parent_disk_name(&block.dir).unwrap_or_default();
        return Err(device_error(
            ErrorCode::DeviceIsPartition,
            node,
            format!(
                "`{}` is a partition of `/dev/{disk}`, not a whole disk",
                given.display()
            ),
        )
        .with_help(format!(
            "an image carries its own partition table: flash the whole disk `/dev/{disk}`"
        )));
    }
    let usage = Usage::read(host);
    let mut info = describe_disk(host, &block.name, &usage).ok_or_else(|| {
        device_error(
            ErrorCode::DeviceError,
            node,
            format!("cannot read sysfs for `{}`", node.display()),
        )
    })?;
    info.node = node.to_path_buf();
    Ok(info)
}

fn describe_file(path: &Path, size: u64) -> DeviceInfo {
    DeviceInfo {
        name: path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        node: path.to_path_buf(),
        dev: String::new(),
        size,
        model: None,
        serial: None,
        transport: Some("file".to_string()),
        by_id: Vec::new(),
        removable: false,
        rotational: false,
        read_only: false,
        backing_file: None,
        partitions: Vec::new(),
        holders: Vec::new(),
        mountpoints: Vec::new(),
        system_uses: Vec::new(),
    }
}

/// Why this disk must not be overwritten, most serious reason first; `None` when it may.
pub(crate) fn refusal(info: &DeviceInfo) -> Option<Error> {
    let node = &info.node;
    let shown = node.display();
    if !info.system_uses.is_empty() {
        let uses = quoted_list(&info.system_uses);
        return Some(
            device_error(
                ErrorCode::DeviceSystemDisk,
                node,
                format!("`{shown}` holds {uses} of the running system"),
            )
            .with_help(format!("this is a disk the system runs from; {LIST_HINT}")),
        );
    }
    let mounted = mounted_parts(info);
    if !mounted.is_empty() {
        let first = &mounted[0];
        return Some(
            device_error(
                ErrorCode::DeviceMounted,
                node,
                format!(
                    "`{shown}` is in use: {}",
                    mounted
                        .iter()
                        .map(|(part, point)| format!("`{part}` is mounted on `{point}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_help(format!(
                "unmount it first (`umount {}`), then run again; imagegen never unmounts for you",
                first.1
            )),
        );
    }
    let holders = info.all_holders();
    if !holders.is_empty() {
        return Some(
            device_error(
                ErrorCode::DeviceBusy,
                node,
                format!("`{shown}` is in use by {}", quoted_list(&holders)),
            )
            .with_help(
                "something is stacked on the disk (device-mapper, LVM, md RAID, a cache); \
                 remove it first (`dmsetup remove`, `vgchange -an`, `mdadm --stop`)",
            ),
        );
    }
    if info.read_only {
        return Some(read_only(node));
    }
    None
}

/// `(partition or disk node, mountpoint)` for every mount on the disk.
fn mounted_parts(info: &DeviceInfo) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = info
        .mountpoints
        .iter()
        .map(|point| (info.node.display().to_string(), point.clone()))
        .collect();
    for partition in &info.partitions {
        for point in &partition.mountpoints {
            found.push((partition.node.display().to_string(), point.clone()));
        }
    }
    found
}

pub(crate) fn read_only(node: &Path) -> Error {
    device_error(
        ErrorCode::DeviceReadOnly,
        node,
        format!("`{}` is read-only", node.display()),
    )
    .with_help("check the write-protect switch of the SD card or its adapter")
}

pub(crate) fn image_too_large(image: &Path, image_size: u64, device: &DeviceInfo) -> Error {
    device_error(
        ErrorCode::ImageTooLarge,
        &device.node,
        format!(
            "image `{}` ({image_size} bytes) is larger than `{}` ({} bytes)",
            image.display(),
            device.node.display(),
            device.size
        ),
    )
    .with_help("use a larger card, or an image built for a smaller disk")
}

/// An error about one device, with the device in its details for machines.
pub(crate) fn device_error(code: ErrorCode, node: &Path, message: String) -> Error {
    Error::new(code, message).with_details(json!({ "device": node }))
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "preflight_tests.rs"]
mod tests;
