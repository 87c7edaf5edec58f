//! Benchmark of overlay hashing: `cargo run --release --example bench_overlay -- [DIR]`.
//!
//! Builds (or reuses, in DIR) a deterministic fleet of 1,000 profiles whose overlays hold 20
//! files each plus 2 files shared from `common/`, then measures in one run, interleaved:
//! `b3sum --num-threads 1` over the same distinct files, our digest with an empty hash cache
//! (2 threads and 1 thread), and our digest with every stamp cached. All rounds read from a
//! warm page cache. Set `B3SUM=/path/to/b3sum` if it is not on PATH.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use imagegen::overlay::{
    self, FileInput, FileStamp, HashCache, MemoryHashCache, OverlayInput, OverlaySource,
};

const PROFILES: usize = 1000;
const FILES_PER_PROFILE: usize = 20;
const COMMON_FILES: usize = 10;
const ROUNDS: usize = 5;
const MARKER: &str = ".bench-overlay-v1";
const SEED: u64 = 0x1a2b_3c4d_5e6f_7788;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> BenchResult<()> {
    let (root, _temporary) = match std::env::args_os().nth(1) {
        Some(dir) => (PathBuf::from(dir), None),
        None => {
            let temporary = tempfile::tempdir()?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    if !root.join(MARKER).exists() {
        let started = Instant::now();
        generate(&root)?;
        println!(
            "generated the tree in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        // Files changed within the last 2 s are never cached (racy-clean rule).
        std::thread::sleep(Duration::from_millis(2500));
    }
    let inputs = inputs(&root);
    let input_refs: Vec<&OverlayInput> = inputs.iter().collect();
    let files = distinct_files(&root)?;
    let bytes: u64 = files.iter().map(|(_, size)| size).sum();
    println!(
        "tree: {} profiles, {} distinct files, {:.1} MB, at {}",
        PROFILES,
        files.len(),
        bytes as f64 / 1e6,
        root.display()
    );
    warm_page_cache(&files)?;
    if std::env::var_os("BENCH_OVERLAY_PROFILE_WARM").is_some() {
        // For profilers: only the cached path, repeated.
        let mut cache = MemoryHashCache::new();
        check_all(overlay::digest_many(&input_refs, &mut cache))?;
        for _ in 0..20 {
            check_all(overlay::digest_many(&input_refs, &mut cache))?;
        }
        return Ok(());
    }
    let b3sum = find_b3sum();
    let single_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut timings: HashMap<&str, Vec<(f64, f64)>> = HashMap::new();
    let mut warm_reads = 0;
    let mut b3sum_hashes = HashMap::new();
    for _ in 0..ROUNDS {
        if let Some(b3sum) = &b3sum {
            let cpu = cpu_seconds(libc::RUSAGE_CHILDREN);
            let (seconds, hashes) = run_b3sum(b3sum, &files)?;
            let cpu = cpu_seconds(libc::RUSAGE_CHILDREN) - cpu;
            timings.entry("b3sum").or_default().push((seconds, cpu));
            b3sum_hashes = hashes;
        }
        let cpu = cpu_seconds(libc::RUSAGE_SELF);
        let (seconds, mut cache) = time_digest(&input_refs, MemoryHashCache::new())?;
        let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu;
        timings.entry("cold").or_default().push((seconds, cpu));
        let cpu = cpu_seconds(libc::RUSAGE_SELF);
        let (seconds, _) =
            single_thread.install(|| time_digest(&input_refs, MemoryHashCache::new()))?;
        let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu;
        timings.entry("cold-1t").or_default().push((seconds, cpu));
        let cpu = cpu_seconds(libc::RUSAGE_SELF);
        let started = Instant::now();
        let mut counting = CountingCache {
            inner: &mut cache,
            misses: Cell::new(0),
        };
        check_all(overlay::digest_many(&input_refs, &mut counting))?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu;
        timings.entry("warm").or_default().push((seconds, cpu));
        warm_reads += counting.misses.get();
    }
    if !b3sum_hashes.is_empty() {
        verify_against_b3sum(&root, &inputs, &b3sum_hashes)?;
    }
    report(&timings, files.len(), bytes, warm_reads);
    if b3sum.is_none() {
        println!(
            "b3sum: not found on PATH; install it with \
             `cargo install --locked --root /tmp/b3root b3sum` and rerun with B3SUM=/tmp/b3root/bin/b3sum"
        );
    }
    Ok(())
}

/// Deterministic splitmix64, so the same seed always writes the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Log-uniform in [low, high).
    fn log_uniform(&mut self, low: u64, high: u64) -> u64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((low as f64).ln() + unit * ((high as f64).ln() - (low as f64).ln())).exp() as u64
    }

    fn bytes(&mut self, length: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(length as usize + 8);
        while (bytes.len() as u64) < length {
            bytes.extend_from_slice(&self.next().to_le_bytes());
        }
        bytes.truncate(length as usize);
        bytes
    }
}

/// `overlays/pNNNN/` with 20 files in a few directories (1 in 40 is 100 KB–2 MB, the rest
/// 100 B–10 KB) and `common/` with files every profile shares.
fn generate(root: &Path) -> BenchResult<()> {
    let mut rng = Rng(SEED);
    const DIRECTORIES: [&str; 5] = ["etc", "etc/config", "etc/init.d", "usr/bin", "www"];
    for profile in 0..PROFILES {
        let base = root.join(format!("overlays/p{profile:04}"));
        for directory in DIRECTORIES {
            std::fs::create_dir_all(base.join(directory))?;
        }
        for file in 0..FILES_PER_PROFILE {
            let size = if rng.next().is_multiple_of(40) {
                rng.log_uniform(100_000, 2_000_000)
            } else {
                rng.log_uniform(100, 10_000)
            };
            let directory = DIRECTORIES[file % DIRECTORIES.len()];
            std::fs::write(
                base.join(format!("{directory}/f{file:02}")),
                rng.bytes(size),
            )?;
        }
    }
    std::fs::create_dir_all(root.join("common"))?;
    for file in 0..COMMON_FILES {
        let size = rng.log_uniform(100, 10_000);
        std::fs::write(root.join(format!("common/c{file}")), rng.bytes(size))?;
    }
    std::fs::write(root.join(MARKER), "")?;
    Ok(())
}

fn inputs(root: &Path) -> Vec<OverlayInput> {
    let source = |text: String| OverlaySource {
        text,
        location: None,
    };
    (0..PROFILES)
        .map(|profile| OverlayInput {
            fleet_root: root.to_path_buf(),
            overlay_dir: Some(source(format!("overlays/p{profile:04}"))),
            files: (0..2)
                .map(|index| FileInput {
                    source: source(format!("common/c{}", (profile + index * 3) % COMMON_FILES)),
                    destination: format!("/etc/common{index}"),
                    mode: Some(0o600),
                    owner: Some("root:root".to_string()),
                })
                .collect(),
        })
        .collect()
}

fn distinct_files(root: &Path) -> BenchResult<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    let mut pending = vec![root.join("overlays"), root.join("common")];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                files.push((entry.path(), metadata.len()));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn warm_page_cache(files: &[(PathBuf, u64)]) -> BenchResult<()> {
    for (path, _) in files {
        std::hint::black_box(std::fs::read(path)?);
    }
    Ok(())
}

fn find_b3sum() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("B3SUM") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|directory| directory.join("b3sum"))
        .find(|candidate| candidate.is_file())
}

