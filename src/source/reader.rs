//! [`MapReader`]: pulls typed fields out of a spanned mapping, collecting a [`Problem`] for
//! every missing, mistyped or unknown field instead of stopping at the first. It knows no
//! schema; callers (profiles, the fleet manifest, the lock file) say what they expect.

use std::ops::Range;
use std::sync::Arc;

use super::{Node, SourceFile, Spanned};
use crate::error::{Location, Problem, Problems};

/// Longest list we accept in any input file.
pub const MAX_LIST_LEN: usize = 1000;
/// Longest string (in bytes) we accept in any input file.
pub const MAX_STRING_LEN: usize = 4096;

type Entries = [(Spanned<String>, Spanned<Node>)];

/// Reads the fields of one mapping; create nested readers with [`MapReader::nested`] or
/// [`MapReader::reader_for`], then call [`MapReader::finish`] with the keys you know.
pub struct MapReader<'n, 'p> {
    source: &'n Arc<SourceFile>,
    problems: &'p mut Problems,
    entries: &'n Entries,
    span: Range<usize>,
    /// Field path of this mapping (`""` at the root, `files[0]` for a list item).
    path: String,
}

impl<'n, 'p> MapReader<'n, 'p> {
    /// A reader over `node`, or `None` (with a problem recorded) when it is not a mapping.
    pub fn new(
        node: &'n Spanned<Node>,
        source: &'n Arc<SourceFile>,
        problems: &'p mut Problems,
    ) -> Option<MapReader<'n, 'p>> {
        MapReader::at_path(node, source, problems, String::new())
    }

    fn at_path(
        node: &'n Spanned<Node>,
        source: &'n Arc<SourceFile>,
        problems: &'p mut Problems,
        path: String,
    ) -> Option<MapReader<'n, 'p>> {
        match &node.value {
            Node::Mapping(entries) => Some(MapReader {
                source,
                problems,
                entries,
                span: node.span.clone(),
                path,
            }),
            other => {
                let what = if path.is_empty() {
                    "the document".to_string()
                } else {
                    format!("`{path}`")
                };
                problems.push(
                    Problem::validation(format!(
                        "expected a mapping for {what}, found {}",
                        other.kind()
                    ))
                    .at(Location::at(source, node.span.clone()))
                    .with_label("expected a mapping"),
                );
                None
            }
        }
    }

