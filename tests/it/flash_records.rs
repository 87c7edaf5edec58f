//! Flash records with the real binary and real loop devices: a flash killed with `kill -9`
//! in the middle of a write leaves a record that says it did not complete, and a later
//! flash supersedes it; `flash write PROFILE:KIND` writes exactly a built artifact's bytes
//! and brings the fleet device up to date in the plan. Skips loudly like `flash`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use imagegen::ops::{FlashListing, FlashOutcome};
use imagegen::plan::{ActionKind, Plan};
use imagegen::state::FlashStatus;
use imagegen_standin::demo;

use crate::flash::{LoopDevice, Mounted, image_bytes, last_line, run_tool, skip, write_file};
use crate::support::{Run, TestFleet, upstream_data};

const MIB: usize = 1024 * 1024;

pub(crate) fn listing(fleet: &TestFleet) -> FlashListing {
    let run = fleet.run(&["flash", "list", "--json"]);
    serde_json::from_str(&run.success().stdout).expect("flash list JSON")
}

fn flashed(run: &Run) -> FlashOutcome {
    run.success();
    serde_json::from_value(last_line(run)).expect("a flash outcome")
}

/// A frozen filesystem (`fsfreeze`): writes to files on it block until it is thawed, on
/// drop.
pub(crate) struct Frozen(PathBuf);

impl Frozen {
    pub(crate) fn freeze(test: &str, point: &Path) -> Option<Frozen> {
        let text = point.to_str().expect("utf-8 mount point");
        match run_tool("fsfreeze", &["-f", text]) {
            Ok(_) => Some(Frozen(point.to_path_buf())),
            Err(error) => {
                skip(test, &format!("cannot freeze a filesystem: {error}"));
                None
            }
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = run_tool("fsfreeze", &["-u", self.0.to_str().unwrap_or_default()]);
    }
}

/// Kills the child on drop, so a failing test never leaves it blocked.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until a thread of `pid` sleeps uninterruptibly (`D`) in a system call on a
/// descriptor open on `node`: a write to the device that the frozen filesystem holds up.
/// The deadline only keeps a broken test from hanging.
pub(crate) fn wait_for_blocked_write(pid: u32, node: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if blocked_on(pid, node) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "imagegen never blocked writing {}",
            node.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn blocked_on(pid: u32, node: &Path) -> bool {
    let descriptors: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| std::fs::read_link(entry.path()).is_ok_and(|target| target == node))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    tasks.into_iter().any(|task| {
        let state = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // `pid (comm) S ...`: the state follows the last `)`.
        let sleeping = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('D'));
        // `NR arg1 arg2 ...` while in a system call; arg1 is the descriptor of a write.
        let call = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let descriptor = call
            .split_whitespace()
            .nth(1)
            .and_then(|arg| u64::from_str_radix(arg.trim_start_matches("0x"), 16).ok());
        sleeping
            && descriptor.is_some_and(|fd| descriptors.iter().any(|open| *open == fd.to_string()))
    })
}

/// A loop device over a file on an ext4 filesystem (itself on a loop device) that a test can
/// freeze: a flash's first write then blocks in the kernel, so a kill lands mid-write on any
/// machine, however fast or loaded. Fields drop in order: the card, then its filesystem.
pub(crate) struct FreezableCard {
    pub device: LoopDevice,
    pub mounted: Mounted,
    _outer: LoopDevice,
}

impl FreezableCard {
    /// `None` (after a loud skip) where loop devices or mounts are not possible.
    pub(crate) fn create(test: &str, size: usize) -> Option<FreezableCard> {
        let outer = LoopDevice::create(test, 64 * MIB, false)?;
        let mounted = Mounted::create(test, outer.path())?;
        let backing = mounted.point.path().join("card.img");
        let device = LoopDevice::over(test, &backing, size, false)?;
        Some(FreezableCard {
            device,
            mounted,
            _outer: outer,
        })
    }

    pub(crate) fn freeze(&self, test: &str) -> Option<Frozen> {
        Frozen::freeze(test, self.mounted.point.path())
    }
}

/// Reads `--json` events until a line that contains `kind` and `address`.
pub(crate) fn wait_for_event(stdout: &mut impl BufRead, kind: &str, address: &str) {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let read = stdout.read_line(&mut line).expect("read stdout");
        assert!(
            read > 0,
            "imagegen ended before {kind} of {address}:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains(kind) && line.contains(address) {
            return;
        }
    }
}

