//! `plan` against a real redb state: record what a plan says as applied (through the
//! library's state store, as apply does), then check that plan sees no changes, and that a
//! single edit is explained by exactly that reason.

use imagegen::triple::Triple;
use std::path::Path;

use imagegen::lock::{LockEntry, LockFile};
use imagegen::plan::{ActionKind, Plan, Resource};
use imagegen::state::{
    BuildRecord, BuildStatus, BuilderRecord, BuilderStatus, ProfilePointer, Store,
};

use crate::support::TestFleet;

/// Pins every Image Builder the example fleet uses, with made-up hashes.
fn write_lock(fleet: &TestFleet, archive_sha: &str) {
    let mut lock = LockFile::default();
    for (release, target, subtarget) in [
        ("23.05.4", "ath79", "generic"),
        ("23.05.4", "bcm27xx", "bcm2711"),
        ("23.05.4", "mediatek", "filogic"),
        ("23.05.4", "x86", "64"),
        ("SNAPSHOT", "ramips", "mt7621"),
    ] {
        lock.insert(LockEntry {
            triple: Triple::new(release, target, subtarget),
            archive: format!(
                "openwrt-imagebuilder-{release}-{target}-{subtarget}.Linux-x86_64.tar.xz"
            ),
            archive_sha256: archive_sha.into(),
            key_id: Some("b5043e70f9a75cde".into()),
            key_fingerprint: None,
            version_code: "r24012-d8dd03c46f".into(),
            profiles_json_sha256: "00".repeat(32),
            mirror: "https://downloads.openwrt.org".into(),
            locked_at: "2026-11-25T00:00:00Z".into(),
            feeds: Vec::new(),
            feeds_unpinned: None,
        });
    }
    lock.write(&fleet.path().join("imagegen.lock"))
        .expect("write lock");
}

fn plan(fleet: &TestFleet) -> Plan {
    let run = fleet.run(&["plan", "--json"]);
    run.success();
    serde_json::from_str(&run.stdout).expect("plan JSON")
}

/// Records every builder and build of `plan` as done, the way apply will.
fn record_as_applied(db: &Path, plan: &Plan) {
    let store = Store::open(db, "test").expect("open state");
    let mut writer = store.write().expect("writer");
    for action in &plan.actions {
        match action.resource {
            Resource::Builder => {
                let (release, rest) = action.address["builder.".len()..]
                    .split_once('/')
                    .expect("address");
                let (target, subtarget) = rest.split_once('/').expect("address");
                writer
                    .put_builder(&BuilderRecord {
                        triple: Triple::new(release, target, subtarget),
                        archive: "archive".into(),
                        archive_sha256: action.key.clone().expect("pinned"),
                        url: "file:///mirror".into(),
                        key_id: Some("b5043e70f9a75cde".into()),
                        version_code: None,
                        status: BuilderStatus::Ready,
                        path: None,
                        size: 0,
                        first_used: 0,
                        last_used: 0,
                        error: None,
                        tree_digest: None,
                    })
                    .expect("put builder");
            }
            Resource::Build => {
                let key = action.key.clone().expect("key known once pinned");
                let profile_id = action.profile_id.clone().expect("profile id");
                writer
                    .put_build(&BuildRecord {
                        key: key.clone(),
                        profile_id: profile_id.clone(),
                        fleet: Some(plan.fleet.clone()),
                        inputs: action.inputs.clone().expect("inputs"),
                        status: BuildStatus::Succeeded,
                        started_at: 0,
                        finished_at: 0,
                        log_path: None,
                        manifest_path: None,
                        artifacts: Vec::new(),
                        error: None,
                        applied_by: Vec::new(),
                        kept_build_dir: None,
                    })
                    .expect("put build");
                writer
                    .set_profile_pointer(
                        &plan.fleet,
                        &profile_id,
                        &ProfilePointer {
                            build_key: key,
                            applied_at: 0,
                        },
                    )
                    .expect("pointer");
            }
            Resource::Flash => {}
        }
    }
    writer.commit().expect("commit");
}

