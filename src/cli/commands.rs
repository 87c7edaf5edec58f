//! One function per command: resolve what it needs, call one operation, render.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::{FormatArg, PlanArgs, ProfileFilterArgs, ProfilesCommand};
use super::context::{Context, display_relative};
use crate::error::{Error, ErrorCode, Problems, Result, exit};
use crate::fsutil::write_atomically;
use crate::manifest::{self, Fleet, LoadedProfile, ProfileFilter};
use crate::plan::{self, PlanOptions};
use crate::source::Format;

/// Prints a `Serialize` value as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| Error::internal(format!("cannot serialize output: {error}")))?;
    println!("{text}");
    Ok(())
}

#[derive(Serialize)]
struct ValidateReport<'a> {
    fleet: &'a str,
    profiles: usize,
    devices: usize,
    valid: bool,
}

pub(crate) fn validate(context: &Context) -> Result<i32> {
    let fleet = context.load_fleet()?;
    plan::validate_overlays(&fleet)?;
    let settings = context.settings(Some(&fleet))?;
    let lock = crate::manifest::LockFile::read(&plan::lock_path(&fleet))?;
    let upstream = crate::builders::check_upstream(&fleet, lock.as_ref(), &settings)?;
    crate::builders::upstream_problems_to_result(&upstream)?;
    let report = ValidateReport {
        fleet: &fleet.name,
        profiles: fleet.profiles.len(),
        devices: fleet.devices.len(),
        valid: true,
    };
    if context.json() {
        print_json(&report)?;
    } else {
        println!(
            "Fleet `{}` is valid: {} profiles, {} devices.",
            report.fleet, report.profiles, report.devices
        );
    }
    Ok(exit::OK)
}

