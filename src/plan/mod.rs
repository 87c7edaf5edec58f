//! Plan: desired state vs recorded state → a [`Plan`] of actions with addresses, reasons and
//! dependencies. [`diff`] is pure (no I/O); `desired` gathers the inputs (reading the fleet,
//! the lock, overlay files and the state store, never the network); `render` prints it.

mod desired;
mod diff;
mod model;
mod render;

pub use desired::{
    PlanOptions, build_inputs, compute, compute_with, lock_path, overlay_input, validate_overlays,
};
pub use diff::{
    Desired, DesiredBuild, DesiredBuilder, DesiredFlash, Recorded, RecordedBuild, RecordedBuilder,
    RecordedDevice, diff,
};
pub use model::{Action, ActionKind, FORMAT_VERSION, Fingerprint, Plan, Resource, Summary};
pub use render::render_text;
