//! The fleet's profiles: list, show, validate files, import, export, and write or delete one
//! profile file (the web API's profile editing). Writes are atomic and stay inside the fleet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Workspace, display_relative};
use crate::error::{Error, ErrorCode, Problems, Result};
use crate::fsutil::write_atomically;
use crate::manifest::{self, Fleet, LoadedProfile, Profile, ProfileFilter};
use crate::source::{Format, SourceFile};

/// Where new profile files go, relative to the fleet root.
pub const PROFILES_DIR: &str = "profiles";

/// One line of `profiles list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileSummary {
    pub profile_id: String,
    pub name: String,
    pub device_id: String,
    pub openwrt_release: String,
    pub target: String,
    pub subtarget: String,
    pub imagebuilder_profile: String,
    pub tags: Vec<String>,
    /// The profile's file, relative to the fleet root.
    pub file: String,
}

/// The profiles the filter selects, in `profile_id` order.
pub fn list_profiles(workspace: &Workspace, filter: &ProfileFilter) -> Result<Vec<ProfileSummary>> {
    let fleet = workspace.fleet()?;
    Ok(fleet
        .profiles
        .iter()
        .filter(|loaded| filter.matches(&loaded.profile))
        .map(|loaded| summary(fleet, loaded))
        .collect())
}

fn summary(fleet: &Fleet, loaded: &LoadedProfile) -> ProfileSummary {
    let profile = &loaded.profile;
    ProfileSummary {
        profile_id: profile.profile_id.clone(),
        name: profile.name.clone(),
        device_id: profile.device_id.clone(),
        openwrt_release: profile.openwrt_release.clone(),
        target: profile.target.clone(),
        subtarget: profile.subtarget.clone(),
        imagebuilder_profile: profile.imagebuilder_profile.clone(),
        tags: profile.tags.clone(),
        file: display_relative(loaded.source.path(), &fleet.root),
    }
}

/// One profile and the file it lives in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileDetail {
    pub file: String,
    pub profile: Profile,
}

pub fn show_profile(workspace: &Workspace, profile_id: &str) -> Result<ProfileDetail> {
    let fleet = workspace.fleet()?;
    let loaded = find(fleet, profile_id)?;
    Ok(ProfileDetail {
        file: display_relative(loaded.source.path(), &fleet.root),
        profile: loaded.profile.clone(),
    })
}

fn find<'a>(fleet: &'a Fleet, profile_id: &str) -> Result<&'a LoadedProfile> {
    fleet
        .profile(profile_id)
        .ok_or_else(|| not_found(fleet, profile_id))
}

/// `profile_not_found`, with the closest ids (or all of them, when there are few).
pub(crate) fn not_found(fleet: &Fleet, profile_id: &str) -> Error {
    let error = Error::new(
        ErrorCode::ProfileNotFound,
        format!("no profile `{profile_id}` in fleet `{}`", fleet.name),
    );
    let ids: Vec<&str> = fleet
        .profiles
        .iter()
        .map(|loaded| loaded.profile.profile_id.as_str())
        .collect();
    if let Some(closest) = crate::source::suggest(profile_id, ids.iter().copied()) {
        error.with_help(format!("did you mean `{closest}`?"))
    } else if ids.is_empty() {
        error.with_help(
            "the fleet has no profiles yet; add one with `imagegen profiles import FILE`",
        )
    } else if ids.len() <= 5 {
        error.with_help(format!("the fleet's profiles: {}", quoted_list(&ids)))
    } else {
        error.with_help("run `imagegen profiles list` to see the profile ids")
    }
}

fn quoted_list(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A profile file that was validated or written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileWritten {
    pub file: String,
    pub profile_id: String,
}

/// Validates profile files on their own (not as part of the fleet).
pub fn validate_profile_files(files: &[PathBuf]) -> Result<Vec<ProfileWritten>> {
    let loaded = load_files(files, "invalid profiles")?;
    Ok(loaded
        .into_iter()
        .map(|(file, loaded)| ProfileWritten {
            file: file.display().to_string(),
            profile_id: loaded.profile.profile_id,
        })
        .collect())
}

fn load_files<'a>(
    files: &'a [PathBuf],
    message: &str,
) -> Result<Vec<(&'a PathBuf, LoadedProfile)>> {
    let mut problems = Problems::new();
    let mut loaded = Vec::new();
    for file in files {
        match manifest::load_profile(file, file.display().to_string()) {
            Ok(profile) => {
                // What no Image Builder can do is refused here too, not only in a fleet.
                problems.extend(crate::plan::refused_fields(&profile));
                loaded.push((file, profile));
            }
            Err(found) => problems.extend(found),
        }
    }
    problems.finish(loaded, message)
}

/// Validates profile files and copies them into the fleet's `profiles/` directory, in their
/// own format or `format`; an existing profile with the same id is replaced only with `force`.
pub fn import_profiles(
    workspace: &Workspace,
    files: &[PathBuf],
    format: Option<Format>,
    force: bool,
) -> Result<Vec<ProfileWritten>> {
    let fleet = workspace.fleet()?;
    let loaded = load_files(files, "nothing imported")?;
    let mut written = Vec::new();
    for (file, profile) in loaded {
        let format = format
            .or_else(|| Format::from_path(file))
            .unwrap_or(Format::Yaml);
        written.push(store_profile(fleet, &profile.profile, format, force)?);
    }
    Ok(written)
}

