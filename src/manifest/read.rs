//! Profile files → [`LoadedProfile`]: type checks through [`MapReader`], then the value
//! rules of `manifest::rules` (patterns, paths, modes, release shapes, snapshot policy).
//! Every problem in a file is reported at once. Reads the one file it is given, no other.

use std::path::Path;
use std::sync::Arc;

use super::names;
use super::profile::{
    BuildDefaults, FileEntry, Filesystem, LoadedProfile, Policies, Profile, ProfileMeta,
};
use super::rules::{
    check_builder_name, check_destination, check_id, check_name, check_owner, check_relative_path,
    check_release, check_snapshot_policy, check_word, non_empty, normalize_release,
    parse_mode_text, read_bin_dir, read_relative_path,
};
use crate::error::{Location, Problem, Problems};
use crate::source::{
    self, Containment, Format, MAX_FILE_SIZE, MapReader, Node, SourceFile, Spanned,
};

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
    "max_image_size",
    "add_local_key",
    "provenance",
    "created_by",
    "notes",
    "meta",
];
const META_FIELDS: &[&str] = &["created_at", "updated_at", "created_by"];
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

/// Read and validate one profile file the user named (anywhere); the format comes from the
/// extension.
pub fn load_profile(path: &Path, display_name: String) -> Result<LoadedProfile, Vec<Problem>> {
    load_profile_in(path, display_name, Containment::Anywhere)
}

/// [`load_profile`] for a file that must resolve inside `containment` (a fleet's profiles).
pub(crate) fn load_profile_in(
    path: &Path,
    display_name: String,
    containment: Containment<'_>,
) -> Result<LoadedProfile, Vec<Problem>> {
    let Some(format) = Format::from_path(path) else {
        let problem = Problem::validation(format!(
            "`{display_name}` is not a profile file: use `.yaml`, `.yml`, `.json` or `.toml`"
        ))
        .at(Location::file(display_name));
        return Err(vec![problem]);
    };
    let source = SourceFile::read_limited(path, display_name, MAX_FILE_SIZE, containment)
        .map_err(|problem| vec![problem])?;
    parse_profile(&source, format)
}

/// The `profile_id` a file declares, if it parses that far (for files with problems).
pub(crate) fn declared_profile_id(path: &Path, containment: Containment<'_>) -> Option<String> {
    let format = Format::from_path(path)?;
    let source = SourceFile::read_limited(path, String::new(), MAX_FILE_SIZE, containment).ok()?;
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
        _ => Err(problems.into_sorted()),
    }
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
    // The original tool wrote `snapshot`; upstream's name is `SNAPSHOT`.
    let release = reader
        .string("openwrt_release")
        .map(|release| Spanned::new(normalize_release(&release.value), release.span));
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
    let max_image_size = read_max_image_size(&mut reader);
    if let (Some(release), Some(policies)) = (&release, &policies) {
        check_snapshot_policy(&mut reader, release, policies);
    }
    let text = |reader: &mut MapReader<'_, '_>, key| reader.opt_string(key).map(|text| text.value);
    let description = text(&mut reader, "description");
    let tags = read_tags(&mut reader);
    let overlay_dir = read_relative_path(&mut reader, "overlay_dir");
    let bin_dir = read_bin_dir(&mut reader);
    let provenance = reader.opt_bool("provenance").is_none_or(|flag| flag.value);
    let created_by = text(&mut reader, "created_by");
    let notes = text(&mut reader, "notes");
    let meta = read_meta(&mut reader);
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
        max_image_size,
        add_local_key: options.add_local_key,
        provenance,
        created_by,
        notes,
        meta: meta?,
    })
}

