//! Which stored artifact `flash write ARTIFACT` means: a sha256 prefix, or `PROFILE:KIND`
//! resolved through the profile's current build in the fleet. Reads the state; writes
//! nothing.

use std::str::FromStr;

use super::FlashSource;
use crate::cas::Cas;
use crate::error::{Error, ErrorCode, Result};
use crate::ops::Workspace;
use crate::state::{ArtifactRecord, ArtifactRef, FlashedArtifact, Store};

/// The fewest hex digits of a sha256 prefix a flash accepts: a shorter one that happens to
/// be unique today is too easy to mistype into another image.
pub(crate) const MIN_PREFIX: usize = 6;

/// An artifact as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSpec {
    /// A prefix (at least 6 hex digits) of the artifact's sha256.
    Sha256Prefix(String),
    /// The artifact of `kind` (`factory`, `sysupgrade`, `combined`, …) of the profile's
    /// current build.
    ProfileKind { profile_id: String, kind: String },
}

impl FromStr for ArtifactSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<ArtifactSpec> {
        if let Some((profile_id, kind)) = text.split_once(':') {
            if profile_id.is_empty() || kind.is_empty() || kind.contains(':') {
                return Err(invalid(text));
            }
            return Ok(ArtifactSpec::ProfileKind {
                profile_id: profile_id.to_string(),
                kind: kind.to_string(),
            });
        }
        let hex = text.len() <= 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit());
        if !hex || text.len() < MIN_PREFIX {
            return Err(invalid(text));
        }
        Ok(ArtifactSpec::Sha256Prefix(text.to_ascii_lowercase()))
    }
}

fn invalid(text: &str) -> Error {
    Error::new(
        ErrorCode::Validation,
        format!("`{text}` names no artifact"),
    )
    .with_help(format!(
        "give a sha256 prefix of at least {MIN_PREFIX} hex digits (`imagegen artifacts list`) or `PROFILE:KIND` such as `lab.rpi4.sd:factory`"
    ))
}

/// The artifact `spec` names, checked to be in the store with its recorded bytes (a
/// damaged blob is never written to a device).
pub(crate) fn resolve(
    workspace: &Workspace,
    store: &Store,
    cas: &Cas,
    spec: &ArtifactSpec,
) -> Result<FlashSource> {
    let artifact = match spec {
        ArtifactSpec::Sha256Prefix(prefix) => by_prefix(store, prefix)?,
        ArtifactSpec::ProfileKind { profile_id, kind } => {
            of_profile(workspace, store, profile_id, kind)?
        }
    };
    FlashSource::stored(cas, artifact)
}

fn by_prefix(store: &Store, prefix: &str) -> Result<FlashedArtifact> {
    let reader = store.read()?;
    let record = crate::ops::records::find_artifact(reader.artifacts()?, prefix)?;
    let build_key = record.builds.last().cloned();
    let profile_id = match &build_key {
        Some(key) => reader.build(key)?.map(|build| build.profile_id),
        None => None,
    };
    Ok(flashed(&record, build_key, profile_id))
}

fn flashed(
    record: &ArtifactRecord,
    build_key: Option<String>,
    profile_id: Option<String>,
) -> FlashedArtifact {
    FlashedArtifact {
        sha256: record.sha256.clone(),
        name: record.name.clone(),
        kind: record.kind.clone(),
        build_key,
        profile_id,
    }
}

fn of_profile(
    workspace: &Workspace,
    store: &Store,
    profile_id: &str,
    kind: &str,
) -> Result<FlashedArtifact> {
    let fleet = workspace.fleet()?;
    let Some(loaded) = fleet.profile(profile_id) else {
        return Err(crate::ops::profiles::not_found(fleet, profile_id));
    };
    let images = crate::ops::apply::current_images(workspace, store, profile_id)?;
    let artifacts: Vec<ArtifactRef> = images
        .artifacts
        .into_iter()
        .map(|located| located.artifact)
        .collect();
    let filesystem = loaded.profile.policies.filesystem.map(|fs| fs.as_str());
    let chosen = crate::plan::choose_image(&artifacts, kind, filesystem).map_err(|error| {
        error.with_help(format!(
            "`imagegen artifacts list --profile {profile_id}` shows them; name one by its sha256 prefix"
        ))
    })?;
    Ok(FlashedArtifact {
        sha256: chosen.sha256.clone(),
        name: chosen.name.clone(),
        kind: chosen.kind.clone(),
        build_key: Some(images.build_key),
        profile_id: Some(profile_id.to_string()),
    })
}
