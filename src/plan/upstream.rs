//! What upstream metadata says about the fleet, for `validate` and `plan`: each profile's
//! `imagebuilder_profile` against its target's `profiles.json` (from the metadata cache via
//! the lock, or fetched when the mirror may be read), and lock entries upstream has moved
//! away from. Reads the mirror and the metadata cache; never the state store.

use std::collections::BTreeMap;
use std::time::Duration;

use super::capability;
use crate::error::{Error, ErrorCode, Problem, Problems, Result};
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
}

impl UpstreamCheck {
    /// One line per moved lock entry.
    pub fn moved_notices(&self) -> Vec<String> {
        self.moved
            .iter()
            .map(|moved| format!("upstream moved: {}", moved.describe()))
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
        check
            .problems
            .extend(capability::flash_problems(fleet, &triple, &parsed));
        check.profiles.insert(triple, parsed);
    }
    Ok(check)
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
