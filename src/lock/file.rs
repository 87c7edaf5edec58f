//! The `imagegen.lock` file format: the upstream facts pinned per Image Builder ([`Triple`])
//! — archive and its sha256, the signing key, the revision, the `profiles.json` hash, and
//! each package feed's index (`[[builder.feed]]`: path, sha256, signing key). Reads and
//! writes the file; decides nothing about whether an entry is current. Files written before
//! feeds were pinned read as entries without feeds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Problem, Problems, Result};
use crate::feeds::FeedPin;
use crate::source::{self, Containment, Format, MapReader, SourceFile, Spanned};
use crate::triple::Triple;

pub use crate::manifest::LOCK_FILE_NAME;
/// 2: `[[builder.feed]]` (pinned package feeds). Version 1 files (no feeds) still read; an
/// older imagegen refuses a version 2 file by its version instead of by an unknown field.
const LOCK_VERSION: u64 = 2;
/// The oldest version this imagegen reads.
const OLDEST_LOCK_VERSION: u64 = 1;
const HEADER: &str = "# Written by imagegen; commit this file.\n";
const TOP_FIELDS: &[&str] = &["version", "builder"];
const ENTRY_FIELDS: &[&str] = &[
    "release",
    "target",
    "subtarget",
    "archive",
    "archive_sha256",
    "key_id",
    "key_fingerprint",
    "version_code",
    "profiles_json_sha256",
    "mirror",
    "locked_at",
    "feeds_unpinned",
    "feed",
];
const FEED_FIELDS: &[&str] = &["name", "index", "sha256", "key_id", "key_fingerprint"];
/// More feeds than any Image Builder lists; a bound for hostile files.
const MAX_FEEDS: usize = 64;

/// Every pinned Image Builder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockFile {
    pub entries: BTreeMap<Triple, LockEntry>,
}

/// What was true upstream for one Image Builder when it was locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockEntry {
    #[serde(flatten)]
    pub triple: Triple,
    /// The Image Builder archive's file name as listed in `sha256sums`.
    pub archive: String,
    pub archive_sha256: String,
    /// The usign key id that signed `sha256sums`; `None` if verification was off.
    pub key_id: Option<String>,
    /// SHA-256 (hex) of that key's Ed25519 public key: the id is only a name, this is the
    /// key. `None` if verification was off, or in lock files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// The build revision (`r24012-d8dd03c46f`).
    pub version_code: String,
    pub profiles_json_sha256: String,
    pub mirror: String,
    /// RFC 3339.
    pub locked_at: String,
    /// The package feeds the builder installs from, in repository-list order; empty in lock
    /// files written before feeds were pinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<FeedPin>,
    /// Why `feeds` is empty on purpose (an apk v3 builder, whose indexes imagegen does not
    /// read yet); `None` with empty `feeds` means the entry predates pinned feeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feeds_unpinned: Option<String>,
}

impl LockFile {
    /// The entry pinning `triple`, if any.
    pub fn get(&self, triple: &Triple) -> Option<&LockEntry> {
        self.entries.get(triple)
    }

    /// Add or replace the entry for its Image Builder.
    pub fn insert(&mut self, entry: LockEntry) {
        self.entries.insert(entry.triple.clone(), entry);
    }

