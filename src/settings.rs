//! Effective settings: CLI flags > environment > `imagegen.toml` `[settings]` > defaults,
//! each value remembering its origin.
//!
//! The precedence is written once, in [`resolve`]. The environment is passed in as a map and
//! never read here, so tests never touch the real one. This module performs no I/O: it does
//! not create the directories it names nor check that they exist.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{ErrorCode, Location, Problem, Problems, Result};

/// The one registry of environment variables imagegen reads.
pub mod env_vars {
    /// The state database: a plain path, `redb://PATH` or `file://PATH`.
    pub const OWRT_IMG_DB_URL: &str = "OWRT_IMG_DB_URL";
    /// The content-addressed artifact store.
    pub const OWRT_IMG_ARTIFACTS_DIR: &str = "OWRT_IMG_ARTIFACTS_DIR";
    /// Extracted Image Builders.
    pub const OWRT_IMG_CACHE_DIR: &str = "OWRT_IMG_CACHE_DIR";
    /// Temporary work (downloads in flight, private build copies).
    pub const OWRT_IMG_TMP_DIR: &str = "OWRT_IMG_TMP_DIR";
    /// Never touch the network (boolean).
    pub const OWRT_IMG_OFFLINE: &str = "OWRT_IMG_OFFLINE";
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub const OWRT_IMG_LOG_LEVEL: &str = "OWRT_IMG_LOG_LEVEL";
    /// The OpenWrt download server or a mirror (`http://`, `https://` or `file://`).
    pub const OWRT_IMG_MIRROR: &str = "OWRT_IMG_MIRROR";
    /// Concurrent builds.
    pub const OWRT_IMG_JOBS: &str = "OWRT_IMG_JOBS";
    /// Concurrent downloads.
    pub const OWRT_IMG_DOWNLOAD_JOBS: &str = "OWRT_IMG_DOWNLOAD_JOBS";
    /// Extra usign public keys, paths separated by `:`.
    pub const OWRT_IMG_TRUSTED_KEYS: &str = "OWRT_IMG_TRUSTED_KEYS";
    /// Verify `sha256sums.sig` (boolean).
    pub const OWRT_IMG_VERIFY_SIGNATURES: &str = "OWRT_IMG_VERIFY_SIGNATURES";
    /// Seconds one `make image` may run.
    pub const OWRT_IMG_BUILD_TIMEOUT: &str = "OWRT_IMG_BUILD_TIMEOUT";

    /// Every imagegen variable, in the order `imagegen config` lists the settings.
    pub const ALL: &[&str] = &[
        OWRT_IMG_DB_URL,
        OWRT_IMG_ARTIFACTS_DIR,
        OWRT_IMG_CACHE_DIR,
        OWRT_IMG_TMP_DIR,
        OWRT_IMG_OFFLINE,
        OWRT_IMG_LOG_LEVEL,
        OWRT_IMG_MIRROR,
        OWRT_IMG_JOBS,
        OWRT_IMG_DOWNLOAD_JOBS,
        OWRT_IMG_TRUSTED_KEYS,
        OWRT_IMG_VERIFY_SIGNATURES,
        OWRT_IMG_BUILD_TIMEOUT,
    ];

    /// System variables the defaults are derived from.
    pub const HOME: &str = "HOME";
    pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
    pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
    pub const TMPDIR: &str = "TMPDIR";
}

/// The `[settings]` table of `imagegen.toml`, already type-checked by `manifest`.
/// Relative paths are already resolved against the fleet root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSettings {
    /// The manifest file these values came from (for the origin column of `imagegen config`).
    pub path: PathBuf,
    pub db: Option<PathBuf>,
    pub artifacts_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub tmp_dir: Option<PathBuf>,
    pub offline: Option<bool>,
    pub log_level: Option<String>,
    pub mirror: Option<String>,
    pub jobs: Option<u32>,
    pub download_jobs: Option<u32>,
    pub trusted_keys: Option<Vec<PathBuf>>,
    pub verify_signatures: Option<bool>,
    /// Seconds one `make image` may run before it is stopped.
    pub build_timeout: Option<u64>,
}

/// Values given on the command line; `None` means the flag was not given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagSettings {
    pub db: Option<PathBuf>,
    pub artifacts_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub tmp_dir: Option<PathBuf>,
    pub offline: Option<bool>,
    pub log_level: Option<String>,
    pub mirror: Option<String>,
    pub jobs: Option<u32>,
    pub download_jobs: Option<u32>,
    pub trusted_keys: Option<Vec<PathBuf>>,
    pub verify_signatures: Option<bool>,
    pub build_timeout: Option<u64>,
}

