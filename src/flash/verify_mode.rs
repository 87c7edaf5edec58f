//! `--verify full|prefix:<MiB>|none`: how much of what was written is read back.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};

/// How much of what was written is read back and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum VerifyMode {
    /// Every byte written.
    Full,
    /// The first this-many bytes (or all, when the image is shorter).
    Prefix(u64),
    None,
}

impl VerifyMode {
    /// Bytes to hash while writing; `u64::MAX` for everything.
    pub(crate) fn hash_limit(self) -> u64 {
        match self {
            VerifyMode::Full => u64::MAX,
            VerifyMode::Prefix(bytes) => bytes,
            VerifyMode::None => 0,
        }
    }
}

impl std::str::FromStr for VerifyMode {
    type Err = Error;

    /// `full`, `none` or `prefix:<MiB>`.
    fn from_str(text: &str) -> Result<VerifyMode> {
        let invalid = || {
            Error::new(
                ErrorCode::Validation,
                format!("invalid verification mode `{text}`"),
            )
            .with_help("use `full`, `none` or `prefix:<MiB>` (such as `prefix:64`)")
        };
        match text {
            "full" => Ok(VerifyMode::Full),
            "none" => Ok(VerifyMode::None),
            _ => {
                let mebibytes: u64 = text
                    .strip_prefix("prefix:")
                    .and_then(|value| value.parse().ok())
                    .filter(|value| *value > 0)
                    .ok_or_else(invalid)?;
                let bytes = mebibytes.checked_mul(1024 * 1024).ok_or_else(invalid)?;
                Ok(VerifyMode::Prefix(bytes))
            }
        }
    }
}

impl std::fmt::Display for VerifyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyMode::Full => f.write_str("full"),
            VerifyMode::None => f.write_str("none"),
            VerifyMode::Prefix(bytes) => write!(f, "prefix:{}", bytes / (1024 * 1024)),
        }
    }
}

impl From<VerifyMode> for String {
    fn from(mode: VerifyMode) -> String {
        mode.to_string()
    }
}

impl TryFrom<String> for VerifyMode {
    type Error = Error;
    fn try_from(text: String) -> Result<VerifyMode> {
        text.parse()
    }
}
