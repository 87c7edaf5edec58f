//! Benchmark: fetch a ~200 MB stand-in Image Builder from a loopback HTTP mirror with
//! imagegen, against `curl -o F URL && sha256sum F && tar -xf F` and against decompression
//! alone, with peak RSS.
//!
//! usage: cargo run --release --example bench_fetch -- [SCRATCH_DIR] [--xz] [--rounds N]
//!        [--work DIR]   (where trees are unpacked; e.g. a tmpfs to measure CPU cost only)
//!
//! The archive is generated once (a synthetic tree written straight into `zstd -T2 -12` or
//! `xz -T2 -7`, the 16 MiB dictionary of OpenWrt's `-7e`) and reused. Our fetch runs in a
//! child process so its VmHWM is its own. Rounds interleave the contenders; every round deletes the previous trees first, so both
//! see the same ext4 state (see perf-baselines.md on file-creation noise).

use std::error::Error;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imagegen::imagebuilder::usign::Keyring;
use imagegen::imagebuilder::{FetchOptions, MirrorClient, fetch_builder, fetch_target};
use imagegen_standin::mirror::{ArchiveSource, MirrorWriter, TargetFiles, test_secret_key};

#[allow(dead_code)]
#[path = "../tests/it/http_server.rs"]
mod http_server;

const RELEASE: &str = "23.05.4";
const TARGET: &str = "ramips";
const SUBTARGET: &str = "mt7621";
const PROFILES_JSON: &[u8] = br#"{"target":"ramips/mt7621","version_code":"r1-bench","version_number":"23.05.4","profiles":{}}"#;

type AnyResult<T> = Result<T, Box<dyn Error>>;

fn main() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child_fetch(&args[1..]);
    }
    let xz = args.iter().any(|arg| arg == "--xz");
    let option = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|index| args.get(index + 1))
            .cloned()
    };
    let scratch = args
        .first()
        .filter(|arg| !arg.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("imagegen-bench"));
    let work = option("--work")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.join("work"));
    let rounds = option("--rounds")
        .and_then(|value| value.parse().ok())
        .unwrap_or(3usize);
    fs::create_dir_all(&scratch)?;
    let suffix = if xz { "tar.xz" } else { "tar.zst" };
    let name = format!("openwrt-imagebuilder-{RELEASE}-{TARGET}-{SUBTARGET}.Linux-x86_64.{suffix}");
    let archive = scratch.join(&name);
    if !archive.exists() {
        generate(&archive, &name, xz)?;
    }
    let mirror = MirrorWriter::new(scratch.join(format!("mirror-{suffix}")));
    let published = mirror.target_path(RELEASE, TARGET, SUBTARGET).join(&name);
    if !published.exists() {
        let files = TargetFiles {
            release: RELEASE,
            target: TARGET,
            subtarget: SUBTARGET,
            archive_name: &name,
            archive: ArchiveSource::File(&archive),
            profiles_json: PROFILES_JSON,
            extra: Vec::new(),
        };
        mirror.write_target(&files, Some(&test_secret_key()))?;
    }
    let size = fs::metadata(&archive)?.len();
    println!("archive {name}: {:.1} MB", size as f64 / 1e6);
    let server = http_server::TestServer::start(mirror.root());
    let url = format!(
        "{}/releases/{RELEASE}/targets/{TARGET}/{SUBTARGET}/{name}",
        server.url()
    );
    run_rounds(&work, &server.url(), &url, &archive, xz, rounds)
}

struct Sample {
    wall: Duration,
    peak_kb: u64,
}