    /// The full field path of `key` in this mapping, e.g. `files[0].mode`.
    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    pub fn source(&self) -> &'n Arc<SourceFile> {
        self.source
    }

    /// A location in this reader's file.
    pub fn location(&self, span: Range<usize>) -> Location {
        Location::at(self.source, span)
    }

    /// Record a problem found by the caller.
    pub fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Record a validation problem at `span` with a short label.
    pub fn invalid(&mut self, span: Range<usize>, message: impl Into<String>, label: &str) {
        let problem = Problem::validation(message)
            .at(self.location(span))
            .with_label(label);
        self.problems.push(problem);
    }

    /// The raw value of `key`; an explicit `null` counts as absent.
    pub fn node(&self, key: &str) -> Option<&'n Spanned<Node>> {
        self.entries
            .iter()
            .find(|(name, _)| name.value == key)
            .map(|(_, value)| value)
            .filter(|value| value.value != Node::Null)
    }

    /// The span of `key` itself (not its value).
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|(name, _)| name.value == key)
            .map(|(name, _)| name.span.clone())
    }

    /// A required value: records "missing required field" when absent.
    pub fn required(&mut self, key: &str) -> Option<&'n Spanned<Node>> {
        let node = self.node(key);
        if node.is_none() {
            let path = self.path_of(key);
            match self.key_span(key) {
                Some(span) => self.invalid(span, format!("`{path}` has no value"), "no value"),
                None => {
                    let start = self.span.start;
                    let message = format!("missing required field `{path}`");
                    self.invalid(start..start, message, "in this mapping");
                }
            }
        }
        node
    }

    pub fn string(&mut self, key: &str) -> Option<Spanned<String>> {
        let node = self.required(key)?;
        self.as_string(key, node)
    }

    pub fn opt_string(&mut self, key: &str) -> Option<Spanned<String>> {
        let node = self.node(key)?;
        self.as_string(key, node)
    }

    pub fn opt_bool(&mut self, key: &str) -> Option<Spanned<bool>> {
        let node = self.node(key)?;
        match node.value {
            Node::Bool(value) => Some(Spanned::new(value, node.span.clone())),
            _ => self.mistyped(key, node, "a boolean (`true` or `false`)"),
        }
    }

    pub fn opt_u64(&mut self, key: &str) -> Option<Spanned<u64>> {
        let node = self.node(key)?;
        match node.value {
            Node::Integer(value) => match u64::try_from(value) {
                Ok(value) => Some(Spanned::new(value, node.span.clone())),
                Err(_) => self.mistyped(key, node, "a non-negative integer"),
            },
            _ => self.mistyped(key, node, "a non-negative integer"),
        }
    }

    /// A list of arbitrary values (at most [`MAX_LIST_LEN`]); `None` when absent or mistyped.
    pub fn opt_list(&mut self, key: &str) -> Option<&'n [Spanned<Node>]> {
        self.opt_list_up_to(key, MAX_LIST_LEN)
    }

    /// [`MapReader::opt_list`] with another length limit (e.g. a fleet's devices).
    pub fn opt_list_up_to(&mut self, key: &str, max_len: usize) -> Option<&'n [Spanned<Node>]> {
        let node = self.node(key)?;
        match &node.value {
            Node::Sequence(items) if items.len() > max_len => {
                let path = self.path_of(key);
                self.invalid(
                    node.span.clone(),
                    format!(
                        "`{path}` has {} entries, more than the limit of {max_len}",
                        items.len()
                    ),
                    "too long",
                );
                None
            }
            Node::Sequence(items) => Some(items),
            _ => self.mistyped(key, node, "a list"),
        }
    }

    /// A list of strings; empty when absent. Mistyped items are reported and skipped.
    pub fn string_list(&mut self, key: &str) -> Vec<Spanned<String>> {
        let Some(items) = self.opt_list(key) else {
            return Vec::new();
        };
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            if let Some(string) = self.as_string(&format!("{key}[{index}]"), item) {
                strings.push(string);
            }
        }
        strings
    }

    /// A reader for the nested mapping at `key`; `None` when absent or not a mapping.
    pub fn nested<'s>(&'s mut self, key: &str) -> Option<MapReader<'n, 's>> {
        let node = self.node(key)?;
        let path = self.path_of(key);
        MapReader::at_path(node, self.source, self.problems, path)
    }

    /// A reader for a mapping found elsewhere in this one (a list item), named by `path`
    /// relative to this mapping (`files[2]`).
    pub fn reader_for<'s>(
        &'s mut self,
        node: &'n Spanned<Node>,
        path: &str,
    ) -> Option<MapReader<'n, 's>> {
        let path = self.path_of(path);
        MapReader::at_path(node, self.source, self.problems, path)
    }

    /// Report every key not in `known`, with a "did you mean" hint when one is close.
    pub fn finish(self, known: &[&str]) {
        for (key, _) in self.entries {
            if known.contains(&key.value.as_str()) {
                continue;
            }
            if self.problems.is_full() {
                // Not shown anyway: count it without building the message and suggestion.
                self.problems.count(crate::error::ErrorCode::Validation);
                continue;
            }
            let path = self.path_of(&key.value);
            let mut problem = Problem::validation(format!("unknown field `{path}`"))
                .at(Location::at(self.source, key.span.clone()))
                .with_label("unknown field");
            problem = match suggest(&key.value, known.iter().copied()) {
                Some(close) => problem.with_help(format!("did you mean `{close}`?")),
                None => problem.with_help(format!("known fields: {}", backticked(known))),
            };
            self.problems.push(problem);
        }
    }

    fn as_string(&mut self, key: &str, node: &'n Spanned<Node>) -> Option<Spanned<String>> {
        match &node.value {
            Node::String(text) if text.len() > MAX_STRING_LEN => {
                let path = self.path_of(key);
                self.invalid(
                    node.span.clone(),
                    format!(
                        "`{path}` is {} bytes long, more than the limit of {MAX_STRING_LEN}",
                        text.len()
                    ),
                    "too long",
                );
                None
            }
            Node::String(text) => Some(Spanned::new(text.clone(), node.span.clone())),
            // `subtarget: 64` or `openwrt_release: 24.10` mean the text as written; a
            // number's source text is exactly what the user meant by it.
            Node::Integer(_) | Node::Float(_) => Some(Spanned::new(
                self.source.slice(&node.span).to_string(),
                node.span.clone(),
            )),
            _ => self.mistyped(key, node, "a string"),
        }
    }

    fn mistyped<T>(&mut self, key: &str, node: &Spanned<Node>, expected: &str) -> Option<T> {
        let path = self.path_of(key);
        let found = node.value.kind();
        let mut problem =
            Problem::validation(format!("expected {expected} for `{path}`, found {found}"))
                .at(self.location(node.span.clone()))
                .with_label(format!("expected {expected}"));
        let is_scalar = matches!(
            node.value,
            Node::Bool(_) | Node::Integer(_) | Node::Float(_)
        );
        if expected == "a string" && is_scalar {
            let raw = self.source.slice(&node.span);
            problem = problem.with_help(format!("quote it: `\"{raw}\"`"));
        }
        self.problems.push(problem);
        None
    }
}

