//! YAML → [`Node`] tree, built from `saphyr-parser` events so every value keeps its exact
//! position. Plain scalars resolve with the YAML 1.2 core schema; anchors, aliases, tags
//! other than `!!str` and multi-document files are refused rather than guessed at.

use std::ops::Range;
use std::sync::Arc;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, Tag};

use super::{Format, MAX_DEPTH, MappingEntries, Node, SourceFile, Spanned, syntax_error};
use crate::error::{Location, Problem};

pub(super) fn parse(source: &Arc<SourceFile>) -> Result<Spanned<Node>, Problem> {
    let mut builder = Builder {
        source,
        stack: Vec::new(),
        root: None,
    };
    for event in Parser::new_from_str(source.text()) {
        let (event, span) = event.map_err(|error| scan_error(source, &error))?;
        builder.event(event, span)?;
    }
    Ok(builder
        .root
        .unwrap_or_else(|| Spanned::new(Node::Null, 0..0)))
}

enum Frame {
    Sequence {
        start: usize,
        items: Vec<Spanned<Node>>,
    },
    Mapping {
        start: usize,
        entries: MappingEntries,
        key: Option<Spanned<String>>,
    },
}

struct Builder<'a> {
    source: &'a Arc<SourceFile>,
    stack: Vec<Frame>,
    root: Option<Spanned<Node>>,
}

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Problem> {
        let range = self.range(span);
        let sequence = matches!(event, Event::SequenceStart(..));
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(_) if self.root.is_some() => Err(self.error(
                range,
                "a file holds one YAML document; remove the second `---` and what follows",
            )),
            Event::DocumentStart(_) => Ok(()),
            Event::Alias(_) => Err(self.unsupported_anchor(range)),
            Event::Scalar(text, style, anchor, tag) => {
                self.check_anchor(anchor, &range)?;
                let force_string = self.check_tag(tag.as_deref(), &range)?;
                self.scalar(&text, style, force_string, range)
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                self.check_anchor(anchor, &range)?;
                if self.check_tag(tag.as_deref(), &range)? {
                    return Err(self.error(range, "`!!str` can only tag a scalar"));
                }
                self.open(sequence, range)
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(range),
        }
    }

    fn open(&mut self, sequence: bool, range: Range<usize>) -> Result<(), Problem> {
        if let Some(Frame::Mapping { key: None, .. }) = self.stack.last() {
            return Err(self.error(range, "mapping keys must be plain strings"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(range, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let start = range.start;
        self.stack.push(if sequence {
            Frame::Sequence {
                start,
                items: Vec::new(),
            }
        } else {
            Frame::Mapping {
                start,
                entries: MappingEntries::default(),
                key: None,
            }
        });
        Ok(())
    }

    fn close(&mut self, range: Range<usize>) -> Result<(), Problem> {
        let Some(frame) = self.stack.pop() else {
            return Err(self.error(range, "unbalanced end of collection"));
        };
        let (start, last_end, node) = match frame {
            Frame::Sequence { start, items } => {
                let last_end = items.last().map(|item| item.span.end);
                (start, last_end, Node::Sequence(items))
            }
            Frame::Mapping { start, entries, .. } => {
                let last_end = entries.last_end();
                (start, last_end, entries.into_node())
            }
        };
        // Block collections end with an empty span at the next token, possibly lines later;
        // flow collections end with their closing bracket.
        let end = if range.is_empty() {
            last_end.unwrap_or(range.start).max(start)
        } else {
            range.end
        };
        self.add(Spanned::new(node, start..end))
    }

    fn scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        force_string: bool,
        range: Range<usize>,
    ) -> Result<(), Problem> {
        if let Some(Frame::Mapping {
            key: key @ None, ..
        }) = self.stack.last_mut()
        {
            *key = Some(Spanned::new(text.to_string(), range));
            return Ok(());
        }
        let node = if style == ScalarStyle::Plain && !force_string {
            resolve_plain(text)
        } else {
            Node::String(text.to_string())
        };
        self.add(Spanned::new(node, range))
    }

    fn add(&mut self, node: Spanned<Node>) -> Result<(), Problem> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Sequence { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Mapping { entries, key, .. }) => match key.take() {
                Some(key) => entries.push(self.source, key, node),
                None => Err(self.error(node.span, "mapping keys must be plain strings")),
            },
        }
    }

    fn check_anchor(&self, anchor: usize, range: &Range<usize>) -> Result<(), Problem> {
        if anchor == 0 {
            Ok(())
        } else {
            Err(self.unsupported_anchor(range.clone()))
        }
    }

    /// `Ok(true)` for `!!str`, `Ok(false)` for no tag; any other tag is refused.
    fn check_tag(&self, tag: Option<&Tag>, range: &Range<usize>) -> Result<bool, Problem> {
        match tag {
            None => Ok(false),
            Some(tag) if tag.is_yaml_core_schema() && tag.suffix == "str" => Ok(true),
            Some(tag) => Err(self
                .error(range.clone(), format!("YAML tag `{tag}` is not supported"))
                .with_help("remove the tag; only `!!str` is understood")),
        }
    }

    fn unsupported_anchor(&self, range: Range<usize>) -> Problem {
        self.error(range, "YAML anchors and aliases are not supported")
            .with_help("write the value out in full")
    }

    fn error(&self, range: Range<usize>, message: impl std::fmt::Display) -> Problem {
        syntax_error(self.source, Format::Yaml, range, message)
    }

    fn range(&self, span: Span) -> Range<usize> {
        offset(self.source, span.start)..offset(self.source, span.end)
    }
}

