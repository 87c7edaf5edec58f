//! `imagegen apply` and `imagegen build`.

use std::collections::BTreeSet;

use super::args::{ApplyArgs, BuildArgs};
use super::commands::print_json;
use super::context::Context;
use crate::apply::{self, ApplyOptions, ApplyReport};
use crate::builders::{self, Upgrade};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::exec::OutcomeKind;
use crate::manifest::{Fleet, LockFile};
use crate::plan::{self, ActionKind, Plan, PlanOptions, Resource};
use crate::settings::Settings;
use crate::state::Store;

pub(crate) fn apply(context: &Context, args: &ApplyArgs) -> Result<i32> {
    let fleet = context.load_fleet()?;
    let settings = context.settings(Some(&fleet))?;
    let saved = args
        .plan_file
        .as_ref()
        .map(|path| read_plan(path))
        .transpose()?;
    if saved.is_none() && !args.locked {
        lock_missing(context, &fleet, &settings)?;
    }
    let store = Store::open(&settings.db.value, "imagegen apply")?;
    let options = PlanOptions {
        locked: args.locked || saved.is_some(),
        offline: settings.offline.value,
    };
    let current = plan::compute_with(&fleet, &settings, &options, &store)?;
    if let Some(saved) = &saved {
        check_saved_plan(saved, &current)?;
    }
    if !current.has_changes() {
        if !context.json() {
            print!("{}", plan::render_text(&current, false));
        }
        return Ok(exit::OK);
    }
    if !context.json() {
        print!("{}", plan::render_text(&current, false));
        println!();
    }
    run(
        context,
        &fleet,
        &settings,
        &store,
        &current,
        args.keep_going,
        false,
    )
}

/// Runs a plan with the interrupt handler and the reporter, then prints the summary.
fn run(
    context: &Context,
    fleet: &Fleet,
    settings: &Settings,
    store: &Store,
    plan: &Plan,
    keep_going: bool,
    force: bool,
) -> Result<i32> {
    let cancel = crate::exec::install_interrupt_handler()?;
    let reporter = crate::exec::reporter_for(context.json());
    let options = ApplyOptions {
        keep_going,
        force,
        cancel,
    };
    let report = apply::apply(fleet, settings, store, plan, &options, reporter.as_ref())?;
    drop(reporter);
    if context.json() {
        // NDJSON: the events came first; the summary is the last line.
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "event": "summary", "report": &report }))
                .unwrap_or_default()
        );
    } else {
        print_summary(&report);
    }
    if report.run.interrupted {
        return Ok(exit::INTERRUPTED);
    }
    Ok(if report.is_success() {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn print_summary(report: &ApplyReport) {
    println!("\nSummary for fleet `{}`:", report.fleet);
    for step in &report.steps {
        let outcome = match (step.outcome, step.cache_hit) {
            (OutcomeKind::Succeeded, true) => "reused (cache hit)".to_string(),
            (kind, _) => kind.as_str().to_string(),
        };
        println!("  {:<44} {outcome}", step.address);
        let images: Vec<&str> = step
            .artifacts
            .iter()
            .filter(|artifact| !matches!(artifact.kind.as_str(), "manifest" | "metadata"))
            .map(|artifact| artifact.name.as_str())
            .collect();
        for image in images {
            println!("      {image}");
        }
        if let Some(error) = &step.error {
            println!("      error[{}]: {}", error.code, error.message);
        }
        if let Some(reason) = &step.reason {
            println!("      {reason}");
        }
        if let Some(log) = &step.log_path
            && step.outcome != OutcomeKind::Succeeded
        {
            println!("      log: {}", log.display());
        }
    }
    let run = &report.run;
    println!(
        "Apply: {} succeeded, {} failed, {} skipped, {} cancelled in {:.1} s.",
        run.succeeded,
        run.failed,
        run.skipped,
        run.cancelled,
        run.duration_ms as f64 / 1000.0
    );
    if run.interrupted {
        println!(
            "Interrupted: finished steps are recorded; run `imagegen apply` again to continue."
        );
    } else if run.failed > 0 {
        println!(
            "Fix the failures above (see the logs), then run `imagegen apply` again; finished steps are kept."
        );
    }
}

/// Adds lock entries for Image Builders the fleet uses but imagegen.lock does not pin yet.
fn lock_missing(context: &Context, fleet: &Fleet, settings: &Settings) -> Result<()> {
    let lock = LockFile::read(&plan::lock_path(fleet))?.unwrap_or_default();
    let missing = builders::fleet_triples(fleet)
        .iter()
        .any(|triple| !lock.entries.contains_key(&triple.key()));
    if !missing {
        return Ok(());
    }
    let report = builders::lock(fleet, settings, &Upgrade::Missing)?;
    if !context.json() {
        let added = report
            .changes
            .iter()
            .filter(|change| change.change == "added")
            .count();
        eprintln!(
            "Pinned {added} Image Builder(s) in {}; commit it.",
            report.path.display()
        );
    }
    Ok(())
}

fn read_plan(path: &std::path::Path) -> Result<Plan> {
    let bytes = std::fs::read(path).map_err(|error| Error::io_user_path("reading", path, error))?;
    let plan: Plan = serde_json::from_slice(&bytes).map_err(|error| {
        Error::new(
            ErrorCode::Validation,
            format!("`{}` is not a saved imagegen plan: {error}", path.display()),
        )
    })?;
    if plan.format_version.split('.').next() != plan::FORMAT_VERSION.split('.').next() {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!(
                "`{}` has plan format {}; this imagegen reads {}",
                path.display(),
                plan.format_version,
                plan::FORMAT_VERSION
            ),
        ));
    }
    Ok(plan)
}

