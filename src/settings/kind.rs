//! The kinds of setting values: how text (a flag or an environment variable) is parsed, and
//! the one check every layer's value passes, whatever layer it came from.

use std::path::PathBuf;

/// A setting's value before it is handed out typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Path(PathBuf),
    Paths(Vec<PathBuf>),
    Bool(bool),
    Number(u64),
    Text(String),
}

/// What a setting holds; decides parsing, checking and how the flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory or file.
    Path,
    /// The state database: a path, `redb://PATH` or `file://PATH`.
    Database,
    /// Several paths: `:`-separated in the environment, a repeated flag, an array in the file.
    Paths,
    /// A boolean whose flag takes a value (`--verify-signatures false`).
    Bool,
    /// A boolean whose flag is a switch (`--offline`).
    Switch,
    /// A whole number in `1..=max`.
    Count { max: u64 },
    /// One of a fixed list of words.
    Choice(&'static [&'static str]),
    /// A download mirror URL.
    Mirror,
}

const EXPECTED_BOOL: &str = "one of 1, 0, true, false, yes, no, on, off";
const EXPECTED_DATABASE: &str = "a path, redb://PATH or file://PATH";
const EXPECTED_MIRROR: &str =
    "an http://, https:// or file:/// URL (file:// needs an absolute path)";

impl Kind {
    /// Parses text from a flag or the environment, then checks it.
    pub fn parse(self, raw: &str) -> Result<Value, String> {
        let value = match self {
            Kind::Path => Value::Path(PathBuf::from(raw)),
            Kind::Database => Value::Path(parse_database(raw)?),
            Kind::Paths => Value::Paths(
                raw.split(':')
                    .filter(|part| !part.is_empty())
                    .map(PathBuf::from)
                    .collect(),
            ),
            Kind::Bool | Kind::Switch => Value::Bool(parse_bool(raw).ok_or(EXPECTED_BOOL)?),
            Kind::Count { .. } => {
                Value::Number(raw.trim().parse::<u64>().map_err(|_| self.expected())?)
            }
            Kind::Choice(_) => Value::Text(raw.trim().to_ascii_lowercase()),
            Kind::Mirror => Value::Text(raw.trim().trim_end_matches('/').to_string()),
        };
        self.check(&value)?;
        Ok(value)
    }

    /// The check every value passes, from any layer; the error says what is accepted.
    pub fn check(self, value: &Value) -> Result<(), String> {
        let valid = match (self, value) {
            (Kind::Path | Kind::Database, Value::Path(path)) => !path.as_os_str().is_empty(),
            (Kind::Paths, Value::Paths(_)) | (Kind::Bool | Kind::Switch, Value::Bool(_)) => true,
            (Kind::Count { max }, Value::Number(number)) => (1..=max).contains(number),
            (Kind::Choice(words), Value::Text(text)) => words.contains(&text.as_str()),
            (Kind::Mirror, Value::Text(text)) => is_mirror_url(text),
            _ => false,
        };
        if valid { Ok(()) } else { Err(self.expected()) }
    }

    /// What a valid value looks like, for messages.
    pub fn expected(self) -> String {
        match self {
            Kind::Path => "a path".to_string(),
            Kind::Database => EXPECTED_DATABASE.to_string(),
            Kind::Paths => "paths".to_string(),
            Kind::Bool | Kind::Switch => EXPECTED_BOOL.to_string(),
            Kind::Count { max } => format!("a whole number from 1 to {max}"),
            Kind::Choice(words) => format!("one of {}", words.join(", ")),
            Kind::Mirror => EXPECTED_MIRROR.to_string(),
        }
    }
}

/// Accepts 1/0/true/false/yes/no/on/off in any case.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_database(raw: &str) -> Result<PathBuf, String> {
    let path = ["redb://", "file://"]
        .iter()
        .find_map(|scheme| raw.strip_prefix(scheme))
        .unwrap_or(raw);
    // Another scheme (the seed's `sqlite://`) names a database we cannot open.
    if path.is_empty() || path.contains("://") {
        return Err(EXPECTED_DATABASE.to_string());
    }
    Ok(PathBuf::from(path))
}

/// `http://host…`, `https://host…` or `file:///absolute/path`, without whitespace.
fn is_mirror_url(text: &str) -> bool {
    if text.contains(char::is_whitespace) {
        return false;
    }
    if let Some(path) = text.strip_prefix("file://") {
        return path.starts_with('/') && !path.trim_matches('/').is_empty();
    }
    ["http://", "https://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))
        .is_some_and(|rest| !rest.trim_matches('/').is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(parse_bool(raw), Some(expected), "{raw}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn database_forms() {
        for raw in [
            "/a/state.redb",
            "redb:///a/state.redb",
            "file:///a/state.redb",
        ] {
            assert_eq!(
                Kind::Database.parse(raw),
                Ok(Value::Path(PathBuf::from("/a/state.redb"))),
                "{raw}"
            );
        }
        assert!(Kind::Database.parse("redb://").is_err());
        assert!(Kind::Database.parse("sqlite:///x.db").is_err());
    }

    #[test]
    fn mirrors_need_a_host_or_an_absolute_path() {
        let valid = [
            "https://downloads.openwrt.org",
            "http://m/openwrt",
            "file:///srv/mirror",
        ];
        for text in valid {
            assert!(Kind::Mirror.parse(text).is_ok(), "{text}");
        }
        for text in [
            "ftp://x",
            "file://relative",
            "https://",
            "file:///",
            "https://a b",
        ] {
            assert!(Kind::Mirror.parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn counts_are_checked_the_same_from_text_and_numbers() {
        let jobs = Kind::Count { max: 256 };
        assert_eq!(jobs.parse("4"), Ok(Value::Number(4)));
        assert!(jobs.parse("0").is_err());
        assert!(jobs.parse("257").is_err());
        assert!(jobs.check(&Value::Number(257)).is_err());
        assert!(jobs.check(&Value::Number(256)).is_ok());
    }
}
