//! Human rendering of a plan, in the spirit of Terraform's: one block per change, the
//! reasons under it, and a one-line summary.

use std::fmt::Write;

use super::model::{Action, ActionKind, Plan, Resource};
use crate::key::short_hash;

/// The plan as text. `verbose` also lists unchanged actions.
pub fn render_text(plan: &Plan, verbose: bool) -> String {
    let mut out = String::new();
    let shown: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|action| verbose || action.action != ActionKind::NoOp)
        .collect();
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "No changes. Fleet `{}` matches the recorded state ({} unchanged).",
            plan.fleet, plan.summary.unchanged
        );
        if shown.is_empty() {
            return out;
        }
        out.push('\n');
    } else {
        let _ = writeln!(
            out,
            "imagegen will perform these actions for fleet `{}`:\n",
            plan.fleet
        );
    }
    for action in shown {
        render_action(&mut out, plan, action, verbose);
    }
    if let Some(selection) = &plan.selection {
        let _ = writeln!(
            out,
            "Selection: {} (only these actions and what they depend on; the rest of the fleet is not planned)\n",
            selection.describe()
        );
    }
    render_offline_needs(&mut out, &plan.offline_needs, verbose);
    if !plan.notices.is_empty() {
        let _ = writeln!(out, "Notes:");
        for notice in &plan.notices {
            let _ = writeln!(out, "  {notice}");
        }
        out.push('\n');
    }
    if plan.has_changes() {
        out.push_str(&summary_line(plan));
        out.push('\n');
    }
    out
}

/// Package files beyond this many are counted rather than listed, unless `verbose`: a fleet's
/// first offline plan can need hundreds of them.
const PACKAGE_FILES_LISTED: usize = 10;

/// What an offline apply would have to download: every archive, and the package files
/// (counted when there are many; `-v` and `--json` list them all).
fn render_offline_needs(out: &mut String, needs: &[String], verbose: bool) {
    if needs.is_empty() {
        return;
    }
    let _ = writeln!(out, "Offline: apply would first need to download:");
    let (packages, others): (Vec<&String>, Vec<&String>) =
        needs.iter().partition(|need| need.starts_with("package "));
    for need in others {
        let _ = writeln!(out, "  {need}");
    }
    let listed = match verbose {
        true => packages.len(),
        false => packages.len().min(PACKAGE_FILES_LISTED),
    };
    for need in &packages[..listed] {
        let _ = writeln!(out, "  {need}");
    }
    if listed < packages.len() {
        let _ = writeln!(
            out,
            "  … and {} more package files (`plan -v` or `--json` lists them all)",
            packages.len() - listed
        );
    }
    out.push('\n');
}

fn render_action(out: &mut String, plan: &Plan, action: &Action, verbose: bool) {
    let symbol = match action.action {
        ActionKind::Create => "+",
        ActionKind::Replace => "~",
        ActionKind::Remove => "-",
        ActionKind::Skip => "!",
        ActionKind::NoOp => " ",
    };
    let _ = writeln!(out, "  {symbol} {}  ({})", action.address, verb(action));
    for (name, value) in &action.details {
        let _ = writeln!(out, "      {name}: {value}");
    }
    let _ = writeln!(out, "      key: {}", key_text(action));
    if let Some(packages) = &action.packages {
        render_packages(out, packages, verbose);
    }
    for reason in &action.reasons {
        let _ = writeln!(out, "      because {}", reason.text);
    }
    if let Some(primary) = &action.same_inputs_as {
        let _ = writeln!(
            out,
            "      same inputs as {primary}: built once, reused here (cache hit)"
        );
    } else if action.cache_hit {
        let _ = writeln!(
            out,
            "      reuses the recorded build with this key (cache hit, re-verified)"
        );
    }
    // Unchanged dependencies are already done; only what runs first is worth a line.
    let pending: Vec<&str> = action
        .depends_on
        .iter()
        .filter(|address| {
            plan.action(address)
                .is_some_and(|dependency| dependency.action.is_change())
        })
        .map(String::as_str)
        .collect();
    if !pending.is_empty() {
        let _ = writeln!(out, "      after {}", pending.join(", "));
    }
    out.push('\n');
}

