//! Fleet flashes (`[[device]]` with `flash`) through `plan` and `apply --flash`, with the real
//! binary, a stand-in mirror and real loop devices: without the permission a device is never
//! touched and is no pending change; `--flash DEVICE_ID` writes exactly the artifact and the
//! next plan is clean; a changed profile, a failed or suspect flash and a flash killed with
//! `kill -9` make the device wanted again, each with its reason; a saved plan carries its
//! permission; an absent device is skipped unless named. Skips loudly like `flash`.

use std::io::BufReader;
use std::process::Stdio;

use imagegen::ops::FlashListing;
use imagegen::plan::{Action, ActionKind, Plan};
use imagegen::state::FlashStatus;
use serde_json::Value;

use crate::flash::LoopDevice;
use crate::flash_records::{
    FreezableCard, Killed, gunzip, listing, rpi_fleet, wait_for_blocked_write, wait_for_event,
};
use crate::support::{Run, TestFleet};

const MIB: usize = 1024 * 1024;
const DEVICE: &str = "flash.lab-sd-1";

fn plan(fleet: &TestFleet, extra: &[&str]) -> Plan {
    let mut args = vec!["plan", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&fleet.run(&args).success().stdout).expect("plan JSON")
}

fn flash_action(plan: &Plan) -> &Action {
    plan.action(DEVICE).expect("the device's flash action")
}

fn reasons(action: &Action) -> Vec<&str> {
    action
        .reasons
        .iter()
        .map(|reason| reason.text.as_str())
        .collect()
}

/// The bytes the device should carry: the stored `factory` image of the plan's key,
/// gunzipped.
fn wanted_bytes(fleet: &TestFleet, sha256: &str) -> Vec<u8> {
    let detail = fleet.run(&["artifacts", "show", sha256, "--json"]).json();
    let path = detail["path"].as_str().expect("blob path");
    gunzip(&std::fs::read(path).expect("the stored blob"))
}

fn assert_carries(device: &LoopDevice, data: &[u8]) {
    let contents = device.contents();
    assert!(
        contents[..data.len()] == data[..],
        "the device holds exactly the image"
    );
}

/// `plan --detailed-exitcode`: 0 when nothing is pending.
fn pending(fleet: &TestFleet) -> i32 {
    fleet.run(&["plan", "--detailed-exitcode"]).code
}

