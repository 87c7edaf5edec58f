//! How close the executor gets to a perfect schedule: N CPU-bound steps on S build slots.
//!
//! Each step burns CPU in-process (blake3 over a buffer, calibrated to `--seconds`). The ideal
//! makespan is the total step CPU time divided by the slots; the ratio makespan / ideal is the
//! figure of merit (target ≤ 1.15). On a loaded machine the CPU-time ideal also measures
//! contention from other processes, so the step wall-time ideal is printed too: its ratio is
//! the executor's own overhead (gaps between one step ending and the next starting).
//!
//! `cargo run --release --example bench_schedule -- [--steps 8] [--slots 2] [--seconds 2]`

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use imagegen::exec::report::MemoryReporter;
use imagegen::exec::{ExecOptions, Pool, StepOutcome, StepSpec, execute};

const BUFFER: usize = 64 * 1024;

fn thread_cpu_time() -> Duration {
    cpu_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `spec` is a valid, writable timespec; the clock id is a constant.
    let status = unsafe { libc::clock_gettime(clock, &mut spec) };
    if status != 0 {
        return Duration::ZERO;
    }
    Duration::new(spec.tv_sec as u64, spec.tv_nsec as u32)
}

/// Hashes the buffer `rounds` times; returns the last hash so the work is not optimized away.
fn burn(buffer: &[u8], rounds: u64) -> [u8; 32] {
    let mut last = [0u8; 32];
    for _ in 0..rounds {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&last);
        hasher.update(buffer);
        last = *hasher.finalize().as_bytes();
    }
    last
}

/// Rounds of [`burn`] that take `seconds` of CPU time on this thread.
fn calibrate(buffer: &[u8], seconds: f64) -> u64 {
    let probe = 200;
    let before = thread_cpu_time();
    let mut rounds = 0u64;
    while (thread_cpu_time() - before) < Duration::from_millis(300) {
        std::hint::black_box(burn(buffer, probe));
        rounds += probe;
    }
    let per_second = rounds as f64 / (thread_cpu_time() - before).as_secs_f64();
    (per_second * seconds).max(1.0) as u64
}

fn argument(name: &str, default: f64) -> f64 {
    let arguments: Vec<String> = std::env::args().collect();
    let value = arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|position| arguments.get(position + 1))
        .and_then(|value| value.parse().ok());
    value.unwrap_or(default)
}

struct Measured {
    cpu: Duration,
    wall: Duration,
}

fn main() {
    let steps = argument("--steps", 8.0) as usize;
    let slots = argument("--slots", 2.0) as usize;
    let seconds = argument("--seconds", 2.0);
    let buffer: Vec<u8> = (0..BUFFER).map(|index| (index % 251) as u8).collect();
    let rounds = calibrate(&buffer, seconds);

    let specs: Vec<StepSpec<u64>> = (0..steps)
        .map(|index| StepSpec {
            address: format!("build.bench-{index}"),
            pool: Pool::Build,
            depends_on: Vec::new(),
            payload: rounds,
        })
        .collect();
    let options = ExecOptions {
        jobs: slots,
        download_jobs: 1,
        keep_going: false,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let measured = Mutex::new(Vec::new());
    let reporter = MemoryReporter::new();
    let started = Instant::now();
    let process_cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
    let report = execute(
        specs,
        &options,
        |spec, _context| {
            let wall = Instant::now();
            let cpu = thread_cpu_time();
            std::hint::black_box(burn(&buffer, spec.payload));
            let sample = Measured {
                cpu: thread_cpu_time() - cpu,
                wall: wall.elapsed(),
            };
            if let Ok(mut measured) = measured.lock() {
                measured.push(sample);
            }
            Ok(())
        },
        |_, _: &StepOutcome<()>| Ok(()),
        &reporter,
    );
    let makespan = started.elapsed().as_secs_f64();
    let process_cpu = (cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID) - process_cpu).as_secs_f64();
    let measured = measured.into_inner().unwrap_or_default();
    let total_cpu: f64 = measured.iter().map(|m| m.cpu.as_secs_f64()).sum();
    let total_wall: f64 = measured.iter().map(|m| m.wall.as_secs_f64()).sum();
    let ideal_cpu = total_cpu / slots as f64;
    let ideal_wall = total_wall / slots as f64;

    println!(
        "{steps} steps of ~{seconds} s CPU on {slots} build slots ({} succeeded)",
        report.succeeded
    );
    println!("makespan                 {makespan:8.2} s");
    println!(
        "ideal, step CPU time     {ideal_cpu:8.2} s   ratio {:.3}x (target <= 1.15x)",
        makespan / ideal_cpu
    );
    println!(
        "ideal, step wall time    {ideal_wall:8.2} s   ratio {:.3}x (executor overhead)",
        makespan / ideal_wall
    );
    println!(
        "CPU obtained             {:8.0} % of {slots} cores (other processes take the rest)",
        100.0 * process_cpu / (makespan * slots as f64)
    );
}
