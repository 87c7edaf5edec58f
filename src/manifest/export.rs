//! Profile → text in YAML, JSON or TOML (`profiles export`). JSON and TOML come from serde;
//! YAML from a small emitter over our own [`Node`] tree, so output never depends on an
//! unmaintained YAML serializer. Every export loads back to an equal [`Profile`].

use std::fmt::Write as _;
use std::sync::Arc;

use super::profile::Profile;
use crate::error::{Error, Result};
use crate::source::{self, Format, Node, SourceFile};

/// The text of `profile` in `format`, ending with a newline.
pub fn export_profile(profile: &Profile, format: Format) -> Result<String> {
    let failed = |error: &dyn std::fmt::Display| {
        Error::internal(format!(
            "cannot write profile `{}` as {format}: {error}",
            profile.profile_id
        ))
    };
    let json = serde_json::to_string_pretty(profile).map_err(|error| failed(&error))?;
    match format {
        Format::Json => Ok(json + "\n"),
        Format::Toml => toml::to_string(profile).map_err(|error| failed(&error)),
        Format::Yaml => {
            // serde_json keeps struct field order; re-reading its output gives an ordered tree.
            let source = Arc::new(SourceFile::new("export".into(), "export".into(), json));
            let tree = source::parse(&source, Format::Json).map_err(|problem| failed(&problem))?;
            Ok(to_yaml(&tree.value))
        }
    }
}

