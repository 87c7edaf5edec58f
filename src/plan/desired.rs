//! Gathers the desired state (fleet + lock + overlay digests) and the recorded state (redb)
//! for [`super::diff`]. Reads files and the state store; upstream metadata is consulted
//! only through [`prepare`] ([`super::upstream`]).

use std::collections::BTreeMap;

use std::collections::BTreeSet;

use super::capability;
use super::diff::{Desired, DesiredBuild, DesiredBuilder, DesiredFlash, diff};
use super::graph::PlanGraph;
use super::model::{Fingerprint, FlashPermission, Plan};
use super::recorded::{recorded_state, state_fingerprint};
use super::select::{Selection, select};
use super::upstream::{UpstreamCheck, check_upstream};
use crate::error::{Error, ErrorCode, Problems, Result};
use crate::key::{
    ACTION_SCHEMA_VERSION, BuildInputs, BuilderPin, ImageOptions, InitramfsImage, OverlayFact,
    OverlayInputs, normalize_names,
};
use crate::lock::LockFile;
use crate::manifest::{Fleet, LoadedProfile};
use crate::overlay::{
    self, EntryKind, FileInput, MemoryHashCache, OverlayDigest, OverlayInput, OverlaySource,
};
use crate::settings::Settings;
use crate::state::Store;
use crate::triple::Triple;

/// Options of one `plan` run.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// A missing or outdated lock entry is an error (CI).
    pub locked: bool,
    /// Never touch the network; list what would be needed.
    pub offline: bool,
    /// The part of the fleet to plan; empty: all of it.
    pub selection: Selection,
    /// Which fleet devices the run may write (`--flash`); default: none.
    pub allow_flash: FlashPermission,
}

/// Computes the plan of a fleet against the state store named by `settings`.
pub fn compute(fleet: &Fleet, settings: &Settings, options: &PlanOptions) -> Result<Plan> {
    let store = Store::open(&settings.db.value, "imagegen plan")?;
    compute_with(fleet, settings, options, &store)
}

/// What planning and validation learn before looking at the state store: the lock file and
/// what upstream metadata says about the fleet.
#[derive(Debug)]
pub struct Prepared {
    pub lock: Option<LockFile>,
    pub upstream: UpstreamCheck,
}

/// The first stage `validate` and `plan` share: read the lock (complete, with `locked`),
/// check every profile against upstream, and refuse a lock upstream moved away from (with
/// `locked`).
pub fn prepare(fleet: &Fleet, settings: &Settings, options: &PlanOptions) -> Result<Prepared> {
    let lock = LockFile::read(&fleet.lock_path())?;
    if options.locked {
        check_locked(fleet, lock.as_ref())?;
    }
    let upstream = check_upstream(fleet, lock.as_ref(), settings)?;
    // What no Image Builder can do is refused even when upstream could not be consulted;
    // so is a `bin_dir` the operator did not allow.
    let mut problems = Problems::new();
    problems.extend(fleet.profiles.iter().flat_map(capability::refused_fields));
    problems.extend(upstream.problems.iter().cloned());
    problems.extend(super::bin_dir::bin_dir_problems(fleet, settings));
    problems.finish((), "profiles ask for what cannot be built")?;
    let moved = upstream.lock_outdated();
    if options.locked && !moved.is_empty() {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!("imagegen.lock is outdated: {}", moved.join("; ")),
        )
        .with_help("run `imagegen lock --upgrade`, review and commit imagegen.lock"));
    }
    Ok(Prepared { lock, upstream })
}

