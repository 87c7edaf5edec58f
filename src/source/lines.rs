//! Byte offset ↔ (line, column) for one file in O(log n) per lookup: the start of every
//! line and the number of characters before every [`BLOCK`]-byte boundary are computed once.
//! Counting characters from the line start on each lookup made a one-line, megabyte-long
//! file with many values (or many problems) quadratic.

/// Bytes between two character-count checkpoints: a lookup scans at most this many bytes.
const BLOCK: usize = 64;

/// The lookup tables of one text.
#[derive(Debug)]
pub(super) struct LineIndex {
    /// Byte offset of the start of every line.
    line_starts: Vec<usize>,
    /// `chars_before[k]`: characters that start before byte `k * BLOCK`.
    chars_before: Vec<usize>,
}

/// True for the first byte of a UTF-8 sequence (not a continuation byte).
fn starts_char(byte: u8) -> bool {
    byte & 0xC0 != 0x80
}

impl LineIndex {
    pub(super) fn new(text: &str) -> LineIndex {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        line_starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, byte)| **byte == b'\n')
                .map(|(index, _)| index + 1),
        );
        let mut chars_before = Vec::with_capacity(bytes.len() / BLOCK + 2);
        let mut count = 0;
        for block in bytes.chunks(BLOCK) {
            chars_before.push(count);
            count += block.iter().filter(|byte| starts_char(**byte)).count();
        }
        chars_before.push(count);
        LineIndex {
            line_starts,
            chars_before,
        }
    }

    /// Characters that start before byte `offset` (clamped to the text).
    fn char_index(&self, text: &str, offset: usize) -> usize {
        let offset = offset.min(text.len());
        let block = offset / BLOCK;
        let counted = self.chars_before.get(block).copied().unwrap_or(0);
        counted
            + text.as_bytes()[block * BLOCK..offset]
                .iter()
                .filter(|byte| starts_char(**byte))
                .count()
    }

    /// The byte offset where character number `char_index` starts; the text length past the end.
    fn byte_offset(&self, text: &str, char_index: usize) -> usize {
        let block = self
            .chars_before
            .partition_point(|&count| count <= char_index)
            .saturating_sub(1);
        let bytes = text.as_bytes();
        let mut count = self.chars_before.get(block).copied().unwrap_or(0);
        for (position, byte) in bytes.iter().enumerate().skip(block * BLOCK) {
            if starts_char(*byte) {
                if count == char_index {
                    return position;
                }
                count += 1;
            }
        }
        bytes.len()
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn line_column(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line_index = match self.line_starts.binary_search(&offset) {
            Ok(index) => index,
            Err(index) => index.saturating_sub(1),
        };
        let line_start = self.line_starts.get(line_index).copied().unwrap_or(0);
        let column = self.char_index(text, offset) - self.char_index(text, line_start);
        (line_index + 1, column + 1)
    }

    /// Byte offset of a 1-based line and column (in characters); clamps to the text.
    pub(super) fn offset_of(&self, text: &str, line: usize, column: usize) -> usize {
        let Some(&line_start) = self.line_starts.get(line.saturating_sub(1)) else {
            return text.len();
        };
        let first = self.char_index(text, line_start);
        self.byte_offset(text, first + column.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious (quadratic) definitions, to compare against.
    fn slow_line_column(text: &str, offset: usize) -> (usize, usize) {
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        (line, text[line_start..offset].chars().count() + 1)
    }

    fn slow_offset_of(text: &str, line: usize, column: usize) -> usize {
        let mut start = 0;
        for _ in 1..line {
            match text[start..].find('\n') {
                Some(index) => start += index + 1,
                None => return text.len(),
            }
        }
        text[start..]
            .char_indices()
            .nth(column - 1)
            .map_or(text.len(), |(index, _)| start + index)
    }

    #[test]
    fn agrees_with_the_obvious_definitions_on_multibyte_text() {
        let line = "aé✓😀b ".repeat(30);
        let text = format!("{line}\n\nx{line}\r\n{line}");
        let index = LineIndex::new(&text);
        for (offset, _) in text.char_indices().chain([(text.len(), ' ')]) {
            assert_eq!(
                index.line_column(&text, offset),
                slow_line_column(&text, offset),
                "offset {offset}"
            );
        }
        for line in 1..=5 {
            for column in 1..200 {
                assert_eq!(
                    index.offset_of(&text, line, column),
                    slow_offset_of(&text, line, column),
                    "line {line} column {column}"
                );
            }
        }
    }

    #[test]
    fn empty_text() {
        let index = LineIndex::new("");
        assert_eq!(index.line_column("", 0), (1, 1));
        assert_eq!(index.line_column("", 5), (1, 1));
        assert_eq!(index.offset_of("", 1, 1), 0);
        assert_eq!(index.offset_of("", 3, 1), 0);
    }
}
