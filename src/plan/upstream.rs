//! What upstream metadata says about the fleet, for `validate` and `plan`: each profile's
//! `imagebuilder_profile` against its target's `profiles.json` (from the metadata cache via
//! the lock, or fetched when the mirror may be read), each profile's packages against its
//! builder's pinned feed indexes (`packages`), and lock entries (archives, feed indexes)
//! upstream has moved away from. Reads the mirror and the metadata cache; never the state
//! store.

use std::collections::BTreeMap;
use std::time::Duration;

use super::capability;
use crate::error::{Error, ErrorCode, Problem, Problems, Result};
use crate::feeds::prepare::{Fetcher, pinned_feeds};
use crate::feeds::{FeedPin, ProfilePackages, source_of};
use crate::imagebuilder::{self, FetchOptions, MirrorClient, ProfilesJson, cache};
use crate::lock::{LockEntry, LockFile};
use crate::manifest::{Fleet, LoadedProfile};
use crate::settings::Settings;
use crate::triple::Triple;

/// A lock entry that no longer matches upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub triple: Triple,
    pub locked_sha256: String,
    pub locked_version: String,
    pub upstream_sha256: String,
    pub upstream_version: String,
}

impl Moved {
    pub fn describe(&self) -> String {
        format!(
            "{}: upstream now has {} ({}), imagegen.lock pins {} ({}); run `imagegen lock --upgrade {}`",
            self.triple,
            crate::key::short_hash(&self.upstream_sha256),
            self.upstream_version,
            crate::key::short_hash(&self.locked_sha256),
            self.locked_version,
            self.triple
        )
    }
}

/// A pinned feed index the mirror no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedFeed {
    pub triple: Triple,
    pub feed: String,
    pub locked_sha256: String,
    /// `None` when the feed is gone from the mirror.
    pub upstream_sha256: Option<String>,
}

impl MovedFeed {
    pub fn describe(&self) -> String {
        let now = match &self.upstream_sha256 {
            Some(sha256) => format!(
                "upstream re-published it ({})",
                crate::key::short_hash(sha256)
            ),
            None => "upstream no longer has it".to_string(),
        };
        format!(
            "{}: feed `{}` index {} in imagegen.lock: {now}; run `imagegen lock --upgrade {}`",
            self.triple,
            self.feed,
            crate::key::short_hash(&self.locked_sha256),
            self.triple
        )
    }
}

/// What `validate`/`plan` learned from upstream metadata.
#[derive(Debug, Default)]
pub struct UpstreamCheck {
    /// Profiles that ask for something upstream does not offer.
    pub problems: Vec<Problem>,
    /// Lock entries that no longer match upstream.
    pub moved: Vec<Moved>,
    /// Image Builders whose `profiles.json` could not be consulted.
    pub unchecked: Vec<Triple>,
    /// Why the mirror could not be read, when it was tried and failed.
    pub unreachable: Option<String>,
    /// The `profiles.json` of every Image Builder that was checked.
    pub profiles: BTreeMap<Triple, ProfilesJson>,
    /// Pinned feed indexes upstream has moved away from.
    pub moved_feeds: Vec<MovedFeed>,
    /// Findings that do not stop a build (a removal that removes nothing, an image near its
    /// size budget), located.
    pub warnings: Vec<Problem>,
    /// Each profile's resolved packages (by profile id), where its feeds could be read.
    pub packages: BTreeMap<String, ProfilePackages>,
    /// Builders whose packages were not checked, and why.
    pub packages_unchecked: Vec<(Triple, String)>,
    /// Package files each profile's build would download (offline plans only), by profile id.
    pub missing_packages: BTreeMap<String, Vec<String>>,
}

impl UpstreamCheck {
    /// One line per moved lock entry (archives and feed indexes).
    pub fn moved_notices(&self) -> Vec<String> {
        let archives = self.moved.iter().map(|moved| moved.describe());
        let feeds = self.moved_feeds.iter().map(|moved| moved.describe());
        archives
            .chain(feeds)
            .map(|text| format!("upstream moved: {text}"))
            .collect()
    }

