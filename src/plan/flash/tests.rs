use super::*;
use crate::plan::diff::{RecordedBuild, RecordedDevice};
use crate::state::ArtifactRef;

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn artifact(sha256: &str, kind: &str, filesystem: &str) -> ArtifactRef {
    ArtifactRef {
        sha256: sha256.into(),
        name: format!("rpi-{filesystem}-{kind}.img.gz"),
        kind: kind.into(),
        filesystem: Some(filesystem.into()),
        size: 1,
    }
}

fn wanted() -> DesiredFlash {
    DesiredFlash {
        device_id: "sd1".into(),
        profile_id: "pi".into(),
        path: "/dev/disk/by-id/usb-card".into(),
        image: "factory".into(),
        filesystem: Some("ext4".into()),
        verify: VerifyMode::Prefix,
        wipe: true,
        present: true,
    }
}

/// The profile's build applied, with an ext4 and a squashfs `factory` image.
fn built() -> Recorded {
    let mut recorded = Recorded::default();
    recorded.builds.insert(
        "pi".into(),
        RecordedBuild {
            key: "k".into(),
            inputs: None,
            usable: true,
            artifacts: vec![
                artifact(SHA_B, "factory", "squashfs"),
                artifact(SHA_A, "factory", "ext4"),
            ],
        },
    );
    recorded
}

fn unchanged_build() -> Action {
    let mut build = Action {
        address: "build.lab.pi".into(),
        resource: Resource::Build,
        action: ActionKind::NoOp,
        key: Some("k".into()),
        previous_key: Some("k".into()),
        reasons: Vec::new(),
        depends_on: Vec::new(),
        same_inputs_as: None,
        cache_hit: false,
        profile_id: Some("pi".into()),
        device_id: None,
        builder: None,
        inputs: None,
        details: BTreeMap::new(),
        packages: None,
    };
    build.details.clear();
    build
}

fn flashed(recorded: &mut Recorded, sha256: &str) {
    recorded.devices.insert(
        "sd1".into(),
        RecordedDevice {
            artifact_sha256: sha256.into(),
        },
    );
    recorded.device_states.insert(
        "sd1".into(),
        RecordedDeviceState {
            last_flash_id: 1,
            last_status: FlashStatus::Succeeded,
            suspect_since: None,
        },
    );
}

fn texts(action: &Action) -> Vec<&str> {
    action.reasons.iter().map(|r| r.text.as_str()).collect()
}

fn plan_it(recorded: &Recorded, flash: &DesiredFlash, permission: &FlashPermission) -> Action {
    flash_action("lab", flash, recorded, Some(&unchanged_build()), permission)
}

#[test]
fn a_never_flashed_device_wants_the_image_of_its_filesystem() {
    let action = plan_it(&built(), &wanted(), &FlashPermission::all());
    assert_eq!(action.action, ActionKind::Create);
    assert_eq!(
        action.key.as_deref(),
        Some(SHA_A),
        "the ext4 image, by policy"
    );
    assert_eq!(texts(&action), ["never flashed by this fleet"]);
    assert_eq!(action.depends_on, ["build.lab.pi"]);
    assert_eq!(action.details["verify"], "prefix");
    assert_eq!(action.details["wipe"], "true");
}

#[test]
fn without_permission_a_wanted_flash_is_a_skip_that_says_why() {
    let action = plan_it(&built(), &wanted(), &FlashPermission::default());
    assert_eq!(action.action, ActionKind::Skip);
    assert!(!action.action.is_change());
    let reasons = texts(&action);
    assert_eq!(reasons[0], "never flashed by this fleet");
    assert!(reasons[1].contains("--flash sd1"), "{reasons:?}");
    // Another device's permission is no permission for this one.
    let other = FlashPermission {
        all: false,
        devices: vec!["sd2".into()],
    };
    assert_eq!(
        plan_it(&built(), &wanted(), &other).action,
        ActionKind::Skip
    );
}

