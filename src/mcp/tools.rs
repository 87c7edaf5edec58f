//! The tools. Each one converts its arguments, calls one [`crate::ops`] operation through
//! [`ImagegenServer::run`] (or [`ImagegenServer::run_tracked`] for runs that report progress)
//! and renders the report with [`reply`]; the only code here is that wiring and the
//! one-paragraph summaries. The doc comment of each tool is its description for agents.
//!
//! Adding a tool: an arguments type in `params.rs`, one `#[tool]` method below that calls
//! the operation; it is listed and routed automatically. `flash_artifact` lives in
//! [`super::flash`] with its own router, combined in `ImagegenServer::new`.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router};
use serde_json::json;

use super::params::{
    ApplyParams, BuildBatchParams, BuildImageParams, BuildLogParams, EnsureBuilderParams,
    ListArtifactsParams, ListBuildsParams, PlanParams, ProfileFilterParams, ProfileIdParams,
    ValidateParams,
};
use super::progress::ProgressForwarder;
use super::reply::{self, count};
use super::server::ImagegenServer;
use crate::error::{Error, Result};
use crate::manifest::ProfileFilter;
use crate::ops::{
    self, ApplyRequest, BuildOutcome, BuildRequest, BuildResult, FleetNeed, ProfileBuild, RunHooks,
    Workspace,
};
use crate::plan;
use crate::plan::Selection;
use crate::triple::Triple;

