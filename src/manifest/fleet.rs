//! `imagegen.toml` → [`Fleet`]: the fleet name, `[settings]`, the profile files it points
//! at (loaded and validated here) and the `[[device]]` list, with the checks that span files
//! (duplicate ids, devices naming unknown profiles). Reads files; writes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::profile::LoadedProfile;
use super::read::{declared_profile_id, load_profile_in};
use super::rules::check_id;
use super::settings_table::read_settings;
use crate::error::{Error, ErrorCode, Location, Problem, Problems, Result};
use crate::settings::FileSettings;
use crate::source::{self, Containment, Format, MapReader, Node, SourceFile, Spanned, suggest};
use crate::triple::Triple;

const TOP_FIELDS: &[&str] = &["fleet", "settings", "device"];

/// Fleets of thousands of routers are the point; this only stops runaway files.
const MAX_DEVICES: usize = 100_000;
const FLEET_FIELDS: &[&str] = &["name", "profiles"];
const DEVICE_FIELDS: &[&str] = &["id", "profile", "description", "flash"];
const FLASH_FIELDS: &[&str] = &["path", "image", "verify", "wipe"];

/// A loaded, validated fleet repository.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The directory holding `imagegen.toml` (absolute).
    pub root: PathBuf,
    pub manifest: Arc<SourceFile>,
    pub name: String,
    pub settings: FileSettings,
    /// Sorted by `profile_id`.
    pub profiles: Vec<LoadedProfile>,
    /// In manifest order.
    pub devices: Vec<Device>,
    pub(crate) tree: Spanned<Node>,
    /// The manifest's profile patterns, to find the profile files again.
    profile_patterns: Vec<String>,
}

impl Fleet {
    /// Every file loading this fleet reads, as the files are now: the manifest and each
    /// profile file its patterns match (added or removed files included).
    pub fn source_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.settings.path.clone()];
        for pattern in &self.profile_patterns {
            files.extend(expand_pattern(&self.root, pattern).unwrap_or_default());
        }
        files
    }

    pub fn profile(&self, profile_id: &str) -> Option<&LoadedProfile> {
        self.profiles
            .binary_search_by(|loaded| loaded.profile.profile_id.as_str().cmp(profile_id))
            .ok()
            .map(|index| &self.profiles[index])
    }

    pub fn device(&self, device_id: &str) -> Option<&Device> {
        self.devices.iter().find(|device| device.id == device_id)
    }

    /// Every Image Builder the fleet's profiles use, sorted, once each.
    pub fn triples(&self) -> Vec<Triple> {
        let set: BTreeSet<Triple> = self
            .profiles
            .iter()
            .map(|loaded| loaded.profile.triple())
            .collect();
        set.into_iter().collect()
    }

    /// The profiles that build with `triple`.
    pub fn profiles_of<'a>(
        &'a self,
        triple: &'a Triple,
    ) -> impl Iterator<Item = &'a LoadedProfile> {
        self.profiles
            .iter()
            .filter(move |loaded| loaded.profile.triple() == *triple)
    }

    /// The fleet's `imagegen.lock` (which may not exist yet).
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(super::LOCK_FILE_NAME)
    }

    /// Where a manifest field is (`device[1].flash.path`); the file start when absent.
    pub fn location(&self, field_path: &str) -> Location {
        let span = self
            .tree
            .lookup(field_path)
            .map(|node| node.span.clone())
            .unwrap_or(0..0);
        Location::at(&self.manifest, span)
    }
}

/// A physical unit that should carry the image of one profile.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: String,
    pub profile: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash: Option<FlashTarget>,
    /// The device's `id` in the manifest.
    #[serde(skip)]
    pub location: Location,
    /// The device's `profile` value in the manifest.
    #[serde(skip)]
    pub(crate) profile_location: Location,
}

/// Where and how a device's image is written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlashTarget {
    /// An absolute path, typically `/dev/disk/by-id/...`; resolved only when flashing.
    pub path: PathBuf,
    /// The image type to write (`combined`, `sysupgrade`, `sdcard`, ...).
    pub image: String,
    pub verify: VerifyMode,
    pub wipe: bool,
}