fn events(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[test]
fn apply_writes_a_fleet_device_only_with_its_permission() {
    let Some(device) = LoopDevice::create("fleet_apply", 8 * MIB, false) else {
        return;
    };
    let fleet = rpi_fleet(device.path());
    let applied = fleet.run(&["apply"]);
    applied.success();
    assert!(
        device.contents().iter().all(|byte| *byte == 0),
        "apply without --flash never touches the device"
    );
    assert!(
        applied.stdout.contains("1 device flash skipped"),
        "{}",
        applied.stdout
    );
    assert_eq!(
        pending(&fleet),
        0,
        "a card in a drawer is no pending change"
    );
    let before = plan(&fleet, &[]);
    let action = flash_action(&before);
    assert_eq!(action.action, ActionKind::Skip);
    assert!(!before.has_changes());
    assert_eq!(
        reasons(action)[0],
        "never flashed by this fleet",
        "{:?}",
        action.reasons
    );
    assert!(reasons(action)[1].contains("--flash lab-sd-1"));
    let sha = action.key.clone().expect("the chosen artifact");

    // With the permission the device is a change, and apply writes it.
    let allowed = plan(&fleet, &["--flash", "lab-sd-1"]);
    assert_eq!(flash_action(&allowed).action, ActionKind::Create);
    assert_eq!(allowed.summary.flash, 1);
    assert_eq!(
        fleet.run(&["plan", "--flash", "--detailed-exitcode"]).code,
        2
    );
    let run = fleet.run(&["--json", "apply", "--flash", "lab-sd-1"]);
    run.success();
    let lines = events(&run);
    let started = lines
        .iter()
        .find(|event| event["event"] == "step_started" && event["address"] == DEVICE)
        .expect("the flash step started");
    assert_eq!(started["pool"], "flash");
    assert_eq!(started["device"], device.path());
    let progress: Vec<&Value> = lines
        .iter()
        .filter(|event| event["event"] == "step_progress" && event["address"] == DEVICE)
        .filter(|event| event["transfer"].is_object())
        .collect();
    assert!(!progress.is_empty(), "progress with bytes and rate");
    assert!(
        progress
            .iter()
            .all(|event| event["transfer"]["bytes"].is_u64()
                && event["transfer"]["bytes_per_second"].is_number())
    );
    let summary = lines.last().expect("summary");
    let step = summary["report"]["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|step| step["address"] == DEVICE))
        .expect("the flash step in the report");
    assert_eq!(step["outcome"], "succeeded");
    assert_eq!(step["flash"]["device_id"], "lab-sd-1");
    assert_eq!(step["flash"]["artifact"]["sha256"], sha.as_str());
    assert_eq!(step["flash"]["verification"]["matched"], true);
    let data = wanted_bytes(&fleet, &sha);
    assert_carries(&device, &data);

    // The next plan is clean, with or without the permission.
    assert_eq!(flash_action(&plan(&fleet, &[])).action, ActionKind::NoOp);
    assert_eq!(
        flash_action(&plan(&fleet, &["--flash"])).action,
        ActionKind::NoOp
    );
    assert_eq!(pending(&fleet), 0);
    let listed: FlashListing = listing(&fleet);
    assert_eq!(listed.flashes.len(), 1);
    assert_eq!(listed.flashes[0].record.device_key, "fleet:lab/lab-sd-1");
    assert_eq!(listed.flashes[0].record.status, FlashStatus::Succeeded);

    // A changed profile means a new image, so the device needs a flash again.
    let profile = fleet.path().join("profiles/rpi4.yaml");
    let text = std::fs::read_to_string(&profile).expect("profile");
    std::fs::write(&profile, text.replace("[luci]", "[luci, tcpdump]")).expect("edit");
    let changed = plan(&fleet, &["--flash"]);
    let action = flash_action(&changed);
    assert_eq!(action.action, ActionKind::Replace);
    assert_eq!(
        reasons(action),
        ["its image will be rebuilt (artifact known after build)"]
    );
    fleet.run(&["apply", "--flash"]).success();
    let after = plan(&fleet, &[]);
    let action = flash_action(&after);
    assert_eq!(action.action, ActionKind::NoOp);
    let new_sha = action.key.clone().expect("the new artifact");
    assert_ne!(new_sha, sha);
    assert_carries(&device, &wanted_bytes(&fleet, &new_sha));
}

#[test]
fn a_saved_plan_writes_exactly_the_devices_it_was_made_with() {
    let Some(device) = LoopDevice::create("fleet_saved_plan", 8 * MIB, false) else {
        return;
    };
    let fleet = rpi_fleet(device.path());
    fleet.run(&["apply"]).success();

    // A plan saved without the permission writes nothing.
    fleet.run(&["plan", "--out", "plain.json"]).success();
    fleet.run(&["apply", "plain.json"]).success();
    assert!(device.contents().iter().all(|byte| *byte == 0));

    // A plan saved with it keeps it, and apply uses exactly it.
    fleet
        .run(&["plan", "--flash", "lab-sd-1", "--out", "flash.json"])
        .success();
    let saved: Value =
        serde_json::from_slice(&std::fs::read(fleet.path().join("flash.json")).unwrap()).unwrap();
    assert_eq!(
        saved["allow_flash"],
        serde_json::json!({"devices": ["lab-sd-1"]})
    );
    assert_eq!(saved["format_version"], "1.3");
    let refused = fleet.run(&["apply", "flash.json", "--flash"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("cannot change a saved plan"),
        "{}",
        refused.stderr
    );
    fleet.run(&["apply", "flash.json"]).success();
    let sha = flash_action(&plan(&fleet, &[])).key.clone().expect("key");
    assert_carries(&device, &wanted_bytes(&fleet, &sha));
    assert_eq!(pending(&fleet), 0);
    // It is now stale: the state it was made against moved.
    let stale = fleet.run(&["apply", "flash.json"]);
    assert_eq!(stale.code, 4, "{}", stale.stderr);
}

#[test]
fn an_absent_device_is_skipped_unless_the_permission_names_it() {
    // No loop device needed: the path names a card that is not inserted.
    let fleet = rpi_fleet("/dev/disk/by-id/usb-imagegen-test-card-not-inserted");
    fleet.run(&["apply"]).success();
    let everything = plan(&fleet, &["--flash"]);
    let action = flash_action(&everything);
    assert_eq!(action.action, ActionKind::Skip);
    assert!(
        reasons(action)[1].contains("does not exist"),
        "{:?}",
        action.reasons
    );
    let run = fleet.run(&["apply", "--flash"]);
    run.success();
    assert_eq!(
        fleet.run(&["plan", "--flash", "--detailed-exitcode"]).code,
        0
    );

    let named = fleet.run(&["--json", "apply", "--flash", "lab-sd-1"]);
    assert_eq!(named.code, 1, "{}\n{}", named.stdout, named.stderr);
    let finished = events(&named)
        .into_iter()
        .find(|event| event["event"] == "step_finished" && event["address"] == DEVICE)
        .expect("the flash step");
    assert_eq!(finished["outcome"], "failed");
    assert_eq!(finished["error"]["code"], "device_not_found");
    assert!(listing(&fleet).flashes.is_empty(), "nothing was written");

    // A typo in the permission is an error, not a silent "nothing to write".
    let typo = fleet.run(&["plan", "--flash", "lab-sd-2"]);
    assert_eq!(typo.code, 3, "{}", typo.stderr);
    assert!(
        typo.stderr.contains("did you mean `lab-sd-1`"),
        "{}",
        typo.stderr
    );
}

#[test]
fn a_failed_read_back_makes_the_device_suspect_until_a_verified_fleet_flash() {
    let Some(device) = LoopDevice::create("fleet_suspect", 8 * MIB, false) else {
        return;
    };
    let fleet = rpi_fleet(device.path());
    fleet.run(&["apply", "--flash"]).success();
    // Flash the fleet device by hand and change the card behind the kernel's back before
    // the read-back (what a failing card does).
    let corrupt = format!(
        "printf X | dd of={} bs=1 seek=17 conv=notrunc status=none",
        device.backing.display()
    );
    let output = fleet
        .command(&[
            "flash",
            "write",
            "lab.rpi4.sd:factory",
            device.path(),
            "--force",
            "--verify",
            "full",
        ])
        .env("IMAGEGEN_TEST_FLASH_BEFORE_VERIFY", &corrupt)
        .output()
        .expect("run imagegen");
    assert_eq!(output.status.code(), Some(1));

    let suspect = plan(&fleet, &[]);
    let action = flash_action(&suspect);
    assert_eq!(action.action, ActionKind::Skip, "no permission");
    assert!(
        reasons(action)[0].starts_with("flash #2 read back different bytes than it wrote"),
        "{:?}",
        action.reasons
    );
    let allowed = plan(&fleet, &["--flash"]);
    let action = flash_action(&allowed);
    assert_eq!(action.action, ActionKind::Replace);
    assert_eq!(action.details["verify"], "full");

    fleet.run(&["apply", "--flash", "lab-sd-1"]).success();
    assert_eq!(flash_action(&plan(&fleet, &[])).action, ActionKind::NoOp);
    let listed = listing(&fleet);
    let device_record = listed
        .devices
        .iter()
        .find(|record| record.key == "fleet:lab/lab-sd-1")
        .expect("the device");
    assert_eq!(
        device_record.suspect_since, None,
        "a verified flash cleared it"
    );
    assert_eq!(device_record.last_flash_id, 3);
}

#[test]
fn kill_9_during_a_fleet_flash_leaves_in_progress_and_the_next_plan_flashes_again() {
    let test = "fleet_kill_9";
    // The flash's first write blocks on the frozen filesystem: the kill lands mid-write.
    let Some(card) = FreezableCard::create(test, 8 * MIB) else {
        return;
    };
    let device = &card.device;
    let fleet = rpi_fleet(device.path());
    fleet.run(&["apply"]).success();
    let Some(frozen) = card.freeze(test) else {
        return;
    };
    let mut child = Killed(
        fleet
            .command(&["--json", "apply", "--flash", "lab-sd-1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn imagegen"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
    wait_for_event(&mut stdout, "\"step_started\"", DEVICE);
    wait_for_blocked_write(child.0.id(), &device.node);
    child.0.kill().expect("kill -9");
    drop(frozen);
    let status = child.0.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let listed = listing(&fleet);
    assert_eq!(listed.flashes.len(), 1);
    let record = &listed.flashes[0].record;
    assert_eq!(record.status, FlashStatus::InProgress);
    assert_eq!(record.device_id.as_deref(), Some("lab-sd-1"));
    assert!(!listed.flashes[0].completed);

    let again = plan(&fleet, &["--flash"]);
    let action = flash_action(&again);
    assert_eq!(action.action, ActionKind::Replace);
    assert!(
        reasons(action)[0].starts_with("flash #1 did not complete"),
        "{:?}",
        action.reasons
    );
    fleet.run(&["apply", "--flash", "lab-sd-1"]).success();
    let clean = plan(&fleet, &[]);
    assert_eq!(flash_action(&clean).action, ActionKind::NoOp);
    let sha = flash_action(&clean).key.clone().expect("key");
    assert_carries(device, &wanted_bytes(&fleet, &sha));
}