#[test]
fn a_device_carrying_the_image_is_up_to_date_and_a_new_image_replaces_it() {
    let mut recorded = built();
    flashed(&mut recorded, SHA_A);
    let action = plan_it(&recorded, &wanted(), &FlashPermission::all());
    assert_eq!(action.action, ActionKind::NoOp, "{:?}", action.reasons);
    assert!(action.reasons.is_empty());

    flashed(&mut recorded, SHA_B);
    let action = plan_it(&recorded, &wanted(), &FlashPermission::all());
    assert_eq!(action.action, ActionKind::Replace);
    assert_eq!(action.previous_key.as_deref(), Some(SHA_B));
    assert_eq!(
        texts(&action),
        [
            "its image changed since the last flash: it carries bbbbbbbbbbbb, the fleet wants aaaaaaaaaaaa"
        ]
    );

    // A rebuild: the artifact is known only after the build.
    let mut rebuild = unchanged_build();
    rebuild.action = ActionKind::Replace;
    let action = flash_action(
        "lab",
        &wanted(),
        &recorded,
        Some(&rebuild),
        &FlashPermission::all(),
    );
    assert_eq!(
        (action.action, action.key.clone()),
        (ActionKind::Replace, None)
    );
    assert_eq!(
        texts(&action),
        ["its image will be rebuilt (artifact known after build)"]
    );
}

#[test]
fn unfinished_failed_and_suspect_devices_are_flashed_again() {
    let cases = [
        (FlashStatus::InProgress, None, "flash #7 did not complete"),
        (FlashStatus::Failed, None, "flash #7 failed"),
        (FlashStatus::Interrupted, None, "flash #7 was interrupted"),
        (
            FlashStatus::VerifyFailed,
            Some(7),
            "flash #7 read back different bytes",
        ),
        (
            FlashStatus::Succeeded,
            Some(5),
            "the device is suspect since flash #5",
        ),
    ];
    for (status, suspect_since, expected) in cases {
        let mut recorded = built();
        // A flash that did not succeed removed the pointer; a later success set it again.
        if status == FlashStatus::Succeeded {
            flashed(&mut recorded, SHA_A);
        }
        recorded.device_states.insert(
            "sd1".into(),
            RecordedDeviceState {
                last_flash_id: 7,
                last_status: status,
                suspect_since,
            },
        );
        let action = plan_it(&recorded, &wanted(), &FlashPermission::all());
        assert_eq!(action.action, ActionKind::Replace, "{status:?}");
        let reasons = texts(&action);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with(expected), "{reasons:?}");
        let full = suspect_since.is_some();
        assert_eq!(
            action.details["verify"] == "full (the device is suspect)",
            full,
            "{status:?}"
        );
    }
}

#[test]
fn an_absent_device_is_skipped_unless_named() {
    let mut absent = wanted();
    absent.present = false;
    let action = plan_it(&built(), &absent, &FlashPermission::all());
    assert_eq!(action.action, ActionKind::Skip);
    assert!(
        texts(&action)[1].contains("does not exist"),
        "{:?}",
        texts(&action)
    );
    let named = FlashPermission {
        all: false,
        devices: vec!["sd1".into()],
    };
    let action = plan_it(&built(), &absent, &named);
    assert_eq!(
        action.action,
        ActionKind::Create,
        "named: it runs and fails"
    );
    assert!(texts(&action)[1].contains("device_not_found"));
    // An absent device that needs nothing is simply up to date.
    let mut recorded = built();
    flashed(&mut recorded, SHA_A);
    assert_eq!(
        plan_it(&recorded, &absent, &FlashPermission::all()).action,
        ActionKind::NoOp
    );
}

#[test]
fn an_image_kind_the_build_lacks_or_cannot_choose_is_a_skip() {
    let mut unsure = wanted();
    unsure.filesystem = None;
    let action = plan_it(&built(), &unsure, &FlashPermission::all());
    assert_eq!(action.action, ActionKind::Skip);
    assert!(
        texts(&action)[0].contains("2 `factory` images"),
        "{:?}",
        texts(&action)
    );
    let mut missing = wanted();
    missing.image = "sysupgrade".into();
    let action = plan_it(&built(), &missing, &FlashPermission::all());
    assert_eq!(action.action, ActionKind::Skip);
    assert!(texts(&action)[0].contains("no `sysupgrade` image"));
}
