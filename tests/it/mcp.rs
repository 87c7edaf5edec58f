//! `imagegen mcp` driven over stdio by real MCP clients: the official Python SDK (a client
//! this project did not write, run from `mcp_client.py`) and rmcp's own client, against a
//! fleet on a `file://` stand-in mirror with real builds.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use imagegen_standin::demo;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, NumberOrString, ProgressNotificationParam,
    ProgressToken, ReadResourceRequestParams, RequestMetaObject, ResourceContents,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::support::{TestFleet, upstream_data};

const PROFILE: &str = "gw";

const TOOLS: [&str; 13] = [
    "apply",
    "build_image",
    "build_images_batch",
    "ensure_builder",
    "flash_artifact",
    "get_build_log",
    "get_profile",
    "list_artifacts",
    "list_builders",
    "list_builds",
    "list_profiles",
    "plan",
    "validate",
];

/// A one-profile fleet (x86/64) on a fresh stand-in mirror.
fn fleet() -> TestFleet {
    let fleet = TestFleet::empty();
    let mirror = demo::write_mirror(
        &fleet.path().join("mirror"),
        &upstream_data(),
        &[("23.05.4", "x86", "64")],
        0.0,
    )
    .expect("mirror");
    fleet.write(
        "imagegen.toml",
        &format!(
            "[fleet]\nname = \"lab\"\n\n[settings]\nmirror = \"{}\"\ntrusted_keys = [\"{}\"]\n",
            mirror.url,
            mirror.public_key.display()
        ),
    );
    fleet.write("files/banner", "managed by imagegen\n");
    fleet.write(
        &format!("profiles/{PROFILE}.yaml"),
        &format!(
            "profile_id: {PROFILE}\nname: Gateway\ndevice_id: generic\nopenwrt_release: 23.05.4\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\npackages: [luci]\nfiles:\n  - source: files/banner\n    destination: /etc/banner\n    mode: \"0644\"\n"
        ),
    );
    fleet
}

/// A fleet whose profile has problems on known lines (8: unknown field, 12: bad mode).
fn broken_fleet() -> TestFleet {
    let fleet = TestFleet::empty();
    fleet.write("imagegen.toml", "[fleet]\nname = \"broken\"\n");
    fleet.write(
        "profiles/bad.yaml",
        "profile_id: bad\nname: Broken\ndevice_id: generic\nopenwrt_release: 23.05.4\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\npakages: [luci]\nfiles:\n  - source: files/banner\n    destination: /etc/banner\n    mode: \"999\"\n",
    );
    fleet
}

/// The explicit environment of the fleet's isolated command (it starts from `env_clear`).
fn environment(fleet: &TestFleet) -> serde_json::Map<String, Value> {
    fleet
        .command(&[])
        .get_envs()
        .filter_map(|(key, value)| {
            Some((
                key.to_str()?.to_string(),
                Value::String(value?.to_str()?.to_string()),
            ))
        })
        .collect()
}

/// The interpreter that has the `mcp` package: `IMAGEGEN_TEST_PYTHON` (set by .ci/run to
/// its virtualenv) or `python3`. `None`, said loudly, when there is none; in CI a missing
/// client is a failure, not a skip.
fn python_with_mcp() -> Option<PathBuf> {
    let python = std::env::var_os("IMAGEGEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let probe = Command::new(&python).args(["-c", "import mcp"]).output();
    if probe.as_ref().is_ok_and(|output| output.status.success()) {
        return Some(python);
    }
    let why = match probe {
        Ok(output) => String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string(),
        Err(error) => error.to_string(),
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide the MCP Python SDK (`.ci/run` installs it): `{}`: {why}",
        python.display()
    );
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED mcp::python_sdk_client_drives_the_server: `{}` cannot import the MCP \
         Python SDK ({why}).\n!!!!! Install it: python3 -m venv /var/tmp/imagegen-ci-venv && \
         /var/tmp/imagegen-ci-venv/bin/pip install -r tests/it/mcp-requirements.txt, then set \
         IMAGEGEN_TEST_PYTHON=/var/tmp/imagegen-ci-venv/bin/python\n",
        python.display()
    );
    None
}

