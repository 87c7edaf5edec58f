//! `imagegen serve` end to end: the real binary on a loopback port, over a fleet whose
//! Image Builders come from a `file://` stand-in mirror; real applies, real redb, real
//! artifact bytes.

use std::time::{Duration, Instant};

use imagegen::exec::Event;
use imagegen::plan::Plan;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::apply::small_fleet;
use crate::serve_support::{Served, read_json};
use crate::support::TestFleet;

fn json_of(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = read_json(response);
    (status, body)
}

#[test]
fn plan_apply_over_sse_then_records_and_downloads() {
    let fleet = small_fleet(0.0);
    let server = Served::start(&fleet, &[], &[]);

    let (status, health) = json_of(server.get("/health"));
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, profiles) = json_of(server.get("/profiles?tag=nothing"));
    assert_eq!((status, profiles), (200, json!([])));
    let (_, profiles) = json_of(server.get("/profiles?target=x86"));
    assert_eq!(profiles[0]["profile_id"], "gw");
    assert_eq!(profiles.as_array().map(Vec::len), Some(1));

    let plan: Plan = read_json(server.post_json("/plan", json!({})));
    assert!(plan.has_changes());
    assert_eq!(plan.summary.build, 2);

    let job = server.start_apply();
    let lines = server.job_events(&job);
    // Exactly the NDJSON of `apply --json`: executor events, then the summary line.
    let (last, events) = lines.split_last().expect("events");
    let events: Vec<Event> = events
        .iter()
        .map(|line| serde_json::from_str(line).expect("an executor event"))
        .collect();
    assert!(
        matches!(events[0], Event::RunStarted { total: 4, .. }),
        "{events:?}"
    );
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished { failed: 0, .. })
    ));
    let summary: Value = serde_json::from_str(last).expect("summary");
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["report"]["run"]["succeeded"], 4);
    let view = server.wait_job(&job);
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["result"]["report"]["run"]["succeeded"], 4);
    // A late subscriber gets the same stream; `Last-Event-ID` resumes after an event.
    assert_eq!(server.job_events(&job), lines);
    let resumed = server
        .client
        .get(format!("{}/jobs/{job}/events", server.url))
        .header("Last-Event-ID", "0")
        .send()
        .expect("resume");
    let resumed_text = resumed.text().expect("text");
    assert_eq!(resumed_text.matches("data: ").count(), lines.len() - 1);

    let after: Plan = read_json(server.post_json("/plan", json!({})));
    assert!(!after.has_changes(), "{:?}", after.summary);

    let (status, builds) = json_of(server.get("/builds"));
    assert_eq!(status, 200);
    assert_eq!(builds.as_array().map(Vec::len), Some(2));
    let gw = builds
        .as_array()
        .and_then(|builds| builds.iter().find(|build| build["profile_id"] == "gw"))
        .expect("gw build");
    let key = gw["key"].as_str().expect("key");
    let (status, shown) = json_of(server.get(&format!("/builds/{}", &key[..12])));
    assert_eq!((status, shown["key"].as_str()), (200, Some(key)));
    let (_, log) = json_of(server.get(&format!("/builds/{key}/log?tail=100")));
    assert!(log["text"].as_str().is_some_and(|text| text.len() <= 100));
    let (_, artifacts) = json_of(server.get(&format!("/builds/{key}/artifacts")));
    let image = artifacts
        .as_array()
        .and_then(|all| all.iter().find(|a| a["kind"] == "combined"))
        .expect("combined image")
        .clone();
    let sha = image["sha256"].as_str().expect("sha");
    // Filtered listings read builds after artifacts, with the store still open.
    let (status, of_gw) = json_of(server.get("/artifacts?profile=gw"));
    assert_eq!(status, 200, "{of_gw}");
    assert_eq!(
        of_gw.as_array().map(Vec::len),
        artifacts.as_array().map(Vec::len)
    );
    let (status, detail) = json_of(server.get(&format!("/artifacts/{sha}")));
    assert_eq!((status, detail["present"].as_bool()), (200, Some(true)));
    let (_, builders) = json_of(server.get("/builders"));
    assert_eq!(builders.as_array().map(Vec::len), Some(2));
    let (status, builder) = json_of(server.get("/builders/23.05.4/x86/64"));
    assert_eq!(
        (status, builder["address"].as_str()),
        (200, Some("builder.23.05.4/x86/64"))
    );

    check_downloads(&server, &fleet, sha, image["size"].as_u64().expect("size"));

    // Build-or-reuse through the API reports the cache hit.
    let response = server.post_json("/builds", json!({ "profiles": ["gw"] }));
    assert_eq!(response.status(), 202);
    let job: Value = read_json(response);
    let view = server.wait_job(job["id"].as_str().expect("id"));
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["result"]["profiles"][0]["cache_hit"], true, "{view}");
}

