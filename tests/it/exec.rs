//! The executor with real worker threads: ordering, pool bounds, slots, failure modes, cancel,
//! and where `on_finished` runs. No assertion depends on timing; sleeps only create overlap.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use imagegen::error::{Error, ErrorCode, exit};
use imagegen::exec::report::MemoryReporter;
use imagegen::exec::{
    Event, ExecOptions, OutcomeKind, Pool, RunReport, StepContext, StepOutcome, StepSpec, execute,
};

/// What a test step does when it runs.
#[derive(Debug, Clone, Copy)]
enum Behavior {
    Sleep(u64),
    Fail,
    Panic,
    /// Runs until the cancel flag is set (at most 20 s, then claims success so the test fails
    /// instead of hanging).
    UntilCancelled,
    /// Waits for the cancel flag, then reports success anyway: work that really completed.
    CompletesDespiteCancel,
}

fn step(address: &str, pool: Pool, depends_on: &[&str], behavior: Behavior) -> StepSpec<Behavior> {
    StepSpec {
        address: address.to_string(),
        pool,
        depends_on: depends_on
            .iter()
            .map(|dependency| dependency.to_string())
            .collect(),
        payload: behavior,
    }
}

fn build(address: &str, depends_on: &[&str], behavior: Behavior) -> StepSpec<Behavior> {
    step(address, Pool::Build, depends_on, behavior)
}

fn options(jobs: usize, keep_going: bool) -> ExecOptions {
    ExecOptions {
        jobs,
        download_jobs: 1,
        keep_going,
        cancel: Arc::new(AtomicBool::new(false)),
    }
}

fn perform(behavior: Behavior, context: &StepContext, address: &str) -> Result<String, Error> {
    match behavior {
        Behavior::Sleep(milliseconds) => {
            context.progress("sleeping", Some(0.5));
            thread::sleep(Duration::from_millis(milliseconds));
            Ok(format!("{address} done"))
        }
        Behavior::Fail => Err(Error::new(
            ErrorCode::BuildFailed,
            format!("{address} broke"),
        )),
        Behavior::Panic => panic!("step {address} exploded"),
        Behavior::UntilCancelled => {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if context.cancelled() {
                    return Err(context.interrupted_error());
                }
                thread::sleep(Duration::from_millis(5));
            }
            Ok("never cancelled".to_string())
        }
        Behavior::CompletesDespiteCancel => {
            while !context.cancelled() {
                thread::sleep(Duration::from_millis(5));
            }
            Ok(format!("{address} done"))
        }
    }
}

/// Everything one run produced.
struct Run {
    report: RunReport,
    events: Vec<Event>,
    /// `on_finished` calls in order: address, outcome, calling thread.
    finished: Vec<(String, OutcomeKind, ThreadId)>,
    /// Start and end marks in order, `start:a` / `end:a`.
    marks: Vec<String>,
}

impl Run {
    fn position(&self, mark: &str) -> usize {
        self.marks
            .iter()
            .position(|candidate| candidate == mark)
            .unwrap_or_else(|| panic!("no mark {mark} in {:?}", self.marks))
    }

    fn started(&self) -> BTreeSet<String> {
        let starts = self
            .marks
            .iter()
            .filter_map(|mark| mark.strip_prefix("start:"));
        starts.map(str::to_string).collect()
    }

    fn outcome(&self, address: &str) -> OutcomeKind {
        self.report.step(address).map(|step| step.outcome).unwrap()
    }

    fn reason(&self, address: &str) -> String {
        let step = self.report.step(address).unwrap();
        step.reason.clone().unwrap_or_default()
    }
}

