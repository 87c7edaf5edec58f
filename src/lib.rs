//! imagegen: a declarative reconciler for OpenWrt firmware.
//!
//! A tour in pipeline order (docs/architecture.md has the picture and the rules):
//!
//! 1. [`settings`] resolves every knob from flags > environment > `imagegen.toml` > defaults,
//!    remembering where each value came from; each setting is one row of its table.
//! 2. [`source`] reads YAML, JSON and TOML into a spanned tree; [`manifest`] turns the fleet
//!    manifest (`imagegen.toml`) and the profile files into validated types, collecting every
//!    problem with its file, line and column ([`error`]); [`lock`] reads, writes and pins
//!    `imagegen.lock`. [`triple`] names an Image Builder (release, target, subtarget).
//! 3. [`overlay`] hashes (and later stages) the files a profile puts into its image.
//! 4. [`key`] turns one profile's resolved inputs into a canonical serialization, a blake3
//!    build key, and the human explanation of what changed, from the same walk.
//! 5. [`plan`] checks the fleet against upstream metadata and compares the desired state
//!    with what [`state`] (the redb store) recorded: a `Plan` of actions with addresses,
//!    reasons and dependencies, whose dependency graph (`PlanGraph`, petgraph) orders the
//!    run; a `Selection` narrows it to part of the fleet.
//! 6. [`imagebuilder`] fetches, verifies (usign) and safely unpacks official Image Builders,
//!    and keeps them and their metadata in its cache. (Stand-in Image Builders and mirrors
//!    for tests and the offline demo live in the `imagegen-standin` crate, not here.)
//! 7. [`apply`] turns a plan into steps for [`exec`] (a pure dependency queue, a coordinator
//!    that is the only database writer, worker pools); [`build`] runs `make image` in a
//!    private worker slot and classifies the outputs; [`cas`] stores artifacts by sha256.
//! 8. [`flash`] writes an image to a whole disk after refusing anything unsafe (mounted,
//!    stacked, system or read-only disks; partitions), then reads it back around the page
//!    cache and compares SHA-256 digests.
//! 9. [`ops`] is every operation a frontend offers, over the stages above, taking typed
//!    options and returning `Serialize` reports (the flash operations also record every
//!    attempt in [`state`] around the engine). [`cli`] is the command-line frontend: it
//!    parses arguments, calls one operation and renders the result as text or JSON.
//!    Nothing below it knows about clap. [`mcp`] is the MCP server for AI agents
//!    (`imagegen mcp`) and [`server`] (`imagegen serve`) the HTTP API and dashboard, over
//!    the same operations.
//!
//! [`fsutil`] holds the small file-system helpers every stage shares: the whole-file-or-nothing
//! write, the private work directory check, reading a stream in full blocks.

pub mod apply;
pub mod build;
pub mod cas;
pub mod cli;
pub mod error;
pub mod exec;
pub mod feeds;
pub mod flash;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod imagebuilder;
pub mod key;
pub mod lock;
pub mod manifest;
pub mod mcp;
pub mod ops;
pub mod overlay;
pub mod plan;
pub mod server;
pub mod settings;
pub mod source;
pub mod state;
pub mod triple;

pub use error::{Error, ErrorCode, Problem, Result};