#[tool_router(router = tools, vis = "pub(crate)")]
impl ImagegenServer {
    /// List the fleet's device profiles (id, name, device, release, target, subtarget, Image
    /// Builder profile, tags, file), optionally filtered by tag, release, target, subtarget
    /// or device.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_profiles(
        &self,
        Parameters(filter): Parameters<ProfileFilterParams>,
    ) -> CallToolResult {
        let filter = ProfileFilter::from(filter);
        let outcome = self
            .run(FleetNeed::Required, move |workspace| {
                ops::list_profiles(workspace, &filter)
            })
            .await;
        reply::render(
            outcome.map(|profiles| json!({ "profiles": profiles })),
            |value| count(value["profiles"].as_array().map_or(0, Vec::len), "profile"),
        )
    }

    /// One profile: every field of its build recipe and the file it lives in.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn get_profile(&self, Parameters(params): Parameters<ProfileIdParams>) -> CallToolResult {
        let outcome = self
            .run(FleetNeed::Required, move |workspace| {
                ops::show_profile(workspace, &params.profile_id)
            })
            .await;
        reply::render(outcome, |detail| {
            format!("profile `{}` ({})", detail.profile.profile_id, detail.file)
        })
    }

    /// Check imagegen.toml, every profile, every overlay source and (when the mirror or its
    /// cached metadata allow) each Image Builder profile against upstream profiles.json. An
    /// invalid fleet is a tool error listing every problem with its file, line and column.
    #[tool(annotations(read_only_hint = true))]
    async fn validate(&self, Parameters(params): Parameters<ValidateParams>) -> CallToolResult {
        let request = params.into();
        let outcome = self
            .run(FleetNeed::Required, move |workspace| {
                ops::validate(workspace, &request)
            })
            .await;
        reply::render(outcome, |report| {
            let mut text = format!(
                "fleet `{}` is valid: {}, {}",
                report.fleet,
                count(report.profiles, "profile"),
                count(report.devices, "device")
            );
            for skipped in &report.skipped {
                text.push_str(&format!(
                    "\nnot checked: {} ({})",
                    skipped.check, skipped.reason
                ));
            }
            for notice in &report.notices {
                text.push_str(&format!("\nnotice: {notice}"));
            }
            text
        })
    }

    /// What apply would do and why: the plan (format_version 1, the same JSON as
    /// `imagegen plan --json`) with every action's address, kind, build key, reasons and
    /// dependencies. Changes nothing.
    #[tool(annotations(read_only_hint = true))]
    async fn plan(&self, Parameters(params): Parameters<PlanParams>) -> CallToolResult {
        let request = params.into();
        let outcome = self
            .run(FleetNeed::Required, move |workspace| {
                ops::plan(workspace, &request)
            })
            .await;
        reply::render(outcome, |plan| {
            format!(
                "{}\n{}",
                plan::summary_line(plan),
                plan::render_text(plan, false)
            )
        })
    }

    /// Build one profile's image now, or reuse the recorded build with the same build key
    /// (`cache_hit: true`). Fetches the Image Builder it needs first. Returns the artifacts
    /// with kind, size, sha256 and paths; a failed build is a tool error with the log path.
    #[tool(annotations(destructive_hint = false, idempotent_hint = true))]
    async fn build_image(
        &self,
        Parameters(params): Parameters<BuildImageParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let request = BuildRequest {
            selection: Selection {
                profiles: vec![params.profile_id],
                ..Selection::default()
            },
            force: params.force,
            ..BuildRequest::default()
        };
        let outcome = self
            .run_tracked(&context, move |workspace, hooks, _| {
                ops::build(workspace, &request, hooks)
            })
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => return reply::failure(&error),
        };
        let failure = outcome.failure();
        let Some(build) = outcome.profiles.into_iter().next() else {
            return reply::failure(&Error::internal("the build reported no profile"));
        };
        match (build.result, build.error.clone().or(failure)) {
            (BuildResult::Built | BuildResult::Reused, _) => {
                reply::success(profile_line(&build), &build)
            }
            (_, error) => {
                let error = error.unwrap_or_else(|| Error::internal("the build did not finish"));
                reply::failure_with(&error, &build)
            }
        }
    }

    /// Build (or reuse) several profiles at once, named by id or selected by a filter.
    /// `fail_fast: false` builds everything that does not depend on a failure (best effort).
    /// Returns one result per profile; when any failed, the result is a tool error whose
    /// `profiles` still list every profile's result.
    #[tool(annotations(destructive_hint = false, idempotent_hint = true))]
    async fn build_images_batch(
        &self,
        Parameters(params): Parameters<BuildBatchParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let request = BuildRequest {
            selection: Selection {
                profiles: params.profiles,
                ..Selection::default()
            },
            filter: params.filter.into(),
            force: params.force,
            keep_going: !params.fail_fast,
        };
        let outcome = self
            .run_tracked(&context, move |workspace, hooks, _| {
                ops::build(workspace, &request, hooks)
            })
            .await;
        match outcome {
            Err(error) => reply::failure(&error),
            Ok(outcome) => match outcome.failure() {
                Some(error) => reply::failure_with(&error, &outcome),
                None => reply::success(batch_summary(&outcome), &outcome),
            },
        }
    }

    /// Carry out the plan: pin missing Image Builders in imagegen.lock (unless `locked`),
    /// fetch them, build every changed profile, record the results. Never flashes a device.
    /// Returns the plan, the run report and where each profile's images are.
    #[tool(annotations(destructive_hint = false, idempotent_hint = true))]
    async fn apply(
        &self,
        Parameters(params): Parameters<ApplyParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        // Any permission a later ApplyRequest grows (flashing) keeps its default: off.
        let request = ApplyRequest {
            locked: params.locked,
            keep_going: params.keep_going,
            ..ApplyRequest::default()
        };
        let outcome = self
            .run_tracked(&context, move |workspace, hooks, _| {
                ops::apply(workspace, &request, hooks)
            })
            .await;
        match outcome {
            Err(error) => reply::failure(&error),
            Ok(outcome) => match outcome.failure() {
                Some(error) => reply::failure_with(&error, &outcome),
                None => {
                    let summary = match &outcome.report {
                        None => plan::render_text(&outcome.plan, false),
                        Some(report) => format!(
                            "applied fleet `{}`: {} succeeded in {:.1} s",
                            report.fleet,
                            count(report.run.succeeded, "step"),
                            report.run.duration_ms as f64 / 1000.0
                        ),
                    };
                    reply::success(summary, &outcome)
                }
            },
        }
    }

    /// Recorded builds, newest first (key, profile, status, times, inputs, artifacts, log
    /// path); optionally of one profile; at most `limit` (default 20).
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_builds(
        &self,
        Parameters(params): Parameters<ListBuildsParams>,
    ) -> CallToolResult {
        let filter = params.into();
        let outcome = self
            .run(FleetNeed::Optional, move |workspace| {
                ops::builds_filtered(workspace, &filter)
            })
            .await;
        reply::render(outcome.map(|builds| json!({ "builds": builds })), |value| {
            let builds = value["builds"].as_array().cloned().unwrap_or_default();
            let mut text = count(builds.len(), "build");
            for build in &builds {
                let key = build["key"].as_str().unwrap_or_default();
                text.push_str(&format!(
                    "\n{}  {}  {}",
                    key.get(..12).unwrap_or(key),
                    build["profile_id"].as_str().unwrap_or_default(),
                    build["status"].as_str().unwrap_or_default()
                ));
            }
            text
        })
    }

    /// The end of a build's log (default the last 16 KiB, at most 256 KiB per call); `size`
    /// and `truncated` say how much more there is.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn get_build_log(
        &self,
        Parameters(params): Parameters<BuildLogParams>,
    ) -> CallToolResult {
        let tail = params.bounded_tail();
        let outcome = self
            .run(FleetNeed::Optional, move |workspace| {
                ops::build_log(workspace, &params.build_key, Some(tail))
            })
            .await;
        reply::render(outcome, |log| {
            format!(
                "log of build {} ({} bytes{}): {}",
                log.key.get(..12).unwrap_or(&log.key),
                log.size,
                if log.truncated {
                    ", showing the end"
                } else {
                    ""
                },
                log.path.display()
            )
        })
    }

    /// Artifacts in the content-addressed store (sha256, name, kind, filesystem, size, the
    /// builds that produced them): all, one build's (`build_key`), or one profile's builds'.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_artifacts(
        &self,
        Parameters(params): Parameters<ListArtifactsParams>,
    ) -> CallToolResult {
        let filter = params.into();
        let outcome = self
            .run(FleetNeed::Optional, move |workspace| {
                ops::artifacts_list(workspace, &filter)
            })
            .await;
        reply::render(
            outcome.map(|artifacts| json!({ "artifacts": artifacts })),
            |value| {
                count(
                    value["artifacts"].as_array().map_or(0, Vec::len),
                    "artifact",
                )
            },
        )
    }

    /// Image Builders recorded in the state store (release/target/subtarget, archive and its
    /// sha256, signing key, status, unpacked path, size).
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_builders(&self) -> CallToolResult {
        let outcome = self.run(FleetNeed::Optional, ops::list_builders).await;
        reply::render(
            outcome.map(|builders| json!({ "builders": builders })),
            |value| {
                count(
                    value["builders"].as_array().map_or(0, Vec::len),
                    "Image Builder",
                )
            },
        )
    }

    /// Fetch, verify (signature and sha256) and unpack the pinned Image Builders given as
    /// `RELEASE/TARGET/SUBTARGET`, or every one the fleet uses; already cached ones are kept.
    #[tool(annotations(destructive_hint = false, idempotent_hint = true))]
    async fn ensure_builder(
        &self,
        Parameters(params): Parameters<EnsureBuilderParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let outcome = self
            .run_tracked(&context, move |workspace, _, progress| {
                let triples = params
                    .addresses
                    .iter()
                    .map(|text| Triple::parse(text))
                    .collect::<Result<Vec<_>>>()?;
                ops::ensure_builders(workspace, &triples, &mut |triple, update| {
                    progress.fetch(triple, &update)
                })
            })
            .await;
        reply::render(
            outcome.map(|builders| json!({ "builders": builders })),
            |value| {
                let builders = value["builders"].as_array().cloned().unwrap_or_default();
                let fetched = builders
                    .iter()
                    .filter(|item| item["fetched"] == true)
                    .count();
                format!(
                    "{} ready: {fetched} fetched now, {} already cached",
                    count(builders.len(), "Image Builder"),
                    builders.len() - fetched
                )
            },
        )
    }
}