/// Where an effective value came from. Serialized as `{"kind":"flag"}`,
/// `{"kind":"env","name":"OWRT_IMG_JOBS"}`, `{"kind":"file","path":"…"}` or `{"kind":"default"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            Origin::Flag => map.serialize_entry("kind", "flag")?,
            Origin::Env(name) => {
                map.serialize_entry("kind", "env")?;
                map.serialize_entry("name", name)?;
            }
            Origin::File(path) => {
                map.serialize_entry("kind", "file")?;
                map.serialize_entry("path", path)?;
            }
            Origin::Default => map.serialize_entry("kind", "default")?,
        }
        map.end()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// One effective value and its origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

/// Every effective setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub db: Setting<PathBuf>,
    pub artifacts_dir: Setting<PathBuf>,
    pub cache_dir: Setting<PathBuf>,
    pub tmp_dir: Setting<PathBuf>,
    pub offline: Setting<bool>,
    pub log_level: Setting<String>,
    pub mirror: Setting<String>,
    pub jobs: Setting<u32>,
    pub download_jobs: Setting<u32>,
    pub trusted_keys: Setting<Vec<PathBuf>>,
    pub verify_signatures: Setting<bool>,
    pub build_timeout: Setting<u64>,
}

/// One row of `imagegen config`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingEntry {
    /// The key in `imagegen.toml` `[settings]`.
    pub name: &'static str,
    pub value: serde_json::Value,
    /// `flag --jobs`, `env OWRT_IMG_JOBS`, `file <manifest path>` or `default`.
    pub origin: String,
    /// The environment variable that sets it.
    pub env: &'static str,
}

pub const DEFAULT_MIRROR: &str = "https://downloads.openwrt.org";
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_JOBS: u32 = 2;
pub const DEFAULT_DOWNLOAD_JOBS: u32 = 2;
pub const DEFAULT_BUILD_TIMEOUT: u64 = 3600;
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
const APP_DIR: &str = "openwrt-imagegen";

/// The name, flag and environment variable of one setting, and how its values are read.
struct Spec<T> {
    name: &'static str,
    flag: &'static str,
    env: &'static str,
    /// Parses an environment value; the error says what is accepted.
    parse: fn(&str) -> std::result::Result<T, &'static str>,
    /// Checks a value from any layer (flags and the file arrive typed but unchecked).
    check: fn(&T) -> std::result::Result<(), &'static str>,
}

type Parse<T> = fn(&str) -> std::result::Result<T, &'static str>;
type Check<T> = fn(&T) -> std::result::Result<(), &'static str>;

const fn spec<T>(
    name: &'static str,
    flag: &'static str,
    env: &'static str,
    parse: Parse<T>,
    check: Check<T>,
) -> Spec<T> {
    Spec {
        name,
        flag,
        env,
        parse,
        check,
    }
}

const DB: Spec<PathBuf> = spec(
    "db",
    "--db",
    env_vars::OWRT_IMG_DB_URL,
    parse_db_url,
    no_check,
);
const ARTIFACTS_DIR: Spec<PathBuf> = spec(
    "artifacts_dir",
    "--artifacts-dir",
    env_vars::OWRT_IMG_ARTIFACTS_DIR,
    parse_path,
    no_check,
);
const CACHE_DIR: Spec<PathBuf> = spec(
    "cache_dir",
    "--cache-dir",
    env_vars::OWRT_IMG_CACHE_DIR,
    parse_path,
    no_check,
);
const TMP_DIR: Spec<PathBuf> = spec(
    "tmp_dir",
    "--tmp-dir",
    env_vars::OWRT_IMG_TMP_DIR,
    parse_path,
    no_check,
);
const OFFLINE: Spec<bool> = spec(
    "offline",
    "--offline",
    env_vars::OWRT_IMG_OFFLINE,
    parse_bool,
    no_check,
);
const LOG_LEVEL: Spec<String> = spec(
    "log_level",
    "--log-level",
    env_vars::OWRT_IMG_LOG_LEVEL,
    parse_log_level,
    check_log_level,
);
const MIRROR: Spec<String> = spec(
    "mirror",
    "--mirror",
    env_vars::OWRT_IMG_MIRROR,
    parse_mirror,
    check_mirror,
);
const JOBS: Spec<u32> = spec(
    "jobs",
    "--jobs",
    env_vars::OWRT_IMG_JOBS,
    parse_count,
    check_count,
);
const DOWNLOAD_JOBS: Spec<u32> = spec(
    "download_jobs",
    "--download-jobs",
    env_vars::OWRT_IMG_DOWNLOAD_JOBS,
    parse_count,
    check_count,
);
const TRUSTED_KEYS: Spec<Vec<PathBuf>> = spec(
    "trusted_keys",
    "--trusted-key",
    env_vars::OWRT_IMG_TRUSTED_KEYS,
    parse_path_list,
    no_check,
);
const VERIFY_SIGNATURES: Spec<bool> = spec(
    "verify_signatures",
    "--verify-signatures",
    env_vars::OWRT_IMG_VERIFY_SIGNATURES,
    parse_bool,
    no_check,
);
const BUILD_TIMEOUT: Spec<u64> = spec(
    "build_timeout",
    "--build-timeout",
    env_vars::OWRT_IMG_BUILD_TIMEOUT,
    parse_seconds,
    check_seconds,
);

