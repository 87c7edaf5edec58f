//! Benchmark: preparing a worker slot versus `cp -a` of the same Image Builder-like tree.
//!
//! Generates a deterministic ~500 MB tree shaped like `reference/perf-baselines.md` "Test
//! data" (≈20k files, ≈2k directories, ≈210 symlinks, plus the Image Builder files the slot
//! policy cares about), then interleaves, run by run: `cp -a TREE DEST`, `cp -al` (the
//! hardlink-clone floor), a fresh
//! `prepare_slot`, an idle reset (nothing changed), and a reset after a simulated build.
//! Nothing is deleted until all runs are done (ext4 without a journal is slow to create
//! files right after a mass delete).
//!
//! Usage: `cargo run --release --example bench_slot [SCRATCH_DIR] [RUNS]`
//! (default `$TMPDIR/imagegen-bench-slot`, 5 runs). The generated tree is kept for reuse.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use imagegen::build::{SlotReport, prepare_slot};

const SEED: u64 = 20240601;
const MTIME: u64 = 1_700_000_000;
const ROOT_NAME: &str = "openwrt-imagebuilder-synth-ramips-mt7621.Linux-x86_64";
const KDIR: &str = "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621";

fn main() {
    let mut args = std::env::args().skip(1);
    let scratch = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("imagegen-bench-slot"));
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);
    let tree = scratch.join("src").join(ROOT_NAME);
    if !scratch.join("src/.complete").is_file() {
        let _ = fs::remove_dir_all(scratch.join("src"));
        let started = Instant::now();
        let stats = generate(&tree);
        fs::write(scratch.join("src/.complete"), "").expect("marker");
        println!(
            "generated {} files, {} dirs, {} symlinks, {:.1} MB in {:.1} s",
            stats.0,
            stats.1,
            stats.2,
            stats.3 as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    warm(&tree);
    if let Ok(repeat) = std::env::var("BENCH_SLOT_PROFILE_RESETS") {
        // For profilers: one slot, then only idle resets.
        let slot = scratch.join("profile-slot");
        prepare_slot(&tree, &slot).expect("slot");
        for _ in 0..repeat.parse().unwrap_or(20) {
            let (elapsed, _) = timed(|| prepare_slot(&tree, &slot).expect("reset"));
            println!("idle reset {:.3} s", elapsed.as_secs_f64());
        }
        return;
    }
    if let Ok(repeat) = std::env::var("BENCH_SLOT_PROFILE_FRESH") {
        // For profilers: only fresh slots (deleted at the end).
        let base = scratch.join("profile-fresh");
        for index in 0..repeat.parse().unwrap_or(5) {
            let slot = base.join(index.to_string());
            let (elapsed, _) = timed(|| prepare_slot(&tree, &slot).expect("slot"));
            println!("fresh slot {:.3} s", elapsed.as_secs_f64());
        }
        let _ = fs::remove_dir_all(&base);
        return;
    }
    let work = scratch.join(format!("run-{}", std::process::id()));
    fs::create_dir_all(&work).expect("work dir");
    let mut rows: Vec<[f64; 5]> = Vec::new();
    let mut last: Option<(SlotReport, SlotReport, SlotReport)> = None;
    for run in 0..runs {
        let cp_dest = work.join(format!("cp-{run}"));
        fs::create_dir_all(&cp_dest).expect("cp dest");
        let cp = time(|| {
            let status = Command::new("cp")
                .arg("-a")
                .arg(&tree)
                .arg(&cp_dest)
                .status();
            assert!(status.map(|s| s.success()).unwrap_or(false), "cp -a failed");
        });
        let link_dest = work.join(format!("cpl-{run}"));
        fs::create_dir_all(&link_dest).expect("cp -al dest");
        let cp_link = time(|| {
            let status = Command::new("cp")
                .arg("-al")
                .arg(&tree)
                .arg(&link_dest)
                .status();
            assert!(
                status.map(|s| s.success()).unwrap_or(false),
                "cp -al failed"
            );
        });
        let slot = work.join(format!("slot-{run}"));
        let (fresh, fresh_report) = timed(|| prepare_slot(&tree, &slot).expect("fresh slot"));
        let (idle, idle_report) = timed(|| prepare_slot(&tree, &slot).expect("idle reset"));
        simulate_build(&slot);
        let (dirty, dirty_report) = timed(|| prepare_slot(&tree, &slot).expect("reset"));
        println!(
            "run {run}: cp -a {:.3} s | cp -al {:.3} s | fresh slot {:.3} s | idle reset {:.3} s | reset after build {:.3} s",
            cp.as_secs_f64(),
            cp_link.as_secs_f64(),
            fresh.as_secs_f64(),
            idle.as_secs_f64(),
            dirty.as_secs_f64()
        );
        rows.push([cp, cp_link, fresh, idle, dirty].map(|d| d.as_secs_f64()));
        last = Some((fresh_report, idle_report, dirty_report));
    }
    summarize(&rows);
    if let Some((fresh, idle, dirty)) = last {
        println!(
            "fresh:  {}",
            serde_json::to_string(&fresh).unwrap_or_default()
        );
        println!(
            "idle:   {}",
            serde_json::to_string(&idle).unwrap_or_default()
        );
        println!(
            "dirty:  {}",
            serde_json::to_string(&dirty).unwrap_or_default()
        );
    }
    let _ = fs::remove_dir_all(&work);
}

fn summarize(rows: &[[f64; 5]]) {
    let column = |index: usize| -> Vec<f64> {
        let mut values: Vec<f64> = rows.iter().map(|row| row[index]).collect();
        values.sort_by(|a, b| a.total_cmp(b));
        values
    };
    let median = |values: &[f64]| values[values.len() / 2];
    let names = [
        "cp -a",
        "cp -al",
        "fresh slot",
        "idle reset",
        "reset after build",
    ];
    println!("\nmedian wall s (min-max); ratios are medians of per-run ratios:");
    let ratio = |index: usize, base: usize| -> f64 {
        let mut ratios: Vec<f64> = rows.iter().map(|row| row[index] / row[base]).collect();
        ratios.sort_by(|a, b| a.total_cmp(b));
        median(&ratios)
    };
    for (index, name) in names.iter().enumerate() {
        let values = column(index);
        println!(
            "  {name:<18} {:.3} ({:.3}-{:.3})  vs cp -a {:.3}  vs cp -al {:.3}",
            median(&values),
            values[0],
            values[values.len() - 1],
            ratio(index, 0),
            ratio(index, 1)
        );
    }
}

fn time(action: impl FnOnce()) -> Duration {
    let started = Instant::now();
    action();
    started.elapsed()
}

fn timed<T>(action: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let value = action();
    (started.elapsed(), value)
}

/// What a real `make image` leaves behind: a rootfs staging tree, run-time dirs, a
/// regenerated index, an edited `.config`, filesystem images next to the kernel.
fn simulate_build(slot: &Path) {
    let root = slot.join("build_dir/target-mipsel_24kc_musl/root-ramips");
    let mut rng = Rng(7);
    for index in 0..1500 {
        let dir = root.join(format!("usr/lib/d{}", index % 60));
        fs::create_dir_all(&dir).expect("rootfs dir");
        write_file(&dir.join(format!("f{index}")), &bytes(&mut rng, 2000));
    }
    for dir in [
        "tmp",
        "dl",
        "build_dir/target-mipsel_24kc_musl/json_info_files",
    ] {
        fs::create_dir_all(slot.join(dir)).expect("run-time dir");
        write_file(&slot.join(dir).join("x"), b"x");
    }
    write_file(
        &slot.join(KDIR).join("root.squashfs"),
        &bytes(&mut rng, 4 << 20),
    );
    let packages = slot.join("packages/Packages");
    let _ = fs::remove_file(&packages);
    write_file(&packages, b"Package: reindexed\n");
    let config = slot.join(".config");
    let _ = fs::remove_file(&config);
    write_file(&config, b"CONFIG_TARGET_ROOTFS_EXT4FS=y\n");
}

fn warm(tree: &Path) {
    fn walk(dir: &Path) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                walk(&entry.path());
            } else if kind.is_file() {
                let _ = fs::read(entry.path());
            }
        }
    }
    walk(tree);
}

