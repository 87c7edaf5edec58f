//! Benchmark of plan-time package truth (issue 12): 1,000 profiles, each asking for 50
//! packages with dependencies, resolved against pinned feed indexes of 10,000 packages each
//! (three big feeds — `base`, `luci`, `packages` — shared by every profile, plus the small
//! `core`, `routing` and `telephony` of the stand-in mirror).
//!
//! It measures, warm (indexes and metadata in the cache, fleet files in the page cache):
//!
//! 1. the whole `imagegen plan` (`--offline --json`; `--json` and text against the `file://`
//!    mirror) with the feeds pinned, against the same plan with a lock that pins no feeds
//!    (packages unchecked): the difference is the plan-time overhead of feeds, everything
//!    included (signature checks online, reading, re-hashing and parsing the indexes,
//!    resolving every profile, offline the package cache lookups, the larger plan JSON);
//! 2. in-process, the parts: loading the pinned indexes from the cache
//!    (`feeds::prepare::pinned_feeds`: read, sha256, parse, one universe) and resolving all
//!    1,000 profiles (`BuilderFeeds::check`).
//!
//! Run: `cargo build --release --bin imagegen && cargo run --release --example bench_feeds [-- RUNS]`
//! It runs `target/release/imagegen` (or $IMAGEGEN_BIN) as a child; RUNS (default 5) plans
//! of each kind. Target (issue 12): overhead < 0.3 s warm.
//!
//! That a build whose packages are all cached makes no network request is a test, not a
//! benchmark: `tests/it/feeds.rs`, `builds_need_no_network_once_locked_and_cached_…` counts
//! the loopback mirror's requests during such an apply (the plan's metadata and index
//! signature checks, and zero for the build).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use imagegen::feeds::{BuilderFeeds, PackageList};
use imagegen::imagebuilder::ProfilesJson;
use imagegen_standin::feeds::{self, FeedPackage};
use imagegen_standin::imagebuilder::{self as ib, PackageManager};
use imagegen_standin::{demo, mirror::test_secret_key, upstream_data};