/// Resolves every setting: flags > environment > `imagegen.toml` > defaults.
///
/// Only the winning layer of each setting is parsed and checked, so a flag can override a
/// malformed environment variable. All problems are reported together.
pub fn resolve(
    flags: &FlagSettings,
    env: &BTreeMap<String, String>,
    file: Option<&FileSettings>,
) -> Result<Settings> {
    let layers = Layers {
        env,
        file,
        problems: Problems::new(),
    };
    resolve_layers(flags, layers)
}

fn resolve_layers(flags: &FlagSettings, mut l: Layers<'_>) -> Result<Settings> {
    let f = l.file.cloned().unwrap_or_default();
    let db = l.pick(&DB, flags.db.clone(), f.db);
    let artifacts_dir = l.pick(&ARTIFACTS_DIR, flags.artifacts_dir.clone(), f.artifacts_dir);
    let cache_dir = l.pick(&CACHE_DIR, flags.cache_dir.clone(), f.cache_dir);
    let tmp_dir = l.pick(&TMP_DIR, flags.tmp_dir.clone(), f.tmp_dir);
    let offline = l.pick(&OFFLINE, flags.offline, f.offline);
    let log_level = l.pick(&LOG_LEVEL, flags.log_level.clone(), f.log_level);
    let mirror = l.pick(&MIRROR, flags.mirror.clone(), f.mirror);
    let jobs = l.pick(&JOBS, flags.jobs, f.jobs);
    let download_jobs = l.pick(&DOWNLOAD_JOBS, flags.download_jobs, f.download_jobs);
    let trusted_keys = l.pick(&TRUSTED_KEYS, flags.trusted_keys.clone(), f.trusted_keys);
    let verify_signatures = l.pick(
        &VERIFY_SIGNATURES,
        flags.verify_signatures,
        f.verify_signatures,
    );
    let build_timeout = l.pick(&BUILD_TIMEOUT, flags.build_timeout, f.build_timeout);

    let defaults = Defaults { env: l.env };
    let settings = Settings {
        db: l.or_default(db, || defaults.data_dir().map(|dir| dir.join("state.redb"))),
        artifacts_dir: l.or_default(artifacts_dir, || {
            defaults.data_dir().map(|dir| dir.join("artifacts"))
        }),
        cache_dir: l.or_default(cache_dir, || {
            defaults.cache_dir().map(|dir| dir.join("builders"))
        }),
        tmp_dir: l.or_default(tmp_dir, || Ok(defaults.tmp_dir())),
        offline: l.or_default(offline, || Ok(false)),
        log_level: l.or_default(log_level, || Ok(DEFAULT_LOG_LEVEL.to_string())),
        mirror: l.or_default(mirror, || Ok(DEFAULT_MIRROR.to_string())),
        jobs: l.or_default(jobs, || Ok(DEFAULT_JOBS)),
        download_jobs: l.or_default(download_jobs, || Ok(DEFAULT_DOWNLOAD_JOBS)),
        trusted_keys: l.or_default(trusted_keys, || Ok(Vec::new())),
        verify_signatures: l.or_default(verify_signatures, || Ok(true)),
        build_timeout: l.or_default(build_timeout, || Ok(DEFAULT_BUILD_TIMEOUT)),
    };
    l.problems.finish(settings, "invalid settings")
}