    /// `Ok(None)` when the file does not exist; every problem of a malformed file at once.
    /// The lock file sits in the fleet root, so it must resolve inside its own directory.
    pub fn read(path: &Path) -> Result<Option<LockFile>> {
        // `symlink_metadata`: a dangling link is a lock file that cannot be read, not none.
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(None);
        }
        let root = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let display = path.file_name().map_or_else(
            || path.to_string_lossy().into_owned(),
            |name| name.to_string_lossy().into_owned(),
        );
        let invalid = format!("invalid lock file `{display}`");
        let source = SourceFile::read_limited(
            path,
            display,
            crate::source::MAX_MANIFEST_SIZE,
            Containment::Inside(root),
        )
        .map_err(|problem| Error::from_problems(invalid.clone(), vec![problem]))?;
        LockFile::parse(&source)
            .map(Some)
            .map_err(|problems| Error::from_problems(invalid, problems))
    }

    /// Validate lock text already read.
    pub fn parse(source: &Arc<SourceFile>) -> Result<LockFile, Vec<Problem>> {
        let tree = source::parse(source, Format::Toml).map_err(|problem| vec![problem])?;
        let mut problems = Problems::new();
        let lock = MapReader::new(&tree, source, &mut problems).map(read_lock);
        match lock {
            Some(lock) if problems.is_empty() => Ok(lock),
            _ => Err(problems.into_sorted()),
        }
    }

    /// Deterministic text: header, `version`, one `[[builder]]` per entry in key order.
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\nversion = {LOCK_VERSION}\n");
        for entry in self.entries.values() {
            out.push_str("\n[[builder]]\n");
            let mut field = |name: &str, value: &str| {
                let _ = writeln!(out, "{name} = {}", toml_string(value));
            };
            field("release", &entry.triple.release);
            field("target", &entry.triple.target);
            field("subtarget", &entry.triple.subtarget);
            field("archive", &entry.archive);
            field("archive_sha256", &entry.archive_sha256);
            if let Some(key_id) = &entry.key_id {
                field("key_id", key_id);
            }
            if let Some(fingerprint) = &entry.key_fingerprint {
                field("key_fingerprint", fingerprint);
            }
            field("version_code", &entry.version_code);
            field("profiles_json_sha256", &entry.profiles_json_sha256);
            field("mirror", &entry.mirror);
            field("locked_at", &entry.locked_at);
            if let Some(why) = &entry.feeds_unpinned {
                field("feeds_unpinned", why);
            }
            for feed in &entry.feeds {
                out.push_str("\n[[builder.feed]]\n");
                let mut field = |name: &str, value: &str| {
                    let _ = writeln!(out, "{name} = {}", toml_string(value));
                };
                field("name", &feed.name);
                field("index", &feed.index);
                field("sha256", &feed.sha256);
                if let Some(key_id) = &feed.key_id {
                    field("key_id", key_id);
                }
                if let Some(fingerprint) = &feed.key_fingerprint {
                    field("key_fingerprint", fingerprint);
                }
            }
        }
        out
    }

    /// Write atomically: a temp file in the same directory, fsync, rename, fsync the dir.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomically(path, self.to_text().as_bytes())
    }
}

fn read_lock(mut reader: MapReader<'_, '_>) -> LockFile {
    if let Some(version) = reader.required("version").map(|node| node.span.clone()) {
        match reader.opt_u64("version") {
            Some(found) if (OLDEST_LOCK_VERSION..=LOCK_VERSION).contains(&found.value) => {}
            Some(found) => reader.push(
                Problem::validation(format!(
                    "lock file version {} is not supported (this imagegen reads versions {OLDEST_LOCK_VERSION} to {LOCK_VERSION})",
                    found.value
                ))
                .at(reader.location(version))
                .with_help("run `imagegen lock` with the imagegen that wrote it, or delete the file and lock again"),
            ),
            None => {}
        }
    }
    let mut lock = LockFile::default();
    let items = reader
        .opt_list_up_to("builder", 100_000)
        .unwrap_or_default();
    for (index, item) in items.iter().enumerate() {
        let path = format!("builder[{index}]");
        let Some(entry) = reader.reader_for(item, &path).and_then(read_entry) else {
            continue;
        };
        if lock.entries.contains_key(&entry.triple) {
            reader.invalid(
                item.span.clone(),
                format!("`{path}`: `{}` is locked twice", entry.triple),
                "duplicate entry",
            );
        }
        lock.insert(entry);
    }
    reader.finish(TOP_FIELDS);
    lock
}

fn read_entry(mut reader: MapReader<'_, '_>) -> Option<LockEntry> {
    let text = |reader: &mut MapReader<'_, '_>, key: &str| reader.string(key);
    let release = text(&mut reader, "release");
    let target = text(&mut reader, "target");
    let subtarget = text(&mut reader, "subtarget");
    let archive = text(&mut reader, "archive");
    let archive_sha256 = text(&mut reader, "archive_sha256");
    let key_id = reader.opt_string("key_id");
    let key_fingerprint = reader.opt_string("key_fingerprint");
    let version_code = text(&mut reader, "version_code");
    let profiles_json_sha256 = text(&mut reader, "profiles_json_sha256");
    let mirror = text(&mut reader, "mirror");
    let locked_at = text(&mut reader, "locked_at");
    let feeds_unpinned = reader.opt_string("feeds_unpinned");
    let feeds = read_feeds(&mut reader);
    for (field, value, length) in [
        ("archive_sha256", &archive_sha256, 64),
        ("profiles_json_sha256", &profiles_json_sha256, 64),
        ("key_id", &key_id, 16),
        ("key_fingerprint", &key_fingerprint, 64),
    ] {
        if let Some(value) = value {
            check_hex(&mut reader, field, value, length);
        }
    }
    reader.finish(ENTRY_FIELDS);
    Some(LockEntry {
        triple: Triple::new(release?.value, target?.value, subtarget?.value),
        archive: archive?.value,
        archive_sha256: archive_sha256?.value,
        key_id: key_id.map(|key| key.value),
        key_fingerprint: key_fingerprint.map(|fingerprint| fingerprint.value),
        version_code: version_code?.value,
        profiles_json_sha256: profiles_json_sha256?.value,
        mirror: mirror?.value,
        locked_at: locked_at?.value,
        feeds,
        feeds_unpinned: feeds_unpinned.map(|why| why.value),
    })
}

