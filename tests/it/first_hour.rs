//! A newcomer's first hour: what `validate` and `plan` say when the mirror is unreachable,
//! colour only on terminals, and where the images are after a build.

use std::net::TcpListener;

use crate::support::TestFleet;

/// A loopback port with nothing listening on it (bound, then released).
fn refused_mirror() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn example_online(mirror: &str) -> TestFleet {
    let fleet = TestFleet::example();
    let manifest = std::fs::read_to_string(fleet.path().join("imagegen.toml")).expect("manifest");
    let manifest = manifest.replace(
        "mirror = \"https://downloads.openwrt.org\"",
        &format!("mirror = \"{mirror}\""),
    );
    fleet.write("imagegen.toml", &manifest);
    fleet
}

#[test]
fn validate_says_which_checks_it_could_not_run_and_strict_refuses() {
    let fleet = example_online(&refused_mirror());
    let started = std::time::Instant::now();
    let mut command = fleet.command(&["validate"]);
    command.env_remove("OWRT_IMG_OFFLINE");
    let output = command.output().expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("is valid as far as it could be checked: 5 profiles, 5 devices."),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "Not checked: Image Builder profiles, filesystems and image kinds against upstream profiles.json for 5 profiles"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("the mirror is unreachable"), "{stdout}");
    assert!(
        stdout.contains("`--strict` makes this an error"),
        "{stdout}"
    );
    // A refused connection is not retried: no retry warnings, no ANSI codes in a file.
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));

    let mut strict = fleet.command(&["validate", "--strict", "--json"]);
    strict.env_remove("OWRT_IMG_OFFLINE");
    let output = strict.output().expect("run");
    assert_eq!(output.status.code(), Some(3));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(error["error"]["code"], "precondition");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("`--strict`: not every check could run"),
        "{error}"
    );
}

#[test]
fn plan_notes_are_true_without_a_lock_file() {
    let fleet = example_online(&refused_mirror());
    let mut command = fleet.command(&["plan", "--json"]);
    command.env_remove("OWRT_IMG_OFFLINE");
    let output = command.output().expect("run");
    assert_eq!(output.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let notices = plan["notices"].to_string();
    assert!(notices.contains("there is no imagegen.lock"), "{notices}");
    assert!(!notices.contains("planned from imagegen.lock"), "{notices}");
}

#[test]
fn a_dead_mirror_fails_fast_with_a_hint() {
    let fleet = example_online(&refused_mirror());
    let mut command = fleet.command(&["lock", "--json"]);
    command.env_remove("OWRT_IMG_OFFLINE");
    let output = command.output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(error["error"]["code"], "download_error");
    let help = error["error"]["help"].as_str().unwrap_or_default();
    assert!(
        help.contains("`mirror` setting") && help.contains("--offline"),
        "{help}"
    );
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("gave up after"), "{message}");
}

#[test]
fn a_profile_that_does_not_parse_is_reported_without_its_consequences() {
    let fleet = TestFleet::empty();
    fleet.write(
        "imagegen.toml",
        "[fleet]\nname = \"home\"\n\n[[device]]\nid = \"ap\"\nprofile = \"ap\"\n",
    );
    fleet.write("profiles/ap.yaml", "profile_id: ap\nname: [unclosed\n");
    let run = fleet.run(&["validate", "--json"]);
    assert_eq!(run.code, 3);
    let error = run.json();
    assert_eq!(error["error"]["code"], "validation");
    let problems = error["error"]["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["location"]["file"], "profiles/ap.yaml");
    assert!(!error.to_string().contains("unknown profile"), "{error}");
}

#[test]
fn an_unknown_profile_lists_the_few_that_exist_and_an_empty_fleet_says_so() {
    let fleet = TestFleet::empty();
    fleet.write(
        "imagegen.toml",
        "[fleet]\nname = \"home\"\n\n[[device]]\nid = \"ap\"\nprofile = \"zzz\"\n",
    );
    fleet.write(
        "profiles/gw.yaml",
        "profile_id: gw\nname: gw\ndevice_id: generic\nopenwrt_release: 23.05.4\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\n",
    );
    let run = fleet.run(&["validate", "--json"]);
    assert_eq!(run.code, 3);
    let problem = &run.json()["error"]["problems"][0];
    assert_eq!(problem["code"], "profile_not_found");
    assert_eq!(problem["help"], "the fleet's profiles: `gw`");

    let empty = TestFleet::empty();
    empty.write("imagegen.toml", "[fleet]\nname = \"home\"\n");
    std::fs::create_dir_all(empty.path().join("profiles")).expect("profiles dir");
    let run = empty.run(&["validate"]);
    run.success();
    assert!(
        run.stdout.contains("0 profiles, 0 devices"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("the fleet has no profiles yet"),
        "{}",
        run.stderr
    );
}

#[test]
fn escape_sequences_in_profile_values_never_reach_the_terminal() {
    let fleet = TestFleet::empty();
    fleet.write("imagegen.toml", "[fleet]\nname = \"home\"\n");
    fleet.write(
        "profiles/gw.json",
        r#"{"profile_id": "gw", "name": "clear\u001b[2Jscreen", "description": "bell\u0007", "device_id": "generic", "openwrt_release": "23.05.4", "target": "x86", "subtarget": "64", "imagebuilder_profile": "generic"}"#,
    );
    let commands: [&[&str]; 2] = [&["profiles", "show", "gw"], &["profiles", "list"]];
    for args in commands {
        let run = fleet.run(args);
        run.success();
        assert!(!run.stdout.contains('\u{1b}'), "{:?}", run.stdout);
        assert!(!run.stdout.contains('\u{7}'), "{:?}", run.stdout);
    }
    let shown = fleet.run(&["profiles", "show", "gw"]);
    assert!(shown.stdout.contains("clear"), "{}", shown.stdout);
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let fleet = TestFleet::empty();
    let mut child = fleet
        .command(&["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}",
        output.status
    );
}