/// How a flash is verified after writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Read back and hash every written byte.
    Full,
    /// Read back and hash a prefix of the image.
    Prefix,
    None,
}

impl VerifyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Full => "full",
            VerifyMode::Prefix => "prefix",
            VerifyMode::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<VerifyMode> {
        [VerifyMode::Full, VerifyMode::Prefix, VerifyMode::None]
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }
}

/// Load `imagegen.toml` and every profile it names, expanding `~/` in `[settings]` paths to
/// `home` (the caller's `HOME`; the environment is never read here). The error carries every
/// problem found in the manifest and in all profile files at once.
pub fn load_fleet(manifest_path: &Path, home: Option<&Path>) -> Result<Fleet> {
    let manifest_path = std::path::absolute(manifest_path)
        .map_err(|error| Error::io("resolving", manifest_path, error))?;
    let root = manifest_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let display = display_name(&root, &manifest_path);
    let invalid = format!("invalid fleet `{display}`");
    let manifest = SourceFile::read_limited(
        &manifest_path,
        display,
        crate::source::MAX_MANIFEST_SIZE,
        Containment::Inside(&root),
    )
    .map_err(|problem| Error::from_problems(invalid.clone(), vec![problem]))?;
    let tree = source::parse(&manifest, Format::Toml)
        .map_err(|problem| Error::from_problems(invalid.clone(), vec![problem]))?;
    let mut problems = Problems::new();
    let raw = MapReader::new(&tree, &manifest, &mut problems)
        .and_then(|reader| read_manifest(reader, &root, home));
    let Some(raw) = raw else {
        return Err(Error::from_problems(invalid, problems.into_sorted()));
    };
    let (profiles, broken_ids) = load_profiles(&root, &manifest, &raw.patterns, &mut problems);
    check_devices(&raw.devices, &profiles, &broken_ids, &mut problems);
    let profile_patterns = raw
        .patterns
        .iter()
        .map(|pattern| pattern.value.clone())
        .collect();
    let fleet = Fleet {
        root,
        settings: FileSettings {
            path: manifest_path,
            ..raw.settings
        },
        manifest,
        name: raw.name.value,
        profiles,
        devices: raw.devices,
        tree,
        profile_patterns,
    };
    let problems = problems.into_sorted();
    let mut collected = Problems::new();
    collected.extend(problems);
    collected.finish(fleet, &invalid)
}

/// The problems of `imagegen.toml` text alone: syntax, fields, settings and devices, without
/// reading the profiles it names (the fuzzing entry point; no I/O).
pub(crate) fn check_manifest_text(source: &Arc<SourceFile>, root: &Path) -> Vec<Problem> {
    let tree = match source::parse(source, Format::Toml) {
        Ok(tree) => tree,
        Err(problem) => return vec![problem],
    };
    let mut problems = Problems::new();
    let raw = MapReader::new(&tree, source, &mut problems)
        .and_then(|reader| read_manifest(reader, root, None));
    if let Some(raw) = raw {
        check_devices(&raw.devices, &[], &[], &mut problems);
    }
    problems.into_sorted()
}

/// The manifest's own content, before profiles are loaded.
struct RawManifest {
    name: Spanned<String>,
    patterns: Vec<Spanned<String>>,
    settings: FileSettings,
    devices: Vec<Device>,
}

fn read_manifest(
    mut reader: MapReader<'_, '_>,
    root: &Path,
    home: Option<&Path>,
) -> Option<RawManifest> {
    let fleet = reader.required("fleet").is_some();
    let (name, patterns) = match reader.nested("fleet") {
        Some(mut fleet) => {
            let name = fleet.string("name");
            if let Some(name) = &name {
                check_id(&mut fleet, "name", name);
            }
            let patterns = match fleet.node("profiles") {
                Some(_) => fleet.string_list("profiles"),
                None => vec![Spanned::new("profiles".to_string(), fleet.span())],
            };
            fleet.finish(FLEET_FIELDS);
            (name, patterns)
        }
        None => (None, Vec::new()),
    };
    let settings = match reader.node("settings") {
        Some(_) => reader
            .nested("settings")
            .map(|settings| read_settings(settings, root, home))
            .unwrap_or_default(),
        None => FileSettings::default(),
    };
    let devices = read_devices(&mut reader);
    reader.finish(TOP_FIELDS);
    fleet.then_some(())?;
    Some(RawManifest {
        name: name?,
        patterns,
        settings,
        devices,
    })
}

