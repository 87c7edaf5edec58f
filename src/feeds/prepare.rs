//! The pinned feeds of a builder, loaded for planning or building, and everything one build
//! needs to install without a network: each feed's pinned index and exactly the package
//! files the resolution installs, verified, in the package cache ([`SlotFeeds`]; the build
//! links them into its worker slot, `build::feeds`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::check::{BuilderFeeds, PackageFailure, PackageList};
use super::fetch::{self, FeedPin};
use super::{FeedSource, IndexFormat, store};
use crate::error::{Error, ErrorCode, Result};
use crate::imagebuilder::{Keyring, MirrorClient, ProfilesJson};

/// The feed a pin describes (its directory and index format from the index path).
pub fn source_of(pin: &FeedPin) -> Option<FeedSource> {
    [IndexFormat::Opkg, IndexFormat::Apk]
        .into_iter()
        .find_map(|format| {
            let dir = pin
                .index
                .strip_suffix(&format!("/{}", format.index_name()))?;
            Some(FeedSource {
                name: pin.name.clone(),
                dir: dir.to_string(),
                format,
            })
        })
}

/// How an index the cache lacks may be fetched.
pub struct Fetcher<'a> {
    pub client: &'a MirrorClient,
    pub keyring: &'a Keyring,
    pub verify: bool,
}

/// The pinned feeds from the cache; an index the cache lacks is fetched with `fetcher` and
/// must hash to its pin. Errors: `precondition` when an index is neither cached nor
/// fetchable, `stale_plan` when the mirror now has another index.
pub fn pinned_feeds(
    cache_dir: &Path,
    pins: &[FeedPin],
    fetcher: Option<&Fetcher>,
) -> Result<BuilderFeeds> {
    let mut feeds = Vec::with_capacity(pins.len());
    for pin in pins {
        let source = source_of(pin).ok_or_else(|| {
            Error::new(
                ErrorCode::Validation,
                format!(
                    "imagegen.lock: feed `{}` has an index path `{}` that names no known index",
                    pin.name, pin.index
                ),
            )
        })?;
        if let Some(parsed) = fetch::load(cache_dir, source.format, &pin.sha256) {
            feeds.push((pin.name.clone(), parsed));
            continue;
        }
        let Some(fetcher) = fetcher else {
            return Err(Error::new(
                ErrorCode::Precondition,
                format!(
                    "offline: the pinned index of feed `{}` ({}) is not in the cache",
                    pin.name,
                    crate::key::short_hash(&pin.sha256)
                ),
            )
            .with_help("run `imagegen lock` (or any plan) once with the mirror reachable"));
        };
        let fetched = fetch::fetch_index(
            fetcher.client,
            fetcher.keyring,
            fetcher.verify,
            &source,
            cache_dir,
        )?;
        if fetched.sha256 != pin.sha256 {
            return Err(moved_error(pin, &fetched.sha256));
        }
        let parsed = fetch::load(cache_dir, source.format, &pin.sha256)
            .ok_or_else(|| Error::internal("a fetched feed index vanished from the cache"))?;
        feeds.push((pin.name.clone(), parsed));
    }
    Ok(BuilderFeeds::new(feeds))
}

pub(crate) fn moved_error(pin: &FeedPin, upstream: &str) -> Error {
    Error::new(
        ErrorCode::StalePlan,
        format!(
            "imagegen.lock pins index {} of feed `{}` but the mirror now has {}",
            crate::key::short_hash(&pin.sha256),
            pin.name,
            crate::key::short_hash(upstream)
        ),
    )
    .with_help("run `imagegen lock --upgrade` and review the change")
}

/// One feed as a build sees it: where its pinned index files are, and the package files to
/// offer (file name in the feed → verified blob in the package cache).
#[derive(Debug, Clone)]
pub struct SlotFeed {
    pub source: FeedSource,
    /// The cache directory holding the index, its signature and (opkg) `Packages.gz`.
    pub index_dir: PathBuf,
    pub packages: BTreeMap<String, PathBuf>,
}

