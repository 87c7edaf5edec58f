//! Which paths of an Image Builder a worker slot shares with the pristine tree, which it
//! copies, and which it never takes from the pristine tree. Pure: paths in, decisions out.
//!
//! The rule that makes hardlink slots safe: a file may be shared (hardlinked) only if
//! `make image` never opens it for writing. Files the Image Builder rewrites in place (shell
//! `>` redirection, `cp` onto an existing file) are real copies; paths it creates at run time
//! are never taken from the pristine tree, so the slot creates them itself. New files are
//! private by construction, because every directory of a slot is a real directory.
//! The reasoning per path is in `docs/build.md` ("Slot strategy").

use std::path::{Component, Path};

/// How one pristine entry appears in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Shared with the pristine tree (hardlink, or reflink where the filesystem has them).
    Share,
    /// A private copy, because the Image Builder (or imagegen) writes it in place.
    Copy,
    /// Created by the build at run time; never taken from the pristine tree, and removed
    /// from the slot on reset.
    RunTime,
}

/// Slot paths that survive a reset although the pristine tree does not have them.
pub(crate) fn is_kept_on_reset(relative: &Path) -> bool {
    let parts = components(relative);
    matches!(parts.as_slice(), [meta] if *meta == SLOT_META_DIR)
        || matches!(parts.as_slice(), ["staging_dir", "host", ".prereq-build"])
}

/// The directory inside a slot that holds imagegen's own bookkeeping.
pub(crate) const SLOT_META_DIR: &str = ".imagegen-slot";

/// Decides the placement of the pristine entry at `relative` (relative to the Image Builder
/// root). `is_dir` matters because only regular files are ever copied or shared; directories
/// are always created for real.
pub(crate) fn placement(relative: &Path, is_dir: bool) -> Placement {
    let parts = components(relative);
    if is_run_time(&parts) {
        return Placement::RunTime;
    }
    if !is_dir && is_rewritten(&parts) {
        return Placement::Copy;
    }
    Placement::Share
}

/// Paths `make image` creates or wipes itself (reference §4 "Directories created at run
/// time", §7.1). A pristine tree should not contain them; when it does (someone ran `make`
/// in it), they are leftovers that must not leak into a build.
fn is_run_time(parts: &[&str]) -> bool {
    match parts {
        [top, ..] if ["tmp", "dl", "bin", SLOT_META_DIR].contains(top) => true,
        ["staging_dir", "host", ".prereq-build"] => true,
        ["build_dir", target, name, ..] if target.starts_with("target-") => {
            name.starts_with("root-")
                || name.starts_with("root.orig-")
                || *name == "json_info_files"
                || is_kernel_dir_run_time(parts)
        }
        _ => false,
    }
}

/// Inside `build_dir/target-*/linux-*/`: the image recipes' scratch dir `tmp/` and the root
/// filesystem images `root.*` are rebuilt by every run.
fn is_kernel_dir_run_time(parts: &[&str]) -> bool {
    match parts {
        ["build_dir", _, kernel_dir, name, ..] if kernel_dir.starts_with("linux-") => {
            *name == "tmp" || name.starts_with("root.")
        }
        _ => false,
    }
}

/// Files that `make image` (or imagegen itself) may rewrite in place.
fn is_rewritten(parts: &[&str]) -> bool {
    match parts {
        // imagegen edits `.config` (filesystem policy); the Image Builder regenerates
        // `.profiles.mk` with `>`; the repository lists are where custom feeds go; the local
        // signing key files are written when missing.
        [name] => {
            [
                ".config",
                ".profiles.mk",
                "repositories.conf",
                "repositories",
            ]
            .contains(name)
                || name.starts_with("key-build")
        }
        // Trusted keys: `_check_keys` and custom-repository keys write here.
        ["keys", ..] => true,
        // The local feed: `package_index` rewrites `Packages`, `Packages.gz`, `Packages.sig`
        // (opkg) or `packages.adb` (apk) with `>`. The package files themselves are only read.
        ["packages", .., name] => !(name.ends_with(".ipk") || name.ends_with(".apk")),
        // Files directly in KERNEL_BUILD_DIR are the image recipes' make targets (kernel
        // images, dtbs, loaders): a recipe that decides to remake one writes `$@` in place.
        ["build_dir", target, kernel_dir, _file] => {
            target.starts_with("target-") && kernel_dir.starts_with("linux-")
        }
        _ => false,
    }
}

fn components(relative: &Path) -> Vec<&str> {
    relative
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_str().unwrap_or("\u{fffd}")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Placement {
        placement(Path::new(path), false)
    }

    #[test]
    fn rewritten_files_are_copied() {
        for path in [
            ".config",
            ".profiles.mk",
            "repositories.conf",
            "repositories",
            "key-build.pub",
            "keys/b5043e70f9a75cde",
            "packages/Packages",
            "packages/packages.adb",
            "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621/vmlinux",
        ] {
            assert_eq!(file(path), Placement::Copy, "{path}");
        }
    }

    #[test]
    fn read_only_inputs_are_shared() {
        for path in [
            "Makefile",
            "include/version.mk",
            "staging_dir/host/bin/mksquashfs4",
            "packages/kernel_6.6.52-1_mipsel_24kc.ipk",
            "packages/base-files-1.0-r1.apk",
            "build_dir/target-x86_64_musl/linux-x86_64/linux-6.6.52/.config",
            "target/linux/ramips/image/Makefile",
        ] {
            assert_eq!(file(path), Placement::Share, "{path}");
        }
    }

    #[test]
    fn run_time_paths_never_come_from_pristine() {
        for path in [
            "tmp/.prereq-error",
            "dl/Packages.gz",
            "bin/targets/x86/64/sha256sums",
            ".imagegen-slot/records",
            "staging_dir/host/.prereq-build",
            "build_dir/target-x86_64_musl/root-x86",
            "build_dir/target-x86_64_musl/root.orig-x86/etc/passwd",
            "build_dir/target-x86_64_musl/json_info_files/a.json",
            "build_dir/target-x86_64_musl/linux-x86_64/tmp/image.bin",
            "build_dir/target-x86_64_musl/linux-x86_64/root.squashfs",
        ] {
            assert_eq!(file(path), Placement::RunTime, "{path}");
        }
        assert_eq!(placement(Path::new("tmp"), true), Placement::RunTime);
    }

    #[test]
    fn directories_are_never_copied() {
        assert_eq!(placement(Path::new("keys"), true), Placement::Share);
        assert_eq!(placement(Path::new("packages"), true), Placement::Share);
    }

    #[test]
    fn slot_bookkeeping_and_prereq_stamp_survive_reset() {
        assert!(is_kept_on_reset(Path::new(".imagegen-slot")));
        assert!(is_kept_on_reset(Path::new(
            "staging_dir/host/.prereq-build"
        )));
        assert!(!is_kept_on_reset(Path::new("tmp")));
    }
}
