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
                '_' | '.' | '/' | '+' | '@' | '-' | '(' | ')' | '=' | '~' | ',' | ' '
            )
            || (!c.is_ascii() && c.is_alphanumeric())
    };
    let plain = text.starts_with(|c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '/'))
        && !text.ends_with(' ')
        && text.chars().all(plain_char)
        && matches!(crate::source::resolve_plain(text), Node::String(_));
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
    }
}
