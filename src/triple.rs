//! [`Triple`]: which Image Builder — an OpenWrt release, target and subtarget. The one type
//! for that concept, used by profiles, the lock file, upstream metadata, state records and
//! plan addresses alike; it alone formats and parses `RELEASE/TARGET/SUBTARGET`.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode, Result};

/// The plan address prefix of Image Builder actions (`builder.23.05.4/ath79/generic`).
pub const BUILDER_ADDRESS_PREFIX: &str = "builder.";

/// One Image Builder coordinate. Serialized as three fields (`release`, `target`,
/// `subtarget`), usually flattened into the record that holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub struct Triple {
    pub release: String,
    pub target: String,
    pub subtarget: String,
}

impl Triple {
    pub fn new(
        release: impl Into<String>,
        target: impl Into<String>,
        subtarget: impl Into<String>,
    ) -> Triple {
        Triple {
            release: release.into(),
            target: target.into(),
            subtarget: subtarget.into(),
        }
    }

    /// The plan address of this Image Builder: `builder.23.05.4/ath79/generic`.
    pub fn address(&self) -> String {
        format!("{BUILDER_ADDRESS_PREFIX}{self}")
    }

    /// Parses `23.05.4/ath79/generic` or the address `builder.23.05.4/ath79/generic`.
    pub fn parse(text: &str) -> Result<Triple> {
        let bare = text.strip_prefix(BUILDER_ADDRESS_PREFIX).unwrap_or(text);
        let mut parts = bare.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(release), Some(target), Some(subtarget), None)
                if [release, target, subtarget]
                    .iter()
                    .all(|part| is_name(part)) =>
            {
                Ok(Triple::new(release, target, subtarget))
            }
            _ => Err(Error::new(
                ErrorCode::Validation,
                format!("`{text}` is not an Image Builder address"),
            )
            .with_help("write it as RELEASE/TARGET/SUBTARGET, e.g. `23.05.4/ath79/generic`")),
        }
    }
}

/// A release, target or subtarget name: it becomes part of cache paths and mirror URLs, so
/// only letters, digits, `.`, `_` and `-`, not starting with `.`.
fn is_name(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with('.')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `23.05.4/ath79/generic`: the lock key and the builder address suffix.
impl fmt::Display for Triple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.release, self.target, self.subtarget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings_and_formats_back() {
        let triple = Triple::parse("builder.23.05.4/ath79/generic").unwrap();
        assert_eq!(triple, Triple::new("23.05.4", "ath79", "generic"));
        assert_eq!(triple.to_string(), "23.05.4/ath79/generic");
        assert_eq!(triple.address(), "builder.23.05.4/ath79/generic");
        assert_eq!(Triple::parse(&triple.to_string()).unwrap(), triple);
    }

    #[test]
    fn refuses_missing_and_extra_parts() {
        for text in [
            "",
            "23.05.4/ath79",
            "23.05.4//generic",
            "a/b/c/d",
            "builder.",
        ] {
            let error = Triple::parse(text).unwrap_err();
            assert_eq!(error.code, ErrorCode::Validation, "{text}");
        }
    }
}
