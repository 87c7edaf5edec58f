//! Writes an overlay tree into a fresh directory (the Image Builder's `FILES=`), hashing the
//! exact bytes it writes so the returned digest describes the staged tree. Sets modes
//! explicitly (umask-independent) and owners only when running as root.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, ErrorCode, Problem};

use super::hash::FileHash;
use super::owner::{IdTables, OwnerIds, OwnerSpec};
use super::resolve::{self, Layout, Node, NodeKind};
use super::{EntryKind, OverlayDigest, OverlayEntry, OverlayInput};

const COPY_CHUNK: usize = 1024 * 1024;

thread_local! {
    /// One copy buffer per rayon worker instead of a 1 MiB allocation per file.
    static COPY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether and how owners are applied while staging.
pub(crate) enum OwnerPolicy {
    /// Not root: `chown` would fail, so owners stay as the staging user's.
    Skip,
    /// Root: names resolve through these tables.
    Apply(IdTables),
}

impl OwnerPolicy {
    fn from_environment() -> OwnerPolicy {
        if crate::fsutil::effective_uid() == 0 {
            OwnerPolicy::Apply(IdTables::load(Path::new("/")))
        } else {
            OwnerPolicy::Skip
        }
    }
}

/// Writes the overlay into `destination_dir`, which must exist and be empty (the caller
/// creates it fresh and discards it on error). Returns the digest of what was written, equal
/// to [`super::digest`] of the same unchanged input.
pub fn stage(input: &OverlayInput, destination_dir: &Path) -> Result<OverlayDigest, Error> {
    stage_with(input, destination_dir, &OwnerPolicy::from_environment())
}

pub(crate) fn stage_with(
    input: &OverlayInput,
    destination_dir: &Path,
    policy: &OwnerPolicy,
) -> Result<OverlayDigest, Error> {
    let layout = resolve::Resolver::default()
        .resolve(input)
        .map_err(|problems| Error::from_problems("the overlay is invalid", problems))?;
    let owners = resolve_owners(&layout, input, policy)?;
    check_empty_directory(destination_dir)?;
    let target = |path: &str| destination_dir.join(path.trim_start_matches('/'));
    for (path, node) in &layout {
        if matches!(node.kind, NodeKind::Directory) && path != "/" {
            let directory = target(path);
            fs::create_dir(&directory).map_err(|error| Error::io("creating", &directory, error))?;
        }
    }
    let nodes: Vec<(&String, &Node)> = layout.iter().collect();
    let written: Vec<Result<Option<FileHash>, Error>> = nodes
        .par_iter()
        .map(|(path, node)| stage_leaf(node, &target(path), owner_ids(&owners, node)))
        .collect();
    // Directory modes last and deepest first, so a read-only directory is filled before
    // it becomes read-only.
    for (path, node) in layout.iter().rev() {
        if matches!(node.kind, NodeKind::Directory) {
            let directory = target(path);
            apply_owner(&directory, owner_ids(&owners, node), |path, uid, gid| {
                std::os::unix::fs::chown(path, uid, gid)
            })?;
            fs::set_permissions(&directory, Permissions::from_mode(node.mode))
                .map_err(|error| Error::io("setting the mode of", &directory, error))?;
        }
    }
    let mut entries = Vec::with_capacity(nodes.len());
    for ((path, node), written) in nodes.into_iter().zip(written) {
        entries.push(entry(path, node, written?));
    }
    Ok(OverlayDigest::from_entries(entries))
}

fn entry(path: &str, node: &Node, written: Option<FileHash>) -> OverlayEntry {
    let (kind, size, digest) = match (&node.kind, written) {
        (NodeKind::Symlink { target }, _) => {
            (EntryKind::Symlink, target.len() as u64, target.clone())
        }
        (NodeKind::File { .. }, Some(file)) => (EntryKind::File, file.size, hex::encode(file.hash)),
        _ => (EntryKind::Directory, 0, String::new()),
    };
    OverlayEntry {
        path: path.to_string(),
        kind,
        mode: node.mode,
        owner: node.owner.clone(),
        size,
        digest,
    }
}

fn owner_ids<'a>(owners: &'a HashMap<String, OwnerIds>, node: &Node) -> Option<&'a OwnerIds> {
    node.owner.as_ref().and_then(|owner| owners.get(owner))
}

/// Stages one file or symlink; directories were created before and get their mode later.
fn stage_leaf(
    node: &Node,
    target: &Path,
    owner: Option<&OwnerIds>,
) -> Result<Option<FileHash>, Error> {
    match &node.kind {
        NodeKind::Directory => Ok(None),
        NodeKind::Symlink { target: link } => {
            std::os::unix::fs::symlink(link, target)
                .map_err(|error| Error::io("creating the symlink", target, error))?;
            apply_owner(target, owner, |path, uid, gid| {
                std::os::unix::fs::lchown(path, uid, gid)
            })?;
            Ok(None)
        }
        NodeKind::File { source, .. } => copy_and_hash(source, target, node.mode, owner).map(Some),
    }
}

