//! Turns an [`OverlayInput`] into a [`Layout`]: every image path with its kind, mode, owner
//! and (for files) the canonical source path and stamp. Checks every security rule and
//! collects every problem; reads no file contents.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Problem, printable};
use crate::manifest::names::image_name_problem;

use super::hash::FileStamp;
use super::owner;
use super::sources::{
    AtOption, io_problem, normalize_destination, resolve_source, special_file_problem,
};
use super::{FileInput, OverlayInput, OverlaySource};

/// Mode of directories that exist only because a `destination` needs them.
pub(crate) const IMPLICIT_DIRECTORY_MODE: u32 = 0o755;
/// Linux ignores symlink permission bits; one fixed value keeps the hash host-independent.
pub(crate) const SYMLINK_MODE: u32 = 0o777;

/// Image path → node, in byte order of the path (parents before children).
pub(crate) type Layout = BTreeMap<String, Node>;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub owner: Option<String>,
    /// Which input placed it: `None` for implicit directories and the overlay root,
    /// `Some(Origin::OverlayDir)` or `Some(Origin::File(index))`.
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    OverlayDir,
    File(usize),
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Directory,
    File { source: PathBuf, stamp: FileStamp },
    Symlink { target: String },
}

/// Where a walk places things: the input's source (for problems), owner and origin.
struct Placement<'a> {
    root: &'a Path,
    source: &'a OverlaySource,
    owner: Option<&'a str>,
    origin: Origin,
}

