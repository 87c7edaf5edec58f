//! Benchmark of `imagegen serve`: `GET /builds` and `GET /profiles` on a fleet of 1,000
//! profiles with 1,000 recorded builds, each driven by `wrk` (Debian's `wrk`) on loopback for
//! 10 s. Reports requests/s, p50/p99 latency, the response size and the server's RSS, and
//! `GET /config` (loading the fleet, tiny answer) as the cost of a workspace.
//!
//! Run: `cargo build --release && cargo run --release --example bench_serve`
//! Uses target/release/imagegen (or $IMAGEGEN_BIN). Options via environment:
//! BENCH_SECONDS (10), BENCH_CONNECTIONS (8), BENCH_PROFILES (1000).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use imagegen::key::{BuildInputs, BuilderPin, ImageOptions, OverlayInputs};
use imagegen::state::{ArtifactRecord, ArtifactRef, BuildRecord, BuildStatus, Store};
use imagegen::triple::Triple;

fn main() {
    let binary = std::env::var_os("IMAGEGEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(default_binary);
    let seconds = setting("BENCH_SECONDS", 10);
    let connections = setting("BENCH_CONNECTIONS", 8);
    let count = setting("BENCH_PROFILES", 1000);
    let dir = tempfile::tempdir().expect("temp dir");
    write_fleet(dir.path(), count);
    record_builds(&dir.path().join("state/state.redb"), count);
    // A fleet that was just written is reloaded per request (its files may still be in
    // flux); a served fleet is usually older. Measure that case.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (mut server, url) = start(&binary, dir.path());
    println!(
        "imagegen serve, {count} profiles, {count} builds; wrk -t2 -c{connections} -d{seconds}s"
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "endpoint", "req/s", "p50 ms", "p99 ms", "body bytes", "RSS MiB"
    );
    for endpoint in ["/builds", "/profiles", "/config"] {
        let body = reqwest::blocking::get(format!("{url}{endpoint}"))
            .and_then(|response| response.error_for_status())
            .and_then(|response| response.bytes())
            .expect("warm-up request");
        let result = wrk(&format!("{url}{endpoint}"), seconds, connections);
        println!(
            "{:<10} {:>10.1} {:>10.2} {:>10.2} {:>12} {:>12.1}",
            endpoint,
            result.requests_per_second,
            result.p50_ms,
            result.p99_ms,
            body.len(),
            rss_mib(server.id(), "VmRSS")
        );
    }
    println!(
        "server peak RSS (VmHWM): {:.1} MiB",
        rss_mib(server.id(), "VmHWM")
    );
    let _ = server.kill();
    let _ = server.wait();
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn default_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("imagegen")
}

/// `count` x86/64 profiles, as `imagegen profiles list` would read them.
fn write_fleet(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir.join("profiles")).expect("profiles dir");
    std::fs::write(
        dir.join("imagegen.toml"),
        "[fleet]\nname = \"bench\"\n\n[settings]\noffline = true\n",
    )
    .expect("manifest");
    for index in 0..count {
        std::fs::write(
            dir.join(format!("profiles/p{index:04}.yaml")),
            format!(
                "profile_id: p{index:04}\nname: Profile {index}\ndevice_id: generic\nopenwrt_release: 23.05.4\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\ntags: [bench, rack{}]\npackages: [luci, htop, tcpdump]\nrootfs_partsize: {}\n",
                index % 10,
                100 + index
            ),
        )
        .expect("profile");
    }
}

/// One succeeded build per profile, each with three artifacts, as the coordinator records them.
fn record_builds(db: &Path, count: usize) {
    let store = Store::open(db, "bench_serve").expect("store");
    let mut writer = store.write().expect("write");
    for index in 0..count {
        let key = blake3::hash(format!("build {index}").as_bytes())
            .to_hex()
            .to_string();
        let artifacts: Vec<ArtifactRef> = ["combined", "sysupgrade", "manifest"]
            .iter()
            .map(|kind| ArtifactRef {
                name: format!("openwrt-23.05.4-x86-64-p{index:04}-{kind}.img.gz"),
                sha256: hex_sha(&format!("{index} {kind}")),
                kind: kind.to_string(),
                filesystem: Some("squashfs".to_string()),
                size: 12_000_000,
            })
            .collect();
        for artifact in &artifacts {
            writer
                .put_artifact(&ArtifactRecord {
                    sha256: artifact.sha256.clone(),
                    name: artifact.name.clone(),
                    kind: artifact.kind.clone(),
                    filesystem: artifact.filesystem.clone(),
                    size: artifact.size,
                    builds: vec![key.clone()],
                })
                .expect("artifact");
        }
        writer
            .put_build(&BuildRecord {
                key,
                profile_id: format!("p{index:04}"),
                fleet: Some("bench".to_string()),
                inputs: BuildInputs {
                    schema: 1,
                    builder: BuilderPin {
                        triple: Triple::new("23.05.4", "x86", "64"),
                        archive_sha256: Some(hex_sha("archive")),
                        version_code: Some("r24106-10cc5fcd00".to_string()),
                    },
                    imagebuilder_profile: "generic".to_string(),
                    packages: vec!["htop".into(), "luci".into(), "tcpdump".into()],
                    packages_remove: Vec::new(),
                    overlay: OverlayInputs::default(),
                    options: ImageOptions::default(),
                    feeds: Vec::new(),
                },
                status: BuildStatus::Succeeded,
                started_at: 1_700_000_000 + index as i64,
                finished_at: 1_700_000_030 + index as i64,
                log_path: Some(PathBuf::from(format!("/var/lib/imagegen/logs/{index}.log"))),
                manifest_path: None,
                artifacts,
                error: None,
                applied_by: Vec::new(),
                kept_build_dir: None,
            })
            .expect("build");
    }
    writer.commit().expect("commit");
}

fn hex_sha(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn start(binary: &Path, dir: &Path) -> (Child, String) {
    let state = dir.join("state");
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("OWRT_IMG_DB_URL", state.join("state.redb"))
        .env("OWRT_IMG_ARTIFACTS_DIR", state.join("artifacts"))
        .env("OWRT_IMG_CACHE_DIR", state.join("cache"))
        .env("OWRT_IMG_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start imagegen serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("address")
        .to_string();
    (child, format!("http://{address}"))
}

struct WrkResult {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wrk(url: &str, seconds: usize, connections: usize) -> WrkResult {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") {
        panic!("wrk saw error responses:\n{text}");
    }
    let field = |prefix: &str| -> &str {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk output:\n{text}"))
    };
    WrkResult {
        requests_per_second: field("Requests/sec:").parse().unwrap_or(0.0),
        p50_ms: milliseconds(field("50%")),
        p99_ms: milliseconds(field("99%")),
    }
}

/// wrk prints `812.00us`, `3.41ms` or `1.02s`.
fn milliseconds(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => f64::NAN,
    }
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
