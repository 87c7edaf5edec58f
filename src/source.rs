//! Source files we read (manifest, profiles, lock) and a format-independent tree of
//! spanned values parsed from YAML, JSON or TOML, so every later error can point at the
//! exact line and column. This module does no validation of meaning.

mod file;
mod json;
mod lines;
mod reader;
mod toml_document;
mod yaml;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Location, Problem};

pub use file::{Containment, read_bytes};
pub use reader::{MAX_LIST_LEN, MAX_STRING_LEN, MapReader, suggest};
pub(crate) use yaml::resolve_plain;

/// The text of one input file, kept for error rendering.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    display_name: String,
    text: String,
    lines: lines::LineIndex,
}

impl SourceFile {
    pub fn new(path: PathBuf, display_name: String, text: String) -> SourceFile {
        let lines = lines::LineIndex::new(&text);
        SourceFile {
            path,
            display_name,
            text,
            lines,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        self.lines.line_column(&self.text, offset)
    }

    /// Byte offset of a 1-based line and column (in characters); clamps to the text.
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        self.lines.offset_of(&self.text, line, column)
    }
}

impl crate::error::SourceText for SourceFile {
    fn display_name(&self) -> &str {
        SourceFile::display_name(self)
    }

    fn text(&self) -> &str {
        SourceFile::text(self)
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        SourceFile::line_column(self, offset)
    }
}

/// Largest profile file we read, in bytes: a real profile is one or two KiB.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Largest fleet manifest or lock file. A `[[device]]` entry takes about 100 bytes (an
/// inline one about 50) and a lock entry about 500, so this holds some 10,000–20,000
/// devices or 2,000 Image Builders; parsing a file of this size in its worst shape stays
/// under a second and 100 MB (`examples/bench_parse.rs`).
pub const MAX_MANIFEST_SIZE: u64 = 1024 * 1024;

/// Deepest nesting of sequences and mappings we accept; real files need four or five.
pub(crate) const MAX_DEPTH: usize = 64;

impl SourceFile {
    /// Read a file the user named for parsing: a regular file of at most [`MAX_FILE_SIZE`]
    /// bytes of UTF-8, wherever it is.
    pub fn read(path: &Path, display_name: String) -> Result<Arc<SourceFile>, Problem> {
        SourceFile::read_limited(path, display_name, MAX_FILE_SIZE, Containment::Anywhere)
    }

    /// [`SourceFile::read`] with another size limit and, for files of a fleet repository,
    /// the directory they must resolve inside.
    pub fn read_limited(
        path: &Path,
        display_name: String,
        max_size: u64,
        containment: Containment<'_>,
    ) -> Result<Arc<SourceFile>, Problem> {
        let bytes = read_bytes(path, &display_name, max_size, containment)?;
        let text = String::from_utf8(bytes).map_err(|error| {
            Problem::validation(format!(
                "`{display_name}` is not valid UTF-8 (invalid byte at offset {})",
                error.utf8_error().valid_up_to()
            ))
            .at(Location::file(display_name.clone()))
        })?;
        Ok(Arc::new(SourceFile::new(
            path.to_path_buf(),
            display_name,
            text,
        )))
    }

    /// The text of a byte span (empty when the span is out of range).
    pub fn slice(&self, span: &Range<usize>) -> &str {
        self.text.get(span.clone()).unwrap_or("")
    }
}

/// The syntax of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Yaml,
    Json,
    Toml,
}

impl Format {
    /// The format implied by a file name's extension (`.yaml`, `.yml`, `.json`, `.toml`).
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }

    /// The canonical file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Toml => "toml",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
            Format::Toml => "TOML",
        })
    }
}

/// A value with the byte span (into its [`SourceFile`]'s text) it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Range<usize>,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Range<usize>) -> Spanned<T> {
        Spanned { value, span }
    }
}

/// A format-independent document tree. Mappings keep document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Integer(i64),
    Float(f64),
    String(String),
    Sequence(Vec<Spanned<Node>>),
    Mapping(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// What the value is, with an article, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Integer(_) => "an integer",
            Node::Float(_) => "a float",
            Node::String(_) => "a string",
            Node::Sequence(_) => "a list",
            Node::Mapping(_) => "a mapping",
        }
    }

    /// The value of `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Spanned<Node>> {
        match self {
            Node::Mapping(entries) => entries
                .iter()
                .find(|(name, _)| name.value == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }
}

impl Spanned<Node> {
    /// The node at a field path such as `files[0].source` or `device[2].flash.path`.
    pub fn lookup(&self, path: &str) -> Option<&Spanned<Node>> {
        let mut node = self;
        for segment in path.split('.').filter(|segment| !segment.is_empty()) {
            let (name, indexes) = match segment.find('[') {
                Some(position) => segment.split_at(position),
                None => (segment, ""),
            };
            if !name.is_empty() {
                node = node.value.get(name)?;
            }
            for index in indexes.split('[').filter(|index| !index.is_empty()) {
                let index: usize = index.strip_suffix(']')?.parse().ok()?;
                match &node.value {
                    Node::Sequence(items) => node = items.get(index)?,
                    _ => return None,
                }
            }
        }
        Some(node)
    }
}

/// Parse a whole file into a spanned tree. A syntax error becomes one [`Problem`] with the
/// exact line and column.
pub fn parse(source: &Arc<SourceFile>, format: Format) -> Result<Spanned<Node>, Problem> {
    match format {
        Format::Yaml => yaml::parse(source),
        Format::Json => json::parse(source),
        Format::Toml => toml_document::parse(source),
    }
}

/// A syntax error at a byte offset.
pub(crate) fn syntax_error(
    source: &Arc<SourceFile>,
    format: Format,
    span: Range<usize>,
    message: impl fmt::Display,
) -> Problem {
    Problem::validation(format!("invalid {format}: {message}"))
        .at(Location::at(source, span))
        .with_label("here")
}

/// The problem for a key that appears twice in one mapping.
pub(crate) fn duplicate_key(
    source: &Arc<SourceFile>,
    key: &str,
    first: &Range<usize>,
    second: Range<usize>,
) -> Problem {
    let (line, column) = source.line_column(first.start);
    Problem::validation(format!(
        "duplicate key `{key}` (first defined at line {line}, column {column})"
    ))
    .at(Location::at(source, second))
    .with_label("defined again here")
    .with_help(format!("remove one of the two `{key}` entries"))
}

/// The entries of one mapping being parsed, with a hash of its keys so that a duplicate is
/// found in constant time (a linear scan made a mapping of 100,000 keys quadratic).
#[derive(Default)]
pub(crate) struct MappingEntries {
    entries: Vec<(Spanned<String>, Spanned<Node>)>,
    /// Key → index in `entries`.
    index: HashMap<String, usize>,
}

impl MappingEntries {
    /// Append an entry, refusing a key that is already present.
    pub(crate) fn push(
        &mut self,
        source: &Arc<SourceFile>,
        key: Spanned<String>,
        value: Spanned<Node>,
    ) -> Result<(), Problem> {
        if let Some(&first) = self.index.get(&key.value) {
            let first = &self.entries[first].0.span;
            return Err(duplicate_key(source, &key.value, first, key.span));
        }
        self.index.insert(key.value.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    pub(crate) fn last_end(&self) -> Option<usize> {
        self.entries.last().map(|(_, value)| value.span.end)
    }

    pub(crate) fn into_node(self) -> Node {
        Node::Mapping(self.entries)
    }
}
