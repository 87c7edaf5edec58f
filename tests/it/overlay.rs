//! Stages a realistic overlay with the real library and compares the staged tree with what
//! `find` and the files on disk say.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use imagegen::overlay::{self, EntryKind, FileInput, MemoryHashCache, OverlayInput, OverlaySource};

fn write(root: &Path, relative: &str, contents: &str, mode: u32) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, contents).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn source(text: &str) -> OverlaySource {
    OverlaySource {
        text: text.to_string(),
        location: None,
    }
}

fn file(text: &str, destination: &str, mode: Option<u32>, owner: Option<&str>) -> FileInput {
    FileInput {
        source: source(text),
        destination: destination.to_string(),
        mode,
        owner: owner.map(str::to_string),
    }
}

/// A fleet repository like a user's: a shared overlay plus per-device files.
fn realistic_fleet(root: &Path) -> OverlayInput {
    write(
        root,
        "files/common/etc/banner",
        "  OpenWrt, managed by imagegen\n",
        0o644,
    );
    write(
        root,
        "files/common/etc/config/network",
        "config interface 'loopback'\n\toption device 'lo'\n",
        0o644,
    );
    write(
        root,
        "files/common/etc/config/system",
        "config system\n\toption hostname 'ap'\n",
        0o644,
    );
    write(
        root,
        "files/common/etc/config/wireless",
        "# replaced per device\n",
        0o644,
    );
    write(
        root,
        "files/common/etc/dropbear/authorized_keys",
        "ssh-ed25519 AAAAC3Nza admin\n",
        0o600,
    );
    write(
        root,
        "files/common/etc/uci-defaults/99-imagegen",
        "#!/bin/sh\nuci commit\nexit 0\n",
        0o755,
    );
    write(root, "files/common/root/.ssh/config", "Host *\n", 0o600);
    fs::set_permissions(
        root.join("files/common/root/.ssh"),
        fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    fs::create_dir_all(root.join("files/common/www/empty")).expect("mkdir");
    symlink(
        "/tmp/resolv.conf",
        root.join("files/common/etc/resolv.conf"),
    )
    .expect("symlink");
    symlink(
        "../config/system",
        root.join("files/common/etc/dropbear/system-link"),
    )
    .expect("symlink");
    write(
        root,
        "files/devices/ap1/wireless",
        "config wifi-device 'radio0'\n\toption channel '36'\n",
        0o644,
    );
    write(
        root,
        "files/keys/usign.pub",
        "untrusted comment: key\nRWQ...\n",
        0o644,
    );
    write(
        root,
        "files/keys/nested/extra.pub",
        "untrusted comment: extra\n",
        0o640,
    );
    write(root, "notes.txt", "built by imagegen\n", 0o644);
    OverlayInput {
        fleet_root: root.to_path_buf(),
        overlay_dir: Some(source("files/common")),
        files: vec![
            file(
                "files/devices/ap1/wireless",
                "/etc/config/wireless",
                Some(0o600),
                Some("root:root"),
            ),
            file("files/keys", "/etc/opkg/keys", None, Some("0:0")),
            file(
                "notes.txt",
                "/usr/share/imagegen/notes.txt",
                Some(0o444),
                None,
            ),
        ],
    }
}

/// One line per staged path from `find -printf`: kind, mode, size and link target.
fn find_listing(directory: &Path) -> BTreeMap<String, (String, String, String, String)> {
    let output = Command::new("find")
        .arg(directory)
        .args(["-printf", "/%P\\t%y\\t%m\\t%s\\t%l\\n"])
        .output()
        .expect("run find");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [path, kind, mode, size, target] = fields[..] else {
                panic!("unexpected find line {line:?}");
            };
            (
                path.to_string(),
                (
                    kind.to_string(),
                    mode.to_string(),
                    size.to_string(),
                    target.to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn staged_overlay_matches_find_and_the_digest() {
    let fleet = tempfile::tempdir().expect("temp dir");
    let input = realistic_fleet(fleet.path());
    let staging = tempfile::tempdir().expect("temp dir");
    let staged = overlay::stage(&input, staging.path()).expect("staged");
    let digested = overlay::digest(&input, &mut MemoryHashCache::new()).expect("digest");
    assert_eq!(staged, digested);

    let listing = find_listing(staging.path());
    let expected: BTreeMap<String, (String, String, String, String)> = staged
        .entries
        .iter()
        .map(|entry| {
            let (kind, size, target) = match entry.kind {
                EntryKind::Directory => ("d", None, String::new()),
                EntryKind::File => ("f", Some(entry.size), String::new()),
                EntryKind::Symlink => ("l", Some(entry.size), entry.digest.clone()),
            };
            let size = size.map(|size| size.to_string());
            let on_disk_size = listing
                .get(&entry.path)
                .map(|found| found.2.clone())
                .unwrap_or_default();
            let size = size.unwrap_or(on_disk_size); // directory sizes are the file system's business
            let path = if entry.path == "/" {
                "/".to_string()
            } else {
                entry.path.clone()
            };
            (
                path,
                (kind.to_string(), format!("{:o}", entry.mode), size, target),
            )
        })
        .collect();
    assert_eq!(listing, expected);

    for entry in staged
        .entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::File)
    {
        let bytes =
            fs::read(staging.path().join(entry.path.trim_start_matches('/'))).expect("read staged");
        assert_eq!(
            blake3::hash(&bytes).to_hex().to_string(),
            entry.digest,
            "{}",
            entry.path
        );
    }
    let mode_of = |path: &str| {
        listing
            .get(path)
            .map(|found| (found.0.as_str(), found.1.as_str()))
    };
    assert_eq!(
        mode_of("/etc/config/wireless"),
        Some(("f", "600")),
        "files[].mode overrides"
    );
    assert_eq!(mode_of("/root/.ssh"), Some(("d", "700")));
    assert_eq!(
        mode_of("/usr/share/imagegen"),
        Some(("d", "755")),
        "implicit directories get 0755"
    );
    assert_eq!(mode_of("/etc/dropbear/system-link"), Some(("l", "777")));
    let wireless = fs::read_to_string(staging.path().join("etc/config/wireless")).expect("read");
    assert!(
        wireless.contains("radio0"),
        "files entries override overlay_dir"
    );
}

#[test]
fn staging_twice_gives_the_same_tree_hash_and_a_change_shows() {
    let fleet = tempfile::tempdir().expect("temp dir");
    let input = realistic_fleet(fleet.path());
    let first = tempfile::tempdir().expect("temp dir");
    let second = tempfile::tempdir().expect("temp dir");
    let first_hash = overlay::stage(&input, first.path())
        .expect("staged")
        .tree_hash;
    assert_eq!(
        overlay::stage(&input, second.path())
            .expect("staged")
            .tree_hash,
        first_hash
    );
    write(
        fleet.path(),
        "files/common/etc/banner",
        "  OpenWrt, managed by imagegen!\n",
        0o644,
    );
    let changed = overlay::digest(&input, &mut MemoryHashCache::new()).expect("digest");
    assert_ne!(changed.tree_hash, first_hash);
}
