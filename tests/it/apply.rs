//! `imagegen apply` end to end: real binary, real redb, real GNU make running stand-in
//! Image Builders fetched from a `file://` mirror.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use imagegen::plan::{ActionKind, Plan, Resource};
use imagegen_standin::demo;

use crate::support::{TestFleet, upstream_data};

/// A two-profile fleet (x86 and ath79) on a fresh stand-in mirror; `cpu` seconds per build.
pub(crate) fn small_fleet(cpu: f64) -> TestFleet {
    let fleet = TestFleet::empty();
    let mirror = demo::write_mirror(
        &fleet.path().join("mirror"),
        &upstream_data(),
        &[("23.05.4", "x86", "64"), ("23.05.4", "ath79", "generic")],
        cpu,
    )
    .expect("mirror");
    fleet.write(
        "imagegen.toml",
        &format!(
            "[fleet]\nname = \"lab\"\n\n[settings]\nmirror = \"{}\"\ntrusted_keys = [\"{}\"]\njobs = 2\n",
            mirror.url,
            mirror.public_key.display()
        ),
    );
    fleet.write("files/banner", "managed by imagegen\n");
    let bin_dir = |id: &str| if id == "gw" { "bin_dir: out/gw\n" } else { "" };
    for (id, target, subtarget, device, packages) in [
        ("gw", "x86", "64", "generic", "[luci, htop]"),
        ("ap", "ath79", "generic", "tplink_archer-c7-v2", "[luci]"),
    ] {
        fleet.write(
            &format!("profiles/{id}.yaml"),
            &format!(
                "profile_id: {id}\nname: {id}\ndevice_id: {device}\nopenwrt_release: 23.05.4\ntarget: {target}\nsubtarget: {subtarget}\nimagebuilder_profile: {device}\npackages: {packages}\n{}files:\n  - source: files/banner\n    destination: /etc/banner\n    mode: \"0644\"\n",
                bin_dir(id)
            ),
        );
    }
    fleet
}

fn plan(fleet: &TestFleet) -> Plan {
    let run = fleet.run(&["plan", "--json"]);
    run.success();
    serde_json::from_str(&run.stdout).expect("plan JSON")
}

fn changed(plan: &Plan) -> Vec<(String, ActionKind)> {
    plan.actions
        .iter()
        .filter(|action| action.action.is_change())
        .map(|action| (action.address.clone(), action.action))
        .collect()
}

/// The summary line of `apply --json` (the last NDJSON line).
fn summary(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("apply printed nothing");
    let value: serde_json::Value = serde_json::from_str(last).expect("NDJSON summary");
    assert_eq!(value["event"], "summary", "{last}");
    value["report"].clone()
}

