//! Profile files → [`LoadedProfile`]: type checks through [`MapReader`] and the profile
//! rules (patterns, paths, modes, release shapes, the snapshot policy). Every problem in a
//! file is reported at once. Reads the one file it is given and nothing else.

use std::path::Path;
use std::sync::Arc;

use super::profile::{
    BuildDefaults, FileEntry, Filesystem, LoadedProfile, Policies, Profile, is_snapshot_release,
};
use crate::error::{Location, Problem, Problems};
use crate::source::{self, Format, MapReader, Node, SourceFile, Spanned};

const PROFILE_FIELDS: &[&str] = &[
    "profile_id",
    "name",
    "description",
    "device_id",
    "tags",
    "openwrt_release",
    "target",
    "subtarget",
    "imagebuilder_profile",
    "packages",
    "packages_remove",
    "files",
    "overlay_dir",
    "policies",
    "build_defaults",
    "bin_dir",
    "extra_image_name",
    "disabled_services",
    "rootfs_partsize",
    "add_local_key",
    "provenance",
    "created_by",
    "notes",
];
const FILE_FIELDS: &[&str] = &["source", "destination", "mode", "owner"];
const POLICY_FIELDS: &[&str] = &[
    "filesystem",
    "include_kernel_symbols",
    "strip_debug",
    "auto_resize_rootfs",
    "allow_snapshot",
];
const BUILD_DEFAULT_FIELDS: &[&str] = &["rebuild_if_cached", "initramfs", "keep_build_dir"];

/// Largest `rootfs_partsize` in MiB.
const MAX_ROOTFS_PARTSIZE: u64 = 16384;

/// Read and validate one profile file; the format comes from the extension.
pub fn load_profile(path: &Path, display_name: String) -> Result<LoadedProfile, Vec<Problem>> {
    let Some(format) = Format::from_path(path) else {
        let problem = Problem::validation(format!(
            "`{display_name}` is not a profile file: use `.yaml`, `.yml`, `.json` or `.toml`"
        ))
        .at(Location::file(display_name));
        return Err(vec![problem]);
    };
    let source = SourceFile::read(path, display_name).map_err(|problem| vec![problem])?;
    parse_profile(&source, format)
}

/// The `profile_id` a file declares, if it parses that far (for files with problems).
pub(crate) fn declared_profile_id(path: &Path) -> Option<String> {
    let format = Format::from_path(path)?;
    let source = SourceFile::read(path, String::new()).ok()?;
    match source::parse(&source, format)
        .ok()?
        .value
        .get("profile_id")?
        .value
        .clone()
    {
        Node::String(id) => Some(id),
        _ => None,
    }
}

/// Validate one profile from text already read.
pub fn parse_profile(
    source: &Arc<SourceFile>,
    format: Format,
) -> Result<LoadedProfile, Vec<Problem>> {
    let tree = source::parse(source, format).map_err(|problem| vec![problem])?;
    let mut problems = Problems::new();
    let profile = MapReader::new(&tree, source, &mut problems).and_then(read_profile);
    match profile {
        Some(profile) if problems.is_empty() => Ok(LoadedProfile {
            profile,
            source: Arc::clone(source),
            tree,
        }),
        _ => Err(sorted(problems.into_vec())),
    }
}

/// Problems in document order (file, then position), whatever order the checks ran in.
pub(crate) fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by(|left, right| {
        let key = |problem: &Problem| {
            problem
                .location
                .as_ref()
                .map(|location| (location.file.clone(), location.span.start))
        };
        key(left).cmp(&key(right))
    });
    problems
}