/// Copies through one buffer that is also hashed, so the digest is of the bytes written.
fn copy_and_hash(
    source: &Path,
    target: &Path,
    mode: u32,
    owner: Option<&OwnerIds>,
) -> Result<FileHash, Error> {
    let reader =
        super::hash::open_regular(source).map_err(|error| Error::io("reading", source, error))?;
    // One byte past the limit tells a file that grew since it was opened.
    let mut reader = reader.take(super::hash::MAX_OVERLAY_FILE_SIZE + 1);
    let mut writer = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .map_err(|error| Error::io("creating", target, error))?;
    let mut hasher = blake3::Hasher::new();
    COPY_BUFFER.with(|buffer| {
        let buffer = &mut buffer.borrow_mut();
        buffer.resize(COPY_CHUNK, 0);
        loop {
            let count = match reader.read(buffer) {
                Ok(0) => return Ok(()),
                Ok(count) => count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(Error::io("reading", source, error)),
            };
            let chunk = &buffer[..count];
            hasher.update(chunk);
            if hasher.count() > super::hash::MAX_OVERLAY_FILE_SIZE {
                return Err(Error::io("reading", source, super::hash::too_large()));
            }
            writer
                .write_all(chunk)
                .map_err(|error| Error::io("writing", target, error))?;
        }
    })?;
    // chown clears set-id bits, so it must come before the mode.
    if let Some(ids) = owner {
        std::os::unix::fs::fchown(&writer, ids.uid, ids.gid)
            .map_err(|error| Error::io("changing the owner of", target, error))?;
    }
    writer
        .set_permissions(Permissions::from_mode(mode))
        .map_err(|error| Error::io("setting the mode of", target, error))?;
    Ok(FileHash {
        hash: *hasher.finalize().as_bytes(),
        size: hasher.count(),
    })
}

type ChownFn = fn(&Path, Option<u32>, Option<u32>) -> std::io::Result<()>;

fn apply_owner(path: &Path, owner: Option<&OwnerIds>, chown: ChownFn) -> Result<(), Error> {
    match owner {
        Some(ids) => chown(path, ids.uid, ids.gid)
            .map_err(|error| Error::io("changing the owner of", path, error)),
        None => Ok(()),
    }
}

/// Resolves every distinct owner before anything is written, so an unknown name fails the
/// whole staging up front.
fn resolve_owners(
    layout: &Layout,
    input: &OverlayInput,
    policy: &OwnerPolicy,
) -> Result<HashMap<String, OwnerIds>, Error> {
    let OwnerPolicy::Apply(tables) = policy else {
        return Ok(HashMap::new());
    };
    let mut owners = HashMap::new();
    let mut problems = Vec::new();
    for node in layout.values() {
        let Some(owner) = &node.owner else { continue };
        if owners.contains_key(owner)
            || problems
                .iter()
                .any(|(text, _): &(String, Problem)| text == owner)
        {
            continue;
        }
        let resolved = OwnerSpec::parse(owner)
            .map_err(|problem| problem.message)
            .and_then(|spec| tables.resolve(&spec));
        match resolved {
            Ok(ids) => {
                owners.insert(owner.clone(), ids);
            }
            Err(reason) => {
                let mut problem = Problem::validation(format!("owner `{owner}` cannot be resolved: {reason}"))
                    .with_help("use numeric ids such as `0:0`; names resolve through this host's /etc/passwd and /etc/group");
                if let Some(location) = origin_location(input, node) {
                    problem = problem.at(location);
                }
                problems.push((owner.clone(), problem));
            }
        }
    }
    if problems.is_empty() {
        Ok(owners)
    } else {
        Err(Error::from_problems(
            "the overlay has owners that cannot be resolved",
            problems.into_iter().map(|(_, problem)| problem).collect(),
        ))
    }
}

fn origin_location(input: &OverlayInput, node: &Node) -> Option<crate::error::Location> {
    match node.origin? {
        resolve::Origin::OverlayDir => input.overlay_dir.as_ref()?.location.clone(),
        resolve::Origin::File(index) => input.files.get(index)?.source.location.clone(),
    }
}

fn check_empty_directory(directory: &Path) -> Result<(), Error> {
    let mut entries = fs::read_dir(directory)
        .map_err(|error| Error::io("opening the staging directory", directory, error))?;
    if entries.next().is_some() {
        return Err(Error::new(
            ErrorCode::InternalError,
            format!("staging directory `{}` is not empty", directory.display()),
        )
        .with_help("stage into a freshly created directory"));
    }
    Ok(())
}