    /// Everything worth a note: moved pins, then warnings (`warning: file:line:col: ...`).
    pub fn notices(&self) -> Vec<String> {
        let mut notices = self.moved_notices();
        notices.extend(self.warnings.iter().map(|warning| {
            let mut text = format!("warning: {warning}");
            if let Some(help) = &warning.help {
                text.push_str(&format!(" ({help})"));
            }
            text
        }));
        notices
    }

    /// Whether `--locked` must refuse: a pinned archive or feed index moved upstream.
    pub fn lock_outdated(&self) -> Vec<String> {
        let archives = self.moved.iter().map(|moved| moved.describe());
        archives
            .chain(self.moved_feeds.iter().map(|moved| moved.describe()))
            .collect()
    }

    /// The problems as one `validation` error, if there are any.
    pub fn problems_to_result(&self) -> Result<()> {
        let mut problems = Problems::new();
        problems.extend(self.problems.iter().cloned());
        problems.finish((), "profiles ask for what the Image Builder cannot give")
    }

    /// What the pinned `profiles.json` of `triple` says about one Image Builder profile id.
    pub(crate) fn device(
        &self,
        triple: &Triple,
        id: &str,
    ) -> Option<&crate::imagebuilder::metadata::ProfileInfo> {
        capability::device_info(self.profiles.get(triple)?, id)
    }
}

/// Checks every profile against its target's upstream `profiles.json` and notices lock
/// entries that upstream has moved away from.
pub fn check_upstream(
    fleet: &Fleet,
    lock: Option<&LockFile>,
    settings: &Settings,
) -> Result<UpstreamCheck> {
    let mut check = UpstreamCheck::default();
    let mut online = cache::mirror_reachable(settings);
    // Planning should not hang on a dead network: one quick try, then plan from the lock.
    let quick = MirrorClient::new(
        &settings.mirror.value,
        FetchOptions {
            offline: settings.offline.value,
            retries: 1,
            connect_timeout: Duration::from_secs(5),
            ..FetchOptions::default()
        },
    )?;
    let mut overview: Option<Option<Overview>> = None;
    let keyring = cache::keyring(settings)?;
    for triple in fleet.triples() {
        let entry = lock.and_then(|lock| lock.get(&triple));
        let mut profiles_json = entry.and_then(|entry| {
            cache::cached_profiles_json(settings, &triple, &entry.profiles_json_sha256)
        });
        if online {
            match cache::fetch_metadata_with(&quick, settings, &triple) {
                Ok(metadata) => {
                    if let Some(entry) = entry {
                        check.moved.extend(moved(entry, &metadata));
                    }
                    if profiles_json.is_none() {
                        profiles_json = Some(metadata.profiles_json);
                    }
                }
                Err(error)
                    if error.code == ErrorCode::DownloadError
                        && imagebuilder::mirror::is_not_found(&error) =>
                {
                    check
                        .problems
                        .extend(missing_target_problems(fleet, &triple, &error));
                    continue;
                }
                Err(error) if error.code == ErrorCode::SignatureError => return Err(error),
                Err(error) => {
                    // The lock still describes what to build; keep planning from it and
                    // say why upstream was not consulted (no retry storm per target).
                    check.unreachable = Some(error.message.clone());
                    online = false;
                }
            }
        }
        let Some(bytes) = profiles_json else {
            check.unchecked.push(triple);
            continue;
        };
        let parsed = ProfilesJson::parse(&bytes, &format!("{triple}/profiles.json"))?;
        for loaded in fleet.profiles_of(&triple) {
            if let Some(info) =
                capability::device_info(&parsed, &loaded.profile.imagebuilder_profile)
            {
                let found = capability::device_problems(loaded, &triple, info);
                check.problems.extend(found);
                continue;
            }
            let overview = overview
                .get_or_insert_with(|| {
                    cache::overview_json(settings, &triple.release)
                        .and_then(|bytes| Overview::parse(&bytes))
                })
                .as_ref();
            check
                .problems
                .push(unknown_profile_problem(loaded, &triple, &parsed, overview));
        }
        let fetcher = online.then_some(Fetcher {
            client: &quick,
            keyring: &keyring,
            verify: settings.verify_signatures.value,
        });
        let packages = PackageContext {
            fleet,
            settings,
            triple: &triple,
            profiles: &parsed,
            fetcher: fetcher.as_ref(),
        };
        check_packages(&packages, entry, &mut check)?;
        check
            .problems
            .extend(capability::flash_problems(fleet, &triple, &parsed));
        check.profiles.insert(triple, parsed);
    }
    Ok(check)
}

