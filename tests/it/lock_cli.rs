//! `imagegen lock`, `builders`, and plan/validate against upstream metadata, end to end
//! over a real `file://` mirror of stand-in Image Builders signed with the TEST key.

use imagegen::plan::{ActionKind, Plan, Resource};
use imagegen_standin::demo;

use crate::support::{TestFleet, upstream_data};

/// The example fleet pointed at a fresh stand-in mirror that its settings trust.
fn fleet_with_mirror() -> (TestFleet, demo::DemoMirror) {
    let fleet = TestFleet::example();
    let loaded = imagegen::manifest::load_fleet(&fleet.path().join("imagegen.toml"), None)
        .expect("example fleet");
    let mirror =
        demo::write_mirror_for_fleet(&fleet.path().join("mirror"), &upstream_data(), &loaded, 0.0)
            .expect("mirror");
    let manifest = std::fs::read_to_string(fleet.path().join("imagegen.toml")).expect("manifest");
    let manifest = manifest.replace(
        "mirror = \"https://downloads.openwrt.org\"",
        &format!(
            "mirror = \"{}\"\ntrusted_keys = [\"{}\"]",
            mirror.url,
            mirror.public_key.display()
        ),
    );
    fleet.write("imagegen.toml", &manifest);
    (fleet, mirror)
}

fn plan(fleet: &TestFleet, extra: &[&str]) -> Plan {
    let mut args = vec!["plan", "--json"];
    args.extend_from_slice(extra);
    let run = fleet.run(&args);
    run.success();
    serde_json::from_str(&run.stdout).expect("plan JSON")
}