/// Block-style YAML for a tree (a mapping or sequence at the top).
pub(crate) fn to_yaml(node: &Node) -> String {
    let mut out = String::new();
    match node {
        Node::Mapping(entries) if !entries.is_empty() => write_mapping(&mut out, node, 0),
        Node::Sequence(items) if !items.is_empty() => write_sequence(&mut out, node, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_mapping(out: &mut String, node: &Node, indent: usize) {
    let Node::Mapping(entries) = node else { return };
    for (key, value) in entries {
        let _ = write!(out, "{:indent$}{}:", "", quote(&key.value));
        write_child(out, &value.value, indent);
    }
}

fn write_sequence(out: &mut String, node: &Node, indent: usize) {
    let Node::Sequence(items) = node else { return };
    for item in items {
        let _ = write!(out, "{:indent$}-", "");
        match &item.value {
            Node::Mapping(entries) if !entries.is_empty() => {
                // The first key goes on the dash line; the rest align under it.
                let mut nested = String::new();
                write_mapping(&mut nested, &item.value, indent + 2);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            other => write_child(out, other, indent),
        }
    }
}

/// After `key:` or `-`: a scalar on the same line, a collection on the following lines.
fn write_child(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Mapping(entries) if !entries.is_empty() => {
            out.push('\n');
            write_mapping(out, value, indent + 2);
        }
        Node::Sequence(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, value, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn scalar_text(node: &Node) -> String {
    match node {
        Node::Null => "null".to_string(),
        Node::Bool(value) => value.to_string(),
        Node::Integer(value) => value.to_string(),
        Node::Float(value) if value.is_nan() => ".nan".to_string(),
        Node::Float(value) if value.is_infinite() => {
            if *value > 0.0 { ".inf" } else { "-.inf" }.to_string()
        }
        Node::Float(value) => format!("{value:?}"),
        Node::String(text) => quote(text),
        Node::Sequence(_) => "[]".to_string(),
        Node::Mapping(_) => "{}".to_string(),
    }
}

/// A string as a plain scalar when that reads back as the same string, else double-quoted
/// (JSON escapes are valid YAML double-quoted escapes).
fn quote(text: &str) -> String {
    let plain_char = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '_' | '.' | '/' | '+' | '@' | '-' | '(' | ')' | '=' | '~' | ',' | ' ' | ':'
            )
            || (!c.is_ascii() && c.is_alphanumeric())
    };
    let plain = text.starts_with(|c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '/'))
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && text.chars().all(plain_char)
        && matches!(crate::source::resolve_plain(text), Node::String(_))
        && !is_yaml_1_1_boolean(text);
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
    }
}

/// Words YAML 1.1 readers (PyYAML, the seed's loader) take as booleans; quoted for them.
fn is_yaml_1_1_boolean(text: &str) -> bool {
    matches!(
        text.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::profile::{BuildDefaults, FileEntry, Filesystem, Policies};
    use crate::manifest::read::parse_profile;

    fn full_profile() -> Profile {
        Profile {
            profile_id: "home.ap-livingroom.23.05".into(),
            name: "Living room: AP #1".into(),
            description: Some("yes".into()),
            device_id: "tplink_archer-c7-v2".into(),
            tags: vec!["home".into(), "true".into(), "0644".into(), "-dash".into()],
            openwrt_release: "23.05.4".into(),
            target: "ath79".into(),
            subtarget: "generic".into(),
            imagebuilder_profile: "tplink_archer-c7-v2".into(),
            packages: vec!["luci".into(), "luci-ssl".into()],
            packages_remove: vec!["wpad-basic-mbedtls".into()],
            files: vec![
                FileEntry {
                    source: "files/common/etc/banner".into(),
                    destination: "/etc/banner".into(),
                    mode: Some(0o644),
                    owner: Some("root:root".into()),
                },
                FileEntry {
                    source: "files/x".into(),
                    destination: "/etc/x".into(),
                    mode: None,
                    owner: None,
                },
            ],
            overlay_dir: Some("files/ap".into()),
            policies: Policies {
                filesystem: Some(Filesystem::Squashfs),
                include_kernel_symbols: Some(false),
                strip_debug: None,
                auto_resize_rootfs: Some(true),
                allow_snapshot: true,
            },
            build_defaults: BuildDefaults {
                rebuild_if_cached: true,
                initramfs: false,
                keep_build_dir: true,
            },
            bin_dir: Some("out/ap".into()),
            extra_image_name: Some("home-ap".into()),
            disabled_services: vec!["odhcpd".into()],
            rootfs_partsize: Some(256),
            max_image_size: Some(16 << 20),
            add_local_key: true,
            provenance: false,
            created_by: Some("Jürgen <j@example.org>".into()),
            notes: Some("line one\n  indented: \"quoted\" # not a comment\n\ttab\n".into()),
            meta: Some(crate::manifest::ProfileMeta {
                created_at: Some("2025-11-28T12:34:56Z".into()),
                updated_at: None,
                created_by: Some("ai:github-copilot".into()),
            }),
        }
    }

    fn minimal_profile() -> Profile {
        Profile {
            profile_id: "a".into(),
            name: "A".into(),
            description: None,
            device_id: "d".into(),
            tags: Vec::new(),
            openwrt_release: "SNAPSHOT".into(),
            target: "x86".into(),
            subtarget: "64".into(),
            imagebuilder_profile: "generic".into(),
            packages: Vec::new(),
            packages_remove: Vec::new(),
            files: Vec::new(),
            overlay_dir: None,
            policies: Policies {
                allow_snapshot: true,
                ..Policies::default()
            },
            build_defaults: BuildDefaults::default(),
            bin_dir: None,
            extra_image_name: None,
            disabled_services: Vec::new(),
            rootfs_partsize: None,
            max_image_size: None,
            add_local_key: false,
            provenance: true,
            created_by: None,
            notes: None,
            meta: None,
        }
    }

    fn round_trip(profile: &Profile, format: Format) -> Profile {
        let text = export_profile(profile, format).unwrap_or_else(|error| panic!("{error}"));
        let name = format!("out.{}", format.extension());
        let source = Arc::new(SourceFile::new(name.clone().into(), name, text.clone()));
        match parse_profile(&source, format) {
            Ok(loaded) => loaded.profile,
            Err(problems) => panic!("{format} export does not load: {problems:?}\n{text}"),
        }
    }

    #[test]
    fn every_format_round_trips() {
        for profile in [full_profile(), minimal_profile()] {
            for format in [Format::Yaml, Format::Json, Format::Toml] {
                assert_eq!(round_trip(&profile, format), profile, "{format}");
            }
        }
    }

    #[test]
    fn yaml_output_reads_like_a_hand_written_profile() {
        let text = export_profile(&minimal_profile(), Format::Yaml).unwrap_or_default();
        assert_eq!(
            text,
            "profile_id: a\nname: A\ndevice_id: d\nopenwrt_release: SNAPSHOT\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\npolicies:\n  allow_snapshot: true\n"
        );
        let text = export_profile(&full_profile(), Format::Yaml).unwrap_or_default();
        assert!(
            text.contains("files:\n  - source: files/common/etc/banner\n    destination: /etc/banner\n    mode: \"0644\"\n    owner: root:root\n"),
            "{text}"
        );
        assert!(
            text.contains("tags:\n  - home\n  - \"true\"\n  - \"0644\"\n  - \"-dash\"\n"),
            "{text}"
        );
    }

    #[test]
    fn modes_export_as_octal_strings() {
        let json = export_profile(&full_profile(), Format::Json).unwrap_or_default();
        assert!(json.contains("\"mode\": \"0644\""), "{json}");
        let toml = export_profile(&full_profile(), Format::Toml).unwrap_or_default();
        assert!(toml.contains("mode = \"0644\""), "{toml}");
    }

    #[test]
    fn yaml_emitter_scalars() {
        let node = Node::Mapping(vec![]);
        assert_eq!(to_yaml(&node), "{}\n");
        assert_eq!(scalar_text(&Node::Float(1.0)), "1.0");
        assert_eq!(scalar_text(&Node::Float(f64::NEG_INFINITY)), "-.inf");
        assert_eq!(quote("plain text"), "plain text");
        assert_eq!(quote("null"), "\"null\"");
        assert_eq!(quote("a: b"), "\"a: b\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("1.5"), "\"1.5\"");
    }
}
