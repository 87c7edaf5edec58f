// The fleet dashboard: plain DOM and fetch against this server's API, nothing else.
"use strict";

const $ = (selector) => document.querySelector(selector);
let token = sessionStorage.getItem("imagegen-token") || "";
let currentPlan = null;
let followedJob = null;

function headers(extra) {
  const result = Object.assign({}, extra || {});
  if (token) result["Authorization"] = "Bearer " + token;
  return result;
}

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || ("HTTP " + status));
    this.status = status;
    this.code = error.code;
    this.problems = error.problems || [];
    this.help = error.help;
  }
}

async function api(path, options) {
  options = options || {};
  const response = await fetch(path, {
    method: options.method || "GET",
    headers: headers(options.body ? { "Content-Type": "application/json" } : {}),
    body: options.body ? JSON.stringify(options.body) : undefined,
  });
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (response.status === 401) $("#token-form").hidden = false;
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function showError(error) {
  const box = $("#error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  let text = (error.code ? "[" + error.code + "] " : "") + error.message;
  for (const problem of error.problems || []) {
    const at = problem.location ? problem.location.file + ":" + problem.location.line + ":" + problem.location.column + ": " : "";
    text += "\n  " + at + problem.message;
  }
  if (error.help) text += "\nhint: " + error.help;
  box.textContent = text;
  box.hidden = false;
}

function cell(row, content, className) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content); else td.textContent = content == null ? "" : String(content);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tableSelector, items, render) {
  const body = $(tableSelector + " tbody");
  body.replaceChildren();
  if (items.length === 0) {
    const row = document.createElement("tr");
    const empty = cell(row, "None yet.", "empty");
    empty.colSpan = $(tableSelector + " thead tr").children.length;
    body.appendChild(row);
    return;
  }
  for (const item of items) {
    const row = document.createElement("tr");
    render(row, item);
    body.appendChild(row);
  }
}

function bytes(size) {
  if (size >= 1 << 20) return (size / (1 << 20)).toFixed(1) + " MiB";
  if (size >= 1 << 10) return (size / (1 << 10)).toFixed(1) + " KiB";
  return size + " B";
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

// --- plan ---------------------------------------------------------------------------------

async function loadPlan() {
  $("#plan-summary").textContent = "Planning…";
  try {
    currentPlan = await api("/plan", { method: "POST", body: {} });
    renderPlan();
  } catch (error) {
    currentPlan = null;
    $("#apply").disabled = true;
    $("#plan-summary").textContent = error.code === "state_locked" ? "The state store is busy (an apply runs)." : "No plan.";
    if (error.code !== "state_locked") showError(error);
  }
}

function renderPlan() {
  const plan = currentPlan;
  const summary = plan.summary;
  const changes = summary.fetch + summary.build + summary.rebuild + summary.flash + summary.remove;
  $("#fleet-name").textContent = "· " + plan.fleet;
  $("#plan-summary").textContent = changes === 0
    ? "No changes: the fleet matches what is recorded."
    : `Plan: ${summary.fetch} to fetch, ${summary.build} to build, ${summary.rebuild} to rebuild, ${summary.flash} to flash, ${summary.remove} to remove; ${summary.unchanged} unchanged.`;
  $("#plan-summary").dataset.changes = String(changes);
  $("#apply").disabled = followedJob !== null;
  const all = $("#show-unchanged").checked;
  const actions = plan.actions.filter((action) => all || action.action !== "no-op");
  fill("#plan", actions, (row, action) => {
    row.dataset.address = action.address;
    cell(row, action.action, "action " + action.action);
    cell(row, action.address);
    cell(row, action.reasons.map((reason) => reason.text).join("; "));
  });
  const notices = $("#plan-notices");
  notices.replaceChildren();
  for (const notice of plan.notices || []) {
    const item = document.createElement("li");
    item.textContent = notice;
    notices.appendChild(item);
  }
}

// --- apply job ----------------------------------------------------------------------------

async function startApply() {
  showError(null);
  $("#apply").disabled = true;
  try {
    // Apply exactly the plan on screen (the server refuses it with `stale_plan` if the
    // fleet moved since). A plan with Image Builders not yet pinned in imagegen.lock cannot
    // be applied exactly (their keys are only known after locking): apply the fleet then.
    const exact = currentPlan && currentPlan.actions.every((action) => action.resource !== "builder" || action.key !== null);
    const job = await api("/apply", { method: "POST", body: exact ? { plan: currentPlan } : {} });
    follow(job.id);
  } catch (error) {
    showError(error);
    $("#apply").disabled = false;
  }
}

function setJobStatus(status, text) {
  const span = $("#job-status");
  span.dataset.status = status;
  span.className = "status-" + status;
  span.textContent = text;
}

function logEvent(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("#job-events").appendChild(item);
  item.scrollIntoView({ block: "nearest" });
}

// Server-sent events read with fetch, so the bearer token can go in a header.
async function follow(id) {
  followedJob = id;
  $("#apply").disabled = true;
  $("#cancel-job").hidden = false;
  $("#job-events").replaceChildren();
  setJobStatus("running", "Job " + id + ": running…");
  const progress = $("#job-progress");
  progress.value = 0;
  let total = 0, done = 0;
  const handle = (event) => {
    switch (event.event) {
      case "run_started": total = event.total; progress.max = Math.max(total, 1); logEvent(`run started: ${total} steps`); break;
      case "step_started": logEvent(`${event.address}: started`); break;
      case "step_progress": logEvent(`${event.address}: ${event.message}`); break;
      case "step_finished": done += 1; progress.value = done; logEvent(`${event.address}: ${event.outcome}${event.error ? " — " + event.error.message : ""}${event.reason ? " — " + event.reason : ""}`); break;
      case "run_finished": logEvent(`run finished: ${event.succeeded} succeeded, ${event.failed} failed, ${event.skipped} skipped, ${event.cancelled} cancelled`); break;
      case "summary": progress.value = progress.max; break;
      default: if (event.error) { logEvent("error: " + event.error.message); showError(event.error); }
    }
  };
  try {
    const response = await fetch("/jobs/" + encodeURIComponent(id) + "/events", { headers: headers() });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done: finished } = await reader.read();
      if (finished) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart()).join("\n");
        if (data) handle(JSON.parse(data));
      }
    }
  } catch (error) {
    showError(error);
  }
  try {
    const job = await api("/jobs/" + encodeURIComponent(id));
    setJobStatus(job.status, "Job " + id + ": " + job.status);
    if (job.error) showError(job.error);
  } catch (error) {
    showError(error);
  }
  followedJob = null;
  $("#cancel-job").hidden = true;
  await loadAll();
}