pub(crate) fn plan(context: &Context, args: &PlanArgs) -> Result<i32> {
    let fleet = context.load_fleet()?;
    let settings = context.settings(Some(&fleet))?;
    let options = PlanOptions {
        locked: args.locked,
        offline: settings.offline.value,
    };
    let plan = plan::compute(&fleet, &settings, &options)?;
    if let Some(out) = &args.out {
        write_atomically(
            out,
            &serde_json::to_vec_pretty(&plan)
                .map_err(|error| Error::internal(format!("cannot serialize the plan: {error}")))?,
        )?;
    }
    if context.json() {
        print_json(&plan)?;
    } else {
        print!("{}", plan::render_text(&plan, args.verbose));
        if let Some(out) = &args.out {
            println!(
                "\nSaved the plan to `{}`; run `imagegen apply {}` to carry it out.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

pub(crate) fn config(context: &Context) -> Result<i32> {
    // The manifest is optional for `config`: outside a fleet, show flags, env and defaults.
    let fleet = context.optional_fleet()?;
    let settings = context.settings(fleet.as_ref())?;
    let entries = settings.entries();
    if context.json() {
        print_json(&entries)?;
        return Ok(exit::OK);
    }
    let width = entries
        .iter()
        .map(|entry| entry.name.len())
        .max()
        .unwrap_or(0);
    for entry in &entries {
        let value = match &entry.value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        println!("{:width$}  {value}  ({})", entry.name, entry.origin);
    }
    Ok(exit::OK)
}

pub(crate) fn profiles(context: &Context, command: ProfilesCommand) -> Result<i32> {
    match command {
        ProfilesCommand::List(filter) => profiles_list(context, &filter),
        ProfilesCommand::Show { profile_id } => profiles_show(context, &profile_id),
        ProfilesCommand::Validate { files } => profiles_validate(context, &files),
        ProfilesCommand::Import {
            files,
            format,
            force,
        } => profiles_import(context, &files, format, force),
        ProfilesCommand::Export {
            profile_ids,
            format,
            out,
            filter,
        } => profiles_export(context, &profile_ids, format, out.as_deref(), &filter),
    }
}

fn to_filter(args: &ProfileFilterArgs) -> ProfileFilter {
    ProfileFilter {
        tag: args.tag.clone(),
        release: args.release.clone(),
        target: args.target.clone(),
        subtarget: args.subtarget.clone(),
        device: args.device.clone(),
    }
}

fn to_format(format: FormatArg) -> Format {
    match format {
        FormatArg::Yaml => Format::Yaml,
        FormatArg::Json => Format::Json,
        FormatArg::Toml => Format::Toml,
    }
}

fn extension(format: Format) -> &'static str {
    match format {
        Format::Yaml => "yaml",
        Format::Json => "json",
        Format::Toml => "toml",
    }
}

#[derive(Serialize)]
struct ProfileRow<'a> {
    profile_id: &'a str,
    name: &'a str,
    device_id: &'a str,
    openwrt_release: &'a str,
    target: &'a str,
    subtarget: &'a str,
    imagebuilder_profile: &'a str,
    tags: &'a [String],
    file: String,
}

fn profiles_list(context: &Context, filter: &ProfileFilterArgs) -> Result<i32> {
    let fleet = context.load_fleet()?;
    let filter = to_filter(filter);
    let rows: Vec<ProfileRow> = fleet
        .profiles
        .iter()
        .filter(|loaded| filter.matches(&loaded.profile))
        .map(|loaded| profile_row(&fleet, loaded))
        .collect();
    if context.json() {
        print_json(&rows)?;
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        eprintln!("No profiles match.");
        return Ok(exit::OK);
    }
    let id_width = rows
        .iter()
        .map(|row| row.profile_id.len())
        .max()
        .unwrap_or(0)
        .max(10);
    println!(
        "{:id_width$}  {:12}  {:24}  IMAGE BUILDER PROFILE",
        "PROFILE", "RELEASE", "TARGET"
    );
    for row in &rows {
        let target = format!("{}/{}", row.target, row.subtarget);
        println!(
            "{:id_width$}  {:12}  {:24}  {}",
            row.profile_id, row.openwrt_release, target, row.imagebuilder_profile
        );
    }
    Ok(exit::OK)
}

fn profile_row<'a>(fleet: &Fleet, loaded: &'a LoadedProfile) -> ProfileRow<'a> {
    let profile = &loaded.profile;
    ProfileRow {
        profile_id: &profile.profile_id,
        name: &profile.name,
        device_id: &profile.device_id,
        openwrt_release: &profile.openwrt_release,
        target: &profile.target,
        subtarget: &profile.subtarget,
        imagebuilder_profile: &profile.imagebuilder_profile,
        tags: &profile.tags,
        file: display_relative(loaded.source.path(), &fleet.root),
    }
}

fn find_profile<'a>(fleet: &'a Fleet, profile_id: &str) -> Result<&'a LoadedProfile> {
    fleet
        .profiles
        .iter()
        .find(|loaded| loaded.profile.profile_id == profile_id)
        .ok_or_else(|| {
            let mut error = Error::new(
                ErrorCode::ProfileNotFound,
                format!("no profile `{profile_id}` in fleet `{}`", fleet.name),
            );
            let ids = fleet
                .profiles
                .iter()
                .map(|loaded| loaded.profile.profile_id.as_str());
            if let Some(closest) = crate::source::suggest(profile_id, ids) {
                error = error.with_help(format!("did you mean `{closest}`?"));
            } else {
                error = error.with_help("run `imagegen profiles list` to see the profile ids");
            }
            error
        })
}

