//! `apply` (complete the lock, plan, run what changed) and `build` (build or reuse some
//! profiles now), with where every resulting image can be taken from.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Workspace;
use super::plan::{PlanRequest, check_saved_plan, plan_with};
use crate::apply::{self as applying, ApplyOptions, ApplyReport};
use crate::error::{Error, ErrorCode, Result};
use crate::exec::{OutcomeKind, Reporter};
use crate::lock::{self, Change, LockFile, LockReport, Upgrade};
use crate::manifest::ProfileFilter;
use crate::plan::{ActionKind, FlashPermission, Plan, Resource, Selection};
use crate::state::{ArtifactRef, Store};

/// How a frontend follows and steers a run: the cancel flag (Ctrl-C, an HTTP cancel), the
/// executor's progress events, and a look at the plan before anything runs.
pub struct RunHooks<'a> {
    pub cancel: Arc<AtomicBool>,
    pub reporter: &'a dyn Reporter,
    /// Called once with the plan about to run (not called when nothing needs to run); an
    /// error stops the run before any step starts. The CLI shows the plan here and, on a
    /// terminal, asks before a run writes devices.
    pub on_plan: &'a dyn Fn(&Plan) -> Result<()>,
}

impl<'a> RunHooks<'a> {
    /// Hooks that only report events (no cancel source, no plan preview).
    pub fn reporting(reporter: &'a dyn Reporter) -> RunHooks<'a> {
        RunHooks {
            cancel: Arc::new(AtomicBool::new(false)),
            reporter,
            on_plan: &|_| Ok(()),
        }
    }
}

/// Options of `apply`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApplyRequest {
    /// A plan saved with `plan --out` (or returned by `POST /plan`): applied exactly, or
    /// refused with `stale_plan` when planning now gives different actions.
    #[serde(rename = "plan")]
    pub saved_plan: Option<Plan>,
    /// Fail instead of adding missing `imagegen.lock` entries.
    pub locked: bool,
    /// Run everything that does not depend on a failed step.
    pub keep_going: bool,
    /// Apply only part of the fleet (`--target`, `--profile`, ...); a saved plan carries its
    /// own selection, so both together are refused.
    pub selection: Selection,
    /// Which fleet devices the run may write (`apply --flash [DEVICE_ID]`); none by default,
    /// so wanted flashes stay `skip`. A saved plan carries its own; both together are
    /// refused. A server refuses it unless started with `--allow-flash`.
    pub allow_flash: FlashPermission,
}

impl ApplyRequest {
    /// The devices this run may write: the saved plan's permission, else the request's.
    pub fn flash_permission(&self) -> &FlashPermission {
        match &self.saved_plan {
            Some(saved) => &saved.allow_flash,
            None => &self.allow_flash,
        }
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplyOutcome {
    /// The plan that was carried out (or found to have no changes).
    pub plan: Plan,
    /// Entries added to `imagegen.lock` first, when any were missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<LockReport>,
    /// The run; `None` when the plan had no changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ApplyReport>,
    /// Where each applied profile's images are.
    pub images: Vec<ProfileImages>,
}

impl ApplyOutcome {
    /// True when nothing failed (a plan without changes counts as success).
    pub fn is_success(&self) -> bool {
        self.report.as_ref().is_none_or(ApplyReport::is_success)
    }

    /// Why the run did not succeed, as one error (see [`run_failure`]); `None` on success.
    pub fn failure(&self) -> Option<Error> {
        self.report.as_ref().and_then(run_failure)
    }
    /// The last line of `apply --json` (and of `GET /jobs/{id}/events`): `{"event":
    /// "summary", ...}` with the report and images, or the plan when nothing had to run.
    pub fn summary_event(&self) -> serde_json::Value {
        match &self.report {
            Some(report) => summary_event(serde_json::json!({
                "report": report,
                "images": &self.images,
            })),
            None => summary_event(serde_json::json!({
                "plan": &self.plan,
                "images": &self.images,
            })),
        }
    }
}

/// `{"event": "summary"}` followed by the fields of `value`.
fn summary_event(value: serde_json::Value) -> serde_json::Value {
    let mut line = serde_json::json!({ "event": "summary" });
    if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), value) {
        line.extend(fields);
    }
    line
}