fn read_profile(mut reader: MapReader<'_, '_>) -> Option<Profile> {
    let profile_id = reader.string("profile_id");
    if let Some(id) = &profile_id {
        check_id(&mut reader, "profile_id", id);
    }
    let name = reader.string("name");
    non_empty(&mut reader, "name", name.as_ref());
    let device_id = reader.string("device_id");
    if let Some(device) = &device_id {
        check_word(
            &mut reader,
            "device_id",
            device,
            "a device model slug without whitespace",
        );
    }
    let release = reader.string("openwrt_release");
    if let Some(release) = &release {
        check_release(&mut reader, release);
    }
    let target = reader.string("target");
    let subtarget = reader.string("subtarget");
    let imagebuilder_profile = reader.string("imagebuilder_profile");
    for (field, value) in [
        ("target", &target),
        ("subtarget", &subtarget),
        ("imagebuilder_profile", &imagebuilder_profile),
    ] {
        if let Some(value) = value {
            check_builder_name(&mut reader, field, value);
        }
    }
    let (packages, packages_remove) = read_packages(&mut reader);
    let files = read_files(&mut reader);
    let policies = read_policies(&mut reader);
    let build_defaults = read_build_defaults(&mut reader);
    let options = read_image_options(&mut reader);
    if let (Some(release), Some(policies)) = (&release, &policies) {
        check_snapshot_policy(&mut reader, release, policies);
    }
    let text = |reader: &mut MapReader<'_, '_>, key| reader.opt_string(key).map(|text| text.value);
    let description = text(&mut reader, "description");
    let tags = read_tags(&mut reader);
    let overlay_dir = read_relative_path(&mut reader, "overlay_dir");
    let bin_dir = text(&mut reader, "bin_dir");
    let provenance = reader.opt_bool("provenance").is_none_or(|flag| flag.value);
    let created_by = text(&mut reader, "created_by");
    let notes = text(&mut reader, "notes");
    reader.finish(PROFILE_FIELDS);
    Some(Profile {
        profile_id: profile_id?.value,
        name: name?.value,
        description,
        device_id: device_id?.value,
        tags,
        openwrt_release: release?.value,
        target: target?.value,
        subtarget: subtarget?.value,
        imagebuilder_profile: imagebuilder_profile?.value,
        packages,
        packages_remove,
        files: files?,
        overlay_dir,
        policies: policies?,
        build_defaults: build_defaults?,
        bin_dir,
        extra_image_name: options.extra_image_name,
        disabled_services: options.disabled_services,
        rootfs_partsize: options.rootfs_partsize,
        add_local_key: options.add_local_key,
        provenance,
        created_by,
        notes,
    })
}

fn read_tags(reader: &mut MapReader<'_, '_>) -> Vec<String> {
    let tags = reader.string_list("tags");
    for (index, tag) in tags.iter().enumerate() {
        check_word(
            reader,
            &format!("tags[{index}]"),
            tag,
            "a tag without whitespace",
        );
    }
    tags.into_iter().map(|tag| tag.value).collect()
}

/// `(packages, packages_remove)`; a name in both lists is a problem at the removal.
fn read_packages(reader: &mut MapReader<'_, '_>) -> (Vec<String>, Vec<String>) {
    let mut lists = [Vec::new(), Vec::new()];
    for (list, field) in lists.iter_mut().zip(["packages", "packages_remove"]) {
        for (index, package) in reader.string_list(field).into_iter().enumerate() {
            let path = reader.path_of(&format!("{field}[{index}]"));
            if package.value.starts_with('-') {
                let message = format!(
                    "`{path}`: write `{}` without the leading `-`; removals go in `packages_remove`",
                    package.value
                );
                reader.invalid(package.span.clone(), message, "leading `-`");
            } else {
                check_word(
                    reader,
                    &format!("{field}[{index}]"),
                    &package,
                    "a package name",
                );
            }
            list.push(package);
        }
    }
    let [packages, removals] = lists;
    for removal in &removals {
        if packages
            .iter()
            .any(|package| package.value == removal.value)
        {
            let message = format!(
                "package `{}` is in both `packages` and `packages_remove`",
                removal.value
            );
            reader.invalid(removal.span.clone(), message, "also added in `packages`");
        }
    }
    let values = |list: Vec<Spanned<String>>| list.into_iter().map(|item| item.value).collect();
    (values(packages), values(removals))
}

