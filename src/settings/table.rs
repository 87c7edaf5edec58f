//! The one table of settings. Each row names a setting once: its key in `imagegen.toml`
//! `[settings]`, its Rust type, environment variable, flag, help, kind (parsing and checks)
//! and default. The `Settings` struct, the environment registry, the flags, the file reader
//! and `imagegen config` are all generated from or driven by this table.

use std::path::PathBuf;

use super::kind::Kind;
use super::{Defaults, Setting};

/// One row of the table, as the flag builder, the file reader and the resolver see it.
#[derive(Debug)]
pub struct SettingDef {
    /// The key in `imagegen.toml` `[settings]`.
    pub name: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The long flag, without dashes.
    pub flag: &'static str,
    pub short: Option<char>,
    pub value_name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The default, derived from the environment where needed (XDG, HOME, TMPDIR).
    pub(super) default: fn(&Defaults) -> Result<super::kind::Value, crate::error::Problem>,
}

impl SettingDef {
    /// The row named `name`.
    pub fn named(name: &str) -> Option<&'static SettingDef> {
        TABLE.iter().find(|def| def.name == name)
    }
}

macro_rules! settings_table {
    ($(
        $field:ident: $ty:ty {
            env: $env:ident,
            flag: $flag:literal,
            short: $short:expr,
            value_name: $value_name:literal,
            kind: $kind:expr,
            default: $default:expr,
            help: $help:literal $(,)?
        }
    )*) => {
        /// The one registry of the environment variables imagegen reads.
        pub mod env_vars {
            $(
                #[doc = $help]
                pub const $env: &str = stringify!($env);
            )*
            /// Every setting's variable, in table order.
            pub const ALL: &[&str] = &[$($env),*];
            /// System variables the defaults are derived from.
            pub const HOME: &str = "HOME";
            pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
            pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
            pub const TMPDIR: &str = "TMPDIR";
            /// Any value turns colour off (https://no-color.org).
            pub const NO_COLOR: &str = "NO_COLOR";
            /// The bearer token of `imagegen serve` (a secret: not a setting, never shown by
            /// `imagegen config` or `GET /config`).
            pub const OWRT_IMG_API_TOKEN: &str = "OWRT_IMG_API_TOKEN";
            /// TEST HOOK, not a setting: a shell command `imagegen flash` runs between the
            /// write and the read-back, so the integration tests can change a loop device's
            /// backing file and prove a mismatch is caught. Honoured only when the target is
            /// a loop device (never a real card or disk), and announced on stderr when it
            /// runs; `docs/flash.md`, "Test hook".
            pub const IMAGEGEN_TEST_FLASH_BEFORE_VERIFY: &str = "IMAGEGEN_TEST_FLASH_BEFORE_VERIFY";
        }

        /// The rows, in the order `imagegen config` lists them.
        pub static TABLE: &[SettingDef] = &[$(
            SettingDef {
                name: stringify!($field),
                env: env_vars::$env,
                flag: $flag,
                short: $short,
                value_name: $value_name,
                help: $help,
                kind: $kind,
                default: $default,
            },
        )*];

        /// Every effective setting, each with the layer it came from.
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct Settings {
            $(
                #[doc = $help]
                pub $field: Setting<$ty>,
            )*
        }

        impl Settings {
            pub(super) fn from_resolved(resolved: &mut super::Resolved) -> Settings {
                Settings {
                    $( $field: resolved.take(stringify!($field)), )*
                }
            }

            /// The rows `imagegen config` prints, in table order.
            pub fn entries(&self) -> Vec<super::SettingEntry> {
                vec![$( super::SettingEntry::of(stringify!($field), &self.$field), )*]
            }
        }
    };
}

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
const SANDBOX_MODES: &[&str] = &["auto", "sandbox", "none"];
/// More concurrent jobs than this is a typo, not a machine.
const MAX_JOBS: u64 = 256;
/// A build running longer than a day is stuck.
const MAX_BUILD_TIMEOUT: u64 = 24 * 3600;

