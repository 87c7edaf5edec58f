//! `validate`: the fleet's files, overlays and upstream facts, through the same loading path
//! as `plan` ([`crate::plan::prepare`]) but without the state store.

use serde::{Deserialize, Serialize};

use super::Workspace;
use crate::error::{Error, ErrorCode, Result};
use crate::plan::{self, PlanOptions, Prepared};

/// Options of `validate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValidateRequest {
    /// Also require `imagegen.lock` to pin every Image Builder the fleet uses.
    #[serde(default)]
    pub locked: bool,
    /// A check that could not run (mirror unreachable, offline without cached metadata) is
    /// an error instead of a note.
    #[serde(default)]
    pub strict: bool,
}

/// A check `validate` could not run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedCheck {
    /// What was not checked, e.g. "Image Builder profiles, filesystems and image kinds against
    /// upstream profiles.json".
    pub check: String,
    /// The Image Builders (`RELEASE/TARGET/SUBTARGET`) it concerns.
    pub builders: Vec<String>,
    /// The profiles it concerns.
    pub profiles: Vec<String>,
    pub reason: String,
    pub hint: String,
}

/// The result of `validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidateReport {
    pub fleet: String,
    pub profiles: usize,
    pub devices: usize,
    /// Always true in a report: an invalid fleet is an error carrying every problem.
    pub valid: bool,
    /// Checks that did not run; empty when everything was checked.
    pub skipped: Vec<SkippedCheck>,
    /// Facts worth knowing that are not problems (upstream moved since the lock).
    pub notices: Vec<String>,
}

/// Checks the manifest, every profile, every overlay source and (when the mirror or the
/// metadata cache allows) each profile against upstream `profiles.json`.
pub fn validate(workspace: &Workspace, request: &ValidateRequest) -> Result<ValidateReport> {
    let fleet = workspace.fleet()?;
    plan::validate_overlays(fleet)?;
    let settings = &workspace.settings;
    let options = PlanOptions {
        locked: request.locked,
        offline: settings.offline.value,
        ..PlanOptions::default()
    };
    let prepared = plan::prepare(fleet, settings, &options)?;
    let skipped = skipped_checks(fleet, &prepared, settings.offline.value);
    if request.strict && !skipped.is_empty() {
        let reasons: Vec<String> = skipped
            .iter()
            .map(|skip| {
                format!(
                    "{} ({}): {}",
                    skip.check,
                    skip.builders.join(", "),
                    skip.reason
                )
            })
            .collect();
        return Err(Error::new(
            ErrorCode::Precondition,
            format!(
                "`--strict`: not every check could run: {}",
                reasons.join("; ")
            ),
        )
        .with_help(skipped[0].hint.clone()));
    }
    Ok(ValidateReport {
        fleet: fleet.name.clone(),
        profiles: fleet.profiles.len(),
        devices: fleet.devices.len(),
        valid: true,
        skipped,
        notices: notices(fleet, &prepared, settings),
    })
}

fn notices(
    fleet: &crate::manifest::Fleet,
    prepared: &Prepared,
    settings: &crate::settings::Settings,
) -> Vec<String> {
    let mut notices = prepared.upstream.notices();
    notices.extend(plan::verification_notice(settings));
    if fleet.profiles.is_empty() {
        notices.push(
            "the fleet has no profiles yet (its profile directories are empty); add one with `imagegen profiles import FILE`"
                .to_string(),
        );
    }
    notices
}

fn skipped_checks(
    fleet: &crate::manifest::Fleet,
    prepared: &Prepared,
    offline: bool,
) -> Vec<SkippedCheck> {
    let mut skipped = skipped_profile_checks(fleet, prepared, offline);
    skipped.extend(skipped_package_checks(fleet, prepared));
    skipped
}

/// Builders whose packages were not resolved against their feeds.
fn skipped_package_checks(
    fleet: &crate::manifest::Fleet,
    prepared: &Prepared,
) -> Vec<SkippedCheck> {
    prepared
        .upstream
        .packages_unchecked
        .iter()
        .map(|(triple, reason)| SkippedCheck {
            check: "packages against the pinned feed indexes".to_string(),
            builders: vec![triple.to_string()],
            profiles: fleet
                .profiles_of(triple)
                .map(|loaded| loaded.profile.profile_id.clone())
                .collect(),
            reason: reason.clone(),
            hint: "run `imagegen lock` with the mirror reachable: it pins the feeds and caches their indexes for offline checks".to_string(),
        })
        .collect()
}

fn skipped_profile_checks(
    fleet: &crate::manifest::Fleet,
    prepared: &Prepared,
    offline: bool,
) -> Vec<SkippedCheck> {
    let unchecked = &prepared.upstream.unchecked;
    if unchecked.is_empty() {
        return Vec::new();
    }
    let builders: Vec<String> = unchecked.iter().map(ToString::to_string).collect();
    let profiles = fleet
        .profiles
        .iter()
        .filter(|loaded| unchecked.contains(&loaded.profile.triple()))
        .map(|loaded| loaded.profile.profile_id.clone())
        .collect();
    let (reason, hint) = match (&prepared.upstream.unreachable, offline) {
        (Some(why), _) => (
            format!("the mirror is unreachable: {why}"),
            "run `imagegen lock` with the mirror reachable (its metadata is then cached for offline checks), or pass `--offline` to skip upstream checks knowingly".to_string(),
        ),
        (None, true) => (
            "offline, and no cached profiles.json for these Image Builders".to_string(),
            "run `imagegen lock` once online; later offline runs check against the cached metadata".to_string(),
        ),
        (None, false) => (
            "no profiles.json was available".to_string(),
            "run `imagegen lock`".to_string(),
        ),
    };
    vec![SkippedCheck {
        check: "Image Builder profiles, filesystems and image kinds against upstream profiles.json"
            .to_string(),
        builders,
        profiles,
        reason,
        hint,
    }]
}
