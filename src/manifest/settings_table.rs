//! The `[settings]` table of `imagegen.toml` → [`FileSettings`]: types, ranges, mirror
//! URLs, log levels, and paths resolved against the fleet root and `$HOME`. It does not
//! merge with the environment or flags; `crate::settings` does.

use std::path::{Path, PathBuf};

use crate::error::Problem;
use crate::settings::FileSettings;
use crate::source::{MapReader, Spanned, suggest};

const SETTINGS_FIELDS: &[&str] = &[
    "db",
    "artifacts_dir",
    "cache_dir",
    "tmp_dir",
    "offline",
    "log_level",
    "mirror",
    "jobs",
    "download_jobs",
    "trusted_keys",
    "verify_signatures",
    "build_timeout",
];
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];
/// Upper bound for `jobs` and `download_jobs`; more is a typo, not a machine.
const MAX_JOBS: u64 = 256;

pub(super) fn read_settings(
    mut reader: MapReader<'_, '_>,
    root: &Path,
    home: Option<&Path>,
) -> FileSettings {
    let path = |reader: &mut MapReader<'_, '_>, key: &str| {
        let text = reader.opt_string(key)?;
        resolve_path(reader, &text, root, home)
    };
    let db = path(&mut reader, "db");
    let artifacts_dir = path(&mut reader, "artifacts_dir");
    let cache_dir = path(&mut reader, "cache_dir");
    let tmp_dir = path(&mut reader, "tmp_dir");
    let offline = reader.opt_bool("offline").map(|flag| flag.value);
    let log_level = read_log_level(&mut reader);
    let mirror = read_mirror(&mut reader);
    let jobs = read_count(&mut reader, "jobs");
    let download_jobs = read_count(&mut reader, "download_jobs");
    let trusted_keys = reader.node("trusted_keys").map(|_| {
        let keys = reader.string_list("trusted_keys");
        keys.iter()
            .filter_map(|key| resolve_path(&mut reader, key, root, home))
            .collect()
    });
    let verify_signatures = reader.opt_bool("verify_signatures").map(|flag| flag.value);
    let build_timeout = reader.opt_u64("build_timeout").and_then(|seconds| {
        if seconds.value == 0 {
            reader.invalid(
                seconds.span,
                "`build_timeout` must be at least 1 second",
                "zero",
            );
            return None;
        }
        Some(seconds.value)
    });
    reader.finish(SETTINGS_FIELDS);
    FileSettings {
        path: PathBuf::new(),
        db,
        artifacts_dir,
        cache_dir,
        tmp_dir,
        offline,
        log_level,
        mirror,
        jobs,
        download_jobs,
        trusted_keys,
        verify_signatures,
        build_timeout,
    }
}

/// `~/x` → `$HOME/x`; relative → under the fleet root.
fn resolve_path(
    reader: &mut MapReader<'_, '_>,
    text: &Spanned<String>,
    root: &Path,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if text.value.is_empty() {
        reader.invalid(text.span.clone(), "path must not be empty", "empty");
        return None;
    }
    if let Some(rest) = text.value.strip_prefix("~/") {
        let Some(home) = home else {
            reader.invalid(
                text.span.clone(),
                "cannot expand `~/`: `HOME` is not set",
                "needs HOME",
            );
            return None;
        };
        return Some(home.join(rest));
    }
    Some(root.join(&text.value))
}

fn read_log_level(reader: &mut MapReader<'_, '_>) -> Option<String> {
    let level = reader.opt_string("log_level")?;
    if LOG_LEVELS.contains(&level.value.as_str()) {
        return Some(level.value);
    }
    let mut problem = Problem::validation(format!("unknown `log_level` `{}`", level.value))
        .at(reader.location(level.span.clone()))
        .with_label("unknown level");
    problem = match suggest(&level.value, LOG_LEVELS.iter().copied()) {
        Some(close) => problem.with_help(format!("did you mean `{close}`?")),
        None => problem.with_help("use `trace`, `debug`, `info`, `warn` or `error`"),
    };
    reader.push(problem);
    None
}

fn read_mirror(reader: &mut MapReader<'_, '_>) -> Option<String> {
    let mirror = reader.opt_string("mirror")?;
    let scheme_ok = ["https://", "http://", "file:///"]
        .iter()
        .any(|scheme| mirror.value.starts_with(scheme) && mirror.value.len() > scheme.len());
    if scheme_ok && !mirror.value.contains(char::is_whitespace) {
        return Some(mirror.value.trim_end_matches('/').to_string());
    }
    let problem = Problem::validation(format!("invalid `mirror` `{}`", mirror.value))
        .at(reader.location(mirror.span.clone()))
        .with_label("not a mirror URL")
        .with_help(
            "use an `https://`, `http://` or `file:///` URL, e.g. `https://downloads.openwrt.org`",
        );
    reader.push(problem);
    None
}

fn read_count(reader: &mut MapReader<'_, '_>, key: &str) -> Option<u32> {
    let count = reader.opt_u64(key)?;
    if (1..=MAX_JOBS).contains(&count.value) {
        return u32::try_from(count.value).ok();
    }
    let message = format!(
        "`{key}` must be between 1 and {MAX_JOBS}, not {}",
        count.value
    );
    reader.invalid(count.span, message, "out of range");
    None
}
