//! Where a profile's `bin_dir` copies may go. A relative `bin_dir` must stay inside the
//! fleet root after resolving symlinks; an absolute one only under a directory the operator
//! allows (`bin_dir_roots`, from flags, the environment or `[settings]`). A fleet file must
//! never make imagegen write images into `/etc/cron.d` or any other directory of the host.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorCode, Problem};
use crate::manifest::{Fleet, LoadedProfile};
use crate::settings::Settings;

const ROOTS_HINT: &str = "allow its parent with `bin_dir_roots = [\"/var/tmp/openwrt-images\"]` under `[settings]`, `--bin-dir-root DIR` or `OWRT_IMG_BIN_DIR_ROOTS`, or use a path relative to the fleet root";

/// The directory a profile's copies go to, checked against the fleet root and the allowed
/// roots; `Err` says why it is refused.
pub fn resolve_bin_dir(
    fleet: &Fleet,
    settings: &Settings,
    bin_dir: &str,
) -> Result<PathBuf, String> {
    let target = fleet.root.join(bin_dir);
    if lexically_escapes(Path::new(bin_dir)) {
        return Err(format!(
            "`{bin_dir}` leaves the directory it names with `..`"
        ));
    }
    let resolved = resolve_existing_prefix(&target);
    if !Path::new(bin_dir).is_absolute() {
        let root = resolve_existing_prefix(&fleet.root);
        return match resolved.starts_with(&root) {
            true => Ok(target),
            false => Err(format!(
                "`{bin_dir}` resolves to `{}`, outside the fleet (through a symlink)",
                resolved.display()
            )),
        };
    }
    let allowed = settings
        .bin_dir_roots
        .value
        .iter()
        .any(|root| resolved.starts_with(resolve_existing_prefix(root)));
    match allowed {
        true => Ok(target),
        false => Err(format!(
            "absolute `bin_dir` `{bin_dir}` is not under an allowed `bin_dir_roots` directory"
        )),
    }
}

/// Every profile whose `bin_dir` is refused, at its location.
pub fn bin_dir_problems(fleet: &Fleet, settings: &Settings) -> Vec<Problem> {
    fleet
        .profiles
        .iter()
        .filter_map(|loaded| {
            let bin_dir = loaded.profile.bin_dir.as_deref()?;
            let why = resolve_bin_dir(fleet, settings, bin_dir).err()?;
            Some(problem(loaded, why))
        })
        .collect()
}

fn problem(loaded: &LoadedProfile, why: String) -> Problem {
    Problem::validation(why)
        .at(loaded.location("bin_dir"))
        .with_label("images may not be copied here")
        .with_help(ROOTS_HINT)
}

/// The same refusal as an error, for the copy step (defence in depth: the plan checked it).
pub fn bin_dir_error(profile_id: &str, why: String) -> Error {
    Error::new(
        ErrorCode::Validation,
        format!("profile `{profile_id}`: {why}"),
    )
    .with_help(ROOTS_HINT)
}

fn lexically_escapes(path: &Path) -> bool {
    path.components().any(|part| part == Component::ParentDir)
}

/// `path` with its longest existing prefix canonicalized (symlinks resolved) and the rest
/// appended: where a directory created there would really be.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(real, |acc, part: &std::ffi::OsString| acc.join(part));
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}
