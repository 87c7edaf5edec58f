//! Dependency resolution the way opkg does it inside the Image Builder, so that what `plan`
//! predicts is what `make image` installs: the package list of `make image` (reference §5.4:
//! defaults, device packages and `kernel`, then the user's list, `-x` removals applied), then
//! for each name the highest version that satisfies the constraint (an earlier feed wins a
//! tie), else a package that `Provides` it (one already chosen first), depth first, and
//! finally `Conflicts` between chosen packages. The stand-in's `standin_packages.py` does the
//! same. Pure: indexes in, a [`Resolution`] out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::index::{Package, Relation};
use super::version;

/// The packages of one Image Builder's feeds, in repository-list order.
pub(crate) struct Universe {
    feeds: Vec<(String, Arc<Vec<Package>>)>,
    /// Every package as (feed position, index in that feed), feed order.
    entries: Vec<(u16, u32)>,
    by_name: HashMap<String, Vec<u32>>,
    providers: HashMap<String, Vec<u32>>,
}

/// A package in a [`Universe`].
pub(crate) type PackageId = u32;

impl Universe {
    /// Combines feeds (name, parsed index) in the order the Image Builder lists them.
    pub(crate) fn new(feeds: Vec<(String, Arc<Vec<Package>>)>) -> Universe {
        let mut universe = Universe {
            feeds,
            entries: Vec::new(),
            by_name: HashMap::new(),
            providers: HashMap::new(),
        };
        for (position, (_, packages)) in universe.feeds.iter().enumerate() {
            for (index, package) in packages.iter().enumerate() {
                let id = universe.entries.len() as PackageId;
                universe.entries.push((position as u16, index as u32));
                universe
                    .by_name
                    .entry(package.name.clone())
                    .or_default()
                    .push(id);
                for provided in &package.provides {
                    universe
                        .providers
                        .entry(provided.clone())
                        .or_default()
                        .push(id);
                }
            }
        }
        universe
    }

    pub(crate) fn package(&self, id: PackageId) -> &Package {
        let (feed, index) = self.entries[id as usize];
        &self.feeds[feed as usize].1[index as usize]
    }

    /// The name of the feed a package comes from.
    pub(crate) fn feed_of(&self, id: PackageId) -> &str {
        &self.feeds[self.entries[id as usize].0 as usize].0
    }

    fn rank(&self, id: PackageId) -> u16 {
        self.entries[id as usize].0
    }

    /// Whether any feed has a package of that name or one that provides it.
    pub(crate) fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name) || self.providers.contains_key(name)
    }

    /// Every package name, for suggestions.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// opkg's choice for a relation (see the module comment).
    fn best(&self, relation: &Relation, chosen: &HashMap<&str, PackageId>) -> Option<PackageId> {
        let mut best: Option<PackageId> = None;
        for &id in self.by_name.get(&relation.name).into_iter().flatten() {
            let version = &self.package(id).version;
            if !relation.accepts(version) {
                continue;
            }
            let better = best.is_none_or(|current| {
                version::compare(version, &self.package(current).version).is_gt()
            });
            if better {
                best = Some(id);
            }
        }
        if best.is_some() {
            return best;
        }
        let mut providers: Vec<PackageId> = self
            .providers
            .get(&relation.name)
            .cloned()
            .unwrap_or_default();
        providers.sort_by(|a, b| {
            (self.rank(*a), &self.package(*a).name).cmp(&(self.rank(*b), &self.package(*b).name))
        });
        if let Some(&id) = providers
            .iter()
            .find(|id| chosen.contains_key(self.package(**id).name.as_str()))
        {
            return Some(id);
        }
        match relation.constraint {
            None => providers.first().copied(),
            Some(_) => None,
        }
    }
}

/// Where a requested name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The profile's `packages[i]`.
    User(usize),
    /// The target's default packages, the device's packages or `kernel`.
    Default,
}

/// One name of the `make image` package list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requested {
    pub name: String,
    pub origin: Origin,
}

