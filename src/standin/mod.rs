//! Stand-in OpenWrt Image Builders and download mirrors, for tests and the offline demo.

pub mod demo;
pub mod imagebuilder;
pub mod mirror;
