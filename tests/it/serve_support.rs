//! A running `imagegen serve` for tests: the real binary on a free loopback port, in a test
//! fleet with the isolated environment of [`TestFleet::command`], stopped when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::TestFleet;

pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub client: reqwest::blocking::Client,
}

impl Served {
    /// Starts `imagegen serve --listen 127.0.0.1:0` plus `args`, with extra environment.
    pub fn start(fleet: &TestFleet, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut command = fleet.command(&["serve", "--listen", "127.0.0.1:0"]);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start imagegen serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(|address| format!("http://{address}"))
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        Served { child, url, client }
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET")
    }

    pub fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::blocking::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .expect("POST")
    }

    /// Starts an apply job and returns its id.
    pub fn start_apply(&self) -> String {
        let response = self.post_json("/apply", serde_json::json!({}));
        assert_eq!(response.status(), 202);
        let job: serde_json::Value = read_json(response);
        job["id"].as_str().expect("job id").to_string()
    }

    /// The `data:` lines of a job's event stream, read until the server ends it.
    pub fn job_events(&self, id: &str) -> Vec<String> {
        let response = self.get(&format!("/jobs/{id}/events"));
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().ok(),
            Some("text/event-stream")
        );
        let mut lines = Vec::new();
        for line in BufReader::new(response).lines() {
            let line = line.expect("SSE line");
            if let Some(data) = line.strip_prefix("data: ") {
                lines.push(data.to_string());
            }
        }
        lines
    }

    /// Waits for a job to finish; returns its final view.
    pub fn wait_job(&self, id: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let job: serde_json::Value = read_json(self.get(&format!("/jobs/{id}")));
            if job["status"] != "running" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} still running: {job}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a host tool the test needs is installed. `.ci/run` installs them, so on CI a
/// missing one fails the test; elsewhere the test is skipped with a loud note.
pub fn tool_available(path: &str, package: &str) -> bool {
    if std::path::Path::new(path).exists() || which(path) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("`{path}` is missing; .ci/run installs `{package}`");
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         SKIPPED: `{path}` is not installed (package `{package}`); .ci/run installs it\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    false
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// A response body as JSON (panics with the body when it is not JSON).
pub fn read_json<T: serde::de::DeserializeOwned>(response: reqwest::blocking::Response) -> T {
    let text = response.text().expect("response body");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}