fn run_rounds(
    work: &Path,
    base: &str,
    url: &str,
    archive: &Path,
    xz: bool,
    rounds: usize,
) -> AnyResult<()> {
    let mut ours = Vec::new();
    let mut curl = Vec::new();
    let mut decompress = Vec::new();
    let tar_flag = if xz { "-J" } else { "--zstd" };
    let decompressor = if xz { "xz -dc" } else { "zstd -dc" };
    for round in 0..rounds {
        reset(work)?;
        ours.push(our_fetch(base, work)?);
        reset(work)?;
        let shell = format!(
            "curl -s -o {w}/F '{url}' && sha256sum {w}/F && mkdir {w}/d && tar {tar_flag} -xf {w}/F -C {w}/d",
            w = work.display()
        );
        curl.push(timed_shell(&shell)?);
        decompress.push(timed_shell(&format!(
            "{decompressor} {} > /dev/null",
            archive.display()
        ))?);
        println!(
            "round {round}: imagegen {:.2}s ({} MB peak) | curl+sha256sum+tar {:.2}s | {decompressor} {:.2}s",
            ours[round].wall.as_secs_f64(),
            ours[round].peak_kb / 1024,
            curl[round].wall.as_secs_f64(),
            decompress[round].wall.as_secs_f64(),
        );
    }
    report(
        "imagegen fetch (download+sha256+decompress+unpack+syncfs)",
        &mut ours,
    );
    report("curl -o F && sha256sum F && tar -xf F", &mut curl);
    report(&format!("{decompressor} F > /dev/null"), &mut decompress);
    reset(work)
}

fn report(label: &str, samples: &mut [Sample]) {
    samples.sort_by_key(|sample| sample.wall);
    let median = &samples[samples.len() / 2];
    let peak = samples
        .iter()
        .map(|sample| sample.peak_kb)
        .max()
        .unwrap_or(0);
    println!(
        "{label}: median {:.2}s (min {:.2}s, max {:.2}s), peak RSS {:.1} MB",
        median.wall.as_secs_f64(),
        samples[0].wall.as_secs_f64(),
        samples[samples.len() - 1].wall.as_secs_f64(),
        peak as f64 / 1024.0
    );
}

fn reset(work: &Path) -> AnyResult<()> {
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    fs::create_dir_all(work)?;
    Ok(())
}

fn our_fetch(base: &str, work: &Path) -> AnyResult<Sample> {
    let start = Instant::now();
    let output = Command::new(std::env::current_exe()?)
        .args(["--child", base])
        .arg(work.join("cache"))
        .arg(work.join("tmp"))
        .output()?;
    let wall = start.elapsed();
    if !output.status.success() {
        return Err(format!(
            "child fetch failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let peak_kb = stdout
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM_kB="))
        .and_then(|value| value.trim().parse().ok())
        .ok_or("child printed no VmHWM")?;
    Ok(Sample { wall, peak_kb })
}

/// Runs a shell pipeline under `/usr/bin/time`, reporting the largest child's peak RSS.
fn timed_shell(script: &str) -> AnyResult<Sample> {
    let start = Instant::now();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS_kB=%M", "sh", "-c", script])
        .stdout(Stdio::null())
        .output()?;
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("`{script}` failed: {stderr}").into());
    }
    let peak_kb = stderr
        .lines()
        .find_map(|line| line.strip_prefix("MAXRSS_kB="))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    Ok(Sample { wall, peak_kb })
}

fn child_fetch(args: &[String]) -> AnyResult<()> {
    let [base, cache, tmp] = args else {
        return Err("usage: --child BASE CACHE TMP".into());
    };
    let client = MirrorClient::new(base, FetchOptions::default())?;
    let mut keyring = Keyring::official();
    keyring.add(test_secret_key().public_key());
    let metadata = fetch_target(
        &client,
        &keyring,
        true,
        &imagegen::triple::Triple::new(RELEASE, TARGET, SUBTARGET),
    )?;
    let top = fetch_builder(
        &client,
        &metadata,
        Path::new(cache),
        Path::new(tmp),
        &mut |_| {},
    )?;
    let status = fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .map(|value| value.trim().trim_end_matches("kB").trim().to_string())
        .unwrap_or_default();
    println!("top={}", top.display());
    println!("VmHWM_kB={hwm}");
    Ok(())
}

// ---- synthetic Image Builder tree, written as tar straight into the compressor ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn log_uniform(&mut self, low: u64, high: u64) -> u64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((low as f64).ln() + unit * ((high as f64).ln() - (low as f64).ln())).exp() as u64
    }

    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
    }
}

