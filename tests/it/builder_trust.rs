//! Cached Image Builders are trusted only as far as they were checked: a builder fetched
//! with signature verification off is said to be unverified on every run and verified before
//! use once verification is back on; a cached tree that changed after its fetch is noticed by
//! `builders verify`, marked broken and fetched again.

use imagegen::plan::{ActionKind, Plan};

use crate::apply::small_fleet;

fn plan(fleet: &crate::support::TestFleet) -> Plan {
    let run = fleet.run(&["plan", "--json"]);
    run.success();
    serde_json::from_str(&run.stdout).expect("plan JSON")
}

fn builder_action(plan: &Plan, address: &str) -> (ActionKind, String) {
    let action = plan.action(address).expect("builder action");
    let reasons: Vec<&str> = action
        .reasons
        .iter()
        .map(|reason| reason.text.as_str())
        .collect();
    (action.action, reasons.join("; "))
}

#[test]
fn an_unverified_builder_is_announced_and_verified_before_use_once_verification_is_on() {
    let fleet = small_fleet(0.0);
    let off = ["--verify-signatures", "false"];
    let planned = fleet.run(&["plan", "--json", off[0], off[1]]);
    planned.success();
    assert!(
        planned.stdout.contains("signature verification is OFF"),
        "{}",
        planned.stdout
    );
    let applied = fleet.run(&["apply", off[0], off[1]]);
    applied.success();
    assert!(
        applied.stderr.contains("NOT signature-verified"),
        "{}",
        applied.stderr
    );
    // A later run that builds with such a builder says so again.
    let profile = fleet.path().join("profiles/gw.yaml");
    let text = std::fs::read_to_string(&profile).expect("profile");
    std::fs::write(&profile, text.replace("[luci, htop]", "[luci]")).expect("edit profile");
    let rebuilt = fleet.run(&["apply", off[0], off[1]]);
    rebuilt.success();
    assert!(
        rebuilt
            .stderr
            .contains("building with an Image Builder whose signature was never verified"),
        "{}",
        rebuilt.stderr
    );
    // Verification back on: the builders fetched unverified are verified first.
    let (kind, why) = builder_action(&plan(&fleet), "builder.23.05.4/x86/64");
    assert_eq!(kind, ActionKind::Replace, "{why}");
    assert!(
        why.contains("fetched while signature verification was off"),
        "{why}"
    );
    fleet.run(&["apply"]).success();
    let listed = fleet.run(&["builders", "list", "--json"]).success().json();
    let records = listed.as_array().cloned().unwrap_or_default();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|record| record["key_id"].is_string()),
        "{listed}"
    );
    assert!(!plan(&fleet).has_changes());
}

#[test]
fn a_cached_tree_that_changed_is_noticed_marked_broken_and_fetched_again() {
    let fleet = small_fleet(0.0);
    fleet.run(&["apply"]).success();
    let verified = fleet
        .run(&["builders", "verify", "--json"])
        .success()
        .json();
    let states: Vec<&str> = verified
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter_map(|result| result["state"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(states, ["intact", "intact"], "{verified}");

    let listed = fleet.run(&["builders", "list", "--json"]).success().json();
    let x86 = listed
        .as_array()
        .and_then(|records| records.iter().find(|record| record["target"] == "x86"))
        .cloned()
        .expect("x86 builder");
    let tree = std::path::PathBuf::from(x86["path"].as_str().expect("path"));
    let makefile = tree.join("Makefile");
    let mut text = std::fs::read_to_string(&makefile).expect("Makefile");
    text.push_str("\n# tampered\n");
    std::fs::write(&makefile, text).expect("tamper");

    let damaged = fleet.run(&["builders", "verify", "--json"]);
    assert_eq!(damaged.code, 1, "{}", damaged.stdout);
    let error = damaged.json();
    assert_eq!(error["error"]["code"], "imagebuilder_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("builder.23.05.4/x86/64")
    );
    let (kind, why) = builder_action(&plan(&fleet), "builder.23.05.4/x86/64");
    assert_eq!(kind, ActionKind::Replace, "{why}");
    assert!(why.contains("damaged"), "{why}");

    fleet.run(&["apply"]).success();
    let again = fleet
        .run(&["builders", "verify", "--json"])
        .success()
        .json();
    assert!(again.to_string().contains("intact"), "{again}");
    assert!(
        !std::fs::read_to_string(&makefile)
            .expect("Makefile")
            .contains("tampered")
    );
}
