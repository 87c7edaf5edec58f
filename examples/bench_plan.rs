//! Benchmark: `imagegen plan` on a large generated fleet (1,000 profiles, each with a
//! 20-file overlay, and 5,000 devices), cold (empty state: every overlay file is read and
//! hashed) and warm (per-file hash cache filled), with wall time and peak RSS.
//!
//! Run: `cargo build --release && cargo run --release --example bench_plan [-- RUNS]`
//! (needs GNU time at /usr/bin/time: `apt-get install time`)
//! It runs the release binary `target/release/imagegen` (or $IMAGEGEN_BIN) as a child.
//! Targets (issue 2): warm plan < 1 s and < 150 MB peak RSS on 2 cores.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const PROFILES: usize = 1_000;
const FILES_PER_PROFILE: usize = 20;
const DEVICES: usize = 5_000;

/// Real (target, subtarget, device) triples from OpenWrt 23.05.4.
const DEVICES_23_05: [(&str, &str, &str); 5] = [
    ("ath79", "generic", "tplink_archer-c7-v2"),
    ("ramips", "mt7621", "ubnt_edgerouter-x"),
    ("mediatek", "filogic", "glinet_gl-mt6000"),
    ("x86", "64", "generic"),
    ("bcm27xx", "bcm2711", "rpi-4"),
];

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(3);
    let binary = std::env::var_os("IMAGEGEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(default_binary);
    let dir = tempfile::Builder::new()
        .prefix("imagegen-bench-plan-")
        .tempdir()
        .expect("temp dir");
    let started = Instant::now();
    let bytes = generate_fleet(dir.path());
    println!(
        "fleet: {PROFILES} profiles x {FILES_PER_PROFILE} overlay files ({:.1} MB), {DEVICES} devices; generated in {:.2} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    // Let the racy-mtime window (2 s) pass so the cold run may cache every file.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for run in 0..runs {
        let state = dir.path().join(format!("state-{run}"));
        cold.push(run_plan(&binary, dir.path(), &state));
        for _ in 0..2 {
            warm.push(run_plan(&binary, dir.path(), &state));
        }
    }
    report("cold plan (empty state)", &cold);
    report("warm plan (hash cache filled)", &warm);
    if std::env::var_os("IMAGEGEN_BENCH_KEEP").is_some() {
        println!("kept the fleet in {}", dir.keep().display());
    }
}

fn default_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("imagegen")
}

/// Writes imagegen.toml, profiles/ and files/; returns overlay bytes.
fn generate_fleet(root: &Path) -> u64 {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    std::fs::create_dir_all(root.join("profiles")).expect("profiles dir");
    let mut bytes = 0u64;
    for index in 0..PROFILES {
        let (target, subtarget, device) = DEVICES_23_05[index % DEVICES_23_05.len()];
        let overlay = root.join(format!("files/p{index:04}"));
        let mut files = String::new();
        for file in 0..FILES_PER_PROFILE {
            let relative = format!("etc/config/f{file:02}");
            let path = overlay.join(&relative);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("overlay dir");
            // Log-uniform sizes between 100 B and 10 KB, like config files and scripts.
            let size = (100.0 * 100f64.powf((next() % 1000) as f64 / 1000.0)) as usize;
            let content: Vec<u8> = (0..size).map(|_| b'a' + (next() % 26) as u8).collect();
            bytes += content.len() as u64;
            std::fs::write(&path, content).expect("overlay file");
            let _ = writeln!(
                files,
                "  - source: files/p{index:04}/{relative}\n    destination: /{relative}\n    mode: \"0644\""
            );
        }
        let profile = format!(
            "profile_id: p{index:04}\nname: Profile {index}\ndevice_id: {device}\nopenwrt_release: 23.05.4\ntarget: {target}\nsubtarget: {subtarget}\nimagebuilder_profile: {device}\npackages: [luci, collectd, p{index}]\nfiles:\n{files}"
        );
        std::fs::write(root.join(format!("profiles/p{index:04}.yaml")), profile).expect("profile");
    }
    let mut manifest = String::from("[fleet]\nname = \"bench\"\nprofiles = [\"profiles\"]\n");
    for device in 0..DEVICES {
        let _ = write!(
            manifest,
            "\n[[device]]\nid = \"d{device:05}\"\nprofile = \"p{:04}\"\n",
            device % PROFILES
        );
    }
    std::fs::write(root.join("imagegen.toml"), manifest).expect("manifest");
    bytes
}

struct Sample {
    seconds: f64,
    max_rss_mb: f64,
}

fn run_plan(binary: &Path, fleet: &Path, state: &Path) -> Sample {
    // `/usr/bin/time -f %M` reports the peak RSS of exactly this process (getrusage of the
    // children would also count the bench's own pages inherited at fork time).
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(binary)
        .args(["plan", "--json"])
        .current_dir(fleet)
        .env("OWRT_IMG_DB_URL", state.join("state.redb"))
        .env("OWRT_IMG_ARTIFACTS_DIR", state.join("artifacts"))
        .env("OWRT_IMG_CACHE_DIR", state.join("cache"))
        .env("OWRT_IMG_OFFLINE", "1")
        .output()
        .expect("run imagegen");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        status.status.success(),
        "imagegen plan failed:\n{}",
        String::from_utf8_lossy(&status.stdout)
            .chars()
            .take(3000)
            .collect::<String>()
    );
    let stderr = String::from_utf8_lossy(&status.stderr);
    let max_rss_kb: f64 = stderr
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Sample {
        seconds,
        max_rss_mb: max_rss_kb / 1024.0,
    }
}

fn report(name: &str, samples: &[Sample]) {
    let mut times: Vec<f64> = samples.iter().map(|sample| sample.seconds).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let rss = samples
        .iter()
        .map(|sample| sample.max_rss_mb)
        .fold(0.0, f64::max);
    println!(
        "{name}: median {median:.3} s (min {:.3}, max {:.3}, n={}); peak RSS (max over runs) {rss:.1} MB",
        times[0],
        times[times.len() - 1],
        times.len()
    );
}
