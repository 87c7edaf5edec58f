//! Renders errors: miette reports pointing at file, line and column on a terminal (or plain
//! text when colour is off), or the structured JSON form with `--json`.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};

use crate::error::{Error, Problem, printable};

/// Prints an error: JSON on stdout with `--json`, otherwise a report on stderr.
pub(crate) fn print_error(error: &Error, json: bool, color: bool) {
    if json {
        let value = serde_json::json!({ "error": error });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        eprint!("{}", render_error(error, color));
    }
}

/// The text form: one report per problem, then the summary line and hints. Every piece of
/// text passes through [`printable`]: messages quote values from profiles and mirrors, and a
/// raw escape sequence there must not reach the terminal.
pub(crate) fn render_error(error: &Error, color: bool) -> String {
    let mut out = String::new();
    for problem in &error.problems {
        out.push_str(&render_problem(problem, color));
    }
    out.push_str(&format!(
        "error[{}]: {}\n",
        error.code,
        printable(&error.message)
    ));
    if let Some(log_path) = &error.log_path {
        let path = log_path.display().to_string();
        out.push_str(&format!("  log: {}\n", printable(&path)));
    }
    if let Some(help) = &error.help {
        out.push_str(&format!("hint: {}\n", printable(help)));
    }
    out
}

/// The source text as shown in a snippet: control characters replaced by characters of the
/// same UTF-8 length (`?` or `¿`), so that spans still point at the same bytes.
fn printable_source(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => c,
            c if c.is_control() && c.len_utf8() == 1 => '?',
            c if c.is_control() => '¿',
            c => c,
        })
        .collect()
}

fn render_problem(problem: &Problem, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut diagnostic = MietteDiagnostic::new(printable(&problem.message).into_owned())
        .with_code(problem.code.as_str());
    if let Some(help) = &problem.help {
        diagnostic = diagnostic.with_help(printable(help).into_owned());
    }
    let location = problem.location.as_ref();
    let source = location.and_then(|location| location.source.as_ref());
    let mut rendered = String::new();
    match (location, source) {
        (Some(location), Some(source)) => {
            let label = problem.label.as_deref().unwrap_or("here");
            let label = printable(label).into_owned();
            diagnostic = diagnostic.with_label(LabeledSpan::at(location.span.clone(), label));
            let report = miette::Report::new(diagnostic).with_source_code(NamedSource::new(
                printable(&location.file),
                printable_source(source.text()),
            ));
            let _ = handler.render_report(&mut rendered, report.as_ref());
        }
        _ => {
            if let Some(location) = location {
                let location = location.to_string();
                diagnostic.message = format!("{}: {}", printable(&location), diagnostic.message);
            }
            let _ = handler.render_report(&mut rendered, &diagnostic);
        }
    }
    rendered
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::{ErrorCode, Location};
    use crate::source::SourceFile;

    #[test]
    fn escape_sequences_from_values_never_reach_the_terminal() {
        let text = "name: \"\\e]0;owned\\a\"\n# \u{1b}[2J comment\n";
        let source = Arc::new(SourceFile::new(
            "p.yaml".into(),
            "p\u{1b}[31m.yaml".into(),
            text.into(),
        ));
        let problem = Problem::validation("invalid `name` `\u{1b}]0;owned\u{7}`")
            .at(Location::at(&source, 6..21))
            .with_label("bad \u{1b}[1m")
            .with_help("\u{9b}2J help");
        let error = Error::from_problems("invalid \u{1b}[5m fleet", vec![problem])
            .with_help("hint \u{1b}c");
        let mut unlocated = Error::new(ErrorCode::Validation, "x");
        unlocated.problems =
            vec![Problem::validation("at \u{1b}[H").at(Location::file("f\u{7}.yaml"))];
        for rendered in [
            render_error(&error, false),
            render_error(&error, true),
            render_error(&unlocated, false),
        ] {
            let escapes: Vec<_> = rendered
                .char_indices()
                .filter(|(_, c)| c.is_control() && *c != '\n')
                .collect();
            // Only the renderer's own colour codes (ESC `[` digits `m`) may remain.
            for (index, _) in escapes {
                let rest = &rendered[index..];
                let colour = rest.strip_prefix("\u{1b}[").is_some_and(|tail| {
                    let end = tail.find('m').unwrap_or(tail.len());
                    end > 0 && tail[..end].bytes().all(|b| b.is_ascii_digit() || b == b';')
                });
                assert!(colour, "raw control character in:\n{rendered:?}");
            }
            assert!(!rendered.contains("\u{1b}]0;"), "{rendered:?}");
            assert!(!rendered.contains("\u{1b}[2J"), "{rendered:?}");
            assert!(!rendered.contains("\u{1b}[31m.yaml"), "{rendered:?}");
        }
        let plain = render_error(&error, false);
        assert!(
            plain.contains("invalid `name` `\\u{1b}]0;owned\\u{7}`"),
            "{plain}"
        );
        assert!(plain.contains("hint \\u{1b}c"), "{plain}");
    }
}
