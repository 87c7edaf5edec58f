//! The pure heart of `plan`: compare desired with recorded and decide every action.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::model::{Action, ActionKind, FORMAT_VERSION, Fingerprint, Plan, Resource};
use crate::key::{BuildInputs, BuilderPin, Reason, short_hash};
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
}

/// A fleet device that should carry its profile's image.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredFlash {
    pub device_id: String,
    pub profile_id: String,
    pub path: PathBuf,
    /// The image type to write (`combined`, `sysupgrade`, `sdcard`, ...).
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub fleet: String,
    pub builders: Vec<DesiredBuilder>,
    pub builds: Vec<DesiredBuild>,
    pub flashes: Vec<DesiredFlash>,
    /// Whether this run may write to devices. Without it, wanted flashes are `skip`
    /// (shown with their reason) and do not count as pending changes.
    pub allow_flash: bool,
}

/// An Image Builder as the state store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedBuilder {
    pub archive_sha256: String,
    pub ready: bool,
}

/// The build a fleet profile last applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedBuild {
    pub key: String,
    /// The inputs recorded with the build (absent if the record is gone).
    pub inputs: Option<BuildInputs>,
    /// The build succeeded and every artifact is still in the store.
    pub usable: bool,
    /// Artifacts of the build: (image type, sha256).
    pub artifacts: Vec<(String, String)>,
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
    let builder_changes: BTreeMap<String, ActionKind> = actions
        .iter()
        .map(|action| (action.address.clone(), action.action))
        .collect();
    let builds: Vec<Action> = desired
        .builds
        .iter()
        .map(|build| build_action(&desired.fleet, build, recorded, &builder_changes))
        .collect();
    let flashes: Vec<Action> = desired
        .flashes
        .iter()
        .map(|flash| {
            flash_action(
                &desired.fleet,
                flash,
                recorded,
                &builds,
                desired.allow_flash,
            )
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

fn build_action(
    fleet: &str,
    build: &DesiredBuild,
    recorded: &Recorded,
    builder_changes: &BTreeMap<String, ActionKind>,
) -> Action {
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
    if builder_changes
        .get(&builder)
        .is_some_and(|kind| kind.is_change())
    {
        result.depends_on.push(builder);
    }
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

fn flash_action(
    fleet: &str,
    flash: &DesiredFlash,
    recorded: &Recorded,
    builds: &[Action],
    allow_flash: bool,
) -> Action {
    let build_address = build_address(fleet, &flash.profile_id);
    let build = builds.iter().find(|action| action.address == build_address);
    let build_changes = build.is_none_or(|action| action.action != ActionKind::NoOp);
    let artifact = if build_changes {
        None
    } else {
        recorded.builds.get(&flash.profile_id).and_then(|old| {
            old.artifacts
                .iter()
                .find(|(kind, _)| kind == &flash.image)
                .map(|(_, sha)| sha.clone())
        })
    };
    let previous = recorded.devices.get(&flash.device_id);
    let (kind, why) = match (previous, &artifact) {
        (None, _) => (
            ActionKind::Create,
            "never flashed by this fleet".to_string(),
        ),
        (Some(_), None) if build_changes => (
            ActionKind::Replace,
            "its image will be rebuilt (artifact known after build)".to_string(),
        ),
        (Some(_), None) => (
            ActionKind::Skip,
            format!("the build has no `{}` image", flash.image),
        ),
        (Some(old), Some(sha)) if &old.artifact_sha256 != sha => (
            ActionKind::Replace,
            format!(
                "carries {}; the fleet wants {}",
                short_hash(&old.artifact_sha256),
                short_hash(sha)
            ),
        ),
        (Some(_), Some(_)) => (ActionKind::NoOp, String::new()),
    };
    let (kind, why) = if kind.is_change() && !allow_flash {
        (
            ActionKind::Skip,
            format!("{why}; writing devices needs an explicit flash run (not part of apply)"),
        )
    } else {
        (kind, why)
    };
    let mut result = action(flash_address(&flash.device_id), Resource::Flash, kind);
    result.key = artifact;
    result.previous_key = previous.map(|old| old.artifact_sha256.clone());
    if !why.is_empty() {
        result.reasons.push(reason("device", why));
    }
    result.profile_id = Some(flash.profile_id.clone());
    result.device_id = Some(flash.device_id.clone());
    result
        .details
        .insert("path".into(), flash.path.display().to_string());
    result.details.insert("image".into(), flash.image.clone());
    if build_changes {
        result.depends_on.push(build_address);
    }
    result
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
            }],
            flashes: vec![DesiredFlash {
                device_id: "sd1".into(),
                profile_id: "ap".into(),
                path: "/dev/sdz".into(),
                image: "sysupgrade".into(),
            }],
            allow_flash: true,
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
            },
        );
        recorded.builds.insert(
            "ap".into(),
            RecordedBuild {
                key: build.inputs.key().map(|key| key.0).unwrap_or_default(),
                inputs: Some(build.inputs.clone()),
                usable: true,
                artifacts: vec![("sysupgrade".into(), "ab".repeat(32))],
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
        let (graph, _) = plan.graph();
        assert!(petgraph::algo::toposort(&graph, None).is_ok());
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
        assert!(plan.actions.iter().all(|a| a.depends_on.is_empty()));
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
        wanted.allow_flash = false;
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
