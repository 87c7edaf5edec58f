//! Test tooling, not the product: stand-in OpenWrt Image Builders and download mirrors made
//! from real upstream device data, for imagegen's tests, benchmarks and offline demo.
//!
//! The upstream data (`data/openwrt-23.05.4/`: the release's `.overview.json` and every
//! target's `profiles.json`) is a verbatim copy of downloads.openwrt.org; `data/README.md`
//! says where it came from and how to refresh it.

pub mod demo;
pub mod feeds;
pub mod imagebuilder;
pub mod mirror;

use std::path::PathBuf;

/// The real OpenWrt 23.05.4 metadata this crate carries (`.overview.json` and
/// `targets/<target>/<subtarget>/profiles.json`).
pub fn upstream_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/openwrt-23.05.4")
}