/// [`compute`] against a store the caller already holds (apply keeps it locked throughout).
pub fn compute_with(
    fleet: &Fleet,
    settings: &Settings,
    options: &PlanOptions,
    store: &Store,
) -> Result<Plan> {
    let Prepared { lock, mut upstream } = prepare(fleet, settings, options)?;
    check_flash_permission(fleet, &options.allow_flash)?;
    let digests = overlay_digests(fleet, store)?;
    let mut desired = desired_state(fleet, lock.as_ref(), &digests, &upstream)?;
    desired.allow_flash = options.allow_flash.clone();
    let reader = store.read()?;
    let cas = crate::cas::Cas::open(&settings.artifacts_dir.value)?;
    let wanted: BTreeSet<String> = desired
        .builds
        .iter()
        .filter_map(|build| build.inputs.key().map(|key| key.0))
        .collect();
    let devices: Vec<&str> = desired
        .flashes
        .iter()
        .map(|flash| flash.device_id.as_str())
        .collect();
    let recorded = recorded_state(
        &fleet.name,
        &reader,
        &cas,
        &wanted,
        settings.verify_signatures.value,
        &devices,
    )?;
    let fingerprint = Fingerprint {
        fleet: fleet_fingerprint(fleet),
        lock: lock_fingerprint(fleet)?,
        state: state_fingerprint(&recorded),
    };
    let mut plan = diff(&desired, &recorded, fingerprint);
    // The graph is checked once here (no cycle, no duplicate address) for every consumer.
    PlanGraph::new(&plan)?;
    select(&mut plan, fleet, &options.selection)?;
    plan.notices = upstream_notices(&upstream, lock.is_some());
    if let Some(notice) = verification_notice(settings) {
        plan.notices.push(notice);
    }
    attach_packages(&mut plan, &mut upstream);
    if options.offline {
        plan.offline_needs = offline_needs(&plan, &upstream);
    }
    Ok(plan)
}

/// Each build action carries its profile's resolved packages (when its feeds could be read).
fn attach_packages(plan: &mut Plan, upstream: &mut UpstreamCheck) {
    for action in &mut plan.actions {
        if action.resource != super::Resource::Build {
            continue;
        }
        // A profile has one build action: its packages move there.
        if let Some(packages) = action
            .profile_id
            .as_ref()
            .and_then(|profile| upstream.packages.remove(profile))
        {
            action.packages = Some(packages);
        }
    }
}

/// What apply would download first: Image Builder archives, then package files (each once).
fn offline_needs(plan: &Plan, upstream: &UpstreamCheck) -> Vec<String> {
    let mut needs: Vec<String> = plan
        .actions
        .iter()
        .filter(|action| action.resource == super::Resource::Builder && action.action.is_change())
        .map(|action| {
            action
                .details
                .get("archive")
                .cloned()
                .unwrap_or_else(|| action.address.clone())
        })
        .collect();
    let mut packages = std::collections::BTreeSet::new();
    for action in &plan.actions {
        if action.resource == super::Resource::Build && action.action.is_change() {
            let missing = action
                .profile_id
                .as_ref()
                .and_then(|profile| upstream.missing_packages.get(profile))
                .into_iter()
                .flatten();
            packages.extend(missing.map(|file| format!("package {file}")));
        }
    }
    needs.extend(packages);
    needs
}

/// Said on every plan (and validate) while signature verification is off.
pub fn verification_notice(settings: &Settings) -> Option<String> {
    (!settings.verify_signatures.value).then(|| {
        "signature verification is OFF (`verify_signatures = false`): Image Builders fetched now are trusted on the mirror's word alone, and builders fetched this way are verified before use once it is back on".to_string()
    })
}

/// Every device a flash permission names must be a fleet device with a `flash` entry: a
/// typo must not silently write nothing (or, worse, be read as "all").
fn check_flash_permission(fleet: &Fleet, permission: &FlashPermission) -> Result<()> {
    let flashable: Vec<&str> = fleet
        .devices
        .iter()
        .filter(|device| device.flash.is_some())
        .map(|device| device.id.as_str())
        .collect();
    for named in &permission.devices {
        if flashable.contains(&named.as_str()) {
            continue;
        }
        let what = match fleet.devices.iter().any(|device| &device.id == named) {
            true => format!("device `{named}` has no `flash` entry in imagegen.toml"),
            false => format!("`--flash {named}` names no device of the fleet"),
        };
        let help = match crate::source::suggest(named, flashable.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None if flashable.is_empty() => {
                "no device of the fleet has a `flash` entry".to_string()
            }
            None => format!("devices that can be flashed: {}", flashable.join(", ")),
        };
        return Err(Error::new(ErrorCode::Validation, what).with_help(help));
    }
    Ok(())
}

