//! Benchmark of parsing and validating hostile inputs at their size limits:
//! `cargo run --release --example bench_parse`.
//!
//! Writes each worst shape of issue 13 (item 4) at the size limit imagegen accepts for that
//! file (1 MiB for a profile, `imagegen.toml` and `imagegen.lock`) and loads it
//! the way `imagegen validate` does (`load_fleet`, `LockFile::read`). Each run happens in a
//! fresh child process (this program re-executed), so its peak RSS and CPU time (`wait4`)
//! are its own; the table shows the median wall and CPU (user + sys) time of 5 runs and the
//! largest peak RSS. The goal: every shape under 1 s and 100 MB. On a loaded machine read
//! the CPU column: wall time then mostly measures waiting for a core.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const PROFILE_LIMIT: usize = imagegen::source::MAX_FILE_SIZE as usize;
const MANIFEST_LIMIT: usize = imagegen::source::MAX_MANIFEST_SIZE as usize;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PROFILE_HEAD: &str = "profile_id: ap\nname: AP\ndevice_id: d\nopenwrt_release: 23.05.4\ntarget: ath79\nsubtarget: generic\nimagebuilder_profile: p\n";

/// One shape: its name, the file it is written to, and its generator (given the size).
struct Shape {
    name: &'static str,
    file: &'static str,
    limit: usize,
    generate: fn(usize) -> String,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "yaml: `x: [{}, {}, …]` on one line",
        file: "profiles/p.yaml",
        limit: PROFILE_LIMIT,
        generate: yaml_flow_of_empty_maps,
    },
    Shape {
        name: "json: one object of 96k keys on one line",
        file: "profiles/p.json",
        limit: PROFILE_LIMIT,
        generate: json_many_keys,
    },
    Shape {
        name: "yaml: 62k unknown keys",
        file: "profiles/p.yaml",
        limit: PROFILE_LIMIT,
        generate: yaml_unknown_keys,
    },
    Shape {
        name: "toml: 96k unknown keys",
        file: "profiles/p.toml",
        limit: PROFILE_LIMIT,
        generate: toml_unknown_keys,
    },
    Shape {
        name: "manifest: devices with unknown profiles",
        file: "imagegen.toml",
        limit: MANIFEST_LIMIT,
        generate: manifest_unknown_profiles,
    },
    Shape {
        name: "manifest: one device id repeated",
        file: "imagegen.toml",
        limit: MANIFEST_LIMIT,
        generate: manifest_duplicate_ids,
    },
    Shape {
        name: "manifest: inline device tables, one line",
        file: "imagegen.toml",
        limit: MANIFEST_LIMIT,
        generate: manifest_one_line,
    },
    Shape {
        name: "lock: valid builder entries",
        file: "imagegen.lock",
        limit: MANIFEST_LIMIT,
        generate: lock_entries,
    },
];

fn main() -> BenchResult<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--child") {
        let index: usize = args.next().ok_or("shape index")?.parse()?;
        let dir = PathBuf::from(args.next().ok_or("directory")?);
        return child(&SHAPES[index], &dir);
    }
    println!(
        "| shape | bytes | wall ms, median of {RUNS} (min–max) | CPU ms, median | peak RSS MB (max) | result |"
    );
    println!("|---|---|---|---|---|---|");
    for (index, shape) in SHAPES.iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let text = (shape.generate)(shape.limit);
        assert!(
            text.len() <= shape.limit,
            "{}: {} bytes",
            shape.name,
            text.len()
        );
        write(dir.path(), shape, &text)?;
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        let mut peak_kib = 0;
        let mut problems = String::new();
        for _ in 0..RUNS {
            let run = run_child(index, dir.path())?;
            walls.push(run.wall);
            cpus.push(run.cpu);
            peak_kib = peak_kib.max(run.peak_kib);
            problems = run.output;
        }
        walls.sort();
        cpus.sort();
        println!(
            "| {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.1} | {} |",
            shape.name,
            text.len(),
            millis(walls[RUNS / 2]),
            millis(walls[0]),
            millis(walls[RUNS - 1]),
            millis(cpus[RUNS / 2]),
            peak_kib as f64 * 1024.0 / 1e6,
            problems.trim()
        );
    }
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn write(dir: &Path, shape: &Shape, text: &str) -> BenchResult<()> {
    std::fs::create_dir_all(dir.join("profiles"))?;
    if shape.file != "imagegen.toml" {
        std::fs::write(dir.join("imagegen.toml"), "[fleet]\nname = \"bench\"\n")?;
    }
    std::fs::write(dir.join(shape.file), text)?;
    Ok(())
}

