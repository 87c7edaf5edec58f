//! `show` and `graph`: one action of the plan explained in full, and the plan's dependency
//! graph for Graphviz or as JSON.

use serde::Serialize;

use super::Workspace;
use super::plan::{PlanRequest, plan, plan_with};
use crate::error::{Error, ErrorCode, Result};
use crate::plan::{Action, GraphJson, PlanGraph, Resource};
use crate::state::{BuildRecord, BuilderRecord, DevicePointer};

/// `imagegen graph`: the plan's dependency graph, as nodes and edges and as Graphviz DOT.
#[derive(Debug, Clone, Serialize)]
pub struct GraphReport {
    #[serde(flatten)]
    pub graph: GraphJson,
    /// The same graph in DOT (`imagegen graph | dot -Tsvg > graph.svg`).
    #[serde(skip)]
    pub dot: String,
}

/// The dependency graph of the plan (of the selection, when one is given).
pub fn graph(workspace: &Workspace, request: &PlanRequest) -> Result<GraphReport> {
    let plan = plan(workspace, request)?;
    let graph = PlanGraph::new(&plan)?;
    Ok(GraphReport {
        graph: graph.to_json(),
        dot: graph.to_dot(),
    })
}

/// `imagegen show ADDRESS`: one action of the current plan in full, with what it depends on,
/// what depends on it, and the last recorded result.
#[derive(Debug, Clone, Serialize)]
pub struct ActionDetail {
    pub fleet: String,
    /// The action: address, what happens, key, reasons, dependencies, inputs.
    pub action: Action,
    /// The actions that depend on this one.
    pub dependents: Vec<String>,
    /// For a build: the canonical text its key is the blake3 hash of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_inputs: Option<String>,
    /// For a builder: the Image Builder as the state store records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder_record: Option<BuilderRecord>,
    /// For a build: the build the fleet's pointer names now (`previous_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_build: Option<BuildRecord>,
    /// For a build: a recorded build of the wanted key, when it differs from the current one
    /// (a build another profile made, or a failed attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted_build: Option<BuildRecord>,
    /// For a flash: what the device last received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_pointer: Option<DevicePointer>,
}

/// Explains the action at `address` of the fleet's current plan.
pub fn show(workspace: &Workspace, address: &str) -> Result<ActionDetail> {
    let fleet = workspace.fleet()?;
    let store = workspace.store("imagegen show")?;
    let plan = plan_with(workspace, &PlanRequest::default(), &store)?;
    let Some(action) = plan.action(address).cloned() else {
        let addresses = plan.actions.iter().map(|action| action.address.as_str());
        let error = Error::new(
            ErrorCode::Validation,
            format!(
                "the plan of fleet `{}` has no action `{address}`",
                fleet.name
            ),
        );
        return Err(match crate::source::suggest(address, addresses) {
            Some(closest) => error.with_help(format!("did you mean `{closest}`?")),
            None => error.with_help("`imagegen plan -v` lists every address"),
        });
    };
    let dependents = PlanGraph::new(&plan)?
        .dependents(address)
        .into_iter()
        .map(str::to_string)
        .collect();
    let reader = store.read()?;
    let record = |key: Option<&String>| -> Result<Option<BuildRecord>> {
        match key {
            Some(key) => reader.build(key),
            None => Ok(None),
        }
    };
    let mut detail = ActionDetail {
        fleet: plan.fleet.clone(),
        dependents,
        canonical_inputs: action.inputs.as_ref().map(|inputs| inputs.canonical()),
        builder_record: None,
        current_build: None,
        wanted_build: None,
        device_pointer: None,
        action,
    };
    match detail.action.resource {
        Resource::Builder => {
            if let Some(triple) = &detail.action.builder {
                detail.builder_record = reader.builder(triple)?;
            }
        }
        Resource::Build => {
            let action = &detail.action;
            detail.current_build = record(action.previous_key.as_ref())?;
            if action.key != action.previous_key {
                detail.wanted_build = record(action.key.as_ref())?;
            }
        }
        Resource::Flash => {
            if let Some(device) = &detail.action.device_id {
                detail.device_pointer = reader.device_pointer(&plan.fleet, device)?;
            }
        }
    }
    Ok(detail)
}
