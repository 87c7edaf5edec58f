//! Benchmark: flashing a 512 MiB image to a loop device with imagegen's flash engine,
//! against the standard tools, in interleaved rounds; plus peak RSS.
//!
//! usage (as root): cargo run --release --example bench_flash -- [SCRATCH_DIR]
//!        [--backing DIR] [--rounds N] [--large-mib N]
//!
//! * (a) raw image, full verification, vs `dd bs=4M conv=fsync` then
//!   `dd iflag=direct bs=4M count=128 | openssl dgst -sha256` of the same bytes (goal ≤ 0.8×);
//! * (b) `.img.gz`, no verification, vs `zcat | dd bs=4M conv=fsync` (goal ≤ 1.0×);
//! * (c) peak RSS of every flash (VmHWM of a child process), and of a larger `.img.gz`
//!   (`--large-mib`, default 2048) to show it does not grow with the image (goal < 64 MiB).
//!
//! The loop device's backing file lives in `--backing` (default `/dev/shm`): on tmpfs the
//! loop device costs only memory copies, so the figures compare software overhead rather
//! than the host's disk cache (see docs/flash.md). Images are generated once into SCRATCH
//! (default `/dev/shm/imagegen-bench-flash`) and stay in the page cache for both sides.

use std::error::Error;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imagegen::flash::{FlashObserver, FlashOptions, FlashPlan, Host, VerifyMode};

type AnyResult<T> = Result<T, Box<dyn Error>>;

const MIB: usize = 1024 * 1024;
const IMAGE_MIB: usize = 512;

fn main() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child_flash(&args[1..]);
    }
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
        .unwrap_or_else(|| PathBuf::from("/dev/shm/imagegen-bench-flash"));
    let backing_dir = option("--backing").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
    let rounds: usize = option("--rounds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let large_mib: usize = option("--large-mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    fs::create_dir_all(&scratch)?;
    let raw = scratch.join("image512.img");
    let gz = scratch.join("image512.img.gz");
    if !raw.exists() || !gz.exists() {
        println!("generating the 512 MiB image and its .gz (one-time)");
        generate(&raw, &gz)?;
    }
    println!(
        "image {} MiB raw, {:.1} MB as .gz",
        IMAGE_MIB,
        fs::metadata(&gz)?.len() as f64 / 1e6
    );
    let device = LoopDevice::create(&backing_dir, (IMAGE_MIB + 512) * MIB)?;
    println!(
        "loop device {} over {} (direct I/O of the loop: off)",
        device.node,
        device.backing.display()
    );
    let samples = run_rounds(&device.node, &raw, &gz, rounds)?;
    samples.print();
    drop(device);
    large_rss(&scratch, &backing_dir, large_mib)
}

struct Sample {
    wall: Duration,
    /// User + system time of the process and its descendants (less sensitive than wall
    /// time to other load on a shared machine; the loop device's kernel worker is in neither).
    cpu: Duration,
    peak_kb: u64,
}

/// CPU time of all waited-for children so far.
fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[derive(Default)]
struct Samples {
    ours_raw: Vec<Sample>,
    dd_raw: Vec<Sample>,
    ours_gz: Vec<Sample>,
    zcat_gz: Vec<Sample>,
}

fn run_rounds(device: &str, raw: &Path, gz: &Path, rounds: usize) -> AnyResult<Samples> {
    let raw_text = raw.display();
    let baseline_raw = format!(
        "dd if={raw_text} of={device} bs=4M conv=fsync status=none && \
         dd if={device} bs=4M count={} iflag=direct status=none | openssl dgst -sha256",
        IMAGE_MIB / 4
    );
    let baseline_gz = format!(
        "zcat {} | dd of={device} bs=4M conv=fsync status=none",
        gz.display()
    );
    // One warm-up of each, not counted: allocates the backing file, warms caches.
    our_flash(raw, device, "full")?;
    timed_shell(&baseline_raw)?;
    our_flash(gz, device, "none")?;
    timed_shell(&baseline_gz)?;
    let mut samples = Samples::default();
    for round in 0..rounds {
        // Alternate who goes first, so neither always follows the other.
        if round % 2 == 0 {
            samples.ours_raw.push(our_flash(raw, device, "full")?);
            samples.dd_raw.push(timed_shell(&baseline_raw)?);
            samples.ours_gz.push(our_flash(gz, device, "none")?);
            samples.zcat_gz.push(timed_shell(&baseline_gz)?);
        } else {
            samples.dd_raw.push(timed_shell(&baseline_raw)?);
            samples.ours_raw.push(our_flash(raw, device, "full")?);
            samples.zcat_gz.push(timed_shell(&baseline_gz)?);
            samples.ours_gz.push(our_flash(gz, device, "none")?);
        }
        println!(
            "round {round}: (a) imagegen {:.3}s vs dd+openssl {:.3}s | (b) imagegen {:.3}s vs zcat|dd {:.3}s",
            samples.ours_raw[round].wall.as_secs_f64(),
            samples.dd_raw[round].wall.as_secs_f64(),
            samples.ours_gz[round].wall.as_secs_f64(),
            samples.zcat_gz[round].wall.as_secs_f64(),
        );
    }
    Ok(samples)
}

