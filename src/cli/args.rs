//! clap definitions. Nothing outside `cli` sees these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::settings::{FlagSettings, Kind, TABLE};

const AFTER_HELP: &str = "\
Typical session:
  imagegen validate                 check imagegen.toml and every profile
  imagegen plan                     show what would be fetched, built and flashed, and why
  imagegen plan --detailed-exitcode exit 2 when changes are pending (for CI gates)
  imagegen apply                    fetch, build and record what the plan shows
  imagegen apply --flash lab-sd-1   also write that fleet device (--flash alone: every device)
  imagegen plan --target build.home.ap   one action and what it depends on (also apply, build)
  imagegen show build.home.ap       everything about one action: inputs, key, reasons, last result
  imagegen graph | dot -Tsvg > g.svg  the plan's dependency graph

Settings come from flags > OWRT_IMG_* environment > imagegen.toml [settings] > defaults;
`imagegen config` shows each effective value and where it came from.
Exit codes: 0 ok, 1 a step failed, 2 changes pending (--detailed-exitcode), 3 invalid input,
4 stale plan or lock, 5 state locked, 64 usage error, 70 internal error, 130 interrupted.
A run's code: 130 if interrupted, else the run's own error (recording failed: 70), else 1 if
any step failed, was skipped or cancelled, else 0.";

/// Declarative fleet manager for custom OpenWrt firmware.
///
/// A git repository describes the fleet (imagegen.toml, profiles/, files/). `plan` compares
/// it with what the local store recorded and explains every Image Builder fetch, image build
/// and device flash it would take.
#[derive(Debug, Parser)]
#[command(name = "imagegen", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The fleet manifest [default: ./imagegen.toml, searched upwards from the current directory]
    #[arg(long, global = true, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Every setting of the settings table as a flag (`--jobs`, `--mirror`, ...)
    #[command(flatten)]
    pub settings: SettingFlags,
}

