//! The pure heart of `plan`: compare desired with recorded and decide every action.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

use super::flash::flash_action;
pub use super::flash::{DesiredFlash, RecordedDeviceState};
use super::model::{
    Action, ActionKind, FORMAT_VERSION, Fingerprint, FlashPermission, Plan, Resource,
};
use crate::key::{BuildInputs, BuilderPin, Reason, short_hash};
use crate::state::ArtifactRef;
use crate::triple::Triple;

/// An Image Builder the fleet needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredBuilder {
    pub pin: BuilderPin,
    /// The archive file name from the lock, when pinned.
    pub archive: Option<String>,
}

/// One profile's build.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredBuild {
    pub profile_id: String,
    pub device_id: String,
    pub inputs: BuildInputs,
    /// `build_defaults.rebuild_if_cached`: when this profile's build runs, a build recorded
    /// before the run is not reused.
    pub rebuild_if_cached: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub fleet: String,
    pub builders: Vec<DesiredBuilder>,
    pub builds: Vec<DesiredBuild>,
    pub flashes: Vec<DesiredFlash>,
    /// Which devices this run may write. A wanted flash it does not allow is `skip` (shown
    /// with its reason) and does not count as a pending change.
    pub allow_flash: FlashPermission,
}

/// An Image Builder as the state store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedBuilder {
    pub archive_sha256: String,
    pub ready: bool,
    /// Why a cached builder must be fetched (or verified) again before use, if it must.
    pub trouble: Option<String>,
}

/// The build a fleet profile last applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedBuild {
    pub key: String,
    /// The inputs recorded with the build (absent if the record is gone).
    pub inputs: Option<BuildInputs>,
    /// The build succeeded and every artifact is still in the store.
    pub usable: bool,
    /// Artifacts of the build.
    pub artifacts: Vec<ArtifactRef>,
}

/// What a device last received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDevice {
    pub artifact_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recorded {
    /// Keyed by `release/target/subtarget`.
    pub builders: BTreeMap<Triple, RecordedBuilder>,
    /// Keyed by profile id (this fleet's pointers).
    pub builds: BTreeMap<String, RecordedBuild>,
    /// Keyed by device id (this fleet's pointers).
    pub devices: BTreeMap<String, RecordedDevice>,
    /// Keyed by device id: the device records of the fleet's devices (`fleet:<fleet>/<id>`).
    pub device_states: BTreeMap<String, RecordedDeviceState>,
    /// Keys of successful recorded builds (of any profile or fleet) whose artifacts are in
    /// the store, among the keys the fleet wants: a changed profile with such a key reuses it.
    pub reusable: BTreeSet<String>,
}

pub(crate) fn build_address(fleet: &str, profile_id: &str) -> String {
    format!("build.{fleet}.{profile_id}")
}

pub(crate) fn flash_address(device_id: &str) -> String {
    format!("flash.{device_id}")
}

fn reason(field: &str, text: impl Into<String>) -> Reason {
    Reason {
        field: field.to_string(),
        text: text.into(),
        old: Value::Null,
        new: Value::Null,
    }
}

fn action(address: String, resource: Resource, kind: ActionKind) -> Action {
    Action {
        address,
        resource,
        action: kind,
        key: None,
        previous_key: None,
        reasons: Vec::new(),
        depends_on: Vec::new(),
        same_inputs_as: None,
        cache_hit: false,
        profile_id: None,
        device_id: None,
        builder: None,
        inputs: None,
        details: BTreeMap::new(),
        packages: None,
    }
}

