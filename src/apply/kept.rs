//! `build_defaults.keep_build_dir`: a copy of a worker slot's build tree, taken right after
//! `make image` and before the next build resets the slot, for an operator to look into.
//!
//! Files the slot shares with the pristine Image Builder (hardlinks; never written, which
//! `verify_slot` checks) are hardlinked again, so a kept tree costs little; everything the
//! build wrote or owns privately is copied, because the slot's reset may rewrite it in place.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Copies `slot` to a new directory `<kept_root>/<key>-<n>` (the first `n` not taken) and
/// returns it.
pub(crate) fn keep_tree(slot: &Path, kept_root: &Path, key: &str) -> Result<PathBuf> {
    fs::create_dir_all(kept_root).map_err(|error| Error::io("creating", kept_root, error))?;
    for attempt in 1..=1000 {
        let target = kept_root.join(format!("{key}-{attempt}"));
        match fs::create_dir(&target) {
            Ok(()) => {
                copy_tree(slot, &target)?;
                return Ok(target);
            }
            Err(error) if error.kind() == ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(Error::io("creating", &target, error)),
        }
    }
    Err(Error::internal(format!(
        "1000 kept build trees of {key} already exist in `{}`; remove old ones",
        kept_root.display()
    )))
}

/// Copies the directory `from` into the existing directory `to`; symlinks stay symlinks,
/// other special files are left out.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut pending = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((source, target)) = pending.pop() {
        let entries =
            fs::read_dir(&source).map_err(|error| Error::io("listing", &source, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| Error::io("listing", &source, error))?;
            let (from, to) = (entry.path(), target.join(entry.file_name()));
            let metadata =
                fs::symlink_metadata(&from).map_err(|error| Error::io("reading", &from, error))?;
            let kind = metadata.file_type();
            if kind.is_dir() {
                fs::create_dir(&to).map_err(|error| Error::io("creating", &to, error))?;
                pending.push((from, to.clone()));
            } else if kind.is_symlink() {
                let link =
                    fs::read_link(&from).map_err(|error| Error::io("reading", &from, error))?;
                std::os::unix::fs::symlink(link, &to)
                    .map_err(|error| Error::io("creating", &to, error))?;
            } else if kind.is_file() {
                copy_file(&from, &to, metadata.nlink() > 1)?;
            }
        }
        let mode = fs::metadata(&source)
            .map_err(|error| Error::io("reading", &source, error))?
            .permissions()
            .mode();
        // Directories are filled first, then given their mode (a read-only one stays fillable).
        fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o700))
            .map_err(|error| Error::io("setting permissions of", &target, error))?;
    }
    Ok(())
}

/// A shared file is hardlinked (a copy when links are impossible); a private one copied.
fn copy_file(from: &Path, to: &Path, shared: bool) -> Result<()> {
    if shared && fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(|error| Error::io("copying", from, error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_files_are_linked_private_ones_copied() {
        let dir = tempfile::tempdir().unwrap();
        let pristine = dir.path().join("pristine.txt");
        fs::write(&pristine, "read only").unwrap();
        let slot = dir.path().join("slot");
        fs::create_dir_all(slot.join("build_dir/sub")).unwrap();
        fs::hard_link(&pristine, slot.join("shared.txt")).unwrap();
        fs::write(slot.join("build_dir/sub/.config"), "private").unwrap();
        std::os::unix::fs::symlink("sub/.config", slot.join("build_dir/link")).unwrap();
        let kept = keep_tree(&slot, &dir.path().join("kept"), "abc").unwrap();
        assert_eq!(kept, dir.path().join("kept/abc-1"));
        let ino = |path: &Path| fs::metadata(path).unwrap().ino();
        assert_eq!(ino(&kept.join("shared.txt")), ino(&pristine));
        let private = kept.join("build_dir/sub/.config");
        assert_ne!(ino(&private), ino(&slot.join("build_dir/sub/.config")));
        // The slot's next build rewrites its private files in place; the kept copy stays.
        fs::write(slot.join("build_dir/sub/.config"), "next build").unwrap();
        assert_eq!(fs::read_to_string(&private).unwrap(), "private");
        assert_eq!(
            fs::read_link(kept.join("build_dir/link")).unwrap(),
            Path::new("sub/.config")
        );
        let again = keep_tree(&slot, &dir.path().join("kept"), "abc").unwrap();
        assert_eq!(again, dir.path().join("kept/abc-2"));
    }
}