/// Writes one profile into the fleet (replacing the file of an existing profile with the same
/// id only when `replace`), atomically, and removes the old file when the name changed.
fn store_profile(
    fleet: &Fleet,
    profile: &Profile,
    format: Format,
    replace: bool,
) -> Result<ProfileWritten> {
    let id = &profile.profile_id;
    let existing = fleet.profile(id);
    if let Some(existing) = existing
        && !replace
    {
        return Err(Error::new(
            ErrorCode::Validation,
            format!(
                "profile `{id}` already exists in `{}`",
                display_relative(existing.source.path(), &fleet.root)
            ),
        )
        .with_help("pass `--force` to replace it"));
    }
    let directory = fleet.root.join(PROFILES_DIR);
    std::fs::create_dir_all(&directory)
        .map_err(|error| Error::io("creating", &directory, error))?;
    let target = directory.join(format!("{id}.{}", format.extension()));
    write_atomically(
        &target,
        manifest::export_profile(profile, format)?.as_bytes(),
    )?;
    if let Some(existing) = existing
        && existing.source.path() != target
        && existing.source.path().starts_with(&fleet.root)
    {
        let _ = std::fs::remove_file(existing.source.path());
    }
    Ok(ProfileWritten {
        file: display_relative(&target, &fleet.root),
        profile_id: id.clone(),
    })
}

/// How `write_profile` treats an existing profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Refuse when the id exists (HTTP `POST`).
    Create,
    /// Create or replace (HTTP `PUT`).
    Replace,
}

/// Validates profile text (as a profile file would be) and writes it into the fleet.
/// `expected_id`, when given, must match the text's `profile_id`. Problems point into the
/// text under the name `profiles/<id>.<ext>`.
pub fn write_profile(
    workspace: &Workspace,
    expected_id: Option<&str>,
    text: &str,
    format: Format,
    mode: WriteMode,
) -> Result<ProfileWritten> {
    let fleet = workspace.fleet()?;
    let name = format!(
        "{PROFILES_DIR}/{}.{}",
        expected_id.unwrap_or("request"),
        format.extension()
    );
    let source = Arc::new(SourceFile::new(
        PathBuf::from(&name),
        name,
        text.to_string(),
    ));
    let loaded = manifest::parse_profile(&source, format)
        .map_err(|problems| Error::from_problems("invalid profile", problems))?;
    if let Some(expected) = expected_id
        && loaded.profile.profile_id != expected
    {
        return Err(Error::from_problems(
            "invalid profile",
            vec![
                crate::error::Problem::validation(format!(
                    "`profile_id` is `{}`, but the request is for `{expected}`",
                    loaded.profile.profile_id
                ))
                .at(loaded.location("profile_id"))
                .with_label("does not match the URL"),
            ],
        ));
    }
    store_profile(fleet, &loaded.profile, format, mode == WriteMode::Replace)
}

/// Removes one profile's file; refused while fleet devices still use the profile.
pub fn delete_profile(workspace: &Workspace, profile_id: &str) -> Result<ProfileWritten> {
    let fleet = workspace.fleet()?;
    let loaded = find(fleet, profile_id)?;
    let users: Vec<&str> = fleet
        .devices
        .iter()
        .filter(|device| device.profile == profile_id)
        .map(|device| device.id.as_str())
        .collect();
    if !users.is_empty() {
        return Err(Error::new(
            ErrorCode::Validation,
            format!(
                "profile `{profile_id}` is used by devices {}",
                quoted_list(&users)
            ),
        )
        .with_help("point those devices at another profile in imagegen.toml first"));
    }
    let path = loaded.source.path();
    if !path.starts_with(&fleet.root) {
        return Err(Error::new(
            ErrorCode::PermissionError,
            format!("`{}` is outside the fleet", path.display()),
        ));
    }
    std::fs::remove_file(path).map_err(|error| Error::io("removing", path, error))?;
    Ok(ProfileWritten {
        file: display_relative(path, &fleet.root),
        profile_id: profile_id.to_string(),
    })
}

/// What `profiles export` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportReport {
    pub format: String,
    /// Files written (with an output directory).
    pub files: Vec<PathBuf>,
    /// The exported texts, in order (without an output directory).
    pub texts: Vec<String>,
    pub profiles: Vec<Profile>,
}

/// Exports the given profiles (or every one the filter selects) as text, or as files in
/// `out`.
pub fn export_profiles(
    workspace: &Workspace,
    profile_ids: &[String],
    filter: &ProfileFilter,
    format: Format,
    out: Option<&Path>,
) -> Result<ExportReport> {
    let fleet = workspace.fleet()?;
    let selected: Vec<&LoadedProfile> = if profile_ids.is_empty() {
        fleet
            .profiles
            .iter()
            .filter(|loaded| filter.matches(&loaded.profile))
            .collect()
    } else {
        profile_ids
            .iter()
            .map(|id| find(fleet, id))
            .collect::<Result<_>>()?
    };
    let mut report = ExportReport {
        format: format.extension().to_string(),
        files: Vec::new(),
        texts: Vec::new(),
        profiles: selected
            .iter()
            .map(|loaded| loaded.profile.clone())
            .collect(),
    };
    for loaded in &selected {
        let text = manifest::export_profile(&loaded.profile, format)?;
        match out {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|error| Error::io("creating", dir, error))?;
                let path = dir.join(format!(
                    "{}.{}",
                    loaded.profile.profile_id,
                    format.extension()
                ));
                write_atomically(&path, text.as_bytes())?;
                report.files.push(path);
            }
            None => report.texts.push(text),
        }
    }
    Ok(report)
}