/// The non-flag layers, plus the problems found while reading them.
struct Layers<'a> {
    env: &'a BTreeMap<String, String>,
    file: Option<&'a FileSettings>,
    problems: Problems,
}

/// A setting whose winning layer was found (`Some`), is absent everywhere (`None`), or was
/// invalid (`Err`, already recorded as a problem).
type Picked<T> = std::result::Result<Option<Setting<T>>, ()>;

impl Layers<'_> {
    /// The first layer that has a value, parsed (environment) and checked (every layer).
    fn pick<T: Serialize>(
        &mut self,
        spec: &Spec<T>,
        flag: Option<T>,
        file: Option<T>,
    ) -> Picked<T> {
        let (value, origin) = if let Some(value) = flag {
            (value, Origin::Flag)
        } else if let Some(raw) = env_value(self.env, spec.env) {
            match (spec.parse)(raw) {
                Ok(value) => (value, Origin::Env(spec.env)),
                Err(expected) => {
                    let message = format!("`{}={raw}` is not valid: expected {expected}", spec.env);
                    self.problems.push(Problem::validation(message));
                    return Err(());
                }
            }
        } else if let Some(value) = file {
            let path = self.file.map(|file| file.path.clone()).unwrap_or_default();
            (value, Origin::File(path))
        } else {
            return Ok(None);
        };
        match (spec.check)(&value) {
            Ok(()) => Ok(Some(Setting { value, origin })),
            Err(expected) => {
                self.problems
                    .push(invalid_value(spec, &origin, &value, expected));
                Err(())
            }
        }
    }

    /// The picked setting, or the default when no layer had one. An invalid setting yields a
    /// placeholder default that is never returned, because its problem fails the resolve.
    fn or_default<T>(
        &mut self,
        picked: Picked<T>,
        default: impl FnOnce() -> Result<T, Problem>,
    ) -> Setting<T>
    where
        T: Default,
    {
        match picked {
            Ok(Some(setting)) => setting,
            Ok(None) => match default() {
                Ok(value) => Setting {
                    value,
                    origin: Origin::Default,
                },
                Err(problem) => {
                    self.problems.push(problem);
                    placeholder()
                }
            },
            Err(()) => placeholder(),
        }
    }
}

fn placeholder<T: Default>() -> Setting<T> {
    Setting {
        value: T::default(),
        origin: Origin::Default,
    }
}

fn invalid_value<T: Serialize>(
    spec: &Spec<T>,
    origin: &Origin,
    value: &T,
    expected: &str,
) -> Problem {
    let value = match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) if !matches!(origin, Origin::File(_)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::from("?"),
    };
    match origin {
        Origin::File(path) => {
            let message = format!(
                "`{} = {value}` is not valid: expected {expected}",
                spec.name
            );
            Problem::validation(message).at(Location::file(path.display().to_string()))
        }
        _ => Problem::validation(format!(
            "`{} {value}` is not valid: expected {expected}",
            spec.flag
        )),
    }
}

/// An environment variable's value; empty counts as unset, as most tools treat it.
fn env_value<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// The defaults that depend on the environment (DESIGN.md §3, XDG base directories).
struct Defaults<'a> {
    env: &'a BTreeMap<String, String>,
}

impl Defaults<'_> {
    fn data_dir(&self) -> Result<PathBuf, Problem> {
        self.xdg_dir(env_vars::XDG_DATA_HOME, ".local/share")
    }

    fn cache_dir(&self) -> Result<PathBuf, Problem> {
        self.xdg_dir(env_vars::XDG_CACHE_HOME, ".cache")
    }

    fn tmp_dir(&self) -> PathBuf {
        let base = env_value(self.env, env_vars::TMPDIR).unwrap_or("/tmp");
        Path::new(base).join(APP_DIR)
    }

    /// `$XDG_…/openwrt-imagegen`, else `$HOME/<fallback>/openwrt-imagegen`. The XDG spec says
    /// to ignore relative values.
    fn xdg_dir(&self, variable: &str, fallback: &str) -> Result<PathBuf, Problem> {
        if let Some(dir) = env_value(self.env, variable).map(Path::new)
            && dir.is_absolute()
        {
            return Ok(dir.join(APP_DIR));
        }
        match env_value(self.env, env_vars::HOME) {
            Some(home) => Ok(Path::new(home).join(fallback).join(APP_DIR)),
            None => Err(Problem::new(
                ErrorCode::Precondition,
                "cannot find the default state directories: `HOME` is not set",
            )
            .with_help(format!(
                "set `HOME`, or set `{}`, `{}` and `{}`",
                env_vars::OWRT_IMG_DB_URL,
                env_vars::OWRT_IMG_ARTIFACTS_DIR,
                env_vars::OWRT_IMG_CACHE_DIR
            ))),
        }
    }
}