/// Every feed of a build, in repository-list order.
#[derive(Debug, Clone, Default)]
pub struct SlotFeeds {
    pub feeds: Vec<SlotFeed>,
}

/// What one build installs from.
pub struct BuildPackages<'a> {
    pub pins: &'a [FeedPin],
    pub profiles: &'a ProfilesJson,
    pub imagebuilder_profile: &'a str,
    pub additions: &'a [String],
    pub removals: &'a [String],
}

/// Resolves a build's packages against the pinned feeds and makes sure every package file
/// it installs is in the cache, verified; downloads what is missing unless `fetcher` is
/// `None` (offline), which then fails listing what is missing.
pub fn prepare_build(
    cache_dir: &Path,
    work_dir: &Path,
    build: &BuildPackages,
    fetcher: Option<&Fetcher>,
) -> Result<SlotFeeds> {
    let feeds = pinned_feeds(cache_dir, build.pins, fetcher)?;
    let device = build
        .profiles
        .device(build.imagebuilder_profile)
        .map(|info| info.device_packages.clone())
        .unwrap_or_default();
    let (_, resolution) = feeds.resolution(&PackageList {
        defaults: &build.profiles.default_packages,
        device: &device,
        additions: build.additions,
        removals: build.removals,
    });
    if !resolution.failures.is_empty() {
        let check = feeds.check(
            &PackageList {
                defaults: &build.profiles.default_packages,
                device: &device,
                additions: build.additions,
                removals: build.removals,
            },
            None,
        );
        return Err(unresolvable(build.imagebuilder_profile, &check.failures));
    }
    let cas = store::open(cache_dir)?;
    let universe = feeds.universe();
    let mut by_feed: BTreeMap<&str, BTreeMap<String, PathBuf>> = BTreeMap::new();
    let mut missing = Vec::new();
    for &id in &resolution.installed {
        let package = universe.package(id);
        let feed = universe.feed_of(id);
        let file = package.file().map_err(|why| {
            Error::new(
                ErrorCode::DownloadError,
                format!(
                    "feed `{feed}` lists package `{}` with {why}; it cannot be fetched safely",
                    package.name
                ),
            )
        })?;
        let source = build
            .pins
            .iter()
            .find(|pin| pin.name == feed)
            .and_then(source_of)
            .ok_or_else(|| Error::internal(format!("no pin for feed `{feed}`")))?;
        let blob = match store::verified(&cas, &file)? {
            Some(blob) => blob,
            None => match fetcher {
                Some(fetcher) => {
                    store::download(fetcher.client, &cas, &source.dir, &file, work_dir)?
                }
                None => {
                    missing.push(format!("{feed}/{}", file.filename));
                    continue;
                }
            },
        };
        by_feed
            .entry(feed)
            .or_default()
            .insert(file.filename.to_string(), blob);
    }
    if !missing.is_empty() {
        return Err(offline_missing(&missing));
    }
    let feeds = build
        .pins
        .iter()
        .filter_map(|pin| {
            let source = source_of(pin)?;
            Some(SlotFeed {
                index_dir: fetch::cached_dir(cache_dir, &pin.sha256),
                packages: by_feed.remove(pin.name.as_str()).unwrap_or_default(),
                source,
            })
        })
        .collect();
    Ok(SlotFeeds { feeds })
}

fn offline_missing(missing: &[String]) -> Error {
    let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
    let more = match missing.len().saturating_sub(shown.len()) {
        0 => String::new(),
        more => format!(" and {more} more"),
    };
    Error::new(
        ErrorCode::Precondition,
        format!(
            "offline: {} package files are not in the package cache: {}{more}",
            missing.len(),
            shown.join(", ")
        ),
    )
    .with_help(
        "run once with the mirror reachable (`imagegen plan --offline` lists what is missing)",
    )
    .with_details(serde_json::json!({ "missing_packages": missing }))
}

