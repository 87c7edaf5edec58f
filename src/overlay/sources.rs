//! Checks on what a profile wrote: sources must resolve inside the fleet root, destinations
//! must be absolute without `..`. Also builds the problems the overlay reports. Reads only
//! metadata, never contents.

use std::fs::{self, Metadata};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{ErrorCode, Location, Problem, printable};
use crate::manifest::names::image_name_problem;

use super::resolve::Origin;
use super::{OverlayInput, OverlaySource};

/// `/a//b/./c` → `/a/b/c`; refuses relative paths and `..`.
pub(crate) fn normalize_destination(destination: &str) -> Result<String, Problem> {
    if !destination.starts_with('/') {
        return Err(Problem::validation(format!(
            "destination `{destination}` is not an absolute path"
        ))
        .with_help("destinations are paths in the image, e.g. `/etc/banner`"));
    }
    let mut parts = Vec::new();
    for part in destination.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Problem::validation(format!(
                    "destination `{destination}` contains `..`"
                ))
                .with_help("write the destination without `..`"));
            }
            _ => {
                if let Some(why) = image_name_problem(part) {
                    return Err(Problem::validation(format!(
                        "destination `{}`: `{}` {why}",
                        printable(destination),
                        printable(part)
                    ))
                    .with_help("rename the destination; see docs/overlay.md (\"Names\")"));
                }
                parts.push(part);
            }
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Canonicalizes a source inside the fleet root and reads its metadata (following a symlink
/// named by the source itself, but only if where it leads is still inside the fleet root).
pub(crate) fn resolve_source(
    root: &Path,
    source: &OverlaySource,
) -> Result<(PathBuf, Metadata), Box<Problem>> {
    let problem = |message: String, help: String| {
        Box::new(
            Problem::validation(message)
                .at_option(source.location.clone())
                .with_help(help),
        )
    };
    let text = &source.text;
    let relative = Path::new(text);
    if text.is_empty() {
        return Err(problem(
            "overlay source is empty".into(),
            "name a file or directory of the fleet repository".into(),
        ));
    }
    if relative.is_absolute() {
        return Err(problem(
            format!("overlay source `{text}` is an absolute path"),
            format!("write it relative to the fleet root `{}`", root.display()),
        ));
    }
    let outside_help = || {
        "sources must stay inside the fleet repository; `..` and symlinks that leave it are refused"
            .to_string()
    };
    if escapes_lexically(relative) {
        return Err(problem(
            format!("overlay source `{text}` is outside the fleet root"),
            outside_help(),
        ));
    }
    let canonical = match fs::canonicalize(root.join(relative)) {
        Ok(canonical) => canonical,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(problem(
                format!("overlay source `{text}` does not exist"),
                format!(
                    "paths in `files` and `overlay_dir` are relative to the fleet root `{}`",
                    root.display()
                ),
            ));
        }
        Err(error) => {
            return Err(problem(
                format!("overlay source `{text}` cannot be read: {error}"),
                "check its permissions".into(),
            ));
        }
    };
    if !canonical.starts_with(root) {
        return Err(problem(
            format!(
                "overlay source `{text}` resolves to `{}`, outside the fleet root",
                canonical.display()
            ),
            outside_help(),
        ));
    }
    let metadata = fs::metadata(&canonical).map_err(|error| {
        problem(
            format!("overlay source `{text}` cannot be read: {error}"),
            "check its permissions".into(),
        )
    })?;
    Ok((canonical, metadata))
}

fn escapes_lexically(relative: &Path) -> bool {
    let mut depth: i64 = 0;
    for component in relative.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

pub(crate) fn special_file_problem(
    source: &OverlaySource,
    shown: &str,
    metadata: &Metadata,
) -> Problem {
    let file_type = metadata.file_type();
    let what = if file_type.is_fifo() {
        "a fifo"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_char_device() {
        "a character device"
    } else {
        "a special file"
    };
    Problem::validation(format!("overlay source `{}` contains `{shown}`, {what}", source.text))
        .at_option(source.location.clone())
        .with_help("only files, directories and symlinks can be placed in an image; remove it from the fleet repository")
}

pub(crate) fn io_problem(source: &OverlaySource, shown: &str, error: &std::io::Error) -> Problem {
    let code = match error.kind() {
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionError,
        _ => ErrorCode::Validation,
    };
    Problem::new(
        code,
        format!(
            "cannot read `{shown}` of overlay source `{}`: {error}",
            source.text
        ),
    )
    .at_option(source.location.clone())
}

/// The problem for a source file that could be listed but not read.
pub(crate) fn read_problem(
    input: &OverlayInput,
    origin: Option<Origin>,
    path: &Path,
    error: &std::io::Error,
) -> Problem {
    let source = match origin {
        Some(Origin::OverlayDir) => input.overlay_dir.as_ref(),
        Some(Origin::File(index)) => input.files.get(index).map(|file| &file.source),
        None => None,
    };
    match source {
        Some(source) => io_problem(source, &path.display().to_string(), error),
        None => Problem::new(
            ErrorCode::InternalError,
            format!("cannot read `{}`: {error}", path.display()),
        ),
    }
}

/// `Problem::at` for an optional location.
pub(crate) trait AtOption {
    fn at_option(self, location: Option<Location>) -> Self;
}

impl AtOption for Problem {
    fn at_option(self, location: Option<Location>) -> Problem {
        match location {
            Some(location) => self.at(location),
            None => self,
        }
    }
}
