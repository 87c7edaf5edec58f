//! Source files we read (manifest, profiles, lock) and a format-independent tree of
//! spanned values parsed from YAML, JSON or TOML, so every later error can point at the
//! exact line and column. This module does no validation of meaning.

use std::path::{Path, PathBuf};

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
