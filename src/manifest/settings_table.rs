//! The `[settings]` table of `imagegen.toml` → [`FileSettings`], driven by the one settings
//! table ([`crate::settings::TABLE`]): each key is read as its kind's TOML type and passes
//! the same check as a flag or an environment value, with the problem at its line and
//! column. Paths are resolved against the fleet root and `$HOME`. It does not merge with the
//! environment or flags; `crate::settings` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Problem;
use crate::settings::{FileSettings, Kind, SettingDef, TABLE, Value};
use crate::source::{MapReader, Spanned, suggest};

pub(super) fn read_settings(
    mut reader: MapReader<'_, '_>,
    root: &Path,
    home: Option<&Path>,
) -> FileSettings {
    let mut values = BTreeMap::new();
    for def in TABLE {
        if reader.node(def.name).is_none() {
            continue;
        }
        if let Some(value) = read_value(&mut reader, def, root, home) {
            values.insert(def.name, value);
        }
    }
    let known: Vec<&str> = TABLE.iter().map(|def| def.name).collect();
    reader.finish(&known);
    FileSettings {
        path: PathBuf::new(),
        values,
    }
}

/// One key, read as its kind's TOML type and checked; `None` once a problem is recorded.
fn read_value(
    reader: &mut MapReader<'_, '_>,
    def: &SettingDef,
    root: &Path,
    home: Option<&Path>,
) -> Option<Value> {
    let (value, span) = match def.kind {
        Kind::Bool | Kind::Switch => {
            let flag = reader.opt_bool(def.name)?;
            (Value::Bool(flag.value), flag.span)
        }
        Kind::Count { .. } => {
            let number = reader.opt_u64(def.name)?;
            (Value::Number(number.value), number.span)
        }
        Kind::Paths => {
            let span = reader.node(def.name)?.span.clone();
            let paths = reader
                .string_list(def.name)
                .iter()
                .map(|text| resolve_path(reader, text, root, home))
                .collect::<Option<Vec<_>>>()?;
            (Value::Paths(paths), span)
        }
        kind => {
            let text = reader.opt_string(def.name)?;
            match kind.parse(&text.value) {
                Ok(Value::Path(path)) => {
                    let shown = Spanned::new(path.display().to_string(), text.span.clone());
                    (
                        Value::Path(resolve_path(reader, &shown, root, home)?),
                        text.span,
                    )
                }
                Ok(value) => (value, text.span),
                Err(expected) => {
                    invalid(reader, def, &text.value, text.span, &expected);
                    return None;
                }
            }
        }
    };
    if let Err(expected) = def.kind.check(&value) {
        let shown = match &value {
            Value::Number(number) => number.to_string(),
            other => format!("{other:?}"),
        };
        invalid(reader, def, &shown, span, &expected);
        return None;
    }
    Some(value)
}

fn invalid(
    reader: &mut MapReader<'_, '_>,
    def: &SettingDef,
    shown: &str,
    span: std::ops::Range<usize>,
    expected: &str,
) {
    let message = format!("invalid `{}` `{shown}`: expected {expected}", def.name);
    let mut problem = Problem::validation(message)
        .at(reader.location(span))
        .with_label("not valid here");
    if let Kind::Choice(words) = def.kind
        && let Some(close) = suggest(shown, words.iter().copied())
    {
        problem = problem.with_help(format!("did you mean `{close}`?"));
    }
    reader.push(problem);
}

/// `~/x` → `$HOME/x`; relative → under the fleet root.
fn resolve_path(
    reader: &mut MapReader<'_, '_>,
    text: &Spanned<String>,
    root: &Path,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if text.value.is_empty() {
        reader.invalid(text.span.clone(), "path must not be empty", "empty");
        return None;
    }
    if let Some(rest) = text.value.strip_prefix("~/") {
        let Some(home) = home else {
            reader.invalid(
                text.span.clone(),
                "cannot expand `~/`: `HOME` is not set",
                "needs HOME",
            );
            return None;
        };
        return Some(home.join(rest));
    }
    Some(root.join(&text.value))
}
