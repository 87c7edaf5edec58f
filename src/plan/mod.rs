//! Plan: desired state vs recorded state → a [`Plan`] of actions with addresses, reasons and
//! dependencies. [`diff`] is pure (no I/O); `desired` gathers the inputs (reading the fleet,
//! the lock, overlay files and the state store); `upstream` checks the fleet against
//! upstream metadata (the only part that may read the mirror); `render` prints it.

mod bin_dir;
mod desired;
mod diff;
mod model;
mod packages;
mod render;
mod upstream;

pub use bin_dir::{bin_dir_error, bin_dir_problems, resolve_bin_dir};
pub use desired::{
    PlanOptions, Prepared, build_inputs, compute, compute_with, overlay_input, prepare,
    validate_overlays,
};
pub use diff::{
    Desired, DesiredBuild, DesiredBuilder, DesiredFlash, Recorded, RecordedBuild, RecordedBuilder,
    RecordedDevice, diff,
};
pub use model::{Action, ActionKind, FORMAT_VERSION, Fingerprint, Plan, Resource, Summary};
pub use render::{render_text, summary_line};
pub use upstream::{Moved, MovedFeed, UpstreamCheck, check_upstream};