/// saphyr counts characters; our spans are byte offsets.
fn offset(source: &SourceFile, marker: Marker) -> usize {
    source.offset_of(marker.line(), marker.col() + 1)
}

fn scan_error(source: &Arc<SourceFile>, error: &ScanError) -> Problem {
    let start = offset(source, *error.marker());
    Problem::validation(format!("invalid YAML: {}", error.info()))
        .at(Location::at(source, start..start))
        .with_label("here")
}

/// Resolve a plain scalar with the YAML 1.2 core schema.
pub(crate) fn resolve_plain(text: &str) -> Node {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Null,
        "true" | "True" | "TRUE" => return Node::Bool(true),
        "false" | "False" | "FALSE" => return Node::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return Node::Float(f64::NAN),
        _ => {}
    }
    if let Some(node) = resolve_integer(text) {
        return node;
    }
    let unsigned = text.trim_start_matches(['+', '-']);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") && text.len() - unsigned.len() <= 1 {
        let infinity = if text.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        return Node::Float(infinity);
    }
    if let Some(value) = is_core_float(text)
        .then(|| text.parse::<f64>().ok())
        .flatten()
    {
        return Node::Float(value);
    }
    Node::String(text.to_string())
}

fn resolve_integer(text: &str) -> Option<Node> {
    let (digits, radix) = if let Some(octal) = text.strip_prefix("0o") {
        (octal, 8)
    } else if let Some(hex) = text.strip_prefix("0x") {
        (hex, 16)
    } else {
        let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
        if unsigned.is_empty() || !unsigned.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        return Some(match text.parse::<i64>() {
            Ok(value) => Node::Integer(value),
            // Too large for i64: keep the magnitude as a float, like JSON readers do.
            Err(_) => Node::Float(text.parse::<f64>().ok()?),
        });
    };
    if digits.is_empty() || !digits.chars().all(|digit| digit.is_digit(radix)) {
        return None;
    }
    Some(match i64::from_str_radix(digits, radix) {
        Ok(value) => Node::Integer(value),
        Err(_) => Node::String(text.to_string()),
    })
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(text: &str) -> bool {
    let text = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(position) => (&text[..position], Some(&text[position + 1..])),
        None => (text, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let mantissa_ok = match fraction {
        Some(fraction) if whole.is_empty() => !fraction.is_empty() && digits(fraction),
        Some(fraction) => digits(whole) && digits(fraction),
        None => !whole.is_empty() && digits(whole),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(exponent) => {
            let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            !exponent.is_empty() && digits(exponent)
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse;

    fn source(text: &str) -> Arc<SourceFile> {
        Arc::new(SourceFile::new(
            "test.yaml".into(),
            "test.yaml".into(),
            text.to_string(),
        ))
    }

    fn tree(text: &str) -> Spanned<Node> {
        match parse(&source(text), Format::Yaml) {
            Ok(tree) => tree,
            Err(problem) => panic!("unexpected problem: {problem}"),
        }
    }

    fn problem(text: &str) -> String {
        match parse(&source(text), Format::Yaml) {
            Ok(tree) => panic!("expected a problem, got {tree:?}"),
            Err(problem) => problem.to_string(),
        }
    }

    fn slice<'a>(text: &'a str, node: &Spanned<Node>) -> &'a str {
        &text[node.span.clone()]
    }

    #[test]
    fn core_schema_resolution() {
        assert_eq!(resolve_plain("~"), Node::Null);
        assert_eq!(resolve_plain("True"), Node::Bool(true));
        assert_eq!(resolve_plain("yes"), Node::String("yes".into()));
        assert_eq!(resolve_plain("0644"), Node::Integer(644));
        assert_eq!(resolve_plain("0o644"), Node::Integer(0o644));
        assert_eq!(resolve_plain("0x1F"), Node::Integer(31));
        assert_eq!(resolve_plain("-12"), Node::Integer(-12));
        assert_eq!(resolve_plain("1.5e3"), Node::Float(1500.0));
        assert_eq!(resolve_plain(".5"), Node::Float(0.5));
        assert_eq!(resolve_plain("-.inf"), Node::Float(f64::NEG_INFINITY));
        assert_eq!(resolve_plain("23.05.4"), Node::String("23.05.4".into()));
        assert_eq!(resolve_plain("1e"), Node::String("1e".into()));
        assert_eq!(resolve_plain("0o9"), Node::String("0o9".into()));
    }

    #[test]
    fn spans_point_at_values_and_keys() {
        let text = "name: \"Living room\"\nmode: 0644\nlist:\n  - a\n  - 'b c'\nflow: {x: 1}\n";
        let root = tree(text);
        let Node::Mapping(entries) = &root.value else {
            panic!("not a mapping")
        };
        assert_eq!(entries[0].0.value, "name");
        assert_eq!(&text[entries[0].0.span.clone()], "name");
        assert_eq!(slice(text, &entries[0].1), "\"Living room\"");
        assert_eq!(entries[1].1.value, Node::Integer(644));
        assert_eq!(slice(text, &entries[1].1), "0644");
        let list = root.lookup("list[1]").map(|node| slice(text, node));
        assert_eq!(list, Some("'b c'"));
        let list = root.lookup("list").map(|node| slice(text, node));
        assert_eq!(list, Some("- a\n  - 'b c'"));
        assert_eq!(
            root.lookup("flow").map(|node| slice(text, node)),
            Some("{x: 1}")
        );
        assert_eq!(
            root.lookup("flow.x").map(|n| n.value.clone()),
            Some(Node::Integer(1))
        );
    }

    #[test]
    fn multibyte_text_keeps_byte_spans() {
        let text = "name: \"Küche ✓\"\nnext: x\n";
        let root = tree(text);
        assert_eq!(root.lookup("next").map(|node| slice(text, node)), Some("x"));
    }

    #[test]
    fn syntax_error_has_exact_position() {
        assert_eq!(
            problem("a: 1\nb: [1, 2\nc: 3\n"),
            "test.yaml:3:2: invalid YAML: illegal placement of ':' indicator"
        );
        assert_eq!(
            problem("a: 1\n  b: 2\n"),
            "test.yaml:2:4: invalid YAML: mapping values are not allowed in this context"
        );
    }

    #[test]
    fn duplicate_keys_name_both_places() {
        assert_eq!(
            problem("a: 1\nb: 2\na: 3\n"),
            "test.yaml:3:1: duplicate key `a` (first defined at line 1, column 1)"
        );
    }

    #[test]
    fn refuses_anchors_tags_and_second_documents() {
        assert_eq!(
            problem("a: &x 1\nb: *x\n"),
            "test.yaml:1:4: invalid YAML: YAML anchors and aliases are not supported"
        );
        assert_eq!(
            problem("a: !custom 1\n"),
            "test.yaml:1:4: invalid YAML: YAML tag `!custom` is not supported"
        );
        assert_eq!(
            problem("a: 1\n---\nb: 2\n"),
            "test.yaml:2:1: invalid YAML: a file holds one YAML document; remove the second `---` and what follows"
        );
        assert_eq!(
            problem("[a]: 1\n"),
            "test.yaml:1:1: invalid YAML: mapping keys must be plain strings"
        );
    }

    #[test]
    fn str_tag_keeps_text() {
        let root = tree("mode: !!str 0644\n");
        assert_eq!(
            root.lookup("mode").map(|node| node.value.clone()),
            Some(Node::String("0644".into()))
        );
    }

    #[test]
    fn crlf_and_bom_keep_positions() {
        let text = "\u{feff}a: 1\r\nb: [x,\r\n  y]\r\nc: z\r\n";
        let root = tree(text);
        assert_eq!(root.lookup("c").map(|node| slice(text, node)), Some("z"));
        assert_eq!(root.lookup("b[1]").map(|node| slice(text, node)), Some("y"));
        assert_eq!(
            problem("a: 1\r\nb: 2\r\na: 3\r\n"),
            "test.yaml:3:1: duplicate key `a` (first defined at line 1, column 1)"
        );
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(tree("# nothing\n").value, Node::Null);
    }
}