settings_table! {
    db: PathBuf {
        env: OWRT_IMG_DB_URL, flag: "db", short: None, value_name: "PATH",
        kind: Kind::Database,
        default: |defaults| defaults.data_dir().map(|dir| dir.join("state.redb").into()),
        help: "State database (redb): a path, `redb://PATH` or `file://PATH`",
    }
    artifacts_dir: PathBuf {
        env: OWRT_IMG_ARTIFACTS_DIR, flag: "artifacts-dir", short: None, value_name: "DIR",
        kind: Kind::Path,
        default: |defaults| defaults.data_dir().map(|dir| dir.join("artifacts").into()),
        help: "Content-addressed artifact store",
    }
    cache_dir: PathBuf {
        env: OWRT_IMG_CACHE_DIR, flag: "cache-dir", short: None, value_name: "DIR",
        kind: Kind::Path,
        default: |defaults| defaults.cache_dir().map(|dir| dir.join("builders").into()),
        help: "Image Builder cache (unpacked builders and upstream metadata)",
    }
    tmp_dir: PathBuf {
        env: OWRT_IMG_TMP_DIR, flag: "tmp-dir", short: None, value_name: "DIR",
        kind: Kind::Path,
        default: |defaults| Ok(defaults.tmp_dir().into()),
        help: "Temporary work: downloads in flight and private build copies",
    }
    offline: bool {
        env: OWRT_IMG_OFFLINE, flag: "offline", short: None, value_name: "BOOL",
        kind: Kind::Switch,
        default: |_| Ok(false.into()),
        help: "Never touch the network (a `file://` mirror is still read)",
    }
    log_level: String {
        env: OWRT_IMG_LOG_LEVEL, flag: "log-level", short: None, value_name: "LEVEL",
        kind: Kind::Choice(LOG_LEVELS),
        default: |_| Ok("info".to_string().into()),
        help: "Log level: error, warn, info, debug or trace",
    }
    mirror: String {
        env: OWRT_IMG_MIRROR, flag: "mirror", short: None, value_name: "URL",
        kind: Kind::Mirror,
        default: |_| Ok(super::DEFAULT_MIRROR.to_string().into()),
        help: "Download mirror: `https://…`, `http://…` or `file:///path`",
    }
    jobs: u32 {
        env: OWRT_IMG_JOBS, flag: "jobs", short: Some('j'), value_name: "N",
        kind: Kind::Count { max: MAX_JOBS },
        default: |_| Ok(2u64.into()),
        help: "Concurrent image builds",
    }
    download_jobs: u32 {
        env: OWRT_IMG_DOWNLOAD_JOBS, flag: "download-jobs", short: None, value_name: "N",
        kind: Kind::Count { max: MAX_JOBS },
        default: |_| Ok(2u64.into()),
        help: "Concurrent Image Builder downloads",
    }
    trusted_keys: Vec<PathBuf> {
        env: OWRT_IMG_TRUSTED_KEYS, flag: "trusted-key", short: None, value_name: "FILE",
        kind: Kind::Paths,
        default: |_| Ok(Vec::<PathBuf>::new().into()),
        help: "Extra trusted usign public keys (repeat the flag; `:`-separated in the environment)",
    }
    verify_signatures: bool {
        env: OWRT_IMG_VERIFY_SIGNATURES, flag: "verify-signatures", short: None, value_name: "BOOL",
        kind: Kind::Bool,
        default: |_| Ok(true.into()),
        help: "Verify the usign signature of every `sha256sums`",
    }
    bin_dir_roots: Vec<PathBuf> {
        env: OWRT_IMG_BIN_DIR_ROOTS, flag: "bin-dir-root", short: None, value_name: "DIR",
        kind: Kind::Paths,
        default: |_| Ok(Vec::<PathBuf>::new().into()),
        help: "Directories outside the fleet where a profile's absolute `bin_dir` may put image copies (repeat the flag; `:`-separated in the environment)",
    }
    sandbox: String {
        env: OWRT_IMG_SANDBOX, flag: "sandbox", short: None, value_name: "MODE",
        kind: Kind::Choice(SANDBOX_MODES),
        default: |_| Ok("auto".to_string().into()),
        help: "Run `make image` sandboxed: `auto` (when bubblewrap works, else warn on every build), `sandbox` (always; fail without) or `none`",
    }
    build_timeout: u64 {
        env: OWRT_IMG_BUILD_TIMEOUT, flag: "build-timeout", short: None, value_name: "SECONDS",
        kind: Kind::Count { max: MAX_BUILD_TIMEOUT },
        default: |_| Ok(3600u64.into()),
        help: "Seconds one `make image` may run before it is stopped",
    }
}
