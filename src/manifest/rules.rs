//! The value rules of profile and manifest fields (id and release shapes, package names,
//! paths, modes, owners), each recording a problem through a [`MapReader`]. Pure checks:
//! no I/O, no knowledge of which file they are applied to.

use super::names;
use super::profile::{Policies, is_snapshot_release};
use crate::error::Problem;
use crate::source::{MapReader, Spanned};

/// `"0644"`, `"644"`, `"0o644"`, `"04755"` → permission bits (at most `0o7777`).
pub(crate) fn parse_mode_text(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
}

pub(crate) fn check_snapshot_policy(
    reader: &mut MapReader<'_, '_>,
    release: &Spanned<String>,
    policies: &Policies,
) {
    if is_snapshot_release(&release.value) && !policies.allow_snapshot {
        let problem = Problem::validation(format!(
            "release `{}` is a snapshot, which the profile does not allow",
            release.value
        ))
        .at(reader.location(release.span.clone()))
        .with_label("snapshot release")
        .with_help(
            "snapshots change daily; set `policies.allow_snapshot: true` to build them anyway",
        );
        reader.push(problem);
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`: profile, fleet and device ids.
pub fn is_valid_id(id: &str) -> bool {
    id.len() <= 128
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.chars().all(is_name_char)
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

pub(crate) fn check_id(reader: &mut MapReader<'_, '_>, field: &str, id: &Spanned<String>) {
    if !is_valid_id(&id.value) {
        let message = format!(
            "invalid `{}` `{}`: use up to 128 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            reader.path_of(field),
            id.value
        );
        reader.invalid(id.span.clone(), message, "invalid id");
    }
}

/// The original tool's spellings of snapshot releases, normalised: `snapshot` in any case is
/// `SNAPSHOT`, `24.10-snapshot` is `24.10-SNAPSHOT` (upstream's directory names). Any other
/// text is returned as written, for [`is_valid_release`] to judge.
pub fn normalize_release(release: &str) -> String {
    const SUFFIX: &str = "-snapshot";
    if release.eq_ignore_ascii_case("snapshot") {
        return "SNAPSHOT".to_string();
    }
    let split = release.len().checked_sub(SUFFIX.len());
    match split.and_then(|at| release.get(at..).map(|suffix| (at, suffix))) {
        Some((at, suffix)) if suffix.eq_ignore_ascii_case(SUFFIX) => {
            format!("{}-SNAPSHOT", &release[..at])
        }
        _ => release.to_string(),
    }
}

/// OpenWrt release shapes: `23.05.4`, `24.10.0-rc2`, `SNAPSHOT`, `24.10-SNAPSHOT`.
pub fn is_valid_release(release: &str) -> bool {
    let numbers = |text: &str, count: usize| {
        let parts: Vec<&str> = text.split('.').collect();
        parts.len() == count
            && parts.iter().all(|part| {
                !part.is_empty() && part.len() <= 4 && part.bytes().all(|b| b.is_ascii_digit())
            })
    };
    if release == "SNAPSHOT" {
        return true;
    }
    if let Some(branch) = release.strip_suffix("-SNAPSHOT") {
        return numbers(branch, 2);
    }
    match release.split_once("-rc") {
        Some((version, candidate)) => {
            numbers(version, 3)
                && !candidate.is_empty()
                && candidate.bytes().all(|b| b.is_ascii_digit())
        }
        None => numbers(release, 3),
    }
}

pub(crate) fn check_release(reader: &mut MapReader<'_, '_>, release: &Spanned<String>) {
    if !is_valid_release(&release.value) {
        let problem = Problem::validation(format!("invalid `openwrt_release` `{}`", release.value))
            .at(reader.location(release.span.clone()))
            .with_label("not a release")
            .with_help(
                "use a release such as `23.05.4`, `24.10.0-rc2`, `SNAPSHOT` or `24.10-SNAPSHOT`",
            );
        reader.push(problem);
    }
}

/// Target, subtarget and Image Builder profile names ([`names::builder_name_problem`]).
pub(crate) fn check_builder_name(
    reader: &mut MapReader<'_, '_>,
    field: &str,
    value: &Spanned<String>,
) {
    check_name(reader, field, value, names::builder_name_problem);
}

/// A value checked by one of the [`names`] rules; the problem names the field and value.
pub(crate) fn check_name(
    reader: &mut MapReader<'_, '_>,
    field: &str,
    value: &Spanned<String>,
    rule: fn(&str) -> Option<String>,
) {
    if let Some(problem) = rule(&value.value) {
        let message = format!(
            "invalid `{}` `{}`: {problem}",
            reader.path_of(field),
            value.value
        );
        reader.invalid(value.span.clone(), message, "invalid name");
    }
}

pub(crate) fn check_charset(
    reader: &mut MapReader<'_, '_>,
    field: &str,
    value: &Spanned<String>,
    allowed: impl Fn(char) -> bool,
    expected: &str,
) {
    if value.value.is_empty() || !value.value.chars().all(allowed) {
        let message = format!(
            "invalid `{}` `{}`: expected {expected}",
            reader.path_of(field),
            value.value
        );
        reader.invalid(value.span.clone(), message, "invalid characters");
    }
}

pub(crate) fn check_word(
    reader: &mut MapReader<'_, '_>,
    field: &str,
    value: &Spanned<String>,
    expected: &str,
) {
    check_charset(
        reader,
        field,
        value,
        |c| !c.is_whitespace() && !c.is_control(),
        expected,
    );
}

pub(crate) fn non_empty(
    reader: &mut MapReader<'_, '_>,
    field: &str,
    value: Option<&Spanned<String>>,
) {
    if let Some(value) = value.filter(|value| value.value.trim().is_empty()) {
        let message = format!("`{}` must not be empty", reader.path_of(field));
        reader.invalid(value.span.clone(), message, "empty");
    }
}

pub(crate) fn read_relative_path(reader: &mut MapReader<'_, '_>, field: &str) -> Option<String> {
    let path = reader.opt_string(field)?;
    check_relative_path(reader, field, &path);
    Some(path.value)
}

/// `bin_dir`: a relative path inside the fleet, or an absolute one (allowed only under the
/// operator's `bin_dir_roots`, which the plan checks against the effective settings).
pub(crate) fn read_bin_dir(reader: &mut MapReader<'_, '_>) -> Option<String> {
    let path = reader.opt_string("bin_dir")?;
    if path.value.starts_with('/') {
        let text = &path.value;
        if text.split('/').any(|part| part == "..") || text.contains('\0') || text == "/" {
            let message = format!("`bin_dir` must not be `/` or contain `..`, not `{text}`");
            reader.invalid(path.span.clone(), message, "not a usable directory");
        }
    } else {
        check_relative_path(reader, "bin_dir", &path);
    }
    Some(path.value)
}

/// Sources and overlay directories stay inside the fleet repository.
pub(crate) fn check_relative_path(
    reader: &mut MapReader<'_, '_>,
    field: &str,
    path: &Spanned<String>,
) {
    let text = &path.value;
    let escapes = text.split('/').any(|part| part == "..");
    if text.is_empty() || text.starts_with('/') || escapes || text.contains('\0') {
        let message = format!(
            "`{}` must be a path relative to the fleet root that stays inside it, not `{text}`",
            reader.path_of(field)
        );
        reader.invalid(
            path.span.clone(),
            message,
            "not a relative path inside the fleet",
        );
    }
}

/// An absolute path in the image without `..`, each component in the character set of
/// [`names::image_name_problem`]. `/` itself is allowed: a directory source placed there
/// merges into the image root (the overlay refuses a file source at `/`).
pub(crate) fn check_destination(reader: &mut MapReader<'_, '_>, destination: &Spanned<String>) {
    let text = &destination.value;
    let component_problem = || {
        text.split('/')
            .filter(|part| !part.is_empty() && *part != ".")
            .find_map(|part| names::image_name_problem(part).map(|why| format!("`{part}` {why}")))
    };
    let problem = if !text.starts_with('/') {
        Some("must be an absolute path inside the image".to_string())
    } else if text.split('/').any(|part| part == "..") {
        Some("must not contain `..`".to_string())
    } else if text.len() > 1 && text.ends_with('/') {
        Some("must not end with `/`".to_string())
    } else {
        component_problem()
    };
    if let Some(problem) = problem {
        let message = format!("`{}` {problem}: `{text}`", reader.path_of("destination"));
        reader.invalid(destination.span.clone(), message, "invalid destination");
    }
}

/// `user` or `user:group`; names or numeric ids.
pub(crate) fn check_owner(reader: &mut MapReader<'_, '_>, owner: &Spanned<String>) {
    let valid_part = |part: &str| {
        !part.is_empty()
            && part.len() <= 32
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let valid = match owner.value.split_once(':') {
        Some((user, group)) => valid_part(user) && valid_part(group),
        None => valid_part(&owner.value),
    };
    if !valid {
        let message = format!(
            "invalid `{}` `{}`: expected `user` or `user:group`",
            reader.path_of("owner"),
            owner.value
        );
        reader.invalid(owner.span.clone(), message, "invalid owner");
    }
}