const EXPECTED_BOOL: &str = "one of 1, 0, true, false, yes, no, on, off";
const EXPECTED_COUNT: &str = "a whole number, at least 1";
const EXPECTED_SECONDS: &str = "a whole number of seconds, at least 1";
const EXPECTED_LOG_LEVEL: &str = "one of error, warn, info, debug, trace";
const EXPECTED_MIRROR: &str = "an http://, https:// or file:// URL";
const EXPECTED_DB_URL: &str = "a path, redb://PATH or file://PATH";

fn no_check<T>(_: &T) -> std::result::Result<(), &'static str> {
    Ok(())
}

fn parse_path(raw: &str) -> std::result::Result<PathBuf, &'static str> {
    Ok(PathBuf::from(raw))
}

fn parse_db_url(raw: &str) -> std::result::Result<PathBuf, &'static str> {
    let path = ["redb://", "file://"]
        .iter()
        .find_map(|scheme| raw.strip_prefix(scheme))
        .unwrap_or(raw);
    // Another scheme (the seed's `sqlite://`) names a database we cannot open.
    if path.is_empty() || path.contains("://") {
        return Err(EXPECTED_DB_URL);
    }
    Ok(PathBuf::from(path))
}

fn parse_path_list(raw: &str) -> std::result::Result<Vec<PathBuf>, &'static str> {
    Ok(raw
        .split(':')
        .filter(|part| !part.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// Accepts 1/0/true/false/yes/no/on/off in any case.
pub fn parse_bool(raw: &str) -> std::result::Result<bool, &'static str> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(EXPECTED_BOOL),
    }
}

fn parse_count(raw: &str) -> std::result::Result<u32, &'static str> {
    let count = raw.trim().parse::<u32>().map_err(|_| EXPECTED_COUNT)?;
    check_count(&count).map(|()| count)
}

fn check_count(count: &u32) -> std::result::Result<(), &'static str> {
    if *count >= 1 {
        Ok(())
    } else {
        Err(EXPECTED_COUNT)
    }
}

fn parse_seconds(raw: &str) -> std::result::Result<u64, &'static str> {
    let seconds = raw.trim().parse::<u64>().map_err(|_| EXPECTED_SECONDS)?;
    check_seconds(&seconds).map(|()| seconds)
}

fn check_seconds(seconds: &u64) -> std::result::Result<(), &'static str> {
    if *seconds >= 1 {
        Ok(())
    } else {
        Err(EXPECTED_SECONDS)
    }
}

fn parse_log_level(raw: &str) -> std::result::Result<String, &'static str> {
    let level = raw.trim().to_ascii_lowercase();
    check_log_level(&level).map(|()| level)
}

#[allow(clippy::ptr_arg, reason = "must match `Check<String>`")]
fn check_log_level(level: &String) -> std::result::Result<(), &'static str> {
    if LOG_LEVELS.contains(&level.as_str()) {
        Ok(())
    } else {
        Err(EXPECTED_LOG_LEVEL)
    }
}

fn parse_mirror(raw: &str) -> std::result::Result<String, &'static str> {
    let mirror = raw.trim().trim_end_matches('/').to_string();
    check_mirror(&mirror).map(|()| mirror)
}

#[allow(clippy::ptr_arg, reason = "must match `Check<String>`")]
fn check_mirror(mirror: &String) -> std::result::Result<(), &'static str> {
    let rest = ["http://", "https://", "file://"]
        .iter()
        .find_map(|scheme| mirror.strip_prefix(scheme));
    match rest {
        Some(rest) if !rest.trim_matches('/').is_empty() => Ok(()),
        _ => Err(EXPECTED_MIRROR),
    }
}

