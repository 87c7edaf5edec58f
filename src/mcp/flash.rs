//! The `flash_artifact` tool: a stored artifact onto a whole disk through
//! [`ops::flash_artifact`]. It writes only when the call says `force: true` **and** the
//! server was started with `imagegen mcp --allow-flash`; any other call is a dry run that
//! returns what would be written where, and says why it did not write.

use std::time::Duration;

use rmcp::RoleServer;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router};
use serde_json::{Value, json};

use super::params::FlashArtifactParams;
use super::progress::ProgressForwarder;
use super::reply;
use super::server::ImagegenServer;
use crate::error::{Error, ErrorCode, Result};
use crate::exec::Reporter;
use crate::flash::{FlashObserver, FlashPlan, FlashProgress, VerifyMode, format_size};
use crate::ops::{self, FlashEvents, FlashOutcome, FlashRequest};

#[tool_router(router = flash_tools, vis = "pub(crate)")]
impl ImagegenServer {
    /// Write a stored artifact (`PROFILE:KIND` such as `lab.rpi4.sd:factory`, or a sha256
    /// prefix) to a whole disk, then read it back and compare. DESTROYS the disk's contents.
    /// Without `force: true`, or when the server was not started with `--allow-flash`, this
    /// is a dry run: every safety check runs and the result describes the disk and the steps
    /// that would be taken (`dry_run: true`, `dry_run_reason`). Refusals (mounted, system or
    /// read-only disks, partitions, images too large) are tool errors with stable codes.
    #[tool(annotations(destructive_hint = true, idempotent_hint = false))]
    async fn flash_artifact(
        &self,
        Parameters(params): Parameters<FlashArtifactParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let reason = match (params.force, self.allow_flash()) {
            (true, true) => None,
            (false, _) => Some("`force` is not true"),
            (true, false) => Some("the server was started without `--allow-flash`"),
        };
        let write = reason.is_none();
        let outcome = self
            .run_tracked(&context, move |workspace, hooks, progress| {
                let verify = match &params.verify {
                    Some(text) => text.parse()?,
                    None => VerifyMode::Full,
                };
                let request = FlashRequest {
                    device: params.device.into(),
                    dry_run: !write,
                    force: write,
                    wipe: params.wipe,
                    verify,
                    cancel: Some(hooks.cancel.clone()),
                };
                let mut observer = McpObserver {
                    progress,
                    events: None,
                };
                ops::flash_artifact(workspace, &params.artifact, &request, &mut observer)
            })
            .await;
        let facts = json!({ "dry_run": !write, "dry_run_reason": reason });
        match outcome {
            Ok(outcome) => reply::success(summary(&outcome, reason), &with(&outcome, facts)),
            Err(error) => reply::failure_with(&error, &facts),
        }
    }
}

/// The outcome's fields with `dry_run` and `dry_run_reason` next to them.
fn with(outcome: &FlashOutcome, facts: Value) -> Value {
    let mut value = serde_json::to_value(outcome).unwrap_or_else(|_| json!({}));
    if let (Value::Object(object), Value::Object(facts)) = (&mut value, facts) {
        object.extend(facts);
    }
    value
}

fn summary(outcome: &FlashOutcome, reason: Option<&str>) -> String {
    let report = &outcome.report;
    let plan = &report.plan;
    let image = match &outcome.source.artifact {
        Some(artifact) => artifact.name.as_str(),
        None => "the image",
    };
    if report.dry_run {
        let mut text = format!(
            "dry run ({}): nothing was written. Flashing `{image}` to `{}` would:",
            reason.unwrap_or("asked for"),
            plan.device_path.display()
        );
        for (number, step) in plan.steps.iter().enumerate() {
            text.push_str(&format!("\n{}. {step}", number + 1));
        }
        return text;
    }
    let verified = match &report.verification {
        Some(verification) => format!("verified {}", format_size(verification.bytes)),
        None => "not verified".to_string(),
    };
    format!(
        "flashed `{image}` to `{}` ({}): wrote {}, {verified}; recorded as flash #{}",
        plan.device.node.display(),
        plan.device.describe(),
        format_size(report.bytes_written),
        outcome.record.as_ref().map_or(0, |record| record.id)
    )
}

/// Progress as MCP notifications; never asked to confirm (the tool writes only with
/// `force`, and then the operation does not ask).
struct McpObserver<'a> {
    progress: &'a ProgressForwarder,
    /// Once writing started; every progress report is forwarded (the forwarder paces them).
    events: Option<FlashEvents>,
}

impl FlashObserver for McpObserver<'_> {
    fn confirm(&mut self, plan: &FlashPlan) -> Result<()> {
        Err(Error::new(
            ErrorCode::FlashNotConfirmed,
            format!(
                "`{}` cannot be confirmed over MCP",
                plan.device.node.display()
            ),
        )
        .with_help("call with `force: true` on a server started with `--allow-flash`"))
    }

    fn started(&mut self, plan: &FlashPlan) {
        let (events, first) = FlashEvents::start(plan, Duration::ZERO);
        for event in &first {
            self.progress.event(event);
        }
        self.events = Some(events);
    }

    fn progress(&mut self, progress: &FlashProgress) {
        let detail = format_size(progress.bytes);
        let event = self
            .events
            .as_mut()
            .and_then(|events| events.progress(progress, &detail));
        if let Some(event) = event {
            self.progress.event(&event);
        }
    }
}
