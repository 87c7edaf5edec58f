//! Isolated Image Builder runs: private worker slots made cheaply from a pristine extracted
//! Image Builder, one supervised `make image` per build, and the classified, hashed outputs.
//! This module never writes the pristine tree, never records anything in the state store
//! and never schedules; the executor decides what runs where and records the results.
//!
//! The flow for one build:
//!
//! 1. [`prepare_slot`] makes (or resets) a worker's slot: shared hardlinks for what the
//!    Image Builder only reads, real copies for what it rewrites (see `placement`), fresh
//!    run-time directories.
//! 2. [`run_build`] applies the filesystem policy to the slot's `.config`, runs
//!    `make image PROFILE=… PACKAGES=… FILES=… BIN_DIR=…` as its own process group with a
//!    timeout and a cancel flag — inside the build sandbox (`sandbox`: bubblewrap, no
//!    network, an unprivileged user, only the slot and the output writable) unless the
//!    [`SandboxMode`] says otherwise —, checks that nothing was written through a shared
//!    file, removes what the overlay left in the slot, and classifies a failure from the log.
//! 3. The outputs come back as [`BuiltArtifact`]s (kind and filesystem from the
//!    `profiles.json` the build wrote); the caller stores them in the [`crate::cas`], writes
//!    a [`BuildManifest`] and calls [`copy_to_bin_dir`] for a profile's `bin_dir`.
//!
//! Design notes and the reasoning behind the copy list: `docs/build.md`.

mod artifacts;
mod config;
mod failure;
mod feeds;
mod fsops;
mod launch;
mod placement;
mod process;
mod records;
mod run;
mod sandbox;
mod slot;

pub use artifacts::{
    BuildManifest, BuiltArtifact, ImagebuilderFacts, MANIFEST_FORMAT_VERSION, ManifestArtifact,
    classify_by_name, copy_stored, copy_to_bin_dir,
};
pub use config::{apply_filesystem_policy, known_filesystems};
pub use run::{BuildOutput, BuildRequest, PROVENANCE_PATH, make_arguments, run_build};
pub use sandbox::{SandboxMode, SandboxReport, sandbox_unavailable};
pub use slot::{SlotMethod, SlotReport, prepare_slot, verify_slot};