fn upstream_notices(upstream: &UpstreamCheck, locked: bool) -> Vec<String> {
    let mut notices = upstream.notices();
    if let Some(reason) = &upstream.unreachable {
        let from = if locked {
            "planned from imagegen.lock without checking upstream"
        } else {
            "there is no imagegen.lock, so Image Builders are not pinned (build keys known after fetch)"
        };
        notices.push(format!("mirror not reachable ({reason}); {from}"));
    }
    if !upstream.unchecked.is_empty() {
        let unchecked: Vec<String> = upstream.unchecked.iter().map(ToString::to_string).collect();
        notices.push(format!(
            "Image Builder profiles, filesystems and image kinds not checked against upstream profiles.json (not cached offline): {}",
            unchecked.join(", ")
        ));
    }
    for (triple, why) in &upstream.packages_unchecked {
        notices.push(format!(
            "packages of {triple} not checked against its feeds: {why}"
        ));
    }
    notices
}

fn check_locked(fleet: &Fleet, lock: Option<&LockFile>) -> Result<()> {
    let Some(lock) = lock else {
        return Err(Error::new(
            ErrorCode::StalePlan,
            "`--locked` given but there is no imagegen.lock",
        )
        .with_help("run `imagegen lock` and commit imagegen.lock"));
    };
    let missing: Vec<String> = fleet
        .triples()
        .into_iter()
        .filter(|triple| lock.get(triple).is_none())
        .map(|triple| triple.to_string())
        .collect();
    let without_feeds: Vec<String> = fleet
        .triples()
        .into_iter()
        .filter(|triple| {
            lock.get(triple)
                .is_some_and(|entry| entry.feeds.is_empty() && entry.feeds_unpinned.is_none())
        })
        .map(|triple| triple.to_string())
        .collect();
    if missing.is_empty() && !without_feeds.is_empty() {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!(
                "imagegen.lock does not pin the package feeds of {}",
                without_feeds.join(", ")
            ),
        )
        .with_help("run `imagegen lock` (it adds the feeds) and commit imagegen.lock"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::StalePlan,
        format!("imagegen.lock does not pin {}", missing.join(", ")),
    )
    .with_help("run `imagegen lock` and commit imagegen.lock"))
}

pub fn overlay_input(fleet: &Fleet, loaded: &LoadedProfile) -> OverlayInput {
    let profile = &loaded.profile;
    let files = profile
        .files
        .iter()
        .enumerate()
        .map(|(index, entry)| FileInput {
            source: OverlaySource {
                text: entry.source.clone(),
                location: Some(loaded.location(&format!("files[{index}].source"))),
            },
            destination: entry.destination.clone(),
            mode: entry.mode,
            owner: entry.owner.clone(),
        })
        .collect();
    OverlayInput {
        fleet_root: fleet.root.clone(),
        overlay_dir: profile.overlay_dir.as_ref().map(|dir| OverlaySource {
            text: dir.clone(),
            location: Some(loaded.location("overlay_dir")),
        }),
        files,
    }
}

/// Checks every profile's overlay sources (existence, escapes, special files) without
/// touching the state store; all problems of all profiles at once.
pub fn validate_overlays(fleet: &Fleet) -> Result<()> {
    let inputs: Vec<OverlayInput> = fleet
        .profiles
        .iter()
        .map(|loaded| overlay_input(fleet, loaded))
        .collect();
    let references: Vec<&OverlayInput> = inputs.iter().collect();
    let mut problems = Problems::new();
    for result in overlay::digest_many(&references, &mut overlay::NoHashCache) {
        if let Err(found) = result {
            problems.extend(found);
        }
    }
    problems.finish((), "invalid overlay files")
}