struct Rng(u64);

impl Rng {
    /// splitmix64
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn log_uniform(&mut self, low: u64, high: u64) -> u64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (low, high) = ((low as f64).ln(), (high as f64).ln());
        (low + unit * (high - low)).exp() as u64
    }

    fn word(&mut self) -> String {
        const SYLLABLES: [&str; 16] = [
            "ar", "be", "ci", "do", "eu", "fa", "gi", "ho", "ka", "le", "mo", "nu", "pa", "ri",
            "se", "ti",
        ];
        (0..1 + self.below(3))
            .map(|_| SYLLABLES[self.below(SYLLABLES.len())])
            .collect()
    }
}

fn bytes(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(size);
    data
}

fn write_file(path: &Path, data: &[u8]) {
    let mut file = fs::File::create(path).expect("create file");
    file.write_all(data).expect("write file");
}

/// Writes the tree; returns (files, dirs, symlinks, bytes).
fn generate(root: &Path) -> (usize, usize, usize, u64) {
    let mut rng = Rng(SEED);
    let tops: [(&str, &[&str], usize); 3] = [
        (
            "text",
            &[
                "include",
                "scripts",
                "target/linux/ramips",
                "target/linux/generic",
                "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621/linux-6.6.52/arch/mips/boot/dts",
                "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621/linux-6.6.52/include",
            ],
            1700,
        ),
        (
            "code",
            &[
                "staging_dir/host/bin",
                "staging_dir/host/lib",
                "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621/linux-6.6.52/scripts",
                "staging_dir/target-mipsel_24kc_musl/root-ramips",
            ],
            240,
        ),
        (
            "rand",
            &["packages", "staging_dir/target-mipsel_24kc_musl/packages"],
            50,
        ),
    ];
    let mut dirs: Vec<Vec<(PathBuf, usize)>> = Vec::new();
    let mut all_dirs: HashSet<PathBuf> = HashSet::new();
    for (_, top_dirs, count) in &tops {
        let mut kind_dirs: Vec<(PathBuf, usize)> =
            top_dirs.iter().map(|top| (root.join(top), 0)).collect();
        all_dirs.extend(kind_dirs.iter().map(|(dir, _)| dir.clone()));
        while kind_dirs.len() < *count {
            let (parent, depth) = kind_dirs[rng.below(kind_dirs.len())].clone();
            if depth >= 6 {
                continue;
            }
            let path = parent.join(rng.word() + ["", "-1", "_x"][rng.below(3)]);
            if all_dirs.insert(path.clone()) {
                kind_dirs.push((path, depth + 1));
            }
        }
        dirs.push(kind_dirs);
    }
    for dir in &all_dirs {
        fs::create_dir_all(dir).expect("create dir");
    }
    let mut used: HashSet<PathBuf> = HashSet::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut total = 0u64;
    let extensions: [&[&str]; 3] = [
        &[".h", ".c", ".mk", "", ".dts", ".sh", ".py", ".patch"],
        &["", "", ".so", ".ko", ".a", ".o"],
        &[".ipk", ".ipk", ".gz", ".bin", ".apk"],
    ];
    let classes: [(usize, u64, u64, Option<usize>); 4] = [
        (16_700, 100, 10 << 10, Some(0)),
        (2_600, 10 << 10, 100 << 10, None),
        (500, 100 << 10, 2 << 20, None),
        (6, 4 << 20, 12 << 20, None),
    ];
    for (count, low, high, fixed_kind) in classes {
        for _ in 0..count {
            let kind = fixed_kind.unwrap_or(if rng.below(100) < 85 { 1 } else { 2 });
            let dir = &dirs[kind][rng.below(dirs[kind].len())].0;
            let extension = extensions[kind][rng.below(extensions[kind].len())];
            let mut path = dir.join(rng.word() + extension);
            let mut suffix = 1;
            while used.contains(&path) || all_dirs.contains(&path) {
                path = dir.join(format!("{}{extension}.{suffix}", rng.word()));
                suffix += 1;
            }
            let size = rng.log_uniform(low, high) as usize;
            write_file(&path, &bytes(&mut rng, size));
            total += size as u64;
            used.insert(path.clone());
            files.push(path);
        }
    }
    total += write_builder_files(root, &mut rng, &mut files);
    let mut symlinks = 0;
    while symlinks < 210 {
        let target = &files[rng.below(files.len())];
        let kind = rng.below(3);
        let dir = &dirs[kind][rng.below(dirs[kind].len())].0;
        let link = dir.join(format!("lnk-{}-{symlinks}", rng.word()));
        if used.insert(link.clone()) {
            let relative = relative_path(dir, target);
            std::os::unix::fs::symlink(relative, &link).expect("symlink");
            symlinks += 1;
        }
    }
    fix_mtimes(root);
    (files.len(), all_dirs.len(), symlinks, total)
}