impl Placement<'_> {
    /// A path as the user knows it: relative to the fleet root.
    fn shown(&self, path: &Path) -> String {
        path.strip_prefix(self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Resolves inputs, remembering canonical fleet roots and sources so that many profiles
/// sharing a fleet and its files pay for each `realpath` once. Only successes are
/// remembered: a problem must carry the location of the input that has it.
#[derive(Default)]
pub(crate) struct Resolver {
    roots: Mutex<HashMap<PathBuf, PathBuf>>,
    sources: Mutex<HashMap<(PathBuf, String), (PathBuf, Metadata)>>,
}

impl Resolver {
    fn root(&self, fleet_root: &Path) -> Result<PathBuf, Vec<Problem>> {
        if let Some(root) = lock(&self.roots).get(fleet_root) {
            return Ok(root.clone());
        }
        let root = fs::canonicalize(fleet_root).map_err(|error| {
            vec![Problem::validation(format!(
                "fleet root `{}` cannot be read: {error}",
                fleet_root.display()
            ))]
        })?;
        lock(&self.roots).insert(fleet_root.to_path_buf(), root.clone());
        Ok(root)
    }

    fn source(
        &self,
        root: &Path,
        source: &OverlaySource,
    ) -> Result<(PathBuf, Metadata), Box<Problem>> {
        let key = (root.to_path_buf(), source.text.clone());
        if let Some(found) = lock(&self.sources).get(&key) {
            return Ok(found.clone());
        }
        let found = resolve_source(root, source)?;
        lock(&self.sources).insert(key, found.clone());
        Ok(found)
    }

    pub(crate) fn resolve(&self, input: &OverlayInput) -> Result<Layout, Vec<Problem>> {
        let root = self.root(&input.fleet_root)?;
        let mut layout = Layout::new();
        layout.insert("/".to_string(), implicit_directory());
        let mut problems = Vec::new();
        if let Some(source) = &input.overlay_dir {
            let placement = Placement {
                root: &root,
                source,
                owner: None,
                origin: Origin::OverlayDir,
            };
            match self.source(&root, source) {
            Ok((path, metadata)) if metadata.is_dir() => {
                place_directory(&mut layout, "/", &path, &metadata, None, &placement, &mut problems)
            }
            Ok(_) => problems.push(
                Problem::validation(format!("overlay_dir `{}` is not a directory", source.text))
                    .at_option(source.location.clone())
                    .with_help("`overlay_dir` names a directory copied as the image root; use `files` for single files"),
            ),
            Err(problem) => problems.push(*problem),
        }
        }
        for (index, file) in input.files.iter().enumerate() {
            let placement = Placement {
                root: &root,
                source: &file.source,
                owner: file.owner.as_deref(),
                origin: Origin::File(index),
            };
            self.place_file_entry(&root, file, &placement, &mut layout, &mut problems);
        }
        if problems.is_empty() {
            Ok(layout)
        } else {
            Err(problems)
        }
    }

    fn place_file_entry(
        &self,
        root: &Path,
        file: &FileInput,
        placement: &Placement,
        layout: &mut Layout,
        problems: &mut Vec<Problem>,
    ) {
        let location = || file.source.location.clone();
        let destination = check_entry_fields(file, problems);
        let source = self
            .source(root, &file.source)
            .map_err(|problem| problems.push(*problem));
        let (Ok(destination), Ok((path, metadata))) = (destination, source) else {
            return;
        };
        if !ensure_parents(layout, &destination, &file.source, problems) {
            return;
        }
        if metadata.is_dir() {
            place_directory(
                layout,
                &destination,
                &path,
                &metadata,
                file.mode,
                placement,
                problems,
            );
        } else if metadata.is_file() {
            if destination == "/" {
                problems.push(
                    Problem::validation(format!(
                        "file `{}` cannot replace the image root `/`",
                        file.source.text
                    ))
                    .at_option(location())
                    .with_help("give the full destination path, e.g. `/etc/banner`"),
                );
                return;
            }
            let mode = file.mode.unwrap_or(metadata.mode() & 0o7777);
            let kind = NodeKind::File {
                source: path,
                stamp: FileStamp::from_metadata(&metadata),
            };
            insert(layout, destination, node(kind, mode, placement));
        } else {
            problems.push(special_file_problem(
                &file.source,
                &file.source.text,
                &metadata,
            ));
        }
    }
}

/// The normalized destination; pushes problems for the destination, owner and mode.
fn check_entry_fields(file: &FileInput, problems: &mut Vec<Problem>) -> Result<String, ()> {
    let location = || file.source.location.clone();
    let destination = normalize_destination(&file.destination)
        .map_err(|problem| problems.push(problem.at_option(location())));
    if let Some(owner) = &file.owner
        && let Err(problem) = owner::OwnerSpec::parse(owner)
    {
        problems.push(problem.at_option(location()));
    }
    if let Some(mode) = file.mode
        && mode > 0o7777
    {
        problems.push(
            Problem::validation(format!("mode `{mode:o}` has bits above `7777`"))
                .at_option(location())
                .with_help("use permission bits only, e.g. `0644` or `0755`"),
        );
    }
    destination
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves only complete inserts behind.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn node(kind: NodeKind, mode: u32, placement: &Placement) -> Node {
    Node {
        kind,
        mode,
        owner: placement.owner.map(str::to_string),
        origin: Some(placement.origin),
    }
}

fn implicit_directory() -> Node {
    Node {
        kind: NodeKind::Directory,
        mode: IMPLICIT_DIRECTORY_MODE,
        owner: None,
        origin: None,
    }
}

/// Places a directory at `image_path` (merging into a directory already there) and walks it.
fn place_directory(
    layout: &mut Layout,
    image_path: &str,
    directory: &Path,
    metadata: &Metadata,
    mode: Option<u32>,
    placement: &Placement,
    problems: &mut Vec<Problem>,
) {
    let mode = mode.unwrap_or(metadata.mode() & 0o7777);
    insert(
        layout,
        image_path.to_string(),
        node(NodeKind::Directory, mode, placement),
    );
    walk(layout, image_path, directory, placement, problems);
}

/// Copies a directory's contents into the layout without following any symlink.
fn walk(
    layout: &mut Layout,
    image_path: &str,
    directory: &Path,
    placement: &Placement,
    problems: &mut Vec<Problem>,
) {
    let mut children =
        match fs::read_dir(directory).and_then(|entries| entries.collect::<Result<Vec<_>, _>>()) {
            Ok(children) => children,
            Err(error) => {
                problems.push(io_problem(
                    placement.source,
                    &placement.shown(directory),
                    &error,
                ));
                return;
            }
        };
    children.sort_by_key(|child| child.file_name());
    for child in children {
        let path = child.path();
        let Some(name) = child.file_name().to_str().map(str::to_string) else {
            problems.push(
                Problem::validation(format!(
                    "`{}` is not a UTF-8 file name",
                    placement.shown(&path)
                ))
                .at_option(placement.source.location.clone())
                .with_help("rename it; image paths must be UTF-8"),
            );
            continue;
        };
        if let Some(why) = image_name_problem(&name) {
            problems.push(
                Problem::validation(format!(
                    "`{}` in overlay source `{}`: the name {why}",
                    printable(&placement.shown(&path)),
                    printable(&placement.source.text)
                ))
                .at_option(placement.source.location.clone())
                .with_help(
                    "rename it; names placed in the image follow docs/overlay.md (\"Names\")",
                ),
            );
            continue;
        }
        let child_image_path = join_image_path(image_path, &name);
        // DirEntry::metadata does not follow symlinks (lstat semantics).
        let metadata = match child.metadata() {
            Ok(metadata) => metadata,
            Err(error) => {
                problems.push(io_problem(
                    placement.source,
                    &placement.shown(&path),
                    &error,
                ));
                continue;
            }
        };
        place_walked(
            layout,
            child_image_path,
            &path,
            &metadata,
            placement,
            problems,
        );
    }
}

fn place_walked(
    layout: &mut Layout,
    image_path: String,
    path: &Path,
    metadata: &Metadata,
    placement: &Placement,
    problems: &mut Vec<Problem>,
) {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        place_directory(
            layout,
            &image_path,
            path,
            metadata,
            None,
            placement,
            problems,
        );
    } else if file_type.is_file() {
        let kind = NodeKind::File {
            source: path.to_path_buf(),
            stamp: FileStamp::from_metadata(metadata),
        };
        insert(
            layout,
            image_path,
            node(kind, metadata.mode() & 0o7777, placement),
        );
    } else if file_type.is_symlink() {
        match fs::read_link(path) {
            Ok(target) => match target.into_os_string().into_string() {
                Ok(target) => insert(
                    layout,
                    image_path,
                    node(NodeKind::Symlink { target }, SYMLINK_MODE, placement),
                ),
                Err(_) => problems.push(
                    Problem::validation(format!(
                        "symlink `{}` has a target that is not UTF-8",
                        path.display()
                    ))
                    .at_option(placement.source.location.clone()),
                ),
            },
            Err(error) => {
                problems.push(io_problem(placement.source, &placement.shown(path), &error))
            }
        }
    } else {
        let shown = placement.shown(path);
        problems.push(special_file_problem(placement.source, &shown, metadata));
    }
}

/// Inserts a node, replacing what is at its path. A directory placed over a directory keeps
/// the children already there (like `cp -R`); anything else replaces the whole subtree.
fn insert(layout: &mut Layout, path: String, new: Node) {
    let merge = matches!(new.kind, NodeKind::Directory)
        && layout
            .get(&path)
            .is_some_and(|old| matches!(old.kind, NodeKind::Directory));
    if !merge {
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        let doomed: Vec<String> = layout
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| key.clone())
            .collect();
        for key in doomed {
            layout.remove(&key);
        }
    }
    layout.insert(path, new);
}

/// Creates implicit 0755 directories above `destination`; refuses when a file or symlink is
/// in the way, because silently turning it into a directory would hide a mistake.
fn ensure_parents(
    layout: &mut Layout,
    destination: &str,
    source: &OverlaySource,
    problems: &mut Vec<Problem>,
) -> bool {
    let mut parent = String::new();
    let components: Vec<&str> = destination
        .split('/')
        .filter(|part| !part.is_empty())
        .collect();
    for component in components.iter().take(components.len().saturating_sub(1)) {
        parent.push('/');
        parent.push_str(component);
        match layout.get(&parent).map(|node| &node.kind) {
            None => {
                layout.insert(parent.clone(), implicit_directory());
            }
            Some(NodeKind::Directory) => {}
            Some(_) => {
                problems.push(
                    Problem::validation(format!(
                        "destination `{destination}` needs `{parent}` to be a directory, but an earlier entry places a file or symlink there"
                    ))
                    .at_option(source.location.clone())
                    .with_help("remove the conflicting entry or choose another destination"),
                );
                return false;
            }
        }
    }
    true
}

fn join_image_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}
