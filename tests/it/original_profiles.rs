//! Profiles written for the original Python tool load unchanged (docs/profiles.md): every
//! field its schema documents, with its habits — comments, folded and literal text blocks,
//! quoted releases and modes, `snapshot` in lower case, `tags` with an unquoted `23.05`,
//! empty lists, `owner: root:root`, `bin_dir`, the `meta` block of its exports,
//! an unquoted octal-looking `mode: 0600` — validate, plan, apply and reach a second apply
//! with nothing to do.

use crate::reconcile::{plan_of, summary};
use crate::support::{TestFleet, upstream_data};

const AP_LIVINGROOM: &str = r#"# Example profile: a simple access point, minimal extras
profile_id: home.ap-livingroom.23.05
name: Home AP (Living Room, 23.05)
description: >
  Main Wi-Fi access point in the living room.
  OpenWrt 23.05, minimal extras.

device_id: home-ap-livingroom
tags:
  - home
  - ap
  - wifi
  - 23.05

openwrt_release: "23.05.2"
target: ath79
subtarget: generic
imagebuilder_profile: tplink_archer-c7-v2

packages:
  - luci
  - luci-ssl
  - htop

packages_remove:
  - ppp
  - ppp-mod-pppoe

files:
  - source: profiles/files/home-ap-livingroom/etc/banner
    destination: /etc/banner
    mode: "0644"
    owner: root:root
  - source: profiles/files/home-ap-livingroom/etc/dropbear/authorized_keys
    destination: /etc/dropbear/authorized_keys
    mode: 0600

policies:
  filesystem: squashfs
  include_kernel_symbols: false
  strip_debug: true

build_defaults:
  rebuild_if_cached: false
  initramfs: false
"#;

const AP_BEDROOM: &str = r#"profile_id: home.ap-bedroom.23.05
name: Home AP (Bedroom, 23.05)

device_id: home-ap-bedroom
tags: [home, ap, wifi, 23.05, bedroom]

openwrt_release: "23.05.2"
target: ath79
subtarget: generic
imagebuilder_profile: tplink_archer-c7-v2

packages:
  - luci
  - luci-ssl
  - wpad-basic-mbedtls
  - collectd

files:
  - source: profiles/files/home-ap-bedroom/etc/banner
    destination: /etc/banner

policies:
  filesystem: squashfs

build_defaults:
  rebuild_if_cached: false

meta:
  created_at: "2025-11-28T12:34:56Z"
  updated_at: "2025-11-28T13:00:00Z"
  created_by: ai:github-copilot
"#;

/// The original snapshot example, with the policies an Image Builder can honour.
const ROUTER_SNAPSHOT: &str = r#"# Example profile: lab router following snapshot builds
profile_id: lab.router1.snapshot
name: Lab Router 1 (Snapshot)
description: |
  Lab router for testing snapshot builds and experimental packages.

device_id: lab-router1
tags:
  - lab
  - router
  - snapshot

openwrt_release: "snapshot"
target: ramips
subtarget: mt7621
imagebuilder_profile: xiaomi_mi-router-4a-gigabit

packages:
  - luci
  - tcpdump
  - iperf3
  - kmod-usb-storage
  - block-mount

packages_remove: []

overlay_dir: profiles/overlays/lab-router1

policies:
  filesystem: squashfs
  allow_snapshot: true

build_defaults:
  rebuild_if_cached: true
  initramfs: true
  keep_build_dir: true

notes: >
  Used for performance and regression testing.
  Expect frequent rebuilds and upgrades.
"#;

const ROUTER_EXTENDED: &str = r#"# Example profile: extended image-builder options
profile_id: lab.router1.extended
name: Lab Router 1 (Extended Image Options)
description: >
  Example profile demonstrating Image Builder options like BIN_DIR,
  EXTRA_IMAGE_NAME, DISABLED_SERVICES, and ROOTFS_PARTSIZE.

device_id: lab-router1
tags: [lab, router, debug, extended]

openwrt_release: "23.05.2"
target: ramips
subtarget: mt7621
imagebuilder_profile: xiaomi_mi-router-4a-gigabit

packages:
  - luci
  - nano
  - openvpn-openssl
packages_remove:
  - ppp
  - ppp-mod-pppoe

overlay_dir: profiles/overlays/lab-router1

policies:
  filesystem: squashfs
  auto_resize_rootfs: false

build_defaults:
  rebuild_if_cached: true
  initramfs: false

# Fields corresponding to Image Builder variables
bin_dir: BIN_DIR_PLACEHOLDER
extra_image_name: lab-debug
disabled_services:
  - dnsmasq
  - firewall
  - odhcpd
rootfs_partsize: 256
add_local_key: true
created_by: human:alice
"#;

