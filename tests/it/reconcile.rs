//! The reconciler keeps its promises (issue 14), against the real binary on stand-in mirrors:
//! one build per key, provenance of key inputs only, every attempt its own log; part of a
//! fleet (`--target`, `--profile`, `--tag`, `--builder`), `show` and `graph`; exit codes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use imagegen::plan::{GraphJson, Plan};
use imagegen_standin::demo;

use crate::support::{TestFleet, upstream_data};

/// A fleet named `lab` on a fresh stand-in mirror of `triples`, with `profiles` as
/// (file name, YAML text).
pub(crate) fn fleet_with(triples: &[(&str, &str, &str)], profiles: &[(&str, String)]) -> TestFleet {
    let fleet = TestFleet::empty();
    let mirror = demo::write_mirror(&fleet.path().join("mirror"), &upstream_data(), triples, 0.0)
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
    for (name, text) in profiles {
        fleet.write(&format!("profiles/{name}"), text);
    }
    fleet
}

/// A 23.05.4 profile; `extra` is appended as YAML.
pub(crate) fn profile(
    id: &str,
    target: &str,
    subtarget: &str,
    device: &str,
    extra: &str,
) -> String {
    format!(
        "profile_id: {id}\nname: {id}\ndevice_id: {device}\nopenwrt_release: 23.05.4\ntarget: {target}\nsubtarget: {subtarget}\nimagebuilder_profile: {device}\npackages: [luci]\nfiles:\n  - source: files/banner\n    destination: /etc/banner\n    mode: \"0644\"\n{extra}"
    )
}

pub(crate) fn plan_of(fleet: &TestFleet, extra: &[&str]) -> Plan {
    let mut args = vec!["plan", "--json"];
    args.extend_from_slice(extra);
    let run = fleet.run(&args);
    run.success();
    serde_json::from_str(&run.stdout).expect("plan JSON")
}

/// The summary line of `apply --json` / `build --json` (the last NDJSON line).
pub(crate) fn summary(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("printed nothing");
    let value: serde_json::Value = serde_json::from_str(last).expect("NDJSON summary");
    assert_eq!(value["event"], "summary", "{last}");
    value
}

fn step<'a>(report: &'a serde_json::Value, address: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|step| step["address"] == address)
        .unwrap_or_else(|| panic!("no step {address} in {report}"))
}

fn addresses(plan: &Plan) -> BTreeSet<String> {
    plan.actions.iter().map(|a| a.address.clone()).collect()
}

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).expect("read"))
        })
        .collect();
    files.sort();
    files
}

fn logs_of(fleet: &TestFleet, key: &str) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(fleet.state_dir().join("artifacts/logs"))
        .expect("logs dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(key))
        })
        .collect();
    logs.sort();
    logs
}