fn run_with(
    steps: Vec<StepSpec<Behavior>>,
    options: &ExecOptions,
    on_start: &(dyn Fn(&StepSpec<Behavior>, &StepContext) + Sync),
    mut on_record: impl FnMut(&str) -> Result<(), Error>,
) -> Run {
    let marks = Mutex::new(Vec::new());
    let mut finished = Vec::new();
    let reporter = MemoryReporter::new();
    let report = execute(
        steps,
        options,
        |spec, context| {
            marks
                .lock()
                .unwrap()
                .push(format!("start:{}", spec.address));
            on_start(spec, context);
            let result = perform(spec.payload, context, &spec.address);
            marks.lock().unwrap().push(format!("end:{}", spec.address));
            result
        },
        |spec, outcome: &StepOutcome<String>| {
            if let StepOutcome::Succeeded(value) = outcome {
                assert_eq!(value, &format!("{} done", spec.address));
            }
            finished.push((spec.address.clone(), outcome.kind(), thread::current().id()));
            on_record(&spec.address)
        },
        &reporter,
    );
    Run {
        report,
        events: reporter.events(),
        finished,
        marks: marks.into_inner().unwrap(),
    }
}

fn run(steps: Vec<StepSpec<Behavior>>, options: &ExecOptions) -> Run {
    run_with(steps, options, &|_, _| {}, |_| Ok(()))
}

#[test]
fn diamond_runs_in_dependency_order() {
    let steps = vec![
        build("d", &["b", "c"], Behavior::Sleep(10)),
        build("b", &["a"], Behavior::Sleep(30)),
        build("c", &["a"], Behavior::Sleep(10)),
        build("a", &[], Behavior::Sleep(10)),
    ];
    let run = run(steps, &options(2, false));
    assert!(run.report.is_success(), "{:?}", run.report);
    assert_eq!(run.report.exit_code(), exit::OK);
    assert!(run.position("end:a") < run.position("start:b"));
    assert!(run.position("end:a") < run.position("start:c"));
    assert!(run.position("end:b") < run.position("start:d"));
    assert!(run.position("end:c") < run.position("start:d"));
    // The report lists steps in input order, whatever order they ran in.
    let addresses: Vec<&str> = run
        .report
        .steps
        .iter()
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(addresses, ["d", "b", "c", "a"]);
}

/// Counts steps running at once per pool, and checks slots are never shared.
#[derive(Default)]
struct Occupancy {
    current: BTreeMap<String, usize>,
    maximum: BTreeMap<String, usize>,
    busy_slots: BTreeSet<(String, usize)>,
    used_slots: BTreeSet<(String, usize)>,
    collisions: usize,
}

impl Occupancy {
    fn enter(&mut self, pool: &str, slot: usize) {
        let current = self.current.entry(pool.to_string()).or_default();
        *current += 1;
        let now = *current;
        let maximum = self.maximum.entry(pool.to_string()).or_default();
        *maximum = (*maximum).max(now);
        if !self.busy_slots.insert((pool.to_string(), slot)) {
            self.collisions += 1;
        }
        self.used_slots.insert((pool.to_string(), slot));
    }

    fn leave(&mut self, pool: &str, slot: usize) {
        if let Some(current) = self.current.get_mut(pool) {
            *current -= 1;
        }
        self.busy_slots.remove(&(pool.to_string(), slot));
    }
}

fn pool_name(pool: &Pool) -> String {
    match pool {
        Pool::Flash(device) => format!("flash:{device}"),
        other => other.kind().to_string(),
    }
}

fn run_measuring(steps: Vec<StepSpec<Behavior>>, options: &ExecOptions) -> (Run, Occupancy) {
    let occupancy = Mutex::new(Occupancy::default());
    let marks = Mutex::new(Vec::new());
    let reporter = MemoryReporter::new();
    let report = execute(
        steps,
        options,
        |spec, context| {
            let pool = pool_name(&spec.pool);
            occupancy.lock().unwrap().enter(&pool, context.slot());
            marks
                .lock()
                .unwrap()
                .push(format!("start:{}", spec.address));
            let result = perform(spec.payload, context, &spec.address);
            occupancy.lock().unwrap().leave(&pool, context.slot());
            result
        },
        |_, _: &StepOutcome<String>| Ok(()),
        &reporter,
    );
    let run = Run {
        report,
        events: reporter.events(),
        finished: Vec::new(),
        marks: marks.into_inner().unwrap(),
    };
    (run, occupancy.into_inner().unwrap())
}