/// Decides every action. Order: builders, builds, flashes, removals; each sorted by address.
pub fn diff(desired: &Desired, recorded: &Recorded, fingerprint: Fingerprint) -> Plan {
    let mut actions: Vec<Action> = desired
        .builders
        .iter()
        .map(|builder| builder_action(builder, recorded))
        .collect();
    let mut builds: Vec<Action> = desired
        .builds
        .iter()
        .map(|build| build_action(&desired.fleet, build, recorded))
        .collect();
    share_identical_builds(&mut builds, desired, recorded);
    let flashes: Vec<Action> = desired
        .flashes
        .iter()
        .map(|flash| {
            let build_address = build_address(&desired.fleet, &flash.profile_id);
            let build = builds.iter().find(|action| action.address == build_address);
            flash_action(&desired.fleet, flash, recorded, build, &desired.allow_flash)
        })
        .collect();
    actions.extend(builds);
    actions.extend(flashes);
    actions.extend(removals(desired, recorded));
    let summary = Plan::summarize(&actions);
    Plan {
        format_version: FORMAT_VERSION.to_string(),
        fleet: desired.fleet.clone(),
        actions,
        summary,
        fingerprint,
        offline_needs: Vec::new(),
        notices: Vec::new(),
        selection: None,
        allow_flash: desired.allow_flash.clone(),
    }
}

/// One build per key: among the changing builds with the same key, the first (in fleet
/// order) builds and the others depend on it and reuse its result. A changing build whose
/// key a recorded build already has reuses that, unless `rebuild_if_cached` asks for a fresh
/// build, which then also serves every other profile with that key in this run.
fn share_identical_builds(builds: &mut [Action], desired: &Desired, recorded: &Recorded) {
    let mut first_of_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut fresh_keys: BTreeSet<String> = BTreeSet::new();
    for (action, build) in builds.iter().zip(&desired.builds) {
        if let (Some(key), true) = (&action.key, build.rebuild_if_cached) {
            fresh_keys.insert(key.clone());
        }
    }
    for index in 0..builds.len() {
        let action = &builds[index];
        let Some(key) = action.key.clone().filter(|_| action.action.is_change()) else {
            continue;
        };
        match first_of_key.get(&key) {
            Some(&first) => {
                let primary = builds[first].address.clone();
                let action = &mut builds[index];
                action.depends_on.push(primary.clone());
                action.same_inputs_as = Some(primary);
                action.cache_hit = true;
            }
            None => {
                first_of_key.insert(key.clone(), index);
                builds[index].cache_hit =
                    recorded.reusable.contains(&key) && !fresh_keys.contains(&key);
            }
        }
    }
}

fn builder_action(builder: &DesiredBuilder, recorded: &Recorded) -> Action {
    let address = builder.pin.triple.address();
    let wanted = builder.pin.archive_sha256.clone();
    let existing = recorded.builders.get(&builder.pin.triple);
    let (kind, why) = match (&wanted, existing) {
        (None, _) => (
            ActionKind::Create,
            "not pinned in imagegen.lock; archive and sha256 known after fetch".to_string(),
        ),
        (Some(_), None) => (
            ActionKind::Create,
            "not in the Image Builder cache".to_string(),
        ),
        (Some(sha), Some(record)) if &record.archive_sha256 != sha => (
            ActionKind::Replace,
            format!(
                "imagegen.lock pins sha256 {} but the cache holds {}",
                short_hash(sha),
                short_hash(&record.archive_sha256)
            ),
        ),
        (Some(_), Some(record)) if record.trouble.is_some() => (
            ActionKind::Replace,
            record.trouble.clone().unwrap_or_default(),
        ),
        (Some(_), Some(record)) if !record.ready => (
            ActionKind::Create,
            "a previous fetch did not complete".to_string(),
        ),
        (Some(_), Some(_)) => (ActionKind::NoOp, String::new()),
    };
    let mut result = action(address, Resource::Builder, kind);
    result.builder = Some(builder.pin.triple.clone());
    result.key = wanted;
    result.previous_key = existing.map(|record| record.archive_sha256.clone());
    if !why.is_empty() {
        result.reasons.push(reason("builder", why));
    }
    if let Some(archive) = &builder.archive {
        result.details.insert("archive".into(), archive.clone());
    }
    if let Some(version_code) = &builder.pin.version_code {
        result
            .details
            .insert("version_code".into(), version_code.clone());
    }
    result
}