fn read_devices(reader: &mut MapReader<'_, '_>) -> Vec<Device> {
    let Some(items) = reader.opt_list_up_to("device", MAX_DEVICES) else {
        return Vec::new();
    };
    let mut devices = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let device = reader
            .reader_for(item, &format!("device[{index}]"))
            .and_then(read_device);
        devices.extend(device);
    }
    devices
}

fn read_device(mut reader: MapReader<'_, '_>) -> Option<Device> {
    let id = reader.string("id");
    if let Some(id) = &id {
        check_id(&mut reader, "id", id);
    }
    let profile = reader.string("profile");
    let description = reader.opt_string("description").map(|text| text.value);
    let flash = reader
        .node("flash")
        .map(|_| reader.nested("flash").and_then(read_flash));
    let id_location = id.as_ref().map(|id| reader.location(id.span.clone()));
    let profile_location = profile
        .as_ref()
        .map(|profile| reader.location(profile.span.clone()));
    reader.finish(DEVICE_FIELDS);
    let (id, profile) = (id?, profile?);
    Some(Device {
        location: id_location?,
        profile_location: profile_location?,
        id: id.value,
        profile: profile.value,
        description,
        // An invalid `flash` was reported; keep the device so cross-file checks still run.
        flash: flash.flatten(),
    })
}

fn read_flash(mut reader: MapReader<'_, '_>) -> Option<FlashTarget> {
    let path = reader.string("path");
    if let Some(path) = path
        .as_ref()
        .filter(|path| !path.value.starts_with('/') || path.value.contains('\0'))
    {
        let message = format!(
            "`{}` must be an absolute device path such as `/dev/disk/by-id/...`, not `{}`",
            reader.path_of("path"),
            path.value
        );
        reader.invalid(path.span.clone(), message, "not an absolute path");
    }
    let image = reader.opt_string("image");
    if let Some(image) = &image {
        let valid = image.value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && image
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            let message = format!(
                "invalid `{}` `{}`: expected an image type such as `combined`, `sysupgrade` or `sdcard`",
                reader.path_of("image"),
                image.value
            );
            reader.invalid(image.span.clone(), message, "not an image type");
        }
    }
    let verify = reader.opt_string("verify");
    let verify_mode = match &verify {
        Some(text) => {
            let mode = VerifyMode::parse(&text.value);
            if mode.is_none() {
                let message = format!(
                    "unknown `{}` `{}`: use `full`, `prefix` or `none`",
                    reader.path_of("verify"),
                    text.value
                );
                reader.invalid(text.span.clone(), message, "unknown mode");
            }
            mode
        }
        None => Some(VerifyMode::Full),
    };
    let wipe = reader.opt_bool("wipe").is_some_and(|flag| flag.value);
    reader.finish(FLASH_FIELDS);
    Some(FlashTarget {
        path: PathBuf::from(path?.value),
        image: image.map_or_else(|| "combined".to_string(), |image| image.value),
        verify: verify_mode?,
        wipe,
    })
}