/// One image (or other artifact) of a profile and where to take it from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactLocation {
    #[serde(flatten)]
    pub artifact: ArtifactRef,
    /// The blob in the content-addressed store (always there after a successful build).
    #[schema(value_type = String)]
    pub store_path: PathBuf,
    /// The copy in the profile's `bin_dir`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub bin_dir_path: Option<PathBuf>,
}

/// A profile's current images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileImages {
    pub profile_id: String,
    pub build_key: String,
    pub artifacts: Vec<ArtifactLocation>,
}

/// Completes the lock (unless `locked`), plans, checks a saved plan against the current one,
/// and runs the changes. Holds the state store for the whole run.
pub fn apply(
    workspace: &Workspace,
    request: &ApplyRequest,
    hooks: &RunHooks,
) -> Result<ApplyOutcome> {
    let selection = match &request.saved_plan {
        Some(_) if !request.selection.is_everything() => {
            return Err(Error::new(
                ErrorCode::Validation,
                format!(
                    "`{}` cannot narrow a saved plan: it applies exactly the selection it was made with",
                    request.selection.describe()
                ),
            )
            .with_help("make a new plan with the selection: `imagegen plan --target ... --out FILE`"));
        }
        Some(saved) => saved.selection.clone().unwrap_or_default(),
        None => request.selection.clone(),
    };
    if request.saved_plan.is_some() && !request.allow_flash.is_none() {
        return Err(Error::new(
            ErrorCode::Validation,
            format!(
                "`{}` cannot change a saved plan: it writes exactly the devices it was made with",
                request.allow_flash.describe()
            ),
        )
        .with_help(
            "make a new plan with the permission: `imagegen plan --flash DEVICE_ID --out FILE`",
        ));
    }
    // The store first: while this apply completes the lock, another one must already see
    // the state as taken (and not race it on `imagegen.lock`).
    let store = workspace.store("imagegen apply")?;
    let locked = match (&request.saved_plan, request.locked) {
        (None, false) => lock_missing(workspace)?,
        _ => None,
    };
    let plan_request = PlanRequest {
        locked: request.locked || request.saved_plan.is_some(),
        selection,
        allow_flash: request.flash_permission().clone(),
    };
    let current = plan_with(workspace, &plan_request, &store)?;
    if let Some(saved) = &request.saved_plan {
        check_saved_plan(saved, &current)?;
    }
    let report = match current.has_changes() {
        true => Some(run(
            workspace,
            &store,
            &current,
            request.keep_going,
            BTreeSet::new(),
            hooks,
        )?),
        false => None,
    };
    let profiles = planned_profiles(&current);
    let images = images_of(workspace, &store, &profiles)?;
    Ok(ApplyOutcome {
        plan: current,
        locked,
        report,
        images,
    })
}

/// The profiles whose builds a plan covers, in plan order.
fn planned_profiles(plan: &Plan) -> Vec<String> {
    let mut seen = BTreeSet::new();
    plan.actions
        .iter()
        .filter(|action| action.resource == Resource::Build && action.action != ActionKind::Remove)
        .filter_map(|action| action.profile_id.clone())
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// Options of `build`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BuildRequest {
    /// What to build: profile ids (`profiles`), tags, release, Image Builder, or build
    /// addresses (`targets`); the same selection `plan` and `apply` take.
    #[serde(flatten)]
    pub selection: Selection,
    /// A `profiles list` style filter (tag, release, target, subtarget, device) that further
    /// narrows the selected profiles, for API clients that select that way.
    #[serde(default)]
    pub filter: ProfileFilter,
    /// Rebuild even when a recorded build with the same key exists.
    #[serde(default)]
    pub force: bool,
    /// Build the other profiles when one fails.
    #[serde(default)]
    pub keep_going: bool,
}

