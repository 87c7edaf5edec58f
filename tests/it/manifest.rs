//! The manifest layer through the library: the repository's example fleet loads cleanly,
//! and a broken fleet reports every problem at once with exact positions.

use imagegen::triple::Triple;
use std::path::{Path, PathBuf};

use imagegen::lock::{LockEntry, LockFile};
use imagegen::manifest::{VerifyMode, load_fleet};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `file:line:col: message` per problem, with help lines, for snapshots.
fn render(error: &imagegen::Error) -> String {
    let mut out = format!("{} [{}]\n", error.message, error.code);
    for problem in &error.problems {
        out.push_str(&format!("{problem}\n"));
        if let Some(help) = &problem.help {
            out.push_str(&format!("  help: {help}\n"));
        }
    }
    out
}

fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create test directory");
    }
    std::fs::write(path, text).expect("write test file");
}

#[test]
fn example_fleet_loads() {
    let fleet = match load_fleet(&repo_root().join("imagegen.toml"), None) {
        Ok(fleet) => fleet,
        Err(error) => panic!("{}", render(&error)),
    };
    assert_eq!(fleet.name, "home");
    let ids: Vec<_> = fleet
        .profiles
        .iter()
        .map(|loaded| loaded.profile.profile_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "home.ap-livingroom.23.05",
            "home.router-main.23.05",
            "lab.router1.snapshot",
            "lab.rpi4.sd",
            "office.gateway.x86",
        ]
    );
    let files: Vec<_> = fleet
        .profiles
        .iter()
        .map(|loaded| loaded.source.display_name().to_string())
        .collect();
    assert!(files.contains(&"profiles/office-gateway-x86.json".to_string()));
    assert_eq!(fleet.devices.len(), 5);
    let sd = fleet
        .device("lab-sd-1")
        .expect("lab-sd-1 is in the example");
    let flash = sd.flash.as_ref().expect("lab-sd-1 has a flash target");
    assert_eq!(flash.image, "factory");
    assert_eq!(flash.verify, VerifyMode::Full);
    assert_eq!(
        fleet.settings.values.get("jobs"),
        Some(&imagegen::settings::Value::Number(2))
    );
    assert_eq!(fleet.settings.path, repo_root().join("imagegen.toml"));
    // Every file an example profile references exists.
    for loaded in &fleet.profiles {
        for file in &loaded.profile.files {
            assert!(fleet.root.join(&file.source).is_file(), "{}", file.source);
        }
        if let Some(overlay) = &loaded.profile.overlay_dir {
            assert!(fleet.root.join(overlay).is_dir(), "{overlay}");
        }
    }
    let ap = fleet
        .profile("home.ap-livingroom.23.05")
        .expect("ap profile");
    assert_eq!(ap.profile.files[1].mode, Some(0o755));
    let location = ap.location("files[1].mode");
    assert_eq!(
        location.to_string(),
        "profiles/home-ap-livingroom.yaml:27:11"
    );
}

#[test]
fn broken_fleet_reports_every_problem_with_positions() {
    let temp = tempfile::tempdir().expect("temp dir");
    let root = temp.path();
    write(
        root,
        "imagegen.toml",
        r#"[fleet]
name = "lab"
profiles = ["profiles", "extra/*.yml", "extra/*.yaml", "missing.yaml"]

[settings]
jobs = 0
log_level = "verbose"
mirorr = "https://downloads.openwrt.org"

[[device]]
id = "sd-1"
profile = "lab.router"
flash = { path = "dev/sdb", verify = "most" }

[[device]]
id = "sd-1"
profile = "lab.router-1"

[[device]]
id = "no-profile"
flash = { path = "/dev/sdz", image = "combined", verify = "none", wipe = "yes" }
"#,
    );
    write(
        root,
        "profiles/a.yaml",
        "profile_id: lab.router-1\nname: Router\ndevice_id: x\nopenwrt_release: SNAPSHOT\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: x\npakages: [luci]\nfiles:\n  - source: ../secret\n    destination: etc/banner\n    mode: 0800\n",
    );
    write(
        root,
        "profiles/b.json",
        "{\n  \"profile_id\": \"lab.router-1\",\n  \"name\": \"Copy\",\n  \"device_id\": \"x\",\n  \"openwrt_release\": \"23.05\",\n  \"target\": \"ath79\",\n  \"subtarget\": \"generic\",\n  \"imagebuilder_profile\": \"x\"\n}\n",
    );
    write(
        root,
        "profiles/c.toml",
        "profile_id = \"broken\"\nname = \n",
    );
    let valid = "profile_id: lab.ok\nname: OK\ndevice_id: x\nopenwrt_release: 23.05.4\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\n";
    write(root, "profiles/d.yaml", valid);
    write(
        root,
        "extra/e.yml",
        &valid.replace("name: OK", "name: Again"),
    );
    let error = match load_fleet(&root.join("imagegen.toml"), None) {
        Ok(_) => panic!("the broken fleet loaded"),
        Err(error) => error,
    };
    insta::assert_snapshot!(render(&error));
}