/// The settings flags, generated from the one settings table so that names, help and
/// environment variables are written once (`crate::settings::TABLE`).
#[derive(Debug, Clone, Default)]
pub struct SettingFlags(pub FlagSettings);

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = FlagSettings::default();
        for def in TABLE {
            if matches.value_source(def.name) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            if def.kind == Kind::Switch {
                flags.set(def.name, "true");
            } else if let Some(values) = matches.get_many::<String>(def.name) {
                for value in values {
                    flags.set(def.name, value.clone());
                }
            }
        }
        Ok(SettingFlags(flags))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(mut command: clap::Command) -> clap::Command {
        for def in TABLE {
            let mut arg = clap::Arg::new(def.name)
                .long(def.flag)
                .global(true)
                .help(format!("{} [env: {}]", def.help.replace('`', ""), def.env))
                .help_heading(
                    "Settings (flags > OWRT_IMG_* environment > imagegen.toml > defaults)",
                );
            if let Some(short) = def.short {
                arg = arg.short(short);
            }
            arg = match def.kind {
                Kind::Switch => arg.action(clap::ArgAction::SetTrue),
                Kind::Paths => arg
                    .action(clap::ArgAction::Append)
                    .value_name(def.value_name),
                _ => arg.action(clap::ArgAction::Set).value_name(def.value_name),
            };
            command = command.arg(arg);
        }
        command
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the manifest and every profile; report all problems at once
    Validate(ValidateArgs),
    /// Show what apply would fetch, build and flash, and why
    Plan(PlanArgs),
    /// Carry out the plan: fetch Image Builders, build images, record results
    ///
    /// Without PLANFILE, computes the plan and runs it. With PLANFILE (from `plan --out`),
    /// runs exactly that plan, or refuses with what changed since. Missing lock entries are
    /// added first unless --locked. A second apply finds nothing to do.
    Apply(ApplyArgs),
    /// Build (or reuse) the images of the given profiles now
    Build(BuildArgs),
    /// Explain one action of the plan in full: inputs, key, reasons, dependencies, last result
    Show(ShowArgs),
    /// Print the plan's dependency graph as Graphviz DOT (or nodes and edges with --json)
    ///
    /// Like `terraform graph`: `imagegen graph | dot -Tsvg > graph.svg` draws it. Edges point
    /// from an action to what it depends on; unchanged actions are dashed.
    Graph(GraphArgs),
    /// Recorded builds: list, show one, print its log
    #[command(subcommand)]
    Builds(BuildsCommand),
    /// Artifacts in the content-addressed store
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Remove artifacts no fleet pointer or recent build references
    ///
    /// Also removes, from the feed caches, indexes the fleet's lock does not pin and package
    /// files no pinned index lists, when older than --keep-days (other fleets may share the
    /// cache; what goes is fetched again when needed).
    Gc(GcArgs),
    /// Pin every Image Builder the fleet uses into imagegen.lock (archive, sha256, key, revision)
    ///
    /// Reads each target's signed sha256sums and profiles.json from the mirror. Without
    /// --upgrade only missing entries are added; commit the file so CI plans are reproducible.
    Lock(LockArgs),
    /// List, inspect, fetch and prune cached Image Builders
    #[command(subcommand)]
    Builders(BuildersCommand),
    /// Show every effective setting and where its value came from
    Config,
    /// Write an image to a whole disk (SD card, USB stick) and verify it
    #[command(subcommand)]
    Flash(FlashCommand),
    /// Disks this machine could flash: model, serial, size, partitions, and why a flash
    /// would refuse one
    Devices,
    /// List, show, validate, import and export device profiles
    #[command(subcommand)]
    Profiles(ProfilesCommand),
    /// Serve the fleet's operations to AI agents over MCP (Model Context Protocol) on stdio
    ///
    /// Tools: list_profiles, get_profile, validate, plan, build_image, build_images_batch,
    /// apply, list_builds, get_build_log, list_artifacts, list_builders, ensure_builder,
    /// flash_artifact (a dry run unless the call says `force: true` and the server has
    /// --allow-flash). The fleet's files are read-only resources. Only protocol messages go
    /// to stdout; logs go to stderr.
    Mcp(McpArgs),
    /// Serve the HTTP API and the fleet dashboard (docs/api.md)
    ///
    /// Listens on loopback by default. Off loopback a bearer token is required: from
    /// --token-file or OWRT_IMG_API_TOKEN.
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Let flashing tools write to block devices when a call also says `force: true`
    /// (without it they only show what they would write where)
    #[arg(long)]
    pub allow_flash: bool,
}

#[derive(Debug, Args, Default)]
pub struct ValidateArgs {
    /// Also require imagegen.lock to pin every Image Builder the fleet uses
    #[arg(long)]
    pub locked: bool,
    /// Fail when a check cannot run (mirror unreachable, offline without cached metadata)
    #[arg(long)]
    pub strict: bool,
}

/// Which part of the fleet a command covers; every option may be repeated or combined.
#[derive(Debug, Args, Default, Clone)]
pub struct SelectionArgs {
    /// Only this action and what it depends on (repeatable), like Terraform's -target:
    /// `build.FLEET.PROFILE`, `builder.RELEASE/TARGET/SUBTARGET`, `flash.DEVICE`
    #[arg(long = "target", value_name = "ADDRESS")]
    pub targets: Vec<String>,
    /// Only this profile (repeatable)
    #[arg(long = "profile", value_name = "ID")]
    pub profiles: Vec<String>,
    /// Only profiles with this tag (repeatable: any of them)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only profiles of this OpenWrt release
    #[arg(long, value_name = "RELEASE")]
    pub release: Option<String>,
    /// Only profiles built with this Image Builder
    #[arg(long, value_name = "RELEASE/TARGET/SUBTARGET")]
    pub builder: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The action's address, as `imagegen plan` prints it
    pub address: String,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (port 0 picks a free port; the first line printed names it)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Read the API bearer token from FILE [default: OWRT_IMG_API_TOKEN]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The largest request body accepted
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long a request waits for another imagegen process to release the state store
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub store_wait_ms: u64,
    /// Let `POST /flash` (with `"force": true`) and applies with a flash permission write
    /// block devices; without it they are refused (403)
    #[arg(long)]
    pub allow_flash: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Exit 0 when there are no changes, 2 when there are (errors stay non-zero)
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Fail when imagegen.lock is missing or does not pin every Image Builder the fleet uses
    #[arg(long)]
    pub locked: bool,
    /// Save the plan as JSON to FILE, for `imagegen apply FILE`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Plan writing fleet devices (kept in a saved plan): every device that needs a flash,
    /// or with DEVICE_ID (repeatable) only those. Without it, wanted flashes are skipped and
    /// are no pending change
    #[arg(long = "flash", value_name = "DEVICE_ID", num_args = 0..=1, default_missing_value = "")]
    pub flash: Vec<String>,