/// The selection of the profiles `ids` (all of them when empty) that `filter` passes, for
/// frontends that select with a [`ProfileFilter`] (`profiles list` style: tag, release,
/// target, subtarget, device). Unknown ids stay in, so the build names them.
pub fn select_profiles(
    workspace: &Workspace,
    ids: &[String],
    filter: &ProfileFilter,
) -> Result<Selection> {
    if *filter == ProfileFilter::default() {
        return Ok(Selection {
            profiles: ids.to_vec(),
            ..Selection::default()
        });
    }
    let fleet = workspace.fleet()?;
    let profiles: Vec<String> = fleet
        .profiles
        .iter()
        .map(|loaded| &loaded.profile)
        .filter(|profile| {
            filter.matches(profile) && (ids.is_empty() || ids.contains(&profile.profile_id))
        })
        .map(|profile| profile.profile_id.clone())
        .chain(ids.iter().filter(|id| fleet.profile(id).is_none()).cloned())
        .collect();
    if profiles.is_empty() {
        return Err(Error::new(
            ErrorCode::ProfileNotFound,
            "no profile matches the selection",
        )
        .with_help("list the profiles and their tags with `imagegen profiles list`"));
    }
    Ok(Selection {
        profiles,
        ..Selection::default()
    })
}

/// How one profile's build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildResult {
    /// Built now.
    Built,
    /// A recorded build with the same key was reused (now, or already applied).
    Reused,
    Failed,
    Skipped,
    Cancelled,
}

/// One profile's result of `build`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfileBuild {
    pub profile_id: String,
    pub build_key: Option<String>,
    pub result: BuildResult,
    pub cache_hit: bool,
    pub artifacts: Vec<ArtifactLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
}

/// What `build` did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BuildOutcome {
    pub profiles: Vec<ProfileBuild>,
    /// The run, when anything had to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ApplyReport>,
}

impl BuildOutcome {
    pub fn is_success(&self) -> bool {
        self.report.as_ref().is_none_or(ApplyReport::is_success)
    }

    /// Why the run did not succeed, as one error (see [`run_failure`]); `None` on success.
    pub fn failure(&self) -> Option<Error> {
        self.report.as_ref().and_then(run_failure)
    }

    /// The last line of `build --json` (and of a build job's events).
    pub fn summary_event(&self) -> serde_json::Value {
        summary_event(serde_json::json!({
            "profiles": &self.profiles,
            "report": &self.report,
        }))
    }
}

/// The one error that best explains why a run did not succeed, for frontends that report a
/// single failure (an MCP tool error, an HTTP job's status): the first failed step's error
/// (with its log), else the run's own failure, an interruption, or why steps were skipped.
pub fn run_failure(report: &ApplyReport) -> Option<Error> {
    if report.is_success() {
        return None;
    }
    let failed = report.steps.iter().find_map(|step| {
        let error = step.error.clone()?;
        Some(match (&error.log_path, &step.log_path) {
            (None, Some(log_path)) => error.with_log(log_path.clone()),
            _ => error,
        })
    });
    if failed.is_some() {
        return failed;
    }
    if let Some(error) = &report.run.error {
        return Some(error.clone());
    }
    if report.run.interrupted {
        return Some(
            Error::new(ErrorCode::Interrupted, "the run was interrupted")
                .with_help("finished steps are recorded; run it again to continue"),
        );
    }
    let reason = report
        .steps
        .iter()
        .find_map(|step| step.reason.clone())
        .unwrap_or_else(|| "not every step ran".to_string());
    Some(Error::new(ErrorCode::BuildFailed, reason))
}