/// One line of sizes; `-v` adds the resolved packages, one per line.
fn render_packages(out: &mut String, packages: &crate::feeds::ProfilePackages, verbose: bool) {
    let budget = packages
        .max_image_size
        .map(|limit| format!(", budget {}", super::packages::human(limit)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "      packages: {} (installed {}, download {}{budget})",
        packages.packages.len(),
        super::packages::human(packages.installed_size),
        super::packages::human(packages.download_size)
    );
    if verbose {
        for package in &packages.packages {
            let _ = writeln!(
                out,
                "        {} {}  {}  {}",
                package.name,
                package.version,
                package.feed,
                super::packages::human(package.installed_size)
            );
        }
    }
}

fn verb(action: &Action) -> &'static str {
    match (action.resource, action.action) {
        (_, ActionKind::NoOp) => "unchanged",
        (_, ActionKind::Skip) => "skipped",
        (_, ActionKind::Remove) => "forget",
        (Resource::Builder, ActionKind::Replace) => "fetch again",
        (Resource::Builder, _) => "fetch",
        (Resource::Build, ActionKind::Create) => "build",
        (Resource::Build, _) => "rebuild",
        (Resource::Flash, _) => "flash",
    }
}

fn key_text(action: &Action) -> String {
    let after = match (&action.key, action.resource) {
        (Some(key), _) => short_hash(key).to_string(),
        (None, Resource::Flash) => "(known after build)".to_string(),
        (None, _) => "(known after fetch)".to_string(),
    };
    match &action.previous_key {
        Some(previous) if action.action == ActionKind::Remove => short_hash(previous).to_string(),
        Some(previous) if Some(previous) != action.key.as_ref() => {
            format!("{} → {after}", short_hash(previous))
        }
        _ => after,
    }
}

/// `Plan: 1 to fetch, 2 to build (1 reused), 1 to rebuild, 0 to flash, 0 to forget;
/// 3 unchanged.`
pub fn summary_line(plan: &Plan) -> String {
    let summary = &plan.summary;
    let reused = |kind: ActionKind| {
        let count = plan
            .actions
            .iter()
            .filter(|a| a.resource == Resource::Build && a.action == kind && a.cache_hit)
            .count();
        match count {
            0 => String::new(),
            count => format!(" ({count} reused)"),
        }
    };
    let mut line = format!(
        "Plan: {} to fetch, {} to build{}, {} to rebuild{}, {} to flash, {} to forget; {} unchanged",
        summary.fetch,
        summary.build,
        reused(ActionKind::Create),
        summary.rebuild,
        reused(ActionKind::Replace),
        summary.flash,
        summary.remove,
        summary.unchanged
    );
    if summary.skip > 0 {
        let _ = write!(line, ", {} skipped", summary.skip);
    }
    line.push('.');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(packages: usize) -> Vec<String> {
        let mut needs = vec!["openwrt-imagebuilder-23.05.4-x86-64.Linux-x86_64.tar.xz".to_string()];
        needs.extend((0..packages).map(|n| format!("package openwrt_base/p{n}_1.0_x86_64.ipk")));
        needs
    }

    #[test]
    fn many_package_files_are_counted_unless_verbose() {
        let mut short = String::new();
        render_offline_needs(&mut short, &needs(25), false);
        assert!(short.contains("tar.xz"), "{short}");
        assert!(short.contains("p9_1.0"), "{short}");
        assert!(!short.contains("p10_1.0"), "{short}");
        assert!(short.contains("… and 15 more package files"), "{short}");

        let mut long = String::new();
        render_offline_needs(&mut long, &needs(25), true);
        assert!(long.contains("p24_1.0"), "{long}");
        assert!(!long.contains("more package files"), "{long}");

        let mut few = String::new();
        render_offline_needs(&mut few, &needs(3), false);
        assert!(
            few.contains("p2_1.0") && !few.contains("more package files"),
            "{few}"
        );

        let mut none = String::new();
        render_offline_needs(&mut none, &[], false);
        assert!(none.is_empty());
    }
}
