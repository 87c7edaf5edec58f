//! The tools' arguments. Their JSON schemas (the tools' `inputSchema`) are generated from
//! these types, doc comments included, so the descriptions here are what an agent reads.
//! Each converts into the request of the one operation its tool calls.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::manifest::ProfileFilter;
use crate::ops::{ArtifactFilter, BuildFilter, PlanRequest, ValidateRequest};

/// Selects profiles; every filter given must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileFilterParams {
    /// Only profiles carrying this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Only profiles for this OpenWrt release, e.g. `23.05.4`.
    #[serde(default)]
    pub release: Option<String>,
    /// Only profiles for this target, e.g. `ath79`.
    #[serde(default)]
    pub target: Option<String>,
    /// Only profiles for this subtarget, e.g. `generic`.
    #[serde(default)]
    pub subtarget: Option<String>,
    /// Only profiles for this device id (`device_id` in the profile).
    #[serde(default)]
    pub device: Option<String>,
}

impl From<ProfileFilterParams> for ProfileFilter {
    fn from(params: ProfileFilterParams) -> ProfileFilter {
        ProfileFilter {
            tag: params.tag,
            release: params.release,
            target: params.target,
            subtarget: params.subtarget,
            device: params.device,
        }
    }
}

/// Arguments of `get_profile`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileIdParams {
    /// The profile's `profile_id`.
    pub profile_id: String,
}

/// Arguments of `validate`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateParams {
    /// Also require `imagegen.lock` to pin every Image Builder the fleet uses.
    #[serde(default)]
    pub locked: bool,
    /// Fail when a check cannot run (mirror unreachable, offline without cached metadata)
    /// instead of listing it under `skipped`.
    #[serde(default)]
    pub strict: bool,
}

impl From<ValidateParams> for ValidateRequest {
    fn from(params: ValidateParams) -> ValidateRequest {
        ValidateRequest {
            locked: params.locked,
            strict: params.strict,
        }
    }
}

/// Arguments of `plan`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanParams {
    /// Fail when `imagegen.lock` is missing or does not pin every Image Builder (as CI does).
    #[serde(default)]
    pub locked: bool,
}

impl From<PlanParams> for PlanRequest {
    fn from(params: PlanParams) -> PlanRequest {
        PlanRequest {
            locked: params.locked,
            ..PlanRequest::default()
        }
    }
}

/// Arguments of `build_image`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildImageParams {
    /// The profile to build.
    pub profile_id: String,
    /// Rebuild even when a recorded build with the same build key exists.
    #[serde(default)]
    pub force: bool,
}

/// Arguments of `build_images_batch`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildBatchParams {
    /// Profile ids to build; when empty, every profile `filter` selects.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Selects profiles (combined with `profiles` when both are given).
    #[serde(default)]
    pub filter: ProfileFilterParams,
    /// Stop at the first failure (the default); `false` builds every profile that does not
    /// depend on a failed step (best effort).
    #[serde(default = "yes")]
    pub fail_fast: bool,
    /// Rebuild even when recorded builds with the same build keys exist.
    #[serde(default)]
    pub force: bool,
}

fn yes() -> bool {
    true
}

/// Arguments of `apply`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyParams {
    /// Fail instead of adding missing `imagegen.lock` entries.
    #[serde(default)]
    pub locked: bool,
    /// Run every step that does not depend on a failed one instead of stopping at the first
    /// failure.
    #[serde(default)]
    pub keep_going: bool,
}

/// The most builds `list_builds` returns unless asked for more.
pub(crate) const DEFAULT_BUILDS_LIMIT: usize = 20;

/// Arguments of `list_builds`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListBuildsParams {
    /// Only the builds of this profile id.
    #[serde(default)]
    pub profile_id: Option<String>,
    /// At most this many builds, newest first (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl From<ListBuildsParams> for BuildFilter {
    fn from(params: ListBuildsParams) -> BuildFilter {
        BuildFilter {
            profile: params.profile_id,
            limit: Some(params.limit.unwrap_or(DEFAULT_BUILDS_LIMIT)),
        }
    }
}

/// The log tail `get_build_log` returns unless asked for another size.
pub(crate) const DEFAULT_LOG_TAIL: u64 = 16 * 1024;
/// The most log `get_build_log` returns in one call, whatever is asked.
pub(crate) const MAX_LOG_TAIL: u64 = 256 * 1024;

/// Arguments of `get_build_log`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildLogParams {
    /// The build key, or a unique prefix of it.
    pub build_key: String,
    /// Return only the last this many bytes (default 16384, at most 262144).
    #[serde(default)]
    pub tail_bytes: Option<u64>,
}

impl BuildLogParams {
    /// The requested tail, bounded so one call never floods the agent's context.
    pub(crate) fn bounded_tail(&self) -> u64 {
        self.tail_bytes
            .unwrap_or(DEFAULT_LOG_TAIL)
            .min(MAX_LOG_TAIL)
    }
}

/// Arguments of `list_artifacts`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArtifactsParams {
    /// Only the artifacts of this build (a build key or unique prefix).
    #[serde(default)]
    pub build_key: Option<String>,
    /// Only the artifacts of this profile's builds.
    #[serde(default)]
    pub profile_id: Option<String>,
}

impl From<ListArtifactsParams> for ArtifactFilter {
    fn from(params: ListArtifactsParams) -> ArtifactFilter {
        ArtifactFilter {
            build: params.build_key,
            profile: params.profile_id,
        }
    }
}

/// Arguments of `ensure_builder`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnsureBuilderParams {
    /// Image Builders as `RELEASE/TARGET/SUBTARGET` (e.g. `23.05.4/ath79/generic`); when
    /// empty, every Image Builder the fleet uses.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// Arguments of `flash_artifact`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlashArtifactParams {
    /// The artifact: `PROFILE:KIND`, the KIND image (`factory`, `sysupgrade`, `combined`, ...)
    /// of the profile's current build such as `lab.rpi4.sd:factory`, or a sha256 prefix of
    /// at least 6 hex digits.
    pub artifact: String,
    /// The whole disk to write: `/dev/sdX`, `/dev/mmcblkN` or a `/dev/disk/by-id/...` link.
    pub device: String,
    /// Really write the device. Honoured only when the server was started with
    /// `imagegen mcp --allow-flash`; otherwise (and by default) the call is a dry run that
    /// checks everything and returns what would be written where.
    #[serde(default)]
    pub force: bool,
    /// Zero the first and last MiB of the disk first (MBR, primary and backup GPT).
    #[serde(default)]
    pub wipe: bool,
    /// Read-back verification: `full` (the default), `prefix:<MiB>` or `none`.
    #[serde(default)]
    pub verify: Option<String>,
}