fn original_fleet() -> TestFleet {
    let fleet = TestFleet::empty();
    let mirror = imagegen_standin::demo::write_mirror(
        &fleet.path().join("mirror"),
        &upstream_data(),
        &[
            ("23.05.2", "ath79", "generic"),
            ("23.05.2", "ramips", "mt7621"),
            ("SNAPSHOT", "ramips", "mt7621"),
        ],
        0.0,
    )
    .expect("mirror");
    fleet.write(
        "imagegen.toml",
        &format!(
            "[fleet]\nname = \"home\"\nprofiles = [\"profiles/*.yaml\"]\n\n[settings]\nmirror = \"{}\"\ntrusted_keys = [\"{}\"]\n",
            mirror.url,
            mirror.public_key.display()
        ),
    );
    for (name, text) in [
        ("home-ap-livingroom.yaml", AP_LIVINGROOM.to_string()),
        ("home-ap-bedroom.yaml", AP_BEDROOM.to_string()),
        ("lab-router1-snapshot.yaml", ROUTER_SNAPSHOT.to_string()),
        (
            "lab-router1-extended.yaml",
            // The original example writes an absolute path; where an absolute `bin_dir` may
            // point is for the operator to allow (input hardening), so this one is relative.
            ROUTER_EXTENDED.replace("BIN_DIR_PLACEHOLDER", "images/lab"),
        ),
    ] {
        fleet.write(&format!("profiles/{name}"), &text);
    }
    for banner in ["home-ap-livingroom", "home-ap-bedroom"] {
        fleet.write(
            &format!("profiles/files/{banner}/etc/banner"),
            &format!("{banner}\n"),
        );
    }
    fleet.write(
        "profiles/files/home-ap-livingroom/etc/dropbear/authorized_keys",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITEST test@example\n",
    );
    fleet.write(
        "profiles/overlays/lab-router1/etc/config/system",
        "config system\n\toption hostname 'lab-router1'\n",
    );
    fleet
}

#[test]
fn the_original_tools_profiles_load_unchanged_and_apply() {
    let fleet = original_fleet();
    let validated = fleet.run(&["validate"]);
    validated.success();
    assert!(
        validated.stdout.contains("4 profiles"),
        "{}",
        validated.stdout
    );
    let shown = fleet
        .run(&["profiles", "show", "lab.router1.snapshot", "--json"])
        .success()
        .json();
    assert_eq!(
        shown["openwrt_release"], "SNAPSHOT",
        "`snapshot` is normalised"
    );
    let bedroom = fleet
        .run(&["profiles", "show", "home.ap-bedroom.23.05", "--json"])
        .success()
        .json();
    assert_eq!(
        bedroom["tags"][3], "23.05",
        "an unquoted number is the text written"
    );
    assert_eq!(bedroom["meta"]["created_by"], "ai:github-copilot");
    let planned = plan_of(&fleet, &[]);
    let keys = planned
        .action("build.home.home.ap-livingroom.23.05")
        .and_then(|action| action.inputs.as_ref())
        .and_then(|inputs| {
            inputs
                .overlay
                .entries
                .get("/etc/dropbear/authorized_keys")
                .cloned()
        })
        .expect("overlay entry");
    assert_eq!(keys.mode, 0o600, "an unquoted `0600` means the octal mode");
    assert!(
        planned.action("builder.SNAPSHOT/ramips/mt7621").is_some(),
        "{:?}",
        planned
            .actions
            .iter()
            .map(|a| &a.address)
            .collect::<Vec<_>>()
    );

    let applied = fleet.run(&["apply", "--json"]);
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    let report = &summary(&applied.stdout)["report"];
    assert_eq!(report["run"]["failed"], 0, "{report}");
    let images: Vec<String> = std::fs::read_dir(fleet.path().join("images/lab"))
        .expect("the bin_dir got the images")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        images
            .iter()
            .any(|name| name.contains("lab-debug") && name.ends_with("sysupgrade.bin")),
        "{images:?}"
    );
    let artifacts = fleet
        .run(&[
            "artifacts",
            "list",
            "--profile",
            "lab.router1.snapshot",
            "--json",
        ])
        .success()
        .json();
    assert!(
        artifacts
            .as_array()
            .expect("artifacts")
            .iter()
            .any(|artifact| artifact["kind"] == "initramfs"),
        "{artifacts}"
    );
    assert!(
        !plan_of(&fleet, &[]).has_changes(),
        "a second apply does nothing"
    );
}

#[test]
fn the_original_snapshot_example_is_refused_only_for_what_no_image_builder_can_do() {
    let fleet = original_fleet();
    let original = ROUTER_SNAPSHOT.replace(
        "policies:\n  filesystem: squashfs\n  allow_snapshot: true\n",
        "policies:\n  filesystem: ext4\n  include_kernel_symbols: true\n  strip_debug: false\n  allow_snapshot: true\n",
    );
    fleet.write("profiles/lab-router1-snapshot.yaml", &original);
    let run = fleet.run(&["validate", "--json"]);
    assert_eq!(run.code, 3, "{}", run.stdout);
    let fields: Vec<String> = run.json()["error"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|problem| {
            let message = problem["message"].as_str().unwrap_or("");
            message.split(' ').next().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(
        fields,
        [
            "`policies.include_kernel_symbols:",
            "`policies.strip_debug:",
            "`xiaomi_mi-router-4a-gigabit`",
        ],
        "{}",
        run.stdout
    );
}
