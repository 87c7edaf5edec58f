//! Renders errors: miette reports pointing at file, line and column on a terminal (or plain
//! text when colour is off), or the structured JSON form with `--json`.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};

use crate::error::{Error, Problem};

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

/// The text form: one report per problem, then the summary line and hints.
pub(crate) fn render_error(error: &Error, color: bool) -> String {
    let mut out = String::new();
    for problem in &error.problems {
        out.push_str(&render_problem(problem, color));
    }
    out.push_str(&format!("error[{}]: {}\n", error.code, error.message));
    if let Some(log_path) = &error.log_path {
        out.push_str(&format!("  log: {}\n", log_path.display()));
    }
    if let Some(help) = &error.help {
        out.push_str(&format!("hint: {help}\n"));
    }
    out
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
    let mut diagnostic =
        MietteDiagnostic::new(problem.message.clone()).with_code(problem.code.as_str());
    if let Some(help) = &problem.help {
        diagnostic = diagnostic.with_help(help.clone());
    }
    let location = problem.location.as_ref();
    let source = location.and_then(|location| location.source.as_ref());
    let mut rendered = String::new();
    match (location, source) {
        (Some(location), Some(source)) => {
            let label = problem.label.clone().unwrap_or_else(|| "here".to_string());
            diagnostic = diagnostic.with_label(LabeledSpan::at(location.span.clone(), label));
            let report = miette::Report::new(diagnostic).with_source_code(NamedSource::new(
                location.file.clone(),
                source.text().to_string(),
            ));
            let _ = handler.render_report(&mut rendered, report.as_ref());
        }
        _ => {
            if let Some(location) = location {
                diagnostic.message = format!("{location}: {}", diagnostic.message);
            }
            let _ = handler.render_report(&mut rendered, &diagnostic);
        }
    }
    rendered
}