fn read_files(reader: &mut MapReader<'_, '_>) -> Option<Vec<FileEntry>> {
    let Some(items) = reader.opt_list("files") else {
        // Absent is fine; mistyped was reported.
        return reader.node("files").is_none().then(Vec::new);
    };
    let mut files = Vec::with_capacity(items.len());
    let mut complete = true;
    for (index, item) in items.iter().enumerate() {
        let entry = reader
            .reader_for(item, &format!("files[{index}]"))
            .and_then(read_file_entry);
        match entry {
            Some(entry) => files.push(entry),
            None => complete = false,
        }
    }
    complete.then_some(files)
}

fn read_file_entry(mut reader: MapReader<'_, '_>) -> Option<FileEntry> {
    let source = reader.string("source");
    if let Some(source) = &source {
        check_relative_path(&mut reader, "source", source);
    }
    let destination = reader.string("destination");
    if let Some(destination) = &destination {
        check_destination(&mut reader, destination);
    }
    let mode = read_mode(&mut reader);
    let owner = reader.opt_string("owner");
    if let Some(owner) = &owner {
        check_owner(&mut reader, owner);
    }
    reader.finish(FILE_FIELDS);
    Some(FileEntry {
        source: source?.value,
        destination: destination?.value,
        mode,
        owner: owner.map(|owner| owner.value),
    })
}

/// `mode` as an octal string, or a number whose written digits are all octal: YAML 1.2
/// reads `0644` as decimal 644, so the text, not the number, is what the user meant.
fn read_mode(reader: &mut MapReader<'_, '_>) -> Option<u32> {
    let node = reader.node("mode")?;
    let text = match &node.value {
        Node::String(text) => text.as_str(),
        Node::Integer(_) => reader.source().slice(&node.span),
        other => {
            let message = format!(
                "expected an octal string such as `\"0644\"` for `{}`, found {}",
                reader.path_of("mode"),
                other.kind()
            );
            reader.invalid(node.span.clone(), message, "expected an octal mode");
            return None;
        }
    };
    let mode = parse_mode_text(text);
    if mode.is_none() {
        let message = format!(
            "invalid file mode `{text}` for `{}`: use octal digits up to `7777`, e.g. `\"0644\"`",
            reader.path_of("mode")
        );
        reader.invalid(node.span.clone(), message, "not an octal mode");
    }
    mode
}

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

fn read_policies(reader: &mut MapReader<'_, '_>) -> Option<Policies> {
    if reader.node("policies").is_none() {
        return Some(Policies::default());
    }
    let mut policies = reader.nested("policies")?;
    let filesystem = policies.opt_string("filesystem").and_then(|text| {
        let filesystem = Filesystem::parse(&text.value);
        if filesystem.is_none() {
            let message = format!(
                "unknown filesystem `{}` for `policies.filesystem`: use `squashfs`, `ext4`, `ubifs` or `jffs2`",
                text.value
            );
            policies.invalid(text.span, message, "unknown filesystem");
        }
        filesystem
    });
    let flag = |policies: &mut MapReader<'_, '_>, key| policies.opt_bool(key).map(|f| f.value);
    let result = Policies {
        filesystem,
        include_kernel_symbols: flag(&mut policies, "include_kernel_symbols"),
        strip_debug: flag(&mut policies, "strip_debug"),
        auto_resize_rootfs: flag(&mut policies, "auto_resize_rootfs"),
        allow_snapshot: flag(&mut policies, "allow_snapshot").unwrap_or(false),
    };
    policies.finish(POLICY_FIELDS);
    Some(result)
}

fn read_build_defaults(reader: &mut MapReader<'_, '_>) -> Option<BuildDefaults> {
    if reader.node("build_defaults").is_none() {
        return Some(BuildDefaults::default());
    }
    let mut defaults = reader.nested("build_defaults")?;
    let mut flag = |key| defaults.opt_bool(key).is_some_and(|flag| flag.value);
    let result = BuildDefaults {
        rebuild_if_cached: flag("rebuild_if_cached"),
        initramfs: flag("initramfs"),
        keep_build_dir: flag("keep_build_dir"),
    };
    defaults.finish(BUILD_DEFAULT_FIELDS);
    Some(result)
}