/// The files that make the tree an Image Builder for the slot policy.
fn write_builder_files(root: &Path, rng: &mut Rng, files: &mut Vec<PathBuf>) -> u64 {
    let entries: [(&str, usize); 12] = [
        ("Makefile", 12_000),
        (".config", 90_000),
        (".targetinfo", 400_000),
        (".packageinfo", 900_000),
        ("repositories.conf", 600),
        ("keys/b5043e70f9a75cde", 100),
        ("packages/Packages", 0),
        ("include/version.mk", 4_000),
        (
            "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621/vmlinux",
            8 << 20,
        ),
        (
            "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621/vmlinux.elf",
            9 << 20,
        ),
        (
            "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621/image-mt7621_a.dtb",
            30_000,
        ),
        (
            "build_dir/target-mipsel_24kc_musl/linux-ramips_mt7621/image-mt7621_b.dtb",
            30_000,
        ),
    ];
    let mut total = 0;
    for (relative, size) in entries {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
        write_file(&path, &bytes(rng, size));
        total += size as u64;
        files.push(path);
    }
    total
}

fn relative_path(from_dir: &Path, target: &Path) -> PathBuf {
    let from: Vec<_> = from_dir.components().collect();
    let to: Vec<_> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for component in &to[common..] {
        relative.push(component);
    }
    relative
}

fn fix_mtimes(dir: &Path) {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME);
    for entry in fs::read_dir(dir).expect("list").flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            fix_mtimes(&path);
        } else if kind.is_file()
            && let Ok(file) = fs::File::options().write(true).open(&path)
        {
            let _ = file.set_modified(when);
        }
    }
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.set_modified(when);
    }
}