#[test]
fn kill_9_during_a_write_leaves_a_record_that_says_the_flash_did_not_complete() {
    let test = "kill_9_during_a_write";
    let Some(card) = FreezableCard::create(test, 16 * MIB) else {
        return;
    };
    let device = &card.device;
    let fleet = TestFleet::empty();
    let data = image_bytes(12 * MIB);
    let image = write_file(&fleet, "openwrt.img", &data);
    let Some(frozen) = card.freeze(test) else {
        return;
    };
    let mut child = Killed(
        fleet
            .command(&["--json", "flash", "image", &image, device.path(), "--force"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn imagegen"),
    );
    // `step_started` comes after the record and right before the first write.
    let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
    wait_for_event(&mut stdout, "\"step_started\"", "flash.");
    wait_for_blocked_write(child.0.id(), &device.node);
    child.0.kill().expect("kill -9");
    drop(frozen);
    let status = child.0.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    assert!(!rest.contains("summary"), "it did not finish: {rest}");

    let listed = listing(&fleet);
    assert_eq!(listed.flashes.len(), 1);
    let killed = &listed.flashes[0];
    assert!(!killed.completed);
    assert_eq!(killed.record.status, FlashStatus::InProgress);
    assert_eq!(killed.record.finished_at, None);
    assert_eq!(killed.record.device_node, device.node);
    assert_eq!(listed.devices[0].last_status, FlashStatus::InProgress);
    let text = fleet.run(&["flash", "list"]);
    assert!(
        text.success().stdout.contains("did not complete"),
        "{}",
        text.stdout
    );

    // A later flash of the same card supersedes it.
    let again =
        flashed(&fleet.run(&["--json", "flash", "image", &image, device.path(), "--force"]));
    assert_eq!(again.record.as_ref().map(|record| record.id), Some(2));
    assert_eq!(&device.contents()[..data.len()], &data[..]);
    let listed = listing(&fleet);
    let states: Vec<(u64, FlashStatus, bool, Option<u64>)> = listed
        .flashes
        .iter()
        .map(|entry| {
            (
                entry.record.id,
                entry.record.status,
                entry.completed,
                entry.superseded_by,
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (2, FlashStatus::Succeeded, true, None),
            (1, FlashStatus::InProgress, false, Some(2)),
        ]
    );
    assert_eq!(listed.devices.len(), 1, "one card, one device record");
    assert_eq!(listed.devices[0].last_status, FlashStatus::Succeeded);
    assert_eq!(listed.devices[0].last_flash_id, 2);
}

/// A one-profile fleet (Raspberry Pi 4, ext4 images only) on a fresh stand-in mirror whose
/// device `lab-sd-1` is flashed at `device`.
pub(crate) fn rpi_fleet(device: &str) -> TestFleet {
    let fleet = TestFleet::empty();
    let mirror = demo::write_mirror(
        &fleet.path().join("mirror"),
        &upstream_data(),
        &[("23.05.4", "bcm27xx", "bcm2711")],
        0.0,
    )
    .expect("mirror");
    fleet.write(
        "imagegen.toml",
        &format!(
            "[fleet]\nname = \"lab\"\n\n[settings]\nmirror = \"{}\"\ntrusted_keys = [\"{}\"]\n\n[[device]]\nid = \"lab-sd-1\"\nprofile = \"lab.rpi4.sd\"\nflash = {{ path = \"{device}\", image = \"factory\" }}\n",
            mirror.url,
            mirror.public_key.display()
        ),
    );
    fleet.write(
        "profiles/rpi4.yaml",
        "profile_id: lab.rpi4.sd\nname: Lab Pi\ndevice_id: rpi-4\nopenwrt_release: 23.05.4\ntarget: bcm27xx\nsubtarget: bcm2711\nimagebuilder_profile: rpi-4\npackages: [luci]\npolicies:\n  filesystem: ext4\n",
    );
    fleet
}

pub(crate) fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut data)
        .expect("gunzip the artifact");
    data
}

#[test]
fn flash_write_profile_kind_writes_the_built_artifact_and_the_plan_sees_it() {
    let Some(device) = LoopDevice::create("flash_write_profile_kind", 8 * MIB, false) else {
        return;
    };
    let fleet = rpi_fleet(device.path());
    fleet.run(&["apply"]).success();
    let plan = |fleet: &TestFleet| -> Plan {
        serde_json::from_str(&fleet.run(&["plan", "--json"]).success().stdout).expect("plan")
    };
    let before = plan(&fleet);
    let flash = before.action("flash.lab-sd-1").expect("flash action");
    assert_eq!(flash.action, ActionKind::Skip, "never flashed yet");
    let wanted = flash.key.clone().expect("the factory image's sha256");

    let run = fleet.run(&[
        "--json",
        "flash",
        "write",
        "lab.rpi4.sd:factory",
        device.path(),
        "--force",
    ]);
    let outcome = flashed(&run);
    let artifact = outcome.source.artifact.as_ref().expect("an artifact");
    assert_eq!(artifact.sha256, wanted);
    assert_eq!(artifact.kind, "factory");
    assert_eq!(artifact.profile_id.as_deref(), Some("lab.rpi4.sd"));
    assert!(
        artifact.name.ends_with("-ext4-factory.img.gz"),
        "{}",
        artifact.name
    );
    let blob = std::fs::read(&outcome.source.path).expect("the stored blob");
    let data = gunzip(&blob);
    assert_eq!(outcome.report.bytes_written, data.len() as u64);
    assert_eq!(
        &device.contents()[..data.len()],
        &data[..],
        "exactly the image"
    );
    let record = outcome.record.as_ref().expect("recorded");
    assert_eq!(record.device_id.as_deref(), Some("lab-sd-1"));
    assert_eq!(record.device_key, "fleet:lab/lab-sd-1");
    assert_eq!(
        record
            .artifact
            .as_ref()
            .and_then(|a| a.build_key.as_deref()),
        before
            .action("build.lab.lab.rpi4.sd")
            .and_then(|a| a.key.as_deref())
    );

    // The fleet's device now carries what the fleet wants.
    let after = plan(&fleet);
    let flash = after.action("flash.lab-sd-1").expect("flash action");
    assert_eq!(flash.action, ActionKind::NoOp, "{:?}", flash.reasons);

    // By sha256 prefix, the same artifact; a prefix too short is refused before anything.
    let run = fleet.run(&[
        "--json",
        "flash",
        "write",
        &wanted[..12],
        device.path(),
        "--dry-run",
    ]);
    let dry = flashed(&run);
    assert!(dry.report.dry_run && dry.record.is_none());
    assert_eq!(dry.source.sha256, wanted);
    let short = fleet.run(&["flash", "write", &wanted[..4], device.path(), "--force"]);
    assert_eq!(short.code, 3, "{}", short.stderr);
    assert!(
        short.stderr.contains("names no artifact"),
        "{}",
        short.stderr
    );
    assert_eq!(listing(&fleet).flashes.len(), 1);
}