fn build_action(fleet: &str, build: &DesiredBuild, recorded: &Recorded) -> Action {
    let key = build.inputs.key().map(|key| key.0);
    let previous = recorded.builds.get(&build.profile_id);
    let (kind, reasons) = match previous {
        None => (
            ActionKind::Create,
            vec![reason("profile", "not built for this fleet yet")],
        ),
        Some(old) if Some(&old.key) == key.as_ref() && old.usable => (ActionKind::NoOp, Vec::new()),
        Some(old) if Some(&old.key) == key.as_ref() => (
            ActionKind::Replace,
            vec![reason(
                "artifacts",
                "recorded build or its artifacts are missing from the store",
            )],
        ),
        Some(old) => (ActionKind::Replace, explain_rebuild(build, old)),
    };
    let builder = build.inputs.builder.triple.address();
    let mut result = action(
        build_address(fleet, &build.profile_id),
        Resource::Build,
        kind,
    );
    result.key = key;
    result.previous_key = previous.map(|old| old.key.clone());
    result.reasons = reasons;
    result.profile_id = Some(build.profile_id.clone());
    result.device_id = Some(build.device_id.clone());
    result.inputs = Some(build.inputs.clone());
    result.details.insert(
        "imagebuilder_profile".into(),
        build.inputs.imagebuilder_profile.clone(),
    );
    result.depends_on.push(builder);
    result
}

fn explain_rebuild(build: &DesiredBuild, old: &RecordedBuild) -> Vec<Reason> {
    match &old.inputs {
        Some(old_inputs) => {
            let reasons = build.inputs.explain_against(old_inputs);
            if reasons.is_empty() {
                vec![reason("key", "build key changed")]
            } else {
                reasons
            }
        }
        None => vec![reason(
            "record",
            "the recorded build is gone from the state store",
        )],
    }
}

