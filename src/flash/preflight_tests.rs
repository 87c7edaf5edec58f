//! The refusals on a fake system: a sysfs tree, a mount table and a swap list written into a
//! temp dir, for setups the test machine cannot build (device-mapper over a USB stick that
//! holds `/`, md holders, write-protected cards).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;
use crate::flash::device::DevNumber;
use crate::flash::{list_devices, mounts};

struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    fn new() -> FakeHost {
        FakeHost {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root().join(absolute.trim_start_matches('/'))
    }

    fn write(&self, absolute: &str, text: &str) {
        let path = self.path(absolute);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn link(&self, absolute: &str, target: &str) {
        let path = self.path(absolute);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(self.path(target), path).unwrap();
    }

    /// A disk (and its partitions, `(number, dev, sectors)`) under `device_dir`, registered
    /// in `/sys/block`, `/sys/dev/block` and `/sys/class/block` like the kernel does.
    fn disk(
        &self,
        device_dir: &str,
        name: &str,
        dev: &str,
        partitions: &[(u32, &str, u64)],
    ) -> String {
        let dir = format!("{device_dir}/block/{name}");
        self.write(&format!("{dir}/dev"), &format!("{dev}\n"));
        self.write(&format!("{dir}/size"), "62333952\n");
        self.write(&format!("{dir}/ro"), "0\n");
        self.write(&format!("{dir}/removable"), "1\n");
        self.write(&format!("{dir}/queue/rotational"), "0\n");
        fs::create_dir_all(self.path(&format!("{dir}/holders"))).unwrap();
        if !device_dir.contains("virtual") {
            self.link(&format!("{dir}/device"), device_dir);
        }
        self.link(&format!("/sys/block/{name}"), &dir);
        self.link(&format!("/sys/dev/block/{dev}"), &dir);
        self.link(&format!("/sys/class/block/{name}"), &dir);
        for (number, part_dev, sectors) in partitions {
            let part_name = format!("{name}{number}");
            let part = format!("{dir}/{part_name}");
            self.write(&format!("{part}/partition"), &format!("{number}\n"));
            self.write(&format!("{part}/dev"), &format!("{part_dev}\n"));
            self.write(&format!("{part}/size"), &format!("{sectors}\n"));
            fs::create_dir_all(self.path(&format!("{part}/holders"))).unwrap();
            self.link(&format!("/sys/dev/block/{part_dev}"), &part);
            self.link(&format!("/sys/class/block/{part_name}"), &part);
        }
        dir
    }

    /// A SCSI disk behind a USB card reader with vendor, model and iSerial.
    fn usb_disk(&self, name: &str, dev: &str, partitions: &[(u32, &str, u64)]) -> String {
        let usb = format!("/sys/devices/pci0000:00/0000:00:14.0/usb1/1-{name}");
        self.link(&format!("{usb}/subsystem"), "/sys/bus/usb");
        self.write(&format!("{usb}/serial"), &format!("SERIAL-{name}\n"));
        let scsi = format!("{usb}/1-{name}:1.0/host0/target0:0:0/{name}");
        self.link(&format!("{scsi}/subsystem"), "/sys/bus/scsi");
        self.write(&format!("{scsi}/vendor"), "Generic \n");
        self.write(&format!("{scsi}/model"), "SD Reader      \n");
        self.disk(&scsi, name, dev, partitions)
    }

    fn host(&self) -> Host {
        Host::at(self.root())
    }

    fn describe(&self, name: &str) -> DeviceInfo {
        let host = self.host();
        list_devices(&host)
            .into_iter()
            .find(|candidate| candidate.device.name == name)
            .unwrap_or_else(|| panic!("`{name}` not listed"))
            .device
    }

    fn refusal(&self, name: &str) -> Option<ErrorCode> {
        refusal(&self.describe(name)).map(|error| error.code)
    }
}

/// sda: root filesystem on LVM (dm-0) over sda2. sdb: a partition mounted on /media.
/// sdc: write-protected. sdd: an md member. sde: a clean card. sdf: `/boot`.
fn fake_system() -> FakeHost {
    let fake = FakeHost::new();
    fake.write("/sys/bus/usb/.keep", "");
    fake.write("/sys/bus/scsi/.keep", "");
    let sda = fake.usb_disk("sda", "8:0", &[(1, "8:1", 2048), (2, "8:2", 4096)]);
    fake.disk("/sys/devices/virtual", "dm-0", "253:0", &[]);
    fake.write("/sys/devices/virtual/block/dm-0/slaves/sda2", "");
    fs::create_dir_all(fake.path(&format!("{sda}/sda2/holders/dm-0"))).unwrap();
    fake.usb_disk("sdb", "8:16", &[(1, "8:17", 2048)]);
    let sdc = fake.usb_disk("sdc", "8:32", &[]);
    fake.write(&format!("{sdc}/ro"), "1\n");
    let sdd = fake.usb_disk("sdd", "8:48", &[]);
    fs::create_dir_all(fake.path(&format!("{sdd}/holders/md0"))).unwrap();
    fake.usb_disk("sde", "8:64", &[(1, "8:65", 2048)]);
    fake.usb_disk("sdf", "8:80", &[(1, "8:81", 2048)]);
    fake.write(
        "/proc/self/mountinfo",
        "25 1 253:0 / / rw,relatime - ext4 /dev/mapper/vg-root rw\n\
         30 25 8:17 / /media/my\\040stick rw,nosuid - vfat /dev/sdb1 rw\n\
         31 25 8:81 / /boot rw - ext4 /dev/sdf1 rw\n",
    );
    fake.write("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n");
    fake
}

#[test]
fn the_disk_under_root_on_lvm_is_a_system_disk() {
    let fake = fake_system();
    let sda = fake.describe("sda");
    assert_eq!(sda.system_uses, ["/"]);
    assert_eq!(sda.partitions[1].holders, ["dm-0"]);
    assert_eq!(fake.refusal("sda"), Some(ErrorCode::DeviceSystemDisk));
    assert_eq!(fake.describe("sdf").system_uses, ["/boot"]);
    assert_eq!(fake.refusal("sdf"), Some(ErrorCode::DeviceSystemDisk));
}

#[test]
fn each_unsafe_disk_has_its_own_refusal() {
    let fake = fake_system();
    assert_eq!(fake.refusal("sdb"), Some(ErrorCode::DeviceMounted));
    let message = refusal(&fake.describe("sdb")).unwrap().message;
    assert_eq!(
        message,
        "`/dev/sdb` is in use: `/dev/sdb1` is mounted on `/media/my stick`"
    );
    assert_eq!(fake.refusal("sdc"), Some(ErrorCode::DeviceReadOnly));
    assert_eq!(fake.refusal("sdd"), Some(ErrorCode::DeviceBusy));
    assert_eq!(fake.refusal("sde"), None);
    // The mapped device itself is mounted on `/`.
    assert_eq!(fake.refusal("dm-0"), Some(ErrorCode::DeviceMounted));
}

#[test]
fn identity_comes_from_sysfs() {
    let fake = fake_system();
    let sde = fake.describe("sde");
    assert_eq!(sde.model.as_deref(), Some("Generic SD Reader"));
    assert_eq!(sde.serial.as_deref(), Some("SERIAL-sde"));
    assert_eq!(sde.transport.as_deref(), Some("usb"));
    assert_eq!(sde.size, 62_333_952 * 512);
    assert!(sde.removable);
    assert!(!sde.rotational);
    assert_eq!(sde.partitions.len(), 1);
    assert_eq!(sde.partitions[0].node, PathBuf::from("/dev/sde1"));
    assert_eq!(sde.partitions[0].size, 2048 * 512);
    assert_eq!(
        sde.describe(),
        "Generic SD Reader (sde, 29.7 GiB, serial SERIAL-sde)"
    );
}

#[test]
fn swap_on_a_partition_makes_a_system_disk() {
    let fake = fake_system();
    // `/proc/swaps` names a device node, which a fake host cannot create; start from the
    // device number it would resolve to.
    let usage = mounts::Usage::read(&fake.host());
    assert!(usage.system_uses_of_disk("sde").is_empty());
    let swaps = [DevNumber {
        major: 8,
        minor: 65,
    }];
    let usage = mounts::Usage::from_parts(&fake.host(), &[], &swaps);
    assert_eq!(usage.system_uses_of_disk("sde"), ["swap"]);
}
