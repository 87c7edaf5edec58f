//! Dependency resolution the way opkg does it inside the Image Builder, so that what `plan`
//! predicts is what `make image` installs: the package list of `make image` (reference §5.4:
//! defaults, device packages and `kernel`, then the user's list, `-x` removals applied), then
//! for each name the highest version that satisfies the constraint (an earlier feed wins a
//! tie), else a package that `Provides` it (one already chosen first), depth first, and
//! finally `Conflicts` between chosen packages. The stand-in's `standin_packages.py` does the
//! same. Pure: indexes in, a [`Resolution`] out.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::index::{Package, Relation};
use super::version;

/// The packages of one Image Builder's feeds, in repository-list order, with every name
/// (of a package, of what one provides, of what one depends on or conflicts with) numbered
/// once, so resolving a profile hashes no strings beyond its own requests.
pub(crate) struct Universe {
    feeds: Vec<(String, Arc<Vec<Package>>)>,
    /// Every package as (feed position, index in that feed), feed order.
    entries: Vec<(u16, u32)>,
    names: HashMap<String, NameId>,
    /// Per name: the packages of that name, feed order.
    by_name: Vec<Vec<PackageId>>,
    /// Per name: the packages providing it, ordered by (feed, package name).
    providers: Vec<Vec<PackageId>>,
    /// Per package: its name.
    name_of: Vec<NameId>,
    /// Per package: the names of its `Depends` relations, flattened in order (alternatives
    /// included), starting at `depends_at[id]`.
    depends_at: Vec<u32>,
    depends: Vec<NameId>,
    /// Per package: the names of its `Conflicts`, in order.
    conflicts: Vec<Vec<NameId>>,
}

/// A name in a [`Universe`].
type NameId = u32;

/// A hasher for the dense integer ids of one universe (package and name ids are counters,
/// not input text, so a multiplicative hash cannot be steered).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = (self.0 ^ u64::from(value)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// A package in a [`Universe`].
pub(crate) type PackageId = u32;

impl Universe {
    /// Combines feeds (name, parsed index) in the order the Image Builder lists them.
    pub(crate) fn new(feeds: Vec<(String, Arc<Vec<Package>>)>) -> Universe {
        let mut universe = Universe {
            feeds,
            entries: Vec::new(),
            names: HashMap::new(),
            by_name: Vec::new(),
            providers: Vec::new(),
            name_of: Vec::new(),
            depends_at: Vec::new(),
            depends: Vec::new(),
            conflicts: Vec::new(),
        };
        let feeds = std::mem::take(&mut universe.feeds);
        for (position, (_, packages)) in feeds.iter().enumerate() {
            for (index, package) in packages.iter().enumerate() {
                let id = universe.entries.len() as PackageId;
                universe.entries.push((position as u16, index as u32));
                let name = universe.intern(&package.name);
                universe.name_of.push(name);
                universe.by_name[name as usize].push(id);
                for provided in &package.provides {
                    let provided = universe.intern(provided);
                    universe.providers[provided as usize].push(id);
                }
                universe.depends_at.push(universe.depends.len() as u32);
                for relation in package.depends.iter().flatten() {
                    let name = universe.intern(&relation.name);
                    universe.depends.push(name);
                }
                let conflicts = package
                    .conflicts
                    .iter()
                    .map(|relation| universe.intern(&relation.name))
                    .collect();
                universe.conflicts.push(conflicts);
            }
        }
        universe.feeds = feeds;
        let mut providers = std::mem::take(&mut universe.providers);
        for list in &mut providers {
            list.sort_by(|a, b| {
                (universe.rank(*a), &universe.package(*a).name)
                    .cmp(&(universe.rank(*b), &universe.package(*b).name))
            });
        }
        universe.providers = providers;
        universe
    }

    fn intern(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let id = self.by_name.len() as NameId;
        self.names.insert(name.to_string(), id);
        self.by_name.push(Vec::new());
        self.providers.push(Vec::new());
        id
    }

    fn name_id(&self, name: &str) -> Option<NameId> {
        self.names.get(name).copied()
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
        self.name_id(name).is_some_and(|name| {
            !self.by_name[name as usize].is_empty() || !self.providers[name as usize].is_empty()
        })
    }

