//! Effective settings: command-line flags > environment > `imagegen.toml` `[settings]` >
//! defaults, each value remembering its origin.
//!
//! Every setting is one row of [`table`]; the precedence is written once, in [`resolve`].
//! Flags and environment values are text parsed by the row's [`Kind`]; file values arrive
//! typed from the manifest reader; every layer's value passes the same check. The
//! environment is passed in as a map and never read here. No I/O: this module neither
//! creates nor checks the directories it names.

mod kind;
mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ErrorCode, Location, Problem, Problems, Result};
pub use kind::{Kind, Value, parse_bool};
pub use table::{SettingDef, Settings, TABLE, env_vars};

pub const DEFAULT_MIRROR: &str = "https://downloads.openwrt.org";
const APP_DIR: &str = "openwrt-imagegen";

/// Values given on the command line (or by an API caller), as text, by setting name. A
/// repeated flag (`--trusted-key`) has several values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagSettings {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl FlagSettings {
    /// Sets a flag's value; an unknown setting name is ignored (names come from [`TABLE`]).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        if let Some(def) = SettingDef::named(name) {
            self.values.entry(def.name).or_default().push(value.into());
        }
    }

    /// The same, for building in one expression.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> FlagSettings {
        self.set(name, value);
        self
    }

    fn get(&self, name: &str) -> Option<&[String]> {
        self.values.get(name).map(Vec::as_slice)
    }
}

/// The `[settings]` table of `imagegen.toml`, already checked by the manifest reader.
/// Relative paths are already resolved against the fleet root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSettings {
    /// The manifest file these values came from (for the origin column of `imagegen config`).
    pub path: PathBuf,
    pub values: BTreeMap<&'static str, Value>,
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

/// One row of `imagegen config`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SettingEntry {
    /// The key in `imagegen.toml` `[settings]`.
    #[schema(value_type = String)]
    pub name: &'static str,
    pub value: serde_json::Value,
    /// `flag --jobs`, `env OWRT_IMG_JOBS`, `file <manifest path>` or `default`.
    pub origin: String,
    /// The environment variable that sets it.
    #[schema(value_type = String)]
    pub env: &'static str,
}

impl SettingEntry {
    fn of<T: Serialize>(name: &'static str, setting: &Setting<T>) -> SettingEntry {
        let def = SettingDef::named(name);
        let origin = match &setting.origin {
            Origin::Flag => format!("flag --{}", def.map_or(name, |def| def.flag)),
            other => other.to_string(),
        };
        SettingEntry {
            name,
            // Paths that are not UTF-8 cannot be JSON strings; null is the honest rendering.
            value: serde_json::to_value(&setting.value).unwrap_or(serde_json::Value::Null),
            origin,
            env: def.map_or("", |def| def.env),
        }
    }
}

/// Resolves every setting: flags > environment > `imagegen.toml` > defaults.
///
/// Only the winning layer of each setting is parsed and checked, so a flag can override a
/// malformed environment variable. All problems are reported together.
pub fn resolve(
    flags: &FlagSettings,
    env: &BTreeMap<String, String>,
    file: Option<&FileSettings>,
) -> Result<Settings> {
    let defaults = Defaults { env };
    let mut resolved = Resolved {
        values: BTreeMap::new(),
        problems: Problems::new(),
    };
    for def in TABLE {
        if let Some(setting) = pick(def, flags, env, file, &defaults, &mut resolved.problems) {
            resolved.values.insert(def.name, setting);
        }
    }
    let settings = Settings::from_resolved(&mut resolved);
    resolved.problems.finish(settings, "invalid settings")
}

/// The first layer that has a value for `def`, parsed and checked; `None` (with a problem)
/// when that layer's value is invalid.
fn pick(
    def: &SettingDef,
    flags: &FlagSettings,
    env: &BTreeMap<String, String>,
    file: Option<&FileSettings>,
    defaults: &Defaults,
    problems: &mut Problems,
) -> Option<Setting<Value>> {
    let invalid = |shown: String, expected: String| {
        Problem::validation(format!("{shown} is not valid: expected {expected}"))
    };
    if let Some(raws) = flags.get(def.name) {
        let parsed = match def.kind {
            Kind::Paths => Ok(Value::Paths(raws.iter().map(PathBuf::from).collect())),
            kind => kind.parse(raws.last().map_or("", String::as_str)),
        };
        return match parsed {
            Ok(value) => Some(Setting {
                value,
                origin: Origin::Flag,
            }),
            Err(expected) => {
                let shown = format!("`--{} {}`", def.flag, raws.join(" "));
                problems.push(invalid(shown, expected));
                None
            }
        };
    }
    if let Some(raw) = env_value(env, def.env) {
        return match def.kind.parse(raw) {
            Ok(value) => Some(Setting {
                value,
                origin: Origin::Env(def.env),
            }),
            Err(expected) => {
                problems.push(invalid(format!("`{}={raw}`", def.env), expected));
                None
            }
        };
    }
    if let Some(file) = file
        && let Some(value) = file.values.get(def.name)
    {
        return match def.kind.check(value) {
            Ok(()) => Some(Setting {
                value: value.clone(),
                origin: Origin::File(file.path.clone()),
            }),
            Err(expected) => {
                let shown = format!("`{} = {}`", def.name, show(value));
                let location = Location::file(file.path.display().to_string());
                problems.push(invalid(shown, expected).at(location));
                None
            }
        };
    }
    match (def.default)(defaults) {
        Ok(value) => Some(Setting {
            value,
            origin: Origin::Default,
        }),
        Err(problem) => {
            problems.push(problem);
            None
        }
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Path(path) => format!("{:?}", path.display().to_string()),
        Value::Paths(paths) => format!("{paths:?}"),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Text(text) => format!("{text:?}"),
    }
}

