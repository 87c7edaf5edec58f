//! The plan of one flash in data and in words: what `--dry-run` prints and what the
//! confirmation shows before anything is destroyed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::device::{DeviceInfo, format_size};
use super::preflight::Target;
use super::source::{ImageFormat, ImageInfo};
use super::write::WIPE_BYTES;
use super::{FlashOptions, VerifyMode};

/// What a flash will do, shown before the confirmation and by `--dry-run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashPlan {
    /// The device path as given.
    #[schema(value_type = String)]
    pub device_path: PathBuf,
    /// The disk it resolved to; everything on it is destroyed.
    pub device: DeviceInfo,
    pub image: ImageInfo,
    pub wipe: bool,
    #[schema(value_type = String)]
    pub verify: VerifyMode,
    /// Bytes that will be written, when known before writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bytes: Option<u64>,
    /// Bytes that will be read back and compared, when known before writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_bytes: Option<u64>,
    /// The actions in order, in words.
    pub steps: Vec<String>,
}

/// The plan in words.
pub(crate) fn describe(options: &FlashOptions, target: &Target, image: &ImageInfo) -> FlashPlan {
    let info = &target.info;
    let node = info.node.display();
    let write_bytes = image.size;
    let verify_bytes = match options.verify {
        VerifyMode::None => Some(0),
        mode => write_bytes.map(|bytes| bytes.min(mode.hash_limit())),
    };
    let mut steps = vec![format!(
        "destroy everything on `{node}`: {}{}",
        info.describe(),
        partitions_text(info)
    )];
    if options.wipe {
        steps.push(format!(
            "zero the first and last {} of `{node}` (MBR, primary and backup GPT)",
            format_size(WIPE_BYTES.min(info.size))
        ));
    }
    let amount = write_bytes.map_or_else(
        || "the decompressed image (size known after decompressing)".to_string(),
        |bytes| format!("{} ({bytes} bytes)", format_size(bytes)),
    );
    let from = match image.format {
        ImageFormat::Raw => format!("from `{}`", image.path.display()),
        format => format!(
            "decompressed from the {} file `{}`",
            format.as_str(),
            image.path.display()
        ),
    };
    steps.push(format!(
        "write {amount} at the start of `{node}`, {from}, in 4 MiB direct writes"
    ));
    steps.push(format!("flush `{node}` (fsync)"));
    steps.push(match (options.verify, verify_bytes) {
        (VerifyMode::None, _) => "no read-back verification (`--verify none`)".to_string(),
        (_, Some(bytes)) => format!(
            "read back the first {} ({bytes} bytes) with O_DIRECT and compare the SHA-256 of every 4 MiB block",
            format_size(bytes)
        ),
        (mode, None) => format!(
            "read back {} with O_DIRECT and compare the SHA-256 of every 4 MiB block",
            match mode {
                VerifyMode::Prefix(bytes) => format!("the first {}", format_size(bytes)),
                _ => "everything written".to_string(),
            }
        ),
    });
    FlashPlan {
        device_path: options.device.clone(),
        device: info.clone(),
        image: image.clone(),
        wipe: options.wipe,
        verify: options.verify,
        write_bytes,
        verify_bytes,
        steps,
    }
}

fn partitions_text(info: &DeviceInfo) -> String {
    if info.partitions.is_empty() {
        return String::new();
    }
    let list: Vec<String> = info
        .partitions
        .iter()
        .map(|partition| format!("{} {}", partition.name, format_size(partition.size)))
        .collect();
    format!("; partitions {}", list.join(", "))
}
