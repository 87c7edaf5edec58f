//! A minimal W3C WebDriver client over blocking HTTP, driving Debian's `chromedriver` and
//! headless `chromium` on loopback: enough to load a page, find, read and click elements.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session that saves downloads into
    /// `downloads`.
    pub fn start(downloads: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{base}/status"))
            .send()
            .map_or(true, |response| !response.status().is_success())
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display())],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
            _profile: profile,
        };
        let created = browser.call("POST", "/session", capabilities);
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        };
        let response: Value =
            crate::serve_support::read_json(request.send().expect("webdriver request"));
        response["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }));
    }

    /// The elements matching a CSS selector now.
    pub fn find_all(&self, selector: &str) -> Vec<String> {
        let found = self.session_call(
            "POST",
            "/elements",
            json!({ "using": "css selector", "value": selector }),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|element| element[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until `selector` matches, then returns the first match.
    pub fn wait_for(&self, selector: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(element) = self.find_all(selector).into_iter().next() {
                return element;
            }
            assert!(Instant::now() < deadline, "nothing matched `{selector}`");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn text(&self, element: &str) -> String {
        let value = self.session_call("GET", &format!("/element/{element}/text"), Value::Null);
        value.as_str().unwrap_or_default().to_string()
    }

    pub fn attribute(&self, element: &str, name: &str) -> Option<String> {
        let value = self.session_call(
            "GET",
            &format!("/element/{element}/attribute/{name}"),
            Value::Null,
        );
        value.as_str().map(str::to_string)
    }

    pub fn click(&self, element: &str) {
        self.session_call("POST", &format!("/element/{element}/click"), json!({}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .client
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