fn load_profiles(
    root: &Path,
    manifest: &Arc<SourceFile>,
    patterns: &[Spanned<String>],
    problems: &mut Problems,
) -> (Vec<LoadedProfile>, Vec<String>) {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for pattern in patterns {
        match expand_pattern(root, &pattern.value) {
            // An existing but empty directory is a fleet without profiles yet (before
            // `imagegen profiles import`); a pattern naming nothing is a mistake.
            Ok(found) if found.is_empty() && !root.join(&pattern.value).is_dir() => problems.push(
                Problem::validation(format!(
                    "profile pattern `{}` matches no profile file",
                    pattern.value
                ))
                .at(Location::at(manifest, pattern.span.clone()))
                .with_label("no `.yaml`, `.yml`, `.json` or `.toml` file here"),
            ),
            Ok(found) => {
                for path in found {
                    if seen.insert(path.clone()) {
                        paths.push(path);
                    }
                }
            }
            Err(message) => problems.push(
                Problem::validation(message)
                    .at(Location::at(manifest, pattern.span.clone()))
                    .with_label("invalid pattern"),
            ),
        }
    }
    let mut profiles: Vec<LoadedProfile> = Vec::with_capacity(paths.len());
    // Ids declared by files that failed to load: devices naming them are not "unknown". A
    // file that does not even parse declares nothing we can read; then no device reference
    // can be judged, and none is reported (never a consequence of a broken file).
    let mut broken_ids = Vec::new();
    let mut unreadable = false;
    let inside = Containment::Inside(root);
    for path in paths {
        match load_profile_in(&path, display_name(root, &path), inside) {
            Ok(loaded) => profiles.push(loaded),
            Err(found) => {
                problems.extend(found);
                match declared_profile_id(&path, inside) {
                    Some(id) => broken_ids.push(id),
                    None => unreadable = true,
                }
            }
        }
    }
    if unreadable {
        broken_ids.push(UNKNOWN_IDS.to_string());
    }
    check_duplicate_profiles(&profiles, problems);
    profiles.sort_by(|left, right| left.profile.profile_id.cmp(&right.profile.profile_id));
    (profiles, broken_ids)
}

/// The profile files a `[fleet] profiles` entry names: a file, a directory (its profile
/// files, sorted, not recursive) or a glob. Paths are relative to the fleet root and may not
/// leave it. Whatever has a profile extension is listed, links and special files included,
/// so that reading it reports why it is refused instead of skipping it silently.
fn expand_pattern(root: &Path, pattern: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let relative = Path::new(pattern);
    if relative.is_absolute() || pattern.contains('\0') {
        return Err(format!(
            "profile pattern `{pattern}` is absolute; write it relative to the fleet root"
        ));
    }
    if relative
        .components()
        .any(|component| component == std::path::Component::ParentDir)
    {
        return Err(format!(
            "profile pattern `{pattern}` leaves the fleet root with `..`"
        ));
    }
    let is_profile = |path: &Path| !path.is_dir() && Format::from_path(path).is_some();
    if pattern.contains(['*', '?', '[']) {
        let full = root.join(pattern);
        let full = full.to_string_lossy();
        let entries =
            glob::glob(&full).map_err(|error| format!("invalid glob `{pattern}`: {error}"))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok())
            .filter(|path| is_profile(path))
            .collect();
        found.sort();
        return Ok(found);
    }
    let path = root.join(pattern);
    if path.is_dir() {
        let entries = std::fs::read_dir(&path)
            .map_err(|error| format!("cannot read directory `{pattern}`: {error}"))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| is_profile(path))
            .collect();
        found.sort();
        return Ok(found);
    }
    // Named explicitly: let the read say what is wrong with it (a FIFO, a link elsewhere).
    Ok(if path.symlink_metadata().is_ok() {
        vec![path]
    } else {
        Vec::new()
    })
}

fn check_duplicate_profiles(profiles: &[LoadedProfile], problems: &mut Problems) {
    let mut first_seen: BTreeMap<&str, &LoadedProfile> = BTreeMap::new();
    for loaded in profiles {
        let id = loaded.profile.profile_id.as_str();
        match first_seen.get(id) {
            Some(first) => {
                let first_location = first.location("profile_id");
                problems.push(
                    Problem::validation(format!(
                        "duplicate profile_id `{id}` (also defined at {first_location})"
                    ))
                    .at(loaded.location("profile_id"))
                    .with_label("defined again here")
                    .with_help("every profile needs its own `profile_id`"),
                );
            }
            None => {
                first_seen.insert(id, loaded);
            }
        }
    }
}

