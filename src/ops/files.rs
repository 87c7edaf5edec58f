//! The fleet's own files as read-only documents: the manifest, each profile file and
//! `imagegen.lock` (the MCP server's resources). Only files the loaded fleet names can be
//! read here; a caller can never name an arbitrary path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Workspace, display_relative};
use crate::error::{Error, ErrorCode, Result};
use crate::source::Format;

/// Which of the fleet's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FleetFileId {
    /// `imagegen.toml`.
    Manifest,
    /// `imagegen.lock`.
    Lock,
    /// The file defining one profile.
    Profile { profile_id: String },
}

/// One of the fleet's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetFile {
    #[serde(flatten)]
    pub id: FleetFileId,
    /// Relative to the fleet root when inside it.
    pub file: String,
    pub path: PathBuf,
    /// `toml`, `yaml` or `json`.
    pub format: String,
}

/// A fleet file's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetFileText {
    #[serde(flatten)]
    pub file: FleetFile,
    pub text: String,
}

/// The manifest, the lock file (when there is one) and every profile file, in that order
/// (profiles by `profile_id`).
pub fn fleet_files(workspace: &Workspace) -> Result<Vec<FleetFile>> {
    let fleet = workspace.fleet()?;
    let described = |id: FleetFileId, path: PathBuf| {
        let format = Format::from_path(&path).map_or("toml", Format::extension);
        FleetFile {
            id,
            file: display_relative(&path, &fleet.root),
            format: format.to_string(),
            path,
        }
    };
    let mut files = vec![described(
        FleetFileId::Manifest,
        fleet.manifest.path().to_path_buf(),
    )];
    if fleet.lock_path().is_file() {
        files.push(described(FleetFileId::Lock, fleet.lock_path()));
    }
    files.extend(fleet.profiles.iter().map(|loaded| {
        described(
            FleetFileId::Profile {
                profile_id: loaded.profile.profile_id.clone(),
            },
            loaded.source.path().to_path_buf(),
        )
    }));
    Ok(files)
}

/// The text of one fleet file. The manifest and profiles are the texts this workspace
/// loaded (and validated); the lock file is read now.
pub fn read_fleet_file(workspace: &Workspace, id: &FleetFileId) -> Result<FleetFileText> {
    let fleet = workspace.fleet()?;
    let file = fleet_files(workspace)?
        .into_iter()
        .find(|file| &file.id == id)
        .ok_or_else(|| match id {
            FleetFileId::Profile { profile_id } => super::profiles::not_found(fleet, profile_id),
            _ => Error::new(
                ErrorCode::Precondition,
                format!("fleet `{}` has no `imagegen.lock` yet", fleet.name),
            )
            .with_help("run `imagegen lock` to pin the fleet's Image Builders"),
        })?;
    let text = match id {
        FleetFileId::Manifest => fleet.manifest.text().to_string(),
        FleetFileId::Profile { profile_id } => fleet
            .profile(profile_id)
            .map(|loaded| loaded.source.text().to_string())
            .unwrap_or_default(),
        FleetFileId::Lock => std::fs::read_to_string(&file.path)
            .map_err(|error| Error::io("reading", &file.path, error))?,
    };
    Ok(FleetFileText { file, text })
}
