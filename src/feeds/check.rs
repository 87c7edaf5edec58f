//! One profile's package list against its builder's feeds: what opkg would install, its
//! sizes, and every reason it could not (unknown names with the closest known ones,
//! unsatisfiable dependencies and conflicts, each with the chain that leads to it). Plain
//! facts; `plan` turns them into located problems.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::index::Package;
pub use super::resolve::Origin;
use super::resolve::{Failure, Requested, Resolution, Universe, request, resolve};
use crate::cas::Cas;

/// The feeds of one builder, ready to resolve many profiles against (from several threads).
pub struct BuilderFeeds {
    universe: Universe,
    /// Whether the package cache holds each package's file, once looked up: profiles share
    /// most of their packages.
    cached: std::sync::Mutex<super::resolve::IdMap<bool>>,
}

/// One installed package, as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResolvedPackage {
    pub name: String,
    pub version: String,
    /// The feed it comes from (`openwrt_base`).
    pub feed: String,
    /// Bytes of the package file.
    pub size: u64,
    /// Bytes it takes installed (`Installed-Size`).
    pub installed_size: u64,
}

/// What a profile's image will contain, from the pinned indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProfilePackages {
    /// Sum of `Installed-Size` over `packages`.
    pub installed_size: u64,
    /// Sum of the package files' `Size`: what a cold cache downloads, and the estimate the
    /// size budget compares (docs/feeds.md, "Size budget").
    pub download_size: u64,
    /// The flash budget the estimate was compared with, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_image_size: Option<u64>,
    /// Install order (dependencies first).
    pub packages: Vec<ResolvedPackage>,
}

/// Why a package list cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageFailure {
    /// No feed has the name; `closest` are the nearest names that exist.
    Unknown {
        origin: Origin,
        name: String,
        closest: Vec<String>,
    },
    /// `chain` (from the requested name) ends at a package whose `relation` no feed meets.
    Unsatisfied {
        origin: Origin,
        chain: Vec<String>,
        relation: String,
    },
    /// The last packages of the two chains conflict.
    Conflict {
        origin: Origin,
        chain: Vec<String>,
        other_origin: Origin,
        other_chain: Vec<String>,
    },
}

/// The outcome for one profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageCheck {
    pub packages: ProfilePackages,
    pub failures: Vec<PackageFailure>,
    /// Removed names that a dependency installs anyway, with the chain that pulls each in.
    pub pulled_back: Vec<(String, Vec<String>)>,
    /// Package files the cache lacks (`<feed>/<file>`); only when a cache was given.
    pub missing: Vec<String>,
}

/// Package lists as the profile and the Image Builder give them.
pub struct PackageList<'a> {
    pub defaults: &'a [String],
    pub device: &'a [String],
    pub additions: &'a [String],
    pub removals: &'a [String],
}

impl BuilderFeeds {
    /// The builder's feeds (name, parsed index) in repository-list order.
    pub(crate) fn new(feeds: Vec<(String, Arc<Vec<Package>>)>) -> BuilderFeeds {
        BuilderFeeds {
            universe: Universe::new(feeds),
            cached: Default::default(),
        }
    }

    pub(crate) fn universe(&self) -> &Universe {
        &self.universe
    }

    /// Resolves `list` as `make image` would. With the package cache, the result also lists
    /// the package files it does not hold yet.
    pub fn check(&self, list: &PackageList, cache: Option<&Cas>) -> PackageCheck {
        let requested = request(list.defaults, list.device, list.additions, list.removals);
        let resolution = resolve(&self.universe, &requested);
        let mut check = self.outcome(&requested, &resolution, list.removals);
        if let Some(cache) = cache {
            check.missing = resolution
                .installed
                .iter()
                .filter_map(|id| {
                    let package = self.universe.package(*id);
                    let file = package.file().ok()?;
                    let known = self
                        .cached
                        .lock()
                        .ok()
                        .and_then(|cached| cached.get(id).copied());
                    let present = known.unwrap_or_else(|| {
                        let present = super::store::has(cache, file.sha256);
                        if let Ok(mut cached) = self.cached.lock() {
                            cached.insert(*id, present);
                        }
                        present
                    });
                    (!present).then(|| format!("{}/{}", self.universe.feed_of(*id), file.filename))
                })
                .collect();
        }
        check
    }

    /// Resolves `list` and returns the resolution itself (for a build).
    pub(crate) fn resolution(&self, list: &PackageList) -> (Vec<Requested>, Resolution) {
        let requested = request(list.defaults, list.device, list.additions, list.removals);
        let resolution = resolve(&self.universe, &requested);
        (requested, resolution)
    }