/// Stands in `broken_ids` for "a profile file did not parse, its id is unknown".
const UNKNOWN_IDS: &str = "\0unknown";

fn check_devices(
    devices: &[Device],
    profiles: &[LoadedProfile],
    broken_ids: &[String],
    problems: &mut Problems,
) {
    check_duplicate_devices(devices, problems);
    if broken_ids.iter().any(|id| id == UNKNOWN_IDS) {
        return;
    }
    let loaded: HashSet<&str> = profiles
        .iter()
        .map(|loaded| loaded.profile.profile_id.as_str())
        .collect();
    let broken: HashSet<&str> = broken_ids.iter().map(String::as_str).collect();
    let known: Vec<&str> = loaded.iter().chain(&broken).copied().collect();
    // Suggestions compare against every profile id; past the reported problems they would
    // only cost time.
    let mut suggestions_left = crate::error::MAX_REPORTED_PROBLEMS;
    for device in devices {
        let profile = device.profile.as_str();
        if loaded.contains(profile) || broken.contains(profile) {
            continue;
        }
        if problems.is_full() {
            problems.count(ErrorCode::ProfileNotFound);
            continue;
        }
        let mut problem = Problem::new(
            ErrorCode::ProfileNotFound,
            format!(
                "device `{}` uses unknown profile `{}`",
                device.id, device.profile
            ),
        )
        .at(device.profile_location.clone())
        .with_label("no profile with this id");
        if suggestions_left > 0 {
            suggestions_left -= 1;
            problem = problem.with_help(unknown_profile_help(profile, &known));
        }
        problems.push(problem);
    }
}

/// The closest profile id, or all of them when there are few.
fn unknown_profile_help(profile: &str, known: &[&str]) -> String {
    match suggest(profile, known.iter().copied()) {
        Some(close) => format!("did you mean `{close}`?"),
        None if known.is_empty() => {
            "the fleet has no profiles yet; add one with `imagegen profiles import FILE`".into()
        }
        None if known.len() <= 5 => {
            let mut listed: Vec<String> = known.iter().map(|id| format!("`{id}`")).collect();
            listed.sort();
            format!("the fleet's profiles: {}", listed.join(", "))
        }
        None => "`imagegen profiles list` shows the profile ids".into(),
    }
}

fn check_duplicate_devices(devices: &[Device], problems: &mut Problems) {
    let mut first_seen: HashMap<&str, &Device> = HashMap::new();
    for device in devices {
        let Some(first) = first_seen.get(device.id.as_str()) else {
            first_seen.insert(&device.id, device);
            continue;
        };
        if problems.is_full() {
            problems.count(ErrorCode::Validation);
            continue;
        }
        problems.push(
            Problem::validation(format!(
                "duplicate device id `{}` (also defined at {})",
                device.id, first.location
            ))
            .at(device.location.clone())
            .with_label("defined again here"),
        );
    }
}

