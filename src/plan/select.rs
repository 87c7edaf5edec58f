//! Working on part of a fleet. A [`Selection`] names actions by address (like Terraform's
//! `-target`) and selects profiles by id, tag, release or Image Builder; [`select`] narrows a
//! plan to the selected actions and everything they depend on. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::graph::PlanGraph;
use super::model::{ActionKind, Plan, Resource};
use crate::error::{Error, ErrorCode, Result};
use crate::manifest::{Fleet, Profile, normalize_release};
use crate::triple::Triple;

/// Which part of the fleet a plan, an apply or a build covers. Empty means all of it.
///
/// Addresses (`targets`) and profile filters add up: an action is selected when an address
/// names it or its profile passes every filter that is set (several values of one filter
/// mean any of them). Selected actions bring along everything they depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Selection {
    /// Action addresses: `build.home.ap`, `builder.23.05.4/ath79/generic`, `flash.sd-1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Profile ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Profiles carrying any of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Profiles of this OpenWrt release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Profiles built with this Image Builder: `RELEASE/TARGET/SUBTARGET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
}

impl Selection {
    /// True when nothing is narrowed: the whole fleet.
    pub fn is_everything(&self) -> bool {
        *self == Selection::default()
    }

    fn has_filters(&self) -> bool {
        !self.profiles.is_empty()
            || !self.tags.is_empty()
            || self.release.is_some()
            || self.builder.is_some()
    }

    /// Whether `profile` passes every profile filter that is set.
    pub fn matches(&self, profile: &Profile) -> Result<bool> {
        let builder = self.builder.as_deref().map(Triple::parse).transpose()?;
        let release = self.release.as_deref().map(normalize_release);
        Ok(
            (self.profiles.is_empty() || self.profiles.contains(&profile.profile_id))
                && (self.tags.is_empty() || profile.tags.iter().any(|tag| self.tags.contains(tag)))
                && release.is_none_or(|release| release == profile.openwrt_release)
                && builder.is_none_or(|builder| builder == profile.triple()),
        )
    }

    /// The command-line spelling, for messages: `--target build.a --tag lab`.
    pub fn describe(&self) -> String {
        let mut words = Vec::new();
        for (flag, values) in [
            ("--target", &self.targets),
            ("--profile", &self.profiles),
            ("--tag", &self.tags),
        ] {
            words.extend(values.iter().map(|value| format!("{flag} {value}")));
        }
        if let Some(release) = &self.release {
            words.push(format!("--release {release}"));
        }
        if let Some(builder) = &self.builder {
            words.push(format!("--builder {builder}"));
        }
        words.join(" ")
    }
}

/// Narrows `plan` to `selection` (nothing happens for an empty one): the actions named by
/// address, the build and flash actions of the selected profiles, and everything those
/// depend on. Forgetting a profile that left the fleet is only selected by its address.
/// Unknown addresses and profile ids are errors with a suggestion, as is a selection that
/// matches nothing.
pub fn select(plan: &mut Plan, fleet: &Fleet, selection: &Selection) -> Result<()> {
    if selection.is_everything() {
        return Ok(());
    }
    check_names(plan, fleet, selection)?;
    let mut roots: Vec<String> = selection.targets.clone();
    if selection.has_filters() {
        let mut selected_profiles = BTreeSet::new();
        for loaded in &fleet.profiles {
            if selection.matches(&loaded.profile)? {
                selected_profiles.insert(loaded.profile.profile_id.as_str());
            }
        }
        roots.extend(
            plan.actions
                .iter()
                .filter(|action| {
                    action.resource != Resource::Builder
                        && action.action != ActionKind::Remove
                        && action
                            .profile_id
                            .as_deref()
                            .is_some_and(|id| selected_profiles.contains(id))
                })
                .map(|action| action.address.clone()),
        );
    }
    let keep = closure(plan, &roots)?;
    if keep.is_empty() {
        return Err(Error::new(
            ErrorCode::Validation,
            format!("no action matches `{}`", selection.describe()),
        )
        .with_help("`imagegen profiles list` shows the profiles and their tags; `imagegen plan` shows every address"));
    }
    let shared = primaries(plan);
    plan.actions.retain(|action| keep.contains(&action.address));
    reshare(plan, &shared);
    plan.summary = Plan::summarize(&plan.actions);
    plan.selection = Some(selection.clone());
    Ok(())
}

