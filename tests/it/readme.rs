//! The README tells a newcomer the truth: its quick start runs as written (against a
//! `file://` stand-in mirror instead of downloads.openwrt.org), its test command is the one
//! CI runs, and its settings table names every setting.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{BINARY, crate_root};

fn readme() -> String {
    std::fs::read_to_string(crate_root().join("README.md")).expect("README.md")
}

/// The first ```sh block after the heading that starts with `heading`.
fn shell_block(text: &str, heading: &str) -> String {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has no heading `{heading}`"));
    let rest = &text[start..];
    let open = rest.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let close = rest[open..].find("\n```").expect("a closed block");
    rest[open..open + close].to_string()
}

#[test]
fn the_quick_start_runs_as_written() {
    let block = shell_block(&readme(), "## Quick start");
    let dir = tempfile::tempdir().expect("temp dir");
    let mirror = imagegen_standin::demo::write_mirror(
        &dir.path().join("mirror"),
        &imagegen_standin::upstream_data(),
        &[("23.05.4", "ath79", "generic")],
        0.0,
    )
    .expect("mirror");
    let bin_dir = Path::new(BINARY).parent().expect("binary dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("TMPDIR", dir.path())
        .env("NO_COLOR", "1")
        .env("OWRT_IMG_MIRROR", &mirror.url)
        .env("OWRT_IMG_TRUSTED_KEYS", &mirror.public_key)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let images: Vec<PathBuf> = std::fs::read_dir(dir.path().join("my-fleet/images"))
        .expect("images exported")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert!(
        images
            .iter()
            .any(|image| image.to_string_lossy().ends_with("squashfs-sysupgrade.bin")),
        "{images:?}"
    );
    assert!(dir.path().join("my-fleet/imagegen.lock").is_file());
    assert!(stdout.contains("No changes."), "{stdout}");
}

#[test]
fn the_test_command_is_the_one_ci_runs() {
    let block = shell_block(&readme(), "## Two commands");
    let command = block
        .lines()
        .find(|line| line.starts_with("cargo test"))
        .and_then(|line| line.split('#').next())
        .map(str::trim)
        .expect("a cargo test line");
    let ci = std::fs::read_to_string(crate_root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == command),
        "`.ci/run` does not run `{command}`"
    );
}

/// A CI script that bash cannot parse fails every run before a single check: `bash -n`
/// reads it without running it.
#[test]
fn the_ci_script_parses() {
    let out = std::process::Command::new("bash")
        .arg("-n")
        .arg(crate_root().join(".ci/run"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "`.ci/run` does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_settings_table_names_every_setting() {
    let text = readme();
    for def in imagegen::settings::TABLE {
        let row = format!("| `{}` |", def.name);
        assert!(text.contains(&row), "README lacks the setting row {row}");
        assert!(text.contains(def.env), "README lacks {}", def.env);
        assert!(
            text.contains(&format!("`--{}", def.flag)),
            "README lacks --{}",
            def.flag
        );
    }
}