/// What one child run measured.
struct ChildRun {
    wall: Duration,
    /// User + system time.
    cpu: Duration,
    peak_kib: i64,
    output: String,
}

fn cpu_time(usage: &libc::rusage) -> Duration {
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Runs one child and measures it.
fn run_child(index: usize, dir: &Path) -> BenchResult<ChildRun> {
    let started = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(index.to_string())
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with valid pointers to locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    if waited != pid {
        return Err("wait4 failed".into());
    }
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout {
        use std::io::Read;
        stdout.read_to_string(&mut output)?;
    }
    Ok(ChildRun {
        wall,
        cpu: cpu_time(&usage),
        peak_kib: usage.ru_maxrss,
        output,
    })
}

/// The measured work: what `imagegen validate` does with the file.
fn child(shape: &Shape, dir: &Path) -> BenchResult<()> {
    let found = if shape.file == "imagegen.lock" {
        match imagegen::lock::LockFile::read(&dir.join("imagegen.lock")) {
            Ok(Some(lock)) => format!("{} entries", lock.entries.len()),
            Ok(None) => "no lock".to_string(),
            Err(error) => error.message,
        }
    } else {
        match imagegen::manifest::load_fleet(&dir.join("imagegen.toml"), None) {
            Ok(_) => "valid".to_string(),
            Err(error) => error.message,
        }
    };
    println!("{found}");
    Ok(())
}

/// Repeats `item` (separated by `separator`) between `head` and `tail` up to `limit` bytes.
fn fill(
    head: &str,
    item: &dyn Fn(usize) -> String,
    separator: &str,
    tail: &str,
    limit: usize,
) -> String {
    let mut text = String::from(head);
    let mut index = 0;
    loop {
        let next = item(index);
        let extra = if index == 0 { 0 } else { separator.len() };
        if text.len() + extra + next.len() + tail.len() > limit {
            break;
        }
        if index > 0 {
            text.push_str(separator);
        }
        text.push_str(&next);
        index += 1;
    }
    text.push_str(tail);
    text
}

fn yaml_flow_of_empty_maps(limit: usize) -> String {
    fill("x: [", &|_| "{}".to_string(), ", ", "]\n", limit)
}

fn json_many_keys(limit: usize) -> String {
    fill("{", &|index| format!("\"k{index}\":0"), ",", "}", limit)
}

fn yaml_unknown_keys(limit: usize) -> String {
    fill(
        PROFILE_HEAD,
        &|index| format!("unknown_{index}: 1\n"),
        "",
        "",
        limit,
    )
}

fn toml_unknown_keys(limit: usize) -> String {
    let head = PROFILE_HEAD
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((key, value)) => format!("{key} = \"{value}\"\n"),
            None => String::new(),
        })
        .collect::<String>();
    fill(&head, &|index| format!("u{index} = 1\n"), "", "", limit)
}

fn manifest_unknown_profiles(limit: usize) -> String {
    fill(
        "[fleet]\nname = \"bench\"\n",
        &|index| format!("\n[[device]]\nid = \"d{index}\"\nprofile = \"missing-{index}\"\n"),
        "",
        "",
        limit,
    )
}

fn manifest_duplicate_ids(limit: usize) -> String {
    fill(
        "[fleet]\nname = \"bench\"\n",
        &|_| "\n[[device]]\nid = \"same\"\nprofile = \"p\"\n".to_string(),
        "",
        "",
        limit,
    )
}

fn manifest_one_line(limit: usize) -> String {
    fill(
        "device = [",
        &|index| format!("{{id = \"d{index}\", profile = \"p{index}\"}}"),
        ", ",
        "]\n\n[fleet]\nname = \"bench\"\n",
        limit,
    )
}

fn lock_entries(limit: usize) -> String {
    let sha = "0123456789abcdef".repeat(4);
    fill(
        "version = 1\n",
        &|index| {
            format!(
                "\n[[builder]]\nrelease = \"23.05.4\"\ntarget = \"t{index}\"\nsubtarget = \"generic\"\narchive = \"openwrt-imagebuilder-23.05.4-t{index}-generic.Linux-x86_64.tar.xz\"\narchive_sha256 = \"{sha}\"\nkey_id = \"b5043e70f9a75cde\"\nkey_fingerprint = \"{sha}\"\nversion_code = \"r24106-10cc5fcd00\"\nprofiles_json_sha256 = \"{sha}\"\nmirror = \"https://downloads.openwrt.org\"\nlocked_at = \"2026-11-30T00:00:00Z\"\n"
            )
        },
        "",
        "",
        limit,
    )
}