/// The list `make image` installs (reference §5.4): `sort(defaults + device + kernel)` with
/// `-x` entries and their targets dropped, the user's additions and `-removals` in front,
/// and the filter applied again.
pub(crate) fn request(
    defaults: &[String],
    device: &[String],
    additions: &[String],
    removals: &[String],
) -> Vec<Requested> {
    let mut base: Vec<&str> = defaults
        .iter()
        .chain(device)
        .map(String::as_str)
        .chain(std::iter::once("kernel"))
        .collect();
    base.sort_unstable();
    base.dedup();
    let base = drop_removed(base.into_iter().map(|name| (name, Origin::Default)));
    let user = additions
        .iter()
        .enumerate()
        .map(|(index, name)| (name.as_str(), Origin::User(index)));
    let removed = removals.iter().map(|name| format!("-{name}"));
    let removed: Vec<String> = removed.collect();
    let combined = user
        .chain(removed.iter().map(|name| (name.as_str(), Origin::Default)))
        .chain(base);
    let mut seen = HashSet::new();
    drop_removed(combined)
        .into_iter()
        .filter(|(name, _)| seen.insert(*name))
        .map(|(name, origin)| Requested {
            name: name.to_string(),
            origin,
        })
        .collect()
}

/// make's `package_filter`: drop every `-x` and every `x` that has a `-x`.
fn drop_removed<'a>(names: impl Iterator<Item = (&'a str, Origin)>) -> Vec<(&'a str, Origin)> {
    let names: Vec<(&str, Origin)> = names.collect();
    let removed: HashSet<&str> = names
        .iter()
        .filter_map(|(name, _)| name.strip_prefix('-'))
        .collect();
    names
        .into_iter()
        .filter(|(name, _)| !name.starts_with('-') && !removed.contains(name))
        .collect()
}

/// Why a package is in the result: asked for directly, or a dependency of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    Request(usize),
    Package(PackageId),
}

/// A way the package list cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No feed has the requested name (nor a package providing it).
    Unknown { request: usize },
    /// A dependency no feed satisfies; `chain` runs from the requested name to the package
    /// whose `Depends` entry fails.
    Unsatisfied {
        request: usize,
        chain: Vec<String>,
        relation: String,
    },
    /// Two chosen packages conflict; each chain runs from a requested name to the package.
    Conflict {
        request: usize,
        chain: Vec<String>,
        other_request: usize,
        other_chain: Vec<String>,
    },
}

/// What opkg would install, and every way it would fail.
pub(crate) struct Resolution {
    /// Install order (dependencies first).
    pub installed: Vec<PackageId>,
    pub failures: Vec<Failure>,
    parents: HashMap<PackageId, Parent>,
}

impl Resolution {
    /// The names from the requested one down to `id`, and the request's index.
    pub(crate) fn chain(&self, universe: &Universe, id: PackageId) -> (usize, Vec<String>) {
        let mut chain = vec![universe.package(id).name.clone()];
        let mut current = id;
        // A parent always joined the result before its child, so this ends; the bound is
        // for safety against a bug, not a hostile index.
        for _ in 0..self.parents.len() + 1 {
            match self.parents.get(&current) {
                Some(Parent::Package(parent)) => {
                    chain.push(universe.package(*parent).name.clone());
                    current = *parent;
                }
                Some(Parent::Request(request)) => {
                    chain.reverse();
                    return (*request, chain);
                }
                None => break,
            }
        }
        chain.reverse();
        (0, chain)
    }

    /// Whether a package of that name is installed.
    pub(crate) fn installs(&self, universe: &Universe, name: &str) -> Option<PackageId> {
        self.installed
            .iter()
            .copied()
            .find(|id| universe.package(*id).name == name)
    }
}

