//! `imagegen builds ...`, `imagegen artifacts ...` and `imagegen gc`: what the store holds.

use super::args::{ArtifactsCommand, BuildsCommand, GcArgs};
use super::commands::{plural, print_json};
use super::context::Context;
use crate::error::{Result, exit};
use crate::key::short_hash;
use crate::ops::{self, ArtifactFilter, GcRequest};
use crate::state::BuildRecord;

pub(crate) fn builds(context: &Context, command: BuildsCommand) -> Result<i32> {
    let workspace = context.optional_workspace()?;
    match command {
        BuildsCommand::List => {
            let records = ops::builds_list(&workspace)?;
            if context.json() {
                print_json(&records)?;
            } else if records.is_empty() {
                eprintln!("No builds recorded yet; `imagegen apply` builds the fleet.");
            } else {
                for record in &records {
                    println!(
                        "{}  {:<9}  {}  {}",
                        short_hash(&record.key),
                        status(record),
                        record.profile_id,
                        plural(record.artifacts.len(), "artifact")
                    );
                }
            }
        }
        BuildsCommand::Show { key } => {
            let record = ops::build_show(&workspace, &key)?;
            if context.json() {
                print_json(&record)?;
            } else {
                print_build(&record);
            }
        }
        BuildsCommand::Log { key, tail } => {
            let log = ops::build_log(&workspace, &key, tail)?;
            if context.json() {
                print_json(&log)?;
            } else {
                print!("{}", log.text);
            }
        }
    }
    Ok(exit::OK)
}

fn status(record: &BuildRecord) -> &'static str {
    match record.status {
        crate::state::BuildStatus::Succeeded => "succeeded",
        crate::state::BuildStatus::Failed => "failed",
    }
}

fn print_build(record: &BuildRecord) {
    let inputs = &record.inputs;
    println!("build {}", record.key);
    println!("  profile       {}", record.profile_id);
    if let Some(fleet) = &record.fleet {
        println!("  fleet         {fleet}");
    }
    println!("  status        {}", status(record));
    println!(
        "  Image Builder {} ({})",
        inputs.builder.triple, inputs.imagebuilder_profile
    );
    if !inputs.packages.is_empty() || !inputs.packages_remove.is_empty() {
        println!("  packages      {}", inputs.make_packages());
    }
    println!(
        "  overlay       {} ({})",
        short_hash(&inputs.overlay.tree_hash),
        plural(inputs.overlay.entries.len(), "path")
    );
    println!(
        "  time          {} s",
        record.finished_at.saturating_sub(record.started_at)
    );
    if let Some(log) = &record.log_path {
        println!("  log           {}", log.display());
    }
    if let Some(kept) = &record.kept_build_dir {
        println!("  build tree    {}", kept.display());
    }
    for applied in &record.applied_by {
        println!(
            "  applied by    {} / {} (at {})",
            applied.fleet, applied.profile_id, applied.applied_at
        );
    }
    if let Some(error) = &record.error {
        println!("  error         {error}");
    }
    for artifact in &record.artifacts {
        println!(
            "  artifact      {:<12} {:>12}  {}  {}",
            artifact.kind,
            artifact.size,
            short_hash(&artifact.sha256),
            artifact.name
        );
    }
}

pub(crate) fn artifacts(context: &Context, command: ArtifactsCommand) -> Result<i32> {
    match command {
        ArtifactsCommand::List { build, profile } => {
            let workspace = context.optional_workspace()?;
            let records = ops::artifacts_list(&workspace, &ArtifactFilter { build, profile })?;
            if context.json() {
                print_json(&records)?;
            } else if records.is_empty() {
                eprintln!("No artifacts match.");
            } else {
                for record in &records {
                    println!(
                        "{}  {:<14} {:>12}  {}",
                        short_hash(&record.sha256),
                        record.kind,
                        record.size,
                        record.name
                    );
                }
            }
        }
        ArtifactsCommand::Show { sha256 } => {
            let workspace = context.optional_workspace()?;
            let detail = ops::artifact_show(&workspace, &sha256)?;
            if context.json() {
                print_json(&detail)?;
            } else {
                let artifact = &detail.artifact;
                println!("artifact {}", artifact.sha256);
                println!("  name        {}", artifact.name);
                println!("  kind        {}", artifact.kind);
                if let Some(filesystem) = &artifact.filesystem {
                    println!("  filesystem  {filesystem}");
                }
                println!("  size        {} bytes", artifact.size);
                let missing = if detail.present { "" } else { "  (missing!)" };
                println!("  path        {}{missing}", detail.path.display());
                for build in &artifact.builds {
                    println!("  built by    {}", short_hash(build));
                }
            }
        }
        ArtifactsCommand::Verify => {
            let workspace = context.optional_workspace()?;
            let report = ops::artifacts_verify(&workspace)?;
            if context.json() {
                print_json(&report)?;
            } else {
                println!(
                    "{} verified; all intact.",
                    plural(report.checked, "artifact")
                );
            }
        }
        ArtifactsCommand::Export { profile, kind, out } => {
            let workspace = context.workspace()?;
            let exported = ops::artifacts_export(&workspace, &profile, kind.as_deref(), &out)?;
            if context.json() {
                print_json(&exported)?;
            } else {
                for item in &exported {
                    println!("{:<12} {}", item.kind, item.path.display());
                }
            }
        }
    }
    Ok(exit::OK)
}

pub(crate) fn gc(context: &Context, args: &GcArgs) -> Result<i32> {
    let workspace = context.optional_workspace()?;
    let request = GcRequest {
        dry_run: args.dry_run,
        keep_days: args.keep_days,
    };
    let report = ops::gc(&workspace, &request)?;
    if context.json() {
        print_json(&report)?;
    } else {
        let verb = if args.dry_run { "would free" } else { "freed" };
        println!(
            "{verb} {:.1} MB: {}, {} no fleet points at and older than {} days; {}, {} no pinned feed needs.",
            report.bytes as f64 / 1e6,
            plural(report.removed_blobs, "artifact"),
            plural(report.removed_builds, "build record"),
            args.keep_days,
            match report.feeds.removed_indexes {
                1 => "1 feed index".to_string(),
                count => format!("{count} feed indexes"),
            },
            plural(report.feeds.removed_package_files, "package file"),
        );
        if let Some(why) = &report.feeds.packages_kept_because {
            println!("Package files were kept: {why}.");
        }
    }
    Ok(exit::OK)
}