/// Builds (or reuses) the images of the selected profiles now: their part of the plan, plus
/// what it depends on (the Image Builders, a build with the same key). Nothing is forgotten
/// or flashed. An unchanged build runs again with `force`, or when its profile sets
/// `build_defaults.rebuild_if_cached` (an explicit build request is what that asks for).
pub fn build(
    workspace: &Workspace,
    request: &BuildRequest,
    hooks: &RunHooks,
) -> Result<BuildOutcome> {
    let fleet = workspace.fleet()?;
    if request.selection.is_everything() && request.filter == ProfileFilter::default() {
        return Err(Error::new(
            ErrorCode::Validation,
            "name the profiles to build, or select them with a filter",
        )
        .with_help("e.g. `imagegen build ap-livingroom` or `imagegen build --tag lab`; `imagegen apply` builds the whole fleet"));
    }
    let selection = Selection {
        profiles: select_profiles(workspace, &request.selection.profiles, &request.filter)?
            .profiles,
        ..request.selection.clone()
    };
    // The store first, so that no other run races this one on `imagegen.lock`.
    let store = workspace.store("imagegen build")?;
    lock_missing(workspace)?;
    let plan_request = PlanRequest {
        locked: false,
        selection,
        allow_flash: FlashPermission::default(),
    };
    let mut plan = plan_with(workspace, &plan_request, &store)?;
    plan.actions
        .retain(|action| action.resource != Resource::Flash && action.action != ActionKind::Remove);
    plan.summary = Plan::summarize(&plan.actions);
    let selected = planned_profiles(&plan);
    if selected.is_empty() {
        return Err(Error::new(
            ErrorCode::Validation,
            format!("`{}` selects no build", request.selection.describe()),
        )
        .with_help("select profiles or `build.` addresses; `imagegen plan` shows every address"));
    }
    let rebuild: BTreeSet<String> = plan
        .actions
        .iter()
        .filter(|action| action.resource == Resource::Build && action.action == ActionKind::NoOp)
        .filter(|action| {
            request.force
                || action
                    .profile_id
                    .as_deref()
                    .and_then(|id| fleet.profile(id))
                    .is_some_and(|loaded| loaded.profile.build_defaults.rebuild_if_cached)
        })
        .map(|action| action.address.clone())
        .collect();
    let up_to_date = plan
        .actions
        .iter()
        .all(|action| action.action == ActionKind::NoOp);
    let report = match up_to_date && rebuild.is_empty() {
        true => None,
        false => Some(run(
            workspace,
            &store,
            &plan,
            request.keep_going,
            rebuild,
            hooks,
        )?),
    };
    let profiles = profile_results(workspace, &store, &selected, &plan, report.as_ref())?;
    Ok(BuildOutcome { profiles, report })
}

/// Per selected profile: the step's outcome when it ran, else the recorded build.
fn profile_results(
    workspace: &Workspace,
    store: &Store,
    selected: &[String],
    plan: &Plan,
    report: Option<&ApplyReport>,
) -> Result<Vec<ProfileBuild>> {
    let current = images_of(workspace, store, selected)?;
    let mut results = Vec::new();
    for profile_id in selected {
        let action = plan.actions.iter().find(|action| {
            action.resource == Resource::Build && action.profile_id.as_ref() == Some(profile_id)
        });
        let step = report.and_then(|report| {
            report
                .steps
                .iter()
                .find(|step| Some(&step.address) == action.map(|action| &action.address))
        });
        let images = current
            .iter()
            .find(|images| &images.profile_id == profile_id);
        let (result, cache_hit) = match step {
            None => (BuildResult::Reused, true),
            Some(step) => match step.outcome {
                OutcomeKind::Succeeded if step.cache_hit => (BuildResult::Reused, true),
                OutcomeKind::Succeeded => (BuildResult::Built, false),
                OutcomeKind::Failed => (BuildResult::Failed, false),
                OutcomeKind::Skipped => (BuildResult::Skipped, false),
                OutcomeKind::Cancelled => (BuildResult::Cancelled, false),
            },
        };
        let succeeded = matches!(result, BuildResult::Built | BuildResult::Reused);
        results.push(ProfileBuild {
            profile_id: profile_id.clone(),
            build_key: action.and_then(|action| action.key.clone()),
            result,
            cache_hit,
            artifacts: images
                .filter(|_| succeeded)
                .map(|images| images.artifacts.clone())
                .unwrap_or_default(),
            log_path: step.and_then(|step| step.log_path.clone()),
            error: step.and_then(|step| step.error.clone()),
        });
    }
    Ok(results)
}