impl Settings {
    /// The rows `imagegen config` prints, in a stable order.
    pub fn entries(&self) -> Vec<SettingEntry> {
        vec![
            entry(&DB, &self.db),
            entry(&ARTIFACTS_DIR, &self.artifacts_dir),
            entry(&CACHE_DIR, &self.cache_dir),
            entry(&TMP_DIR, &self.tmp_dir),
            entry(&OFFLINE, &self.offline),
            entry(&LOG_LEVEL, &self.log_level),
            entry(&MIRROR, &self.mirror),
            entry(&JOBS, &self.jobs),
            entry(&DOWNLOAD_JOBS, &self.download_jobs),
            entry(&TRUSTED_KEYS, &self.trusted_keys),
            entry(&VERIFY_SIGNATURES, &self.verify_signatures),
            entry(&BUILD_TIMEOUT, &self.build_timeout),
        ]
    }
}

fn entry<T: Serialize>(spec: &Spec<T>, setting: &Setting<T>) -> SettingEntry {
    let origin = match &setting.origin {
        Origin::Flag => format!("flag {}", spec.flag),
        other => other.to_string(),
    };
    SettingEntry {
        name: spec.name,
        // Paths that are not UTF-8 cannot be JSON strings; null is the honest rendering.
        value: serde_json::to_value(&setting.value).unwrap_or(serde_json::Value::Null),
        origin,
        env: spec.env,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn home() -> BTreeMap<String, String> {
        env(&[("HOME", "/home/op")])
    }

    fn file() -> FileSettings {
        FileSettings {
            path: PathBuf::from("/fleet/imagegen.toml"),
            jobs: Some(3),
            mirror: Some("file:///srv/mirror".to_string()),
            ..FileSettings::default()
        }
    }

    fn problem_messages(error: &crate::Error) -> Vec<String> {
        error
            .problems
            .iter()
            .map(|problem| problem.to_string())
            .collect()
    }

    #[test]
    fn defaults_follow_home() {
        let settings = resolve(&FlagSettings::default(), &home(), None).unwrap();
        assert_eq!(
            settings.db.value,
            Path::new("/home/op/.local/share/openwrt-imagegen/state.redb")
        );
        assert_eq!(
            settings.artifacts_dir.value,
            Path::new("/home/op/.local/share/openwrt-imagegen/artifacts")
        );
        assert_eq!(
            settings.cache_dir.value,
            Path::new("/home/op/.cache/openwrt-imagegen/builders")
        );
        assert_eq!(settings.tmp_dir.value, Path::new("/tmp/openwrt-imagegen"));
        assert!(!settings.offline.value);
        assert_eq!(settings.log_level.value, "info");
        assert_eq!(settings.mirror.value, "https://downloads.openwrt.org");
        assert_eq!((settings.jobs.value, settings.download_jobs.value), (2, 2));
        assert!(settings.trusted_keys.value.is_empty());
        assert!(settings.verify_signatures.value);
        assert_eq!(settings.build_timeout.value, 3600);
        assert!(
            settings
                .entries()
                .iter()
                .all(|entry| entry.origin == "default")
        );
    }

    #[test]
    fn defaults_honour_xdg_and_tmpdir() {
        let env = env(&[
            ("XDG_DATA_HOME", "/data"),
            ("XDG_CACHE_HOME", "/cache"),
            ("TMPDIR", "/scratch"),
        ]);
        let settings = resolve(&FlagSettings::default(), &env, None).unwrap();
        assert_eq!(
            settings.db.value,
            Path::new("/data/openwrt-imagegen/state.redb")
        );
        assert_eq!(
            settings.artifacts_dir.value,
            Path::new("/data/openwrt-imagegen/artifacts")
        );
        assert_eq!(
            settings.cache_dir.value,
            Path::new("/cache/openwrt-imagegen/builders")
        );
        assert_eq!(
            settings.tmp_dir.value,
            Path::new("/scratch/openwrt-imagegen")
        );
    }

    #[test]
    fn relative_xdg_is_ignored() {
        let env = env(&[("XDG_DATA_HOME", "data"), ("HOME", "/home/op")]);
        let settings = resolve(&FlagSettings::default(), &env, None).unwrap();
        assert_eq!(
            settings.db.value,
            Path::new("/home/op/.local/share/openwrt-imagegen/state.redb")
        );
    }

    #[test]
    fn missing_home_is_an_error_with_a_hint() {
        let error = resolve(&FlagSettings::default(), &BTreeMap::new(), None).unwrap_err();
        assert_eq!(error.code, ErrorCode::Precondition);
        assert!(error.problems[0].message.contains("`HOME` is not set"));
        assert!(
            error.problems[0]
                .help
                .as_deref()
                .unwrap_or("")
                .contains("OWRT_IMG_DB_URL")
        );
    }

    #[test]
    fn missing_home_is_fine_when_every_path_is_given() {
        let env = env(&[
            ("OWRT_IMG_DB_URL", "/s/state.redb"),
            ("OWRT_IMG_ARTIFACTS_DIR", "/s/artifacts"),
            ("OWRT_IMG_CACHE_DIR", "/s/cache"),
        ]);
        assert!(resolve(&FlagSettings::default(), &env, None).is_ok());
    }

    #[test]
    fn file_wins_over_default() {
        let settings = resolve(&FlagSettings::default(), &home(), Some(&file())).unwrap();
        assert_eq!(settings.jobs.value, 3);
        assert_eq!(
            settings.jobs.origin,
            Origin::File(PathBuf::from("/fleet/imagegen.toml"))
        );
        assert_eq!(settings.mirror.value, "file:///srv/mirror");
        assert_eq!(settings.download_jobs.origin, Origin::Default);
    }

    #[test]
    fn env_wins_over_file() {
        let env = env(&[("HOME", "/home/op"), ("OWRT_IMG_JOBS", "5")]);
        let settings = resolve(&FlagSettings::default(), &env, Some(&file())).unwrap();
        assert_eq!(settings.jobs.value, 5);
        assert_eq!(settings.jobs.origin, Origin::Env(env_vars::OWRT_IMG_JOBS));
    }

    #[test]
    fn flag_wins_over_env() {
        let env = env(&[("HOME", "/home/op"), ("OWRT_IMG_JOBS", "5")]);
        let flags = FlagSettings {
            jobs: Some(7),
            ..FlagSettings::default()
        };
        let settings = resolve(&flags, &env, Some(&file())).unwrap();
        assert_eq!(settings.jobs.value, 7);
        assert_eq!(settings.jobs.origin, Origin::Flag);
    }

    #[test]
    fn a_flag_overrides_a_malformed_env_value() {
        let env = env(&[("HOME", "/home/op"), ("OWRT_IMG_JOBS", "abc")]);
        let flags = FlagSettings {
            jobs: Some(7),
            ..FlagSettings::default()
        };
        assert_eq!(resolve(&flags, &env, None).unwrap().jobs.value, 7);
    }

    #[test]
    fn empty_env_value_counts_as_unset() {
        let env = env(&[("HOME", "/home/op"), ("OWRT_IMG_JOBS", "")]);
        let settings = resolve(&FlagSettings::default(), &env, Some(&file())).unwrap();
        assert_eq!(settings.jobs.value, 3);
    }

    #[test]
    fn booleans() {
        for (raw, expected) in [
            ("1", true),
            ("0", false),
            ("true", true),
            ("FALSE", false),
            ("yes", true),
            ("No", false),
            ("on", true),
            ("off", false),
        ] {
            assert_eq!(parse_bool(raw), Ok(expected), "{raw}");
        }
        let env = env(&[("HOME", "/h"), ("OWRT_IMG_OFFLINE", "maybe")]);
        let error = resolve(&FlagSettings::default(), &env, None).unwrap_err();
        assert_eq!(error.code, ErrorCode::Validation);
        assert_eq!(
            problem_messages(&error),
            [
                "`OWRT_IMG_OFFLINE=maybe` is not valid: expected one of 1, 0, true, false, yes, no, on, off"
            ]
        );
    }

    #[test]
    fn every_invalid_env_value_is_reported() {
        let env = env(&[
            ("HOME", "/h"),
            ("OWRT_IMG_JOBS", "abc"),
            ("OWRT_IMG_DOWNLOAD_JOBS", "0"),
            ("OWRT_IMG_LOG_LEVEL", "loud"),
            ("OWRT_IMG_MIRROR", "ftp://example.org"),
            ("OWRT_IMG_BUILD_TIMEOUT", "-1"),
            ("OWRT_IMG_DB_URL", "sqlite:///x.db"),
        ]);
        let error = resolve(&FlagSettings::default(), &env, None).unwrap_err();
        assert_eq!(error.message, "invalid settings: 6 problems");
        assert_eq!(
            problem_messages(&error),
            [
                "`OWRT_IMG_DB_URL=sqlite:///x.db` is not valid: expected a path, redb://PATH or file://PATH",
                "`OWRT_IMG_LOG_LEVEL=loud` is not valid: expected one of error, warn, info, debug, trace",
                "`OWRT_IMG_MIRROR=ftp://example.org` is not valid: expected an http://, https:// or file:// URL",
                "`OWRT_IMG_JOBS=abc` is not valid: expected a whole number, at least 1",
                "`OWRT_IMG_DOWNLOAD_JOBS=0` is not valid: expected a whole number, at least 1",
                "`OWRT_IMG_BUILD_TIMEOUT=-1` is not valid: expected a whole number of seconds, at least 1",
            ]
        );
    }

    #[test]
    fn invalid_flag_and_file_values_are_reported() {
        let flags = FlagSettings {
            jobs: Some(0),
            ..FlagSettings::default()
        };
        let file = FileSettings {
            log_level: Some("loud".to_string()),
            ..file()
        };
        let error = resolve(&flags, &home(), Some(&file)).unwrap_err();
        assert_eq!(
            problem_messages(&error),
            [
                "/fleet/imagegen.toml: `log_level = \"loud\"` is not valid: expected one of error, warn, info, debug, trace",
                "`--jobs 0` is not valid: expected a whole number, at least 1",
            ]
        );
    }

    #[test]
    fn db_url_forms() {
        assert_eq!(
            parse_db_url("/a/state.redb"),
            Ok(PathBuf::from("/a/state.redb"))
        );
        assert_eq!(
            parse_db_url("redb:///a/state.redb"),
            Ok(PathBuf::from("/a/state.redb"))
        );
        assert_eq!(
            parse_db_url("file:///a/state.redb"),
            Ok(PathBuf::from("/a/state.redb"))
        );
        assert_eq!(parse_db_url("redb://"), Err(EXPECTED_DB_URL));
    }

    #[test]
    fn env_values_are_normalised() {
        let env = env(&[
            ("HOME", "/h"),
            ("OWRT_IMG_TRUSTED_KEYS", "/k/a.pub::/k/b.pub"),
            ("OWRT_IMG_LOG_LEVEL", "DEBUG"),
            ("OWRT_IMG_MIRROR", "https://mirror.example/openwrt/"),
        ]);
        let settings = resolve(&FlagSettings::default(), &env, None).unwrap();
        assert_eq!(
            settings.trusted_keys.value,
            [PathBuf::from("/k/a.pub"), PathBuf::from("/k/b.pub")]
        );
        assert_eq!(settings.log_level.value, "debug");
        assert_eq!(settings.mirror.value, "https://mirror.example/openwrt");
    }

    #[test]
    fn entries_name_their_origin() {
        let env = env(&[("HOME", "/h"), ("OWRT_IMG_OFFLINE", "yes")]);
        let flags = FlagSettings {
            jobs: Some(4),
            ..FlagSettings::default()
        };
        let settings = resolve(&flags, &env, Some(&file())).unwrap();
        let entries = settings.entries();
        let origin = |name: &str| {
            entries
                .iter()
                .find(|entry| entry.name == name)
                .map(|entry| entry.origin.clone())
        };
        assert_eq!(origin("jobs").as_deref(), Some("flag --jobs"));
        assert_eq!(origin("offline").as_deref(), Some("env OWRT_IMG_OFFLINE"));
        assert_eq!(
            origin("mirror").as_deref(),
            Some("file /fleet/imagegen.toml")
        );
        assert_eq!(origin("db").as_deref(), Some("default"));
        let names: Vec<&str> = entries.iter().map(|entry| entry.env).collect();
        assert_eq!(names, env_vars::ALL);
        let json = serde_json::to_value(&entries[4]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "offline", "value": true, "origin": "env OWRT_IMG_OFFLINE", "env": "OWRT_IMG_OFFLINE"})
        );
    }

    #[test]
    fn origin_serializes_tagged() {
        let origin = Origin::Env(env_vars::OWRT_IMG_JOBS);
        assert_eq!(
            serde_json::to_value(&origin).unwrap(),
            serde_json::json!({"kind": "env", "name": "OWRT_IMG_JOBS"})
        );
        assert_eq!(
            serde_json::to_value(Origin::Default).unwrap(),
            serde_json::json!({"kind": "default"})
        );
    }
}