/// A saved plan is applied only if planning now gives exactly the same actions.
fn check_saved_plan(saved: &Plan, current: &Plan) -> Result<()> {
    let shape = |plan: &Plan| -> Vec<(String, ActionKind, Option<String>)> {
        plan.actions
            .iter()
            .map(|action| (action.address.clone(), action.action, action.key.clone()))
            .collect()
    };
    if shape(saved) == shape(current) && saved.fleet == current.fleet {
        return Ok(());
    }
    let mut moved = Vec::new();
    if saved.fingerprint.fleet != current.fingerprint.fleet {
        moved.push("the fleet files (imagegen.toml or profiles) changed");
    }
    if saved.fingerprint.lock != current.fingerprint.lock {
        moved.push("imagegen.lock changed");
    }
    if saved.fingerprint.state != current.fingerprint.state {
        moved.push("the recorded state changed (another apply ran)");
    }
    if moved.is_empty() {
        moved.push("overlay files changed");
    }
    let saved_shape: BTreeSet<_> = shape(saved).into_iter().collect();
    let differing: Vec<String> = shape(current)
        .into_iter()
        .filter(|item| !saved_shape.contains(item))
        .map(|(address, action, _)| format!("{address} ({action:?})"))
        .take(5)
        .collect();
    Err(Error::new(
        ErrorCode::StalePlan,
        format!("the saved plan is stale: {}", moved.join("; ")),
    )
    .with_details(serde_json::json!({ "now_differs": differing }))
    .with_help("run `imagegen plan --out FILE` again and review it"))
}

pub(crate) fn build(context: &Context, args: &BuildArgs) -> Result<i32> {
    let fleet = context.load_fleet()?;
    let settings = context.settings(Some(&fleet))?;
    for id in &args.profiles {
        if fleet.profile(id).is_none() {
            return Err(Error::new(
                ErrorCode::ProfileNotFound,
                format!("no profile `{id}` in fleet `{}`", fleet.name),
            )
            .with_help("run `imagegen profiles list` to see the profile ids"));
        }
    }
    lock_missing(context, &fleet, &settings)?;
    let store = Store::open(&settings.db.value, "imagegen build")?;
    let options = PlanOptions {
        locked: false,
        offline: settings.offline.value,
    };
    let mut selected = plan::compute_with(&fleet, &settings, &options, &store)?;
    let wanted: BTreeSet<String> = selected
        .actions
        .iter()
        .filter(|action| {
            action.resource == Resource::Build
                && action
                    .profile_id
                    .as_ref()
                    .is_some_and(|id| args.profiles.contains(id))
        })
        .flat_map(|action| {
            std::iter::once(action.address.clone()).chain(action.depends_on.iter().cloned())
        })
        .collect();
    selected
        .actions
        .retain(|action| wanted.contains(&action.address) && action.action != ActionKind::Remove);
    selected.summary = crate::plan::Summary::default();
    let up_to_date = selected
        .actions
        .iter()
        .all(|action| action.action == ActionKind::NoOp);
    if up_to_date && !args.force {
        if context.json() {
            print_json(&selected)?;
        } else {
            println!(
                "Already built: {} (use --force to rebuild).",
                args.profiles.join(", ")
            );
        }
        return Ok(exit::OK);
    }
    run(
        context,
        &fleet,
        &settings,
        &store,
        &selected,
        args.keep_going,
        args.force,
    )
}
