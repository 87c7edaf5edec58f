//! The command line end to end: validate, plan, config, profiles, errors and exit codes.

use crate::support::{Run, TestFleet};

use imagegen::plan::Plan;

const LOCK: &str = r#"# Written by imagegen; commit this file.
version = 1
"#;

fn plan_json(run: &Run) -> Plan {
    serde_json::from_str(&run.stdout).unwrap_or_else(|error| {
        panic!(
            "plan JSON does not parse ({error}):\n{}\n{}",
            run.stdout, run.stderr
        )
    })
}

/// Replaces hex hashes (12+ digits) so snapshots survive key changes of unrelated inputs.
fn redact_hashes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for character in text.chars() {
        if character.is_ascii_hexdigit() && character.is_ascii_lowercase()
            || character.is_ascii_digit()
        {
            run.push(character);
            continue;
        }
        flush_hex(&mut out, &mut run);
        out.push(character);
    }
    flush_hex(&mut out, &mut run);
    out
}

fn flush_hex(out: &mut String, run: &mut String) {
    if run.len() >= 12 && run.chars().any(|c| c.is_ascii_alphabetic()) {
        out.push_str("[HASH]");
    } else {
        out.push_str(run);
    }
    run.clear();
}

#[test]
fn example_fleet_validates() {
    let fleet = TestFleet::example();
    let run = fleet.run(&["validate", "--json"]);
    run.success();
    let report = run.json();
    assert_eq!(report["valid"], true);
    assert!(report["profiles"].as_u64().unwrap_or(0) >= 5, "{report}");
}

#[test]
fn first_plan_creates_everything_and_keys_are_known_after_fetch() {
    let fleet = TestFleet::example();
    let run = fleet.run(&["plan"]);
    run.success();
    insta::assert_snapshot!("first_plan_text", redact_hashes(&fleet.redact(&run.stdout)));
    let json = fleet.run(&["plan", "--json"]);
    let plan = plan_json(json.success());
    assert_eq!(plan.format_version, "1.3");
    assert!(plan.has_changes());
    assert!(
        plan.actions.iter().all(
            |action| action.key.is_none() || action.resource == imagegen::plan::Resource::Flash
        )
    );
}

#[test]
fn detailed_exitcode_reports_pending_changes() {
    let fleet = TestFleet::example();
    assert_eq!(fleet.run(&["plan", "--detailed-exitcode"]).code, 2);
    assert_eq!(fleet.run(&["plan"]).code, 0);
}

#[test]
fn plan_out_saves_the_plan_as_json() {
    let fleet = TestFleet::example();
    fleet.run(&["plan", "--out", "tfplan.json"]).success();
    let saved: Plan = serde_json::from_slice(
        &std::fs::read(fleet.path().join("tfplan.json")).expect("saved plan"),
    )
    .expect("saved plan parses");
    let printed = plan_json(fleet.run(&["plan", "--json"]).success());
    assert_eq!(saved.actions, printed.actions);
    assert_eq!(saved.fingerprint, printed.fingerprint);
}

#[test]
fn locked_without_lock_file_is_a_stale_lock_error() {
    let fleet = TestFleet::example();
    let run = fleet.run(&["plan", "--locked", "--json"]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.json()["error"]["code"], "stale_plan");
    fleet.write("imagegen.lock", LOCK);
    let run = fleet.run(&["plan", "--locked"]);
    assert_eq!(run.code, 4);
    assert!(
        run.stderr.contains("imagegen.lock does not pin"),
        "{}",
        run.stderr
    );
}