#[test]
fn lock_file_round_trips_through_disk() {
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("imagegen.lock");
    assert_eq!(LockFile::read(&path).ok(), Some(None));
    let mut lock = LockFile::default();
    lock.insert(LockEntry {
        triple: Triple::new("23.05.4", "x86", "64"),
        archive: "openwrt-imagebuilder-23.05.4-x86-64.Linux-x86_64.tar.xz".into(),
        archive_sha256: "a".repeat(64),
        key_id: Some("b5043e70f9a75cde".into()),
        key_fingerprint: None,
        version_code: "r24012-d8dd03c46f".into(),
        profiles_json_sha256: "b".repeat(64),
        mirror: "https://downloads.openwrt.org".into(),
        locked_at: "2026-11-25T18:00:00Z".into(),
        feeds: Vec::new(),
        feeds_unpinned: Some("apk v3 package indexes are not read yet".into()),
    });
    lock.write(&path).expect("write lock");
    let read = LockFile::read(&path).expect("read lock");
    assert_eq!(read, Some(lock));
}

#[test]
fn example_profiles_export_and_reload_in_every_format() {
    use imagegen::manifest::{export_profile, parse_profile};
    use imagegen::source::{Format, SourceFile};
    use std::sync::Arc;

    let fleet = load_fleet(&repo_root().join("imagegen.toml"), None).expect("example fleet loads");
    for loaded in &fleet.profiles {
        for format in [Format::Yaml, Format::Json, Format::Toml] {
            let text = export_profile(&loaded.profile, format).expect("export");
            let name = format!("export.{}", format.extension());
            let source = Arc::new(SourceFile::new(name.clone().into(), name, text.clone()));
            match parse_profile(&source, format) {
                Ok(again) => assert_eq!(again.profile, loaded.profile, "{format}:\n{text}"),
                Err(problems) => panic!("{format} export does not load: {problems:?}\n{text}"),
            }
        }
    }
}

/// Every prefix of every example file is either a profile or a list of problems; nothing
/// panics, whatever the cut (inside strings, escapes, multi-byte characters, flow lists).
#[test]
fn truncated_profiles_never_panic() {
    use imagegen::manifest::parse_profile;
    use imagegen::source::{Format, SourceFile};
    use std::sync::Arc;

    let directory = repo_root().join("profiles");
    let mut files: Vec<_> = std::fs::read_dir(&directory)
        .expect("profiles directory")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    files.sort();
    let mut checked = 0;
    for path in files {
        let Some(format) = Format::from_path(&path) else {
            continue;
        };
        let mut text = std::fs::read_to_string(&path).expect("read example");
        text.push_str("\nnotes: \"Grüße \\u00e9 ✓\"\n");
        for cut in (0..=text.len()).filter(|cut| text.is_char_boundary(*cut)) {
            let source = Arc::new(SourceFile::new(
                path.clone(),
                "cut".into(),
                text[..cut].to_string(),
            ));
            let _ = parse_profile(&source, format);
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} prefixes checked");
}

/// Single-character corruptions at every position: problems, never a panic.
#[test]
fn corrupted_profiles_never_panic() {
    use imagegen::manifest::parse_profile;
    use imagegen::source::{Format, SourceFile};
    use std::sync::Arc;

    let directory = repo_root().join("profiles");
    let mut files: Vec<_> = std::fs::read_dir(&directory)
        .expect("profiles directory")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    files.sort();
    for path in files {
        let Some(format) = Format::from_path(&path) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("read example");
        let positions: Vec<usize> = (0..text.len())
            .filter(|at| text.is_char_boundary(*at))
            .collect();
        for (index, at) in positions.iter().enumerate() {
            let next = positions.get(index + 1).copied().unwrap_or(text.len());
            for replacement in ["\"", ":", "[", "\\", "\n", "&", "ü", ""] {
                let corrupted = format!("{}{replacement}{}", &text[..*at], &text[next..]);
                let source = Arc::new(SourceFile::new(path.clone(), "x".into(), corrupted));
                let _ = parse_profile(&source, format);
            }
        }
    }
}
