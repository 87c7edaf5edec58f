//! Gives a build its packages without a network: a local copy of each pinned feed inside the
//! slot's bookkeeping directory (`.imagegen-slot/feeds/<name>/`: the pinned, signed index as
//! published, and hardlinks — copies across filesystems — of exactly the verified package
//! files the plan resolved), and the slot's private `repositories.conf` / `repositories`
//! rewritten to point at those copies. The sandbox mounts the copies read-only at
//! `/imagegen/feeds`; unsandboxed builds read them in place.
//!
//! Only the slot is written: the repository file is a private copy (`placement`), replaced
//! by rename, which the next reset restores from the pristine tree; the feed copies are
//! removed after the build. A feed the Image Builder lists that has no pinned copy is
//! commented out: without a network it could only fail.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::slot::{meta_dir, remove_tree};
use crate::error::{Error, ErrorCode, Result};
use crate::feeds::{FeedSource, IndexFormat, SlotFeeds};

/// Where the feed copies live in a slot.
pub(crate) fn feeds_dir(slot: &Path) -> PathBuf {
    meta_dir(slot).join("feeds")
}

/// Writes the feed copies and points the repository file at them, as the build will see
/// them at `seen_as` (the copies' directory inside the sandbox, or on the host).
pub(crate) fn install(slot: &Path, feeds: &SlotFeeds, seen_as: &Path) -> Result<()> {
    let dir = feeds_dir(slot);
    remove_tree(&dir)?;
    make_dir(&dir)?;
    for feed in &feeds.feeds {
        let name = &feed.source.name;
        if !is_plain(name) {
            return Err(Error::new(
                ErrorCode::Validation,
                format!("feed name `{name}` is not a plain name"),
            ));
        }
        let target = dir.join(name);
        make_dir(&target)?;
        copy_index(&feed.index_dir, &target, feed.source.format)?;
        for (file_name, blob) in &feed.packages {
            link_or_copy(blob, &target.join(file_name))?;
        }
    }
    rewrite_repositories(slot, feeds, seen_as)
}

/// Removes the feed copies (after a build; the next install also starts afresh).
pub(crate) fn remove(slot: &Path) -> Result<()> {
    remove_tree(&feeds_dir(slot))
}

/// Copies the index files (the cache keeps them private, mode 0600; the build user must
/// read these copies).
fn copy_index(from: &Path, to: &Path, format: IndexFormat) -> Result<()> {
    let index = from.join(format.index_name());
    copy_readable(&index, &to.join(format.index_name()))?;
    let signature = from.join(format.signature_name());
    if signature.is_file() {
        copy_readable(&signature, &to.join(format.signature_name()))?;
    }
    if format == IndexFormat::Opkg {
        // `src/gz` feeds are read as `Packages.gz`; a mirror without one gets it made here
        // (opkg checks the signature over the decompressed bytes, so the index is the same).
        let compressed = from.join("Packages.gz");
        let target = to.join("Packages.gz");
        if compressed.is_file() {
            copy_readable(&compressed, &target)?;
        } else {
            let bytes = fs::read(&index).map_err(|error| Error::io("reading", &index, error))?;
            fs::write(&target, gzip(&bytes)?)
                .map_err(|error| Error::io("writing", &target, error))?;
            set_mode(&target, 0o644)?;
        }
    }
    Ok(())
}

fn copy_readable(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).map_err(|error| Error::io("copying", from, error))?;
    set_mode(to, 0o644)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|error| Error::io("setting permissions of", path, error))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|error| Error::internal(format!("compressing a feed index: {error}")))
}

/// A hardlink of the cache blob (read-only, verified before this build); a copy when the
/// cache is on another filesystem.
fn link_or_copy(blob: &Path, target: &Path) -> Result<()> {
    if fs::hard_link(blob, target).is_ok() {
        return Ok(());
    }
    fs::copy(blob, target).map_err(|error| Error::io("copying", blob, error))?;
    set_mode(target, 0o444)
}

fn make_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(|error| Error::io("creating", path, error))?;
    // The umask may have taken bits away; the build user must read these.
    set_mode(path, 0o755)
}

fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
}