    fn outcome(
        &self,
        requested: &[Requested],
        resolution: &Resolution,
        removals: &[String],
    ) -> PackageCheck {
        let universe = &self.universe;
        let origin = |request: usize| {
            requested
                .get(request)
                .map_or(Origin::Default, |item| item.origin)
        };
        let failures = resolution
            .failures
            .iter()
            .map(|failure| match failure {
                Failure::Unknown { request } => {
                    let name = requested
                        .get(*request)
                        .map(|item| item.name.clone())
                        .unwrap_or_default();
                    PackageFailure::Unknown {
                        origin: origin(*request),
                        closest: closest(universe, &name),
                        name,
                    }
                }
                Failure::Unsatisfied {
                    request,
                    chain,
                    relation,
                } => PackageFailure::Unsatisfied {
                    origin: origin(*request),
                    chain: chain.clone(),
                    relation: relation.clone(),
                },
                Failure::Conflict {
                    request,
                    chain,
                    other_request,
                    other_chain,
                } => PackageFailure::Conflict {
                    origin: origin(*request),
                    chain: chain.clone(),
                    other_origin: origin(*other_request),
                    other_chain: other_chain.clone(),
                },
            })
            .collect();
        let pulled_back = removals
            .iter()
            .filter_map(|name| {
                let id = resolution.installs(universe, name)?;
                Some((name.clone(), resolution.chain(universe, id).1))
            })
            .collect();
        PackageCheck {
            packages: summary(universe, resolution),
            failures,
            pulled_back,
            missing: Vec::new(),
        }
    }
}

fn summary(universe: &Universe, resolution: &Resolution) -> ProfilePackages {
    let packages: Vec<ResolvedPackage> = resolution
        .installed
        .iter()
        .map(|id| {
            let package = universe.package(*id);
            ResolvedPackage {
                name: package.name.clone(),
                version: package.version.clone(),
                feed: universe.feed_of(*id).to_string(),
                size: package.size.unwrap_or(0),
                installed_size: package.installed_size,
            }
        })
        .collect();
    ProfilePackages {
        // Saturating: the sizes come from the mirror's index, which may say anything.
        installed_size: packages
            .iter()
            .map(|p| p.installed_size)
            .fold(0, u64::saturating_add),
        download_size: packages.iter().map(|p| p.size).fold(0, u64::saturating_add),
        max_image_size: None,
        packages,
    }
}

/// The three known names nearest to `name` (Jaro-Winkler), the best first.
fn closest(universe: &Universe, name: &str) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = universe
        .names()
        .map(|known| (strsim::jaro_winkler(name, known), known))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(3)
        .map(|(_, known)| known.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::index::parse;
    use super::*;

    #[test]
    fn a_typo_gets_the_closest_names_and_removals_pulled_back_are_seen() {
        let index = "Package: kernel\nVersion: 1\n\nPackage: libc\nVersion: 1\n\nPackage: ppp\nVersion: 1\nDepends: libc\nSize: 10\nInstalled-Size: 100\n\nPackage: luci-proto-ppp\nVersion: 1\nDepends: ppp\nSize: 5\nInstalled-Size: 50\n\nPackage: collectd\nVersion: 1\n\nPackage: collectd-mod-network\nVersion: 1\nDepends: collectd\n";
        let feeds = BuilderFeeds::new(vec![("openwrt_base".into(), Arc::new(parse(index)))]);
        let check = feeds.check(
            &PackageList {
                defaults: &["libc".into()],
                device: &[],
                additions: &["collectd-mod-netwrk".into(), "luci-proto-ppp".into()],
                removals: &["ppp".into()],
            },
            None,
        );
        assert_eq!(
            check.failures,
            [PackageFailure::Unknown {
                origin: Origin::User(0),
                name: "collectd-mod-netwrk".into(),
                closest: vec![
                    "collectd-mod-network".into(),
                    "collectd".into(),
                    "luci-proto-ppp".into()
                ],
            }]
        );
        assert_eq!(
            check.pulled_back,
            [(
                "ppp".to_string(),
                vec!["luci-proto-ppp".to_string(), "ppp".to_string()]
            )]
        );
        assert_eq!(check.packages.installed_size, 150);
        assert_eq!(check.packages.download_size, 15);
        assert_eq!(check.packages.packages[0].feed, "openwrt_base");
    }
}