fn generate(archive: &Path, name: &str, xz: bool) -> AnyResult<()> {
    let top = name
        .strip_suffix(".tar.xz")
        .or_else(|| name.strip_suffix(".tar.zst"))
        .ok_or("bad name")?;
    println!(
        "generating {} (one-time; compressing takes a while)",
        archive.display()
    );
    let output = fs::File::create(archive)?;
    let mut compressor = if xz {
        Command::new("xz")
            .args(["-T2", "-7", "-c"])
            .stdin(Stdio::piped())
            .stdout(output)
            .spawn()?
    } else {
        Command::new("zstd")
            .args(["-T2", "-12", "-q", "-c"])
            .stdin(Stdio::piped())
            .stdout(output)
            .spawn()?
    };
    let stdin = compressor.stdin.take().ok_or("no stdin")?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, stdin));
    write_tree(&mut builder, top)?;
    builder.into_inner()?.flush()?;
    if !compressor.wait()?.success() {
        return Err("compressor failed".into());
    }
    Ok(())
}

fn write_tree<W: Write>(builder: &mut tar::Builder<W>, top: &str) -> AnyResult<()> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let vocabulary: Vec<String> = (0..4000)
        .map(|index| format!("w{:x}{}", index * 7919, ["", "_t", "s", "()"][index % 4]))
        .collect();
    let mut dirs = vec![top.to_string()];
    append_dir(builder, top)?;
    for index in 0..2000 {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        if parent.matches('/').count() >= 6 {
            continue;
        }
        let dir = format!("{parent}/d{index}");
        append_dir(builder, &dir)?;
        dirs.push(dir);
    }
    let mut content = Vec::new();
    for index in 0..19_800u64 {
        let dir = &dirs[rng.below(dirs.len() as u64) as usize];
        content.clear();
        let (len, kind) = match index {
            0..16_700 => (rng.log_uniform(100, 10_000), 0),
            16_700..19_300 => (rng.log_uniform(10_000, 100_000), 1),
            19_300..19_794 => (
                rng.log_uniform(100_000, 2_000_000),
                if index % 7 == 0 { 2 } else { 1 },
            ),
            _ => (
                rng.log_uniform(4_000_000, 12_000_000),
                if index % 2 == 0 { 2 } else { 1 },
            ),
        };
        match kind {
            0 => text(&mut rng, &vocabulary, &mut content, len as usize),
            1 => code(&mut rng, &mut content, len as usize),
            _ => rng.fill(&mut content, len as usize),
        }
        let path = format!("{dir}/f{index}");
        append_file(
            builder,
            &path,
            &content,
            if kind == 1 { 0o755 } else { 0o644 },
        )?;
        if index % 95 == 0 {
            append_symlink(builder, &format!("{dir}/l{index}"), &format!("f{index}"))?;
        }
    }
    builder.finish()?;
    Ok(())
}

fn text(rng: &mut Rng, vocabulary: &[String], out: &mut Vec<u8>, len: usize) {
    while out.len() < len {
        // Squaring skews the choice towards the front, roughly Zipf-like.
        let unit = rng.below(1 << 20) as f64 / (1 << 20) as f64;
        let word = &vocabulary[(unit * unit * vocabulary.len() as f64) as usize];
        out.extend_from_slice(word.as_bytes());
        out.push(if rng.below(8) == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
}

fn code(rng: &mut Rng, out: &mut Vec<u8>, len: usize) {
    while out.len() < len {
        let chunk = [16usize, 32, 64, 128, 256][rng.below(5) as usize];
        let choice = rng.below(10);
        if choice == 0 || out.len() < 256 {
            let target = out.len() + chunk;
            rng.fill(out, target);
        } else if choice <= 3 {
            for _ in 0..chunk {
                let byte = rng.next() as u8;
                out.push(if byte < 160 {
                    0
                } else if byte < 200 {
                    0xff
                } else {
                    byte & 0x1f
                });
            }
        } else {
            let back = (rng.below(out.len().min(65_536) as u64) as usize).max(chunk);
            let start = out.len().saturating_sub(back);
            for offset in 0..chunk {
                out.push(out[start + offset]);
            }
        }
    }
    out.truncate(len);
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    header
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, path: &str) -> AnyResult<()> {
    let mut header = header(tar::EntryType::Directory, 0o755, 0);
    builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
    Ok(())
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> AnyResult<()> {
    let mut header = header(tar::EntryType::Regular, mode, data.len() as u64);
    builder.append_data(&mut header, path, data)?;
    Ok(())
}

fn append_symlink<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    target: &str,
) -> AnyResult<()> {
    let mut header = header(tar::EntryType::Symlink, 0o777, 0);
    builder.append_link(&mut header, path, target)?;
    Ok(())
}