/// Resolves the list (see the module comment). Never stops at the first failure.
pub(crate) fn resolve(universe: &Universe, requested: &[Requested]) -> Resolution {
    let mut resolution = Resolution {
        installed: Vec::new(),
        failures: Vec::new(),
        parents: HashMap::new(),
    };
    let mut chosen: HashMap<&str, PackageId> = HashMap::new();
    for (request, item) in requested.iter().enumerate() {
        if !universe.knows(&item.name) {
            resolution.failures.push(Failure::Unknown { request });
            continue;
        }
        let relation = Relation {
            name: item.name.clone(),
            constraint: None,
        };
        if let Some(id) = universe.best(&relation, &chosen) {
            visit(
                universe,
                id,
                Parent::Request(request),
                &mut chosen,
                &mut resolution,
            );
        }
    }
    check_conflicts(universe, &mut resolution);
    resolution
}

/// Depth first from `root`, with an explicit stack (a hostile index may chain thousands of
/// packages) that makes the same choices, in the same order, as a recursive walk.
fn visit<'u>(
    universe: &'u Universe,
    root: PackageId,
    parent: Parent,
    chosen: &mut HashMap<&'u str, PackageId>,
    resolution: &mut Resolution,
) {
    if chosen.contains_key(universe.package(root).name.as_str()) {
        return;
    }
    chosen.insert(&universe.package(root).name, root);
    resolution.parents.insert(root, parent);
    let mut stack: Vec<(PackageId, usize)> = vec![(root, 0)];
    while let Some((id, next)) = stack.last_mut() {
        let package = universe.package(*id);
        let Some(alternatives) = package.depends.get(*next) else {
            resolution.installed.push(*id);
            stack.pop();
            continue;
        };
        *next += 1;
        let current = *id;
        let pick = alternatives
            .iter()
            .find(|relation| universe.best(relation, chosen).is_some())
            .unwrap_or(&alternatives[0]);
        match universe.best(pick, chosen) {
            None => {
                let (request, chain) = resolution.chain(universe, current);
                resolution.failures.push(Failure::Unsatisfied {
                    request,
                    chain,
                    relation: pick.to_string(),
                });
            }
            Some(dependency) => {
                let name = universe.package(dependency).name.as_str();
                if !chosen.contains_key(name) {
                    chosen.insert(name, dependency);
                    resolution
                        .parents
                        .insert(dependency, Parent::Package(current));
                    stack.push((dependency, 0));
                }
            }
        }
    }
}