/// Rewrites whichever repository file the Image Builder has (opkg's `repositories.conf` or
/// apk's `repositories`), through a temp file and rename.
fn rewrite_repositories(slot: &Path, feeds: &SlotFeeds, seen_as: &Path) -> Result<()> {
    let (path, apk) = if slot.join("repositories.conf").is_file() {
        (slot.join("repositories.conf"), false)
    } else if slot.join("repositories").is_file() {
        (slot.join("repositories"), true)
    } else {
        return Err(Error::new(
            ErrorCode::ImagebuilderError,
            "the Image Builder has neither `repositories.conf` nor `repositories`",
        ));
    };
    let text = fs::read_to_string(&path).map_err(|error| Error::io("reading", &path, error))?;
    let rewritten = if apk {
        rewrite_apk(&text, &feeds.feeds, seen_as)
    } else {
        rewrite_opkg(&text, &feeds.feeds, seen_as)
    };
    let temp = path.with_extension("imagegen-tmp");
    fs::write(&temp, rewritten).map_err(|error| Error::io("writing", &temp, error))?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o644))
        .map_err(|error| Error::io("setting permissions of", &temp, error))?;
    fs::rename(&temp, &path).map_err(|error| Error::io("replacing", &path, error))
}

/// The pinned feed a repository line means: same name, or a URL ending in its directory.
fn matching<'a>(
    feeds: &'a [crate::feeds::SlotFeed],
    name: Option<&str>,
    url: &str,
) -> Option<&'a FeedSource> {
    let url = url.trim_end_matches('/');
    feeds.iter().map(|feed| &feed.source).find(|source| {
        name == Some(source.name.as_str())
            || url.ends_with(&format!("/{}", source.dir))
            || url.ends_with(&format!("/{}", source.index_path()))
    })
}

const UNPINNED: &str = "# imagegen: no pinned local copy of this feed (builds have no network):";

fn rewrite_opkg(text: &str, feeds: &[crate::feeds::SlotFeed], seen_as: &Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let is_feed = words.len() >= 3 && matches!(words[0], "src/gz" | "src");
        if !is_feed || words[1] == "imagebuilder" {
            out.push_str(line);
        } else if let Some(source) = matching(feeds, Some(words[1]), words[2]) {
            out.push_str(&format!(
                "src/gz {} file:{}/{}",
                words[1],
                seen_as.display(),
                source.name
            ));
        } else {
            out.push_str(&format!("{UNPINNED} {line}"));
        }
        out.push('\n');
    }
    out
}

fn rewrite_apk(text: &str, feeds: &[crate::feeds::SlotFeed], seen_as: &Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let url = line.trim();
        if url.is_empty() || url.starts_with('#') {
            out.push_str(line);
        } else if let Some(source) = matching(feeds, None, url) {
            out.push_str(&format!(
                "{}/{}/{}",
                seen_as.display(),
                source.name,
                source.format.index_name()
            ));
        } else {
            out.push_str(&format!("{UNPINNED} {line}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::SlotFeed;

    fn feed(name: &str, dir: &str, format: IndexFormat) -> SlotFeed {
        SlotFeed {
            source: FeedSource {
                name: name.into(),
                dir: dir.into(),
                format,
            },
            index_dir: PathBuf::new(),
            packages: Default::default(),
        }
    }

    #[test]
    fn opkg_lines_point_at_the_local_copies_and_unpinned_feeds_are_commented_out() {
        let text = "# src/gz %n %U\nsrc/gz openwrt_core https://downloads.openwrt.org/releases/23.05.4/targets/x86/64/packages\nsrc/gz openwrt_video https://downloads.openwrt.org/releases/23.05.4/packages/x86_64/video\nsrc imagebuilder file:packages\noption check_signature\n";
        let feeds = [feed(
            "openwrt_core",
            "releases/23.05.4/targets/x86/64/packages",
            IndexFormat::Opkg,
        )];
        assert_eq!(
            rewrite_opkg(text, &feeds, Path::new("/imagegen/feeds")),
            "# src/gz %n %U\nsrc/gz openwrt_core file:/imagegen/feeds/openwrt_core\n# imagegen: no pinned local copy of this feed (builds have no network): src/gz openwrt_video https://downloads.openwrt.org/releases/23.05.4/packages/x86_64/video\nsrc imagebuilder file:packages\noption check_signature\n"
        );
    }

    #[test]
    fn apk_lines_match_by_directory() {
        let text = "https://downloads.openwrt.org/snapshots/packages/x86_64/base/packages.adb\n";
        let feeds = [feed(
            "openwrt_base",
            "snapshots/packages/x86_64/base",
            IndexFormat::Apk,
        )];
        assert_eq!(
            rewrite_apk(text, &feeds, Path::new("/imagegen/feeds")),
            "/imagegen/feeds/openwrt_base/packages.adb\n"
        );
    }
}
