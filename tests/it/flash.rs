//! `imagegen flash image` and `imagegen devices` against real loop devices: writes,
//! decompression, verification, and every refusal the machine can set up. Each test makes
//! its own loop devices and tears them down (Drop guards), also when it fails. Without the
//! capability (not root, no /dev/loop-control, no device-mapper) a test says so loudly on
//! stderr and returns; it never pretends to have checked anything.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use imagegen::flash::{DeviceCandidate, FlashReport, ImageFormat, VerifyMode};
use imagegen::state::FlashStatus;
use serde_json::Value;

use crate::support::{Run, TestFleet};

const MIB: usize = 1024 * 1024;

/// Prints the loud skip notice.
pub(crate) fn skip(test: &str, missing: &str) {
    eprintln!(
        "\n!!!!!!!! SKIPPED flash::{test}: {missing} !!!!!!!!\n\
         !!!!!!!! this test checked NOTHING on this machine; CI runs it as root !!!!!!!!\n"
    );
}

pub(crate) fn run_tool(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run `{program}`: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A loop device over a file (in a temp dir unless given), detached (with its partitions)
/// on drop.
pub(crate) struct LoopDevice {
    pub node: PathBuf,
    pub backing: PathBuf,
    partitioned: bool,
    _dir: Option<tempfile::TempDir>,
}

impl LoopDevice {
    /// A zero-filled loop device of `size` bytes, or `None` after a loud skip notice.
    pub fn create(test: &str, size: usize, read_only: bool) -> Option<LoopDevice> {
        let dir = tempfile::tempdir().expect("temp dir");
        let backing = dir.path().join("disk.img");
        let mut device = LoopDevice::over(test, &backing, size, read_only)?;
        device._dir = Some(dir);
        Some(device)
    }

    /// A loop device over a new zero-filled file `backing` of `size` bytes.
    pub fn over(test: &str, backing: &Path, size: usize, read_only: bool) -> Option<LoopDevice> {
        let backing = backing.to_path_buf();
        std::fs::File::create(&backing)
            .and_then(|file| file.set_len(size as u64))
            .expect("backing file");
        let backing_text = backing.to_string_lossy().into_owned();
        let mut args = vec!["-f", "--show"];
        if read_only {
            args.push("-r");
        }
        args.push(&backing_text);
        // Concurrent tests (and other users) race for the first free device; retry.
        let mut last = String::new();
        for _ in 0..5 {
            match run_tool("losetup", &args) {
                Ok(node) => {
                    return Some(LoopDevice {
                        node: PathBuf::from(node),
                        backing,
                        partitioned: false,
                        _dir: None,
                    });
                }
                Err(error) => last = error,
            }
        }
        skip(
            test,
            &format!("cannot create a loop device (needs root and /dev/loop-control): {last}"),
        );
        None
    }

    pub fn path(&self) -> &str {
        self.node.to_str().expect("utf-8 node")
    }

    pub fn name(&self) -> String {
        self.node
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.node).expect("read the loop device")
    }

    /// A GPT with two partitions, and their device nodes (`losetup -P` alone does not make
    /// them in every container; `partx -a` does).
    fn partition(&mut self) -> Result<Vec<String>, String> {
        let mut sfdisk = Command::new("sfdisk")
            .args(["-q", self.path()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot run `sfdisk` (package fdisk): {error}"))?;
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\n,4M\n,\n")
            .unwrap();
        if !sfdisk.wait().unwrap().success() {
            return Err("sfdisk failed".into());
        }
        run_tool("partx", &["-a", self.path()])?;
        self.partitioned = true;
        Ok(vec![
            format!("{}p1", self.path()),
            format!("{}p2", self.path()),
        ])
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if self.partitioned {
            let _ = run_tool("partx", &["-d", self.path()]);
        }
        if let Err(error) = run_tool("losetup", &["-d", self.path()]) {
            eprintln!("warning: could not detach {}: {error}", self.path());
        }
    }
}

/// A filesystem made on `device` and mounted on a temp dir; unmounted on drop.
pub(crate) struct Mounted {
    pub point: tempfile::TempDir,
}

impl Mounted {
    pub fn create(test: &str, device: &str) -> Option<Mounted> {
        let point = tempfile::tempdir().expect("mount point");
        let mounted = run_tool("mkfs.ext4", &["-q", "-F", device])
            .and_then(|_| run_tool("mount", &[device, point.path().to_str().expect("utf-8")]));
        match mounted {
            Ok(_) => Some(Mounted { point }),
            Err(error) => {
                skip(test, &format!("cannot make and mount ext4: {error}"));
                None
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = run_tool("umount", &[self.point.path().to_str().unwrap_or_default()]);
    }
}

/// Deterministic bytes that compress, with no long runs of one value.
pub(crate) fn image_bytes(length: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..length)
        .map(|index| {
            if index % 4 == 0 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            } else {
                (index / 4096) as u8 ^ (index % 7) as u8
            }
        })
        .collect()
}

pub(crate) fn write_file(fleet: &TestFleet, name: &str, bytes: &[u8]) -> String {
    let path = fleet.path().join(name);
    std::fs::write(&path, bytes).expect("write image");
    path.to_string_lossy().into_owned()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The last line of `--json` output: `{"event":"summary","report":...}` or `{"error":...}`.
pub(crate) fn last_line(run: &Run) -> Value {
    let line = run.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| {
        panic!(
            "last stdout line is not JSON ({error}):\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    })
}

fn report(run: &Run) -> FlashReport {
    run.success();
    serde_json::from_value(last_line(run)["report"].clone()).expect("a flash report")
}

/// Asserts a failure with `code`, exit status 1, naming `device` in the message.
#[track_caller]
fn assert_refused(run: &Run, code: &str, device: &str) -> Value {
    let error = last_line(run)["error"].clone();
    assert_eq!(
        error["code"], code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_eq!(run.code, 1, "exit code for `{code}`");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(device),
        "`{message}` does not name `{device}`"
    );
    assert!(error["help"].is_string(), "`{code}` says what to do");
    error
}

fn flash(fleet: &TestFleet, image: &str, device: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--json", "flash", "image", image, device];
    args.extend_from_slice(extra);
    fleet.run(&args)
}

#[test]
fn writes_a_raw_image_and_verifies_every_byte() {
    let Some(device) = LoopDevice::create("writes_a_raw_image", 16 * MIB, false) else {
        return;
    };
    let fleet = TestFleet::empty();
    // Not a multiple of 512: the tail goes through the page cache, the rest direct.
    let data = image_bytes(9 * MIB + 1000);
    let image = write_file(&fleet, "openwrt.img", &data);
    let run = flash(&fleet, &image, device.path(), &["--force", "--wipe"]);
    let report = report(&run);
    let contents = device.contents();
    assert_eq!(
        &contents[..data.len()],
        &data[..],
        "the device holds the image"
    );
    assert!(
        contents[contents.len() - MIB..]
            .iter()
            .all(|byte| *byte == 0)
    );
    assert_eq!(report.bytes_written, data.len() as u64);
    assert_eq!(report.plan.device.node, device.node);
    assert_eq!(
        report.plan.device.backing_file.as_deref(),
        Some(device.backing.as_path())
    );
    let verification = report.verification.expect("verified");
    assert_eq!(verification.bytes, data.len() as u64);
    assert_eq!(verification.blocks, 3);
    // The run events come first, in the format of `apply --json`.
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "run_started");
    assert_eq!(events[1]["event"], "step_started");
    assert_eq!(events[1]["address"], format!("flash.{}", device.name()));
    assert_eq!(events[1]["device"], device.path());
    let finished = &events[events.len() - 3];
    assert_eq!(finished["event"], "step_finished");
    assert_eq!(finished["outcome"], "succeeded");
}

#[test]
fn compressed_images_are_written_decompressed() {
    let Some(device) = LoopDevice::create("compressed_images", 8 * MIB, false) else {
        return;
    };
    let fleet = TestFleet::empty();
    let data = image_bytes(5 * MIB + 4096);
    let mut gz = gzip(&data);
    // OpenWrt's fwtool metadata and trailer after the gzip stream.
    gz.extend_from_slice(
        b"{\"metadata_version\":\"1.1\",\"compat_version\":\"1.0\",\"supported_devices\":[\"x86-64\"]}FWx0\x12\x34\x56\x78\x01\0\0\0\0\0\0\x60",
    );
    let zst = zstd::bulk::compress(&data, 19).unwrap();
    for (name, bytes, format) in [
        ("image.img.gz", gz, ImageFormat::Gzip),
        ("image.img.xz", xz(&data), ImageFormat::Xz),
        ("image.img.zst", zst, ImageFormat::Zstd),
    ] {
        // Start from a different state each time so a stale result cannot pass.
        std::fs::write(&device.node, vec![0xa5; 8 * MIB]).unwrap();
        let image = write_file(&fleet, name, &bytes);
        let report = report(&flash(&fleet, &image, device.path(), &["--force"]));
        assert_eq!(report.plan.image.format, format, "{name}");
        assert_eq!(report.bytes_written, data.len() as u64, "{name}");
        assert_eq!(&device.contents()[..data.len()], &data[..], "{name}");
        assert_eq!(report.verification.unwrap().bytes, data.len() as u64);
    }
}

#[test]
fn refuses_a_partition() {
    let Some(mut device) = LoopDevice::create("refuses_a_partition", 16 * MIB, false) else {
        return;
    };
    let partitions = match device.partition() {
        Ok(partitions) => partitions,
        Err(error) => return skip("refuses_a_partition", &error),
    };
    let fleet = TestFleet::empty();
    let image = write_file(&fleet, "image.img", &image_bytes(MIB));
    let run = flash(&fleet, &image, &partitions[0], &["--force"]);
    let error = assert_refused(&run, "device_is_partition", &partitions[0]);
    assert!(
        error["help"].as_str().unwrap().contains(device.path()),
        "the hint names the whole disk: {error}"
    );
}

#[test]
fn refuses_a_mounted_filesystem() {
    let Some(device) = LoopDevice::create("refuses_a_mounted_filesystem", 16 * MIB, false) else {
        return;
    };
    let Some(mounted) = Mounted::create("refuses_a_mounted_filesystem", device.path()) else {
        return;
    };
    let fleet = TestFleet::empty();
    let data = image_bytes(MIB);
    let image = write_file(&fleet, "image.img", &data);
    let run = flash(&fleet, &image, device.path(), &["--force"]);
    let error = assert_refused(&run, "device_mounted", device.path());
    let point = mounted.point.path().to_string_lossy().into_owned();
    assert!(
        error["message"].as_str().unwrap().contains(&point),
        "{error}"
    );
    drop(mounted);
    // (The filesystem itself changes on unmount, so compare with the image instead.)
    assert!(device.contents()[..MIB] != data[..], "nothing was written");
}

#[test]
fn refuses_a_disk_with_a_mounted_partition() {
    let test = "refuses_a_disk_with_a_mounted_partition";
    let Some(mut device) = LoopDevice::create(test, 16 * MIB, false) else {
        return;
    };
    let partitions = match device.partition() {
        Ok(partitions) => partitions,
        Err(error) => return skip(test, &error),
    };
    let Some(_mounted) = Mounted::create(test, &partitions[1]) else {
        return;
    };
    let fleet = TestFleet::empty();
    let image = write_file(&fleet, "image.img", &image_bytes(MIB));
    let run = flash(&fleet, &image, device.path(), &["--force"]);
    let error = assert_refused(&run, "device_mounted", device.path());
    assert!(
        error["message"].as_str().unwrap().contains(&partitions[1]),
        "{error}"
    );
}

#[test]
fn refuses_an_image_larger_than_the_device() {
    let Some(device) = LoopDevice::create("refuses_an_image_larger", 4 * MIB, false) else {
        return;
    };
    let fleet = TestFleet::empty();
    let image = write_file(&fleet, "image.img", &image_bytes(4 * MIB + 512));
    let run = flash(&fleet, &image, device.path(), &["--force"]);
    assert_refused(&run, "image_too_large", device.path());
    assert!(
        device.contents().iter().all(|byte| *byte == 0),
        "nothing was written"
    );
}

#[test]
fn refuses_a_read_only_device() {
    let Some(device) = LoopDevice::create("refuses_a_read_only_device", 4 * MIB, true) else {
        return;
    };
    let fleet = TestFleet::empty();
    let image = write_file(&fleet, "image.img", &image_bytes(MIB));
    let run = flash(&fleet, &image, device.path(), &["--force"]);
    assert_refused(&run, "device_read_only", device.path());
}

#[test]
fn refuses_a_device_with_a_holder() {
    let test = "refuses_a_device_with_a_holder";
    let Some(device) = LoopDevice::create(test, 4 * MIB, false) else {
        return;
    };
    let name = format!("imagegen-test-{}", device.name());
    let table = format!("0 4096 linear {} 0", device.path());
    if let Err(error) = run_tool("dmsetup", &["create", &name, "--table", &table]) {
        return skip(test, &format!("device-mapper is not available: {error}"));
    }
    struct Mapped(String);
    impl Drop for Mapped {
        fn drop(&mut self) {
            let _ = run_tool("dmsetup", &["remove", &self.0]);
        }
    }
    let _mapped = Mapped(name);
    let fleet = TestFleet::empty();
    let image = write_file(&fleet, "image.img", &image_bytes(MIB));
    let run = flash(&fleet, &image, device.path(), &["--force"]);
    assert_refused(&run, "device_busy", device.path());
}

#[test]
fn a_device_changed_before_the_read_back_fails_verification() {
    let Some(device) = LoopDevice::create("verification_mismatch", 16 * MIB, false) else {
        return;
    };
    let fleet = TestFleet::empty();
    let image = write_file(&fleet, "image.img", &image_bytes(10 * MIB));
    // Between the write and the read-back, change one byte of the loop device's backing
    // file behind the kernel's back (what a failing or fake card does to its data).
    let corrupt = format!(
        "printf X | dd of={} bs=1 seek={} conv=notrunc status=none",
        device.backing.display(),
        6 * MIB + 17
    );
    let output = fleet
        .command(&["--json", "flash", "image", &image, device.path(), "--force"])
        .env("IMAGEGEN_TEST_FLASH_BEFORE_VERIFY", &corrupt)
        .output()
        .expect("run imagegen");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let error = assert_refused(&run, "flash_hash_mismatch", device.path());
    assert_eq!(
        error["details"]["offset"],
        4 * MIB,
        "the block holding the change"
    );
    let finished: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "step_finished")
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["outcome"], "failed");
    assert_eq!(finished[0]["error"]["code"], "flash_hash_mismatch");
    assert_eq!(
        error["details"]["flash_id"], 1,
        "the error names its record"
    );

    // The record says what happened, and the device is suspect.
    let listed = fleet.run(&["flash", "list", "--json"]);
    let listing: imagegen::ops::FlashListing =
        serde_json::from_str(&listed.success().stdout).expect("flash list JSON");
    let record = &listing.flashes[0].record;
    assert_eq!(record.status, FlashStatus::VerifyFailed);
    let verification = record.verification.as_ref().expect("verification");
    assert!(!verification.matched);
    assert_eq!(verification.mismatch_offset, Some(4 * MIB as u64));
    assert_eq!(listing.devices.len(), 1);
    assert_eq!(listing.devices[0].suspect_since, Some(1));
    assert_eq!(listing.devices[0].node, device.node);
    let text = fleet.run(&["flash", "list", "--device", device.path()]);
    assert!(
        text.success()
            .stdout
            .contains("SUSPECT (read-back differed in flash #1)"),
        "{}",
        text.stdout
    );
}

#[test]
fn dry_run_touches_nothing_and_shows_the_steps() {
    let Some(device) = LoopDevice::create("dry_run_touches_nothing", 8 * MIB, false) else {
        return;
    };
    std::fs::write(&device.node, image_bytes(8 * MIB)).unwrap();
    let before = device.contents();
    let fleet = TestFleet::empty();
    let data = vec![0x11; 3 * MIB];
    let image = write_file(&fleet, "image.img.gz", &gzip(&data));
    // No --force: a dry run needs no confirmation.
    let run = flash(&fleet, &image, device.path(), &["--dry-run", "--wipe"]);
    let report = report(&run);
    assert!(report.dry_run);
    assert_eq!(report.bytes_written, 0);
    assert_eq!(
        report.plan.write_bytes,
        Some(data.len() as u64),
        "gzip size found by decompressing"
    );
    assert_eq!(report.plan.verify, VerifyMode::Full);
    assert_eq!(report.plan.steps.len(), 5, "{:?}", report.plan.steps);
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "a dry run reports no run events"
    );
    assert!(before == device.contents(), "the device is unchanged");
}

#[test]
fn without_force_and_without_a_terminal_it_refuses() {
    let Some(device) = LoopDevice::create("without_force", 4 * MIB, false) else {
        return;
    };
    let fleet = TestFleet::empty();
    let image = write_file(&fleet, "image.img", &image_bytes(MIB));
    let run = fleet.run(&["flash", "image", &image, device.path()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("error[flash_not_confirmed]") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    assert!(
        device.contents().iter().all(|byte| *byte == 0),
        "nothing was written"
    );
}

#[test]
fn links_to_the_device_are_resolved() {
    let Some(device) = LoopDevice::create("links_are_resolved", 4 * MIB, false) else {
        return;
    };
    let fleet = TestFleet::empty();
    // Like /dev/disk/by-id/usb-...: a symlink to the node.
    let link = fleet.path().join("usb-Example_Card_1234-0:0");
    std::os::unix::fs::symlink(&device.node, &link).unwrap();
    let image = write_file(&fleet, "image.img", &image_bytes(MIB));
    let report = report(&flash(
        &fleet,
        &image,
        link.to_str().unwrap(),
        &["--dry-run"],
    ));
    assert_eq!(report.plan.device_path, link);
    assert_eq!(report.plan.device.node, device.node);
    // A regular file is never a target from the command line.
    let run = flash(&fleet, &image, &image, &["--force"]);
    assert_refused(&run, "device_not_block", &image);
    let missing = fleet.path().join("sdz").to_string_lossy().into_owned();
    assert_refused(
        &flash(&fleet, &image, &missing, &["--force"]),
        "device_not_found",
        &missing,
    );
}

#[test]
fn devices_lists_a_loop_device_with_its_identity() {
    let Some(device) = LoopDevice::create("devices_lists_a_loop_device", 4 * MIB, false) else {
        return;
    };
    let Some(read_only) = LoopDevice::create("devices_lists_a_loop_device", 2 * MIB, true) else {
        return;
    };
    let fleet = TestFleet::empty();
    let run = fleet.run(&["devices", "--json"]);
    run.success();
    let listed: Vec<DeviceCandidate> = serde_json::from_str(&run.stdout).expect("device list");
    let find = |node: &Path| {
        listed
            .iter()
            .find(|candidate| candidate.device.node == node)
            .unwrap_or_else(|| panic!("{} not listed:\n{}", node.display(), run.stdout))
    };
    let found = find(&device.node);
    assert_eq!(found.device.name, device.name());
    assert_eq!(found.device.size, 4 * MIB as u64);
    assert_eq!(found.device.transport.as_deref(), Some("loop"));
    assert_eq!(
        found.device.backing_file.as_deref(),
        Some(device.backing.as_path())
    );
    assert!(!found.device.read_only);
    assert!(found.refusal.is_none(), "{:?}", found.refusal);
    let found = find(&read_only.node);
    assert!(found.device.read_only);
    assert_eq!(
        found.refusal.as_ref().map(|refusal| refusal.code.as_str()),
        Some("device_read_only")
    );
}

#[test]
fn refuses_the_disk_the_system_runs_from() {
    let test = "refuses_the_disk_the_system_runs_from";
    let Some(disk) = root_disk() else {
        return skip(
            test,
            "`/` is not on a block device here (overlay or network root)",
        );
    };
    let fleet = TestFleet::empty();
    let image = write_file(&fleet, "image.img", &image_bytes(MIB));
    // --dry-run: even a broken check could not write to the system disk.
    let run = flash(&fleet, &image, &disk, &["--dry-run", "--force"]);
    assert_refused(&run, "device_system_disk", &disk);
}

/// The whole disk under `/`, from the mount table and sysfs.
fn root_disk() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dev = mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&"/")).then(|| fields[2].to_string())
    })?;
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{dev}")).ok()?;
    let disk = if sys.join("partition").exists() {
        sys.parent()?.to_path_buf()
    } else {
        sys
    };
    // Root on device-mapper or md: the disk underneath has another name; not this test.
    let stacked = disk
        .join("slaves")
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some());
    if stacked {
        return None;
    }
    let node = format!("/dev/{}", disk.file_name()?.to_string_lossy());
    Path::new(&node).exists().then_some(node)
}
