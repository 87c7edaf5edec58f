//! Pinned package feeds end to end (issue 12): the real binary against a stand-in mirror whose
//! feeds are signed with the TEST key, over `file://` and loopback HTTP. Plan-time package
//! truth with locations, dependency chains installed, offline builds from the warm package
//! cache, re-published and tampered feeds, and the pristine Image Builder left untouched.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use imagegen::plan::Plan;
use imagegen_standin::feeds::{self, FeedPackage};
use imagegen_standin::imagebuilder::{self as ib, PackageManager, RootfsEntry};
use imagegen_standin::{demo, mirror::test_secret_key};
use serde_json::Value;

use crate::http_server::TestServer;
use crate::support::{Run, TestFleet, upstream_data};

const RELEASE: &str = "23.05.4";

/// A fleet with one x86/64 profile (`gw`, images copied to `out/`) on a fresh stand-in
/// mirror under `<fleet>/mirror`; `mirror_url` overrides where the fleet reads it from.
pub(crate) fn fleet(packages: &str, extra: &str, mirror_url: Option<&str>) -> TestFleet {
    let fleet = TestFleet::empty();
    let mirror = demo::write_mirror(
        &fleet.path().join("mirror"),
        &upstream_data(),
        &[(RELEASE, "x86", "64")],
        0.0,
    )
    .expect("mirror");
    fleet.write(
        "imagegen.toml",
        &format!(
            "[fleet]\nname = \"lab\"\n\n[settings]\nmirror = \"{}\"\ntrusted_keys = [\"test-key.pub\"]\n",
            mirror_url.unwrap_or(&mirror.url),
        ),
    );
    fleet.write("files/banner", "managed by imagegen\n");
    // The trusted key lives in the fleet: tests move the mirror away.
    fs::copy(&mirror.public_key, fleet.path().join("test-key.pub")).expect("copy key");
    fleet.write(
        "profiles/gw.yaml",
        &format!(
            "profile_id: gw\nname: gw\ndevice_id: generic\nopenwrt_release: {RELEASE}\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\nbin_dir: out\npackages: {packages}\n{extra}files:\n  - source: files/banner\n    destination: /etc/banner\n"
        ),
    );
    fleet
}

fn mirror_root(fleet: &TestFleet) -> PathBuf {
    fleet.path().join("mirror")
}