fn check_conflicts(universe: &Universe, resolution: &mut Resolution) {
    // Name → every chosen package with that name or providing it.
    let mut provided: HashMap<&str, Vec<PackageId>> = HashMap::new();
    for &id in &resolution.installed {
        let package = universe.package(id);
        provided.entry(package.name.as_str()).or_default().push(id);
        for name in &package.provides {
            provided.entry(name.as_str()).or_default().push(id);
        }
    }
    let mut reported: HashSet<(PackageId, PackageId)> = HashSet::new();
    let mut found = Vec::new();
    for &id in &resolution.installed {
        for conflict in &universe.package(id).conflicts {
            for &other in provided.get(conflict.name.as_str()).into_iter().flatten() {
                let version = &universe.package(other).version;
                let pair = (id.min(other), id.max(other));
                if other == id || !conflict.accepts(version) || !reported.insert(pair) {
                    continue;
                }
                found.push((id, other));
            }
        }
    }
    for (id, other) in found {
        let (request, chain) = resolution.chain(universe, id);
        let (other_request, other_chain) = resolution.chain(universe, other);
        resolution.failures.push(Failure::Conflict {
            request,
            chain,
            other_request,
            other_chain,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::parse;
    use super::*;

    fn universe(feeds: &[(&str, &str)]) -> Universe {
        Universe::new(
            feeds
                .iter()
                .map(|(name, text)| (name.to_string(), Arc::new(parse(text))))
                .collect(),
        )
    }

    fn names(universe: &Universe, resolution: &Resolution) -> Vec<String> {
        resolution
            .installed
            .iter()
            .map(|id| universe.package(*id).name.clone())
            .collect()
    }

    fn requested(names: &[&str]) -> Vec<Requested> {
        names
            .iter()
            .enumerate()
            .map(|(index, name)| Requested {
                name: name.to_string(),
                origin: Origin::User(index),
            })
            .collect()
    }

    const BASE: &str = "Package: libc\nVersion: 1\n\nPackage: luci\nVersion: 1\nDepends: luci-base, uhttpd\n\nPackage: luci-base\nVersion: 1\nDepends: libc, lua (>= 5.1)\n\nPackage: lua\nVersion: 5.1.5-1\nDepends: libc\n\nPackage: uhttpd\nVersion: 1\nDepends: libc\n\nPackage: dnsmasq\nVersion: 2\nDepends: libc\n\nPackage: dnsmasq-full\nVersion: 2\nProvides: dnsmasq\nConflicts: dnsmasq\nDepends: libc\n\nPackage: broken\nVersion: 1\nDepends: luci, lua (>= 6)\n";

    #[test]
    fn dependencies_come_first_and_each_once() {
        let universe = universe(&[("base", BASE)]);
        let resolution = resolve(&universe, &requested(&["luci", "dnsmasq"]));
        assert!(resolution.failures.is_empty());
        assert_eq!(
            names(&universe, &resolution),
            ["libc", "lua", "luci-base", "uhttpd", "luci", "dnsmasq"]
        );
        let lua = resolution.installs(&universe, "lua").expect("lua");
        assert_eq!(
            resolution.chain(&universe, lua).1,
            ["luci", "luci-base", "lua"]
        );
    }

    #[test]
    fn unknown_unsatisfied_and_conflicting_are_all_reported() {
        let universe = universe(&[("base", BASE)]);
        let resolution = resolve(
            &universe,
            &requested(&["nope", "broken", "dnsmasq-full", "dnsmasq"]),
        );
        assert_eq!(
            resolution.failures,
            [
                Failure::Unknown { request: 0 },
                Failure::Unsatisfied {
                    request: 1,
                    chain: vec!["broken".into()],
                    relation: "lua (>= 6)".into()
                },
                Failure::Conflict {
                    request: 2,
                    chain: vec!["dnsmasq-full".into()],
                    other_request: 3,
                    other_chain: vec!["dnsmasq".into()],
                },
            ]
        );
    }

    #[test]
    fn highest_version_wins_and_earlier_feeds_break_ties() {
        let universe = universe(&[
            ("core", "Package: a\nVersion: 1.0\nFilename: core-a\n"),
            (
                "base",
                "Package: a\nVersion: 1.10\nFilename: base-a\n\nPackage: b\nVersion: 1\nFilename: base-b\n",
            ),
            ("luci", "Package: b\nVersion: 1\nFilename: luci-b\n"),
        ]);
        let resolution = resolve(&universe, &requested(&["a", "b"]));
        let files: Vec<&str> = resolution
            .installed
            .iter()
            .map(|id| universe.package(*id).filename.as_str())
            .collect();
        assert_eq!(files, ["base-a", "base-b"]);
        assert_eq!(universe.feed_of(resolution.installed[1]), "base");
    }

    #[test]
    fn the_make_image_list_applies_removals_like_make() {
        let list = request(
            &["dnsmasq".into(), "ppp".into(), "busybox".into()],
            &["-ppp".into(), "kmod-usb2".into()],
            &["luci".into(), "busybox".into()],
            &["dnsmasq".into()],
        );
        let names: Vec<(&str, Origin)> = list.iter().map(|r| (r.name.as_str(), r.origin)).collect();
        assert_eq!(
            names,
            [
                ("luci", Origin::User(0)),
                ("busybox", Origin::User(1)),
                ("kernel", Origin::Default),
                ("kmod-usb2", Origin::Default),
            ]
        );
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let text: String = (0..50_000)
            .map(|i| format!("Package: p{i}\nVersion: 1\nDepends: p{}\n\n", i + 1))
            .collect();
        let universe = universe(&[("base", &text)]);
        let resolution = resolve(&universe, &requested(&["p0"]));
        assert_eq!(resolution.installed.len(), 50_000);
        assert_eq!(resolution.failures.len(), 1);
    }
}