fn profiles_show(context: &Context, profile_id: &str) -> Result<i32> {
    let fleet = context.load_fleet()?;
    let loaded = find_profile(&fleet, profile_id)?;
    if context.json() {
        print_json(&loaded.profile)?;
    } else {
        println!("# {}", display_relative(loaded.source.path(), &fleet.root));
        print!(
            "{}",
            manifest::export_profile(&loaded.profile, Format::Yaml)?
        );
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct ValidatedFile {
    file: String,
    profile_id: String,
}

fn profiles_validate(context: &Context, files: &[PathBuf]) -> Result<i32> {
    if files.is_empty() {
        return validate(context);
    }
    let mut problems = Problems::new();
    let mut valid = Vec::new();
    for file in files {
        match manifest::load_profile(file, file.display().to_string()) {
            Ok(loaded) => valid.push(ValidatedFile {
                file: file.display().to_string(),
                profile_id: loaded.profile.profile_id,
            }),
            Err(found) => problems.extend(found),
        }
    }
    problems.finish((), "invalid profiles")?;
    if context.json() {
        print_json(&valid)?;
    } else {
        for item in &valid {
            println!("ok: {} ({})", item.file, item.profile_id);
        }
    }
    Ok(exit::OK)
}

fn profiles_import(
    context: &Context,
    files: &[PathBuf],
    format: Option<FormatArg>,
    force: bool,
) -> Result<i32> {
    let fleet = context.load_fleet()?;
    let destination_dir = fleet.root.join("profiles");
    let mut problems = Problems::new();
    let mut loaded = Vec::new();
    for file in files {
        match manifest::load_profile(file, file.display().to_string()) {
            Ok(profile) => loaded.push((file, profile)),
            Err(found) => problems.extend(found),
        }
    }
    problems.finish((), "nothing imported")?;
    let mut written = Vec::new();
    for (file, profile) in loaded {
        let format = format
            .map(to_format)
            .or_else(|| Format::from_path(file))
            .unwrap_or(Format::Yaml);
        let id = &profile.profile.profile_id;
        let existing = fleet
            .profiles
            .iter()
            .find(|other| &other.profile.profile_id == id);
        if let Some(existing) = existing
            && !force
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
        let target = destination_dir.join(format!("{id}.{}", extension(format)));
        std::fs::create_dir_all(&destination_dir)
            .map_err(|error| Error::io("creating", &destination_dir, error))?;
        write_atomically(
            &target,
            manifest::export_profile(&profile.profile, format)?.as_bytes(),
        )?;
        if let Some(existing) = existing
            && existing.source.path() != target
        {
            let _ = std::fs::remove_file(existing.source.path());
        }
        written.push(ValidatedFile {
            file: display_relative(&target, &fleet.root),
            profile_id: id.clone(),
        });
    }
    if context.json() {
        print_json(&written)?;
    } else {
        for item in &written {
            println!("imported {} → {}", item.profile_id, item.file);
        }
        println!("Run `imagegen plan` to see what the new profiles would build.");
    }
    Ok(exit::OK)
}

fn profiles_export(
    context: &Context,
    profile_ids: &[String],
    format: FormatArg,
    out: Option<&Path>,
    filter: &ProfileFilterArgs,
) -> Result<i32> {
    let fleet = context.load_fleet()?;
    let format = to_format(format);
    let filter = to_filter(filter);
    let mut selected: Vec<&LoadedProfile> = Vec::new();
    if profile_ids.is_empty() {
        selected.extend(
            fleet
                .profiles
                .iter()
                .filter(|loaded| filter.matches(&loaded.profile)),
        );
    } else {
        for id in profile_ids {
            selected.push(find_profile(&fleet, id)?);
        }
    }
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|error| Error::io("creating", dir, error))?;
            for loaded in &selected {
                let path = dir.join(format!(
                    "{}.{}",
                    loaded.profile.profile_id,
                    extension(format)
                ));
                write_atomically(
                    &path,
                    manifest::export_profile(&loaded.profile, format)?.as_bytes(),
                )?;
                eprintln!("wrote {}", path.display());
            }
        }
        None if context.json() => {
            let profiles: Vec<_> = selected.iter().map(|loaded| &loaded.profile).collect();
            print_json(&profiles)?;
        }
        None => {
            for (index, loaded) in selected.iter().enumerate() {
                if index > 0 && format == Format::Yaml {
                    println!("---");
                }
                print!("{}", manifest::export_profile(&loaded.profile, format)?);
            }
        }
    }
    Ok(exit::OK)
}
