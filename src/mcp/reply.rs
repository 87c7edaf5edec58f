//! Operation results as MCP tool results.
//!
//! A success carries the operation's report as `structuredContent` (always a JSON object),
//! and as `content` a short human summary followed by the same JSON as text, for clients
//! that only show text (the MCP specification asks for that fallback). A failure is a tool
//! error (`isError: true`) whose `structuredContent` is `{"error": {code, message, problems,
//! help, log_path, details}}`, the same shape as the CLI's `--json` errors, with every
//! problem's `location` as file, line and column; its text lists the problems as
//! `file:line:col: message`. When part of the work ran (a batch with one failed build), the
//! report's own fields sit next to `error`.

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::Error;

/// A successful result: `report` as structured content, `summary` first in the text.
pub(crate) fn success(summary: String, report: &impl Serialize) -> CallToolResult {
    let value = as_object(report);
    let mut result = CallToolResult::success(vec![
        ContentBlock::text(summary),
        ContentBlock::text(value.to_string()),
    ]);
    result.structured_content = Some(value);
    result
}

/// A failed operation.
pub(crate) fn failure(error: &Error) -> CallToolResult {
    failure_with(error, &Map::new())
}

/// A tool error that also carries the report of what did run (a build whose step failed):
/// the report's fields plus `error`, so a result has the same shape whether it failed or not.
pub(crate) fn failure_with(error: &Error, report: &impl Serialize) -> CallToolResult {
    let mut value = as_object(report);
    if let Value::Object(object) = &mut value {
        object.insert("error".to_string(), to_value(error));
    }
    let mut result = CallToolResult::error(vec![
        ContentBlock::text(describe(error)),
        ContentBlock::text(value.to_string()),
    ]);
    result.structured_content = Some(value);
    result
}

/// Renders an operation's outcome: `summary` of the report, or the error.
pub(crate) fn render<T: Serialize>(
    outcome: crate::Result<T>,
    summary: impl FnOnce(&T) -> String,
) -> CallToolResult {
    match outcome {
        Ok(report) => success(summary(&report), &report),
        Err(error) => failure(&error),
    }
}

/// `error[code]: message`, each problem on its own line with its location, then the hint.
pub(crate) fn describe(error: &Error) -> String {
    let mut text = format!("error[{}]: {}", error.code, error.message);
    for problem in &error.problems {
        text.push_str(&format!("\n  {problem}"));
        if let Some(help) = &problem.help {
            text.push_str(&format!(" (hint: {help})"));
        }
    }
    if let Some(log_path) = &error.log_path {
        text.push_str(&format!("\n  log: {}", log_path.display()));
    }
    if let Some(help) = &error.help {
        text.push_str(&format!("\nhint: {help}"));
    }
    text
}

fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|error| {
        Value::String(format!("(this result could not be serialized: {error})"))
    })
}

/// MCP wants structured content to be an object; reports that are not one are wrapped as
/// `{"result": ...}` (every tool here already returns an object).
fn as_object(value: &impl Serialize) -> Value {
    match to_value(value) {
        object @ Value::Object(_) => object,
        other => serde_json::json!({ "result": other }),
    }
}

/// `1 profile`, `3 profiles`.
pub(crate) fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Problem;

    #[test]
    fn an_error_carries_code_message_and_located_problems() {
        let error = Error::from_problems(
            "invalid fleet: 1 problem",
            vec![
                Problem::validation("unknown field `pakages`")
                    .with_help("did you mean `packages`?"),
            ],
        )
        .with_help("fix the files above");
        let result = failure(&error);
        assert_eq!(result.is_error, Some(true));
        let structured = result.structured_content.clone().unwrap_or_default();
        assert_eq!(structured["error"]["code"], "validation");
        assert_eq!(structured["error"]["message"], "invalid fleet: 1 problem");
        assert_eq!(
            structured["error"]["problems"][0]["message"],
            "unknown field `pakages`"
        );
        let text = result.content[0].as_text().map(|text| text.text.clone());
        assert_eq!(
            text.as_deref(),
            Some(
                "error[validation]: invalid fleet: 1 problem\n  unknown field `pakages` (hint: did you mean `packages`?)\nhint: fix the files above"
            )
        );
    }

    #[test]
    fn a_report_that_is_not_an_object_is_wrapped() {
        let result = success("two".to_string(), &vec![1, 2]);
        assert_eq!(result.is_error, Some(false));
        assert_eq!(
            result.structured_content,
            Some(serde_json::json!({ "result": [1, 2] }))
        );
    }
}