/// The error for a package list `plan` should have refused (the lock or fleet changed since).
fn unresolvable(profile: &str, failures: &[PackageFailure]) -> Error {
    let described: Vec<String> = failures.iter().map(describe).collect();
    Error::new(
        ErrorCode::Validation,
        format!(
            "the packages of Image Builder profile `{profile}` cannot be installed: {}",
            described.join("; ")
        ),
    )
    .with_help("run `imagegen validate` for the locations and suggestions")
}

/// One line per failure, for messages.
pub fn describe(failure: &PackageFailure) -> String {
    match failure {
        PackageFailure::Unknown { name, .. } => format!("no feed offers `{name}`"),
        PackageFailure::Unsatisfied {
            chain, relation, ..
        } => format!("{} needs `{relation}`, which no feed offers", arrows(chain)),
        PackageFailure::Conflict {
            chain, other_chain, ..
        } => format!("{} conflicts with {}", arrows(chain), arrows(other_chain)),
    }
}

/// `a` → `b` → `c`.
pub fn arrows(chain: &[String]) -> String {
    chain
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// What one build installs from, per the lock: `None` when the lock pins no feeds for its
/// builder (a lock from an older imagegen; the Image Builder's own repository list stays).
/// The pins must be the ones the build's key was computed with. Reads the package cache;
/// uses the mirror only for what the cache lacks (and not at all offline).
pub fn for_build(
    settings: &crate::settings::Settings,
    entry: Option<&crate::lock::LockEntry>,
    inputs: &crate::key::BuildInputs,
) -> Result<Option<SlotFeeds>> {
    let Some(entry) = entry.filter(|entry| !entry.feeds.is_empty()) else {
        return Ok(None);
    };
    let pinned: Vec<(&str, &str)> = entry
        .feeds
        .iter()
        .map(|pin| (pin.name.as_str(), pin.sha256.as_str()))
        .collect();
    let planned: Vec<(&str, &str)> = inputs
        .feeds
        .iter()
        .map(|feed| (feed.name.as_str(), feed.sha256.as_str()))
        .collect();
    if pinned != planned {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!(
                "imagegen.lock pins other package feeds for {} than the plan used",
                entry.triple
            ),
        )
        .with_help("run `imagegen plan` again"));
    }
    let reachable = crate::imagebuilder::cache::mirror_reachable(settings);
    let profiles_json = match crate::imagebuilder::cache::cached_profiles_json(
        settings,
        &entry.triple,
        &entry.profiles_json_sha256,
    ) {
        Some(bytes) => bytes,
        None if reachable => {
            let metadata = crate::imagebuilder::cache::fetch_metadata(settings, &entry.triple)?;
            if metadata.profiles_json_sha256 != entry.profiles_json_sha256 {
                return Err(Error::new(
                    ErrorCode::StalePlan,
                    format!(
                        "the profiles.json of {} changed upstream since the lock",
                        entry.triple
                    ),
                )
                .with_help(format!("run `imagegen lock --upgrade {}`", entry.triple)));
            }
            metadata.profiles_json
        }
        None => {
            return Err(Error::new(
                ErrorCode::Precondition,
                format!(
                    "offline: the profiles.json of {} is not cached",
                    entry.triple
                ),
            )
            .with_help("run `imagegen lock` once with the mirror reachable"));
        }
    };
    let profiles = ProfilesJson::parse(&profiles_json, &format!("{}/profiles.json", entry.triple))?;
    let client = crate::imagebuilder::cache::client(settings)?;
    let keyring = crate::imagebuilder::cache::keyring(settings)?;
    let fetcher = Fetcher {
        client: &client,
        keyring: &keyring,
        verify: settings.verify_signatures.value,
    };
    let work_dir = settings.tmp_dir.value.join("downloads").join("packages");
    prepare_build(
        &settings.cache_dir.value,
        &work_dir,
        &BuildPackages {
            pins: &entry.feeds,
            profiles: &profiles,
            imagebuilder_profile: &inputs.imagebuilder_profile,
            additions: &inputs.packages,
            removals: &inputs.packages_remove,
        },
        reachable.then_some(&fetcher),
    )
    .map(Some)
}
