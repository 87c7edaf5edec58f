//! clap definitions. Nothing outside `cli` sees these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Typical session:
  imagegen validate                 check imagegen.toml and every profile
  imagegen plan                     show what would be fetched, built and flashed, and why
  imagegen plan --detailed-exitcode exit 2 when changes are pending (for CI gates)
  imagegen apply                    fetch, build and record what the plan shows

Settings come from flags > OWRT_IMG_* environment > imagegen.toml [settings] > defaults;
`imagegen config` shows each effective value and where it came from.
Exit codes: 0 ok, 1 a step failed, 2 changes pending (--detailed-exitcode), 3 invalid input,
4 stale plan or lock, 5 state locked, 64 usage error, 70 internal error, 130 interrupted.";

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
    /// State database (redb) [env: OWRT_IMG_DB_URL]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Content-addressed artifact store [env: OWRT_IMG_ARTIFACTS_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub artifacts_dir: Option<PathBuf>,
    /// Image Builder cache [env: OWRT_IMG_CACHE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Temporary work directory [env: OWRT_IMG_TMP_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,
    /// Never touch the network [env: OWRT_IMG_OFFLINE]
    #[arg(long, global = true)]
    pub offline: bool,
    /// Log level: error, warn, info, debug, trace [env: OWRT_IMG_LOG_LEVEL]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Download mirror: https://..., http://... or file:///path [env: OWRT_IMG_MIRROR]
    #[arg(long, global = true, value_name = "URL")]
    pub mirror: Option<String>,
    /// Concurrent builds [env: OWRT_IMG_JOBS]
    #[arg(long, short = 'j', global = true, value_name = "N")]
    pub jobs: Option<u32>,
    /// Concurrent Image Builder downloads [env: OWRT_IMG_DOWNLOAD_JOBS]
    #[arg(long, global = true, value_name = "N")]
    pub download_jobs: Option<u32>,
    /// Extra trusted usign public key file (repeatable) [env: OWRT_IMG_TRUSTED_KEYS]
    #[arg(long = "trusted-key", global = true, value_name = "FILE")]
    pub trusted_keys: Vec<PathBuf>,
    /// Verify sha256sums signatures: true or false [env: OWRT_IMG_VERIFY_SIGNATURES]
    #[arg(long, global = true, value_name = "BOOL")]
    pub verify_signatures: Option<bool>,
    /// Seconds one image build may run before it is stopped [env: OWRT_IMG_BUILD_TIMEOUT]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub build_timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the manifest and every profile; report all problems at once
    Validate,
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
    /// Recorded builds: list, show one, print its log
    #[command(subcommand)]
    Builds(BuildsCommand),
    /// Artifacts in the content-addressed store
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Remove artifacts no fleet pointer or recent build references
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 0 when there are no changes, 2 when there are (errors stay non-zero)
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Fail when imagegen.lock is missing or does not pin every Image Builder the fleet uses
    #[arg(long)]
    pub locked: bool,
    /// Save the plan as JSON to FILE, for `imagegen apply FILE`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also list unchanged actions
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `imagegen plan --out FILE`
    pub plan_file: Option<PathBuf>,
    /// Run everything that does not depend on a failed step
    #[arg(long)]
    pub keep_going: bool,
    /// Fail instead of adding missing imagegen.lock entries
    #[arg(long)]
    pub locked: bool,
}

#[derive(Debug, Subcommand)]
pub enum FlashCommand {
    /// Write a local image file (raw, .gz, .xz or .zst) to a whole disk and read it back
    ///
    /// Refuses partitions, mounted, stacked (device-mapper, md, LVM), system and read-only
    /// disks, and images larger than the disk. Asks for the device name typed back unless
    /// --force; without a terminal, --force is required.
    Image(FlashImageArgs),
}

#[derive(Debug, Args)]
pub struct FlashImageArgs {
    /// The image file
    pub image: PathBuf,
    /// The whole disk: `/dev/sdX`, `/dev/mmcblkN` or a `/dev/disk/by-id/...` link
    pub device: PathBuf,
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

fn parse_verify(text: &str) -> Result<crate::flash::VerifyMode, String> {
    text.parse()
        .map_err(|error: crate::error::Error| match error.help {
            Some(help) => format!("{}; {help}", error.message),
            None => error.message,
        })
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Profile ids
    #[arg(required = true)]
    pub profiles: Vec<String>,
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
    Log { key: String },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Every artifact in the store
    List,
    /// One artifact (a sha256 prefix is enough)
    Show { sha256: String },
    /// Re-hash every stored artifact; corrupted blobs are removed so the next apply rebuilds them
    Verify,
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