#[test]
fn two_build_slots_are_both_used_and_never_exceeded() {
    let steps = (0..4)
        .map(|index| build(&format!("build.{index}"), &[], Behavior::Sleep(200)))
        .collect();
    let (run, occupancy) = run_measuring(steps, &options(2, false));
    assert!(run.report.is_success());
    assert_eq!(occupancy.maximum["build"], 2);
    assert_eq!(occupancy.collisions, 0);
    let slots: BTreeSet<usize> = occupancy.used_slots.iter().map(|(_, slot)| *slot).collect();
    assert_eq!(slots, BTreeSet::from([0, 1]));
}

#[test]
fn each_pool_has_its_own_bound_and_devices_take_one_writer() {
    let mut steps: Vec<StepSpec<Behavior>> = (0..12)
        .map(|index| build(&format!("build.{index}"), &[], Behavior::Sleep(15)))
        .collect();
    for index in 0..4 {
        let address = format!("fetch.{index}");
        steps.push(step(&address, Pool::Download, &[], Behavior::Sleep(15)));
    }
    for (index, device) in ["/dev/a", "/dev/a", "/dev/a", "/dev/b"].iter().enumerate() {
        let address = format!("flash.{index}");
        let pool = Pool::Flash(device.to_string());
        steps.push(step(&address, pool, &[], Behavior::Sleep(15)));
    }
    let mut options = options(3, false);
    options.download_jobs = 1;
    let (run, occupancy) = run_measuring(steps, &options);
    assert!(run.report.is_success());
    assert_eq!(run.report.succeeded, 20);
    assert!(occupancy.maximum["build"] <= 3, "{:?}", occupancy.maximum);
    assert_eq!(occupancy.maximum["download"], 1);
    assert_eq!(occupancy.maximum["flash:/dev/a"], 1);
    assert_eq!(occupancy.collisions, 0);
    let build_slots = occupancy
        .used_slots
        .iter()
        .filter(|(pool, _)| pool == "build");
    assert!(build_slots.map(|(_, slot)| *slot).all(|slot| slot < 3));
}

fn failing_graph() -> Vec<StepSpec<Behavior>> {
    vec![
        build("a", &[], Behavior::Fail),
        build("b", &["a"], Behavior::Sleep(1)),
        build("c", &[], Behavior::Sleep(1)),
        build("d", &["b"], Behavior::Sleep(1)),
    ]
}

#[test]
fn fail_fast_skips_dependents_and_starts_nothing_new() {
    let run = run(failing_graph(), &options(1, false));
    assert_eq!(run.started(), BTreeSet::from(["a".to_string()]));
    assert_eq!(run.outcome("a"), OutcomeKind::Failed);
    let error = run.report.step("a").and_then(|s| s.error.clone()).unwrap();
    assert_eq!(error.code, ErrorCode::BuildFailed);
    assert_eq!(run.outcome("b"), OutcomeKind::Skipped);
    assert_eq!(run.reason("b"), "`a` failed");
    assert_eq!(run.reason("d"), "`a` failed");
    assert_eq!(run.outcome("c"), OutcomeKind::Skipped);
    assert!(run.reason("c").starts_with("not started: `a` failed"));
    assert_eq!((run.report.failed, run.report.skipped), (1, 3));
    assert!(!run.report.interrupted);
    assert_eq!(run.report.exit_code(), exit::FAILED);
}

#[test]
fn keep_going_runs_everything_independent_of_the_failure() {
    let run = run(failing_graph(), &options(1, true));
    let started = BTreeSet::from(["a".to_string(), "c".to_string()]);
    assert_eq!(run.started(), started);
    assert_eq!(run.outcome("c"), OutcomeKind::Succeeded);
    assert_eq!(run.outcome("b"), OutcomeKind::Skipped);
    assert_eq!(run.outcome("d"), OutcomeKind::Skipped);
    assert_eq!(
        (run.report.succeeded, run.report.failed, run.report.skipped),
        (1, 1, 2)
    );
}

