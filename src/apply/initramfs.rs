//! `build_defaults.initramfs`: the release's prebuilt initramfs image of the device, fetched
//! from the mirror's target directory as an artifact of the build. Its name and sha256 come
//! from the pinned `profiles.json` (whose own sha256 `imagegen.lock` pins, and which the
//! signed `sha256sums` vouched for when it was locked), so the bytes are checked against a
//! hash the fleet committed to.

use std::path::Path;

use crate::cas::Cas;
use crate::error::{Error, ErrorCode, Result};
use crate::imagebuilder::{cache, target_dir};
use crate::key::InitramfsImage;
use crate::settings::Settings;
use crate::state::ArtifactRef;
use crate::triple::Triple;

/// The artifact kind (and filesystem) of a fetched initramfs image.
pub(crate) const INITRAMFS_KIND: &str = "initramfs";

/// Downloads `image` into `scratch`, checks its sha256 and stores it in the CAS.
pub(crate) fn fetch(
    settings: &Settings,
    cas: &Cas,
    triple: &Triple,
    image: &InitramfsImage,
    scratch: &Path,
) -> Result<ArtifactRef> {
    let plain = !image.name.is_empty()
        && !image.name.starts_with('.')
        && !image.name.contains(['/', '\\', '\0']);
    if !plain {
        return Err(Error::new(
            ErrorCode::ImagebuilderError,
            format!(
                "profiles.json names the initramfs image `{}`, which is not a plain file name",
                image.name
            ),
        ));
    }
    let client = cache::client(settings)?;
    let path = scratch.join(&image.name);
    client.download(&format!("{}/{}", target_dir(triple), image.name), &path)?;
    let (sha256, _) = crate::cas::sha256_file(&path)?;
    if sha256 != image.sha256 {
        let _ = std::fs::remove_file(&path);
        return Err(Error::new(
            ErrorCode::DownloadError,
            format!(
                "the initramfs image `{}` has sha256 {sha256}, but the pinned profiles.json lists {}",
                image.name, image.sha256
            ),
        )
        .with_help("the mirror serves other bytes than it published; try again, or check the mirror"));
    }
    let (sha256, size) = cas.put_file(&path)?;
    Ok(ArtifactRef {
        sha256,
        name: image.name.clone(),
        kind: INITRAMFS_KIND.to_string(),
        filesystem: Some(INITRAMFS_KIND.to_string()),
        size,
    })
}
