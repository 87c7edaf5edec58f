//! Input shapes that made parsing quadratic (issue 13, item 4), at sizes where a quadratic
//! parser takes many seconds: each must now parse, with the right problems. These tests
//! assert results, never timings; `examples/bench_parse.rs` measures time and memory.

use std::sync::Arc;

use imagegen::ErrorCode;
use imagegen::error::MAX_REPORTED_PROBLEMS;
use imagegen::manifest::{load_fleet, parse_profile};
use imagegen::source::{Format, SourceFile};

use crate::support::TestFleet;

fn source(name: &str, text: String) -> Arc<SourceFile> {
    Arc::new(SourceFile::new(name.into(), name.into(), text))
}

fn problems(name: &str, text: String, format: Format) -> Vec<String> {
    match parse_profile(&source(name, text), format) {
        Ok(_) => panic!("{name} has problems"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn one_line_yaml_flow_list_of_empty_mappings() {
    // 512 KiB on one line: every value's column used to be counted from the line start.
    let items = vec!["{}"; 512 * 1024 / 4].join(", ");
    let text = format!("x: [{items}]\n");
    let found = problems("flow.yaml", text, Format::Yaml);
    assert_eq!(found.len(), 8, "{found:#?}");
    assert_eq!(
        found[0],
        "flow.yaml:1:1: missing required field `profile_id`"
    );
    assert_eq!(found[7], "flow.yaml:1:1: unknown field `x`");
}

#[test]
fn one_line_json_object_with_many_keys() {
    // Duplicate keys used to be found by scanning every earlier key.
    let keys = 60_000;
    let entries: Vec<String> = (0..keys).map(|index| format!("\"k{index}\":0")).collect();
    let text = format!("{{{},\"k17\":1}}", entries.join(","));
    let column = |offset: Option<usize>| offset.map_or(0, |offset| offset + 1);
    let first = column(text.find("\"k17\""));
    let second = column(text.rfind("\"k17\""));
    let found = problems("keys.json", text, Format::Json);
    assert_eq!(
        found,
        [format!(
            "keys.json:1:{second}: duplicate key `k17` (first defined at line 1, column {first})"
        )]
    );
}

#[test]
fn many_unknown_keys_are_capped_and_counted() {
    let keys = 30_000;
    let mut text = String::from(
        "profile_id: ap\nname: AP\ndevice_id: d\nopenwrt_release: 23.05.4\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: p\n",
    );
    for index in 0..keys {
        text.push_str(&format!("unknown_{index}: {index}\n"));
    }
    let found = problems("unknown.yaml", text, Format::Yaml);
    assert_eq!(found.len(), MAX_REPORTED_PROBLEMS + 1);
    assert_eq!(found[0], "unknown.yaml:8:1: unknown field `unknown_0`");
    assert_eq!(
        found[MAX_REPORTED_PROBLEMS],
        format!("and {} more problems", keys - MAX_REPORTED_PROBLEMS)
    );
}

#[test]
fn many_devices_with_unknown_profiles_against_many_profiles() {
    let fleet = TestFleet::empty();
    let profiles = 300;
    let devices = 15_000;
    for index in 0..profiles {
        fleet.write(
            &format!("profiles/p{index}.yaml"),
            &format!(
                "profile_id: profile-{index}\nname: P\ndevice_id: d\nopenwrt_release: 23.05.4\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: p\n"
            ),
        );
    }
    let mut manifest = String::from("[fleet]\nname = \"big\"\n");
    for index in 0..devices {
        manifest.push_str(&format!(
            "\n[[device]]\nid = \"dev-{}\"\nprofile = \"missing-{index}\"\n",
            index % (devices - 10)
        ));
    }
    fleet.write("imagegen.toml", &manifest);
    let error = match load_fleet(&fleet.path().join("imagegen.toml"), None) {
        Ok(_) => panic!("unknown profiles must be reported"),
        Err(error) => error,
    };
    // Ten duplicate device ids are validation problems, so the whole error is `validation`.
    assert_eq!(error.code, ErrorCode::Validation);
    assert_eq!(
        error.message,
        format!("invalid fleet `imagegen.toml`: {} problems", devices + 10)
    );
    assert_eq!(error.problems.len(), MAX_REPORTED_PROBLEMS + 1);
    assert_eq!(
        error.problems[0].to_string(),
        "imagegen.toml:6:11: device `dev-0` uses unknown profile `missing-0`"
    );
}

#[test]
fn a_manifest_over_the_size_limit_is_refused_before_parsing() {
    let fleet = TestFleet::empty();
    let limit = imagegen::source::MAX_MANIFEST_SIZE as usize;
    let mut manifest = String::from("[fleet]\nname = \"big\"\n");
    manifest.push_str(&"# padding\n".repeat(limit / 10 + 1));
    fleet.write("imagegen.toml", &manifest);
    let run = fleet.run(&["validate"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("more than the limit of {limit} bytes")),
        "{}",
        run.stderr
    );
}