fn check_downloads(server: &Served, fleet: &TestFleet, sha: &str, size: u64) {
    let blob = fleet
        .state_dir()
        .join("artifacts/blobs/sha256")
        .join(&sha[..2])
        .join(sha);
    let bytes = std::fs::read(&blob).expect("blob");
    assert_eq!(bytes.len() as u64, size);
    let url = format!("{}/artifacts/{sha}/download", server.url);

    let whole = server.client.get(&url).send().expect("download");
    assert_eq!(whole.status(), 200);
    let etag = format!("\"{sha}\"");
    assert_eq!(whole.headers()["etag"].to_str().ok(), Some(etag.as_str()));
    assert_eq!(
        whole.headers()["content-length"].to_str().ok(),
        Some(size.to_string().as_str())
    );
    let body = whole.bytes().expect("body");
    assert_eq!(hex::encode(Sha256::digest(&body)), sha);

    let part = server
        .client
        .get(&url)
        .header("Range", "bytes=100-4195")
        .send()
        .expect("range");
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().ok(),
        Some(format!("bytes 100-4195/{size}").as_str())
    );
    assert_eq!(part.headers()["content-length"].to_str().ok(), Some("4096"));
    assert_eq!(&part.bytes().expect("part")[..], &bytes[100..4196]);

    let tail = server
        .client
        .get(&url)
        .header("Range", "bytes=-10")
        .send()
        .expect("suffix");
    assert_eq!(tail.status(), 206);
    assert_eq!(&tail.bytes().expect("tail")[..], &bytes[bytes.len() - 10..]);

    let beyond = server
        .client
        .get(&url)
        .header("Range", format!("bytes={size}-"))
        .send()
        .expect("beyond");
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        beyond.headers()["content-range"].to_str().ok(),
        Some(format!("bytes */{size}").as_str())
    );

    let cached = server
        .client
        .get(&url)
        .header("If-None-Match", etag)
        .send()
        .expect("conditional");
    assert_eq!(cached.status(), 304);
}

