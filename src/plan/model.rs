//! The `Plan` value and its JSON form (documented in docs/plan-json.md; `format_version`
//! changes only when a field changes meaning or disappears).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use super::select::Selection;
use crate::key::{BuildInputs, Reason};
use crate::triple::Triple;

/// Version of the plan JSON format: the minor number grows with additive changes, the major
/// number when a field changes meaning or disappears (docs/plan-json.md).
pub const FORMAT_VERSION: &str = "1.3";

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
    /// Addresses of the actions this one depends on (a build on its Image Builder, a flash
    /// on its build, a reusing build on the build it reuses), whether or not they change;
    /// an unchanged dependency counts as finished.
    pub depends_on: Vec<String>,
    /// For a build: the build action in this plan with the same key, whose result this one
    /// reuses instead of building again (one build per key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_inputs_as: Option<String>,
    /// For a build that changes: apply reuses a build with this key (recorded, or made
    /// earlier in the same run) instead of running `make image`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cache_hit: bool,
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
    /// Of `build` and `rebuild`, how many reuse a build with the same key (no `make image`).
    #[serde(default)]
    pub reuse: usize,
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

/// Which fleet devices a run may write: `plan|apply --flash` (all of them) or
/// `--flash DEVICE_ID` (repeatable). Part of a saved plan, so `apply PLANFILE` writes exactly
/// what the reviewed plan said. Without it, a wanted flash is `skip` and no pending change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlashPermission {
    /// Every fleet device in the plan (`--flash` without a device).
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
    /// These fleet devices (`--flash DEVICE_ID`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

impl FlashPermission {
    /// Every fleet device.
    pub fn all() -> FlashPermission {
        FlashPermission {
            all: true,
            devices: Vec::new(),
        }
    }

    /// No device may be written (the default).
    pub fn is_none(&self) -> bool {
        !self.all && self.devices.is_empty()
    }

    /// Whether the run may write `device_id`.
    pub fn allows(&self, device_id: &str) -> bool {
        self.all || self.names(device_id)
    }

    /// Whether `device_id` was named explicitly (`--flash DEVICE_ID`): then a missing
    /// device is an error rather than a skip.
    pub fn names(&self, device_id: &str) -> bool {
        self.devices.iter().any(|named| named == device_id)
    }

    /// The command-line spelling, for messages: `--flash`, `--flash a --flash b`.
    pub fn describe(&self) -> String {
        if self.all {
            return "--flash".to_string();
        }
        let words: Vec<String> = self
            .devices
            .iter()
            .map(|device| format!("--flash {device}"))
            .collect();
        words.join(" ")
    }
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
    /// The part of the fleet this plan covers (`--target`, `--profile`, ...); absent when it
    /// covers the whole fleet. `apply PLANFILE` applies exactly this selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// Which fleet devices `apply` may write (`--flash`); absent: none, so every wanted
    /// flash is `skip`. `apply PLANFILE` uses exactly this.
    #[serde(default, skip_serializing_if = "FlashPermission::is_none")]
    pub allow_flash: FlashPermission,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.summary.changes() > 0
    }

    pub fn action(&self, address: &str) -> Option<&Action> {
        self.actions.iter().find(|action| action.address == address)
    }

    pub(crate) fn summarize(actions: &[Action]) -> Summary {
        let mut summary = Summary::default();
        for action in actions {
            if action.resource == Resource::Build && action.action.is_change() && action.cache_hit {
                summary.reuse += 1;
            }
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

fn is_false(value: &bool) -> bool {
    !*value
}
