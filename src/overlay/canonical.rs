//! The canonical, versioned serialization of an overlay's entries and its blake3 tree hash.
//! Changing a single byte of this format changes every build key: bump the version line.

use std::fmt::Write;

use super::{EntryKind, OverlayEntry};

/// First line of the serialization; the version of the format.
pub const FORMAT_HEADER: &str = "imagegen-overlay-v1\n";

/// One line per entry, in the order given (the caller sorts by path):
/// `<kind> <mode as 4 octal digits> <owner> <size> <digest> <path>` where kind is `dir`,
/// `file` or `symlink`, and owner, digest and path are JSON strings (owner `null` if unset),
/// so no value can contain a space or newline that would make two trees serialize alike.
pub(crate) fn serialize(entries: &[OverlayEntry]) -> String {
    let mut text = String::with_capacity(FORMAT_HEADER.len() + entries.len() * 128);
    text.push_str(FORMAT_HEADER);
    for entry in entries {
        let kind = match entry.kind {
            EntryKind::Directory => "dir",
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
        };
        let owner = match &entry.owner {
            Some(owner) => json_string(owner),
            None => "null".to_string(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "{kind} {:04o} {owner} {} {} {}",
            entry.mode,
            entry.size,
            json_string(&entry.digest),
            json_string(&entry.path)
        );
    }
    text
}

pub(crate) fn tree_hash(entries: &[OverlayEntry]) -> String {
    blake3::hash(serialize(entries).as_bytes())
        .to_hex()
        .to_string()
}

fn json_string(value: &str) -> String {
    // Serializing a &str to JSON cannot fail; fall back to a debug form just in case.
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}
