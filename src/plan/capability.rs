//! What an Image Builder can and cannot do for a profile, checked by `validate` and `plan`
//! before anything is fetched: profile fields it cannot honour (refused, saying why and what
//! to do instead), and what the pinned `profiles.json` says a device produces (root
//! filesystems, image kinds for `flash.image`, the initramfs image). Pure: no I/O.

use std::collections::BTreeSet;

use crate::error::Problem;
use crate::imagebuilder::ProfilesJson;
use crate::imagebuilder::metadata::ProfileInfo;
use crate::key::InitramfsImage;
use crate::manifest::{Fleet, LoadedProfile};
use crate::triple::Triple;

/// The filesystem upstream gives the prebuilt initramfs kernel images in `profiles.json`.
const INITRAMFS: &str = "initramfs";

/// Profile fields no Image Builder can honour. Each refusal names the field, says why and
/// what to do instead (docs/profiles.md, `policies`). Needs nothing but the profile.
pub fn refused_fields(loaded: &LoadedProfile) -> Vec<Problem> {
    let policies = &loaded.profile.policies;
    let mut problems = Vec::new();
    if policies.include_kernel_symbols == Some(true) {
        problems.push(
            Problem::validation(
                "`policies.include_kernel_symbols: true` cannot be honoured: the Image Builder packs the release's prebuilt kernel and cannot rebuild it with symbols",
            )
            .at(loaded.location("policies.include_kernel_symbols"))
            .with_label("not possible with an Image Builder")
            .with_help("remove it or set it to `false`; the release publishes its kernel's debug symbols as `kernel-debug.tar.zst` in the target directory, to use next to the image"),
        );
    }
    if policies.strip_debug == Some(false) {
        problems.push(
            Problem::validation(
                "`policies.strip_debug: false` cannot be honoured: the Image Builder installs the release's prebuilt packages, which are already stripped",
            )
            .at(loaded.location("policies.strip_debug"))
            .with_label("not possible with an Image Builder")
            .with_help("remove it or set it to `true` (what every Image Builder image is); unstripped binaries need the OpenWrt SDK or a source build"),
        );
    }
    if policies.auto_resize_rootfs == Some(true) {
        problems.push(
            Problem::validation(
                "`policies.auto_resize_rootfs: true` is not done by imagegen: growing the root filesystem to fill the device happens on the device at first boot, not in the image",
            )
            .at(loaded.location("policies.auto_resize_rootfs"))
            .with_label("not done by imagegen")
            .with_help("set `rootfs_partsize` (MiB) to the root partition size you want and remove `auto_resize_rootfs`; or ship a first-boot script under `/etc/uci-defaults/` in `files` with `parted` and `resize2fs` in `packages`"),
        );
    }
    problems
}

/// The device entry of an Image Builder profile id: a key of `profiles`, or (as ASU
/// accepts) one of a device's `supported_devices` with `,` written as `_`.
pub(crate) fn device_info<'a>(profiles: &'a ProfilesJson, id: &str) -> Option<&'a ProfileInfo> {
    profiles.profiles.get(id).or_else(|| {
        profiles.profiles.values().find(|info| {
            info.supported_devices
                .iter()
                .any(|board| board.replace(',', "_") == id)
        })
    })
}

/// The release's prebuilt initramfs image of a device, as `profiles.json` lists it.
pub(crate) fn initramfs_image(info: &ProfileInfo) -> Option<InitramfsImage> {
    info.images
        .iter()
        .filter(|image| image.filesystem.as_deref() == Some(INITRAMFS))
        .find_map(|image| {
            Some(InitramfsImage {
                name: image.name.clone(),
                sha256: image.sha256.clone()?,
            })
        })
}

/// A device's root filesystems (initramfs kernels are not a root filesystem choice).
fn root_filesystems(info: &ProfileInfo) -> BTreeSet<&str> {
    info.images
        .iter()
        .filter_map(|image| image.filesystem.as_deref())
        .filter(|filesystem| *filesystem != INITRAMFS)
        .collect()
}

/// What the pinned `profiles.json` says against one profile: its filesystem policy and its
/// initramfs wish.
pub(crate) fn device_problems(
    loaded: &LoadedProfile,
    triple: &Triple,
    info: &ProfileInfo,
) -> Vec<Problem> {
    let profile = &loaded.profile;
    let device = &profile.imagebuilder_profile;
    let mut problems = Vec::new();
    let offered = root_filesystems(info);
    if let Some(wanted) = profile.policies.filesystem
        && !offered.is_empty()
        && !offered.contains(wanted.as_str())
    {
        problems.push(
            Problem::validation(format!(
                "`{device}` (OpenWrt {} {}/{}) has no `{wanted}` image",
                triple.release, triple.target, triple.subtarget
            ))
            .at(loaded.location("policies.filesystem"))
            .with_label("not built for this device")
            .with_help(format!(
                "the device's images use {}; choose one of those, or remove `policies.filesystem`",
                backticked(offered.iter().copied())
            )),
        );
    }
    if profile.build_defaults.initramfs && initramfs_image(info).is_none() {
        problems.push(
            Problem::validation(format!(
                "`{device}` (OpenWrt {} {}/{}) has no initramfs image in the release's profiles.json",
                triple.release, triple.target, triple.subtarget
            ))
            .at(loaded.location("build_defaults.initramfs"))
            .with_label("no initramfs image for this device")
            .with_help("remove `build_defaults.initramfs`; upstream publishes initramfs kernels only for devices that need one to install"),
        );
    }
    problems
}

/// Every fleet device on `triple` whose `flash.image` its profile's device does not
/// produce (with the profile's filesystem, when it sets one).
pub(crate) fn flash_problems(
    fleet: &Fleet,
    triple: &Triple,
    profiles: &ProfilesJson,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (index, device) in fleet.devices.iter().enumerate() {
        let (Some(flash), Some(loaded)) = (&device.flash, fleet.profile(&device.profile)) else {
            continue;
        };
        let profile = &loaded.profile;
        if &profile.triple() != triple {
            continue;
        }
        let Some(info) = device_info(profiles, &profile.imagebuilder_profile) else {
            continue;
        };
        let filesystem = profile
            .policies
            .filesystem
            .map(|filesystem| filesystem.as_str());
        let kinds: BTreeSet<&str> = info
            .images
            .iter()
            .filter(|image| match (filesystem, image.filesystem.as_deref()) {
                (Some(wanted), Some(actual)) => wanted == actual,
                _ => true,
            })
            .map(|image| image.kind.as_str())
            .collect();
        if kinds.is_empty() || kinds.contains(flash.image.as_str()) {
            continue;
        }
        let with = filesystem
            .map(|filesystem| format!(" with `{filesystem}`"))
            .unwrap_or_default();
        let path = format!("device[{index}].flash.image");
        // `image` defaults to `combined`; when it is not written, point at the flash entry.
        let location = match fleet.location(&path) {
            location if location.span != (0..0) => location,
            _ => fleet.location(&format!("device[{index}].flash")),
        };
        problems.push(
            Problem::validation(format!(
                "device `{}` wants a `{}` image, which `{}` does not produce{with}",
                device.id, flash.image, profile.imagebuilder_profile
            ))
            .at(location)
            .with_label("no such image for this device")
            .with_help(format!(
                "it produces {}; set `image` to one of those",
                backticked(kinds.iter().copied())
            )),
        );
    }
    problems
}

fn backticked<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
