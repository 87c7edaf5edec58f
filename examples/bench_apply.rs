//! Benchmarks of `imagegen apply` with real GNU make and stand-in Image Builders:
//!
//! (a) 8 builds on 2 slots, each stand-in `make image` burning about 2 s of CPU: makespan
//!     vs the ideal (sum of the build steps' durations / 2 slots). Target ≤ 1.15×.
//! (b) a no-op apply over 100 built profiles. Target < 0.3 s. Before it, (b0) the apply
//!     that builds those 100 profiles (no CPU burnt) shows the per-build overhead.
//!
//! `OWRT_IMG_SANDBOX=none` (or `sandbox`) in the environment chooses the build sandbox mode,
//! to compare the two.
//!
//! Run: `cargo build --release && cargo run --release --example bench_apply`
//! Uses target/release/imagegen (or $IMAGEGEN_BIN); device data from the `imagegen-standin` crate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    let binary = std::env::var_os("IMAGEGEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(default_binary);
    let data = imagegen_standin::upstream_data();
    makespan(&binary, &data);
    noop(&binary, &data);
}

fn default_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("imagegen")
}

/// A fleet of `count` x86/64 profiles that differ in one package (distinct build keys).
fn fleet(dir: &Path, data: &Path, count: usize, cpu_seconds: f64) {
    let mirror = imagegen_standin::demo::write_mirror(
        &dir.join("mirror"),
        data,
        &[("23.05.4", "x86", "64")],
        cpu_seconds,
    )
    .expect("mirror");
    std::fs::create_dir_all(dir.join("profiles")).expect("profiles");
    std::fs::write(
        dir.join("imagegen.toml"),
        format!(
            "[fleet]\nname = \"bench\"\n\n[settings]\nmirror = \"{}\"\ntrusted_keys = [\"{}\"]\njobs = 2\n",
            mirror.url,
            mirror.public_key.display()
        ),
    )
    .expect("manifest");
    let extras = [
        "htop", "nano", "curl", "tcpdump", "iperf3", "ethtool", "vim", "collectd",
    ];
    for index in 0..count {
        let extra = extras[index % extras.len()];
        let partsize = 100 + index;
        std::fs::write(
            dir.join(format!("profiles/p{index:03}.yaml")),
            format!(
                "profile_id: p{index:03}\nname: p{index}\ndevice_id: generic\nopenwrt_release: 23.05.4\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\npackages: [luci, {extra}]\nrootfs_partsize: {partsize}\n"
            ),
        )
        .expect("profile");
    }
}

fn imagegen(binary: &Path, dir: &Path, args: &[&str]) -> (f64, String) {
    let state = dir.join("state");
    let started = Instant::now();
    let output = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .env("OWRT_IMG_DB_URL", state.join("state.redb"))
        .env("OWRT_IMG_ARTIFACTS_DIR", state.join("artifacts"))
        .env("OWRT_IMG_CACHE_DIR", state.join("cache"))
        .env("OWRT_IMG_TMP_DIR", state.join("tmp"))
        .env("OWRT_IMG_OFFLINE", "1")
        .output()
        .expect("run imagegen");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "imagegen {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        seconds,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn makespan(binary: &Path, data: &Path) {
    let dir = tempfile::Builder::new()
        .prefix("imagegen-bench-apply-")
        .tempdir()
        .expect("temp");
    fleet(dir.path(), data, 8, 2.0);
    imagegen(binary, dir.path(), &["lock"]);
    imagegen(binary, dir.path(), &["builders", "ensure"]);
    let (wall, stdout) = imagegen(binary, dir.path(), &["apply", "--json"]);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("summary")).expect("json");
    let steps = summary["report"]["steps"].as_array().expect("steps");
    let builds: Vec<f64> = steps
        .iter()
        .filter(|step| {
            step["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("build."))
        })
        .map(|step| step["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0)
        .collect();
    let total: f64 = builds.iter().sum();
    let ideal = total / 2.0;
    let run_ms = summary["report"]["run"]["duration_ms"]
        .as_f64()
        .unwrap_or(0.0)
        / 1000.0;
    println!(
        "(a) {} builds on 2 slots: executor makespan {run_ms:.2} s (process wall {wall:.2} s); build steps sum {total:.2} s, ideal {ideal:.2} s; ratio {:.3} (target <= 1.15)",
        builds.len(),
        run_ms / ideal
    );
    println!(
        "    per-build step durations: {:?}",
        builds.iter().map(|b| format!("{b:.2}")).collect::<Vec<_>>()
    );
}

fn noop(binary: &Path, data: &Path) {
    let dir = tempfile::Builder::new()
        .prefix("imagegen-bench-noop-")
        .tempdir()
        .expect("temp");
    fleet(dir.path(), data, 100, 0.0);
    imagegen(binary, dir.path(), &["lock"]);
    imagegen(binary, dir.path(), &["builders", "ensure"]);
    // The first apply is 100 `make image` runs that burn no CPU on purpose: what it costs
    // is imagegen's per-build overhead (slot reset, sandbox, make, hashing, recording).
    let (first, _) = imagegen(binary, dir.path(), &["apply"]);
    println!(
        "(b0) 100 builds of 0 CPU s on 2 slots (per-build overhead): {first:.2} s, {:.0} ms per build and slot",
        first * 2.0 * 1000.0 / 100.0
    );
    let mut times: Vec<f64> = (0..7)
        .map(|_| imagegen(binary, dir.path(), &["apply"]).0)
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "(b) no-op apply over 100 built profiles: median {:.3} s (min {:.3}, max {:.3}, n=7; target < 0.3 s)",
        times[3], times[0], times[6]
    );
}