async function cancelJob() {
  if (followedJob) await api("/jobs/" + encodeURIComponent(followedJob) + "/cancel", { method: "POST" }).catch(showError);
}

// --- records ------------------------------------------------------------------------------

async function loadBuilders() {
  const builders = await api("/builders");
  fill("#builders", builders, (row, builder) => {
    cell(row, `${builder.release}/${builder.target}/${builder.subtarget}`);
    cell(row, builder.status, "status-" + builder.status);
    cell(row, bytes(builder.size));
    cell(row, when(builder.last_used));
  });
}

async function loadBuilds() {
  const builds = (await api("/builds")).slice(0, 25);
  fill("#builds", builds, (row, build) => {
    cell(row, when(build.finished_at));
    cell(row, build.profile_id);
    cell(row, build.status, "status-" + build.status);
    cell(row, build.key.slice(0, 12));
    cell(row, build.artifacts.length);
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "log";
    button.disabled = !build.log_path;
    button.addEventListener("click", () => showLog(build));
    cell(row, button);
  });
}

async function showLog(build) {
  try {
    const log = await api("/builds/" + build.key + "/log?tail=65536");
    $("#log-title").textContent = `Log of ${build.profile_id} (${build.key.slice(0, 12)})${log.truncated ? ", last 64 KiB" : ""}`;
    $("#log").textContent = log.text;
    $("#log-box").hidden = false;
  } catch (error) {
    showError(error);
  }
}

async function loadArtifacts() {
  const artifacts = await api("/artifacts");
  fill("#artifacts", artifacts, (row, artifact) => {
    cell(row, artifact.name);
    cell(row, artifact.kind + (artifact.filesystem ? " (" + artifact.filesystem + ")" : ""));
    cell(row, bytes(artifact.size));
    cell(row, artifact.sha256.slice(0, 16));
    const link = document.createElement("a");
    link.href = "/artifacts/" + artifact.sha256 + "/download";
    link.download = artifact.name;
    link.textContent = "download";
    link.className = "download";
    // A plain link cannot carry the token; with one, fetch the bytes and hand them over.
    link.addEventListener("click", async (event) => {
      if (!token) return;
      event.preventDefault();
      const response = await fetch(link.href, { headers: headers() });
      const url = URL.createObjectURL(await response.blob());
      const temporary = document.createElement("a");
      temporary.href = url;
      temporary.download = artifact.name;
      temporary.click();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    });
    cell(row, link);
  });
}

async function loadAll() {
  const loads = [loadPlan(), loadBuilders(), loadBuilds(), loadArtifacts()];
  const results = await Promise.allSettled(loads);
  const failed = results.find((result) => result.status === "rejected" && result.reason.code !== "state_locked");
  if (failed) showError(failed.reason);
}

async function start() {
  $("#refresh-plan").addEventListener("click", () => { showError(null); loadPlan(); });
  $("#apply").addEventListener("click", startApply);
  $("#cancel-job").addEventListener("click", cancelJob);
  $("#show-unchanged").addEventListener("change", () => currentPlan && renderPlan());
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("#token-input").value.trim();
    sessionStorage.setItem("imagegen-token", token);
    $("#token-form").hidden = true;
    showError(null);
    connect();
  });
  connect();
}

async function connect() {
  try {
    const health = await api("/health");
    $("#server-version").textContent = "imagegen " + health.version;
    if (health.running_job) { follow(health.running_job); return; }
  } catch (error) {
    showError(error);
  }
  await loadAll();
}

start();