const RELEASE: &str = "23.05.4";
const PROFILES: usize = 1_000;
const PACKAGES_PER_PROFILE: usize = 50;
const PACKAGES_PER_FEED: usize = 10_000;
const BIG_FEEDS: [&str; 3] = ["base", "luci", "packages"];
/// Of the synthetic packages of each big feed, the libraries (the rest are applications).
const LIBRARIES_PER_FEED: usize = 1_000;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(5);
    let binary = std::env::var_os("IMAGEGEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(default_binary);
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --release --bin imagegen` first (or set IMAGEGEN_BIN)",
        binary.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("imagegen-bench-feeds-")
        .tempdir()
        .expect("temp dir");
    let root = dir.path();
    let started = Instant::now();
    let (synthetic, public_key) = write_mirror_and_feeds(root);
    write_fleet(root, &synthetic, &public_key);
    println!(
        "mirror: 3 feeds x {PACKAGES_PER_FEED} packages (+ core, routing, telephony); fleet: {PROFILES} profiles x {PACKAGES_PER_PROFILE} packages; generated in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // `lock` pins the feeds and fills the cache (indexes, metadata): everything after is warm.
    let fleet = root.join("fleet");
    let started = Instant::now();
    run(&binary, &fleet, &["lock"], false);
    println!(
        "imagegen lock (fetches and verifies 6 indexes): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let locked = std::fs::read_to_string(fleet.join("imagegen.lock")).expect("lock");
    let without_feeds = locked
        .split("\n[[builder.feed]]")
        .next()
        .expect("builder part")
        .to_string();

    let plan = run(&binary, &fleet, &["plan", "--offline", "--json"], true);
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("plan JSON");
    let installed: Vec<usize> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|action| action["packages"]["packages"].as_array().map(Vec::len))
        .collect();
    assert_eq!(
        installed.len(),
        PROFILES,
        "every build carries its packages"
    );
    println!(
        "resolved: {:.0} packages installed per profile on average (min {}, max {})",
        installed.iter().sum::<usize>() as f64 / installed.len() as f64,
        installed.iter().min().expect("min"),
        installed.iter().max().expect("max")
    );

    for (mode, offline, json) in [
        ("--offline --json", true, true),
        ("--json, online (file:// mirror)", false, true),
        ("(text), online (file:// mirror)", false, false),
    ] {
        let mut with = Vec::new();
        let mut without = Vec::new();
        for _ in 0..runs {
            std::fs::write(fleet.join("imagegen.lock"), &locked).expect("lock");
            with.push(timed_plan(&binary, &fleet, offline, json));
            std::fs::write(fleet.join("imagegen.lock"), &without_feeds).expect("lock");
            without.push(timed_plan(&binary, &fleet, offline, json));
        }
        std::fs::write(fleet.join("imagegen.lock"), &locked).expect("lock");
        let with = median(&mut with);
        let without = median(&mut without);
        println!("plan {mode}, feeds pinned:    median {with:.3} s ({runs} runs)");
        println!("plan {mode}, no feeds pinned: median {without:.3} s ({runs} runs)");
        println!(
            "plan {mode}: overhead of feeds (warm) {:.3} s (target < 0.3 s)",
            with - without
        );
    }

    in_process(root, &fleet);
    if std::env::var_os("IMAGEGEN_BENCH_KEEP").is_some() {
        println!("kept the fleet in {}", dir.keep().display());
    }
}

/// The parts, in this process: loading the pinned indexes, then resolving every profile.
fn in_process(root: &Path, fleet: &Path) {
    let lock = imagegen::lock::LockFile::read(&fleet.join("imagegen.lock"))
        .expect("read lock")
        .expect("lock exists");
    let entry = lock.entries.values().next().expect("one builder");
    let cache = root.join("state/cache");
    let started = Instant::now();
    let builder: BuilderFeeds =
        imagegen::feeds::prepare::pinned_feeds(&cache, &entry.feeds, None).expect("feeds");
    let load = started.elapsed().as_secs_f64();
    let profiles_json = std::fs::read(root.join(format!(
        "mirror/releases/{RELEASE}/targets/x86/64/profiles.json"
    )))
    .expect("profiles.json");
    let profiles = ProfilesJson::parse(&profiles_json, "profiles.json").expect("parse");
    let device = profiles
        .device("generic")
        .map(|info| info.device_packages.clone())
        .unwrap_or_default();
    let lists: Vec<Vec<String>> = (0..PROFILES)
        .map(|index| {
            let text = std::fs::read_to_string(fleet.join(format!("profiles/p{index:04}.yaml")))
                .expect("profile");
            let line = text
                .lines()
                .find_map(|line| line.strip_prefix("packages: ["))
                .expect("packages line");
            let mut names: Vec<String> = line
                .trim_end_matches(']')
                .split(", ")
                .map(str::to_string)
                .collect();
            names.sort();
            names
        })
        .collect();
    let started = Instant::now();
    let mut installed = 0usize;
    for additions in &lists {
        let check = builder.check(
            &PackageList {
                defaults: &profiles.default_packages,
                device: &device,
                additions,
                removals: &[],
            },
            None,
        );
        assert!(check.failures.is_empty(), "{:?}", check.failures);
        installed += check.packages.packages.len();
    }
    let resolve = started.elapsed().as_secs_f64();
    println!(
        "in process: load 6 pinned indexes from the cache {:.3} s; resolve {PROFILES} profiles {:.3} s ({:.0} µs each, {installed} packages in all)",
        load,
        resolve,
        resolve * 1e6 / PROFILES as f64
    );
}

fn default_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("imagegen")
}

/// A stand-in mirror for x86/64 whose `base`, `luci` and `packages` feeds are padded to
/// 10,000 packages each with synthetic ones, re-signed with the TEST key. Returns the
/// synthetic applications' names and the TEST public key.
fn write_mirror_and_feeds(root: &Path) -> (Vec<String>, PathBuf) {
    let mirror = demo::write_mirror(
        &root.join("mirror"),
        &upstream_data(),
        &[(RELEASE, "x86", "64")],
        0.0,
    )
    .expect("mirror");
    let spec = ib::spec_from_data(&upstream_data(), RELEASE, "x86", "64").expect("spec");
    let dirs = feeds::feed_dirs(&spec).expect("feed dirs");
    let all = feeds::packages(&spec).expect("packages");
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut synthetic: Vec<String> = Vec::new();
    for short in BIG_FEEDS {
        let dir = dirs
            .iter()
            .find(|dir| dir.short == short)
            .expect("feed dir");
        let mut packages: Vec<FeedPackage> = all
            .iter()
            .filter(|package| package.feed == short)
            .cloned()
            .collect();
        // Shaped like a real feed: a thousand are libraries (each needing `libc` and up to two
        // more basic libraries: a shallow, layered graph), the rest applications needing up
        // to three libraries of this feed or of `base`. Profiles ask for applications.
        let count = PACKAGES_PER_FEED.saturating_sub(packages.len());
        let libraries = LIBRARIES_PER_FEED;
        let lib_name = |feed: &str, index: usize| format!("lib{feed}-bench{index:04}");
        for index in 0..count {
            let mut depends = vec!["libc".to_string()];
            let (name, version) = if index < libraries {
                for _ in 0..(next() % 3) {
                    if index > 0 {
                        depends.push(lib_name(short, next() as usize % index.div_ceil(4)));
                    }
                }
                (
                    lib_name(short, index),
                    format!("{}.{}-1", index % 5, index % 11),
                )
            } else {
                for _ in 0..(next() % 4) {
                    let feed = if next().is_multiple_of(3) {
                        "base"
                    } else {
                        short
                    };
                    depends.push(lib_name(feed, next() as usize % libraries));
                }
                let name = format!("bench-{short}-{:05}", index - libraries);
                synthetic.push(name.clone());
                (name, format!("1.{}.{}-1", index % 7, index % 13))
            };
            depends.sort();
            depends.dedup();
            packages.push(FeedPackage {
                name,
                version,
                depends,
                provides: Vec::new(),
                conflicts: Vec::new(),
                feed: short.to_string(),
                architecture: "x86_64".to_string(),
                installed_size: 1024 + (next() % 65536),
            });
        }
        let list: Vec<&FeedPackage> = packages.iter().collect();
        feeds::write_feed(
            &root.join("mirror").join(&dir.path),
            &list,
            PackageManager::Opkg,
            &test_secret_key(),
        )
        .expect("write feed");
    }
    (synthetic, mirror.public_key)
}

/// `fleet/`: imagegen.toml (the mirror, its TEST key, state under `state/`) and 1,000
/// profiles, each with 50 random synthetic packages.
fn write_fleet(root: &Path, synthetic: &[String], public_key: &Path) {
    let fleet = root.join("fleet");
    std::fs::create_dir_all(fleet.join("profiles")).expect("profiles dir");
    let mirror = root.join("mirror");
    let state = root.join("state");
    std::fs::write(
        fleet.join("imagegen.toml"),
        format!(
            "[fleet]\nname = \"bench\"\n\n[settings]\nmirror = \"file://{}\"\ntrusted_keys = [\"{}\"]\ndb = \"{}\"\nartifacts_dir = \"{}\"\ncache_dir = \"{}\"\n",
            mirror.display(),
            public_key.display(),
            state.join("state.redb").display(),
            state.join("artifacts").display(),
            state.join("cache").display(),
        ),
    )
    .expect("manifest");
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    for index in 0..PROFILES {
        let mut names: Vec<&str> = Vec::with_capacity(PACKAGES_PER_PROFILE);
        while names.len() < PACKAGES_PER_PROFILE {
            let name = synthetic[next() as usize % synthetic.len()].as_str();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut profile = String::new();
        let _ = write!(
            profile,
            "profile_id: p{index:04}\nname: Profile {index}\ndevice_id: generic\nopenwrt_release: {RELEASE}\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\npackages: [{}]\n",
            names.join(", ")
        );
        std::fs::write(fleet.join(format!("profiles/p{index:04}.yaml")), profile).expect("profile");
    }
}

fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Runs imagegen in the fleet (online unless `offline`); panics on failure; returns stdout.
fn run(binary: &Path, fleet: &Path, args: &[&str], offline: bool) -> String {
    let output = Command::new(binary)
        .args(args)
        .current_dir(fleet)
        .env("OWRT_IMG_OFFLINE", if offline { "1" } else { "0" })
        .output()
        .expect("run imagegen");
    assert!(
        output.status.success(),
        "imagegen {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout)
            .chars()
            .take(3000)
            .collect::<String>(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn timed_plan(binary: &Path, fleet: &Path, offline: bool, json: bool) -> f64 {
    let args: &[&str] = if json { &["plan", "--json"] } else { &["plan"] };
    let started = Instant::now();
    run(binary, fleet, args, offline);
    started.elapsed().as_secs_f64()
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