fn read_feeds(reader: &mut MapReader<'_, '_>) -> Vec<FeedPin> {
    let items = reader.opt_list_up_to("feed", MAX_FEEDS).unwrap_or_default();
    let mut feeds: Vec<FeedPin> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let path = format!("feed[{index}]");
        let Some(mut feed) = reader.reader_for(item, &path) else {
            continue;
        };
        let name = feed.string("name");
        let index_path = feed.string("index");
        let sha256 = feed.string("sha256");
        let key_id = feed.opt_string("key_id");
        let key_fingerprint = feed.opt_string("key_fingerprint");
        for (field, value, length) in [
            ("sha256", &sha256, 64),
            ("key_id", &key_id, 16),
            ("key_fingerprint", &key_fingerprint, 64),
        ] {
            if let Some(value) = value {
                check_hex(&mut feed, field, value, length);
            }
        }
        if let Some(index_path) = &index_path
            && !is_mirror_path(&index_path.value)
        {
            let message = format!(
                "`{}` must be a path below the mirror root, not `{}`",
                feed.path_of("index"),
                index_path.value
            );
            feed.invalid(index_path.span.clone(), message, "not a mirror path");
        }
        feed.finish(FEED_FIELDS);
        let (Some(name), Some(index_path), Some(sha256)) = (name, index_path, sha256) else {
            continue;
        };
        if feeds.iter().any(|known| known.name == name.value) {
            let message = format!("feed `{}` is pinned twice", name.value);
            reader.invalid(name.span.clone(), message, "duplicate feed");
            continue;
        }
        feeds.push(FeedPin {
            name: name.value,
            index: index_path.value,
            sha256: sha256.value,
            key_id: key_id.map(|key| key.value),
            key_fingerprint: key_fingerprint.map(|fingerprint| fingerprint.value),
        });
    }
    feeds
}

/// A relative path of plain components (the lock names files on the mirror; a hostile lock
/// must not make imagegen fetch `../` or absolute URLs).
fn is_mirror_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-+~".contains(c))
        })
}

fn check_hex(reader: &mut MapReader<'_, '_>, field: &str, value: &Spanned<String>, length: usize) {
    let valid = value.value.len() == length
        && value
            .value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        let message = format!(
            "`{}` must be {length} lowercase hex digits, not `{}`",
            reader.path_of(field),
            value.value
        );
        reader.invalid(value.span.clone(), message, "not a hex digest");
    }
}