/// Runs `b3sum --num-threads 1` over all files (in batches, to stay under ARG_MAX).
fn run_b3sum(
    b3sum: &Path,
    files: &[(PathBuf, u64)],
) -> BenchResult<(f64, HashMap<PathBuf, String>)> {
    let started = Instant::now();
    let mut outputs = Vec::new();
    for batch in files.chunks(4000) {
        let output = Command::new(b3sum)
            .args(["--num-threads", "1"])
            .args(batch.iter().map(|(path, _)| path))
            .output()?;
        if !output.status.success() {
            return Err(
                format!("b3sum failed: {}", String::from_utf8_lossy(&output.stderr)).into(),
            );
        }
        outputs.push(output.stdout);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut hashes = HashMap::new();
    for line in outputs.iter().flat_map(|output| {
        String::from_utf8_lossy(output)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    }) {
        if let Some((hash, path)) = line.split_once("  ") {
            hashes.insert(PathBuf::from(path), hash.to_string());
        }
    }
    Ok((seconds, hashes))
}

fn time_digest(
    inputs: &[&OverlayInput],
    mut cache: MemoryHashCache,
) -> BenchResult<(f64, MemoryHashCache)> {
    let started = Instant::now();
    check_all(overlay::digest_many(inputs, &mut cache))?;
    Ok((started.elapsed().as_secs_f64(), cache))
}

fn check_all(
    results: Vec<Result<overlay::OverlayDigest, Vec<imagegen::Problem>>>,
) -> BenchResult<()> {
    for result in results {
        if let Err(problems) = result {
            return Err(format!("digest failed: {problems:?}").into());
        }
    }
    Ok(())
}

/// Every file entry of every profile must carry the hash b3sum printed for its source.
fn verify_against_b3sum(
    root: &Path,
    inputs: &[OverlayInput],
    b3sum: &HashMap<PathBuf, String>,
) -> BenchResult<()> {
    let refs: Vec<&OverlayInput> = inputs.iter().collect();
    let mut compared = 0;
    for (profile, result) in overlay::digest_many(&refs, &mut MemoryHashCache::new())
        .into_iter()
        .enumerate()
    {
        let digest = result.map_err(|problems| format!("{problems:?}"))?;
        for entry in digest
            .entries
            .iter()
            .filter(|entry| entry.kind == overlay::EntryKind::File)
        {
            let source = match entry.path.strip_prefix("/etc/common") {
                Some(index) => {
                    let index: usize = index.parse()?;
                    root.join(format!("common/c{}", (profile + index * 3) % COMMON_FILES))
                }
                None => root.join(format!("overlays/p{profile:04}{}", entry.path)),
            };
            if b3sum.get(&source) != Some(&entry.digest) {
                return Err(format!("hash of {} differs from b3sum", source.display()).into());
            }
            compared += 1;
        }
    }
    println!("verified: {compared} file entries carry the same hash as b3sum");
    Ok(())
}

/// User + system CPU seconds of this process (all threads) or of its waited-for children.
fn cpu_seconds(who: libc::c_int) -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(who, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(timings: &HashMap<&str, Vec<(f64, f64)>>, files: usize, bytes: u64, warm_reads: usize) {
    let megabytes = bytes as f64 / 1e6;
    println!(
        "files: {files}, bytes: {bytes} ({megabytes:.1} MB); median of {ROUNDS} interleaved rounds, warm page cache"
    );
    let wall = |name: &str| {
        timings
            .get(name)
            .map(|values| median(&values.iter().map(|(wall, _)| *wall).collect::<Vec<_>>()))
    };
    let cpu = |name: &str| {
        timings
            .get(name)
            .map(|values| median(&values.iter().map(|(_, cpu)| *cpu).collect::<Vec<_>>()))
    };
    for (name, label) in [
        ("b3sum", "b3sum --num-threads 1"),
        ("cold", "ours, empty cache (rayon, all cores)"),
        ("cold-1t", "ours, empty cache (1 thread)"),
        ("warm", "ours, all stamps cached"),
    ] {
        let (Some(seconds), Some(cpu_seconds), Some(values)) =
            (wall(name), cpu(name), timings.get(name))
        else {
            continue;
        };
        let minimum = values
            .iter()
            .map(|(wall, _)| *wall)
            .fold(f64::INFINITY, f64::min);
        let maximum = values.iter().map(|(wall, _)| *wall).fold(0.0, f64::max);
        let ratio = match (wall("b3sum"), cpu("b3sum"), name) {
            (Some(b3sum_wall), Some(b3sum_cpu), "cold" | "cold-1t") => format!(
                "  ours/b3sum throughput: wall {:.2}, per CPU-second {:.2}",
                b3sum_wall / seconds,
                b3sum_cpu / cpu_seconds
            ),
            _ => String::new(),
        };
        println!(
            "{label:<38} wall {seconds:>6.3} s ({minimum:.3}-{maximum:.3}) {:>7.1} MB/s  cpu {cpu_seconds:>6.3} s{ratio}",
            megabytes / seconds
        );
    }
    println!("warm runs: {warm_reads} files read (cache misses) over {ROUNDS} rounds");
}

/// Passes lookups through and counts misses; a miss is the only way a file gets read.
struct CountingCache<'a> {
    inner: &'a mut MemoryHashCache,
    misses: Cell<usize>,
}

impl HashCache for CountingCache<'_> {
    fn lookup(&self, path: &Path, stamp: &FileStamp) -> Option<[u8; 32]> {
        let found = self.inner.lookup(path, stamp);
        if found.is_none() {
            self.misses.set(self.misses.get() + 1);
        }
        found
    }

    fn record(&mut self, path: &Path, stamp: FileStamp, hash: [u8; 32]) {
        self.inner.record(path, stamp, hash);
    }
}
