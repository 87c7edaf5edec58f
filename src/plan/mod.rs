//! Plan: desired state vs recorded state → a [`Plan`] of actions with addresses, reasons and
//! dependencies. [`diff`] is pure (no I/O); `desired` gathers the inputs (reading the fleet,
//! the lock, overlay files and the state store); `upstream` checks the fleet against
//! upstream metadata (the only part that may read the mirror) and `capability` what an Image
//! Builder can do for each profile; `graph` is the plan's dependency DAG (petgraph), `select`
//! narrows a plan to part of the fleet; `render` prints it.

mod bin_dir;
mod capability;
mod desired;
mod diff;
mod flash;
mod graph;
mod image;
mod model;
mod packages;
mod recorded;
mod render;
mod select;
mod upstream;

pub use bin_dir::{bin_dir_error, bin_dir_problems, resolve_bin_dir};
pub use capability::refused_fields;
pub use desired::{
    PlanOptions, Prepared, build_inputs, compute, compute_with, overlay_input, prepare,
    validate_overlays, verification_notice,
};
pub use diff::{
    Desired, DesiredBuild, DesiredBuilder, DesiredFlash, Recorded, RecordedBuild, RecordedBuilder,
    RecordedDevice, RecordedDeviceState, diff,
};
pub use graph::{GraphEdge, GraphJson, GraphNode, PlanGraph};
pub use image::choose_image;
pub use model::{
    Action, ActionKind, FORMAT_VERSION, Fingerprint, FlashPermission, Plan, Resource, Summary,
};
pub use render::{render_text, summary_line};
pub use select::{Selection, select};
pub use upstream::{Moved, MovedFeed, UpstreamCheck, check_upstream};