#[test]
fn cancel_stops_scheduling_and_cancels_running_steps() {
    let options = options(1, false);
    let flag = Arc::clone(&options.cancel);
    let steps = vec![
        build("long", &[], Behavior::UntilCancelled),
        build("next", &[], Behavior::Sleep(1)),
        build("after", &["long"], Behavior::Sleep(1)),
    ];
    // Another thread plays the signal handler once the long step is running.
    let started = Arc::new(AtomicBool::new(false));
    let watcher = {
        let started = Arc::clone(&started);
        thread::spawn(move || {
            while !started.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(2));
            }
            flag.store(true, Ordering::SeqCst);
        })
    };
    let on_start = |_: &StepSpec<Behavior>, _: &StepContext| started.store(true, Ordering::SeqCst);
    let run = run_with(steps, &options, &on_start, |_| Ok(()));
    watcher.join().unwrap();
    assert!(run.report.interrupted);
    assert_eq!(run.report.exit_code(), exit::INTERRUPTED);
    assert_eq!(run.started(), BTreeSet::from(["long".to_string()]));
    for address in ["long", "next", "after"] {
        assert_eq!(run.outcome(address), OutcomeKind::Cancelled, "{address}");
    }
    assert!(
        run.finished
            .iter()
            .all(|(_, outcome, _)| *outcome == OutcomeKind::Cancelled)
    );
}

#[test]
fn a_step_that_completes_after_cancel_is_recorded_truthfully() {
    let options = options(2, false);
    let flag = Arc::clone(&options.cancel);
    let steps = vec![
        build("stops", &[], Behavior::UntilCancelled),
        build("completes", &[], Behavior::CompletesDespiteCancel),
        build("queued", &[], Behavior::Sleep(1)),
    ];
    let started = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let started = Arc::clone(&started);
        thread::spawn(move || {
            while started.load(Ordering::SeqCst) < 2 {
                thread::sleep(Duration::from_millis(2));
            }
            flag.store(true, Ordering::SeqCst);
        })
    };
    let on_start = |_: &StepSpec<Behavior>, _: &StepContext| {
        started.fetch_add(1, Ordering::SeqCst);
    };
    let run = run_with(steps, &options, &on_start, |_| Ok(()));
    watcher.join().unwrap();
    assert!(run.report.interrupted);
    assert_eq!(run.outcome("stops"), OutcomeKind::Cancelled);
    assert_eq!(run.outcome("completes"), OutcomeKind::Succeeded);
    assert_eq!(run.outcome("queued"), OutcomeKind::Cancelled);
    assert!(!run.started().contains("queued"));
}

#[test]
fn a_run_that_starts_cancelled_runs_nothing() {
    let options = options(2, false);
    options.cancel.store(true, Ordering::SeqCst);
    let run = run(failing_graph(), &options);
    assert!(run.started().is_empty());
    assert_eq!(run.report.cancelled, 4);
    assert!(run.report.interrupted);
}

#[test]
fn on_finished_runs_on_the_calling_thread_once_per_step() {
    let mut steps = failing_graph();
    steps.push(build("e", &["c"], Behavior::Panic));
    steps.push(build("f", &[], Behavior::Sleep(20)));
    steps.push(step("g", Pool::Download, &[], Behavior::Sleep(20)));
    let run = run(steps, &options(2, true));
    let me = thread::current().id();
    assert!(run.finished.iter().all(|(_, _, thread)| *thread == me));
    let mut addresses: Vec<&str> = run.finished.iter().map(|(a, _, _)| a.as_str()).collect();
    addresses.sort();
    assert_eq!(addresses, ["a", "b", "c", "d", "e", "f", "g"]);
    // The outcome passed to on_finished is the one reported.
    for (address, outcome, _) in &run.finished {
        assert_eq!(run.outcome(address), *outcome);
    }
}