/// A TOML basic string; JSON string escapes are a subset of TOML's.
fn toml_string(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(release: &str, target: &str, key_id: Option<&str>) -> LockEntry {
        LockEntry {
            triple: Triple::new(release, target, "generic"),
            archive: format!("openwrt-imagebuilder-{release}-{target}-generic.Linux-x86_64.tar.xz"),
            archive_sha256: "0123456789abcdef".repeat(4),
            key_id: key_id.map(Into::into),
            key_fingerprint: None,
            version_code: "r24012-d8dd03c46f".into(),
            profiles_json_sha256: "fedcba9876543210".repeat(4),
            mirror: "https://downloads.openwrt.org".into(),
            locked_at: "2026-11-25T18:00:00Z".into(),
            feeds: Vec::new(),
            feeds_unpinned: None,
        }
    }

    fn parse_text(text: &str) -> Result<LockFile, Vec<String>> {
        let source = Arc::new(SourceFile::new(
            "imagegen.lock".into(),
            "imagegen.lock".into(),
            text.into(),
        ));
        LockFile::parse(&source)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn key_fingerprint_is_written_read_back_and_checked() {
        let mut lock = LockFile::default();
        let fingerprint = "5f".repeat(32);
        lock.insert(LockEntry {
            key_fingerprint: Some(fingerprint.clone()),
            ..entry("23.05.4", "ath79", Some("b5043e70f9a75cde"))
        });
        let text = lock.to_text();
        assert!(
            text.contains(&format!(
                "key_id = \"b5043e70f9a75cde\"\nkey_fingerprint = \"{fingerprint}\"\n"
            )),
            "{text}"
        );
        assert_eq!(parse_text(&text), Ok(lock));
        let bad = text.replace(&fingerprint, "b5043e70f9a75cde");
        assert_eq!(
            parse_text(&bad),
            Err(vec![
                "imagegen.lock:12:19: `builder[0].key_fingerprint` must be 64 lowercase hex digits, not `b5043e70f9a75cde`".to_string()
            ])
        );
    }

    #[test]
    fn version_1_files_read_and_unpinned_feeds_round_trip() {
        let mut lock = LockFile::default();
        let mut unpinned = entry("SNAPSHOT", "x86", None);
        unpinned.feeds_unpinned = Some("apk v3 package indexes are not read yet".into());
        lock.insert(unpinned);
        let text = lock.to_text();
        assert!(text.contains("\nfeeds_unpinned = \"apk v3 package indexes are not read yet\"\n"));
        assert_eq!(parse_text(&text), Ok(lock.clone()));
        let old = text.replace("version = 2", "version = 1");
        assert_eq!(parse_text(&old), Ok(lock));
    }

    #[test]
    fn text_is_deterministic_and_sorted() {
        let mut lock = LockFile::default();
        lock.insert(entry("23.05.4", "x86", None));
        lock.insert(entry("23.05.4", "ath79", Some("b5043e70f9a75cde")));
        insta::assert_snapshot!(lock.to_text(), @r#"
        # Written by imagegen; commit this file.

        version = 2

        [[builder]]
        release = "23.05.4"
        target = "ath79"
        subtarget = "generic"
        archive = "openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64.tar.xz"
        archive_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        key_id = "b5043e70f9a75cde"
        version_code = "r24012-d8dd03c46f"
        profiles_json_sha256 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
        mirror = "https://downloads.openwrt.org"
        locked_at = "2026-11-25T18:00:00Z"

        [[builder]]
        release = "23.05.4"
        target = "x86"
        subtarget = "generic"
        archive = "openwrt-imagebuilder-23.05.4-x86-generic.Linux-x86_64.tar.xz"
        archive_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        version_code = "r24012-d8dd03c46f"
        profiles_json_sha256 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
        mirror = "https://downloads.openwrt.org"
        locked_at = "2026-11-25T18:00:00Z"
        "#);
        assert_eq!(parse_text(&lock.to_text()), Ok(lock.clone()));
        assert_eq!(
            lock.get(&Triple::new("23.05.4", "x86", "generic"))
                .map(|e| e.key_id.clone()),
            Some(None)
        );
    }

    #[test]
    fn empty_lock_round_trips() {
        let lock = LockFile::default();
        assert_eq!(parse_text(&lock.to_text()), Ok(lock));
    }

    #[test]
    fn malformed_lock_reports_every_problem() {
        let text = "version = 3\nextra = 1\n\n[[builder]]\nrelease = \"23.05.4\"\ntarget = \"x86\"\nsubtarget = \"64\"\narchive = \"a.tar.xz\"\narchive_sha256 = \"XYZ\"\nversion_code = \"r1\"\nprofiles_json_sha256 = \"fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210\"\nmirror = \"m\"\n";
        assert_eq!(
            parse_text(text),
            Err(vec![
                "imagegen.lock:1:11: lock file version 3 is not supported (this imagegen reads versions 1 to 2)".to_string(),
                "imagegen.lock:2:1: unknown field `extra`".to_string(),
                "imagegen.lock:4:1: missing required field `builder[0].locked_at`".to_string(),
                "imagegen.lock:9:18: `builder[0].archive_sha256` must be 64 lowercase hex digits, not `XYZ`".to_string(),
            ])
        );
        assert!(parse_text("version = \n").is_err());
    }

    #[test]
    fn duplicate_entries_are_refused() {
        let mut lock = LockFile::default();
        lock.insert(entry("23.05.4", "x86", None));
        let text = lock.to_text();
        let twice = format!("{text}{}", &text[text.find("[[builder]]").unwrap_or(0)..]);
        let problems = parse_text(&twice).err().unwrap_or_default();
        assert_eq!(
            problems,
            ["imagegen.lock:15:1: `builder[1]`: `23.05.4/x86/generic` is locked twice"]
        );
    }

    #[test]
    fn write_replaces_atomically() {
        let Ok(directory) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let path = directory.path().join(LOCK_FILE_NAME);
        std::fs::write(&path, "old").unwrap_or_else(|error| panic!("{error}"));
        let mut lock = LockFile::default();
        lock.insert(entry("24.10.0", "x86", Some("d310c6f2833e97f7")));
        lock.write(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(LockFile::read(&path).ok().flatten(), Some(lock));
        let leftovers: Vec<_> = std::fs::read_dir(directory.path())
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(leftovers, [LOCK_FILE_NAME]);
    }

    #[test]
    fn read_reports_malformed_files_as_errors() {
        let Ok(directory) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let path = directory.path().join(LOCK_FILE_NAME);
        std::fs::write(&path, "version = 1\n[[builder]]\nrelease = 5\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let error = LockFile::read(&path).err().map(|error| error.message);
        assert_eq!(error.as_deref(), Some("invalid lock file `imagegen.lock`"));
    }
}
