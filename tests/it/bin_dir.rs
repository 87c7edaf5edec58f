//! `bin_dir` is fleet input too: it may not send images outside the fleet (by `..`, an
//! absolute path or a symlink) unless the operator allowed that directory.

use crate::apply::small_fleet;

fn set_bin_dir(fleet: &crate::support::TestFleet, value: &str) {
    let path = fleet.path().join("profiles/gw.yaml");
    let text = std::fs::read_to_string(&path).expect("profile");
    let text: String = text
        .lines()
        .map(|line| match line.starts_with("bin_dir:") {
            true => format!("bin_dir: {value}\n"),
            false => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&path, text).expect("write profile");
}

#[test]
fn an_absolute_bin_dir_needs_an_allowed_root_and_then_gets_the_copies() {
    let fleet = small_fleet(0.0);
    let outside = tempfile::tempdir().expect("outside dir");
    let target = outside.path().join("images/gw");
    set_bin_dir(&fleet, &target.display().to_string());

    let refused = fleet.run(&["validate", "--json"]);
    assert_eq!(refused.code, 3, "{}", refused.stdout);
    let error = refused.json();
    let problem = &error["error"]["problems"][0];
    assert_eq!(problem["location"]["file"], "profiles/gw.yaml");
    assert_eq!(problem["location"]["line"], 9);
    assert!(
        problem["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is not under an allowed `bin_dir_roots` directory"),
        "{problem}"
    );
    assert!(
        problem["help"]
            .as_str()
            .unwrap_or_default()
            .contains("--bin-dir-root")
    );
    // plan refuses the same way, before anything is built.
    assert_eq!(fleet.run(&["plan"]).code, 3);

    let root = outside.path().display().to_string();
    fleet.run(&["validate", "--bin-dir-root", &root]).success();
    fleet.run(&["apply", "--bin-dir-root", &root]).success();
    let copies: Vec<String> = std::fs::read_dir(&target)
        .expect("copies in the allowed root")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        copies.iter().any(|name| name.ends_with("combined.img.gz")),
        "{copies:?}"
    );
}

#[test]
fn a_bin_dir_that_escapes_by_dots_or_a_symlink_is_refused() {
    let fleet = small_fleet(0.0);
    set_bin_dir(&fleet, "../../etc/cron.d");
    let dots = fleet.run(&["validate"]);
    assert_eq!(dots.code, 3);
    assert!(
        dots.stderr
            .contains("must be a path relative to the fleet root that stays inside it"),
        "{}",
        dots.stderr
    );

    let outside = tempfile::tempdir().expect("outside dir");
    std::os::unix::fs::symlink(outside.path(), fleet.path().join("out")).expect("symlink");
    set_bin_dir(&fleet, "out/gw");
    let linked = fleet.run(&["validate"]);
    assert_eq!(linked.code, 3, "{}", linked.stderr);
    assert!(
        linked
            .stderr
            .contains("outside the fleet (through a symlink)"),
        "{}",
        linked.stderr
    );
}