/// Longest word [`suggest`] compares: the similarity measure is quadratic in the length,
/// and no typo of a field or id is this long.
const MAX_SUGGEST_LEN: usize = 128;

/// The candidate closest to `word`, if any is close enough to be a likely typo.
pub fn suggest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    if word.len() > MAX_SUGGEST_LEN {
        return None;
    }
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|left, right| left.0.total_cmp(&right.0))
        .map(|(_, candidate)| candidate)
}

fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Format, parse};

    fn read(text: &str, read: impl FnOnce(MapReader<'_, '_>)) -> Vec<String> {
        let source = Arc::new(SourceFile::new(
            "r.yaml".into(),
            "r.yaml".into(),
            text.into(),
        ));
        let root = match parse(&source, Format::Yaml) {
            Ok(root) => root,
            Err(problem) => panic!("{problem}"),
        };
        let mut problems = Problems::new();
        if let Some(reader) = MapReader::new(&root, &source, &mut problems) {
            read(reader);
        }
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn typed_fields_and_every_problem_at_once() {
        let text = "name: true\nflag: yes\ncount: -1\nlist: [a, 2]\nsub:\n  inner: x\n  extra: y\nnaem: z\nempty:\n";
        let problems = read(text, |mut reader| {
            assert_eq!(reader.string("name"), None);
            assert_eq!(reader.string("missing"), None);
            assert_eq!(reader.string("empty"), None);
            assert_eq!(reader.opt_bool("flag"), None);
            assert_eq!(reader.opt_u64("count"), None);
            let list: Vec<_> = reader
                .string_list("list")
                .into_iter()
                .map(|s| s.value)
                .collect();
            // A number stands for its source text where a string is wanted.
            assert_eq!(list, ["a", "2"]);
            if let Some(mut sub) = reader.nested("sub") {
                assert_eq!(sub.string("inner").map(|s| s.value), Some("x".to_string()));
                sub.finish(&["inner"]);
            }
            reader.finish(&["name", "flag", "count", "list", "sub", "missing", "empty"]);
        });
        assert_eq!(
            problems,
            [
                "r.yaml:1:7: expected a string for `name`, found a boolean",
                "r.yaml:1:1: missing required field `missing`",
                "r.yaml:9:1: `empty` has no value",
                "r.yaml:2:7: expected a boolean (`true` or `false`) for `flag`, found a string",
                "r.yaml:3:8: expected a non-negative integer for `count`, found an integer",
                "r.yaml:7:3: unknown field `sub.extra`",
                "r.yaml:8:1: unknown field `naem`",
            ]
        );
    }

    #[test]
    fn not_a_mapping() {
        let problems = read("- a\n", |_| panic!("a list is not a mapping"));
        assert_eq!(
            problems,
            ["r.yaml:1:1: expected a mapping for the document, found a list"]
        );
    }

    #[test]
    fn limits() {
        let long = "x".repeat(MAX_STRING_LEN + 1);
        let many = vec!["a"; MAX_LIST_LEN + 1].join(", ");
        let text = format!("s: {long}\nl: [{many}]\n");
        let problems = read(&text, |mut reader| {
            assert_eq!(reader.opt_string("s"), None);
            assert!(reader.string_list("l").is_empty());
        });
        assert_eq!(
            problems,
            [
                "r.yaml:1:4: `s` is 4097 bytes long, more than the limit of 4096",
                "r.yaml:2:4: `l` has 1001 entries, more than the limit of 1000",
            ]
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("pakages", ["packages", "files"]), Some("packages"));
        assert_eq!(suggest("zzz", ["packages", "files"]), None);
    }
}
