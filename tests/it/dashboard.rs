//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! which `.ci/run` installs): load `/`, see the plan, click Apply, watch the progress reach
//! success, download an artifact and check its bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::apply::small_fleet;
use crate::serve_support::{Served, tool_available};
use crate::webdriver::{Browser, CHROMEDRIVER, CHROMIUM};

#[test]
fn dashboard_plans_applies_and_downloads() {
    if !tool_available(CHROMIUM, "chromium") || !tool_available(CHROMEDRIVER, "chromium-driver") {
        return;
    }
    let fleet = small_fleet(0.5);
    let server = Served::start(&fleet, &[], &[]);
    let downloads = tempfile::tempdir().expect("downloads dir");
    let browser = Browser::start(downloads.path());
    browser.open(&format!("{}/", server.url));

    let row = browser.wait_for(
        "#plan tr[data-address='build.lab.gw']",
        Duration::from_secs(60),
    );
    let text = browser.text(&row);
    assert!(text.starts_with("create"), "{text}");
    let summary = browser.wait_for("#plan-summary[data-changes]", Duration::from_secs(10));
    assert!(
        browser.text(&summary).contains("2 to build"),
        "{}",
        browser.text(&summary)
    );

    let apply = browser.wait_for("#apply:not([disabled])", Duration::from_secs(10));
    browser.click(&apply);
    let status = browser.wait_for("#job-status", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let state = browser
            .attribute(&status, "data-status")
            .unwrap_or_default();
        if state == "succeeded" {
            break;
        }
        assert!(
            state == "idle" || state == "running",
            "job ended as {state}: {}",
            browser.text(&status)
        );
        assert!(Instant::now() < deadline, "apply did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = browser.find_all("#job-events li");
    assert!(events.len() >= 9, "{} progress lines", events.len());
    let progress = browser.wait_for("#job-progress", Duration::from_secs(1));
    assert_eq!(browser.attribute(&progress, "value").as_deref(), Some("4"));

    // After the run the page shows the builds and the artifacts; the plan has no changes.
    browser.wait_for("#plan-summary[data-changes='0']", Duration::from_secs(30));
    browser.wait_for("#builds tbody td.status-succeeded", Duration::from_secs(30));
    let link = browser.wait_for("#artifacts a.download", Duration::from_secs(30));
    let href = browser.attribute(&link, "href").expect("href");
    let sha = href
        .trim_end_matches("/download")
        .rsplit('/')
        .next()
        .expect("sha")
        .to_string();
    let name = browser.attribute(&link, "download").expect("file name");
    browser.click(&link);
    let saved = wait_for_file(&downloads.path().join(&name));
    assert_eq!(hex::encode(Sha256::digest(&saved)), sha);
}

fn wait_for_file(path: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(bytes) = std::fs::read(path) {
            let partial = path.with_extension(format!(
                "{}.crdownload",
                path.extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or_default()
            ));
            if !partial.exists() {
                return bytes;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no download at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
