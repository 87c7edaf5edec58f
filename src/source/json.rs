//! JSON (RFC 8259) → [`Node`] tree. A small parser of our own, because serde_json reports
//! error positions but not the span of every value. Strict: no comments, no trailing commas.

use std::ops::Range;
use std::sync::Arc;

use super::{Format, MAX_DEPTH, MappingEntries, Node, SourceFile, Spanned, syntax_error};
use crate::error::Problem;

pub(super) fn parse(source: &Arc<SourceFile>) -> Result<Spanned<Node>, Problem> {
    let mut parser = JsonParser {
        source,
        bytes: source.text().as_bytes(),
        position: 0,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.position < parser.bytes.len() {
        return Err(parser.error_here("trailing characters after the JSON value"));
    }
    Ok(value)
}

struct JsonParser<'a> {
    source: &'a Arc<SourceFile>,
    bytes: &'a [u8],
    position: usize,
}

impl JsonParser<'_> {
    fn value(&mut self, depth: usize) -> Result<Spanned<Node>, Problem> {
        let start = self.position;
        let node = match self.peek() {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Node::String(self.string()?),
            Some(b't') => self.literal("true", Node::Bool(true))?,
            Some(b'f') => self.literal("false", Node::Bool(false))?,
            Some(b'n') => self.literal("null", Node::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return Err(self.error_here("expected a value")),
            None => return Err(self.error_here("unexpected end of input, expected a value")),
        };
        Ok(Spanned::new(node, start..self.position))
    }

    fn object(&mut self, depth: usize) -> Result<Node, Problem> {
        self.enter(depth)?;
        let mut entries = MappingEntries::default();
        if self.after_open(b'}') {
            return Ok(entries.into_node());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error_here("expected a string key"));
            }
            let start = self.position;
            let key = Spanned::new(self.string()?, start..self.position);
            self.skip_whitespace();
            self.expect(b':', "expected `:` after the key")?;
            self.skip_whitespace();
            let value = self.value(depth + 1)?;
            entries.push(self.source, key, value)?;
            if self.after_item(b'}', "expected `,` or `}`")? {
                return Ok(entries.into_node());
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Node, Problem> {
        self.enter(depth)?;
        let mut items = Vec::new();
        if self.after_open(b']') {
            return Ok(Node::Sequence(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            if self.after_item(b']', "expected `,` or `]`")? {
                return Ok(Node::Sequence(items));
            }
        }
    }

    fn enter(&mut self, depth: usize) -> Result<(), Problem> {
        if depth >= MAX_DEPTH {
            return Err(self.error_here(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.position += 1;
        self.skip_whitespace();
        Ok(())
    }

    /// After `{` or `[`: consume an immediate `close` (empty collection).
    fn after_open(&mut self, close: u8) -> bool {
        if self.peek() == Some(close) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    /// After an item: `Ok(true)` at the closing bracket, `Ok(false)` after a comma.
    fn after_item(&mut self, close: u8, message: &str) -> Result<bool, Problem> {
        self.skip_whitespace();
        match self.peek() {
            Some(b',') => {
                self.position += 1;
                self.skip_whitespace();
                if matches!(self.peek(), Some(b'}' | b']')) {
                    return Err(self.error_here("trailing comma"));
                }
                Ok(false)
            }
            Some(byte) if byte == close => {
                self.position += 1;
                Ok(true)
            }
            _ => Err(self.error_here(message)),
        }
    }

    fn literal(&mut self, word: &str, node: Node) -> Result<Node, Problem> {
        if self.bytes[self.position..].starts_with(word.as_bytes()) {
            self.position += word.len();
            Ok(node)
        } else {
            Err(self.error_here("expected a value"))
        }
    }

    fn number(&mut self) -> Result<Node, Problem> {
        let start = self.position;
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.position += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error_here("expected a digit")),
        }
        let mut float = false;
        if self.eat(b'.') {
            float = true;
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            float = true;
            self.position += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.required_digits()?;
        }
        let text = self.source.slice(&(start..self.position));
        let parsed_integer = if float {
            None
        } else {
            text.parse::<i64>().ok()
        };
        match parsed_integer {
            Some(integer) => Ok(Node::Integer(integer)),
            None => text
                .parse::<f64>()
                .map(Node::Float)
                .map_err(|_| self.error_at(start..self.position, "invalid number")),
        }
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.position += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), Problem> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.error_here("expected a digit"));
        }
        self.digits();
        Ok(())
    }

    fn string(&mut self) -> Result<String, Problem> {
        self.position += 1;
        let mut text = String::new();
        loop {
            let run_start = self.position;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.position += 1;
            }
            text.push_str(self.source.slice(&(run_start..self.position)));
            match self.peek() {
                Some(b'"') => {
                    self.position += 1;
                    return Ok(text);
                }
                Some(b'\\') => text.push(self.escape()?),
                Some(_) => return Err(self.error_here("control character in string")),
                None => return Err(self.error_here("unterminated string")),
            }
        }
    }

    fn escape(&mut self) -> Result<char, Problem> {
        let start = self.position;
        self.position += 1;
        let Some(byte) = self.peek() else {
            return Err(self.error_here("unterminated string"));
        };
        self.position += 1;
        let simple = match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(start),
            _ => return Err(self.error_at(start..self.position, "invalid escape")),
        };
        Ok(simple)
    }

    fn unicode_escape(&mut self, start: usize) -> Result<char, Problem> {
        let high = self.hex4(start)?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.bytes[self.position..].starts_with(b"\\u") {
                return Err(self.error_at(start..self.position, "unpaired surrogate"));
            }
            self.position += 2;
            let low = self.hex4(start)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error_at(start..self.position, "unpaired surrogate"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error_at(start..self.position, "invalid escape"))
    }

    fn hex4(&mut self, start: usize) -> Result<u32, Problem> {
        let digits = self.source.slice(&(self.position..self.position + 4));
        let value = (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(digits, 16).ok())
            .flatten()
            .ok_or_else(|| self.error_at(start..self.position, "invalid `\\u` escape"))?;
        self.position += 4;
        Ok(value)
    }

    fn expect(&mut self, byte: u8, message: &str) -> Result<(), Problem> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.error_here(message))
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let matched = self.peek() == Some(byte);
        if matched {
            self.position += 1;
        }
        matched
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.position += 1;
        }
    }

    fn error_here(&self, message: impl std::fmt::Display) -> Problem {
        let end = (self.position + 1).min(self.bytes.len()).max(self.position);
        self.error_at(self.position..end, message)
    }

    fn error_at(&self, span: Range<usize>, message: impl std::fmt::Display) -> Problem {
        syntax_error(self.source, Format::Json, span, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse;

    fn source(text: &str) -> Arc<SourceFile> {
        Arc::new(SourceFile::new(
            "p.json".into(),
            "p.json".into(),
            text.to_string(),
        ))
    }

    fn problem(text: &str) -> String {
        match parse(&source(text), Format::Json) {
            Ok(tree) => panic!("expected a problem, got {tree:?}"),
            Err(problem) => problem.to_string(),
        }
    }

    #[test]
    fn values_and_spans() {
        let text = "{\n  \"a\": [1, -2.5e1, true, null],\n  \"b\": \"x\\u00e9\\ud83d\\ude00\"\n}";
        let root = match parse(&source(text), Format::Json) {
            Ok(root) => root,
            Err(problem) => panic!("{problem}"),
        };
        assert_eq!(root.span, 0..text.len());
        let a = root.lookup("a").map(|node| &text[node.span.clone()]);
        assert_eq!(a, Some("[1, -2.5e1, true, null]"));
        assert_eq!(
            root.lookup("a[1]").map(|n| n.value.clone()),
            Some(Node::Float(-25.0))
        );
        assert_eq!(
            root.lookup("a[0]").map(|n| n.value.clone()),
            Some(Node::Integer(1))
        );
        assert_eq!(
            root.lookup("b").map(|n| n.value.clone()),
            Some(Node::String("xé😀".into()))
        );
        let Node::Mapping(entries) = &root.value else {
            panic!("not a mapping")
        };
        assert_eq!(&text[entries[1].0.span.clone()], "\"b\"");
    }

    #[test]
    fn errors_have_exact_positions() {
        assert_eq!(
            problem("{\n  \"a\": 1\n  \"b\": 2\n}"),
            "p.json:3:3: invalid JSON: expected `,` or `}`"
        );
        assert_eq!(
            problem("{\"a\": [1, 2,]}"),
            "p.json:1:13: invalid JSON: trailing comma"
        );
        assert_eq!(
            problem("{\"a\": tru}"),
            "p.json:1:7: invalid JSON: expected a value"
        );
        assert_eq!(
            problem("{\"a\": \"x"),
            "p.json:1:9: invalid JSON: unterminated string"
        );
        assert_eq!(
            problem("[1] x"),
            "p.json:1:5: invalid JSON: trailing characters after the JSON value"
        );
        assert_eq!(
            problem("[01]"),
            "p.json:1:3: invalid JSON: expected `,` or `]`"
        );
        assert_eq!(
            problem(""),
            "p.json:1:1: invalid JSON: unexpected end of input, expected a value"
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert_eq!(
            problem("{\"a\": 1,\n \"a\": 2}"),
            "p.json:2:2: duplicate key `a` (first defined at line 1, column 2)"
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let text = "[".repeat(10_000);
        assert!(problem(&text).contains("nesting deeper than 64 levels"));
    }
}
