//! imagegen: a declarative reconciler for OpenWrt firmware.
//!
//! A tour in pipeline order:
//!
//! 1. [`settings`] resolves every knob from flags > environment > `imagegen.toml` > defaults,
//!    remembering where each value came from.
//! 2. [`source`] reads YAML, JSON and TOML into a spanned tree; [`manifest`] turns the fleet
//!    manifest (`imagegen.toml`), the profile files and the lock file (`imagegen.lock`) into
//!    validated types, collecting every problem with its file, line and column ([`error`]).
//! 3. [`overlay`] hashes (and later stages) the files a profile puts into its image.
//! 4. [`key`] turns one profile's resolved inputs into a canonical serialization, a blake3
//!    build key, and the human explanation of what changed, from the same walk.
//! 5. [`plan`] compares the desired state with what [`state`] (the redb store) recorded and
//!    produces a `Plan`: actions with addresses, reasons and dependencies.
//! 6. [`imagebuilder`] fetches, verifies (usign) and safely unpacks official Image Builders;
//!    [`builders`] pins them into `imagegen.lock`, checks profiles against upstream
//!    `profiles.json` and keeps the builder cache. (Stand-in Image Builders and mirrors
//!    for tests and the offline demo live in the `imagegen-standin` crate, not here.)
//! 7. [`apply`] turns a plan into steps for [`exec`] (a pure dependency queue, a coordinator
//!    that is the only database writer, worker pools); [`build`] runs `make image` in a
//!    private worker slot and classifies the outputs; [`cas`] stores artifacts by sha256.
//! 8. [`cli`] is the command-line frontend: it parses arguments, calls one operation and
//!    renders the result as text or JSON. Nothing below it knows about clap.
//!
//! [`fsutil`] holds the one whole-file-or-nothing write every stage uses.

pub mod apply;
pub mod build;
pub mod builders;
pub mod cas;
pub mod cli;
pub mod error;
pub mod exec;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod imagebuilder;
pub mod key;
pub mod manifest;
pub mod overlay;
pub mod plan;
pub mod settings;
pub mod source;
pub mod state;

pub use error::{Error, ErrorCode, Problem, Result};