impl Samples {
    fn print(&self) {
        println!();
        let (a, b) = (median(&self.ours_raw), median(&self.dd_raw));
        report("(a) imagegen flash image.img --verify full", &self.ours_raw);
        report(
            "    dd conv=fsync; dd iflag=direct | openssl sha256",
            &self.dd_raw,
        );
        println!("    ratio of medians {:.2}x (goal <= 0.8x)", a / b);
        let (c, d) = (median(&self.ours_gz), median(&self.zcat_gz));
        report(
            "(b) imagegen flash image.img.gz --verify none",
            &self.ours_gz,
        );
        report("    zcat | dd bs=4M conv=fsync", &self.zcat_gz);
        println!("    ratio of medians {:.2}x (goal <= 1.0x)", c / d);
        let peak = self
            .ours_raw
            .iter()
            .chain(&self.ours_gz)
            .map(|sample| sample.peak_kb)
            .max()
            .unwrap_or(0);
        println!(
            "(c) imagegen peak RSS over all 512 MiB runs: {:.1} MiB (goal < 64 MiB)",
            peak as f64 / 1024.0
        );
    }
}

fn median(samples: &[Sample]) -> f64 {
    let mut walls: Vec<f64> = samples.iter().map(|s| s.wall.as_secs_f64()).collect();
    walls.sort_by(f64::total_cmp);
    walls[walls.len() / 2]
}

fn report(label: &str, samples: &[Sample]) {
    let mut walls: Vec<f64> = samples.iter().map(|s| s.wall.as_secs_f64()).collect();
    walls.sort_by(f64::total_cmp);
    println!(
        "{label}: median {:.3}s (min {:.3}s, max {:.3}s), CPU median {:.3}s",
        walls[walls.len() / 2],
        walls[0],
        walls[walls.len() - 1],
        median_cpu(samples)
    );
}

fn median_cpu(samples: &[Sample]) -> f64 {
    let mut cpus: Vec<f64> = samples.iter().map(|s| s.cpu.as_secs_f64()).collect();
    cpus.sort_by(f64::total_cmp);
    cpus[cpus.len() / 2]
}

/// (c) for a larger image: the peak RSS must not follow the image size.
fn large_rss(scratch: &Path, backing_dir: &Path, mebibytes: usize) -> AnyResult<()> {
    if mebibytes == 0 {
        return Ok(());
    }
    let gz = scratch.join(format!("image{mebibytes}.img.gz"));
    if !gz.exists() {
        println!("generating a {mebibytes} MiB .img.gz (one-time)");
        let output = BufWriter::new(fs::File::create(&gz)?);
        let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
        let mut block = vec![0u8; MIB];
        for index in 0..mebibytes {
            fill_mebibyte(index, &mut block);
            encoder.write_all(&block)?;
        }
        encoder.finish()?.flush()?;
    }
    let device = LoopDevice::create(backing_dir, (mebibytes + 64) * MIB)?;
    let sample = our_flash(&gz, &device.node, "full")?;
    println!(
        "(c) imagegen flash image{mebibytes}.img.gz --verify full: {:.2}s, peak RSS {:.1} MiB",
        sample.wall.as_secs_f64(),
        sample.peak_kb as f64 / 1024.0
    );
    Ok(())
}