/// What the package check of one builder works with.
struct PackageContext<'a> {
    fleet: &'a Fleet,
    settings: &'a Settings,
    triple: &'a Triple,
    profiles: &'a ProfilesJson,
    /// How to read the mirror, when it may be read.
    fetcher: Option<&'a Fetcher<'a>>,
}

/// Resolves every profile of one builder against its pinned feeds (live ones when nothing is
/// locked yet) and notices pinned indexes the mirror moved away from.
fn check_packages(
    context: &PackageContext,
    entry: Option<&LockEntry>,
    check: &mut UpstreamCheck,
) -> Result<()> {
    let triple = context.triple;
    let mut unchecked = |why: String| check.packages_unchecked.push((triple.clone(), why));
    let pins = match (entry, context.fetcher) {
        (Some(entry), _) if entry.feeds.is_empty() => {
            unchecked(match &entry.feeds_unpinned {
                Some(why) => format!("imagegen.lock pins none of its feeds ({why})"),
                None => "imagegen.lock pins no package feeds for it (written by an older imagegen); run `imagegen lock`".into(),
            });
            return Ok(());
        }
        (Some(entry), Some(fetcher)) => match moved_feeds(context, fetcher, &entry.feeds) {
            Ok(moved) => {
                check.moved_feeds.extend(moved);
                entry.feeds.clone()
            }
            Err(error) if error.code == ErrorCode::SignatureError => return Err(error),
            Err(error) => {
                unchecked(error.message);
                return Ok(());
            }
        },
        (Some(entry), None) => entry.feeds.clone(),
        (None, None) => {
            unchecked("it is not locked and the mirror cannot be read".into());
            return Ok(());
        }
        (None, Some(fetcher)) => match live_pins(context, fetcher) {
            Ok(pins) => pins,
            Err(error) if error.code == ErrorCode::SignatureError => return Err(error),
            Err(error) => {
                unchecked(error.message);
                return Ok(());
            }
        },
    };
    let cache_dir = &context.settings.cache_dir.value;
    let feeds = match pinned_feeds(cache_dir, &pins, context.fetcher) {
        Ok(feeds) => feeds,
        Err(error) if error.code == ErrorCode::SignatureError => return Err(error),
        Err(error) => {
            unchecked(error.message);
            return Ok(());
        }
    };
    let package_cache = if context.settings.offline.value {
        crate::feeds::store::open(cache_dir).ok()
    } else {
        None
    };
    // Profiles resolve independently (the feeds are shared, read-only): in parallel, then
    // merged in fleet order, so the result does not depend on the schedule.
    let profiles: Vec<&LoadedProfile> = context.fleet.profiles_of(triple).collect();
    let found: Vec<Option<super::packages::ProfileFindings>> = {
        use rayon::prelude::*;
        profiles
            .par_iter()
            .map(|loaded| {
                super::packages::check_profile(
                    &feeds,
                    context.profiles,
                    triple,
                    loaded,
                    package_cache.as_ref(),
                )
            })
            .collect()
    };
    for (loaded, findings) in profiles.into_iter().zip(found) {
        let Some(findings) = findings else {
            continue;
        };
        let id = loaded.profile.profile_id.clone();
        check.problems.extend(findings.problems);
        check.warnings.extend(findings.warnings);
        if !findings.missing.is_empty() {
            check.missing_packages.insert(id.clone(), findings.missing);
        }
        check.packages.insert(id, findings.packages);
    }
    Ok(())
}

