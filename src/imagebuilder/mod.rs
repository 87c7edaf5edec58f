//! Obtain official OpenWrt Image Builders safely: find them on a mirror, verify the signed
//! `sha256sums`, download with resume, check the hash and unpack without escaping the cache.
//!
//! Flow (see `docs/fetching.md`): [`metadata::fetch_target`] reads and verifies a target
//! directory; [`download::fetch_builder`] streams the archive through the hasher, the
//! decompressor and [`unpack`] into a staging dir that is renamed into the cache only when
//! complete; [`cache`] keeps metadata and unpacked builders and records them in the state
//! store. This module never runs the Image Builder.

pub mod cache;
pub mod checksums;
pub mod download;
pub mod keys;
mod limits;
pub mod metadata;
pub mod mirror;
pub mod tree;
pub mod unpack;
pub mod usign;

pub use download::{FetchPhase, FetchProgress, builder_dir, fetch_builder};
pub use metadata::{ProfilesJson, TargetMetadata, fetch_overview, fetch_target};
pub use mirror::{FetchOptions, MirrorClient};
pub use usign::{KeyId, Keyring};

use crate::error::{Error, ErrorCode, Result};
use crate::triple::Triple;

/// The release's directory on the mirror: `snapshots` for `SNAPSHOT`, else `releases/<release>`
/// (branch snapshots such as `24.10-SNAPSHOT` live under `releases/` too).
pub fn release_dir(release: &str) -> String {
    if release == "SNAPSHOT" {
        "snapshots".to_string()
    } else {
        format!("releases/{release}")
    }
}

/// The target directory on the mirror, e.g. `releases/23.05.4/targets/x86/64`.
pub fn target_dir(triple: &Triple) -> String {
    format!(
        "{}/targets/{}/{}",
        release_dir(&triple.release),
        triple.target,
        triple.subtarget
    )
}

/// Release, target and subtarget become URL and cache path components: one plain name each.
pub(crate) fn validate_name(what: &str, value: &str) -> Result<()> {
    let plain = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
    if plain {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::Validation,
            format!("invalid {what} `{value}`: expected letters, digits, `.`, `-`, `_` or `+`"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_paths() {
        assert_eq!(release_dir("SNAPSHOT"), "snapshots");
        assert_eq!(release_dir("24.10-SNAPSHOT"), "releases/24.10-SNAPSHOT");
        assert_eq!(
            target_dir(&Triple::new("23.05.4", "ath79", "generic")),
            "releases/23.05.4/targets/ath79/generic"
        );
        assert_eq!(
            target_dir(&Triple::new("SNAPSHOT", "x86", "64")),
            "snapshots/targets/x86/64"
        );
    }

    #[test]
    fn names_are_single_components() {
        for bad in ["", "..", "a/b", "x y", "."] {
            assert!(validate_name("target", bad).is_err(), "{bad}");
        }
        assert!(validate_name("release", "24.10.0-rc3").is_ok());
    }
}