#[test]
fn a_panicking_step_fails_and_its_dependents_are_skipped() {
    let steps = vec![
        build("boom", &[], Behavior::Panic),
        build("later", &["boom"], Behavior::Sleep(1)),
    ];
    let run = run(steps, &options(2, true));
    let error = run
        .report
        .step("boom")
        .and_then(|s| s.error.clone())
        .unwrap();
    assert_eq!(error.code, ErrorCode::InternalError);
    assert!(error.message.contains("exploded"), "{}", error.message);
    assert_eq!(run.outcome("later"), OutcomeKind::Skipped);
    assert_eq!(run.reason("later"), "`boom` failed");
}

#[test]
fn a_failed_recording_stops_the_run_and_claims_no_success() {
    let steps = vec![
        build("a", &[], Behavior::Sleep(1)),
        build("b", &[], Behavior::Sleep(1)),
        build("c", &[], Behavior::Sleep(1)),
    ];
    let record = |address: &str| match address {
        "a" => Err(Error::internal("disk full")),
        _ => Ok(()),
    };
    let run = run_with(steps, &options(1, true), &|_, _| {}, record);
    let error = run.report.error.clone().unwrap();
    assert_eq!(error.message, "recording the result of `a`: disk full");
    assert_eq!(run.outcome("a"), OutcomeKind::Failed);
    assert_eq!(run.started(), BTreeSet::from(["a".to_string()]));
    assert!(
        run.reason("b")
            .contains("recording the result of `a` failed")
    );
    assert_eq!(run.report.succeeded, 0);
    assert_eq!(run.report.exit_code(), exit::INTERNAL);
}

#[test]
fn dependencies_outside_the_run_count_as_done() {
    let steps = vec![build(
        "build.x",
        &["builder.already-there"],
        Behavior::Sleep(1),
    )];
    let run = run(steps, &options(1, false));
    assert!(run.report.is_success());
}

#[test]
fn an_invalid_graph_runs_nothing_and_says_why() {
    let cycle = vec![
        build("a", &["c"], Behavior::Sleep(1)),
        build("b", &["a"], Behavior::Sleep(1)),
        build("c", &["b"], Behavior::Sleep(1)),
    ];
    let cyclic = run(cycle, &options(2, false));
    assert!(cyclic.started().is_empty());
    let error = cyclic.report.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::InternalError);
    assert_eq!(error.message, "the steps form a cycle: a → c → b → a");
    assert_eq!(cyclic.report.skipped, 3);
    assert_eq!(cyclic.finished.len(), 3);

    let duplicate = vec![
        build("a", &[], Behavior::Sleep(1)),
        build("a", &[], Behavior::Sleep(1)),
    ];
    let duplicated = run(duplicate, &options(2, false));
    assert!(duplicated.started().is_empty());
    assert!(duplicated.report.error.is_some());
}

#[test]
fn events_describe_the_run_in_order() {
    let mut steps = failing_graph();
    steps.push(step("fetch", Pool::Download, &[], Behavior::Sleep(5)));
    let run = run(steps, &options(1, true));
    let events = &run.events;
    assert!(matches!(
        events.first(),
        Some(Event::RunStarted { total: 5, .. })
    ));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            succeeded: 2,
            failed: 1,
            skipped: 2,
            cancelled: 0,
            ..
        })
    ));
    let mut running = BTreeSet::new();
    let mut finished = BTreeSet::new();
    for event in events {
        match event {
            Event::StepStarted { address, .. } => assert!(running.insert(address.clone())),
            Event::StepProgress { address, .. } => assert!(running.contains(address)),
            Event::StepFinished { address, .. } => {
                running.remove(address);
                assert!(finished.insert(address.clone()), "{address} finished twice");
            }
            _ => {}
        }
    }
    assert_eq!(finished.len(), 5);
    let progress = events
        .iter()
        .filter(|e| matches!(e, Event::StepProgress { .. }));
    assert_eq!(progress.count(), 2);
    let started_fetch = events.iter().any(|event| {
        matches!(event, Event::StepStarted { address, pool, slot: 0, .. }
            if address == "fetch" && pool == "download")
    });
    assert!(started_fetch);
}