/// The pinned indexes the mirror now serves differently (or not at all).
fn moved_feeds(
    context: &PackageContext,
    fetcher: &Fetcher,
    pins: &[FeedPin],
) -> Result<Vec<MovedFeed>> {
    let mut moved = Vec::new();
    for pin in pins {
        let Some(source) = source_of(pin) else {
            continue;
        };
        let upstream = match crate::feeds::fetch::moved(
            fetcher.client,
            fetcher.keyring,
            fetcher.verify,
            &source,
            &pin.sha256,
            &context.settings.cache_dir.value,
        ) {
            Ok(None) => continue,
            Ok(Some(sha256)) => Some(sha256),
            Err(error) if imagebuilder::mirror::is_not_found(&error) => None,
            Err(error) => return Err(error),
        };
        moved.push(MovedFeed {
            triple: context.triple.clone(),
            feed: pin.name.clone(),
            locked_sha256: pin.sha256.clone(),
            upstream_sha256: upstream,
        });
    }
    Ok(moved)
}

/// Unlocked builder: the feeds' current indexes, fetched and verified.
fn live_pins(context: &PackageContext, fetcher: &Fetcher) -> Result<Vec<FeedPin>> {
    let sources = crate::feeds::sources(context.triple, context.profiles).ok_or_else(|| {
        Error::new(
            ErrorCode::ImagebuilderError,
            format!(
                "the profiles.json of {} names no `arch_packages`, so its feeds are unknown",
                context.triple
            ),
        )
    })?;
    sources
        .iter()
        .map(|source| {
            crate::feeds::fetch::fetch_index(
                fetcher.client,
                fetcher.keyring,
                fetcher.verify,
                source,
                &context.settings.cache_dir.value,
            )
            .map(|index| index.pin())
        })
        .collect()
}

fn moved(entry: &LockEntry, metadata: &imagebuilder::TargetMetadata) -> Option<Moved> {
    (entry.archive_sha256 != metadata.archive_sha256 || entry.version_code != metadata.version_code)
        .then(|| Moved {
            triple: entry.triple.clone(),
            locked_sha256: entry.archive_sha256.clone(),
            locked_version: entry.version_code.clone(),
            upstream_sha256: metadata.archive_sha256.clone(),
            upstream_version: metadata.version_code.clone(),
        })
}

fn missing_target_problems(fleet: &Fleet, triple: &Triple, error: &Error) -> Vec<Problem> {
    fleet
        .profiles_of(triple)
        .map(|loaded| {
            Problem::validation(format!(
                "OpenWrt {} has no target `{}/{}` on the mirror",
                triple.release, triple.target, triple.subtarget
            ))
            .at(loaded.location("target"))
            .with_label("not on the mirror")
            .with_help(error.message.clone())
        })
        .collect()
}

fn unknown_profile_problem(
    loaded: &LoadedProfile,
    triple: &Triple,
    profiles: &ProfilesJson,
    overview: Option<&Overview>,
) -> Problem {
    let wanted = &loaded.profile.imagebuilder_profile;
    let mut scored: Vec<(f64, &str)> = profiles
        .profiles
        .keys()
        .map(|id| (strsim::jaro_winkler(wanted, id), id.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let closest: Vec<String> = scored
        .iter()
        .take(3)
        .map(|(_, id)| format!("`{id}`"))
        .collect();
    let mut help = format!(
        "closest Image Builder profiles in {}/{}: {}",
        triple.target,
        triple.subtarget,
        closest.join(", ")
    );
    if let Some(elsewhere) = overview.and_then(|overview| overview.targets_of(wanted)) {
        help = format!(
            "`{wanted}` exists in OpenWrt {} under target `{elsewhere}`; set `target`/`subtarget` to that, or use one of the {}",
            triple.release, help
        );
    }
    Problem::validation(format!(
        "OpenWrt {} {}/{} offers no Image Builder profile `{wanted}`",
        triple.release, triple.target, triple.subtarget
    ))
    .at(loaded.location("imagebuilder_profile"))
    .with_label("not in the target's profiles.json")
    .with_help(help)
}

/// The release's `.overview.json`: device id → target.
struct Overview {
    targets: BTreeMap<String, String>,
}

impl Overview {
    fn parse(bytes: &[u8]) -> Option<Overview> {
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let targets = value
            .get("profiles")?
            .as_array()?
            .iter()
            .filter_map(|profile| {
                Some((
                    profile.get("id")?.as_str()?.to_string(),
                    profile.get("target")?.as_str()?.to_string(),
                ))
            })
            .collect();
        Some(Overview { targets })
    }

    fn targets_of(&self, id: &str) -> Option<&str> {
        self.targets.get(id).map(String::as_str)
    }
}