    /// Every package name, for suggestions.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .filter(|(_, id)| !self.by_name[**id as usize].is_empty())
            .map(|(name, _)| name.as_str())
    }

    /// opkg's choice for a relation (see the module comment); `name` is the relation's name.
    fn best(&self, name: NameId, relation: &Relation, chosen: &Chosen) -> Option<PackageId> {
        let mut best: Option<PackageId> = None;
        for &id in &self.by_name[name as usize] {
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
        let providers = &self.providers[name as usize];
        if let Some(&id) = providers
            .iter()
            .find(|id| chosen.contains_key(&self.name_of[**id as usize]))
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
    parents: IdMap<Parent>,
}

/// The chosen package of each name so far.
type Chosen = IdMap<PackageId>;

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
        parents: IdMap::default(),
    };
    let mut chosen = Chosen::default();
    for (request, item) in requested.iter().enumerate() {
        let Some(name) = universe
            .name_id(&item.name)
            .filter(|_| universe.knows(&item.name))
        else {
            resolution.failures.push(Failure::Unknown { request });
            continue;
        };
        let relation = Relation {
            name: item.name.clone(),
            constraint: None,
        };
        if let Some(id) = universe.best(name, &relation, &chosen) {
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
fn visit(
    universe: &Universe,
    root: PackageId,
    parent: Parent,
    chosen: &mut Chosen,
    resolution: &mut Resolution,
) {
    let root_name = universe.name_of[root as usize];
    if chosen.contains_key(&root_name) {
        return;
    }
    chosen.insert(root_name, root);
    resolution.parents.insert(root, parent);
    // (package, next `Depends` entry, flat index of that entry's first relation name)
    let mut stack: Vec<(PackageId, usize, usize)> =
        vec![(root, 0, universe.depends_at[root as usize] as usize)];
    while let Some((id, next, flat)) = stack.last_mut() {
        let package = universe.package(*id);
        let Some(alternatives) = package.depends.get(*next) else {
            resolution.installed.push(*id);
            stack.pop();
            continue;
        };
        *next += 1;
        let names = &universe.depends[*flat..*flat + alternatives.len()];
        *flat += alternatives.len();
        let current = *id;
        // A name already chosen in a version the relation accepts: nothing to do (what the
        // full choice below would conclude too, without looking at every candidate).
        let settled = alternatives.iter().zip(names).any(|(relation, name)| {
            chosen.get(name).is_some_and(|&id| {
                universe.name_of[id as usize] == *name
                    && relation.accepts(&universe.package(id).version)
            })
        });
        if settled && alternatives.len() == 1 {
            continue;
        }
        let mut picked = None;
        for (relation, name) in alternatives.iter().zip(names) {
            if let Some(id) = universe.best(*name, relation, chosen) {
                picked = Some((relation, id));
                break;
            }
        }
        match picked {
            None => {
                let pick = &alternatives[0];
                let (request, chain) = resolution.chain(universe, current);
                resolution.failures.push(Failure::Unsatisfied {
                    request,
                    chain,
                    relation: pick.to_string(),
                });
            }
            Some((_, dependency)) => {
                let name = universe.name_of[dependency as usize];
                if let std::collections::hash_map::Entry::Vacant(entry) = chosen.entry(name) {
                    entry.insert(dependency);
                    resolution
                        .parents
                        .insert(dependency, Parent::Package(current));
                    stack.push((
                        dependency,
                        0,
                        universe.depends_at[dependency as usize] as usize,
                    ));
                }
            }
        }
    }
}

fn check_conflicts(universe: &Universe, resolution: &mut Resolution) {
    if resolution
        .installed
        .iter()
        .all(|id| universe.conflicts[*id as usize].is_empty())
    {
        return;
    }
    // Name → every chosen package with that name or providing it.
    let mut provided: IdMap<Vec<PackageId>> = IdMap::default();
    for &id in &resolution.installed {
        let package = universe.package(id);
        provided
            .entry(universe.name_of[id as usize])
            .or_default()
            .push(id);
        for name in &package.provides {
            if let Some(name) = universe.name_id(name) {
                provided.entry(name).or_default().push(id);
            }
        }
    }
    let mut reported: HashSet<(PackageId, PackageId)> = HashSet::new();
    let mut found = Vec::new();
    for &id in &resolution.installed {
        let package = universe.package(id);
        for (conflict, name) in package
            .conflicts
            .iter()
            .zip(&universe.conflicts[id as usize])
        {
            for &other in provided.get(name).into_iter().flatten() {
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