    /// Also list unchanged actions
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `imagegen plan --out FILE` (applied with the selection it was made with)
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Run everything that does not depend on a failed step
    #[arg(long)]
    pub keep_going: bool,
    /// Fail instead of adding missing imagegen.lock entries
    #[arg(long)]
    pub locked: bool,
    /// Let apply write fleet devices: every device of the plan that needs a flash, or with
    /// DEVICE_ID (repeatable) only those. Without it, wanted flashes are skipped and are no
    /// pending change
    #[arg(long = "flash", value_name = "DEVICE_ID", num_args = 0..=1, default_missing_value = "")]
    pub flash: Vec<String>,
    /// Write the devices without asking for each device id typed back (on a terminal;
    /// without one, `--flash` alone is the consent)
    #[arg(long)]
    pub yes: bool,
    /// Print the whole plan before running it (default: its summary line)
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum FlashCommand {
    /// Write a local image file (raw, .gz, .xz or .zst) to a whole disk and read it back
    ///
    /// Refuses partitions, mounted, stacked (device-mapper, md, LVM), system and read-only
    /// disks, and images larger than the disk. Asks for the device name typed back unless
    /// --force; without a terminal, --force is required. Every attempt is recorded
    /// (`imagegen flash list`).
    Image(FlashImageArgs),
    /// Write a stored artifact to a whole disk and read it back
    ///
    /// ARTIFACT is a sha256 prefix (at least 6 hex digits, `imagegen artifacts list`) or
    /// PROFILE:KIND, the KIND image (`factory`, `sysupgrade`, `combined`, ...) of the
    /// profile's current build, such as `lab.rpi4.sd:factory`. The same checks, confirmation
    /// and records as `flash image`.
    Write(FlashWriteArgs),
    /// Recorded flashes, newest first, and each device's state (flashed, did not complete,
    /// partial image, suspect)
    List(FlashListArgs),
}

#[derive(Debug, Args)]
pub struct FlashImageArgs {
    /// The image file
    pub image: PathBuf,
    /// The whole disk: `/dev/sdX`, `/dev/mmcblkN` or a `/dev/disk/by-id/...` link
    pub device: PathBuf,
    #[command(flatten)]
    pub options: FlashOptionArgs,
}

#[derive(Debug, Args)]
pub struct FlashWriteArgs {
    /// A sha256 prefix, or PROFILE:KIND (e.g. `lab.rpi4.sd:factory`)
    pub artifact: String,
    /// The whole disk: `/dev/sdX`, `/dev/mmcblkN` or a `/dev/disk/by-id/...` link
    pub device: PathBuf,
    #[command(flatten)]
    pub options: FlashOptionArgs,
}

#[derive(Debug, Args)]
pub struct FlashOptionArgs {
    /// Check everything and show what would be written, without writing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long)]
    pub force: bool,
    /// Zero the first and last MiB of the disk first (MBR, primary and backup GPT)
    #[arg(long)]
    pub wipe: bool,
    /// Read-back verification: `full`, `prefix:<MiB>` or `none`
    #[arg(long, value_name = "MODE", default_value = "full", value_parser = parse_verify)]
    pub verify: crate::flash::VerifyMode,
}

#[derive(Debug, Args)]
pub struct FlashListArgs {
    /// Only this device: a fleet device id, a device key, a serial or a path
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// At most this many flashes, the newest
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

fn parse_verify(text: &str) -> Result<crate::flash::VerifyMode, String> {
    text.parse()
        .map_err(|error: crate::error::Error| match error.help {
            Some(help) => format!("{}; {help}", error.message),
            None => error.message,
        })
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Profile ids (or select with the options below)
    #[arg(value_name = "PROFILE")]
    pub profile_ids: Vec<String>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Rebuild even when a recorded build with the same key exists
    #[arg(long)]
    pub force: bool,
    /// Build the other profiles when one fails
    #[arg(long)]
    pub keep_going: bool,
}

#[derive(Debug, Subcommand)]
pub enum BuildsCommand {
    /// Recorded builds, newest first
    List,
    /// One build: inputs, artifacts, log path (a key prefix is enough)
    Show { key: String },
    /// Print the log of a build
    Log {
        key: String,
        /// Only the last BYTES bytes
        #[arg(long, value_name = "BYTES")]
        tail: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Artifacts in the store: all, one build's, or one profile's builds'
    List {
        /// Only the artifacts of this build (a key prefix is enough)
        #[arg(long, value_name = "KEY")]
        build: Option<String>,
        /// Only the artifacts of this profile's builds
        #[arg(long, value_name = "PROFILE")]
        profile: Option<String>,
    },
    /// One artifact (a sha256 prefix is enough)
    Show { sha256: String },
    /// Re-hash every stored artifact; corrupted blobs are removed so the next apply rebuilds them
    Verify,
    /// Copy a profile's current images out of the store under their names
    Export {
        /// The profile id
        profile: String,
        /// Only artifacts of this kind (`sysupgrade`, `factory`, `combined`, ...)
        #[arg(long)]
        kind: Option<String>,
        /// The directory to copy into (created if needed)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only report what would be removed and how much space that frees
    #[arg(long)]
    pub dry_run: bool,
    /// Keep artifacts of builds finished within this many days even without a pointer
    #[arg(long, default_value_t = 7)]
    pub keep_days: u64,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Refresh entries from upstream: all of them, or only the addresses given
    /// (`23.05.4/ath79/generic` or `builder.23.05.4/ath79/generic`)
    #[arg(long, num_args = 0.., value_name = "ADDRESS")]
    pub upgrade: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum BuildersCommand {
    /// Image Builders recorded in the state store
    List,
    /// One Image Builder: its state record and lock entry
    Info { address: String },
    /// Fetch (verify, unpack) the pinned Image Builders the fleet uses, or the ones given
    Ensure { addresses: Vec<String> },
    /// Re-hash every file of the cached Image Builders (all, or the ones given) against the
    /// digest recorded when they were fetched; a changed one is marked broken and fetched again
    Verify { addresses: Vec<String> },
    /// Remove cached Image Builders that no recorded build uses
    Prune {
        /// Also remove builders that recorded builds use
        #[arg(long)]
        force: bool,
        /// Only show what would be removed
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args, Default)]
pub struct ProfileFilterArgs {
    /// Only profiles with this tag
    #[arg(long)]
    pub tag: Option<String>,
    /// Only profiles for this OpenWrt release
    #[arg(long)]
    pub release: Option<String>,
    /// Only profiles for this target
    #[arg(long)]
    pub target: Option<String>,
    /// Only profiles for this subtarget
    #[arg(long)]
    pub subtarget: Option<String>,
    /// Only profiles for this device id
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Yaml,
    Json,
    Toml,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// List the fleet's profiles, optionally filtered
    List(ProfileFilterArgs),
    /// Show one profile
    Show { profile_id: String },
    /// Validate profile files (or, without FILES, every profile of the fleet)
    Validate { files: Vec<PathBuf> },
    /// Validate profile files and copy them into the fleet's profiles directory
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write them in this format [default: the source's format]
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// Overwrite an existing profile file with the same profile id
        #[arg(long)]
        force: bool,
    },
    /// Export profiles (all, or the ids given) to stdout or to a directory
    Export {
        profile_ids: Vec<String>,
        #[arg(long, value_enum, default_value = "yaml")]
        format: FormatArg,
        /// Write one file per profile into DIR instead of stdout
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        filter: ProfileFilterArgs,
    },
}