/// A path as the user should read it: relative to the fleet root when inside it.
fn display_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ProfileFilter;

    const PROFILE: &str = "profile_id: ID\nname: N\ndevice_id: d\nopenwrt_release: 23.05.4\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: p\ntags: [TAG]\n";

    fn write(root: &Path, relative: &str, text: &str) {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|error| panic!("{error}"));
        }
        std::fs::write(path, text).unwrap_or_else(|error| panic!("{error}"));
    }

    fn profile(id: &str, tag: &str) -> String {
        PROFILE.replace("ID", id).replace("TAG", tag)
    }

    fn fleet(root: &Path) -> Fleet {
        load_fleet(&root.join("imagegen.toml"), None).unwrap_or_else(|error| {
            let problems: Vec<_> = error.problems.iter().map(ToString::to_string).collect();
            panic!("{}: {problems:#?}", error.message)
        })
    }

    #[test]
    fn defaults_to_the_profiles_directory() {
        let Ok(temp) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let root = temp.path();
        write(root, "imagegen.toml", "[fleet]\nname = \"home\"\n");
        write(root, "profiles/b.yaml", &profile("b", "x"));
        write(
            root,
            "profiles/a.json",
            "{\"profile_id\": \"a\", \"name\": \"A\", \"device_id\": \"d\", \"openwrt_release\": \"23.05.4\", \"target\": \"t\", \"subtarget\": \"s\", \"imagebuilder_profile\": \"p\"}",
        );
        write(root, "profiles/README.md", "not a profile");
        write(root, "profiles/nested/c.yaml", &profile("c", "x"));
        let fleet = fleet(root);
        let ids: Vec<_> = fleet
            .profiles
            .iter()
            .map(|p| p.profile.profile_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            fleet.settings,
            FileSettings {
                path: root.join("imagegen.toml"),
                ..FileSettings::default()
            }
        );
        assert!(fleet.devices.is_empty());
        assert_eq!(
            fleet.profile("b").map(|p| p.source.display_name()),
            Some("profiles/b.yaml")
        );
        assert!(fleet.profile("zzz").is_none());
    }

    #[test]
    fn files_globs_and_directories_without_duplicates() {
        let Ok(temp) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let root = temp.path();
        write(
            root,
            "imagegen.toml",
            "[fleet]\nname = \"home\"\nprofiles = [\"one.yaml\", \"more/*.y*ml\", \"more\"]\n",
        );
        write(root, "one.yaml", &profile("one", "x"));
        write(root, "more/two.yml", &profile("two", "x"));
        write(root, "more/three.yaml", &profile("three", "x"));
        let fleet = fleet(root);
        let ids: Vec<_> = fleet
            .profiles
            .iter()
            .map(|p| p.profile.profile_id.as_str())
            .collect();
        assert_eq!(ids, ["one", "three", "two"]);
    }

    #[test]
    fn settings_resolve_paths_against_the_root_and_home() {
        let text = "[fleet]\nname = \"home\"\n[settings]\ndb = \"state/state.redb\"\ncache_dir = \"~/cache\"\ntmp_dir = \"/tmp/x\"\noffline = true\nlog_level = \"debug\"\nmirror = \"file:///srv/mirror/\"\njobs = 4\ndownload_jobs = 3\ntrusted_keys = [\"keys/a.pub\"]\nverify_signatures = false\nbuild_timeout = 60\n";
        let source = Arc::new(SourceFile::new(
            "imagegen.toml".into(),
            "imagegen.toml".into(),
            text.into(),
        ));
        let tree =
            source::parse(&source, Format::Toml).unwrap_or_else(|problem| panic!("{problem}"));
        let mut problems = Problems::new();
        let raw = MapReader::new(&tree, &source, &mut problems).and_then(|reader| {
            read_manifest(reader, Path::new("/fleet"), Some(Path::new("/home/me")))
        });
        assert!(problems.is_empty(), "{problems:?}");
        let Some(raw) = raw else {
            panic!("no manifest")
        };
        use crate::settings::Value;
        let values = raw.settings.values;
        let path = |text: &str| Some(Value::Path(PathBuf::from(text)));
        assert_eq!(values.get("db").cloned(), path("/fleet/state/state.redb"));
        assert_eq!(values.get("cache_dir").cloned(), path("/home/me/cache"));
        assert_eq!(values.get("tmp_dir").cloned(), path("/tmp/x"));
        assert_eq!(values.get("artifacts_dir"), None);
        assert_eq!(values.get("offline"), Some(&Value::Bool(true)));
        assert_eq!(values.get("log_level"), Some(&Value::Text("debug".into())));
        assert_eq!(
            values.get("mirror"),
            Some(&Value::Text("file:///srv/mirror".into()))
        );
        assert_eq!(values.get("jobs"), Some(&Value::Number(4)));
        assert_eq!(values.get("download_jobs"), Some(&Value::Number(3)));
        assert_eq!(
            values.get("trusted_keys"),
            Some(&Value::Paths(vec![PathBuf::from("/fleet/keys/a.pub")]))
        );
        assert_eq!(values.get("verify_signatures"), Some(&Value::Bool(false)));
        assert_eq!(values.get("build_timeout"), Some(&Value::Number(60)));
    }

    #[test]
    fn devices_and_flash_defaults() {
        let Ok(temp) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let root = temp.path();
        write(
            root,
            "imagegen.toml",
            "[fleet]\nname = \"home\"\n\n[[device]]\nid = \"sd\"\nprofile = \"a\"\nflash = { path = \"/dev/disk/by-id/usb-x\" }\n\n[[device]]\nid = \"ap\"\nprofile = \"a\"\ndescription = \"AP\"\n",
        );
        write(root, "profiles/a.yaml", &profile("a", "x"));
        let fleet = fleet(root);
        let flash = fleet.devices[0].flash.clone();
        assert_eq!(
            flash,
            Some(FlashTarget {
                path: PathBuf::from("/dev/disk/by-id/usb-x"),
                image: "combined".into(),
                verify: VerifyMode::Full,
                wipe: false,
            })
        );
        assert_eq!(fleet.devices[1].description.as_deref(), Some("AP"));
        assert_eq!(
            fleet.device("ap").map(|d| d.location.to_string()),
            Some("imagegen.toml:10:6".into())
        );
        assert_eq!(
            fleet.location("device[0].flash.path").to_string(),
            "imagegen.toml:7:18"
        );
    }

    #[test]
    fn manifest_problems() {
        let Ok(temp) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let root = temp.path();
        write(
            root,
            "imagegen.toml",
            "[fleet]\nname = \"bad name\"\n[setting]\njobs = 1\n",
        );
        let error = load_fleet(&root.join("imagegen.toml"), None).err();
        let problems: Vec<_> = error
            .iter()
            .flat_map(|e| &e.problems)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "imagegen.toml:1:1: profile pattern `profiles` matches no profile file",
                "imagegen.toml:2:8: invalid `fleet.name` `bad name`: use up to 128 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
                "imagegen.toml:3:2: unknown field `setting`",
            ]
        );
        write(root, "imagegen.toml", "[settings]\njobs = 1\n");
        let error = load_fleet(&root.join("imagegen.toml"), None).err();
        let problems: Vec<_> = error
            .iter()
            .flat_map(|e| &e.problems)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            ["imagegen.toml:1:1: missing required field `fleet`"]
        );
        let missing = load_fleet(&root.join("nope/imagegen.toml"), None)
            .err()
            .map(|e| e.problems.len());
        assert_eq!(missing, Some(1));
    }

    #[test]
    fn profile_filter() {
        let Ok(temp) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let root = temp.path();
        write(root, "imagegen.toml", "[fleet]\nname = \"home\"\n");
        write(root, "profiles/a.yaml", &profile("a", "lab"));
        write(
            root,
            "profiles/b.yaml",
            &profile("b", "home").replace("ath79", "ramips"),
        );
        let fleet = fleet(root);
        let matching = |filter: ProfileFilter| -> Vec<String> {
            fleet
                .profiles
                .iter()
                .filter(|p| filter.matches(&p.profile))
                .map(|p| p.profile.profile_id.clone())
                .collect()
        };
        assert_eq!(matching(ProfileFilter::default()), ["a", "b"]);
        assert_eq!(
            matching(ProfileFilter {
                tag: Some("lab".into()),
                ..Default::default()
            }),
            ["a"]
        );
        assert_eq!(
            matching(ProfileFilter {
                target: Some("ramips".into()),
                ..Default::default()
            }),
            ["b"]
        );
        let none = ProfileFilter {
            release: Some("24.10.0".into()),
            device: Some("d".into()),
            ..Default::default()
        };
        assert!(matching(none).is_empty());
        let both = ProfileFilter {
            subtarget: Some("generic".into()),
            device: Some("d".into()),
            release: Some("23.05.4".into()),
            ..Default::default()
        };
        assert_eq!(matching(both), ["a", "b"]);
    }
}
