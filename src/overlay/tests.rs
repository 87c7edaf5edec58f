use std::cell::Cell;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::owner::IdTables;
use super::stage::{OwnerPolicy, stage_with};
use super::*;
use crate::error::{ErrorCode, Location};

/// A fleet repository in a temp dir.
struct Fleet {
    directory: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            directory: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn root(&self) -> &Path {
        self.directory.path()
    }

    fn file(&self, relative: &str, contents: &str, mode: u32) -> &Fleet {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, contents).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    fn dir(&self, relative: &str, mode: u32) -> &Fleet {
        let path = self.root().join(relative);
        fs::create_dir_all(&path).expect("mkdir");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    fn link(&self, relative: &str, target: &str) -> &Fleet {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        symlink(target, path).expect("symlink");
        self
    }

    fn input(
        &self,
        overlay_dir: Option<&str>,
        files: &[(&str, &str, Option<u32>, Option<&str>)],
    ) -> OverlayInput {
        OverlayInput {
            fleet_root: self.root().to_path_buf(),
            overlay_dir: overlay_dir.map(|text| source(text, "overlay_dir")),
            files: files
                .iter()
                .enumerate()
                .map(|(index, (text, destination, mode, owner))| FileInput {
                    source: source(text, &format!("files[{index}]")),
                    destination: destination.to_string(),
                    mode: *mode,
                    owner: owner.map(str::to_string),
                })
                .collect(),
        }
    }
}

fn source(text: &str, field: &str) -> OverlaySource {
    OverlaySource {
        text: text.to_string(),
        location: Some(Location::file(format!("profiles/p.yaml#{field}"))),
    }
}

fn digest_now(input: &OverlayInput) -> Result<OverlayDigest, Vec<Problem>> {
    digest(input, &mut NoHashCache)
}

fn messages(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

fn kinds(digest: &OverlayDigest) -> Vec<(String, EntryKind, u32)> {
    digest
        .entries
        .iter()
        .map(|entry| (entry.path.clone(), entry.kind, entry.mode))
        .collect()
}

/// The fixed small tree whose tree hash is pinned below.
fn pinned_fleet() -> (Fleet, OverlayInput) {
    let fleet = Fleet::new();
    fleet
        .dir("files/base", 0o755)
        .dir("files/base/etc", 0o755)
        .file("files/base/etc/banner", "hello\n", 0o644)
        .dir("files/base/etc/config", 0o750)
        .file(
            "files/base/etc/config/network",
            "config interface 'lan'\n",
            0o600,
        )
        .dir("files/base/usr/bin", 0o755)
        .file("files/base/usr/bin/tool", "#!/bin/sh\necho hi\n", 0o755)
        .link("files/base/etc/localtime", "/tmp/TZ")
        .dir("files/base/usr", 0o755)
        .file("files/extra/motd", "welcome\n", 0o644);
    let input = fleet.input(
        Some("files/base"),
        &[(
            "files/extra/motd",
            "/etc/motd",
            Some(0o600),
            Some("root:root"),
        )],
    );
    (fleet, input)
}

#[test]
fn canonical_serialization_and_tree_hash_are_pinned() {
    let (_fleet, input) = pinned_fleet();
    let digest = digest_now(&input).expect("valid overlay");
    let expected = concat!(
        "imagegen-overlay-v1\n",
        "dir 0755 null 0 \"\" \"/\"\n",
        "dir 0755 null 0 \"\" \"/etc\"\n",
        "file 0644 null 6 \"HELLO\" \"/etc/banner\"\n",
        "dir 0750 null 0 \"\" \"/etc/config\"\n",
        "file 0600 null 23 \"NETWORK\" \"/etc/config/network\"\n",
        "symlink 0777 null 7 \"/tmp/TZ\" \"/etc/localtime\"\n",
        "file 0600 \"root:root\" 8 \"MOTD\" \"/etc/motd\"\n",
        "dir 0755 null 0 \"\" \"/usr\"\n",
        "dir 0755 null 0 \"\" \"/usr/bin\"\n",
        "file 0755 null 18 \"TOOL\" \"/usr/bin/tool\"\n",
    )
    .replace("HELLO", &blake3::hash(b"hello\n").to_hex())
    .replace(
        "NETWORK",
        &blake3::hash(b"config interface 'lan'\n").to_hex(),
    )
    .replace("MOTD", &blake3::hash(b"welcome\n").to_hex())
    .replace("TOOL", &blake3::hash(b"#!/bin/sh\necho hi\n").to_hex());
    assert_eq!(canonical::serialize(&digest.entries), expected);
    // Pinned: if this changes, the format changed; bump FORMAT_HEADER instead.
    assert_eq!(
        digest.tree_hash,
        "9099742d28959aa1b7ecc81e6db8187d4c76c95023ce1b2cfa51cd13eceaa362"
    );
}

#[test]
fn tree_hash_covers_mode_owner_kind_and_target() {
    let (fleet, input) = pinned_fleet();
    let base = digest_now(&input).expect("valid").tree_hash;
    let mut changed_mode = input.clone();
    changed_mode.files[0].mode = Some(0o644);
    let mut changed_owner = input.clone();
    changed_owner.files[0].owner = None;
    assert_ne!(digest_now(&changed_mode).expect("valid").tree_hash, base);
    assert_ne!(digest_now(&changed_owner).expect("valid").tree_hash, base);
    fs::remove_file(fleet.root().join("files/base/etc/localtime")).expect("rm");
    fleet.link("files/base/etc/localtime", "/tmp/TZ2");
    assert_ne!(digest_now(&input).expect("valid").tree_hash, base);
}

#[test]
fn mode_override_and_implicit_directories() {
    let fleet = Fleet::new();
    fleet.file("files/sshd", "Port 22\n", 0o644);
    let input = fleet.input(
        None,
        &[("files/sshd", "/etc//ssh/./sshd_config", Some(0o640), None)],
    );
    let digest = digest_now(&input).expect("valid");
    assert_eq!(
        kinds(&digest),
        [
            ("/".to_string(), EntryKind::Directory, 0o755),
            ("/etc".to_string(), EntryKind::Directory, 0o755),
            ("/etc/ssh".to_string(), EntryKind::Directory, 0o755),
            ("/etc/ssh/sshd_config".to_string(), EntryKind::File, 0o640),
        ]
    );
}

#[test]
fn files_override_overlay_dir_and_later_files_override_earlier() {
    let fleet = Fleet::new();
    fleet
        .file("overlay/etc/banner", "old\n", 0o644)
        .file("overlay/etc/config/a", "a\n", 0o644)
        .file("files/banner", "new\n", 0o644)
        .file("files/first", "first\n", 0o644)
        .file("files/second", "second\n", 0o644);
    let input = fleet.input(
        Some("overlay"),
        &[
            ("files/banner", "/etc/banner", None, None),
            ("files/first", "/etc/config", None, None),
            ("files/first", "/etc/x", None, None),
            ("files/second", "/etc/x", None, None),
        ],
    );
    let digest = digest_now(&input).expect("valid");
    let hash_of = |path: &str| digest.entry(path).map(|entry| entry.digest.clone());
    assert_eq!(
        hash_of("/etc/banner"),
        Some(blake3::hash(b"new\n").to_hex().to_string())
    );
    // A file over a directory replaces the whole subtree.
    assert_eq!(
        digest.entry("/etc/config").map(|entry| entry.kind),
        Some(EntryKind::File)
    );
    assert!(digest.entry("/etc/config/a").is_none());
    assert_eq!(
        hash_of("/etc/x"),
        Some(blake3::hash(b"second\n").to_hex().to_string())
    );
}

#[test]
fn directory_source_merges_and_applies_owner_to_subtree() {
    let fleet = Fleet::new();
    fleet
        .file("overlay/etc/keep", "keep\n", 0o644)
        .file("extra/etc/added", "added\n", 0o600)
        .dir("extra", 0o700);
    let input = fleet.input(Some("overlay"), &[("extra", "/", Some(0o755), Some("0:0"))]);
    let digest = digest_now(&input).expect("valid");
    assert!(
        digest
            .entry("/etc/keep")
            .is_some_and(|entry| entry.owner.is_none())
    );
    let added = digest.entry("/etc/added").expect("added");
    assert_eq!((added.mode, added.owner.as_deref()), (0o600, Some("0:0")));
    assert_eq!(digest.entry("/").map(|entry| entry.mode), Some(0o755));
}

#[test]
fn symlinks_inside_an_overlay_are_kept_not_followed() {
    let fleet = Fleet::new();
    fleet
        .file("overlay/etc/real", "real\n", 0o644)
        .link("overlay/etc/shadow-link", "../../../../etc/shadow")
        .dir("overlay/www", 0o755)
        .file("overlay/www/index.html", "<p>\n", 0o644)
        .link("overlay/etc/www-link", "../www");
    let digest = digest_now(&fleet.input(Some("overlay"), &[])).expect("valid");
    let link = digest.entry("/etc/shadow-link").expect("link entry");
    assert_eq!(
        (link.kind, link.digest.as_str(), link.mode),
        (EntryKind::Symlink, "../../../../etc/shadow", 0o777)
    );
    assert_eq!(
        digest.entry("/etc/www-link").map(|entry| entry.kind),
        Some(EntryKind::Symlink)
    );
    assert!(
        digest
            .entries
            .iter()
            .all(|entry| !entry.path.starts_with("/etc/www-link/"))
    );
}

#[test]
fn escapes_through_dot_dot_and_symlinked_parents_are_refused() {
    let outside = tempfile::tempdir().expect("temp dir");
    fs::write(outside.path().join("secret"), "secret\n").expect("write");
    let fleet = Fleet::new();
    fleet
        .link("files/escape", &outside.path().display().to_string())
        .dir("files/ok", 0o755);
    let input = fleet.input(
        Some("files/escape"),
        &[
            ("../secret", "/etc/a", None, None),
            ("files/ok/../../../secret", "/etc/b", None, None),
            ("files/escape/secret", "/etc/c", None, None),
            ("/etc/passwd", "/etc/d", None, None),
        ],
    );
    let problems = digest_now(&input).expect_err("escapes");
    let texts = messages(&problems);
    assert_eq!(problems.len(), 5, "{texts:#?}");
    assert!(
        problems
            .iter()
            .all(|problem| problem.code == ErrorCode::Validation && problem.help.is_some())
    );
    assert!(
        texts[0]
            .starts_with("profiles/p.yaml#overlay_dir: overlay source `files/escape` resolves to"),
        "{texts:#?}"
    );
    assert_eq!(
        texts[1],
        "profiles/p.yaml#files[0]: overlay source `../secret` is outside the fleet root"
    );
    assert_eq!(
        texts[2],
        "profiles/p.yaml#files[1]: overlay source `files/ok/../../../secret` is outside the fleet root"
    );
    assert!(
        texts[3].contains("`files/escape/secret` resolves to")
            && texts[3].ends_with("outside the fleet root")
    );
    assert_eq!(
        texts[4],
        "profiles/p.yaml#files[3]: overlay source `/etc/passwd` is an absolute path"
    );
}

#[test]
fn a_symlink_source_inside_the_fleet_is_followed() {
    let fleet = Fleet::new();
    fleet
        .file("files/real", "real\n", 0o640)
        .link("files/alias", "real");
    let digest =
        digest_now(&fleet.input(None, &[("files/alias", "/etc/real", None, None)])).expect("valid");
    let entry = digest.entry("/etc/real").expect("entry");
    assert_eq!((entry.kind, entry.mode), (EntryKind::File, 0o640));
}

#[test]
fn missing_sources_bad_destinations_and_special_files_are_all_reported() {
    let fleet = Fleet::new();
    fleet.file("files/a", "a\n", 0o644).dir("overlay", 0o755);
    let fifo = fleet.root().join("overlay/pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let input = fleet.input(
        Some("overlay"),
        &[
            ("files/nope", "/etc/nope", None, None),
            ("files/a", "etc/relative", None, None),
            ("files/a", "/etc/../shadow", None, None),
            ("files/a", "/", None, None),
            ("files/a", "/etc/a", None, Some("root:")),
            ("files/a", "/etc/a/b", None, None),
        ],
    );
    let problems = digest_now(&input).expect_err("invalid");
    assert_eq!(
        messages(&problems),
        [
            "profiles/p.yaml#overlay_dir: overlay source `overlay` contains `overlay/pipe`, a fifo".to_string(),
            "profiles/p.yaml#files[0]: overlay source `files/nope` does not exist".to_string(),
            "profiles/p.yaml#files[1]: destination `etc/relative` is not an absolute path".to_string(),
            "profiles/p.yaml#files[2]: destination `/etc/../shadow` contains `..`".to_string(),
            "profiles/p.yaml#files[3]: file `files/a` cannot replace the image root `/`".to_string(),
            "profiles/p.yaml#files[4]: owner `root:` is not `user` or `user:group`".to_string(),
            "profiles/p.yaml#files[5]: destination `/etc/a/b` needs `/etc/a` to be a directory, but an earlier entry places a file or symlink there".to_string(),
        ]
    );
}

/// Answers every lookup with a sentinel and counts calls, to prove hits are not read.
#[derive(Default)]
struct SentinelCache {
    lookups: Cell<usize>,
    records: usize,
}

impl HashCache for SentinelCache {
    fn lookup(&self, _path: &Path, _stamp: &FileStamp) -> Option<[u8; 32]> {
        self.lookups.set(self.lookups.get() + 1);
        Some([7; 32])
    }

    fn record(&mut self, _path: &Path, _stamp: FileStamp, _hash: [u8; 32]) {
        self.records += 1;
    }
}

#[test]
fn a_cache_hit_is_used_without_reading_the_file() {
    let fleet = Fleet::new();
    fleet.file("files/a", "actual contents\n", 0o644);
    let mut cache = SentinelCache::default();
    let digest = digest(
        &fleet.input(None, &[("files/a", "/a", None, None)]),
        &mut cache,
    )
    .expect("valid");
    let entry = digest.entry("/a").expect("entry");
    assert_eq!(entry.digest, "07".repeat(32));
    assert_eq!(entry.size, 16, "size comes from the stamp");
    assert_eq!((cache.lookups.get(), cache.records), (1, 0));
}

#[test]
fn fresh_files_are_hashed_but_not_recorded() {
    let fleet = Fleet::new();
    fleet.file("files/a", "a\n", 0o644);
    let input = fleet.input(None, &[("files/a", "/a", None, None)]);
    let mut cache = MemoryHashCache::new();
    let now = SystemTime::now();
    let fresh = digest_many_at(&[&input], &mut cache, now)
        .remove(0)
        .expect("valid");
    assert!(
        cache.is_empty(),
        "a file changed within the racy window must not be recorded"
    );
    let later = now + Duration::from_secs(10);
    let recorded = digest_many_at(&[&input], &mut cache, later)
        .remove(0)
        .expect("valid");
    assert_eq!(cache.len(), 1);
    assert_eq!(fresh, recorded);
    let (path, stamp, hash) = cache.iter().next().expect("one entry");
    assert_eq!(
        path,
        fs::canonicalize(fleet.root().join("files/a")).expect("canonical")
    );
    assert_eq!(stamp.size, 2);
    assert_eq!(hash, blake3::hash(b"a\n").as_bytes());
}

#[test]
fn a_changed_file_misses_the_cache() {
    let fleet = Fleet::new();
    fleet.file("files/a", "one\n", 0o644);
    let input = fleet.input(None, &[("files/a", "/a", None, None)]);
    let mut cache = MemoryHashCache::new();
    let later = SystemTime::now() + Duration::from_secs(10);
    digest_many_at(&[&input], &mut cache, later)
        .remove(0)
        .expect("valid");
    fs::write(fleet.root().join("files/a"), "two\n").expect("rewrite");
    let digest = digest_many_at(&[&input], &mut cache, later + Duration::from_secs(1))
        .remove(0)
        .expect("valid");
    assert_eq!(
        digest.entry("/a").map(|entry| entry.digest.clone()),
        Some(blake3::hash(b"two\n").to_hex().to_string())
    );
}

/// Counts lookups per path and never hits.
#[derive(Default)]
struct CountingCache {
    lookups: std::cell::RefCell<Vec<PathBuf>>,
}

impl HashCache for CountingCache {
    fn lookup(&self, path: &Path, _stamp: &FileStamp) -> Option<[u8; 32]> {
        self.lookups.borrow_mut().push(path.to_path_buf());
        None
    }

    fn record(&mut self, _path: &Path, _stamp: FileStamp, _hash: [u8; 32]) {}
}

#[test]
fn digest_many_reads_a_shared_file_once_and_keeps_results_apart() {
    let fleet = Fleet::new();
    fleet
        .file("files/shared", "shared\n", 0o644)
        .file("files/own", "own\n", 0o644);
    let first = fleet.input(None, &[("files/shared", "/etc/shared", None, None)]);
    let second = fleet.input(
        None,
        &[
            ("files/shared", "/etc/s", None, None),
            ("files/own", "/etc/own", None, None),
        ],
    );
    let broken = fleet.input(None, &[("files/missing", "/x", None, None)]);
    let mut cache = CountingCache::default();
    let results = digest_many(&[&first, &second, &broken], &mut cache);
    assert_eq!(
        cache.lookups.borrow().len(),
        2,
        "one lookup per distinct file"
    );
    let shared = blake3::hash(b"shared\n").to_hex().to_string();
    let [Ok(first), Ok(second), Err(problems)] = results.as_slice() else {
        panic!("unexpected results: {results:?}");
    };
    assert_eq!(
        first.entry("/etc/shared").map(|entry| &entry.digest),
        Some(&shared)
    );
    assert_eq!(
        second.entry("/etc/s").map(|entry| &entry.digest),
        Some(&shared)
    );
    assert_eq!(problems.len(), 1);
    assert_eq!(
        *first,
        digest_now(&fleet.input(None, &[("files/shared", "/etc/shared", None, None)]))
            .expect("valid")
    );
}

#[test]
fn cache_entries_round_trip_as_bytes() {
    let stamp = FileStamp {
        size: 5,
        mtime_ns: -3,
        ctime_ns: 1 << 100,
        inode: 9,
        device: 42,
    };
    let bytes = MemoryHashCache::encode_entry(&stamp, &[3; 32]);
    assert_eq!(bytes.len(), 89);
    assert_eq!(
        MemoryHashCache::decode_entry(&bytes),
        Some((stamp, [3; 32]))
    );
    assert_eq!(MemoryHashCache::decode_entry(&bytes[1..]), None);
    let mut other_version = bytes.clone();
    other_version[0] = 2;
    assert_eq!(MemoryHashCache::decode_entry(&other_version), None);
    let mut cache = MemoryHashCache::new();
    assert!(cache.insert_encoded(PathBuf::from("/f"), &bytes));
    assert_eq!(cache.lookup(Path::new("/f"), &stamp), Some([3; 32]));
    assert_eq!(
        cache.lookup(Path::new("/f"), &FileStamp { size: 6, ..stamp }),
        None
    );
}

#[test]
fn stage_writes_the_tree_and_returns_the_same_digest() {
    let (fleet, input) = pinned_fleet();
    fleet.dir("files/base/ro", 0o555);
    fs::set_permissions(
        fleet.root().join("files/base/ro"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    fleet.file("files/base/ro/inside", "x\n", 0o4755);
    fs::set_permissions(
        fleet.root().join("files/base/ro"),
        fs::Permissions::from_mode(0o555),
    )
    .expect("chmod");
    let staged_dir = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(staged_dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
    let staged = stage_with(&input, staged_dir.path(), &OwnerPolicy::Skip).expect("staged");
    assert_eq!(staged, digest_now(&input).expect("valid"));
    let mode = |path: &str| {
        fs::symlink_metadata(staged_dir.path().join(path))
            .expect("stat")
            .mode()
            & 0o7777
    };
    assert_eq!(
        mode(""),
        0o755,
        "the staging root gets the overlay root's mode"
    );
    assert_eq!(
        (mode("ro"), mode("ro/inside"), mode("etc/motd")),
        (0o555, 0o4755, 0o600)
    );
    assert_eq!(
        fs::read_link(staged_dir.path().join("etc/localtime")).expect("link"),
        PathBuf::from("/tmp/TZ")
    );
    assert_eq!(
        fs::read_to_string(staged_dir.path().join("etc/motd")).expect("read"),
        "welcome\n"
    );
}

#[test]
fn stage_refuses_a_non_empty_directory_and_unresolvable_owners() {
    let fleet = Fleet::new();
    fleet.file("files/a", "a\n", 0o644);
    let input = fleet.input(None, &[("files/a", "/a", None, Some("no-such-user:0"))]);
    let staged_dir = tempfile::tempdir().expect("temp dir");
    let error = stage_with(
        &input,
        staged_dir.path(),
        &OwnerPolicy::Apply(IdTables::default()),
    )
    .expect_err("unknown user");
    assert_eq!(error.code, ErrorCode::Validation);
    assert_eq!(
        messages(&error.problems),
        [
            "profiles/p.yaml#files[0]: owner `no-such-user:0` cannot be resolved: user `no-such-user` is not in passwd"
        ]
    );
    assert_eq!(
        fs::read_dir(staged_dir.path()).expect("list").count(),
        0,
        "nothing written"
    );
    fs::write(staged_dir.path().join("stray"), "").expect("write");
    let numeric = fleet.input(None, &[("files/a", "/a", None, Some("0:0"))]);
    let error = stage_with(&numeric, staged_dir.path(), &OwnerPolicy::Skip).expect_err("not empty");
    assert!(error.message.contains("is not empty"), "{}", error.message);
}

#[test]
fn stage_applies_numeric_owners_when_root() {
    if unsafe { libc::geteuid() } != 0 {
        return; // chown needs root; the tables are still exercised in owner.rs
    }
    let fleet = Fleet::new();
    fleet
        .file("files/a", "a\n", 0o2755)
        .link("tree/l", "/x")
        .file("tree/f", "f\n", 0o644);
    let input = fleet.input(
        None,
        &[
            ("files/a", "/a", None, Some("1234:4321")),
            ("tree", "/t", None, Some("7:8")),
        ],
    );
    let staged_dir = tempfile::tempdir().expect("temp dir");
    stage_with(
        &input,
        staged_dir.path(),
        &OwnerPolicy::Apply(IdTables::default()),
    )
    .expect("staged");
    let ids = |path: &str| {
        let metadata = fs::symlink_metadata(staged_dir.path().join(path)).expect("stat");
        (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777)
    };
    assert_eq!(ids("a"), (1234, 4321, 0o2755), "set-id bits survive chown");
    assert_eq!((ids("t").0, ids("t/l").0, ids("t/f").1), (7, 7, 8));
}

#[test]
fn destinations_through_symlinks_and_oversized_modes_are_refused() {
    let fleet = Fleet::new();
    fleet
        .file("files/a", "a\n", 0o644)
        .link("overlay/etc/config", "/tmp/config");
    let input = fleet.input(
        Some("overlay"),
        &[
            ("files/a", "/etc/config/network", None, None),
            ("files/a", "/etc/b", Some(0o10644), None),
        ],
    );
    let problems = digest_now(&input).expect_err("invalid");
    assert_eq!(
        messages(&problems),
        [
            "profiles/p.yaml#files[0]: destination `/etc/config/network` needs `/etc/config` to be a directory, but an earlier entry places a file or symlink there",
            "profiles/p.yaml#files[1]: mode `10644` has bits above `7777`",
        ]
    );
}

#[test]
fn hashing_refuses_a_symlink_swapped_in_after_the_walk() {
    let fleet = Fleet::new();
    fleet
        .file("files/real", "real\n", 0o644)
        .link("files/swapped", "real");
    let real = fleet.root().join("files/real");
    let stamp = FileStamp::from_metadata(&fs::metadata(&real).expect("stat"));
    assert!(hash::hash_file(&real, &stamp).is_ok_and(|read| read.stable));
    let error = hash::hash_file(&fleet.root().join("files/swapped"), &stamp)
        .err()
        .expect("refused");
    assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
}

#[test]
fn large_files_hash_like_blake3_in_one_call() {
    let fleet = Fleet::new();
    let contents: Vec<u8> = (0..3_000_000u32).map(|index| (index % 251) as u8).collect();
    fs::create_dir_all(fleet.root().join("files")).expect("mkdir");
    fs::write(fleet.root().join("files/big"), &contents).expect("write");
    let digest =
        digest_now(&fleet.input(None, &[("files/big", "/big", None, None)])).expect("valid");
    let entry = digest.entry("/big").expect("entry");
    assert_eq!(
        (entry.size, entry.digest.clone()),
        (3_000_000, blake3::hash(&contents).to_hex().to_string())
    );
}