#[test]
fn profile_writes_validate_with_locations_and_misses_are_404() {
    let fleet = small_fleet(0.0);
    let server = Served::start(&fleet, &[], &[]);
    let put = |id: &str, content_type: &str, body: &str| {
        json_of(
            server
                .client
                .put(format!("{}/profiles/{id}", server.url))
                .header("Content-Type", content_type)
                .body(body.to_string())
                .send()
                .expect("PUT"),
        )
    };
    let valid = "profile_id: lab\nname: Lab\ndevice_id: generic\nopenwrt_release: 23.05.4\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\n";

    // Two problems, both with file:line:col in the request body.
    let broken = valid
        .replace("name: Lab\n", "name: Lab\npackges: [luci]\n")
        .replace(
            "generic\nopenwrt",
            "generic\nbin_dir: ../../outside\nopenwrt",
        );
    let (status, body) = put("lab", "application/yaml", &broken);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation");
    let locations: Vec<String> = body["error"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|problem| {
            let at = &problem["location"];
            format!(
                "{}:{}:{}",
                at["file"].as_str().unwrap_or("?"),
                at["line"],
                at["column"]
            )
        })
        .collect();
    assert_eq!(
        locations,
        ["profiles/lab.yaml:3:1", "profiles/lab.yaml:5:10"],
        "{body}"
    );

    let (status, body) = put("other", "application/yaml", valid);
    assert_eq!(status, 422);
    assert_eq!(
        body["error"]["problems"][0]["location"]["line"], 1,
        "{body}"
    );

    let (status, body) = put("lab", "application/yaml", valid);
    assert_eq!(
        (status, body["file"].as_str()),
        (200, Some("profiles/lab.yaml")),
        "{body}"
    );
    assert!(fleet.path().join("profiles/lab.yaml").is_file());
    let (status, shown) = json_of(server.get("/profiles/lab"));
    assert_eq!(
        (status, shown["profile"]["name"].as_str()),
        (200, Some("Lab"))
    );

    // POST refuses an existing id; JSON bodies work too.
    let as_json = json!({"profile_id": "lab", "name": "Lab", "device_id": "generic",
        "openwrt_release": "23.05.4", "target": "x86", "subtarget": "64",
        "imagebuilder_profile": "generic"});
    let (status, body) = json_of(server.post_json("/profiles", as_json.clone()));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation")),
        "{body}"
    );
    let mut renamed = as_json;
    renamed["profile_id"] = json!("lab2");
    let (status, body) = json_of(server.post_json("/profiles", renamed));
    assert_eq!(
        (status, body["file"].as_str()),
        (201, Some("profiles/lab2.json")),
        "{body}"
    );

    let delete = |id: &str| {
        json_of(
            server
                .client
                .delete(format!("{}/profiles/{id}", server.url))
                .send()
                .expect("DELETE"),
        )
    };
    assert_eq!(delete("lab2").0, 200);
    assert!(!fleet.path().join("profiles/lab2.json").exists());
    let (status, body) = delete("lab2");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("profile_not_found"))
    );

    for (path, code) in [
        ("/profiles/nope", "profile_not_found"),
        ("/builds/ffffffff", "build_not_found"),
        (
            &format!("/artifacts/{}/download", "0".repeat(64)),
            "artifact_not_found",
        ),
        ("/jobs/nope", "job_not_found"),
        ("/builders/23.05.4/x86/generic", "builder_not_found"),
        ("/no/such/path", "usage"),
    ] {
        let (status, body) = json_of(server.get(path));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some(code)),
            "{path}: {body}"
        );
    }
    let malformed = server
        .client
        .post(format!("{}/plan", server.url))
        .body("{not json")
        .send()
        .expect("POST");
    let (status, body) = json_of(malformed);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("usage")),
        "{body}"
    );
    let huge = server
        .client
        .put(format!("{}/profiles/lab", server.url))
        .body(vec![b'#'; 2 * 1024 * 1024])
        .send()
        .expect("PUT");
    let (status, body) = json_of(huge);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("usage")),
        "{body}"
    );
}

#[test]
fn tokens_are_required_when_set_and_never_shown() {
    let fleet = small_fleet(0.0);
    let secret = "correct-horse-battery-staple";
    let server = Served::start(&fleet, &[], &[("OWRT_IMG_API_TOKEN", secret)]);
    let (status, body) = json_of(server.get("/profiles"));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let with = |token: &str| {
        server
            .client
            .get(format!("{}/config", server.url))
            .bearer_auth(token)
            .send()
            .expect("GET")
    };
    assert_eq!(with("wrong").status(), 401);
    let config = with(secret);
    assert_eq!(config.status(), 200);
    assert!(!config.text().expect("text").contains(secret));
    assert_eq!(server.get("/health").status(), 200);
    assert_eq!(server.get("/openapi.json").status(), 200);
    drop(server);

    let token_file = fleet.path().join("token");
    std::fs::write(&token_file, "from-a-file\n").expect("token file");
    let server = Served::start(
        &fleet,
        &["--token-file", token_file.to_str().expect("path")],
        &[],
    );
    assert_eq!(server.get("/builds").status(), 401);
    let authorized = server
        .client
        .get(format!("{}/builds", server.url))
        .bearer_auth("from-a-file")
        .send()
        .expect("GET");
    assert_eq!(authorized.status(), 200);
    drop(server);

    // Without a token, loopback is open.
    let server = Served::start(&fleet, &[], &[]);
    assert_eq!(server.get("/builds").status(), 200);
}