#[test]
fn lock_pins_every_builder_and_plan_shows_real_keys() {
    let (fleet, _mirror) = fleet_with_mirror();
    let report = fleet.run(&["lock", "--json"]).success().json();
    let changes = report["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 5);
    assert!(changes.iter().all(|change| change["change"] == "added"));
    let lock = std::fs::read_to_string(fleet.path().join("imagegen.lock")).expect("lock written");
    assert!(
        lock.contains("openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64.tar.xz"),
        "{lock}"
    );
    assert!(
        lock.contains("openwrt-imagebuilder-ramips-mt7621.Linux-x86_64.tar.zst"),
        "{lock}"
    );
    // The TEST key's id, read from the signatures: verification really happened, for every
    // archive and every feed index.
    let test_key = imagegen_standin::mirror::test_secret_key()
        .public_key()
        .key_id
        .to_string();
    let signed = lock.matches("[[builder]]").count() + lock.matches("[[builder.feed]]").count();
    assert!(lock.matches("[[builder.feed]]").count() >= 5 * 6, "{lock}");
    assert_eq!(lock.matches(&test_key).count(), signed, "{lock}");

    // A second lock changes nothing; the file is byte-identical.
    fleet.run(&["lock"]).success();
    assert_eq!(
        std::fs::read_to_string(fleet.path().join("imagegen.lock")).expect("lock"),
        lock
    );

    let planned = plan(&fleet, &["--locked"]);
    assert!(
        planned
            .actions
            .iter()
            .filter(|a| a.resource != Resource::Flash)
            .all(|a| a.key.is_some())
    );
    let builder = planned
        .action("builder.23.05.4/ath79/generic")
        .expect("builder action");
    assert_eq!(
        builder.details.get("archive").map(String::as_str),
        Some("openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64.tar.xz")
    );
    assert!(planned.notices.is_empty(), "{:?}", planned.notices);

    // Offline, from the lock and the metadata cache alone.
    let offline = plan(&fleet, &["--locked", "--offline"]);
    assert_eq!(offline.actions, planned.actions);
}

#[test]
fn ensure_fetches_into_the_cache_and_plan_sees_them_ready() {
    let (fleet, _mirror) = fleet_with_mirror();
    fleet.run(&["lock"]).success();
    let ensured = fleet
        .run(&["builders", "ensure", "23.05.4/x86/64", "--json"])
        .success()
        .json();
    let path = std::path::PathBuf::from(ensured[0]["path"].as_str().expect("path"));
    assert!(
        path.join("Makefile").is_file(),
        "unpacked tree at {}",
        path.display()
    );
    assert_eq!(ensured[0]["fetched"], true);
    let again = fleet
        .run(&["builders", "ensure", "23.05.4/x86/64", "--json"])
        .success()
        .json();
    assert_eq!(again[0]["fetched"], false);
    let listed = fleet.run(&["builders", "list", "--json"]).success().json();
    assert_eq!(listed[0]["status"], "ready");
    let planned = plan(&fleet, &[]);
    assert_eq!(
        planned.action("builder.23.05.4/x86/64").map(|a| a.action),
        Some(ActionKind::NoOp)
    );
    assert_eq!(
        planned
            .action("builder.23.05.4/ath79/generic")
            .map(|a| a.action),
        Some(ActionKind::Create)
    );
    // Nothing uses it yet (no recorded builds): prune removes it, then plan fetches again.
    let pruned = fleet.run(&["builders", "prune", "--json"]).success().json();
    assert_eq!(pruned["builders"][0]["action"], "removed");
    assert!(!path.exists());
    let planned = plan(&fleet, &[]);
    assert_eq!(
        planned.action("builder.23.05.4/x86/64").map(|a| a.action),
        Some(ActionKind::Create)
    );
}

#[test]
fn unknown_imagebuilder_profile_suggests_ids_and_the_right_target() {
    let (fleet, _mirror) = fleet_with_mirror();
    let path = fleet.path().join("profiles/lab-rpi4-sd.yaml");
    let text = std::fs::read_to_string(&path).expect("profile");
    // A device that exists in 23.05.4, but under ath79/generic, not bcm27xx/bcm2711.
    std::fs::write(
        &path,
        text.replace(
            "imagebuilder_profile: rpi-4",
            "imagebuilder_profile: tplink_archer-c7-v2",
        ),
    )
    .expect("edit");
    let run = fleet.run(&["validate", "--json"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let problem = &run.json()["error"]["problems"][0];
    assert_eq!(problem["location"]["file"], "profiles/lab-rpi4-sd.yaml");
    let help = problem["help"].as_str().expect("help");
    assert!(help.contains("under target `ath79/generic`"), "{help}");
    assert!(help.contains("`rpi-4`") || help.contains("`rpi-"), "{help}");
    assert_eq!(fleet.run(&["plan"]).code, 3);
}

#[test]
fn upstream_respin_is_noticed_and_locked_plans_refuse() {
    let (fleet, mirror) = fleet_with_mirror();
    fleet.run(&["lock"]).success();
    // Re-spin the snapshot: a new stand-in archive with another revision.
    let writer = imagegen_standin::mirror::MirrorWriter::new(&mirror.root);
    let mut spec = imagegen_standin::imagebuilder::spec_from_data(
        &upstream_data(),
        "SNAPSHOT",
        "ramips",
        "mt7621",
    )
    .expect("spec");
    spec.version_code = "r99999-0123456789".into();
    let work = fleet.path().join("respin");
    demo::write_target(
        &writer,
        &work,
        &spec,
        &imagegen_standin::mirror::test_secret_key(),
    )
    .expect("respin");
    let planned = plan(&fleet, &[]);
    assert_eq!(planned.notices.len(), 1, "{:?}", planned.notices);
    assert!(
        planned.notices[0].contains("SNAPSHOT/ramips/mt7621"),
        "{:?}",
        planned.notices
    );
    let locked = fleet.run(&["plan", "--locked"]);
    assert_eq!(locked.code, 4, "{}", locked.stderr);
    assert!(
        locked.stderr.contains("imagegen lock --upgrade"),
        "{}",
        locked.stderr
    );
    // Upgrade just that builder: the others keep their pins.
    let report = fleet
        .run(&["lock", "--upgrade", "SNAPSHOT/ramips/mt7621", "--json"])
        .success()
        .json();
    let changed: Vec<&str> = report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|change| change["change"] != "unchanged")
        .filter_map(|change| change["address"].as_str())
        .collect();
    assert_eq!(changed, vec!["builder.SNAPSHOT/ramips/mt7621"]);
    fleet.run(&["plan", "--locked"]).success();
}

#[test]
fn untrusted_signature_and_offline_network_are_refused() {
    let (fleet, _mirror) = fleet_with_mirror();
    let manifest = std::fs::read_to_string(fleet.path().join("imagegen.toml")).expect("manifest");
    let untrusted = manifest
        .lines()
        .filter(|line| !line.starts_with("trusted_keys"))
        .collect::<Vec<_>>()
        .join("\n");
    fleet.write("imagegen.toml", &untrusted);
    let run = fleet.run(&["lock", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.json()["error"]["code"], "signature_error");
    assert!(!fleet.path().join("imagegen.lock").exists());
    // Verification explicitly off for this mirror: works, with no key id pinned.
    let run = fleet.run(&["lock", "--verify-signatures", "false", "--json"]);
    run.success();
    assert!(run.json()["changes"][0]["key_id"].is_null());
    // An https mirror while offline: refused without touching the network.
    std::fs::remove_file(fleet.path().join("imagegen.lock")).expect("remove lock");
    let run = fleet.run(&[
        "lock",
        "--mirror",
        "https://downloads.openwrt.org",
        "--json",
    ]);
    assert_eq!(run.code, 3);
    assert_eq!(run.json()["error"]["code"], "precondition");
}

#[test]
fn lock_records_the_key_fingerprint() {
    let (fleet, _mirror) = fleet_with_mirror();
    fleet.run(&["lock"]).success();
    let lock = std::fs::read_to_string(fleet.path().join("imagegen.lock")).expect("lock written");
    let key = imagegen_standin::mirror::test_secret_key().public_key();
    let line = format!(
        "key_id = \"{}\"\nkey_fingerprint = \"{}\"\n",
        key.key_id,
        key.fingerprint()
    );
    let signed = lock.matches("[[builder]]").count() + lock.matches("[[builder.feed]]").count();
    assert_eq!(lock.matches(&line).count(), signed, "{lock}");
}

#[test]
fn a_trusted_key_with_an_official_key_id_is_refused() {
    use imagegen::imagebuilder::usign::{KeyId, PublicKey};
    let (fleet, mirror) = fleet_with_mirror();
    // The mirror's own key, renamed to the id of the official snapshot key.
    let impostor = PublicKey {
        key_id: KeyId::parse("b5043e70f9a75cde").expect("key id"),
        key: imagegen_standin::mirror::test_secret_key().public_key().key,
    };
    std::fs::write(&mirror.public_key, impostor.to_file_text()).expect("write key");
    let run = fleet.run(&["lock"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "key id `b5043e70f9a75cde` already names an official OpenWrt key with a different public key"
        ),
        "{}",
        run.stderr
    );
    assert!(!fleet.path().join("imagegen.lock").exists());
}