/// Runs a plan's changes (and the unchanged builds named in `rebuild`).
fn run(
    workspace: &Workspace,
    store: &Store,
    plan: &Plan,
    keep_going: bool,
    rebuild: BTreeSet<String>,
    hooks: &RunHooks,
) -> Result<ApplyReport> {
    (hooks.on_plan)(plan)?;
    warn_unverified_builders(store, plan)?;
    let options = ApplyOptions {
        keep_going,
        rebuild,
        cancel: Arc::clone(&hooks.cancel),
    };
    applying::apply(
        workspace.fleet()?,
        &workspace.settings,
        store,
        plan,
        &options,
        hooks.reporter,
    )
}

/// Every run that builds with an Image Builder nobody verified says so (only possible while
/// `verify_signatures` is off: otherwise such a builder is verified first).
fn warn_unverified_builders(store: &Store, plan: &Plan) -> Result<()> {
    let reader = store.read()?;
    let builders: BTreeSet<&crate::triple::Triple> = plan
        .actions
        .iter()
        .filter(|action| action.resource == Resource::Build && action.action.is_change())
        .filter_map(|action| action.inputs.as_ref().map(|inputs| &inputs.builder.triple))
        .collect();
    for triple in builders {
        if reader
            .builder(triple)?
            .is_some_and(|record| record.key_id.is_none())
        {
            tracing::warn!(
                builder = %triple,
                "building with an Image Builder whose signature was never verified"
            );
        }
    }
    Ok(())
}

/// Adds lock entries for Image Builders the fleet uses but `imagegen.lock` does not pin yet.
fn lock_missing(workspace: &Workspace) -> Result<Option<LockReport>> {
    let fleet = workspace.fleet()?;
    let lock = LockFile::read(&fleet.lock_path())?.unwrap_or_default();
    let missing = fleet
        .triples()
        .iter()
        .any(|triple| lock.get(triple).is_none());
    if !missing {
        return Ok(None);
    }
    let report = lock::lock(fleet, &workspace.settings, &Upgrade::Missing)?;
    Ok((report.count(Change::Added) > 0).then_some(report))
}

/// The images of the build a profile's fleet pointer names; `build_not_found` when the
/// profile has none applied yet.
pub(crate) fn current_images(
    workspace: &Workspace,
    store: &Store,
    profile_id: &str,
) -> Result<ProfileImages> {
    let images = images_of(workspace, store, &[profile_id.to_string()])?;
    images.into_iter().next().ok_or_else(|| {
        Error::new(
            ErrorCode::BuildNotFound,
            format!("profile `{profile_id}` has no applied build yet"),
        )
        .with_help(format!(
            "run `imagegen build {profile_id}` or `imagegen apply` first"
        ))
    })
}

/// The current images of some profiles: the build each one's fleet pointer names.
pub(crate) fn images_of(
    workspace: &Workspace,
    store: &Store,
    profile_ids: &[String],
) -> Result<Vec<ProfileImages>> {
    let fleet = workspace.fleet()?;
    let cas = crate::cas::Cas::open(&workspace.settings.artifacts_dir.value)?;
    let reader = store.read()?;
    let mut images = Vec::new();
    for profile_id in profile_ids {
        let Some(pointer) = reader.profile_pointer(&fleet.name, profile_id)? else {
            continue;
        };
        let Some(record) = reader.build(&pointer.build_key)? else {
            continue;
        };
        let bin_dir = fleet
            .profile(profile_id)
            .and_then(|loaded| loaded.profile.bin_dir.as_ref())
            .map(|dir| fleet.root.join(dir));
        let artifacts = record
            .artifacts
            .into_iter()
            .map(|artifact| ArtifactLocation {
                store_path: cas.blob_path(&artifact.sha256),
                bin_dir_path: bin_dir.as_ref().map(|dir| dir.join(&artifact.name)),
                artifact,
            })
            .collect();
        images.push(ProfileImages {
            profile_id: profile_id.clone(),
            build_key: record.key,
            artifacts,
        });
    }
    Ok(images)
}