/// Hashes every profile's overlay (in parallel, with the per-file hash cache kept in the
/// state store) and reports every overlay problem of every profile at once.
fn overlay_digests(fleet: &Fleet, store: &Store) -> Result<Vec<OverlayDigest>> {
    let inputs: Vec<OverlayInput> = fleet
        .profiles
        .iter()
        .map(|loaded| overlay_input(fleet, loaded))
        .collect();
    let loaded = store.read()?.file_hashes_with_prefix("")?;
    let mut cache = MemoryHashCache::default();
    for (path, bytes) in &loaded {
        cache.insert_encoded(path.into(), bytes);
    }
    let references: Vec<&OverlayInput> = inputs.iter().collect();
    let results = overlay::digest_many(&references, &mut cache);
    let mut problems = Problems::new();
    let mut digests = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(digest) => digests.push(digest),
            Err(found) => problems.extend(found),
        }
    }
    problems.finish((), "invalid overlay files")?;
    // Write back only what this run learned, so a warm plan writes nothing.
    let changed: Vec<(String, Vec<u8>)> = cache
        .iter()
        .filter_map(|(path, stamp, hash)| {
            let path = path.to_str()?.to_string();
            let bytes = MemoryHashCache::encode_entry(stamp, hash);
            (loaded.get(&path) != Some(&bytes)).then_some((path, bytes))
        })
        .collect();
    if !changed.is_empty() {
        let mut writer = store.write()?;
        writer.put_file_hashes(changed)?;
        writer.commit()?;
    }
    Ok(digests)
}

fn desired_state(
    fleet: &Fleet,
    lock: Option<&LockFile>,
    digests: &[OverlayDigest],
    upstream: &UpstreamCheck,
) -> Result<Desired> {
    let mut builders: BTreeMap<Triple, DesiredBuilder> = BTreeMap::new();
    let mut builds = Vec::new();
    for (loaded, digest) in fleet.profiles.iter().zip(digests) {
        let profile = &loaded.profile;
        let triple = profile.triple();
        let entry = lock.and_then(|lock| lock.get(&triple));
        let pin = BuilderPin {
            triple: triple.clone(),
            archive_sha256: entry.map(|entry| entry.archive_sha256.clone()),
            version_code: entry.map(|entry| entry.version_code.clone()),
        };
        builders.entry(triple).or_insert_with(|| DesiredBuilder {
            pin: pin.clone(),
            archive: entry.map(|entry| entry.archive.clone()),
        });
        let initramfs = match profile.build_defaults.initramfs {
            true => Some(initramfs_pin(loaded, upstream)?),
            false => None,
        };
        builds.push(DesiredBuild {
            profile_id: profile.profile_id.clone(),
            device_id: profile.device_id.clone(),
            inputs: BuildInputs {
                feeds: feed_digests(entry),
                ..build_inputs(loaded, pin, digest, initramfs)
            },
            rebuild_if_cached: profile.build_defaults.rebuild_if_cached,
        });
    }
    let flashes = fleet
        .devices
        .iter()
        .filter_map(|device| {
            let flash = device.flash.as_ref()?;
            let filesystem = fleet
                .profile(&device.profile)
                .and_then(|loaded| loaded.profile.policies.filesystem)
                .map(|filesystem| filesystem.as_str().to_string());
            Some(DesiredFlash {
                device_id: device.id.clone(),
                profile_id: device.profile.clone(),
                path: flash.path.clone(),
                image: flash.image.clone(),
                filesystem,
                verify: flash.verify,
                wipe: flash.wipe,
                // Following links: a `/dev/disk/by-id/` link exists only while the card does.
                present: std::fs::metadata(&flash.path).is_ok(),
            })
        })
        .collect();
    Ok(Desired {
        fleet: fleet.name.clone(),
        builders: builders.into_values().collect(),
        builds,
        flashes,
        allow_flash: FlashPermission::default(),
    })
}

