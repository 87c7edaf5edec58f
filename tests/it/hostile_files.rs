//! A fleet repository written by a stranger: profiles, the manifest and the lock file that
//! are links out of the fleet, devices or FIFOs are refused quickly, with a clear message
//! that never shows what the file holds.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Run, TestFleet};

const SECRET: &str = "hunter2-ci-secret";
const PROFILE: &str = "profile_id: ap\nname: AP\ndevice_id: d\nopenwrt_release: 23.05.4\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: p\n";

fn fleet() -> TestFleet {
    let fleet = TestFleet::empty();
    fleet.write(
        "imagegen.toml",
        "[fleet]\nname = \"lab\"\nprofiles = [\"profiles\"]\n",
    );
    fleet.write("profiles/ap.yaml", PROFILE);
    fleet
}

/// Runs `imagegen validate` with a secret in its environment; a hang (a FIFO read) is
/// killed and reported instead of stalling the suite.
fn validate(fleet: &TestFleet) -> Run {
    let mut command = fleet.command(&["validate"]);
    command
        .env("CI_TOKEN", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("start imagegen");
    wait_or_kill(child, Duration::from_secs(60))
}

fn wait_or_kill(mut child: Child, limit: Duration) -> Run {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for imagegen").is_some() {
            let output = child.wait_with_output().expect("collect output");
            return Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("imagegen validate still runs after {limit:?}: it blocks on the input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn assert_refused(run: &Run, expected: &str) {
    assert_eq!(
        run.code, 3,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    // miette wraps long messages; join the wrapped lines back.
    let joined = run.stderr.replace("\n  │ ", " ");
    assert!(joined.contains(expected), "stderr:\n{}", run.stderr);
    assert!(!run.stderr.contains(SECRET), "leaked:\n{}", run.stderr);
    assert!(!run.stdout.contains(SECRET), "leaked:\n{}", run.stdout);
}

fn symlink(target: &std::path::Path, fleet: &TestFleet, link: &str) {
    std::os::unix::fs::symlink(target, fleet.path().join(link)).expect("symlink");
}

#[test]
fn profile_linked_to_the_process_environment_is_refused_without_echo() {
    let fleet = fleet();
    symlink("/proc/self/environ".as_ref(), &fleet, "profiles/env.yaml");
    let run = validate(&fleet);
    assert_refused(&run, "`profiles/env.yaml` resolves to `/proc/");
}

#[test]
fn profile_linked_to_a_file_outside_the_fleet_is_refused_without_echo() {
    let fleet = fleet();
    let outside = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        outside.path(),
        format!("root:{SECRET}:19000:0:99999:7:::\n"),
    )
    .unwrap();
    symlink(outside.path(), &fleet, "profiles/shadow.yaml");
    assert_refused(&validate(&fleet), "outside the fleet repository");
    if std::path::Path::new("/etc/shadow").exists() {
        std::fs::remove_file(fleet.path().join("profiles/shadow.yaml")).unwrap();
        symlink("/etc/shadow".as_ref(), &fleet, "profiles/shadow.yaml");
        assert_refused(
            &validate(&fleet),
            "`profiles/shadow.yaml` resolves to `/etc/shadow`, outside the fleet repository",
        );
    }
}

#[test]
fn profile_linked_to_dev_zero_is_refused_without_reading_it() {
    let fleet = fleet();
    symlink("/dev/zero".as_ref(), &fleet, "profiles/zero.yaml");
    assert_refused(
        &validate(&fleet),
        "resolves to `/dev/zero`, outside the fleet",
    );
}

#[test]
fn profile_fifo_is_refused_without_blocking() {
    let fleet = fleet();
    let fifo = fleet.path().join("profiles/fifo.yaml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
    assert_refused(
        &validate(&fleet),
        "`profiles/fifo.yaml` is a FIFO, not a regular file",
    );
}

#[test]
fn absolute_and_escaping_profile_patterns_are_refused() {
    let fleet = fleet();
    fleet.write(
        "imagegen.toml",
        "[fleet]\nname = \"lab\"\nprofiles = [\"/etc/*.conf\", \"../*.yaml\", \"profiles\"]\n",
    );
    let run = validate(&fleet);
    assert_refused(
        &run,
        "profile pattern `/etc/*.conf` is absolute; write it relative to the fleet root",
    );
    assert!(
        run.stderr
            .contains("profile pattern `../*.yaml` leaves the fleet root with `..`"),
        "{}",
        run.stderr
    );
}

#[test]
fn manifest_and_lock_links_out_of_the_fleet_are_refused() {
    let fleet = fleet();
    symlink("/proc/self/environ".as_ref(), &fleet, "imagegen.lock");
    let run = fleet.run(&["plan"]);
    assert_refused(&run, "`imagegen.lock` resolves to `/proc/");

    let fleet = TestFleet::empty();
    symlink("/proc/self/environ".as_ref(), &fleet, "imagegen.toml");
    assert_refused(&validate(&fleet), "`imagegen.toml` resolves to `/proc/");
}

#[test]
fn a_link_inside_the_fleet_is_followed() {
    let fleet = fleet();
    fleet.write("common/ap.yaml", &PROFILE.replace("ap\n", "common-ap\n"));
    symlink("../common/ap.yaml".as_ref(), &fleet, "profiles/common.yaml");
    validate(&fleet).success();
}

#[test]
fn a_missing_plan_file_is_a_user_error() {
    let fleet = fleet();
    let run = fleet.run(&["apply", "missing-plan.json"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error[precondition]: reading `missing-plan.json`: No such file"),
        "{}",
        run.stderr
    );
}