/// The original tool's export bookkeeping: free text, kept as written.
fn read_meta(reader: &mut MapReader<'_, '_>) -> Option<Option<ProfileMeta>> {
    if reader.node("meta").is_none() {
        return Some(None);
    }
    let mut meta = reader.nested("meta")?;
    let mut text = |key| meta.opt_string(key).map(|text| text.value);
    let result = ProfileMeta {
        created_at: text("created_at"),
        updated_at: text("updated_at"),
        created_by: text("created_by"),
    };
    meta.finish(META_FIELDS);
    Some(Some(result))
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
                check_name(
                    reader,
                    &format!("{field}[{index}]"),
                    &package,
                    names::package_name_problem,
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

/// `max_image_size`: bytes, or a number with a `k`, `m` or `g` suffix (binary units).
fn read_max_image_size(reader: &mut MapReader<'_, '_>) -> Option<u64> {
    let node = reader.node("max_image_size")?;
    let parsed = match &node.value {
        Node::Integer(bytes) => u64::try_from(*bytes).ok(),
        Node::String(text) => parse_size(text),
        _ => None,
    };
    match parsed {
        Some(bytes) if bytes > 0 => Some(bytes),
        _ => {
            reader.invalid(
                node.span.clone(),
                "`max_image_size` must be a positive number of bytes, optionally with a `k`, `m` or `g` suffix (`16m`)",
                "not a size",
            );
            None
        }
    }
}

/// `16m` → 16 MiB; `15872k`, `1g`, `4096`.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
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
        check_name(
            reader,
            "extra_image_name",
            name,
            names::extra_image_name_problem,
        );
    }
    let disabled_services = reader.string_list("disabled_services");
    for (index, service) in disabled_services.iter().enumerate() {
        let field = format!("disabled_services[{index}]");
        check_name(reader, &field, service, names::service_name_problem);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::rules::{is_valid_id, is_valid_release};

    const BASE: &str = "profile_id: home.ap\nname: AP\ndevice_id: tplink_archer-c7-v2\nopenwrt_release: \"23.05.4\"\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: tplink_archer-c7-v2\n";

    fn load(text: &str, format: Format) -> Result<LoadedProfile, Vec<Problem>> {
        let name = format!("p.{}", format.extension());
        let source = Arc::new(SourceFile::new(name.clone().into(), name, text.to_string()));
        parse_profile(&source, format)
    }

    fn profile(text: &str) -> Profile {
        match load(text, Format::Yaml) {
            Ok(loaded) => loaded.profile,
            Err(problems) => panic!("unexpected problems: {problems:?}"),
        }
    }

    /// Problems for BASE with `extra` appended, as `line:column: message`.
    fn problems(extra: &str) -> Vec<String> {
        problems_in(&format!("{BASE}{extra}"))
    }

    fn problems_in(text: &str) -> Vec<String> {
        match load(text, Format::Yaml) {
            Ok(loaded) => panic!("expected problems, loaded {:?}", loaded.profile),
            Err(problems) => problems
                .iter()
                .map(|problem| match &problem.location {
                    Some(location) => {
                        format!("{}:{}: {}", location.line, location.column, problem.message)
                    }
                    None => problem.message.clone(),
                })
                .collect(),
        }
    }

    fn replaced(from: &str, to: &str) -> Vec<String> {
        problems_in(&BASE.replace(from, to))
    }

    #[test]
    fn base_profile_loads_with_defaults() {
        let profile = profile(BASE);
        assert_eq!(profile.profile_id, "home.ap");
        assert!(profile.provenance);
        assert!(!profile.add_local_key);
        assert_eq!(profile.policies, Policies::default());
        assert!(!profile.is_snapshot());
    }

    #[test]
    fn missing_required_fields_are_all_reported() {
        assert_eq!(
            problems_in("notes: nothing else\n"),
            [
                "1:1: missing required field `profile_id`",
                "1:1: missing required field `name`",
                "1:1: missing required field `device_id`",
                "1:1: missing required field `openwrt_release`",
                "1:1: missing required field `target`",
                "1:1: missing required field `subtarget`",
                "1:1: missing required field `imagebuilder_profile`",
            ]
        );
    }

    #[test]
    fn profile_id_pattern() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id("lab.router1.snapshot"));
        assert!(!is_valid_id("-lab"));
        assert!(!is_valid_id("lab router"));
        assert!(!is_valid_id(&"a".repeat(129)));
        assert!(is_valid_id(&"a".repeat(128)));
        assert_eq!(
            replaced("profile_id: home.ap", "profile_id: .hidden"),
            [
                "1:13: invalid `profile_id` `.hidden`: use up to 128 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
            ]
        );
    }

    #[test]
    fn name_must_not_be_empty() {
        assert_eq!(
            replaced("name: AP", "name: \"  \""),
            ["2:7: `name` must not be empty"]
        );
    }

    #[test]
    fn device_id_and_tags_have_no_whitespace() {
        assert_eq!(
            replaced("device_id: tplink_archer-c7-v2", "device_id: Archer C7"),
            [
                "3:12: invalid `device_id` `Archer C7`: expected a device model slug without whitespace"
            ]
        );
        assert_eq!(
            problems("tags: [ok, \"two words\"]\n"),
            ["8:12: invalid `tags[1]` `two words`: expected a tag without whitespace"]
        );
    }

    #[test]
    fn release_shapes() {
        for good in [
            "23.05.4",
            "24.10.0-rc2",
            "SNAPSHOT",
            "24.10-SNAPSHOT",
            "22.03.0",
        ] {
            assert!(is_valid_release(good), "{good}");
        }
        for bad in [
            "23.05",
            "v23.05.4",
            "23.05.4-rc",
            "24.10-snapshot",
            "23.05.4.1",
            "",
            "23..4",
        ] {
            assert!(!is_valid_release(bad), "{bad}");
        }
        assert_eq!(
            replaced("\"23.05.4\"", "23.05"),
            ["4:18: invalid `openwrt_release` `23.05`"]
        );
        assert_eq!(
            replaced("\"23.05.4\"", "v23.05.4"),
            ["4:18: invalid `openwrt_release` `v23.05.4`"]
        );
    }

    #[test]
    fn snapshots_need_allow_snapshot() {
        assert_eq!(
            replaced("\"23.05.4\"", "24.10-SNAPSHOT"),
            ["4:18: release `24.10-SNAPSHOT` is a snapshot, which the profile does not allow"]
        );
        let allowed = format!(
            "{}policies:\n  allow_snapshot: true\n",
            BASE.replace("\"23.05.4\"", "SNAPSHOT")
        );
        assert!(profile(&allowed).is_snapshot());
    }

    #[test]
    fn the_original_tools_snapshot_spellings_are_normalised() {
        for (written, normalised) in [
            ("\"snapshot\"", "SNAPSHOT"),
            ("Snapshot", "SNAPSHOT"),
            ("\"24.10-snapshot\"", "24.10-SNAPSHOT"),
            ("SNAPSHOT", "SNAPSHOT"),
        ] {
            let text = format!(
                "{}policies:\n  allow_snapshot: true\n",
                BASE.replace("\"23.05.4\"", written)
            );
            assert_eq!(profile(&text).openwrt_release, normalised, "{written}");
        }
        assert_eq!(
            replaced("\"23.05.4\"", "\"snapshot\""),
            ["4:18: release `SNAPSHOT` is a snapshot, which the profile does not allow"]
        );
        assert_eq!(crate::manifest::normalize_release("23.05.4"), "23.05.4");
        assert_eq!(
            crate::manifest::normalize_release("x-snapshot"),
            "x-SNAPSHOT"
        );
        assert_eq!(crate::manifest::normalize_release("é"), "é");
    }

    #[test]
    fn builder_names_are_restricted() {
        assert_eq!(
            replaced("target: ath79", "target: ath79/generic"),
            [
                "5:9: invalid `target` `ath79/generic`: expected letters, digits, `_`, `.`, `,` or `-`"
            ]
        );
    }

    #[test]
    fn make_variable_rules_apply_at_validate() {
        let found = problems(
            "packages: [\"$(eval x)\", \"a;b\", \"`id`\", \"a#b\", \"'q'\", \"a|b\", \"%\", /srv/x.ipk, \"http://e.org/x.ipk\", luci]\nextra_image_name: my build\n",
        );
        let expected_package = "expected a package name: letters, digits, `.`, `_`, `+` or `-`, starting with a letter or digit (no paths, URLs or shell syntax)";
        let mut expected: Vec<String> = [
            (12, "$(eval x)", 0),
            (25, "a;b", 1),
            (32, "`id`", 2),
            (40, "a#b", 3),
            (47, "'q'", 4),
            (54, "a|b", 5),
            (61, "%", 6),
            (66, "/srv/x.ipk", 7),
            (78, "http://e.org/x.ipk", 8),
        ]
        .iter()
        .map(|(column, value, index)| {
            format!("8:{column}: invalid `packages[{index}]` `{value}`: {expected_package}")
        })
        .collect();
        expected.push("9:19: invalid `extra_image_name` `my build`: use 1 to 64 letters, digits, `.`, `_` or `-` (write `-` for a space: the image file names get `-` either way)".to_string());
        assert_eq!(found, expected);
        for field in ["target", "subtarget", "imagebuilder_profile"] {
            for bad in ["..", "."] {
                let text = BASE
                    .lines()
                    .map(|line| match line.split_once(": ") {
                        Some((key, _)) if key == field => format!("{key}: \"{bad}\""),
                        _ => line.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let found = problems_in(&text);
                assert_eq!(found.len(), 1, "{found:?}");
                assert!(
                    found[0].contains(&format!(
                        "invalid `{field}` `{bad}`: must not start with `.`"
                    )),
                    "{found:?}"
                );
            }
        }
        assert_eq!(
            replaced("target: ath79", "target: ath79/../x"),
            ["5:9: invalid `target` `ath79/../x`: expected letters, digits, `_`, `.`, `,` or `-`"]
        );
    }

    #[test]
    fn destinations_use_the_safe_character_set() {
        let found = problems(
            "files:\n  - source: a\n    destination: \"/a /some/host/dir/.git\"\n  - source: b\n    destination: \"/etc/x'y\"\n  - source: c\n    destination: /usr/bin/-rf\n  - source: d\n    destination: /\n  - source: e\n    destination: /lib/firmware/brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt\n",
        );
        assert_eq!(
            found,
            [
                "10:18: `files[0].destination` `a ` contains a space, which the Image Builder's shell code would split or interpret; use letters, digits and `. _ - + , @ : =`: `/a /some/host/dir/.git`",
                "12:18: `files[1].destination` `x'y` contains `'`, which the Image Builder's shell code would split or interpret; use letters, digits and `. _ - + , @ : =`: `/etc/x'y`",
                "14:18: `files[2].destination` `-rf` starts with `-`, which commands would read as an option: `/usr/bin/-rf`",
            ]
        );
    }

    #[test]
    fn package_rules() {
        assert_eq!(
            problems("packages: [luci, \"-ppp\", \"bad name\"]\npackages_remove: [luci]\n"),
            [
                "8:18: `packages[1]`: write `-ppp` without the leading `-`; removals go in `packages_remove`",
                "8:26: invalid `packages[2]` `bad name`: expected a package name: letters, digits, `.`, `_`, `+` or `-`, starting with a letter or digit (no paths, URLs or shell syntax)",
                "9:19: package `luci` is in both `packages` and `packages_remove`",
            ]
        );
    }

    #[test]
    fn file_entry_rules() {
        let files = "files:\n  - source: /etc/passwd\n    destination: etc/x\n    owner: \"root:\"\n    mod: \"0644\"\n  - source: files/a\n    destination: /etc/../x\n  - source: files/b\n    destination: /etc/\n  - just a string\n";
        assert_eq!(
            problems(files),
            [
                "9:13: `files[0].source` must be a path relative to the fleet root that stays inside it, not `/etc/passwd`",
                "10:18: `files[0].destination` must be an absolute path inside the image: `etc/x`",
                "11:12: invalid `files[0].owner` `root:`: expected `user` or `user:group`",
                "12:5: unknown field `files[0].mod`",
                "14:18: `files[1].destination` must not contain `..`: `/etc/../x`",
                "16:18: `files[2].destination` must not end with `/`: `/etc/`",
                "17:5: expected a mapping for `files[3]`, found a string",
            ]
        );
    }

    #[test]
    fn octal_modes() {
        assert_eq!(parse_mode_text("0644"), Some(0o644));
        assert_eq!(parse_mode_text("644"), Some(0o644));
        assert_eq!(parse_mode_text("0o755"), Some(0o755));
        assert_eq!(parse_mode_text("4755"), Some(0o4755));
        assert_eq!(parse_mode_text("7777"), Some(0o7777));
        assert_eq!(parse_mode_text("10000"), None);
        assert_eq!(parse_mode_text("0999"), None);
        assert_eq!(parse_mode_text(""), None);
        assert_eq!(parse_mode_text("rw-r--r--"), None);
        let mode = |written: &str, format: Format, text: String| {
            let loaded = load(&text, format).map_err(|problems| format!("{written}: {problems:?}"));
            loaded.map(|loaded| loaded.profile.files[0].mode)
        };
        for (written, expected) in [
            ("0755", 0o755),
            ("644", 0o644),
            ("0o600", 0o600),
            ("\"0640\"", 0o640),
        ] {
            let text =
                format!("{BASE}files:\n  - source: a\n    destination: /a\n    mode: {written}\n");
            assert_eq!(mode(written, Format::Yaml, text), Ok(Some(expected)));
        }
        let toml = "profile_id = \"a\"\nname = \"a\"\ndevice_id = \"a\"\nopenwrt_release = \"23.05.4\"\ntarget = \"a\"\nsubtarget = \"a\"\nimagebuilder_profile = \"a\"\n[[files]]\nsource = \"a\"\ndestination = \"/a\"\nmode = 644\n";
        assert_eq!(mode("644", Format::Toml, toml.to_string()), Ok(Some(0o644)));
        assert_eq!(
            problems("files:\n  - source: a\n    destination: /a\n    mode: 493\n"),
            [
                "11:11: invalid file mode `493` for `files[0].mode`: use octal digits up to `7777`, e.g. `\"0644\"`"
            ]
        );
        assert_eq!(
            problems("files:\n  - source: a\n    destination: /a\n    mode: true\n"),
            [
                "11:11: expected an octal string such as `\"0644\"` for `files[0].mode`, found a boolean"
            ]
        );
    }

    #[test]
    fn overlay_dir_stays_inside_the_fleet() {
        assert_eq!(
            problems("overlay_dir: ../elsewhere\n"),
            [
                "8:14: `overlay_dir` must be a path relative to the fleet root that stays inside it, not `../elsewhere`"
            ]
        );
    }

    #[test]
    fn policies_and_build_defaults() {
        assert_eq!(
            problems(
                "policies:\n  filesystem: btrfs\n  strip: true\nbuild_defaults:\n  initramfs: 1\n"
            ),
            [
                "9:15: unknown filesystem `btrfs` for `policies.filesystem`: use `squashfs`, `ext4`, `ubifs` or `jffs2`",
                "10:3: unknown field `policies.strip`",
                "12:14: expected a boolean (`true` or `false`) for `build_defaults.initramfs`, found an integer",
            ]
        );
        assert_eq!(
            problems("policies: ext4\n"),
            ["8:11: expected a mapping for `policies`, found a string"]
        );
        let loaded = profile(&format!(
            "{BASE}policies:\n  filesystem: ext4\n  strip_debug: true\n"
        ));
        assert_eq!(loaded.policies.filesystem, Some(Filesystem::Ext4));
        assert_eq!(loaded.policies.strip_debug, Some(true));
        assert_eq!(loaded.policies.include_kernel_symbols, None);
    }

    #[test]
    fn image_options() {
        assert_eq!(
            problems(
                "extra_image_name: \"a/b\"\ndisabled_services: [\"bad name\"]\nrootfs_partsize: 0\nadd_local_key: \"yes\"\n"
            ),
            [
                "8:19: invalid `extra_image_name` `a/b`: use 1 to 64 letters, digits, `.`, `_` or `-`",
                "9:21: invalid `disabled_services[0]` `bad name`: expected a service name (`/etc/init.d/<name>`)",
                "10:18: `rootfs_partsize` must be between 1 and 16384 (MiB), not 0",
                "11:16: expected a boolean (`true` or `false`) for `add_local_key`, found a string",
            ]
        );
        assert_eq!(
            problems("rootfs_partsize: 16385\n"),
            ["8:18: `rootfs_partsize` must be between 1 and 16384 (MiB), not 16385"]
        );
        let loaded = profile(&format!(
            "{BASE}extra_image_name: my-build.1\nprovenance: false\nrootfs_partsize: 16384\n"
        ));
        assert_eq!(loaded.extra_image_name.as_deref(), Some("my-build.1"));
        assert!(!loaded.provenance);
    }

    #[test]
    fn unknown_fields_suggest_the_closest() {
        assert_eq!(
            problems("descripton: x\n"),
            ["8:1: unknown field `descripton`"]
        );
        let found = load(&format!("{BASE}descripton: x\nzzz: 1\n"), Format::Yaml)
            .err()
            .unwrap_or_default();
        let helps: Vec<_> = found
            .iter()
            .map(|problem| problem.help.clone().unwrap_or_default())
            .collect();
        assert_eq!(helps[0], "did you mean `description`?");
        assert!(helps[1].starts_with("known fields: `profile_id`, `name`"));
    }

    #[test]
    fn size_limits() {
        let many = vec!["p"; 1001].join(", ");
        assert_eq!(
            problems(&format!("packages: [{many}]\n")),
            ["8:11: `packages` has 1001 entries, more than the limit of 1000"]
        );
        let long = "n".repeat(4097);
        assert_eq!(
            problems(&format!("notes: {long}\n")),
            ["8:8: `notes` is 4097 bytes long, more than the limit of 4096"]
        );
        let directory = tempfile::tempdir().map_err(|error| error.to_string());
        let Ok(directory) = directory else {
            panic!("temp dir")
        };
        let path = directory.path().join("big.yaml");
        let big = format!("{BASE}notes: |\n{}", "  xxxxxxxxxxxxxxx\n".repeat(70_000));
        std::fs::write(&path, big).unwrap_or_else(|error| panic!("{error}"));
        let found = load_profile(&path, "big.yaml".into())
            .err()
            .unwrap_or_default();
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .message
                .contains("more than the limit of 1048576 bytes"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn not_a_profile_file() {
        let found = load_profile(Path::new("profiles/readme.md"), "profiles/readme.md".into())
            .err()
            .unwrap_or_default();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].message,
            "`profiles/readme.md` is not a profile file: use `.yaml`, `.yml`, `.json` or `.toml`"
        );
    }

    #[test]
    fn same_profile_in_every_format() {
        let json = r#"{"profile_id": "a", "name": "A", "device_id": "d", "openwrt_release": "23.05.4", "target": "t", "subtarget": "s", "imagebuilder_profile": "p", "files": [{"source": "f", "destination": "/f", "mode": 644}]}"#;
        let toml = "profile_id = \"a\"\nname = \"A\"\ndevice_id = \"d\"\nopenwrt_release = \"23.05.4\"\ntarget = \"t\"\nsubtarget = \"s\"\nimagebuilder_profile = \"p\"\nfiles = [{ source = \"f\", destination = \"/f\", mode = \"0644\" }]\n";
        let yaml = "profile_id: a\nname: A\ndevice_id: d\nopenwrt_release: 23.05.4\ntarget: t\nsubtarget: s\nimagebuilder_profile: p\nfiles: [{source: f, destination: /f, mode: 0644}]\n";
        let loaded: Vec<_> = [
            (json, Format::Json),
            (toml, Format::Toml),
            (yaml, Format::Yaml),
        ]
        .into_iter()
        .map(|(text, format)| {
            load(text, format)
                .map(|loaded| loaded.profile)
                .map_err(|problems| format!("{problems:?}"))
        })
        .collect();
        assert!(loaded.iter().all(Result::is_ok), "{loaded:?}");
        assert_eq!(loaded[0], loaded[1]);
        assert_eq!(loaded[1], loaded[2]);
    }

    #[test]
    fn locations_by_field_path() {
        let text = format!("{BASE}files:\n  - source: a\n    destination: /a\n");
        let Ok(loaded) = load(&text, Format::Yaml) else {
            panic!("loads")
        };
        assert_eq!(
            loaded.location("files[0].destination").to_string(),
            "p.yaml:10:18"
        );
        assert_eq!(loaded.location("target").to_string(), "p.yaml:5:9");
        assert_eq!(loaded.location("notes").to_string(), "p.yaml:1:1");
    }
}