#[test]
fn profiles_with_one_key_build_once_and_both_get_the_image() {
    let twin = |id: &str| profile(id, "x86", "64", "generic", &format!("bin_dir: out/{id}\n"));
    let fleet = fleet_with(
        &[("23.05.4", "x86", "64")],
        &[("a.yaml", twin("a")), ("b.yaml", twin("b"))],
    );
    fleet.run(&["lock"]).success();
    let plan = plan_of(&fleet, &[]);
    let (a, b) = (
        plan.action("build.lab.a").expect("a"),
        plan.action("build.lab.b").expect("b"),
    );
    let key = a.key.clone().expect("key");
    assert_eq!(
        b.key.as_deref(),
        Some(key.as_str()),
        "profile id and bin_dir are not inputs"
    );
    assert_eq!((a.same_inputs_as.as_deref(), a.cache_hit), (None, false));
    assert_eq!(b.same_inputs_as.as_deref(), Some("build.lab.a"));
    assert!(b.cache_hit && b.depends_on.contains(&"build.lab.a".to_string()));
    assert_eq!((plan.summary.build, plan.summary.reuse), (2, 1));
    // Reuse is not a dependency: selecting b alone builds b, not a.
    let only_b = plan_of(&fleet, &["--profile", "b"]);
    assert_eq!(
        addresses(&only_b),
        ["builder.23.05.4/x86/64", "build.lab.b"]
            .map(String::from)
            .into()
    );
    let b_alone = only_b.action("build.lab.b").expect("b");
    assert_eq!(
        (b_alone.same_inputs_as.as_deref(), b_alone.cache_hit),
        (None, false)
    );
    assert!(!b_alone.depends_on.contains(&"build.lab.a".to_string()));
    let text = fleet.run(&["plan"]).success().stdout.clone();
    assert!(text.contains("same inputs as build.lab.a"), "{text}");
    assert!(text.contains("2 to build (1 reused)"), "{text}");

    let applied = fleet.run(&["apply", "--json"]);
    applied.success();
    let report = &summary(&applied.stdout)["report"];
    assert_eq!(step(report, "build.lab.a")["cache_hit"], false, "{report}");
    assert_eq!(step(report, "build.lab.b")["cache_hit"], true, "{report}");
    // One record for the key, naming both profiles; both pointers name it.
    let builds = fleet.run(&["builds", "list", "--json"]).success().json();
    let builds = builds.as_array().expect("builds");
    assert_eq!(builds.len(), 1, "{builds:?}");
    let applied_by: Vec<&str> = builds[0]["applied_by"]
        .as_array()
        .expect("applied_by")
        .iter()
        .map(|entry| entry["profile_id"].as_str().expect("id"))
        .collect();
    assert_eq!(applied_by, ["a", "b"]);
    let shown = fleet
        .run(&["builds", "show", &key[..12]])
        .success()
        .stdout
        .clone();
    assert!(
        shown.contains("applied by    lab / a") && shown.contains("applied by    lab / b"),
        "{shown}"
    );
    for id in ["a", "b"] {
        let detail = fleet
            .run(&["show", &format!("build.lab.{id}"), "--json"])
            .success()
            .json();
        assert_eq!(detail["current_build"]["key"], key.as_str(), "{detail}");
    }
    assert!(
        !plan_of(&fleet, &[]).has_changes(),
        "a second apply has nothing to do"
    );
    // Both bin_dirs got the same images.
    let (out_a, out_b) = (
        files_in(&fleet.path().join("out/a")),
        files_in(&fleet.path().join("out/b")),
    );
    assert!(!out_a.is_empty());
    assert_eq!(out_a, out_b);

    // The image carries only key inputs: the same bytes whichever profile asked.
    let combined = builds[0]["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|artifact| artifact["kind"] == "combined")
        .expect("combined image");
    let sha = combined["sha256"].as_str().expect("sha");
    let blob = fleet
        .state_dir()
        .join("artifacts/blobs/sha256")
        .join(&sha[..2])
        .join(sha);
    let rootfs = imagegen_standin::imagebuilder::read_image_rootfs(&blob).expect("image");
    let provenance = rootfs
        .iter()
        .find_map(|(path, entry)| match entry {
            imagegen_standin::imagebuilder::RootfsEntry::File { data, .. }
                if path.ends_with("etc/imagegen/build.json") =>
            {
                Some(serde_json::from_slice::<serde_json::Value>(data).expect("provenance JSON"))
            }
            _ => None,
        })
        .expect("provenance file");
    assert_eq!(provenance["build_key"], key.as_str());
    assert_eq!(provenance["key_inputs"]["imagebuilder_profile"], "generic");
    let text = provenance.to_string();
    for absent in ["profile_id", "device_id", "fleet_commit", "\"a\"", "\"b\""] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }

    // Every attempt has its own log with one writer: a forced rebuild of both profiles is
    // again one build (b reuses a's), in a second log.
    assert_eq!(logs_of(&fleet, &key).len(), 1);
    let forced = fleet.run(&["build", "a", "b", "--force", "--json"]);
    forced.success();
    let results = summary(&forced.stdout)["profiles"].clone();
    let results: Vec<(String, String)> = results
        .as_array()
        .expect("profiles")
        .iter()
        .map(|p| {
            (
                p["profile_id"].as_str().unwrap_or("").into(),
                p["result"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [("a".into(), "built".into()), ("b".into(), "reused".into())]
    );
    let logs = logs_of(&fleet, &key);
    assert_eq!(logs.len(), 2, "{logs:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("log");
        assert_eq!(
            text.matches("# imagegen: build ").count(),
            1,
            "{}",
            log.display()
        );
    }
}

/// A two-profile fleet on two Image Builders: `gw` (x86/64, tag `office`) and `ap` (ath79,
/// tag `home`).
fn two_builders() -> TestFleet {
    fleet_with(
        &[("23.05.4", "x86", "64"), ("23.05.4", "ath79", "generic")],
        &[
            (
                "gw.yaml",
                profile("gw", "x86", "64", "generic", "tags: [office]\n"),
            ),
            (
                "ap.yaml",
                profile(
                    "ap",
                    "ath79",
                    "generic",
                    "tplink_archer-c7-v2",
                    "tags: [home]\n",
                ),
            ),
        ],
    )
}

#[test]
fn part_of_a_fleet_is_planned_applied_and_built_by_selection() {
    let fleet = two_builders();
    fleet.run(&["lock"]).success();
    let ap_only: BTreeSet<String> = ["builder.23.05.4/ath79/generic", "build.lab.ap"]
        .map(String::from)
        .into();
    let targeted = plan_of(&fleet, &["--target", "build.lab.ap"]);
    assert_eq!(addresses(&targeted), ap_only);
    let selection = targeted.selection.clone().expect("selection recorded");
    assert_eq!(selection.targets, ["build.lab.ap"]);
    for filter in [
        &["--profile", "ap"][..],
        &["--tag", "home"],
        &["--builder", "23.05.4/ath79/generic"],
        &["--release", "23.05.4", "--tag", "home"],
    ] {
        assert_eq!(addresses(&plan_of(&fleet, filter)), ap_only, "{filter:?}");
    }
    assert_eq!(plan_of(&fleet, &["--release", "23.05.4"]).actions.len(), 4);

    let unknown = fleet.run(&["plan", "--target", "build.lab.aq", "--json"]);
    assert_eq!(unknown.code, 3, "{}", unknown.stdout);
    assert_eq!(
        unknown.json()["error"]["help"],
        "did you mean `build.lab.ap`?"
    );
    let nothing = fleet.run(&["plan", "--tag", "nope", "--json"]);
    assert_eq!(nothing.code, 3);
    assert_eq!(nothing.json()["error"]["code"], "validation");
    let bad = fleet.run(&["plan", "--builder", "ath79/generic"]);
    assert_eq!(bad.code, 3, "{}", bad.stderr);

    // A saved plan records its selection and `apply PLANFILE` applies exactly that.
    let saved = fleet.run(&["plan", "--target", "build.lab.ap", "--out", "ap.json"]);
    assert!(
        saved
            .success()
            .stdout
            .contains("Selection: --target build.lab.ap"),
        "{}",
        saved.stdout
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fleet.path().join("ap.json")).expect("saved"))
            .expect("JSON");
    assert_eq!(file["selection"]["targets"][0], "build.lab.ap");
    let narrowed = fleet.run(&["apply", "ap.json", "--target", "build.lab.gw"]);
    assert_eq!(narrowed.code, 3, "{}", narrowed.stderr);
    let applied = fleet.run(&["apply", "ap.json", "--json"]);
    applied.success();
    let report = &summary(&applied.stdout)["report"];
    let ran: BTreeSet<String> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["address"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ran, ap_only);
    let rest = plan_of(&fleet, &[]);
    let pending: BTreeSet<String> = rest
        .actions
        .iter()
        .filter(|a| a.action.is_change())
        .map(|a| a.address.clone())
        .collect();
    assert_eq!(
        pending,
        ["builder.23.05.4/x86/64", "build.lab.gw"]
            .map(String::from)
            .into()
    );

    // `build` takes the same selection.
    let built = fleet.run(&["build", "--builder", "23.05.4/x86/64", "--json"]);
    built.success();
    let profiles = &summary(&built.stdout)["profiles"];
    assert_eq!(profiles[0]["profile_id"], "gw");
    assert_eq!(profiles[0]["result"], "built");
    assert!(!plan_of(&fleet, &[]).has_changes());
}

#[test]
fn show_explains_one_action_and_graph_draws_the_plan() {
    let fleet = two_builders();
    fleet.run(&["lock"]).success();
    let detail = fleet
        .run(&["show", "build.lab.ap", "--json"])
        .success()
        .json();
    assert_eq!(detail["action"]["action"], "create");
    assert_eq!(
        detail["action"]["depends_on"][0],
        "builder.23.05.4/ath79/generic"
    );
    assert_eq!(
        detail["action"]["inputs"]["imagebuilder_profile"],
        "tplink_archer-c7-v2"
    );
    assert!(
        detail["canonical_inputs"]
            .as_str()
            .is_some_and(|text| text.starts_with("imagegen-build-key-v1\nschema=2\n")),
        "{detail}"
    );
    assert!(
        detail.get("current_build").is_none(),
        "nothing recorded yet"
    );
    let builder = fleet
        .run(&["show", "builder.23.05.4/ath79/generic", "--json"])
        .success()
        .json();
    assert_eq!(builder["dependents"][0], "build.lab.ap");
    let text = fleet
        .run(&["show", "build.lab.ap"])
        .success()
        .stdout
        .clone();
    assert!(
        text.contains("because       not built for this fleet yet"),
        "{text}"
    );
    assert!(
        text.contains("last result   nothing recorded yet"),
        "{text}"
    );
    let unknown = fleet.run(&["show", "build.lab.aq", "--json"]);
    assert_eq!(unknown.code, 3);
    assert_eq!(
        unknown.json()["error"]["help"],
        "did you mean `build.lab.ap`?"
    );

    fleet.run(&["apply"]).success();
    let after = fleet
        .run(&["show", "build.lab.ap", "--json"])
        .success()
        .json();
    assert_eq!(after["action"]["action"], "no-op");
    assert_eq!(after["current_build"]["status"], "succeeded");
    assert!(after["current_build"]["log_path"].is_string());

    let dot = fleet.run(&["graph"]).success().stdout.clone();
    assert!(dot.starts_with("digraph imagegen {"), "{dot}");
    assert!(
        dot.contains("  \"build.lab.ap\" -> \"builder.23.05.4/ath79/generic\"\n"),
        "{dot}"
    );
    let graph: GraphJson =
        serde_json::from_str(&fleet.run(&["graph", "--json"]).success().stdout).expect("graph");
    assert_eq!(graph.nodes.len(), 4);
    let edges: Vec<(&str, &str)> = graph
        .edges
        .iter()
        .map(|e| (e.dependent.as_str(), e.dependency.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("build.lab.ap", "builder.23.05.4/ath79/generic"),
            ("build.lab.gw", "builder.23.05.4/x86/64")
        ]
    );
    let part: GraphJson = serde_json::from_str(
        &fleet
            .run(&["graph", "--json", "--tag", "office"])
            .success()
            .stdout,
    )
    .expect("graph");
    assert_eq!(part.nodes.len(), 2);
}

#[test]
fn a_failed_step_exits_1_and_a_failed_recording_exits_70() {
    let fleet = fleet_with(
        &[("23.05.4", "x86", "64")],
        &[
            ("gw.yaml", profile("gw", "x86", "64", "generic", "")),
            (
                "bad.yaml",
                // A package list that does not install is refused by the plan now (the
                // feeds are checked); a failing postinst fails in `make image`, like upstream.
                profile(
                    "bad",
                    "x86",
                    "64",
                    "generic",
                    "  - source: files/fail.postinst\n    destination: /usr/lib/opkg/info/fail.postinst\n    mode: \"0755\"\n",
                ),
            ),
        ],
    );
    fleet.write("files/fail.postinst", "#!/bin/sh\nexit 3\n");
    let failed = fleet.run(&["apply", "--keep-going", "--json"]);
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
    let report = &summary(&failed.stdout)["report"];
    assert_eq!(
        step(report, "build.lab.bad")["error"]["code"],
        "build_failed"
    );
    assert!(report["run"]["error"].is_null());

    // A state record the recording step cannot read is an error of the run itself (the
    // database broke an assumption), not of a step: exit 70, whatever the steps did.
    let db = fleet.state_dir().join("state.redb");
    {
        let database = redb::Database::open(&db).expect("open state");
        let table: redb::TableDefinition<&str, &[u8]> =
            redb::TableDefinition::new("ARTIFACT_SHA256_TO_ARTIFACT");
        let txn = database.begin_write().expect("write");
        {
            let mut artifacts = txn.open_table(table).expect("table");
            let keys: Vec<String> = redb::ReadableTable::iter(&artifacts)
                .expect("iter")
                .map(|entry| entry.expect("entry").0.value().to_string())
                .collect();
            assert!(!keys.is_empty());
            for key in keys {
                artifacts
                    .insert(key.as_str(), &b"{damaged"[..])
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let internal = fleet.run(&["build", "gw", "--force", "--json"]);
    assert_eq!(
        internal.code, 70,
        "{}\n{}",
        internal.stdout, internal.stderr
    );
    let run = &summary(&internal.stdout)["report"]["run"];
    assert_eq!(run["error"]["code"], "internal_error", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("recording the result of `build.lab.gw`")),
        "{run}"
    );
}