impl ImagegenServer {
    /// [`ImagegenServer::run`] for runs: the client's progress token receives the executor's
    /// events (or download progress), and cancelling the request interrupts the run.
    pub(crate) async fn run_tracked<T, F>(
        &self,
        context: &RequestContext<RoleServer>,
        operation: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Workspace, &RunHooks, &ProgressForwarder) -> Result<T> + Send + 'static,
    {
        let (forwarder, sending) = ProgressForwarder::start(context);
        let cancel = self.cancel_flag(context);
        let flag = Arc::clone(&cancel.flag);
        let outcome = self
            .run(FleetNeed::Required, move |workspace| {
                let hooks = RunHooks {
                    cancel: flag,
                    reporter: &forwarder,
                    on_plan: &|_| Ok(()),
                };
                operation(workspace, &hooks, &forwarder)
            })
            .await;
        drop(cancel);
        // The forwarder was dropped with the closure; wait until its last notification left.
        sending.finish().await;
        outcome
    }
}

/// `gw: built, 3 artifacts` / `gw: reused (cache hit)` / `gw: failed: … (log: …)`.
fn profile_line(build: &ProfileBuild) -> String {
    let result = match build.result {
        BuildResult::Built => "built",
        BuildResult::Reused => "reused (cache hit)",
        BuildResult::Failed => "failed",
        BuildResult::Skipped => "skipped",
        BuildResult::Cancelled => "cancelled",
    };
    let mut line = format!("{}: {result}", build.profile_id);
    if !build.artifacts.is_empty() {
        line.push_str(&format!(", {}", count(build.artifacts.len(), "artifact")));
    }
    if let Some(error) = &build.error {
        line.push_str(&format!(": {}", error.message));
    }
    if let (Some(log), Some(_)) = (&build.log_path, &build.error) {
        line.push_str(&format!(" (log: {})", log.display()));
    }
    line
}

fn batch_summary(outcome: &BuildOutcome) -> String {
    let lines: Vec<String> = outcome.profiles.iter().map(profile_line).collect();
    format!(
        "{}\n{}",
        count(outcome.profiles.len(), "profile"),
        lines.join("\n")
    )
}