/// Runs one flash in a child process, so its peak RSS is its own.
fn our_flash(image: &Path, device: &str, verify: &str) -> AnyResult<Sample> {
    let cpu_before = children_cpu();
    let start = Instant::now();
    let output = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(image)
        .args([device, verify])
        .output()?;
    let wall = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "child flash failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let peak_kb = stdout
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM_kB="))
        .and_then(|value| value.trim().parse().ok())
        .ok_or("child printed no VmHWM")?;
    Ok(Sample {
        wall,
        cpu: children_cpu() - cpu_before,
        peak_kb,
    })
}

struct Confirmed;

impl FlashObserver for Confirmed {
    fn confirm(&mut self, _plan: &FlashPlan) -> imagegen::Result<()> {
        Ok(())
    }
}

fn child_flash(args: &[String]) -> AnyResult<()> {
    let [image, device, verify] = args else {
        return Err("usage: --child IMAGE DEVICE VERIFY".into());
    };
    let options = FlashOptions {
        image: PathBuf::from(image),
        device: PathBuf::from(device),
        dry_run: false,
        wipe: false,
        verify: verify.parse::<VerifyMode>()?,
        allow_regular_file: false,
        cancel: None,
    };
    let report = imagegen::flash::flash(&Host::real(), &options, &mut Confirmed)?;
    let status = fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .map(|value| value.trim().trim_end_matches("kB").trim().to_string())
        .unwrap_or_default();
    println!(
        "bytes={} write_ms={} verify_ms={}",
        report.bytes_written, report.write_ms, report.verify_ms
    );
    println!("VmHWM_kB={hwm}");
    Ok(())
}

/// Runs a shell pipeline under `/usr/bin/time`, with the largest child's peak RSS.
fn timed_shell(script: &str) -> AnyResult<Sample> {
    let cpu_before = children_cpu();
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
    Ok(Sample {
        wall,
        cpu: children_cpu() - cpu_before,
        peak_kb,
    })
}

/// A loop device over a sparse file, detached and removed on drop.
struct LoopDevice {
    node: String,
    backing: PathBuf,
}

impl LoopDevice {
    fn create(dir: &Path, size: usize) -> AnyResult<LoopDevice> {
        let backing = dir.join(format!("imagegen-bench-flash-{}.img", std::process::id()));
        fs::File::create(&backing)?.set_len(size as u64)?;
        let output = Command::new("losetup")
            .arg("-f")
            .arg("--show")
            .arg(&backing)
            .output()?;
        if !output.status.success() {
            fs::remove_file(&backing)?;
            return Err(format!(
                "losetup failed (run as root): {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let node = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(LoopDevice { node, backing })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.node]).status();
        let _ = fs::remove_file(&self.backing);
    }
}

/// A synthetic disk image: per MiB, in turn, incompressible bytes (squashfs, packages),
/// code-like bytes (kernel, binaries: a skewed alphabet and local repeats) and zeros (free
/// space). gzip -6 shrinks it to about 38%.
fn generate(raw: &Path, gz: &Path) -> AnyResult<()> {
    let mut raw_out = BufWriter::with_capacity(MIB, fs::File::create(raw)?);
    let gz_out = BufWriter::with_capacity(MIB, fs::File::create(gz)?);
    let mut encoder = flate2::write::GzEncoder::new(gz_out, flate2::Compression::default());
    let mut block = vec![0u8; MIB];
    for index in 0..IMAGE_MIB {
        fill_mebibyte(index, &mut block);
        raw_out.write_all(&block)?;
        encoder.write_all(&block)?;
    }
    raw_out.flush()?;
    encoder.finish()?.flush()?;
    Ok(())
}

fn fill_mebibyte(index: usize, block: &mut [u8]) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ index as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    match index % 3 {
        0 => block
            .chunks_mut(8)
            .for_each(|chunk| chunk.copy_from_slice(&next().to_le_bytes()[..chunk.len()])),
        1 => {
            const ALPHABET: [u8; 10] = [0, 0, 0, 0xff, 1, 8, 0x24, 0x8b, 0x48, 0xe8];
            let mut position = 0;
            while position < block.len() {
                let choice = next();
                let length = (16 + (choice >> 8) as usize % 96).min(block.len() - position);
                if choice % 10 < 3 || position < 4096 {
                    for byte in &mut block[position..position + length] {
                        *byte = ALPHABET[(next() % 10) as usize];
                    }
                } else {
                    let back = length + (choice >> 20) as usize % 4000;
                    let source = position - back.min(position);
                    block.copy_within(source..source + length, position);
                }
                position += length;
            }
        }
        _ => block.fill(0),
    }
}
