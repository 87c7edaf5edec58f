//! The `Plan` value and its JSON form (documented in docs/plan-json.md; `format_version`
//! changes only when a field changes meaning or disappears).

use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::key::{BuildInputs, Reason};
use crate::triple::Triple;

/// Version of the plan JSON format. Additive changes keep it; breaking ones bump it.
pub const FORMAT_VERSION: &str = "1.0";

/// What kind of thing an action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Builder,
    Build,
    Flash,
}

/// What happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum ActionKind {
    #[serde(rename = "create")]
    Create,
    #[serde(rename = "replace")]
    Replace,
    #[serde(rename = "no-op")]
    NoOp,
    #[serde(rename = "skip")]
    Skip,
    #[serde(rename = "remove")]
    Remove,
}

impl ActionKind {
    pub fn is_change(self) -> bool {
        matches!(
            self,
            ActionKind::Create | ActionKind::Replace | ActionKind::Remove
        )
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Action {
    /// `builder.23.05.4/ath79/generic`, `build.home.ap-livingroom`, `flash.lab-sd-1`.
    pub address: String,
    pub resource: Resource,
    pub action: ActionKind,
    /// The key after this action: a build key, an Image Builder archive sha256; `None`
    /// means "known after fetch" (or after build, for flashes).
    pub key: Option<String>,
    /// The key recorded before, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key: Option<String>,
    pub reasons: Vec<Reason>,
    /// Addresses of actions that must finish first.
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The Image Builder of a builder action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Triple>,
    /// The full inputs of a build action (what apply will build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<BuildInputs>,
    /// Free-form facts for display (archive name, flash path, image type).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// A build's packages resolved against its pinned feeds: what the image will contain,
    /// its installed size and the flash budget (docs/plan-json.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<crate::feeds::ProfilePackages>,
}

/// Counts per resource and action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    pub fetch: usize,
    pub build: usize,
    pub rebuild: usize,
    pub flash: usize,
    pub remove: usize,
    pub unchanged: usize,
    pub skip: usize,
}

impl Summary {
    pub fn changes(&self) -> usize {
        self.fetch + self.build + self.rebuild + self.flash + self.remove
    }
}

/// Digests of what the plan was computed from, so `apply PLANFILE` can refuse a plan
/// whose inputs moved since.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Fingerprint {
    /// blake3 over the manifest and every profile file.
    pub fleet: String,
    /// blake3 of `imagegen.lock`, or `None` when there is none.
    pub lock: Option<String>,
    /// blake3 over the recorded pointers and builders the plan looked at.
    pub state: String,
}

/// The result of `imagegen plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub format_version: String,
    pub fleet: String,
    pub actions: Vec<Action>,
    pub summary: Summary,
    pub fingerprint: Fingerprint,
    /// In offline mode: what apply would have to download first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline_needs: Vec<String>,
    /// Things the operator should know that are not actions (upstream moved, metadata not
    /// checked offline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.summary.changes() > 0
    }

    pub fn action(&self, address: &str) -> Option<&Action> {
        self.actions.iter().find(|action| action.address == address)
    }

    /// The actions as a dependency DAG (edge: dependency → dependent). Dependencies on
    /// addresses that are not in the plan are ignored.
    pub fn graph(&self) -> (DiGraph<usize, ()>, BTreeMap<String, NodeIndex>) {
        let mut graph = DiGraph::new();
        let mut nodes = BTreeMap::new();
        for (index, action) in self.actions.iter().enumerate() {
            nodes.insert(action.address.clone(), graph.add_node(index));
        }
        for action in &self.actions {
            let to = nodes[&action.address];
            for dependency in &action.depends_on {
                if let Some(&from) = nodes.get(dependency) {
                    graph.add_edge(from, to, ());
                }
            }
        }
        (graph, nodes)
    }

    pub(crate) fn summarize(actions: &[Action]) -> Summary {
        let mut summary = Summary::default();
        for action in actions {
            match (action.resource, action.action) {
                (_, ActionKind::NoOp) => summary.unchanged += 1,
                (_, ActionKind::Skip) => summary.skip += 1,
                (_, ActionKind::Remove) => summary.remove += 1,
                (Resource::Builder, _) => summary.fetch += 1,
                (Resource::Build, ActionKind::Create) => summary.build += 1,
                (Resource::Build, _) => summary.rebuild += 1,
                (Resource::Flash, _) => summary.flash += 1,
            }
        }
        summary
    }
}