/// The initramfs image a profile asks for, as the pinned `profiles.json` lists it. Its
/// sha256 is a key input, so the profiles.json must be at hand (cached by `imagegen lock`).
fn initramfs_pin(loaded: &LoadedProfile, upstream: &UpstreamCheck) -> Result<InitramfsImage> {
    let profile = &loaded.profile;
    let triple = profile.triple();
    let Some(info) = upstream.device(&triple, &profile.imagebuilder_profile) else {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!(
                "`build_defaults.initramfs` of `{}` needs the profiles.json of {triple}, which is neither cached nor reachable",
                profile.profile_id
            ),
        )
        .with_help("run `imagegen lock` with the mirror reachable; it caches the pinned profiles.json for later offline runs"));
    };
    capability::initramfs_image(info).ok_or_else(|| {
        Error::new(
            ErrorCode::Validation,
            format!(
                "`{}` has no initramfs image in the profiles.json of {triple}",
                profile.imagebuilder_profile
            ),
        )
        .with_help("remove `build_defaults.initramfs`")
    })
}

/// One profile's key inputs. Everything that changes the image, nothing that doesn't.
pub fn build_inputs(
    loaded: &LoadedProfile,
    builder: BuilderPin,
    digest: &OverlayDigest,
    initramfs: Option<InitramfsImage>,
) -> BuildInputs {
    let profile = &loaded.profile;
    let entries = digest
        .entries
        .iter()
        .map(|entry| {
            let fact = OverlayFact {
                kind: entry_kind_name(entry.kind).to_string(),
                mode: entry.mode,
                owner: entry.owner.clone(),
                digest: entry.digest.clone(),
            };
            (entry.path.clone(), fact)
        })
        .collect();
    BuildInputs {
        schema: ACTION_SCHEMA_VERSION,
        builder,
        imagebuilder_profile: profile.imagebuilder_profile.clone(),
        packages: normalize_names(&profile.packages),
        packages_remove: normalize_names(&profile.packages_remove),
        overlay: OverlayInputs {
            tree_hash: digest.tree_hash.clone(),
            entries,
        },
        options: ImageOptions {
            extra_image_name: profile.extra_image_name.clone(),
            disabled_services: normalize_names(&profile.disabled_services),
            rootfs_partsize: profile.rootfs_partsize.map(u64::from),
            add_local_key: profile.add_local_key,
            filesystem: profile
                .policies
                .filesystem
                .map(|filesystem| filesystem.as_str().to_string()),
            provenance: profile.provenance,
            initramfs,
        },
        feeds: Vec::new(),
    }
}

/// The feed digests a build's key includes: every feed the lock pins for its builder.
fn feed_digests(entry: Option<&crate::lock::LockEntry>) -> Vec<crate::key::FeedDigest> {
    entry
        .map(|entry| {
            entry
                .feeds
                .iter()
                .map(|feed| crate::key::FeedDigest {
                    name: feed.name.clone(),
                    sha256: feed.sha256.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entry_kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Directory => "directory",
        EntryKind::Symlink => "symlink",
    }
}

fn fleet_fingerprint(fleet: &Fleet) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(fleet.manifest.text().as_bytes());
    for loaded in &fleet.profiles {
        hasher.update(loaded.source.display_name().as_bytes());
        hasher.update(&[0]);
        hasher.update(loaded.source.text().as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

fn lock_fingerprint(fleet: &Fleet) -> Result<Option<String>> {
    let path = fleet.lock_path();
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(blake3::hash(&bytes).to_hex().to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::io("reading", &path, error)),
    }
}