#[test]
fn many_steps_in_layers_finish_with_bounded_concurrency() {
    let in_flight = AtomicUsize::new(0);
    let maximum = AtomicUsize::new(0);
    let mut steps = Vec::new();
    for layer in 0..6 {
        for position in 0..10 {
            let dependencies: Vec<String> = if layer == 0 {
                Vec::new()
            } else {
                (0..10).map(|p| format!("s{}-{p}", layer - 1)).collect()
            };
            let dependencies: Vec<&str> = dependencies.iter().map(String::as_str).collect();
            steps.push(build(
                &format!("s{layer}-{position}"),
                &dependencies,
                Behavior::Sleep(1),
            ));
        }
    }
    let reporter = MemoryReporter::new();
    let report = execute(
        steps,
        &options(4, false),
        |spec, context| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            maximum.fetch_max(now, Ordering::SeqCst);
            let result = perform(spec.payload, context, &spec.address);
            in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        },
        |_, _: &StepOutcome<String>| Ok(()),
        &reporter,
    );
    assert_eq!(report.succeeded, 60);
    assert!(maximum.load(Ordering::SeqCst) <= 4);
}

#[test]
fn checkpoints_are_recorded_on_the_calling_thread_while_the_step_waits() {
    let caller = thread::current().id();
    let recorded = Mutex::new(Vec::new());
    let steps = vec![
        step(
            "flash.a",
            Pool::Flash("/dev/a".into()),
            &[],
            Behavior::Sleep(1),
        ),
        step(
            "flash.b",
            Pool::Flash("/dev/b".into()),
            &[],
            Behavior::Sleep(1),
        ),
    ];
    let reporter = MemoryReporter::new();
    let report = imagegen::exec::execute_with_checkpoints(
        steps,
        &options(1, false),
        |spec, context| {
            // The answer comes back before the step goes on, and it is what was recorded.
            let answer: usize = context.checkpoint(format!("{} started", spec.address))?;
            assert_eq!(answer, spec.address.len());
            let refused: Result<usize, Error> = context.checkpoint(7_u8);
            assert_eq!(
                refused.map_err(|error| error.code),
                Err(ErrorCode::Validation)
            );
            Ok(format!("{} done", spec.address))
        },
        |_, _: &StepOutcome<String>| Ok(()),
        |spec, request| {
            assert_eq!(thread::current().id(), caller, "only the caller records");
            let text = request
                .downcast::<String>()
                .map_err(|_| Error::new(ErrorCode::Validation, "not a string"))?;
            recorded.lock().unwrap().push(*text);
            Ok(Box::new(spec.address.len()))
        },
        &reporter,
    );
    assert!(report.is_success(), "{report:?}");
    let mut recorded = recorded.into_inner().unwrap();
    recorded.sort();
    assert_eq!(recorded, ["flash.a started", "flash.b started"]);

    // Outside an executor, or in a run without checkpoints, a step cannot record.
    let detached = StepContext::detached(0, Arc::new(AtomicBool::new(false)));
    assert!(detached.checkpoint::<_, ()>(1_u8).is_err());
    let report = execute(
        vec![build("b", &[], Behavior::Sleep(1))],
        &options(1, false),
        |_, context| context.checkpoint::<_, String>(1_u8),
        |_, _: &StepOutcome<String>| Ok(()),
        &MemoryReporter::new(),
    );
    assert_eq!(report.failed, 1);
    assert!(
        report.steps[0]
            .error
            .as_ref()
            .is_some_and(|error| error.message.contains("records only finished steps"))
    );
}
