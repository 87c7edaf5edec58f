//! Package feeds: which feeds an Image Builder installs from, their signed indexes, what a
//! profile's package list resolves to, and the local cache of verified package files that
//! builds install from without a network (DESIGN §8, docs/feeds.md).
//!
//! 1. [`sources`] names a builder's feeds from its `profiles.json` the way upstream's
//!    `include/feeds.mk` writes `repositories.conf` (reference §1.5): no archive needed, so
//!    `lock` and `plan` can work before anything is downloaded.
//! 2. [`fetch`] downloads an index, checks its usign signature (like `sha256sums`, over the
//!    raw index bytes) and keeps it in the cache by its sha256, which the lock pins.
//! 3. [`resolve`] predicts what opkg installs (`index` parses, `version` orders); [`check`]
//!    resolves one profile against the pinned indexes for `validate`/`plan`.
//! 4. [`store`] keeps package files by sha256, verified against the signed index, and
//!    [`prepare`] gathers exactly what one build needs for its worker slot.
//!
//! Network access goes through [`crate::imagebuilder::MirrorClient`]; nothing here writes
//! the state store or runs the Image Builder.

pub mod check;
pub mod fetch;
pub mod gc;
mod index;
pub mod prepare;
mod resolve;
pub mod store;
mod version;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::imagebuilder::{ProfilesJson, release_dir};
use crate::triple::Triple;

pub use check::{
    BuilderFeeds, Origin, PackageCheck, PackageFailure, PackageList, ProfilePackages,
    ResolvedPackage,
};
pub use fetch::{FeedIndex, FeedPin};
pub use prepare::{BuildPackages, Fetcher, SlotFeed, SlotFeeds, source_of};

/// The feeds of `indexes` (name, index text), parsed, as one builder's: for the fuzz target
/// of the index parser and resolver (`crate::fuzzing::feed_index`).
pub(crate) fn feeds_from_text(indexes: &[(&str, &str)]) -> BuilderFeeds {
    BuilderFeeds::new(
        indexes
            .iter()
            .map(|(name, text)| (name.to_string(), std::sync::Arc::new(index::parse(text))))
            .collect(),
    )
}

/// The package names an index text lists, in order (for the fuzz target's requests).
pub(crate) fn names_in(text: &str) -> Vec<String> {
    index::parse(text)
        .into_iter()
        .map(|package| package.name)
        .collect()
}

/// How a feed's index is written: opkg's `Packages` (23.05, 24.10) or apk's `packages.adb`
/// (25.12, snapshots; the stand-in's text form, see docs/feeds.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexFormat {
    Opkg,
    Apk,
}

impl IndexFormat {
    /// The index file name in the feed directory.
    pub fn index_name(self) -> &'static str {
        match self {
            IndexFormat::Opkg => "Packages",
            IndexFormat::Apk => "packages.adb",
        }
    }

    /// The detached usign signature of the index.
    pub fn signature_name(self) -> &'static str {
        match self {
            IndexFormat::Opkg => "Packages.sig",
            IndexFormat::Apk => "packages.adb.sig",
        }
    }

    /// apk Image Builders put `apk-mbedtls` (or `apk-openssl`) into the default packages,
    /// opkg ones `opkg` (reference §3.2, §8.2).
    pub fn of(profiles: &ProfilesJson) -> IndexFormat {
        if profiles
            .default_packages
            .iter()
            .any(|name| name.starts_with("apk-"))
        {
            IndexFormat::Apk
        } else {
            IndexFormat::Opkg
        }
    }
}

/// One feed of a builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FeedSource {
    /// The name upstream gives it in `repositories.conf` (`openwrt_base`).
    pub name: String,
    /// The feed directory relative to the mirror root
    /// (`releases/23.05.4/packages/x86_64/base`).
    pub dir: String,
    pub format: IndexFormat,
}

impl FeedSource {
    /// The index path relative to the mirror root.
    pub fn index_path(&self) -> String {
        format!("{}/{}", self.dir, self.format.index_name())
    }
}

/// The feeds a builder's `repositories.conf` lists, in its order (reference §1.5): the
/// target's core feed, `base`, the kernel-module feed where `profiles.json` names the kernel
/// (23.05.6, 24.10 and later), then `luci`, `packages`, `routing` and `telephony`. `None`
/// when `profiles.json` has no `arch_packages` (then the feeds cannot be named).
pub fn sources(triple: &Triple, profiles: &ProfilesJson) -> Option<Vec<FeedSource>> {
    let arch = profiles.arch_packages.as_deref()?;
    let plain = |text: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
    };
    if !plain(arch) {
        return None;
    }
    let format = IndexFormat::of(profiles);
    let base = release_dir(&triple.release);
    let target = format!("{base}/targets/{}/{}", triple.target, triple.subtarget);
    let feed = |short: &str, dir: String| FeedSource {
        name: format!("openwrt_{short}"),
        dir,
        format,
    };
    let mut feeds = vec![
        feed("core", format!("{target}/packages")),
        feed("base", format!("{base}/packages/{arch}/base")),
    ];
    if let Some(kernel) = &profiles.linux_kernel {
        let triple = format!("{}-{}-{}", kernel.version, kernel.release, kernel.vermagic);
        if plain(&triple) {
            feeds.push(feed("kmods", format!("{target}/kmods/{triple}")));
        }
    }
    for short in ["luci", "packages", "routing", "telephony"] {
        feeds.push(feed(short, format!("{base}/packages/{arch}/{short}")));
    }
    Some(feeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(json: &str) -> ProfilesJson {
        ProfilesJson::parse(json.as_bytes(), "t").expect("profiles.json")
    }

    #[test]
    fn feeds_follow_upstream_layout() {
        let old = profiles(
            r#"{"target":"x86/64","version_code":"r1","version_number":"23.05.4",
            "arch_packages":"x86_64","default_packages":["opkg"]}"#,
        );
        let triple = Triple::new("23.05.4", "x86", "64");
        let dirs: Vec<String> = sources(&triple, &old)
            .expect("feeds")
            .iter()
            .map(|feed| format!("{} {}", feed.name, feed.index_path()))
            .collect();
        assert_eq!(
            dirs,
            [
                "openwrt_core releases/23.05.4/targets/x86/64/packages/Packages",
                "openwrt_base releases/23.05.4/packages/x86_64/base/Packages",
                "openwrt_luci releases/23.05.4/packages/x86_64/luci/Packages",
                "openwrt_packages releases/23.05.4/packages/x86_64/packages/Packages",
                "openwrt_routing releases/23.05.4/packages/x86_64/routing/Packages",
                "openwrt_telephony releases/23.05.4/packages/x86_64/telephony/Packages",
            ]
        );
        let snapshot = profiles(
            r#"{"target":"x86/64","version_code":"r1","version_number":"SNAPSHOT",
            "arch_packages":"x86_64","default_packages":["apk-mbedtls"],
            "linux_kernel":{"version":"6.12.30","release":1,"vermagic":"abc"}}"#,
        );
        let feeds = sources(&Triple::new("SNAPSHOT", "x86", "64"), &snapshot).expect("feeds");
        assert_eq!(
            feeds[2].index_path(),
            "snapshots/targets/x86/64/kmods/6.12.30-1-abc/packages.adb"
        );
        let unnamed = profiles(r#"{"target":"x86/64","version_code":"r1","version_number":"1"}"#);
        assert_eq!(sources(&triple, &unnamed), None);
    }
}