#[test]
fn invalid_profile_reports_every_problem_with_line_and_column() {
    let fleet = TestFleet::empty();
    fleet.write("imagegen.toml", "[fleet]\nname = \"lab\"\n");
    fleet.write(
        "profiles/bad.yaml",
        "profile_id: bad id\nname: Bad\ndevice_id: x\nopenwrt_release: 23.05.4\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: tplink_archer-c7-v2\npackges: [luci]\nfiles:\n  - source: files/banner\n    destination: etc/banner\n",
    );
    let run = fleet.run(&["validate"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    insta::assert_snapshot!("invalid_profile_report", fleet.redact(&run.stderr));
    let json = fleet.run(&["validate", "--json"]).json();
    assert_eq!(json["error"]["code"], "validation");
    let problems = json["error"]["problems"].as_array().expect("problems");
    assert!(problems.len() >= 3, "{json}");
    let first = &problems[0]["location"];
    assert_eq!(first["file"], "profiles/bad.yaml");
    assert_eq!(first["line"], 1);
}

#[test]
fn missing_manifest_says_what_to_do() {
    let fleet = TestFleet::empty();
    let run = fleet.run(&["plan"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
}

#[test]
fn usage_errors_and_help() {
    let fleet = TestFleet::empty();
    assert_eq!(fleet.run(&["plan", "--no-such-flag"]).code, 64);
    let help = fleet.run(&["--help"]);
    help.success();
    assert!(help.stdout.contains("Exit codes"), "{}", help.stdout);
    let completions = fleet.run(&["completions", "bash"]);
    completions.success();
    assert!(completions.stdout.contains("imagegen"));
}

#[test]
fn config_shows_values_and_origins_with_precedence() {
    let fleet = TestFleet::example();
    fleet.write(
        "imagegen.toml",
        &format!(
            "{}\n",
            std::fs::read_to_string(fleet.path().join("imagegen.toml"))
                .expect("manifest")
                .replace("jobs = 2", "jobs = 3")
        ),
    );
    let entries = fleet.run(&["config", "--json"]).success().json();
    let find = |name: &str| {
        entries
            .as_array()
            .and_then(|items| items.iter().find(|item| item["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {entries}"))
    };
    assert_eq!(find("jobs")["value"], 3);
    assert!(
        find("jobs")["origin"]
            .as_str()
            .unwrap_or("")
            .starts_with("file")
    );
    let with_env = fleet
        .command(&["config", "--json"])
        .env("OWRT_IMG_JOBS", "5")
        .output()
        .expect("run");
    let entries: serde_json::Value = serde_json::from_slice(&with_env.stdout).expect("json");
    let jobs = entries
        .as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == "jobs"))
        .cloned()
        .expect("jobs");
    assert_eq!(jobs["value"], 5);
    let with_flag = fleet
        .command(&["config", "--json", "--jobs", "7"])
        .env("OWRT_IMG_JOBS", "5")
        .output()
        .expect("run");
    let entries: serde_json::Value = serde_json::from_slice(&with_flag.stdout).expect("json");
    let jobs = entries
        .as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == "jobs"))
        .cloned()
        .expect("jobs");
    assert_eq!(jobs["value"], 7);
    assert!(jobs["origin"].as_str().unwrap_or("").starts_with("flag"));
}

#[test]
fn profiles_list_filters_and_show_export_import() {
    let fleet = TestFleet::example();
    let all = fleet.run(&["profiles", "list", "--json"]).success().json();
    let all = all.as_array().expect("array").clone();
    let ath79 = fleet
        .run(&["profiles", "list", "--json", "--target", "ath79"])
        .success()
        .json();
    let ath79 = ath79.as_array().expect("array").clone();
    assert!(!ath79.is_empty() && ath79.len() < all.len());
    assert!(ath79.iter().all(|row| row["target"] == "ath79"));

    let id = all[0]["profile_id"].as_str().expect("id").to_string();
    let shown = fleet
        .run(&["profiles", "show", &id, "--json"])
        .success()
        .json();
    assert_eq!(shown["profile_id"], id.as_str());
    let missing = fleet.run(&["profiles", "show", "no-such-profile"]);
    assert_eq!(missing.code, 3);
    assert!(
        missing.stderr.contains("profile_not_found"),
        "{}",
        missing.stderr
    );

    // Export as TOML, then import it into a fresh fleet: same profile back.
    fleet
        .run(&[
            "profiles", "export", &id, "--format", "toml", "--out", "exported",
        ])
        .success();
    let other = TestFleet::empty();
    other.write("imagegen.toml", "[fleet]\nname = \"other\"\n");
    std::fs::create_dir_all(other.path().join("profiles")).expect("profiles dir");
    let exported = fleet.path().join("exported").join(format!("{id}.toml"));
    other
        .run(&[
            "profiles",
            "import",
            exported.to_str().expect("utf8"),
            "--format",
            "yaml",
        ])
        .success();
    let again = other
        .run(&["profiles", "show", &id, "--json"])
        .success()
        .json();
    assert_eq!(again, shown);
    let twice = other.run(&["profiles", "import", exported.to_str().expect("utf8")]);
    assert_eq!(twice.code, 3, "importing an existing id needs --force");
}

#[test]
fn missing_overlay_source_is_reported_in_every_profile_that_uses_it() {
    let fleet = TestFleet::example();
    std::fs::remove_file(fleet.path().join("files/common/etc/banner")).expect("remove banner");
    let run = fleet.run(&["validate", "--json"]);
    assert_eq!(run.code, 3);
    let json = run.json();
    let locations: Vec<String> = json["error"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|problem| {
            let location = &problem["location"];
            format!(
                "{}:{}:{}",
                location["file"].as_str().unwrap_or(""),
                location["line"],
                location["column"]
            )
        })
        .collect();
    assert_eq!(
        locations,
        vec![
            "profiles/home-ap-livingroom.yaml:22:13",
            "profiles/home-router-main.toml:15:10",
            "profiles/lab-router1-snapshot.yaml:12:13",
            "profiles/office-gateway-x86.json:14:17",
        ]
    );
    // plan refuses the same way before doing anything.
    assert_eq!(fleet.run(&["plan"]).code, 3);
}