#[test]
fn python_sdk_client_drives_the_server() {
    let Some(python) = python_with_mcp() else {
        return;
    };
    let fleet = fleet();
    let broken = broken_fleet();
    let config = json!({
        "binary": crate::support::BINARY,
        "env": environment(&fleet),
        "fleet": fleet.path(),
        "broken_fleet": broken.path(),
        "profile": PROFILE,
    });
    let script = crate::support::crate_root().join("tests/it/mcp_client.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(config.to_string())
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python MCP client failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("all checks passed"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// Counts the progress notifications the server sends.
#[derive(Clone, Default)]
struct ProgressLog(Arc<Mutex<Vec<ProgressNotificationParam>>>);

impl ClientHandler for ProgressLog {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0.lock().expect("progress log").push(params);
    }
}

type Client = RunningService<RoleClient, ProgressLog>;

async fn call(client: &Client, tool: &'static str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
        .unwrap_or_else(|error| panic!("calling `{tool}`: {error}"))
}

/// The structured content of a successful call.
#[track_caller]
fn ok(result: &CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(false), "{:?}", result.content);
    result
        .structured_content
        .clone()
        .expect("structured content")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_session_builds_reuses_and_reads_records() {
    let fleet = fleet();
    let (transport, _) =
        TokioChildProcess::builder(tokio::process::Command::from(fleet.command(&["mcp"])))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
    let progress = ProgressLog::default();
    let client = progress.clone().serve(transport).await.expect("initialize");

    let tools: BTreeSet<String> = client
        .list_all_tools()
        .await
        .expect("tools")
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    assert_eq!(tools, TOOLS.iter().map(ToString::to_string).collect());

    let valid = ok(&call(&client, "validate", json!({})).await);
    assert_eq!(
        (valid["valid"].clone(), valid["profiles"].clone()),
        (json!(true), json!(1))
    );
    let profiles = ok(&call(&client, "list_profiles", json!({ "target": "x86" })).await);
    assert_eq!(profiles["profiles"][0]["profile_id"], PROFILE);

    // A build with a progress token: progress arrives before the result. (rmcp's client
    // handles each notification in its own task, so their order is checked on the wire, in
    // `stdout_carries_only_protocol_messages`.)
    let mut params = CallToolRequestParams::new("build_image").with_arguments(
        json!({ "profile_id": PROFILE })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
        NumberOrString::Number(7),
    )));
    let built = ok(&client.call_tool(params).await.expect("build_image"));
    assert_eq!(
        (built["result"].clone(), built["cache_hit"].clone()),
        (json!("built"), json!(false))
    );
    let mut values: Vec<f64> = progress
        .0
        .lock()
        .expect("log")
        .iter()
        .map(|p| p.progress)
        .collect();
    values.sort_by(f64::total_cmp);
    assert!(!values.is_empty(), "no progress notifications");
    assert!(
        values.windows(2).all(|pair| pair[1] > pair[0]),
        "repeated values: {values:?}"
    );
    let key = built["build_key"].as_str().expect("build key").to_string();

    let batch = ok(&call(
        &client,
        "build_images_batch",
        json!({ "filter": { "target": "x86" }, "fail_fast": false }),
    )
    .await);
    assert_eq!(batch["profiles"][0]["cache_hit"], true, "{batch}");

    let builds = ok(&call(&client, "list_builds", json!({ "profile_id": PROFILE })).await);
    assert_eq!(builds["builds"][0]["key"], key.as_str());
    let log = ok(&call(
        &client,
        "get_build_log",
        json!({ "build_key": &key[..12], "tail_bytes": 64 }),
    )
    .await);
    assert!(
        log["text"].as_str().is_some_and(|text| text.len() <= 64),
        "{log}"
    );
    assert_eq!(
        log["truncated"],
        log["size"].as_u64().map(|size| size > 64).unwrap_or(false)
    );

    let artifacts = ok(&call(&client, "list_artifacts", json!({ "build_key": key })).await);
    let stored: BTreeSet<&str> = artifacts["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter_map(|a| a["sha256"].as_str())
        .collect();
    let produced: BTreeSet<&str> = built["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter_map(|a| a["sha256"].as_str())
        .collect();
    assert_eq!(stored, produced);

    // Flashing without permission is a dry run: here its checks refuse a regular file, and
    // the file is untouched.
    let target = fleet.path().join("not-a-disk.img");
    std::fs::write(&target, b"precious").expect("write target");
    let sha = produced.iter().next().expect("an artifact").to_string();
    let refused = call(
        &client,
        "flash_artifact",
        json!({ "artifact": &sha[..12], "device": &target, "force": true }),
    )
    .await;
    assert_eq!(refused.is_error, Some(true), "{:?}", refused.content);
    let refused = refused.structured_content.expect("structured error");
    assert_eq!(refused["error"]["code"], "device_not_block", "{refused}");
    assert_eq!(refused["dry_run"], true);
    assert_eq!(
        refused["dry_run_reason"],
        "the server was started without `--allow-flash`"
    );
    assert_eq!(std::fs::read(&target).expect("target"), b"precious");

    let builders = ok(&call(&client, "list_builders", json!({})).await);
    assert_eq!(builders["builders"][0]["status"], "ready", "{builders}");
    let ensured = ok(&call(
        &client,
        "ensure_builder",
        json!({ "addresses": ["23.05.4/x86/64"] }),
    )
    .await);
    assert_eq!(ensured["builders"][0]["fetched"], false, "{ensured}");
    let applied = ok(&call(&client, "apply", json!({})).await);
    assert!(applied.get("report").is_none(), "nothing to run: {applied}");

    // Errors are tool errors with stable codes.
    let unknown = call(&client, "get_build_log", json!({ "build_key": "ffffffff" })).await;
    assert_eq!(unknown.is_error, Some(true));
    let error = unknown.structured_content.expect("structured error");
    assert_eq!(error["error"]["code"], "build_not_found", "{error}");

    // The fleet's files are resources; the lock exists now that the build pinned it.
    let uris: BTreeSet<String> = client
        .list_all_resources()
        .await
        .expect("resources")
        .into_iter()
        .map(|r| r.uri.clone())
        .collect();
    let expected: BTreeSet<String> = [
        "imagegen://fleet/manifest",
        "imagegen://fleet/lock",
        "imagegen://fleet/profiles/gw",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(uris, expected);
    let read = client
        .read_resource(ReadResourceRequestParams::new(
            "imagegen://fleet/profiles/gw",
        ))
        .await
        .expect("read profile");
    let on_disk = std::fs::read_to_string(fleet.path().join("profiles/gw.yaml")).expect("profile");
    match &read.contents[..] {
        [ResourceContents::TextResourceContents { text, .. }] => assert_eq!(text, &on_disk),
        other => panic!("unexpected contents {other:?}"),
    }
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new("file:///etc/passwd"))
            .await
            .is_err()
    );

    client.cancel().await.expect("close the session");
}

/// Nothing but JSON-RPC messages on stdout, even while `make image` runs and logs.
#[test]
fn stdout_carries_only_protocol_messages() {
    let fleet = fleet();
    let mut child = fleet
        .command(&["mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let mut input = child.stdin.take().expect("stdin");
    let output = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(output).lines();
    let mut send = |message: Value| {
        writeln!(input, "{message}").expect("write request");
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}),
    );
    let first = lines.next().expect("initialize response").expect("read");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "build_image", "arguments": {"profile_id": PROFILE}, "_meta": {"progressToken": "p"}}}),
    );
    let mut seen = vec![first];
    for line in lines.by_ref() {
        let line = line.expect("read");
        let done = line.contains("\"id\":2");
        seen.push(line);
        if done {
            break;
        }
    }
    drop(input);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    seen.extend(rest);
    let status = child.wait().expect("server exit");
    assert!(status.success(), "{status}");
    for line in &seen {
        let message: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not JSON-RPC on stdout ({error}): {line}"));
        assert_eq!(message["jsonrpc"], "2.0", "{line}");
    }
    let result = seen
        .iter()
        .find(|line| line.contains("\"id\":2"))
        .expect("build result");
    let result: Value = serde_json::from_str(result).expect("JSON");
    assert_eq!(result["result"]["isError"], false, "{result}");
    let progress: Vec<f64> = seen
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["method"] == "notifications/progress")
        .filter_map(|message| message["params"]["progress"].as_f64())
        .collect();
    assert!(progress.len() >= 3, "{seen:?}");
    assert!(
        progress.windows(2).all(|pair| pair[1] > pair[0]),
        "{progress:?}"
    );
}

