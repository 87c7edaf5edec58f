//! Plan-time package truth (issue 12, docs/feeds.md): each profile's `packages` and
//! `packages_remove` resolved against its builder's feeds, as located problems and warnings:
//! an unknown name at its `packages[i]` entry with the closest names, an unsatisfiable
//! dependency or a conflict with the chain that leads to it, a removal that removes nothing,
//! and the image estimate against the flash budget. No I/O: the feeds come loaded.

use crate::cas::Cas;
use crate::error::{Location, Problem};
use crate::feeds::prepare::{arrows, describe};
use crate::feeds::{BuilderFeeds, Origin, PackageFailure, PackageList, ProfilePackages};
use crate::imagebuilder::ProfilesJson;
use crate::key::normalize_names;
use crate::manifest::LoadedProfile;
use crate::triple::Triple;

/// Warn when the estimate uses this share of the budget or more (the estimate leaves out the
/// kernel and file system overhead).
const BUDGET_WARNING_PERCENT: u64 = 90;

/// What one profile's check found.
pub(crate) struct ProfileFindings {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub packages: ProfilePackages,
    /// Package files the cache lacks (when a cache was given).
    pub missing: Vec<String>,
}

/// Resolves one profile against its builder's feeds. `cas` (the package cache) makes the
/// result list the package files a build would still have to download.
pub(super) fn check_profile(
    feeds: &BuilderFeeds,
    profiles: &ProfilesJson,
    triple: &Triple,
    loaded: &LoadedProfile,
    cas: Option<&Cas>,
) -> Option<ProfileFindings> {
    let profile = &loaded.profile;
    // An unknown Image Builder profile is reported by the profiles.json check.
    let device = profiles.device(&profile.imagebuilder_profile)?;
    let additions = normalize_names(&profile.packages);
    let removals = normalize_names(&profile.packages_remove);
    let list = PackageList {
        defaults: &profiles.default_packages,
        device: &device.device_packages,
        additions: &additions,
        removals: &removals,
    };
    let check = feeds.check(&list, cas);
    let locate = |origin: Origin| match origin {
        Origin::User(index) => entry_location(loaded, "packages", &additions[index]),
        Origin::Default => loaded.location("imagebuilder_profile"),
    };
    let mut problems: Vec<Problem> = check
        .failures
        .iter()
        .map(|failure| failure_problem(failure, triple, &locate))
        .collect();
    let mut warnings = removal_warnings(loaded, &list, triple);
    for (name, chain) in &check.pulled_back {
        warnings.push(
            Problem::validation(format!(
                "`{name}` is in `packages_remove`, but {} installs it anyway",
                arrows(chain)
            ))
            .at(entry_location(loaded, "packages_remove", name))
            .with_label("installed as a dependency")
            .with_help(format!(
                "remove what depends on `{name}` too, or drop this entry"
            )),
        );
    }
    let mut packages = check.packages;
    let limit = profile
        .max_image_size
        .map(|bytes| (bytes, "max_image_size"))
        .or_else(|| {
            device
                .file_size_limits
                .as_ref()
                .and_then(|limits| limits.image)
                .map(|bytes| (bytes, "imagebuilder_profile"))
        });
    if let Some((limit, field)) = limit {
        packages.max_image_size = Some(limit);
        let finding = budget_problem(&packages, limit, field, loaded);
        if packages.download_size > limit {
            problems.extend(finding);
        } else {
            warnings.extend(finding);
        }
    }
    Some(ProfileFindings {
        problems,
        warnings,
        packages,
        missing: check.missing,
    })
}

/// Where a name is written in a list field (`packages[2]`); the field itself otherwise.
fn entry_location(loaded: &LoadedProfile, field: &str, name: &str) -> Location {
    let list = match field {
        "packages" => &loaded.profile.packages,
        _ => &loaded.profile.packages_remove,
    };
    match list.iter().position(|written| written.trim() == name) {
        Some(index) => loaded.location(&format!("{field}[{index}]")),
        None => loaded.location(field),
    }
}

fn failure_problem(
    failure: &PackageFailure,
    triple: &Triple,
    locate: &dyn Fn(Origin) -> Location,
) -> Problem {
    match failure {
        PackageFailure::Unknown {
            origin: origin @ Origin::User(_),
            name,
            closest,
        } => {
            let closest: Vec<String> = closest.iter().map(|name| format!("`{name}`")).collect();
            Problem::validation(format!(
                "OpenWrt {} {}/{} has no package `{name}` in its feeds",
                triple.release, triple.target, triple.subtarget
            ))
            .at(locate(*origin))
            .with_label("not in any feed")
            .with_help(format!("closest package names: {}", closest.join(", ")))
        }
        PackageFailure::Unknown { name, origin, .. } => Problem::validation(format!(
            "the default or device package `{name}` is in no feed of {triple}"
        ))
        .at(locate(*origin))
        .with_label("its packages cannot all be installed")
        .with_help("the mirror's feeds are incomplete; try another mirror, or remove the package with `packages_remove`"),
        PackageFailure::Unsatisfied { origin, .. } => Problem::validation(format!(
            "{} ({triple})",
            describe(failure)
        ))
        .at(locate(*origin))
        .with_label("dependency cannot be satisfied")
        .with_help("remove the package, or add one that provides what is missing"),
        PackageFailure::Conflict {
            origin,
            other_chain,
            ..
        } => {
            let other = other_chain.last().cloned().unwrap_or_default();
            Problem::validation(format!("packages conflict: {}", describe(failure)))
                .at(locate(*origin))
                .with_label("conflicting packages")
                .with_help(format!(
                    "install only one of them: e.g. add `{other}` to `packages_remove`"
                ))
        }
    }
}

/// A `packages_remove` entry that is not in the default or device package set removes
/// nothing (ASU drops such names silently; imagegen says so).
fn removal_warnings(loaded: &LoadedProfile, list: &PackageList, triple: &Triple) -> Vec<Problem> {
    list.removals
        .iter()
        .filter(|name| !list.defaults.contains(name) && !list.device.contains(name))
        .map(|name| {
            Problem::validation(format!(
                "`{name}` is not a default or device package of `{}` ({triple}): removing it removes nothing",
                loaded.profile.imagebuilder_profile
            ))
            .at(entry_location(loaded, "packages_remove", name))
            .with_label("not in the default package set")
            .with_help("drop the entry, or check the spelling")
        })
        .collect()
}

fn budget_problem(
    packages: &ProfilePackages,
    limit: u64,
    field: &str,
    loaded: &LoadedProfile,
) -> Option<Problem> {
    let estimate = packages.download_size;
    let over = estimate > limit;
    if !over && estimate.saturating_mul(100) < limit.saturating_mul(BUDGET_WARNING_PERCENT) {
        return None;
    }
    let source = match field {
        "max_image_size" => "`max_image_size`",
        _ => "the device's flash (profiles.json `file_size_limits`)",
    };
    let message = if over {
        format!(
            "the image cannot fit: its packages alone are {} compressed, {source} allows {}",
            human(estimate),
            human(limit)
        )
    } else {
        format!(
            "the image may not fit: its packages are {} compressed, {}% of the {} {source} allows (kernel and file system not counted)",
            human(estimate),
            estimate.saturating_mul(100) / limit.max(1),
            human(limit)
        )
    };
    Some(
        Problem::validation(message)
            .at(loaded.location(field))
            .with_label(if over {
                "over budget"
            } else {
                "near the budget"
            })
            .with_help("remove packages (`plan -v` lists them with their sizes)"),
    )
}

/// `1.5 MiB`, `812 KiB`, `96 B`.
pub(crate) fn human(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}