#[test]
fn off_loopback_needs_a_token() {
    let fleet = small_fleet(0.0);
    let refused = fleet.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(refused.code, 3, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("refusing to listen on `0.0.0.0:0` without an API token"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("OWRT_IMG_API_TOKEN"),
        "{}",
        refused.stderr
    );

    // With a token it starts, listening on every address; reached here over loopback only.
    let mut child = fleet
        .command(&["serve", "--listen", "0.0.0.0:0"])
        .env("OWRT_IMG_API_TOKEN", "t0ken")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("line");
    let port = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .expect("port")
        .to_string();
    let response =
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/profiles")).expect("GET");
    assert_eq!(response.status(), 401);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_second_apply_while_one_runs_gets_409() {
    // Slow builds (CPU seconds each) keep the first apply running.
    let fleet = small_fleet(1.0);
    let server = Served::start(&fleet, &[], &[]);
    let job = server.start_apply();

    let (status, body) = json_of(server.post_json("/apply", json!({})));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("state_locked")),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["job"].as_str(), Some(job.as_str()));
    let (status, body) = json_of(server.get("/builds"));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("state_locked")),
        "{body}"
    );
    // Reading the fleet files does not need the store.
    assert_eq!(server.get("/profiles").status(), 200);
    // Another process sees the server's job as the holder.
    let cli = fleet.run(&["apply"]);
    assert_eq!(cli.code, 5, "{}{}", cli.stdout, cli.stderr);

    let view = server.wait_job(&job);
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(server.get("/builds").status(), 200);
}

#[test]
fn an_apply_in_another_process_makes_post_apply_409() {
    let fleet = small_fleet(1.0);
    let server = Served::start(&fleet, &["--store-wait-ms", "200"], &[]);
    let mut cli = fleet.command(&["apply"]).spawn().expect("cli apply");
    let lock = fleet.state_dir().join("state.redb.lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&lock).map_or(true, |text| !text.contains("imagegen apply")) {
        assert!(
            Instant::now() < deadline,
            "the CLI apply never took the store"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = json_of(server.post_json("/apply", json!({})));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("state_locked")),
        "{body}"
    );
    let (status, body) = json_of(server.get("/artifacts"));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("state_locked")),
        "{body}"
    );
    assert!(cli.wait().expect("cli").success());
    assert_eq!(server.get("/artifacts").status(), 200);
}

/// The server keeps a loaded fleet while its files keep their size and modification time,
/// and sees every edit, added and removed profile file.
#[test]
fn edits_to_old_fleet_files_are_seen() {
    let fleet = small_fleet(0.0);
    let age = |path: &std::path::Path, when: &str| {
        let status = std::process::Command::new("touch")
            .args(["-d", when])
            .arg(path)
            .status()
            .expect("touch");
        assert!(status.success());
    };
    for file in ["imagegen.toml", "profiles/gw.yaml", "profiles/ap.yaml"] {
        age(&fleet.path().join(file), "1 hour ago");
    }
    let server = Served::start(&fleet, &[], &[]);
    let name = |id: &str| -> Value {
        let (_, detail) = json_of(server.get(&format!("/profiles/{id}")));
        detail["profile"]["name"].clone()
    };
    assert_eq!(name("gw"), "gw");
    assert_eq!(name("gw"), "gw");

    let gw = fleet.path().join("profiles/gw.yaml");
    let text = std::fs::read_to_string(&gw).expect("profile");
    std::fs::write(&gw, text.replace("name: gw", "name: gateway")).expect("edit");
    age(&gw, "30 minutes ago");
    assert_eq!(name("gw"), "gateway");

    let copy = text.replace("profile_id: gw", "profile_id: gw2");
    fleet.write("profiles/gw2.yaml", &copy);
    age(&fleet.path().join("profiles/gw2.yaml"), "20 minutes ago");
    assert_eq!(name("gw2"), "gw");
    std::fs::remove_file(fleet.path().join("profiles/gw2.yaml")).expect("remove");
    let (status, _) = json_of(server.get("/profiles/gw2"));
    assert_eq!(status, 404);
}
