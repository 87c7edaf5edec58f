//! Every endpoint against the served OpenAPI document, with schemathesis (PyPI; `.ci/run`
//! installs the pinned version): generated requests, and each response checked against the
//! document (status, content type, headers, schema), with auth on.

use std::process::Command;

use crate::apply::small_fleet;
use crate::serve_support::{Served, tool_available};

const TOKEN: &str = "schemathesis-token";

#[test]
fn every_endpoint_matches_the_served_openapi_document() {
    if !tool_available("schemathesis", "schemathesis (pip)") {
        return;
    }
    let fleet = small_fleet(0.0);
    // Applied once, so builds, artifacts and builders exist to be found.
    fleet.run(&["apply"]).success();
    // Without `--allow-flash`: fuzzing `POST /flash` (and applies with `allow_flash`) must
    // only ever meet the documented `403`, never write a block device of this machine.
    let server = Served::start(&fleet, &[], &[("OWRT_IMG_API_TOKEN", TOKEN)]);
    let reports = tempfile::tempdir().expect("report dir");
    let output = Command::new("schemathesis")
        .current_dir(reports.path())
        .args([
            "run",
            &format!("{}/openapi.json", server.url),
            "--checks",
            "all",
            // Requests that are valid by the schema may still be refused by the fleet's own
            // rules (a profile for an unknown device, a stale plan): 4xx, never 5xx.
            "--exclude-checks",
            "positive_data_acceptance",
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
            "--max-examples",
            "8",
            "--seed",
            "1",
            "--workers",
            "1",
            "--no-shrink",
            "--max-time",
            "30",
            "--phases",
            "examples,coverage,fuzzing",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
}
