//! TOML → [`Node`] tree through `toml`'s spanned `DeTable`. Datetimes become strings;
//! table entries are put back in document order.

use std::ops::Range;
use std::sync::Arc;

use toml::Spanned as TomlSpanned;
use toml::de::{DeTable, DeValue};

use super::{Format, MAX_DEPTH, Node, SourceFile, Spanned, syntax_error};
use crate::error::Problem;

pub(super) fn parse(source: &Arc<SourceFile>) -> Result<Spanned<Node>, Problem> {
    let document = DeTable::parse(source.text()).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim_end().to_string();
        syntax_error(source, Format::Toml, span, message)
    })?;
    let mut converter = Converter { source };
    let root = converter.table(document.get_ref(), 0)?;
    Ok(Spanned::new(root, 0..source.text().len()))
}

struct Converter<'a> {
    source: &'a Arc<SourceFile>,
}

impl Converter<'_> {
    fn value(
        &mut self,
        value: &TomlSpanned<DeValue<'_>>,
        depth: usize,
    ) -> Result<Spanned<Node>, Problem> {
        let span = value.span();
        if depth >= MAX_DEPTH {
            return Err(syntax_error(
                self.source,
                Format::Toml,
                span,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let node = match value.get_ref() {
            DeValue::String(text) => Node::String(text.to_string()),
            DeValue::Integer(integer) => {
                match i64::from_str_radix(integer.as_str(), integer.radix()) {
                    Ok(integer) => Node::Integer(integer),
                    Err(_) => return Err(self.error(span, "integer out of range")),
                }
            }
            DeValue::Float(float) => match float.as_str().parse::<f64>() {
                Ok(float) => Node::Float(float),
                Err(_) => Node::Float(special_float(float.as_str())),
            },
            DeValue::Boolean(boolean) => Node::Bool(*boolean),
            DeValue::Datetime(datetime) => Node::String(datetime.to_string()),
            DeValue::Array(array) => {
                let items = array
                    .iter()
                    .map(|item| self.value(item, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Node::Sequence(items)
            }
            DeValue::Table(table) => self.table(table, depth + 1)?,
        };
        let span = self.value_span(&node, span);
        Ok(Spanned::new(node, span))
    }

    fn table(&mut self, table: &DeTable<'_>, depth: usize) -> Result<Node, Problem> {
        let mut entries = Vec::with_capacity(table.len());
        for (key, value) in table.iter() {
            let key = Spanned::new(key.get_ref().to_string(), key.span());
            entries.push((key, self.value(value, depth)?));
        }
        entries.sort_by_key(|(key, _)| key.span.start);
        Ok(Node::Mapping(entries))
    }

    /// A table written as `[header]` reports only its header's span; extend it over its
    /// entries so "the mapping" covers what the user wrote.
    fn value_span(&self, node: &Node, span: Range<usize>) -> Range<usize> {
        match node {
            Node::Mapping(entries) => {
                let end = entries
                    .iter()
                    .map(|(_, value)| value.span.end)
                    .max()
                    .unwrap_or(span.end);
                span.start..end.max(span.end)
            }
            _ => span,
        }
    }

    fn error(&self, span: Range<usize>, message: &str) -> Problem {
        syntax_error(self.source, Format::Toml, span, message)
    }
}

fn special_float(text: &str) -> f64 {
    let negative = text.starts_with('-');
    match (text.trim_start_matches(['+', '-']), negative) {
        ("inf", false) => f64::INFINITY,
        ("inf", true) => f64::NEG_INFINITY,
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse;

    fn source(text: &str) -> Arc<SourceFile> {
        Arc::new(SourceFile::new(
            "f.toml".into(),
            "f.toml".into(),
            text.to_string(),
        ))
    }

    #[test]
    fn document_order_spans_and_types() {
        let text = "zeta = 1\nalpha = \"a\"\nmode = 0o644\nwhen = 2024-01-02T03:04:05Z\n\n[table]\nx = [1, 2.5]\n\n[[device]]\nid = \"one\"\n\n[[device]]\nid = \"two\"\n";
        let root = match parse(&source(text), Format::Toml) {
            Ok(root) => root,
            Err(problem) => panic!("{problem}"),
        };
        let Node::Mapping(entries) = &root.value else {
            panic!("not a mapping")
        };
        let keys: Vec<_> = entries.iter().map(|(key, _)| key.value.as_str()).collect();
        assert_eq!(keys, ["zeta", "alpha", "mode", "when", "table", "device"]);
        let slice = |path: &str| root.lookup(path).map(|node| &text[node.span.clone()]);
        assert_eq!(slice("alpha"), Some("\"a\""));
        assert_eq!(slice("mode"), Some("0o644"));
        assert_eq!(slice("device[1].id"), Some("\"two\""));
        assert_eq!(slice("table.x[1]"), Some("2.5"));
        let value = |path: &str| root.lookup(path).map(|node| node.value.clone());
        assert_eq!(value("mode"), Some(Node::Integer(0o644)));
        assert_eq!(
            value("when"),
            Some(Node::String("2024-01-02T03:04:05Z".into()))
        );
    }

    #[test]
    fn syntax_error_has_exact_position() {
        let problem = match parse(&source("a = 1\nb = [1,\nc = 3\n"), Format::Toml) {
            Ok(tree) => panic!("expected a problem, got {tree:?}"),
            Err(problem) => problem,
        };
        let location = problem.location.as_ref().map(|l| (l.line, l.column));
        assert_eq!(location, Some((3, 3)), "{problem}");
    }

    #[test]
    fn duplicate_key_is_a_problem() {
        let problem = match parse(&source("a = 1\na = 2\n"), Format::Toml) {
            Ok(tree) => panic!("expected a problem, got {tree:?}"),
            Err(problem) => problem,
        };
        let location = problem.location.as_ref().map(|l| (l.line, l.column));
        assert_eq!(location, Some((2, 1)), "{problem}");
    }
}
