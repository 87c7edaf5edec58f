//! Source files we read (manifest, profiles, lock) and a format-independent tree of
//! spanned values parsed from YAML, JSON or TOML, so every later error can point at the
//! exact line and column. This module does no validation of meaning.

mod json;
mod reader;
mod toml_document;
mod yaml;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Location, Problem};

pub use reader::{MAX_LIST_LEN, MAX_STRING_LEN, MapReader, suggest};
pub(crate) use yaml::resolve_plain;

/// The text of one input file, kept for error rendering.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    display_name: String,
    text: String,
    /// Byte offset of the start of every line.
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, display_name: String, text: String) -> SourceFile {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(index, _)| index + 1));
        SourceFile {
            path,
            display_name,
            text,
            line_starts,
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
        let offset = offset.min(self.text.len());
        let line_index = match self.line_starts.binary_search(&offset) {
            Ok(index) => index,
            Err(index) => index - 1,
        };
        let line_start = self.line_starts[line_index];
        let column = self
            .text
            .get(line_start..offset)
            .map(|prefix| prefix.chars().count())
            .unwrap_or(offset - line_start);
        (line_index + 1, column + 1)
    }

    /// Byte offset of a 1-based line and column (in characters); clamps to the text.
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let Some(&line_start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        self.text[line_start..]
            .char_indices()
            .nth(column.saturating_sub(1))
            .map(|(index, _)| line_start + index)
            .unwrap_or(self.text.len())
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

/// Largest input file we read (manifest, profile, lock), in bytes.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Largest fleet manifest or lock file: they grow with the fleet (thousands of devices).
pub const MAX_MANIFEST_SIZE: u64 = 64 * 1024 * 1024;

/// Deepest nesting of sequences and mappings we accept; real files need four or five.
pub(crate) const MAX_DEPTH: usize = 64;

impl SourceFile {
    /// Read a file for parsing, refusing anything larger than [`MAX_FILE_SIZE`] or not UTF-8.
    pub fn read(path: &Path, display_name: String) -> Result<Arc<SourceFile>, Problem> {
        SourceFile::read_limited(path, display_name, MAX_FILE_SIZE)
    }

    /// [`SourceFile::read`] with another size limit (for the manifest and the lock file).
    pub fn read_limited(
        path: &Path,
        display_name: String,
        max_size: u64,
    ) -> Result<Arc<SourceFile>, Problem> {
        let unreadable = |error: std::io::Error| {
            Problem::validation(format!("cannot read `{display_name}`: {error}"))
                .at(Location::file(display_name.clone()))
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        if metadata.len() > max_size {
            return Err(Problem::validation(format!(
                "`{display_name}` is {} bytes, more than the limit of {max_size} bytes",
                metadata.len()
            ))
            .at(Location::file(display_name.clone())));
        }
        let bytes = std::fs::read(path).map_err(unreadable)?;
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

/// Append a mapping entry, refusing a key that is already present.
pub(crate) fn push_entry(
    source: &Arc<SourceFile>,
    entries: &mut Vec<(Spanned<String>, Spanned<Node>)>,
    key: Spanned<String>,
    value: Spanned<Node>,
) -> Result<(), Problem> {
    if let Some((first, _)) = entries.iter().find(|(name, _)| name.value == key.value) {
        return Err(duplicate_key(source, &key.value, &first.span, key.span));
    }
    entries.push((key, value));
    Ok(())
}