/// The Image Builder options that change the image, besides packages and files.
struct ImageOptions {
    extra_image_name: Option<String>,
    disabled_services: Vec<String>,
    rootfs_partsize: Option<u32>,
    add_local_key: bool,
}

fn read_image_options(reader: &mut MapReader<'_, '_>) -> ImageOptions {
    let extra_image_name = reader.opt_string("extra_image_name");
    if let Some(name) = &extra_image_name {
        let valid = (1..=64).contains(&name.value.len())
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ' ' | '-'));
        if !valid {
            let message = format!(
                "invalid `extra_image_name` `{}`: use 1 to 64 letters, digits, spaces, `.`, `_` or `-`",
                name.value
            );
            reader.invalid(name.span.clone(), message, "invalid name");
        }
    }
    let disabled_services = reader.string_list("disabled_services");
    for (index, service) in disabled_services.iter().enumerate() {
        let field = format!("disabled_services[{index}]");
        check_charset(
            reader,
            &field,
            service,
            is_name_char,
            "a service name (`/etc/init.d/<name>`)",
        );
    }
    let rootfs_partsize = reader.opt_u64("rootfs_partsize").and_then(|size| {
        if (1..=MAX_ROOTFS_PARTSIZE).contains(&size.value) {
            u32::try_from(size.value).ok()
        } else {
            let message = format!(
                "`rootfs_partsize` must be between 1 and {MAX_ROOTFS_PARTSIZE} (MiB), not {}",
                size.value
            );
            reader.invalid(size.span, message, "out of range");
            None
        }
    });
    ImageOptions {
        extra_image_name: extra_image_name.map(|name| name.value),
        disabled_services: disabled_services.into_iter().map(|s| s.value).collect(),
        rootfs_partsize,
        add_local_key: reader
            .opt_bool("add_local_key")
            .is_some_and(|flag| flag.value),
    }
}

fn check_snapshot_policy(
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

fn is_name_char(c: char) -> bool {
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

fn check_release(reader: &mut MapReader<'_, '_>, release: &Spanned<String>) {
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

/// `^[A-Za-z0-9_.,-]+$`: target, subtarget and Image Builder profile names.
fn check_builder_name(reader: &mut MapReader<'_, '_>, field: &str, value: &Spanned<String>) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ',' | '-');
    check_charset(
        reader,
        field,
        value,
        allowed,
        "letters, digits, `_`, `.`, `,` or `-`",
    );
}

fn check_charset(
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

fn check_word(
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

fn non_empty(reader: &mut MapReader<'_, '_>, field: &str, value: Option<&Spanned<String>>) {
    if let Some(value) = value.filter(|value| value.value.trim().is_empty()) {
        let message = format!("`{}` must not be empty", reader.path_of(field));
        reader.invalid(value.span.clone(), message, "empty");
    }
}

fn read_relative_path(reader: &mut MapReader<'_, '_>, field: &str) -> Option<String> {
    let path = reader.opt_string(field)?;
    check_relative_path(reader, field, &path);
    Some(path.value)
}

/// Sources and overlay directories stay inside the fleet repository.
fn check_relative_path(reader: &mut MapReader<'_, '_>, field: &str, path: &Spanned<String>) {
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

fn check_destination(reader: &mut MapReader<'_, '_>, destination: &Spanned<String>) {
    let text = &destination.value;
    let problem = if !text.starts_with('/') {
        Some("must be an absolute path inside the image")
    } else if text.split('/').any(|part| part == "..") {
        Some("must not contain `..`")
    } else if text.trim_end_matches('/').is_empty() || text.ends_with('/') {
        Some("must name a file, not a directory")
    } else if text.contains('\0') {
        Some("must not contain NUL")
    } else {
        None
    };
    if let Some(problem) = problem {
        let message = format!("`{}` {problem}: `{text}`", reader.path_of("destination"));
        reader.invalid(destination.span.clone(), message, "invalid destination");
    }
}

/// `user` or `user:group`; names or numeric ids.
fn check_owner(reader: &mut MapReader<'_, '_>, owner: &Spanned<String>) {
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
