//! No profile field is read and ignored (issue 14): each takes effect or is refused at
//! `validate` with why and what to do instead, and what the pinned `profiles.json` knows
//! (filesystems, image kinds, initramfs images) is checked before anything is downloaded.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::reconcile::{fleet_with, plan_of, profile, summary};
use crate::support::Run;

/// `(message, file:line:column, help)` of each problem of a failed `--json` command.
fn problems(run: &Run) -> Vec<(String, String, String)> {
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    run.json()["error"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|problem| {
            let location = &problem["location"];
            (
                problem["message"].as_str().unwrap_or("").to_string(),
                format!(
                    "{}:{}:{}",
                    location["file"].as_str().unwrap_or(""),
                    location["line"],
                    location["column"]
                ),
                problem["help"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn fields_no_image_builder_can_honour_are_refused_with_what_to_do_instead() {
    let refused = "policies:\n  include_kernel_symbols: true\n  strip_debug: false\n  auto_resize_rootfs: true\n";
    let fleet = fleet_with(
        &[("23.05.4", "x86", "64")],
        &[("gw.yaml", profile("gw", "x86", "64", "generic", refused))],
    );
    let found = problems(&fleet.run(&["validate", "--json"]));
    let summary: Vec<(&str, &str)> = found
        .iter()
        .map(|(message, at, _)| (message.split(':').next().unwrap_or(""), at.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("`policies.include_kernel_symbols", "profiles/gw.yaml:14:27"),
            ("`policies.strip_debug", "profiles/gw.yaml:15:16"),
            ("`policies.auto_resize_rootfs", "profiles/gw.yaml:16:23"),
        ]
    );
    assert!(found[0].2.contains("kernel-debug.tar.zst"), "{found:?}");
    assert!(found[1].2.contains("set it to `true`"), "{found:?}");
    assert!(found[2].2.contains("rootfs_partsize"), "{found:?}");
    assert_eq!(fleet.run(&["plan"]).code, 3, "plan refuses them too");
    let file = fleet.run(&["profiles", "validate", "profiles/gw.yaml", "--json"]);
    assert_eq!(
        problems(&file).len(),
        3,
        "and so does validating the file alone"
    );
    // The values that describe what the Image Builder does are accepted.
    fleet.write(
        "profiles/gw.yaml",
        &profile(
            "gw",
            "x86",
            "64",
            "generic",
            "policies:\n  include_kernel_symbols: false\n  strip_debug: true\n  auto_resize_rootfs: false\n",
        ),
    );
    fleet.run(&["validate"]).success();
}

#[test]
fn what_profiles_json_knows_is_checked_before_any_download() {
    let fleet = fleet_with(
        &[("23.05.4", "ramips", "mt7621"), ("23.05.4", "x86", "64")],
        &[
            (
                "router.yaml",
                profile(
                    "router",
                    "ramips",
                    "mt7621",
                    "xiaomi_mi-router-4a-gigabit",
                    "policies:\n  filesystem: ext4\n",
                ),
            ),
            (
                "gw.yaml",
                profile(
                    "gw",
                    "x86",
                    "64",
                    "generic",
                    "build_defaults:\n  initramfs: true\n",
                ),
            ),
        ],
    );
    let manifest = std::fs::read_to_string(fleet.path().join("imagegen.toml")).expect("manifest");
    fleet.write(
        "imagegen.toml",
        &format!(
            "{manifest}\n[[device]]\nid = \"gw-disk\"\nprofile = \"gw\"\nflash = {{ path = \"/dev/disk/by-id/ata-TEST\", image = \"factory\" }}\n"
        ),
    );
    let found = problems(&fleet.run(&["validate", "--json"]));
    let expected = [
        (
            "`xiaomi_mi-router-4a-gigabit` (OpenWrt 23.05.4 ramips/mt7621) has no `ext4` image",
            "profiles/router.yaml:14:15",
            "the device's images use `squashfs`; choose one of those, or remove `policies.filesystem`",
        ),
        (
            "`generic` (OpenWrt 23.05.4 x86/64) has no initramfs image in the release's profiles.json",
            "profiles/gw.yaml:14:14",
            "remove `build_defaults.initramfs`; upstream publishes initramfs kernels only for devices that need one to install",
        ),
        (
            "device `gw-disk` wants a `factory` image, which `generic` does not produce",
            "imagegen.toml:12:54",
            "it produces `combined`, `combined-efi`, `rootfs`; set `image` to one of those",
        ),
    ];
    let found: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|(m, at, h)| (m.as_str(), at.as_str(), h.as_str()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(fleet.run(&["plan"]).code, 3);
    let builders = fleet.state_dir().join("cache");
    let downloaded = walk(&builders)
        .iter()
        .any(|path| path.to_string_lossy().contains("openwrt-imagebuilder"));
    assert!(!downloaded, "nothing was downloaded before the refusal");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            let mut below = walk(&path);
            below.push(path);
            below
        })
        .collect()
}

#[test]
fn initramfs_keep_build_dir_and_rebuild_if_cached_take_effect() {
    let device = "tplink_archer-c7-v2";
    let ap = |id: &str, defaults: &str| {
        profile(
            id,
            "ath79",
            "generic",
            device,
            &format!("build_defaults:\n{defaults}"),
        )
    };
    let fleet = fleet_with(
        &[("23.05.4", "ath79", "generic")],
        &[(
            "ap.yaml",
            ap("ap", "  initramfs: true\n  keep_build_dir: true\n"),
        )],
    );
    fleet.run(&["lock"]).success();
    let planned = plan_of(&fleet, &[]);
    let inputs = planned
        .action("build.lab.ap")
        .and_then(|a| a.inputs.clone())
        .expect("inputs");
    let initramfs = inputs
        .options
        .initramfs
        .clone()
        .expect("initramfs is a key input");
    assert_eq!(
        initramfs.name,
        format!("openwrt-23.05.4-ath79-generic-{device}-initramfs-kernel.bin")
    );
    let published = fleet
        .path()
        .join("mirror/releases/23.05.4/targets/ath79/generic")
        .join(&initramfs.name);
    let bytes = std::fs::read(&published).expect("the mirror publishes it");
    assert_eq!(hex::encode(Sha256::digest(&bytes)), initramfs.sha256);

    fleet.run(&["apply"]).success();
    let key = planned
        .action("build.lab.ap")
        .and_then(|a| a.key.clone())
        .expect("key");
    let record = fleet
        .run(&["builds", "show", &key, "--json"])
        .success()
        .json();
    let fetched = record["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|artifact| artifact["kind"] == "initramfs")
        .cloned()
        .expect("initramfs artifact");
    assert_eq!(fetched["sha256"], initramfs.sha256.as_str());
    assert_eq!(fetched["name"], initramfs.name.as_str());
    let kept = PathBuf::from(record["kept_build_dir"].as_str().expect("kept build tree"));
    assert!(
        kept.starts_with(fleet.state_dir().join("work/kept")),
        "{}",
        kept.display()
    );
    assert!(kept.join(".config").is_file() && kept.join("Makefile").is_file());
    let text = fleet
        .run(&["builds", "show", &key])
        .success()
        .stdout
        .clone();
    assert!(
        text.contains(&format!("build tree    {}", kept.display())),
        "{text}"
    );

    // Without the initramfs image the image differs: a key input, explained.
    let path = fleet.path().join("profiles/ap.yaml");
    let original = std::fs::read_to_string(&path).expect("profile");
    std::fs::write(&path, original.replace("  initramfs: true\n", "")).expect("edit");
    let changed = plan_of(&fleet, &[]);
    let action = changed.action("build.lab.ap").expect("ap");
    assert_eq!(action.reasons.len(), 1);
    assert!(
        action.reasons[0]
            .text
            .starts_with("initramfs image: openwrt-"),
        "{:?}",
        action.reasons
    );
    assert!(
        action.reasons[0].text.ends_with("→ none"),
        "{:?}",
        action.reasons
    );
    std::fs::write(&path, &original).expect("restore");

    // rebuild_if_cached: a new profile with the same key builds afresh instead of reusing,
    // and a second apply still does nothing.
    fleet.write(
        "profiles/ap2.yaml",
        &ap(
            "ap2",
            "  initramfs: true\n  keep_build_dir: true\n  rebuild_if_cached: true\n",
        ),
    );
    let fresh = plan_of(&fleet, &[]);
    let ap2 = fresh.action("build.lab.ap2").expect("ap2");
    assert_eq!(ap2.key.as_deref(), Some(key.as_str()));
    assert!(
        !ap2.cache_hit,
        "rebuild_if_cached does not reuse the recorded build"
    );
    let applied = fleet.run(&["apply", "--json"]);
    applied.success();
    let steps = summary(&applied.stdout)["report"]["steps"].clone();
    assert_eq!(steps[0]["address"], "build.lab.ap2");
    assert_eq!(steps[0]["cache_hit"], false, "{steps}");
    assert!(
        !plan_of(&fleet, &[]).has_changes(),
        "a second apply does nothing"
    );
    // An explicit build request honours it too; a profile without it reuses.
    let build = |id: &str| {
        let run = fleet.run(&["build", id, "--json"]);
        run.success();
        summary(&run.stdout)["profiles"][0]["result"].clone()
    };
    assert_eq!(build("ap"), "reused");
    assert_eq!(build("ap2"), "built");
}
