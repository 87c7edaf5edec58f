//! `imagegen gc`: build records no fleet points at, their artifacts, and the feed caches
//! (unpinned indexes, package files no pinned index lists), each only past `--keep-days`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::feeds::{fleet, online};
use crate::support::TestFleet;

fn gc(fleet: &TestFleet, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["gc", "--json"];
    all.extend_from_slice(args);
    fleet.run(&all).success().json()
}

/// Sets the modification time of `path` (a file or a directory) `days` into the past.
fn age(path: &Path, days: u64) {
    let then = SystemTime::now() - Duration::from_secs(days * 86_400);
    fs::File::open(path)
        .and_then(|file| file.set_modified(then))
        .unwrap_or_else(|error| panic!("aging {}: {error}", path.display()));
}

/// Every file and directory below `dir`, aged by `days`.
fn age_tree(dir: &Path, days: u64) {
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            age_tree(&path, days);
        }
        age(&path, days);
    }
}

fn blob(cache: &Path, sha256: &str) -> PathBuf {
    cache
        .join("packages/blobs/sha256")
        .join(&sha256[..2])
        .join(sha256)
}

fn plant_blob(cache: &Path, sha256: &str) -> PathBuf {
    let path = blob(cache, sha256);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, b"not a package any pinned feed lists").expect("write blob");
    path
}

#[test]
fn gc_removes_what_nothing_needs_once_it_is_old_enough() {
    let fleet = fleet("[htop]", "", None);
    online(&fleet, &["lock"]).success();
    online(&fleet, &["apply"]).success();
    let first = fleet.run(&["builds", "list", "--json"]).success().json();
    let first_key = first[0]["key"].as_str().expect("key").to_string();
    // A changed profile: the first build is no longer what the fleet points at.
    let profile = fs::read_to_string(fleet.path().join("profiles/gw.yaml")).expect("profile");
    fleet.write(
        "profiles/gw.yaml",
        &profile.replace("packages: [htop]", "packages: [htop, luci]"),
    );
    online(&fleet, &["apply"]).success();

    let cache = fleet.state_dir().join("cache");
    // Everything the cache holds is old: pins and package lists, not age, keep it.
    age_tree(&cache.join("feeds"), 30);
    age_tree(&cache.join("packages"), 30);
    let unpinned = cache.join("feeds").join("a".repeat(64));
    fs::create_dir_all(&unpinned).expect("mkdir");
    fs::write(unpinned.join("Packages"), "Package: old\n").expect("index");
    age(&unpinned.join("Packages"), 30);
    age(&unpinned, 30);
    let old_blob = plant_blob(&cache, &"b".repeat(64));
    age(&old_blob, 30);
    let young_blob = plant_blob(&cache, &"c".repeat(64));
    let stray = cache.join("feeds/not-a-digest");
    fs::create_dir_all(&stray).expect("stray dir");
    age(&stray, 30);

    let dry = gc(&fleet, &["--keep-days", "1", "--dry-run"]);
    assert_eq!(dry["feeds"]["removed_indexes"], 1, "{dry}");
    assert_eq!(dry["feeds"]["removed_package_files"], 1, "{dry}");
    assert_eq!(dry["removed_builds"], 0, "builds of today are kept: {dry}");
    assert!(
        unpinned.exists() && old_blob.exists(),
        "a dry run removes nothing"
    );

    let done = gc(&fleet, &["--keep-days", "1"]);
    assert_eq!(done["feeds"], dry["feeds"], "{done}");
    assert!(!unpinned.exists(), "the unpinned index went");
    assert!(!old_blob.exists(), "the old unlisted package file went");
    assert!(
        young_blob.exists(),
        "a young one stays (another fleet may be using it)"
    );
    assert!(stray.exists(), "what the cache did not write is left alone");
    // Everything the pinned feeds list is still there: nothing to download for a plan.
    let offline = fleet.run(&["plan", "--offline", "--json"]).success().json();
    let needs = offline["offline_needs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(needs.is_empty(), "{needs:?}");
    assert!(
        offline["actions"][1]["packages"].is_object(),
        "resolved from the cache"
    );

    let all = gc(&fleet, &["--keep-days", "0"]);
    assert_eq!(all["removed_builds"], 1, "{all}");
    assert!(all["removed_blobs"].as_u64().expect("count") >= 1, "{all}");
    assert_eq!(all["feeds"]["removed_package_files"], 1, "{all}");
    assert!(!young_blob.exists());
    let builds = fleet.run(&["builds", "list", "--json"]).success().json();
    let keys: Vec<&str> = builds
        .as_array()
        .expect("builds")
        .iter()
        .filter_map(|build| build["key"].as_str())
        .collect();
    assert!(!keys.contains(&first_key.as_str()), "{keys:?}");
    assert_eq!(keys.len(), 1, "{keys:?}");
    // The current images are intact and the fleet needs nothing.
    fleet.run(&["artifacts", "verify"]).success();
    let plan = fleet.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
}

#[test]
fn without_a_lock_the_feed_caches_are_left_alone() {
    let fleet = TestFleet::example();
    let report = gc(&fleet, &["--keep-days", "0"]);
    assert_eq!(report["feeds"]["removed_indexes"], 0, "{report}");
    assert!(
        report["feeds"]["packages_kept_because"]
            .as_str()
            .is_some_and(|why| why.contains("no imagegen.lock")),
        "{report}"
    );
    let text = fleet
        .run(&["gc", "--keep-days", "0"])
        .success()
        .stdout
        .clone();
    assert!(text.contains("Package files were kept"), "{text}");
}