#[test]
fn apply_builds_then_nothing_then_exactly_what_changed() {
    let fleet = small_fleet(0.0);
    let first = fleet.run(&["apply", "--json"]);
    first.success();
    let report = summary(&first.stdout);
    assert_eq!(report["run"]["succeeded"], 4, "{report}");
    // Every line before the summary is an executor event.
    assert!(
        first
            .stdout
            .lines()
            .next()
            .is_some_and(|line| line.contains("run_started"))
    );
    assert!(
        !changed(&plan(&fleet)).iter().any(|_| true),
        "second plan must be empty"
    );
    let again = fleet.run(&["apply"]);
    again.success();
    assert!(again.stdout.starts_with("No changes."), "{}", again.stdout);

    // The image really carries the profile: packages, overlay file with its mode, provenance.
    let gw = plan(&fleet)
        .action("build.lab.gw")
        .and_then(|a| a.key.clone())
        .expect("gw key");
    let shown = fleet
        .run(&["builds", "show", &gw[..12], "--json"])
        .success()
        .json();
    let combined = shown["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["kind"] == "combined" && a["filesystem"] == "squashfs")
        .cloned()
        .expect("combined image");
    let blob = fleet
        .state_dir()
        .join("artifacts/blobs/sha256")
        .join(&combined["sha256"].as_str().expect("sha")[..2])
        .join(combined["sha256"].as_str().expect("sha"));
    let image = imagegen_standin::imagebuilder::read_image_rootfs(&blob).expect("read image");
    match image.get("/etc/banner").or_else(|| image.get("etc/banner")) {
        Some(imagegen_standin::imagebuilder::RootfsEntry::File { mode, data }) => {
            assert_eq!(data, b"managed by imagegen\n");
            assert_eq!(mode & 0o7777, 0o644);
        }
        other => panic!("no /etc/banner in the image: {other:?}"),
    }
    let provenance = image
        .iter()
        .find(|(path, _)| path.ends_with("etc/imagegen/build.json"))
        .expect("provenance file");
    if let imagegen_standin::imagebuilder::RootfsEntry::File { data, .. } = provenance.1 {
        let json: serde_json::Value = serde_json::from_slice(data).expect("provenance JSON");
        assert_eq!(json["build_key"], gw.as_str());
        // Only key inputs: the image is a function of its key (docs/decisions.md).
        assert_eq!(json["key_inputs"]["imagebuilder_profile"], "generic");
        assert!(json.get("profile_id").is_none(), "{json}");
    }
    assert!(
        image.keys().any(|path| path.contains("htop")),
        "htop installed: {:?}",
        image.keys().take(40).collect::<Vec<_>>()
    );

    // One package added to one profile: only that profile is rebuilt, for that reason.
    let path = fleet.path().join("profiles/ap.yaml");
    let text = std::fs::read_to_string(&path).expect("profile");
    std::fs::write(
        &path,
        text.replace("packages: [luci]", "packages: [luci, collectd]"),
    )
    .expect("edit");
    let planned = plan(&fleet);
    assert_eq!(
        changed(&planned),
        vec![("build.lab.ap".to_string(), ActionKind::Replace)]
    );
    let reasons: Vec<&str> = planned
        .action("build.lab.ap")
        .expect("ap")
        .reasons
        .iter()
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(reasons, vec!["packages: +collectd"]);
    let applied = summary(&fleet.run(&["apply", "--json"]).success().stdout.clone());
    let addresses: Vec<&str> = applied["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["address"].as_str())
        .collect();
    assert_eq!(addresses, vec!["build.lab.ap"]);
    assert!(changed(&plan(&fleet)).is_empty());

    // Going back to the old inputs is a cache hit, not a build.
    std::fs::write(&path, &text).expect("restore");
    let reverted = summary(&fleet.run(&["apply", "--json"]).success().stdout.clone());
    assert_eq!(reverted["steps"][0]["cache_hit"], true, "{reverted}");
}

#[test]
fn identical_inputs_are_built_once() {
    let fleet = small_fleet(0.0);
    let gw = std::fs::read_to_string(fleet.path().join("profiles/gw.yaml")).expect("gw");
    fleet.write(
        "profiles/gw2.yaml",
        &gw.replace("profile_id: gw", "profile_id: gw2"),
    );
    let planned = plan(&fleet);
    let key = |id: &str| {
        planned
            .action(&format!("build.lab.{id}"))
            .and_then(|a| a.key.clone())
    };
    assert_eq!(key("gw"), key("gw2"), "same inputs, same key");
    let report = summary(
        &fleet
            .run(&["apply", "--json", "--jobs", "1"])
            .success()
            .stdout
            .clone(),
    );
    let hits: Vec<bool> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| {
            s["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("build.lab.gw"))
        })
        .map(|s| s["cache_hit"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(hits.iter().filter(|hit| **hit).count(), 1, "{report}");
    let builds = fleet.run(&["builds", "list", "--json"]).success().json();
    assert_eq!(
        builds.as_array().expect("builds").len(),
        2,
        "one record per distinct key"
    );
}

#[test]
fn saved_plan_is_applied_exactly_or_refused() {
    let fleet = small_fleet(0.0);
    fleet.run(&["lock"]).success();
    fleet.run(&["plan", "--out", "saved.json"]).success();
    let path = fleet.path().join("profiles/ap.yaml");
    let text = std::fs::read_to_string(&path).expect("profile");
    std::fs::write(
        &path,
        text.replace("packages: [luci]", "packages: [luci, tcpdump]"),
    )
    .expect("edit");
    let stale = fleet.run(&["apply", "saved.json", "--json"]);
    assert_eq!(stale.code, 4, "{}{}", stale.stdout, stale.stderr);
    assert_eq!(stale.json()["error"]["code"], "stale_plan");
    std::fs::write(&path, &text).expect("restore");
    fleet.run(&["apply", "saved.json"]).success();
    assert!(changed(&plan(&fleet)).is_empty());
}

#[test]
fn two_concurrent_applies_never_both_build() {
    let fleet = small_fleet(1.5);
    fleet.run(&["lock"]).success();
    let first = fleet
        .command(&["apply", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("first apply");
    // Wait until the first one holds the state (its lock file names it).
    let lock = fleet.state_dir().join("state.redb.lock");
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|text| text.contains("apply")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "first apply never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = fleet.run(&["apply", "--json"]);
    assert_eq!(second.code, 5, "{}{}", second.stdout, second.stderr);
    assert_eq!(second.json()["error"]["code"], "state_locked");
    let output = first.wait_with_output().expect("first apply");
    assert!(output.status.success());
    assert!(changed(&plan(&fleet)).is_empty());
}

#[test]
fn a_corrupted_blob_is_detected_and_rebuilt() {
    let fleet = small_fleet(0.0);
    fleet.run(&["apply"]).success();
    let blobs = fleet.state_dir().join("artifacts/blobs/sha256");
    let victim = first_file(&blobs).expect("a blob");
    let size = std::fs::metadata(&victim).expect("blob").len() as usize;
    let mut permissions = std::fs::metadata(&victim).expect("blob").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&victim, permissions).expect("chmod");
    std::fs::write(&victim, vec![0u8; size]).expect("corrupt, same size");
    let verified = fleet.run(&["artifacts", "verify", "--json"]);
    assert_eq!(verified.code, 70, "{}{}", verified.stdout, verified.stderr);
    assert_eq!(verified.json()["error"]["code"], "internal_error");
    let planned = plan(&fleet);
    assert_eq!(changed(&planned).len(), 1, "{:?}", changed(&planned));
    fleet.run(&["apply"]).success();
    fleet.run(&["artifacts", "verify"]).success();
    assert!(changed(&plan(&fleet)).is_empty());
}

fn first_file(dir: &Path) -> Option<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if let Some(found) = first_file(&path) {
                return Some(found);
            }
        } else {
            return Some(path);
        }
    }
    None
}

/// Kills every process whose working directory is inside `dir` (orphaned `make` trees).
fn kill_processes_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)) {
            // SAFETY: plain kill(2) on a pid we just read.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn kill_dash_nine_at_random_moments_always_recovers() {
    let fleet = small_fleet(0.0);
    fleet.run(&["lock"]).success();
    let trials = 20;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for trial in 0..trials {
        // Start from scratch every few trials so kills land in fetches too.
        if trial % 5 == 0 {
            let _ = std::fs::remove_dir_all(fleet.state_dir());
        } else {
            let path = fleet.path().join("files/banner");
            std::fs::write(&path, format!("managed by imagegen, trial {trial}\n"))
                .expect("edit banner");
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(50 + seed % 1500);
        let mut child = fleet.command(&["apply", "--json"]);
        child
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = child.spawn().expect("spawn apply");
        std::thread::sleep(delay);
        // SAFETY: kill(2) of the child's process group.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGKILL);
        }
        let _ = child.wait();
        kill_processes_under(fleet.path());
        let resumed = fleet.run(&["apply"]);
        assert_eq!(
            resumed.code, 0,
            "trial {trial} (killed after {delay:?}):\n{}\n{}",
            resumed.stdout, resumed.stderr
        );
        let after = plan(&fleet);
        assert!(
            changed(&after).is_empty(),
            "trial {trial}: {:?}",
            changed(&after)
        );
        fleet.run(&["artifacts", "verify"]).success();
        assert!(
            after
                .actions
                .iter()
                .filter(|a| a.resource == Resource::Build)
                .all(|a| a.key.is_some())
        );
    }
}

#[test]
fn ctrl_c_stops_the_run_with_130_and_the_next_apply_finishes() {
    let fleet = small_fleet(3.0);
    fleet.run(&["lock"]).success();
    fleet.run(&["builders", "ensure"]).success();
    let child = fleet
        .command(&["apply"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("apply");
    // Wait until a build is running: its log file appears.
    let logs = fleet.state_dir().join("artifacts/logs");
    let started = Instant::now();
    while std::fs::read_dir(&logs)
        .map(|entries| entries.count())
        .unwrap_or(0)
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no build started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) with SIGINT, as a terminal's Ctrl-C would send.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let output = child.wait_with_output().expect("apply");
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Interrupted"));
    // Nothing false was recorded: the interrupted builds are still to do, and apply finishes.
    let pending = changed(&plan(&fleet));
    assert!(!pending.is_empty());
    assert!(
        pending
            .iter()
            .all(|(address, _)| address.starts_with("build.")),
        "{pending:?}"
    );
    fleet.run(&["apply"]).success();
    assert!(changed(&plan(&fleet)).is_empty());
}