/// Runs with the network allowed (the support runner defaults to offline).
pub(crate) fn online(fleet: &TestFleet, args: &[&str]) -> Run {
    let output = fleet
        .command(args)
        .env("OWRT_IMG_OFFLINE", "0")
        .output()
        .expect("run imagegen");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn plan_json(run: &Run) -> Plan {
    run.success();
    serde_json::from_str(&run.stdout).expect("plan JSON")
}

fn problems_of(run: &Run) -> Vec<Value> {
    run.json()["error"]["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The spec of the mirror's one Image Builder, for re-publishing its feeds.
fn spec() -> ib::StandinSpec {
    ib::spec_from_data(&upstream_data(), RELEASE, "x86", "64").expect("spec")
}

/// Re-publishes the feed `short` (`packages`, `base`, ...) after `change` edits its packages,
/// signed with the TEST key like the original.
fn republish(fleet: &TestFleet, short: &str, change: impl Fn(&mut FeedPackage)) {
    let spec = spec();
    let dir = feeds::feed_dirs(&spec)
        .expect("feeds")
        .into_iter()
        .find(|feed| feed.short == short)
        .expect("feed");
    let mut packages: Vec<FeedPackage> = feeds::packages(&spec)
        .expect("packages")
        .into_iter()
        .filter(|package| package.feed == short)
        .collect();
    packages.iter_mut().for_each(change);
    let list: Vec<&FeedPackage> = packages.iter().collect();
    feeds::write_feed(
        &mirror_root(fleet).join(&dir.path),
        &list,
        PackageManager::Opkg,
        &test_secret_key(),
    )
    .expect("re-publish");
}

fn installed(rootfs: &BTreeMap<String, RootfsEntry>) -> Vec<String> {
    match rootfs.get("/usr/lib/standin/packages") {
        Some(RootfsEntry::File { data, .. }) => String::from_utf8_lossy(data)
            .lines()
            .map(|line| line.split(' ').next().unwrap_or("").to_string())
            .collect(),
        other => panic!("no package list in the image: {other:?}"),
    }
}

#[test]
fn a_typo_in_a_package_is_refused_at_its_location_with_the_closest_names() {
    let fleet = fleet("[luci, collectd-mod-netwrk]", "", None);
    // Not locked yet: the file:// mirror's live feeds are checked.
    for args in [&["validate", "--json"][..], &["plan", "--json"]] {
        let run = fleet.run(args);
        assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
        let problems = problems_of(&run);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0]["message"],
            "OpenWrt 23.05.4 x86/64 has no package `collectd-mod-netwrk` in its feeds"
        );
        assert_eq!(problems[0]["location"]["file"], "profiles/gw.yaml");
        assert_eq!(problems[0]["location"]["line"], 9);
        assert_eq!(problems[0]["location"]["column"], 18);
        let help = problems[0]["help"].as_str().expect("help");
        assert!(
            help.starts_with("closest package names: `collectd-mod-network`"),
            "{help}"
        );
    }
    // Locked and offline: the same answer from the pinned, cached indexes.
    fleet.write(
        "profiles/gw.yaml",
        &fs::read_to_string(fleet.path().join("profiles/gw.yaml"))
            .expect("profile")
            .replace("collectd-mod-netwrk", "collectd-mod-network"),
    );
    fleet.run(&["lock"]).success();
    fleet.write(
        "profiles/gw.yaml",
        &fs::read_to_string(fleet.path().join("profiles/gw.yaml"))
            .expect("profile")
            .replace("collectd-mod-network", "collectd-mod-netwrk"),
    );
    // An https mirror and `--offline` (the test runner's default): nothing is fetched.
    let manifest = fs::read_to_string(fleet.path().join("imagegen.toml")).expect("manifest");
    let url = manifest
        .lines()
        .find_map(|line| line.strip_prefix("mirror = "))
        .expect("mirror line")
        .to_string();
    fleet.write(
        "imagegen.toml",
        &manifest.replace(&url, "\"https://downloads.openwrt.org\""),
    );
    let run = fleet.run(&["validate", "--locked", "--json"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert_eq!(problems_of(&run)[0]["location"]["line"], 9);
}

#[test]
fn a_dependency_chain_is_installed_exactly_as_planned() {
    let fleet = fleet("[luci-ssl, collectd-mod-network]", "", None);
    fleet.run(&["lock"]).success();
    let plan = plan_json(&fleet.run(&["plan", "--json"]));
    let build = plan.action("build.lab.gw").expect("build action");
    let planned = build.packages.as_ref().expect("resolved packages");
    let names: Vec<&str> = planned.packages.iter().map(|p| p.name.as_str()).collect();
    // luci-ssl → luci-light → luci-base → rpcd, and px5g-mbedtls from the base feed.
    for name in [
        "luci-ssl",
        "luci-light",
        "luci-base",
        "rpcd",
        "px5g-mbedtls",
        "collectd",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let feed_of = |name: &str| {
        planned
            .packages
            .iter()
            .find(|package| package.name == name)
            .map(|package| package.feed.clone())
    };
    assert_eq!(feed_of("luci-base").as_deref(), Some("openwrt_luci"));
    assert_eq!(feed_of("kernel").as_deref(), Some("openwrt_core"));
    assert_eq!(
        planned.installed_size,
        planned
            .packages
            .iter()
            .map(|p| p.installed_size)
            .sum::<u64>()
    );
    let text = fleet.run(&["plan", "-v"]);
    text.success();
    assert!(
        text.stdout.contains(&format!(
            "      packages: {} (installed ",
            planned.packages.len()
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("        luci-base git-24.192.45505-aa0a8e4-1  openwrt_luci  "),
        "{}",
        text.stdout
    );
    fleet.run(&["apply"]).success();
    let rootfs = crate::sandbox::rootfs(&fleet);
    let mut in_image = installed(&rootfs);
    in_image.sort();
    let mut predicted: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    predicted.sort();
    assert_eq!(in_image, predicted, "the plan predicts what opkg installs");
    // Installed from the package file itself: its data archive's marker.
    assert!(matches!(
        rootfs.get("/usr/lib/standin/installed/px5g-mbedtls"),
        Some(RootfsEntry::File { .. })
    ));
}

#[test]
fn builds_need_no_network_once_locked_and_cached_and_the_pristine_tree_stays() {
    // The fleet reads the mirror over loopback HTTP only.
    let fleet = fleet("[luci, htop]", "", Some("http://127.0.0.1:9"));
    let server = TestServer::start(&mirror_root(&fleet));
    let manifest = fs::read_to_string(fleet.path().join("imagegen.toml"))
        .expect("manifest")
        .replace("http://127.0.0.1:9", &server.url());
    fleet.write("imagegen.toml", &manifest);
    online(&fleet, &["lock"]).success();

    // Offline, a plan lists what a build would download: the archive and every package file.
    let offline = plan_json(&fleet.run(&["plan", "--offline", "--json"]));
    let packages: Vec<&String> = offline
        .offline_needs
        .iter()
        .filter(|need| need.starts_with("package "))
        .collect();
    assert!(
        offline
            .offline_needs
            .iter()
            .any(|need| need.ends_with(".tar.xz")),
        "{:?}",
        offline.offline_needs
    );
    assert!(
        packages.contains(&&"package openwrt_packages/htop_3.3.0-1_x86_64.ipk".to_string()),
        "{packages:?}"
    );
    let resolved = offline
        .action("build.lab.gw")
        .and_then(|action| action.packages.clone())
        .expect("resolved offline from the cached indexes");
    assert_eq!(packages.len(), resolved.packages.len());

    let ensured = online(&fleet, &["builders", "ensure", "--json"]);
    let pristine = PathBuf::from(ensured.success().json()[0]["path"].as_str().expect("path"));
    let before = crate::build::tree_digest(&pristine);
    online(&fleet, &["apply"]).success();
    let fetched: Vec<String> = server_paths(&server);
    assert!(
        fetched.iter().any(|path| path.ends_with(".ipk")),
        "{fetched:?}"
    );
    let warm = plan_json(&fleet.run(&["plan", "--offline", "--json"]));
    assert!(
        warm.offline_needs.is_empty(),
        "nothing left to download: {:?}",
        warm.offline_needs
    );

    // Warm cache, mirror still there: a rebuild asks the mirror only what its plan asks
    // (metadata and index signatures, to notice re-published feeds); the build itself makes
    // no request at all.
    fleet.write("files/banner", "rebuilt from the warm cache\n");
    let before_plan = server.total_requests();
    plan_json(&online(&fleet, &["plan", "--json"]));
    let mut plan_requests: Vec<String> = server_paths(&server).split_off(before_plan);
    plan_requests.sort();
    let before_apply = server.total_requests();
    online(&fleet, &["apply"]).success();
    let mut apply_requests: Vec<String> = server_paths(&server).split_off(before_apply);
    apply_requests.sort();
    assert_eq!(
        apply_requests, plan_requests,
        "apply = its plan's requests + 0 for the build"
    );
    assert!(
        apply_requests.iter().all(|path| !path.ends_with(".ipk")
            && !path.ends_with("/Packages")
            && !path.ends_with("/Packages.gz")),
        "{apply_requests:?}"
    );

    // The mirror goes away; a changed overlay still builds, online setting or not.
    drop(server);
    fleet.write("files/banner", "rebuilt without a network\n");
    let plan = plan_json(&online(&fleet, &["plan", "--json"]));
    assert!(
        plan.notices
            .iter()
            .any(|notice| notice.starts_with("mirror not reachable")),
        "{:?}",
        plan.notices
    );
    online(&fleet, &["apply"]).success();
    fleet.write("files/banner", "rebuilt offline\n");
    fleet.run(&["apply", "--offline"]).success();
    match crate::sandbox::rootfs(&fleet).get("/etc/banner") {
        Some(RootfsEntry::File { data, .. }) => assert_eq!(data, b"rebuilt offline\n"),
        other => panic!("banner: {other:?}"),
    }
    assert_eq!(
        crate::build::tree_digest(&pristine),
        before,
        "builds never write the pristine Image Builder (its repositories.conf included)"
    );
}

fn server_paths(server: &TestServer) -> Vec<String> {
    server
        .all_requests()
        .into_iter()
        .map(|request| request.path)
        .collect()
}

#[test]
fn a_republished_feed_is_noticed_refused_when_locked_and_explained() {
    let fleet = fleet("[htop]", "", None);
    fleet.run(&["lock"]).success();
    fleet.run(&["apply"]).success();
    republish(&fleet, "packages", |package| {
        if package.name == "htop" {
            package.version = "3.3.0-2".into();
        }
    });
    let plan = plan_json(&fleet.run(&["plan", "--json"]));
    assert!(
        plan.notices
            .iter()
            .any(|notice| notice.contains("feed `openwrt_packages`")
                && notice.contains("upstream re-published it")),
        "{:?}",
        plan.notices
    );
    let locked = fleet.run(&["plan", "--locked"]);
    assert_eq!(locked.code, 4, "{}{}", locked.stdout, locked.stderr);
    assert!(
        locked.stderr.contains("openwrt_packages"),
        "{}",
        locked.stderr
    );
    let report = fleet.run(&["lock", "--upgrade", "--json"]).success().json();
    let feeds = report["changes"][0]["feeds"]
        .as_array()
        .expect("feed changes");
    assert_eq!(feeds.len(), 1, "{feeds:?}");
    assert!(
        feeds[0]
            .as_str()
            .unwrap_or("")
            .starts_with("openwrt_packages ")
    );
    let plan = plan_json(&fleet.run(&["plan", "--locked", "--json"]));
    let build = plan.action("build.lab.gw").expect("build");
    let reasons: Vec<&str> = build.reasons.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("package feeds: openwrt_packages re-published (index "),
        "{reasons:?}"
    );
    fleet.run(&["apply", "--locked"]).success();
    let rootfs = crate::sandbox::rootfs(&fleet);
    match rootfs.get("/usr/lib/standin/installed/htop") {
        Some(RootfsEntry::File { data, .. }) => assert_eq!(data, b"htop 3.3.0-2\n"),
        other => panic!("htop marker: {other:?}"),
    }
}

#[test]
fn a_tampered_package_file_is_refused_and_not_cached() {
    let fleet = fleet("[htop]", "", None);
    fleet.run(&["lock"]).success();
    let dir = mirror_root(&fleet).join(format!("releases/{RELEASE}/packages/x86_64/packages"));
    let ipk = fs::read_dir(&dir)
        .expect("feed")
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().contains("/htop_"))
        .expect("htop package");
    let original = imagegen_standin::mirror::sha256_file(&ipk).expect("hash");
    let mut bytes = fs::read(&ipk).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&ipk, &bytes).expect("tamper");
    let run = fleet.run(&["apply", "--json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let failure = run
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["event"] == "step_finished" && event["outcome"] == "failed")
        .expect("a failed step");
    assert_eq!(failure["error"]["code"], "download_error");
    let message = failure["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("htop_"), "{message}");
    assert!(
        message.contains("does not match its signed feed index"),
        "{message}"
    );
    let cached = fleet.state_dir().join("cache/packages/blobs/sha256");
    let blobs = count_files(&cached);
    assert!(blobs > 0, "the untampered packages are cached");
    assert!(!cached.join(&original[..2]).join(&original).exists());
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    if entry.path().is_dir() {
                        count_files(&entry.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn removals_conflicts_and_unsatisfiable_dependencies_are_explained() {
    let fleet = fleet(
        "[dnsmasq-full, htop]",
        "packages_remove: [nano, ppp]\n",
        None,
    );
    fleet.run(&["lock"]).success();
    let run = fleet.run(&["validate", "--json"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let problems = problems_of(&run);
    let messages: Vec<&str> = problems
        .iter()
        .filter_map(|problem| problem["message"].as_str())
        .collect();
    assert_eq!(
        messages,
        ["packages conflict: `dnsmasq-full` conflicts with `dnsmasq`"],
        "{problems:?}"
    );
    assert_eq!(problems[0]["location"]["line"], 9);
    assert!(
        problems[0]["help"]
            .as_str()
            .unwrap_or("")
            .contains("add `dnsmasq` to `packages_remove`")
    );

    // Removing dnsmasq resolves it; the warnings stay warnings.
    fleet.write(
        "profiles/gw.yaml",
        &fs::read_to_string(fleet.path().join("profiles/gw.yaml"))
            .expect("profile")
            .replace("[nano, ppp]", "[nano, ppp, dnsmasq]"),
    );
    let report = fleet.run(&["validate", "--json"]).success().json();
    let notices: Vec<&str> = report["notices"]
        .as_array()
        .expect("notices")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        notices
            .iter()
            .any(|notice| notice.starts_with("warning: profiles/gw.yaml:10:")
                && notice.contains("`nano` is not a default or device package of `generic`")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|notice| notice.contains(
            "`ppp` is in `packages_remove`, but `ppp-mod-pppoe` → `ppp` installs it anyway"
        )),
        "{notices:?}"
    );

    // A re-published feed where a dependency went missing: the chain is named.
    republish(&fleet, "packages", |package| {
        if package.name == "htop" {
            package.depends.push("libncursesw6 (>= 6.4)".into());
        }
    });
    fleet.run(&["lock", "--upgrade"]).success();
    let run = fleet.run(&["validate", "--json"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let found = problems_of(&run);
    assert_eq!(
        found[0]["message"],
        "`htop` needs `libncursesw6 (>= 6.4)`, which no feed offers (23.05.4/x86/64)"
    );
    assert_eq!(found[0]["location"]["line"], 9);
}

#[test]
fn the_size_budget_refuses_what_cannot_fit_and_warns_near_it() {
    let fleet = fleet("[luci]", "", None);
    fleet.run(&["lock"]).success();
    let estimate = plan_json(&fleet.run(&["plan", "--json"]))
        .action("build.lab.gw")
        .and_then(|action| action.packages.clone())
        .expect("packages")
        .download_size;
    let with_budget = |bytes: u64| {
        let profile = fs::read_to_string(fleet.path().join("profiles/gw.yaml")).expect("profile");
        let kept: String = profile
            .lines()
            .filter(|line| !line.starts_with("max_image_size"))
            .map(|line| format!("{line}\n"))
            .collect();
        fleet.write(
            "profiles/gw.yaml",
            &kept.replace("files:\n", &format!("max_image_size: {bytes}\nfiles:\n")),
        );
    };
    with_budget(estimate - 1);
    let run = fleet.run(&["plan", "--json"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let problem = &problems_of(&run)[0];
    let message = problem["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("the image cannot fit: its packages alone are ")
            && message.contains("`max_image_size` allows"),
        "{message}"
    );
    assert_eq!(problem["location"]["line"], 10);
    // Near the budget (95% of it): a warning, and the plan carries the budget.
    with_budget(estimate * 100 / 95);
    let plan = plan_json(&fleet.run(&["plan", "--json"]));
    let packages = plan
        .action("build.lab.gw")
        .and_then(|action| action.packages.clone())
        .expect("packages");
    assert_eq!(packages.max_image_size, Some(estimate * 100 / 95));
    assert!(
        plan.notices
            .iter()
            .any(|notice| notice.starts_with("warning: profiles/gw.yaml:10:")
                && notice.contains("the image may not fit")),
        "{:?}",
        plan.notices
    );
    // Well within it: nothing to say.
    with_budget(estimate * 10);
    assert!(
        plan_json(&fleet.run(&["plan", "--json"]))
            .notices
            .is_empty()
    );
}

#[test]
fn an_old_lock_without_feeds_still_reads_and_lock_adds_them() {
    let fleet = fleet("[htop]", "", None);
    fleet.run(&["lock"]).success();
    let path = fleet.path().join("imagegen.lock");
    let text = fs::read_to_string(&path).expect("lock");
    let old = text
        .split("\n[[builder.feed]]")
        .next()
        .expect("builder part")
        .replace("\nversion = 2\n", "\nversion = 1\n");
    assert!(text.contains("\nversion = 2\n"), "{text}");
    fs::write(&path, &old).expect("old lock");
    let plan = plan_json(&fleet.run(&["plan", "--json"]));
    assert!(
        plan.notices
            .iter()
            .any(|notice| notice.contains("imagegen.lock pins no package feeds for it")),
        "{:?}",
        plan.notices
    );
    let build = plan.action("build.lab.gw").expect("build");
    assert!(
        build
            .inputs
            .as_ref()
            .is_some_and(|inputs| inputs.feeds.is_empty())
    );
    let locked = fleet.run(&["plan", "--locked"]);
    assert_eq!(locked.code, 4, "{}", locked.stderr);
    assert!(
        locked
            .stderr
            .contains("imagegen.lock does not pin the package feeds of 23.05.4/x86/64"),
        "{}",
        locked.stderr
    );
    let report = fleet.run(&["lock", "--json"]).success().json();
    assert_eq!(report["changes"][0]["change"], "updated");
    // The builder's pins were kept as they were; the feeds came back exactly.
    assert_eq!(fs::read_to_string(&path).expect("lock"), text);
    fleet.run(&["plan", "--locked"]).success();
}

#[test]
fn real_apk_v3_indexes_leave_the_feeds_unpinned_on_purpose() {
    let fleet = TestFleet::empty();
    let mirror = demo::write_mirror(
        &fleet.path().join("mirror"),
        &upstream_data(),
        &[("SNAPSHOT", "ramips", "mt7621")],
        0.0,
    )
    .expect("mirror");
    fleet.write(
        "imagegen.toml",
        &format!(
            "[fleet]\nname = \"lab\"\n\n[settings]\nmirror = \"{}\"\ntrusted_keys = [\"{}\"]\n",
            mirror.url,
            mirror.public_key.display()
        ),
    );
    fleet.write(
        "profiles/er.yaml",
        "profile_id: er\nname: er\ndevice_id: ubnt_edgerouter-x\nopenwrt_release: SNAPSHOT\ntarget: ramips\nsubtarget: mt7621\nimagebuilder_profile: ubnt_edgerouter-x\npackages: [luci]\npolicies:\n  allow_snapshot: true\n",
    );
    // Upstream's packages.adb is a binary ADB file (signed inside, ECDSA), not the stand-in
    // text form: imagegen cannot read it yet.
    let spec = ib::spec_from_data(&upstream_data(), "SNAPSHOT", "ramips", "mt7621").expect("spec");
    for dir in feeds::feed_dirs(&spec).expect("feeds") {
        let index = mirror.root.join(&dir.path).join("packages.adb");
        assert!(index.is_file(), "{}", index.display());
        fs::write(&index, b"ADB.\x01\x00\x00\x00binary index").expect("binary index");
    }
    let report = fleet.run(&["lock", "--json"]).success().json();
    assert_eq!(report["changes"][0]["change"], "added");
    let lock = fs::read_to_string(fleet.path().join("imagegen.lock")).expect("lock");
    assert!(
        lock.contains("feeds_unpinned = \"apk v3 package indexes are not read yet")
            && !lock.contains("[[builder.feed]]"),
        "{lock}"
    );
    // Not an old lock: `--locked` accepts it, and the plan says why packages are unchecked.
    let plan = plan_json(&fleet.run(&["plan", "--locked", "--json"]));
    assert!(
        plan.notices.iter().any(|notice| notice
            .contains("packages of SNAPSHOT/ramips/mt7621 not checked against its feeds: imagegen.lock pins none of its feeds (apk v3")),
        "{:?}",
        plan.notices
    );
    assert!(
        plan.action("build.lab.er")
            .is_some_and(|build| build.packages.is_none())
    );
    // A plain `lock` does not try again (only `lock --upgrade` does).
    let again = fleet.run(&["lock", "--json"]).success().json();
    assert_eq!(again["changes"][0]["change"], "unchanged");
}