/// The settings resolved so far, handed out typed to [`Settings::from_resolved`].
pub(crate) struct Resolved {
    values: BTreeMap<&'static str, Setting<Value>>,
    problems: Problems,
}

impl Resolved {
    /// The setting `name` as `T`. A setting whose layer was invalid yields a placeholder
    /// that is never returned: its problem fails the whole resolve.
    fn take<T: FromValue + Default>(&mut self, name: &str) -> Setting<T> {
        let setting = self.values.remove(name);
        match setting.and_then(|setting| Some((T::from_value(setting.value)?, setting.origin))) {
            Some((value, origin)) => Setting { value, origin },
            None => Setting {
                value: T::default(),
                origin: Origin::Default,
            },
        }
    }
}

/// A typed view of a [`Value`].
trait FromValue: Sized {
    fn from_value(value: Value) -> Option<Self>;
}

impl FromValue for PathBuf {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Path(path) => Some(path),
            _ => None,
        }
    }
}

impl FromValue for Vec<PathBuf> {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Paths(paths) => Some(paths),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Bool(flag) => Some(flag),
            _ => None,
        }
    }
}

impl FromValue for u64 {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Number(number) => Some(number),
            _ => None,
        }
    }
}

impl FromValue for u32 {
    fn from_value(value: Value) -> Option<Self> {
        u64::from_value(value).and_then(|number| u32::try_from(number).ok())
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl From<PathBuf> for Value {
    fn from(path: PathBuf) -> Value {
        Value::Path(path)
    }
}

impl From<Vec<PathBuf>> for Value {
    fn from(paths: Vec<PathBuf>) -> Value {
        Value::Paths(paths)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Value {
        Value::Bool(flag)
    }
}

impl From<u64> for Value {
    fn from(number: u64) -> Value {
        Value::Number(number)
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Text(text)
    }
}

/// An environment variable's value; empty counts as unset, as most tools treat it.
fn env_value<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// The user's home directory from the environment, if `HOME` is set.
pub fn home_dir(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    env_value(env, env_vars::HOME).map(PathBuf::from)
}

/// True when `NO_COLOR` asks for no colour.
pub fn no_color(env: &BTreeMap<String, String>) -> bool {
    env.contains_key(env_vars::NO_COLOR)
}

/// The defaults that depend on the environment (DESIGN.md §3, XDG base directories).
pub(crate) struct Defaults<'a> {
    env: &'a BTreeMap<String, String>,
}

impl Defaults<'_> {
    fn data_dir(&self) -> Result<PathBuf, Problem> {
        self.xdg_dir(env_vars::XDG_DATA_HOME, ".local/share")
    }

    fn cache_dir(&self) -> Result<PathBuf, Problem> {
        self.xdg_dir(env_vars::XDG_CACHE_HOME, ".cache")
    }

    /// Per user: another user cannot plant links in it or read the builds (docs/security.md).
    fn tmp_dir(&self) -> PathBuf {
        let base = env_value(self.env, env_vars::TMPDIR).unwrap_or("/tmp");
        Path::new(base).join(format!("{APP_DIR}-{}", crate::fsutil::effective_uid()))
    }

    /// `$XDG_…/openwrt-imagegen`, else `$HOME/<fallback>/openwrt-imagegen`. The XDG spec says
    /// to ignore relative values.
    fn xdg_dir(&self, variable: &str, fallback: &str) -> Result<PathBuf, Problem> {
        if let Some(dir) = env_value(self.env, variable).map(Path::new)
            && dir.is_absolute()
        {
            return Ok(dir.join(APP_DIR));
        }
        match home_dir(self.env) {
            Some(home) => Ok(home.join(fallback).join(APP_DIR)),
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

#[cfg(test)]
mod tests;