/// `roots` and what they depend on. Reusing a build with the same key is not a dependency
/// here: it only saves work, so a selected build never drags in another profile's.
fn closure(plan: &Plan, roots: &[String]) -> Result<BTreeSet<String>> {
    let graph = PlanGraph::new(plan)?;
    let mut keep = BTreeSet::new();
    let mut stack: Vec<&str> = roots.iter().map(String::as_str).collect();
    while let Some(address) = stack.pop() {
        let Some(action) = plan.action(address) else {
            continue;
        };
        if !keep.insert(address.to_string()) {
            continue;
        }
        let reused = action.same_inputs_as.as_deref();
        stack.extend(
            graph
                .dependencies(address)
                .into_iter()
                .filter(|dependency| Some(*dependency) != reused),
        );
    }
    Ok(keep)
}

/// Per build key of a build that changes: whether its first (building) action reuses a
/// recorded build.
fn primaries(plan: &Plan) -> BTreeMap<String, bool> {
    plan.actions
        .iter()
        .filter(|action| action.resource == Resource::Build && action.same_inputs_as.is_none())
        .filter(|action| action.action.is_change())
        .filter_map(|action| {
            let key = action.key.clone()?;
            Some((key, action.cache_hit))
        })
        .collect()
}

/// After narrowing: a build whose key's first build was left out becomes the first itself
/// (building, or reusing a recorded build as that one would have), and the others with its
/// key reuse it instead. One build per key still holds within the selection.
fn reshare(plan: &mut Plan, shared: &BTreeMap<String, bool>) {
    let kept: BTreeSet<String> = plan.actions.iter().map(|a| a.address.clone()).collect();
    let mut new_primary: BTreeMap<String, String> = BTreeMap::new();
    for action in &mut plan.actions {
        let Some(old) = action
            .same_inputs_as
            .clone()
            .filter(|old| !kept.contains(old))
        else {
            continue;
        };
        let Some(key) = action.key.clone() else {
            continue;
        };
        action.depends_on.retain(|dependency| *dependency != old);
        match new_primary.get(&key) {
            Some(primary) => {
                action.depends_on.push(primary.clone());
                action.same_inputs_as = Some(primary.clone());
            }
            None => {
                action.same_inputs_as = None;
                action.cache_hit = shared.get(&key).copied().unwrap_or(false);
                new_primary.insert(key, action.address.clone());
            }
        }
    }
}

/// Every address must be an action of the plan, every profile id a profile of the fleet, and
/// the Image Builder filter must parse.
fn check_names(plan: &Plan, fleet: &Fleet, selection: &Selection) -> Result<()> {
    if let Some(builder) = &selection.builder {
        Triple::parse(builder)?;
    }
    let addresses: Vec<&str> = plan
        .actions
        .iter()
        .map(|action| action.address.as_str())
        .collect();
    for target in &selection.targets {
        if addresses.contains(&target.as_str()) {
            continue;
        }
        let error = Error::new(
            ErrorCode::Validation,
            format!("`--target {target}`: the plan has no action `{target}`"),
        );
        return Err(
            match crate::source::suggest(target, addresses.iter().copied()) {
                Some(closest) => error.with_help(format!("did you mean `{closest}`?")),
                None => error.with_help("`imagegen plan` lists every address"),
            },
        );
    }
    let ids: Vec<&str> = fleet
        .profiles
        .iter()
        .map(|loaded| loaded.profile.profile_id.as_str())
        .collect();
    for profile in &selection.profiles {
        if ids.contains(&profile.as_str()) {
            continue;
        }
        let error = Error::new(
            ErrorCode::ProfileNotFound,
            format!("no profile `{profile}` in fleet `{}`", fleet.name),
        );
        return Err(match crate::source::suggest(profile, ids.iter().copied()) {
            Some(closest) => error.with_help(format!("did you mean `{closest}`?")),
            None => error.with_help("`imagegen profiles list` shows the profile ids"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself_as_flags() {
        let selection = Selection {
            targets: vec!["build.lab.a".into()],
            tags: vec!["lab".into()],
            builder: Some("23.05.4/x86/64".into()),
            ..Selection::default()
        };
        assert_eq!(
            selection.describe(),
            "--target build.lab.a --tag lab --builder 23.05.4/x86/64"
        );
        assert!(!selection.is_everything());
        assert!(Selection::default().is_everything());
    }
}