/// Pointers recorded for profiles that left the fleet: forget them (artifacts stay until gc).
fn removals(desired: &Desired, recorded: &Recorded) -> Vec<Action> {
    recorded
        .builds
        .iter()
        .filter(|(profile_id, _)| !desired.builds.iter().any(|build| &build.profile_id == *profile_id))
        .map(|(profile_id, old)| {
            let mut result = action(
                build_address(&desired.fleet, profile_id),
                Resource::Build,
                ActionKind::Remove,
            );
            result.previous_key = Some(old.key.clone());
            result.profile_id = Some(profile_id.clone());
            result.reasons.push(reason(
                "profile",
                "no longer in the fleet; its record is forgotten, artifacts stay until `imagegen gc`",
            ));
            result
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{ACTION_SCHEMA_VERSION, ImageOptions, OverlayInputs};

    fn pin(sha: Option<&str>) -> BuilderPin {
        BuilderPin {
            triple: Triple::new("23.05.4", "ath79", "generic"),
            archive_sha256: sha.map(String::from),
            version_code: None,
        }
    }

    fn inputs(sha: Option<&str>, packages: &[&str]) -> BuildInputs {
        BuildInputs {
            schema: ACTION_SCHEMA_VERSION,
            builder: pin(sha),
            imagebuilder_profile: "tplink_archer-c7-v2".into(),
            packages: packages.iter().map(|name| name.to_string()).collect(),
            packages_remove: Vec::new(),
            overlay: OverlayInputs::default(),
            options: ImageOptions::default(),
            feeds: Vec::new(),
        }
    }

    fn desired(sha: Option<&str>, packages: &[&str]) -> Desired {
        Desired {
            fleet: "home".into(),
            builders: vec![DesiredBuilder {
                pin: pin(sha),
                archive: None,
            }],
            builds: vec![DesiredBuild {
                profile_id: "ap".into(),
                device_id: "archer-c7".into(),
                inputs: inputs(sha, packages),
                rebuild_if_cached: false,
            }],
            flashes: vec![DesiredFlash {
                device_id: "sd1".into(),
                profile_id: "ap".into(),
                path: "/dev/sdz".into(),
                image: "sysupgrade".into(),
                filesystem: None,
                verify: crate::manifest::VerifyMode::Full,
                wipe: false,
                present: true,
            }],
            allow_flash: FlashPermission::all(),
        }
    }

    fn applied(desired: &Desired) -> Recorded {
        let build = &desired.builds[0];
        let mut recorded = Recorded::default();
        recorded.builders.insert(
            build.inputs.builder.triple.clone(),
            RecordedBuilder {
                archive_sha256: build
                    .inputs
                    .builder
                    .archive_sha256
                    .clone()
                    .unwrap_or_default(),
                ready: true,
                trouble: None,
            },
        );
        recorded.builds.insert(
            "ap".into(),
            RecordedBuild {
                key: build.inputs.key().map(|key| key.0).unwrap_or_default(),
                inputs: Some(build.inputs.clone()),
                usable: true,
                artifacts: vec![ArtifactRef {
                    sha256: "ab".repeat(32),
                    name: "ap-sysupgrade.bin".into(),
                    kind: "sysupgrade".into(),
                    filesystem: Some("squashfs".into()),
                    size: 1,
                }],
            },
        );
        recorded.devices.insert(
            "sd1".into(),
            RecordedDevice {
                artifact_sha256: "ab".repeat(32),
            },
        );
        recorded
    }

    fn kinds(plan: &Plan) -> Vec<(String, ActionKind)> {
        plan.actions
            .iter()
            .map(|a| (a.address.clone(), a.action))
            .collect()
    }

    #[test]
    fn empty_state_creates_everything_in_dependency_order() {
        let plan = diff(
            &desired(Some(&"11".repeat(32)), &["luci"]),
            &Recorded::default(),
            Fingerprint::default(),
        );
        assert_eq!(
            kinds(&plan),
            vec![
                (
                    "builder.23.05.4/ath79/generic".to_string(),
                    ActionKind::Create
                ),
                ("build.home.ap".to_string(), ActionKind::Create),
                ("flash.sd1".to_string(), ActionKind::Create),
            ]
        );
        assert_eq!(
            plan.actions[1].depends_on,
            vec!["builder.23.05.4/ath79/generic"]
        );
        assert_eq!(plan.actions[2].depends_on, vec!["build.home.ap"]);
        assert!(super::super::PlanGraph::new(&plan).is_ok());
        assert_eq!(plan.summary.changes(), 3);
    }

    #[test]
    fn applied_state_is_all_no_op() {
        let wanted = desired(Some(&"11".repeat(32)), &["luci"]);
        let plan = diff(&wanted, &applied(&wanted), Fingerprint::default());
        assert!(
            plan.actions.iter().all(|a| a.action == ActionKind::NoOp),
            "{plan:#?}"
        );
        assert!(!plan.has_changes());
        // The graph stays whole: an unchanged dependency still counts as one.
        assert_eq!(
            plan.action("build.home.ap").map(|a| a.depends_on.clone()),
            Some(vec!["builder.23.05.4/ath79/generic".to_string()])
        );
    }

    fn twin(profile_id: &str, rebuild_if_cached: bool) -> DesiredBuild {
        DesiredBuild {
            profile_id: profile_id.into(),
            device_id: "archer-c7".into(),
            inputs: inputs(Some(&"11".repeat(32)), &["luci"]),
            rebuild_if_cached,
        }
    }

    #[test]
    fn identical_keys_build_once_and_the_others_reuse_it() {
        let mut wanted = desired(Some(&"11".repeat(32)), &["luci"]);
        wanted.builds.push(twin("ap2", false));
        wanted.builds.push(twin("ap3", false));
        let plan = diff(&wanted, &Recorded::default(), Fingerprint::default());
        let ap = plan.action("build.home.ap").expect("ap");
        assert_eq!((ap.same_inputs_as.as_deref(), ap.cache_hit), (None, false));
        for other in ["build.home.ap2", "build.home.ap3"] {
            let action = plan.action(other).expect("twin");
            assert_eq!(action.key, ap.key);
            assert_eq!(action.same_inputs_as.as_deref(), Some("build.home.ap"));
            assert!(action.cache_hit);
            assert!(action.depends_on.contains(&"build.home.ap".to_string()));
        }
        assert_eq!((plan.summary.build, plan.summary.reuse), (3, 2));
        let text = super::super::render_text(&plan, false);
        assert!(text.contains("same inputs as build.home.ap"), "{text}");
        assert!(text.contains("3 to build (2 reused)"), "{text}");
    }

    #[test]
    fn a_recorded_key_is_reused_unless_rebuild_if_cached() {
        let mut wanted = desired(Some(&"11".repeat(32)), &["luci"]);
        wanted.builds[0].profile_id = "new".into();
        wanted.flashes.clear();
        let mut recorded = Recorded::default();
        let key = wanted.builds[0].inputs.key().map(|key| key.0).expect("key");
        recorded.reusable.insert(key.clone());
        let plan = diff(&wanted, &recorded, Fingerprint::default());
        let action = plan.action("build.home.new").expect("new");
        assert_eq!(action.action, ActionKind::Create);
        assert!(action.cache_hit);
        wanted.builds.push(twin("fresh", true));
        let plan = diff(&wanted, &recorded, Fingerprint::default());
        assert!(!plan.action("build.home.new").expect("new").cache_hit);
        let fresh = plan.action("build.home.fresh").expect("fresh");
        assert_eq!(fresh.same_inputs_as.as_deref(), Some("build.home.new"));
    }

    #[test]
    fn package_change_rebuilds_with_reason_and_reflashes() {
        let before = desired(Some(&"11".repeat(32)), &["luci"]);
        let after = desired(Some(&"11".repeat(32)), &["collectd", "luci"]);
        let plan = diff(&after, &applied(&before), Fingerprint::default());
        let build = plan.action("build.home.ap").expect("build");
        assert_eq!(build.action, ActionKind::Replace);
        let texts: Vec<&str> = build.reasons.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, vec!["packages: +collectd"]);
        let flash = plan.action("flash.sd1").expect("flash");
        assert_eq!(flash.action, ActionKind::Replace);
        assert_eq!(flash.key, None);
        assert_eq!(
            plan.action("builder.23.05.4/ath79/generic")
                .map(|a| a.action),
            Some(ActionKind::NoOp)
        );
    }

    #[test]
    fn unpinned_builder_means_key_known_after_fetch() {
        let plan = diff(
            &desired(None, &[]),
            &Recorded::default(),
            Fingerprint::default(),
        );
        assert_eq!(plan.actions[0].key, None);
        assert_eq!(plan.actions[1].key, None);
        let text = super::super::render_text(&plan, false);
        assert!(text.contains("key: (known after fetch)"), "{text}");
    }

    #[test]
    fn respun_builder_is_fetched_again_and_explained() {
        let before = desired(Some(&"11".repeat(32)), &["luci"]);
        let after = desired(Some(&"22".repeat(32)), &["luci"]);
        let plan = diff(&after, &applied(&before), Fingerprint::default());
        assert_eq!(plan.actions[0].action, ActionKind::Replace);
        let build = plan.action("build.home.ap").expect("build");
        assert_eq!(build.reasons[0].field, "builder");
        assert!(
            build.reasons[0].text.contains("re-spun"),
            "{:?}",
            build.reasons
        );
    }

    #[test]
    fn flashes_are_skipped_unless_allowed() {
        let mut wanted = desired(Some(&"11".repeat(32)), &["luci"]);
        wanted.allow_flash = FlashPermission::default();
        let plan = diff(&wanted, &Recorded::default(), Fingerprint::default());
        let flash = plan.action("flash.sd1").expect("flash");
        assert_eq!(flash.action, ActionKind::Skip);
        assert!(
            flash.reasons[0].text.contains("never flashed"),
            "{:?}",
            flash.reasons
        );
        assert_eq!(plan.summary.changes(), 2);
        assert_eq!(plan.summary.skip, 1);
    }

    #[test]
    fn profile_gone_is_forgotten() {
        let before = desired(Some(&"11".repeat(32)), &["luci"]);
        let mut after = before.clone();
        after.builds.clear();
        after.flashes.clear();
        let plan = diff(&after, &applied(&before), Fingerprint::default());
        assert_eq!(
            plan.action("build.home.ap").map(|a| a.action),
            Some(ActionKind::Remove)
        );
        assert_eq!(plan.summary.remove, 1);
    }

    #[test]
    fn text_rendering_snapshot() {
        let before = desired(Some(&"11".repeat(32)), &["luci"]);
        let after = desired(Some(&"11".repeat(32)), &["collectd", "luci"]);
        let plan = diff(&after, &applied(&before), Fingerprint::default());
        insta::assert_snapshot!(super::super::render_text(&plan, false));
    }
}