fn build_actions(plan: &Plan) -> Vec<(&str, ActionKind)> {
    plan.actions
        .iter()
        .filter(|action| action.resource == Resource::Build)
        .map(|action| (action.address.as_str(), action.action))
        .collect()
}

#[test]
fn recorded_state_gives_no_changes_and_one_edit_one_reason() {
    let fleet = TestFleet::example();
    // No flash devices: flashing is planned separately.
    let manifest = std::fs::read_to_string(fleet.path().join("imagegen.toml")).expect("manifest");
    fleet.write(
        "imagegen.toml",
        &manifest.replace("flash = {", "# flash = {"),
    );
    write_lock(&fleet, &"11".repeat(32));
    let first = plan(&fleet);
    assert!(
        first.actions.iter().all(|action| action.key.is_some()),
        "keys known once pinned"
    );
    record_as_applied(&fleet.state_dir().join("state.redb"), &first);

    let second = plan(&fleet);
    assert!(!second.has_changes(), "{:#?}", second.actions);
    let text = fleet.run(&["plan"]);
    assert!(text.stdout.starts_with("No changes."), "{}", text.stdout);
    assert_eq!(fleet.run(&["plan", "--detailed-exitcode"]).code, 0);

    // One package added to one profile: exactly that build is replaced, for that reason.
    let profile_file = fleet.path().join("profiles/lab-rpi4-sd.yaml");
    let text = std::fs::read_to_string(&profile_file).expect("read profile");
    assert!(text.contains("packages: [luci,"), "{text}");
    std::fs::write(
        &profile_file,
        text.replacen("packages: [luci,", "packages: [luci, collectd,", 1),
    )
    .expect("edit");
    let third = plan(&fleet);
    let changed: Vec<_> = build_actions(&third)
        .into_iter()
        .filter(|(_, kind)| *kind != ActionKind::NoOp)
        .collect();
    assert_eq!(
        changed,
        vec![("build.home.lab.rpi4.sd", ActionKind::Replace)]
    );
    let action = third.action("build.home.lab.rpi4.sd").expect("action");
    let reasons: Vec<&str> = action
        .reasons
        .iter()
        .map(|reason| reason.text.as_str())
        .collect();
    assert_eq!(reasons, vec!["packages: +collectd"]);
    std::fs::write(&profile_file, &text).expect("restore");
    assert!(!plan(&fleet).has_changes());

    // One overlay file changed: the profiles using it are rebuilt, naming that file.
    let banner = fleet.path().join("files/common/etc/banner");
    let mut contents = std::fs::read_to_string(&banner).expect("banner");
    contents.push_str("changed\n");
    std::fs::write(&banner, contents).expect("edit banner");
    let fourth = plan(&fleet);
    let rebuilt: Vec<_> = fourth
        .actions
        .iter()
        .filter(|action| action.action == ActionKind::Replace)
        .collect();
    assert!(!rebuilt.is_empty());
    for action in rebuilt {
        let texts: Vec<&str> = action
            .reasons
            .iter()
            .map(|reason| reason.text.as_str())
            .collect();
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(
            texts[0].starts_with("overlay: /etc/banner changed"),
            "{texts:?}"
        );
    }

    // A re-spun Image Builder: every build explains it, the builders are fetched again.
    write_lock(&fleet, &"22".repeat(32));
    let fifth = plan(&fleet);
    assert_eq!(fifth.summary.fetch, 5);
    let ap = fifth
        .action("build.home.home.ap-livingroom.23.05")
        .expect("ap");
    assert!(ap.reasons[0].text.contains("re-spun"), "{:?}", ap.reasons);
}

#[test]
fn a_second_process_on_the_state_gets_state_locked() {
    let fleet = TestFleet::example();
    let db = fleet.state_dir().join("state.redb");
    std::fs::create_dir_all(fleet.state_dir()).expect("state dir");
    let _held = Store::open(&db, "imagegen apply").expect("open state");
    let run = fleet.run(&["plan", "--json"]);
    assert_eq!(run.code, 5, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.json()["error"]["code"], "state_locked");
}
