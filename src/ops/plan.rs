//! `plan`, and saved plans: writing one, reading one back, and refusing one whose inputs
//! moved since it was made.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Workspace;
use crate::error::{Error, ErrorCode, Result};
use crate::fsutil::write_atomically;
use crate::plan::{self, ActionKind, FlashPermission, Plan, PlanOptions, Selection};
use crate::state::Store;

/// Options of `plan`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PlanRequest {
    /// A missing or outdated lock entry is an error (CI).
    #[serde(default)]
    pub locked: bool,
    /// The part of the fleet to plan (`--target`, `--profile`, ...); empty: all of it.
    #[serde(flatten)]
    pub selection: Selection,
    /// Which fleet devices the plan's `apply` may write (`--flash`); recorded in the plan.
    #[serde(default, skip_serializing_if = "FlashPermission::is_none")]
    pub allow_flash: FlashPermission,
}

/// Computes the plan of the workspace's fleet against its state store.
pub fn plan(workspace: &Workspace, request: &PlanRequest) -> Result<Plan> {
    let store = workspace.store("imagegen plan")?;
    plan_with(workspace, request, &store)
}

/// [`plan`] against a store the caller already holds (apply keeps it locked throughout).
pub(crate) fn plan_with(
    workspace: &Workspace,
    request: &PlanRequest,
    store: &Store,
) -> Result<Plan> {
    let options = PlanOptions {
        locked: request.locked,
        offline: workspace.settings.offline.value,
        selection: request.selection.clone(),
        allow_flash: request.allow_flash.clone(),
    };
    plan::compute_with(workspace.fleet()?, &workspace.settings, &options, store)
}

/// Saves a plan as JSON for `apply PLANFILE` (whole file or nothing).
pub fn save_plan(plan: &Plan, path: &Path) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(plan)
        .map_err(|error| Error::internal(format!("cannot serialize the plan: {error}")))?;
    write_atomically(path, &bytes)
}

/// Reads a plan saved with `plan --out`; refuses another plan format.
pub fn read_saved_plan(path: &Path) -> Result<Plan> {
    let bytes = std::fs::read(path).map_err(|error| {
        let missing = error.kind() == std::io::ErrorKind::NotFound;
        let error = Error::io_user_path("reading", path, error);
        match missing {
            true => error.with_help(
                "save one with `imagegen plan --out FILE`, or run `imagegen apply` without a file",
            ),
            false => error,
        }
    })?;
    let plan: Plan = serde_json::from_slice(&bytes).map_err(|error| {
        Error::new(
            ErrorCode::Validation,
            format!("`{}` is not a saved imagegen plan: {error}", path.display()),
        )
    })?;
    let major = |version: &str| version.split('.').next().map(str::to_string);
    if major(&plan.format_version) != major(plan::FORMAT_VERSION) {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!(
                "`{}` has plan format {}; this imagegen reads {}",
                path.display(),
                plan.format_version,
                plan::FORMAT_VERSION
            ),
        ));
    }
    Ok(plan)
}

/// A saved plan is applied only if planning now (with the saved selection) gives exactly the
/// same actions, keys and dependencies; otherwise the error says what moved.
pub fn check_saved_plan(saved: &Plan, current: &Plan) -> Result<()> {
    type Shape = (String, ActionKind, Option<String>, BTreeSet<String>);
    let shape = |plan: &Plan| -> Vec<Shape> {
        plan.actions
            .iter()
            .map(|action| {
                (
                    action.address.clone(),
                    action.action,
                    action.key.clone(),
                    action.depends_on.iter().cloned().collect(),
                )
            })
            .collect()
    };
    if shape(saved) == shape(current)
        && saved.fleet == current.fleet
        && saved.selection == current.selection
        && saved.allow_flash == current.allow_flash
    {
        return Ok(());
    }
    let mut moved = Vec::new();
    if saved.format_version != current.format_version {
        moved.push("it was made by another imagegen version");
    }
    if saved.fingerprint.fleet != current.fingerprint.fleet {
        moved.push("the fleet files (imagegen.toml or profiles) changed");
    }
    if saved.fingerprint.lock != current.fingerprint.lock {
        moved.push("imagegen.lock changed");
    }
    if saved.fingerprint.state != current.fingerprint.state {
        moved.push("the recorded state changed (another apply ran)");
    }
    if moved.is_empty() {
        moved.push("overlay files changed");
    }
    let saved_shape: BTreeSet<_> = shape(saved).into_iter().collect();
    let differing: Vec<String> = shape(current)
        .into_iter()
        .filter(|item| !saved_shape.contains(item))
        .map(|(address, action, _, _)| format!("{address} ({action:?})"))
        .take(5)
        .collect();
    Err(Error::new(
        ErrorCode::StalePlan,
        format!("the saved plan is stale: {}", moved.join("; ")),
    )
    .with_details(serde_json::json!({ "now_differs": differing }))
    .with_help("run `imagegen plan --out FILE` again and review it"))
}
