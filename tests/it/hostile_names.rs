//! Names that would reach the Image Builder's make and shell code from a profile: refused by
//! `validate` and `plan` with their file, line and column, before anything is fetched.

use crate::support::TestFleet;

const PROFILE: &str = "profile_id: ap\nname: AP\ndevice_id: d\nopenwrt_release: 23.05.4\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: p\n";

fn fleet(profile_extra: &str) -> TestFleet {
    let fleet = TestFleet::empty();
    fleet.write("imagegen.toml", "[fleet]\nname = \"lab\"\n");
    fleet.write("profiles/ap.yaml", &format!("{PROFILE}{profile_extra}"));
    fleet.write("files/banner", "hello\n");
    fleet
}

/// `file:line:col: message` of every problem in `--json` output.
fn problems(fleet: &TestFleet, command: &str) -> Vec<String> {
    let run = fleet.run(&[command, "--json"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let json = run.json();
    json["error"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|problem| {
            let location = &problem["location"];
            format!(
                "{}:{}:{}: {}",
                location["file"].as_str().unwrap_or(""),
                location["line"],
                location["column"],
                problem["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn a_destination_with_whitespace_is_refused_by_validate_and_plan() {
    let fleet =
        fleet("files:\n  - source: files/banner\n    destination: \"/a /some/host/dir/.git\"\n");
    let expected = [
        "profiles/ap.yaml:10:18: `files[0].destination` `a ` contains a space, which the Image Builder's shell code would split or interpret; use letters, digits and `. _ - + , @ : =`: `/a /some/host/dir/.git`",
    ];
    assert_eq!(problems(&fleet, "validate"), expected);
    assert_eq!(problems(&fleet, "plan"), expected);
}

#[test]
fn names_inside_an_overlay_dir_are_checked_with_the_overlay_dir_location() {
    let fleet = fleet("overlay_dir: overlay\n");
    fleet.write("overlay/etc/ok.conf", "x\n");
    fleet.write("overlay/etc/with space", "x\n");
    fleet.write("overlay/usr/x'y", "x\n");
    fleet.write("overlay/usr/new\nline/f", "x\n");
    assert_eq!(
        problems(&fleet, "validate"),
        [
            "profiles/ap.yaml:8:14: `overlay/etc/with space` in overlay source `overlay`: the name contains a space, which the Image Builder's shell code would split or interpret; use letters, digits and `. _ - + , @ : =`",
            "profiles/ap.yaml:8:14: `overlay/usr/new\nline` in overlay source `overlay`: the name contains a line break, which the Image Builder's shell code would split or interpret; use letters, digits and `. _ - + , @ : =`",
            "profiles/ap.yaml:8:14: `overlay/usr/x'y` in overlay source `overlay`: the name contains `'`, which the Image Builder's shell code would split or interpret; use letters, digits and `. _ - + , @ : =`",
        ]
    );
}

#[test]
fn make_syntax_in_packages_and_dot_dot_targets_are_refused_before_any_fetch() {
    let fleet = fleet("packages: [\"$(shell id)\", /srv/x.ipk]\n");
    std::fs::write(
        fleet.path().join("profiles/ap.yaml"),
        format!(
            "{}packages: [\"$(shell id)\", /srv/x.ipk]\n",
            PROFILE.replace("target: ath79", "target: \"..\"")
        ),
    )
    .expect("write profile");
    let found = problems(&fleet, "plan");
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with("profiles/ap.yaml:5:9: invalid `target` `..`"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("profiles/ap.yaml:8:12: invalid `packages[0]` `$(shell id)`"),
        "{found:#?}"
    );
    assert!(
        found[2].starts_with("profiles/ap.yaml:8:27: invalid `packages[1]` `/srv/x.ipk`"),
        "{found:#?}"
    );
}

#[test]
fn destination_root_merges_a_directory_source() {
    let fleet = fleet("files:\n  - source: tree\n    destination: /\n");
    fleet.write("tree/etc/motd", "hi\n");
    fleet.run(&["validate"]).success();
}