async fn serve(fleet: &TestFleet, args: &[&str]) -> Client {
    let (transport, _) =
        TokioChildProcess::builder(tokio::process::Command::from(fleet.command(args)))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
    ProgressLog::default()
        .serve(transport)
        .await
        .expect("initialize")
}

/// `flash_artifact` on a real loop device: a dry run that shows the plan unless the call
/// says `force: true` on a server started with `--allow-flash`, which writes the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_artifact_writes_only_with_force_on_a_server_that_allows_it() {
    let Some(device) =
        crate::flash::LoopDevice::create("mcp_flash_artifact", 64 * 1024 * 1024, false)
    else {
        return;
    };
    let fleet = fleet();
    let client = serve(&fleet, &["mcp"]).await;
    let built = ok(&call(&client, "build_image", json!({ "profile_id": PROFILE })).await);
    let image = built["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["kind"] == "combined" && a["filesystem"] == "squashfs")
        .cloned()
        .expect("a combined squashfs image");
    let sha = image["sha256"].as_str().expect("sha256").to_string();
    let untouched = device.contents();
    for force in [false, true] {
        let dry = ok(&call(
            &client,
            "flash_artifact",
            json!({ "artifact": &sha[..12], "device": device.path(), "force": force }),
        )
        .await);
        assert_eq!(dry["dry_run"], true, "{dry}");
        assert_eq!(dry["report"]["dry_run"], true);
        assert_eq!(dry["report"]["plan"]["device"]["node"], device.path());
        assert!(
            dry["report"]["plan"]["steps"]
                .as_array()
                .is_some_and(|s| s.len() >= 3)
        );
        assert!(dry.get("record").is_none(), "a dry run records nothing");
    }
    assert!(device.contents() == untouched, "nothing was written");
    client.cancel().await.expect("close");

    let client = serve(&fleet, &["mcp", "--allow-flash"]).await;
    let dry = ok(&call(
        &client,
        "flash_artifact",
        json!({ "artifact": &sha[..12], "device": device.path() }),
    )
    .await);
    assert_eq!(dry["dry_run_reason"], "`force` is not true");
    let written = ok(&call(
        &client,
        "flash_artifact",
        json!({ "artifact": &sha[..12], "device": device.path(), "force": true }),
    )
    .await);
    assert_eq!(written["dry_run"], false, "{written}");
    assert_eq!(written["record"]["status"], "succeeded");
    assert_eq!(written["record"]["artifact"]["sha256"], sha.as_str());
    let blob = std::fs::read(image["store_path"].as_str().expect("path")).expect("blob");
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob[..]), &mut data)
        .expect("gunzip");
    assert_eq!(&device.contents()[..data.len()], &data[..]);
    client.cancel().await.expect("close");
}
