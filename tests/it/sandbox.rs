//! The build sandbox against hostile fleet input (issue 13). The stand-in Image Builder runs
//! an overlay's `/usr/lib/opkg/info/*.postinst` with bash on the build host and removes
//! version-control leftovers through a whitespace-splitting `find | xargs rm -rf`, exactly
//! like upstream's `prepare_rootfs`. With the sandbox, such input cannot write outside the
//! slot, reach the network (not even the host's loopback), read host files or delete host
//! directories; with the sandbox off the same input does all of that, so these tests can
//! fail. Also: `sandbox` mode without bubblewrap, the kill semantics inside the sandbox, and
//! the private work directory.
//!
//! Where the sandbox cannot work on a machine, a test says so on the real stderr (not the
//! captured one) with the missing capability, and returns.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imagegen::ErrorCode;
use imagegen::build::{BuildRequest, SandboxMode, prepare_slot, run_build, sandbox_unavailable};
use imagegen::key::{BuildInputs, BuilderPin, ImageOptions, OverlayInputs};
use imagegen_standin::demo;
use imagegen_standin::imagebuilder::{self as ib, RootfsEntry};

use crate::support::{Run, TestFleet, upstream_data};

/// A uid that owns nothing here, for imagegen run by a non-root user.
const OTHER_UID: u32 = 4242;

/// Says on the real stderr (libtest captures only `eprintln!`) that a test did not run.
fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

fn sandbox_works(test: &str) -> bool {
    match sandbox_unavailable() {
        None => true,
        Some(reason) => {
            skip(
                test,
                &format!("the build sandbox cannot run here: {reason}"),
            );
            false
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Everything a hostile package script goes for: a writable host directory, a world-readable
/// host file, a root-only file in `/root` (when the tests run as root), a TCP listener on
/// the host's loopback.
struct Target {
    /// Outside every directory imagegen uses; 0755, so only the sandbox's view hides it.
    outside: tempfile::TempDir,
    listener: TcpListener,
    root_secret: Option<tempfile::NamedTempFile>,
}

impl Target {
    fn new() -> Target {
        let outside = tempfile::Builder::new()
            .prefix("sandbox-outside-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("outside dir");
        fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let drop_box = outside.path().join("drop-box");
        fs::create_dir(&drop_box).expect("mkdir");
        fs::set_permissions(&drop_box, fs::Permissions::from_mode(0o777)).expect("chmod");
        fs::write(outside.path().join("secret"), "host secret\n").expect("secret");
        fs::set_permissions(
            outside.path().join("secret"),
            fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let root_secret = is_root().then(|| {
            let mut file = tempfile::NamedTempFile::new_in("/root").expect("a file in /root");
            file.write_all(b"root secret\n").expect("write");
            file
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
        listener.set_nonblocking(true).expect("nonblocking");
        Target {
            outside,
            listener,
            root_secret,
        }
    }

    fn marker(&self) -> PathBuf {
        self.outside.path().join("drop-box/escaped")
    }

    /// The postinst: records that it ran, then tries every escape, copying whatever it
    /// reads into the image (an image is how a build would smuggle data out).
    fn postinst(&self) -> String {
        let root_secret = self
            .root_secret
            .as_ref()
            .map_or(PathBuf::from("/root/.none"), |file| {
                file.path().to_path_buf()
            });
        format!(
            "#!/bin/sh\n\
             touch \"$IPKG_INSTROOT/postinst-ran\"\n\
             echo escaped > '{marker}' 2>/dev/null\n\
             cat '{secret}' > \"$IPKG_INSTROOT/leak-secret\" 2>/dev/null\n\
             cat '{root_secret}' > \"$IPKG_INSTROOT/leak-root\" 2>/dev/null\n\
             if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then\n\
             \techo connected > \"$IPKG_INSTROOT/leak-network\"\n\
             fi\n\
             exit 0\n",
            marker = self.marker().display(),
            secret = self.outside.path().join("secret").display(),
            root_secret = root_secret.display(),
            port = self.listener.local_addr().expect("address").port(),
        )
    }

    fn connected(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

/// One x86/64 profile on a fresh stand-in mirror; `postinst`, when given, is put into the
/// image at `/usr/lib/opkg/info/x.postinst`. Images are copied to `out/`.
fn fleet(postinst: Option<&str>, settings: &str) -> TestFleet {
    let fleet = TestFleet::empty();
    let mirror = demo::write_mirror(
        &fleet.path().join("mirror"),
        &upstream_data(),
        &[("23.05.4", "x86", "64")],
        0.0,
    )
    .expect("mirror");
    fleet.write(
        "imagegen.toml",
        &format!(
            "[fleet]\nname = \"lab\"\n\n[settings]\nmirror = \"{}\"\ntrusted_keys = [\"{}\"]\n{settings}",
            mirror.url,
            mirror.public_key.display()
        ),
    );
    let files = match postinst {
        Some(script) => {
            fleet.write("files/x.postinst", script);
            "files:\n  - source: files/x.postinst\n    destination: /usr/lib/opkg/info/x.postinst\n    mode: \"0755\"\n"
        }
        None => "",
    };
    fleet.write(
        "profiles/gw.yaml",
        &format!(
            "profile_id: gw\nname: gw\ndevice_id: generic\nopenwrt_release: 23.05.4\ntarget: x86\nsubtarget: \"64\"\nimagebuilder_profile: generic\nbin_dir: out\n{files}"
        ),
    );
    fleet
}

fn apply(fleet: &TestFleet, mode: &str) -> Run {
    let mut command = fleet.command(&["apply"]);
    command.env("OWRT_IMG_SANDBOX", mode);
    run(command)
}

fn run(mut command: std::process::Command) -> Run {
    let output = command.output().expect("run imagegen");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The root filesystem of the built combined squashfs image.
pub(crate) fn rootfs(fleet: &TestFleet) -> BTreeMap<String, RootfsEntry> {
    let out = fleet.path().join("out");
    let image = fs::read_dir(&out)
        .expect("bin_dir")
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.to_string_lossy()
                .ends_with("-squashfs-combined.img.gz")
        })
        .expect("combined image");
    ib::read_image_rootfs(&image).expect("read image")
}

fn file_text(rootfs: &BTreeMap<String, RootfsEntry>, path: &str) -> Option<String> {
    match rootfs.get(path) {
        Some(RootfsEntry::File { data, .. }) => Some(String::from_utf8_lossy(data).into_owned()),
        _ => None,
    }
}

/// The `sandbox` object of the one build manifest the fleet's apply wrote.
fn manifest_sandbox(fleet: &TestFleet) -> serde_json::Value {
    let dir = fleet.state_dir().join("artifacts/manifests");
    let path = fs::read_dir(&dir)
        .expect("manifests")
        .flatten()
        .map(|entry| entry.path())
        .next()
        .expect("a manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read manifest")).expect("JSON");
    manifest["sandbox"].clone()
}

/// What a contained build shows: the script ran, got nothing out and left nothing outside.
fn assert_contained(fleet: &TestFleet, target: &Target, run: &Run) {
    run.success();
    assert!(!run.stderr.contains("WITHOUT a sandbox"), "{}", run.stderr);
    let rootfs = rootfs(fleet);
    assert!(
        rootfs.contains_key("/postinst-ran"),
        "the postinst never ran"
    );
    assert!(
        !rootfs.contains_key("/usr/lib/opkg/info/x.postinst"),
        "prepare_rootfs removes postinst scripts, as upstream"
    );
    assert!(!target.marker().exists(), "wrote outside the slot");
    assert!(!target.connected(), "reached the host's loopback");
    for leak in ["/leak-secret", "/leak-root", "/leak-network"] {
        let text = file_text(&rootfs, leak).unwrap_or_default();
        assert!(text.is_empty(), "{leak}: {text}");
    }
    let sandbox = manifest_sandbox(fleet);
    assert_eq!(sandbox["sandboxed"], true, "{sandbox}");
    assert_eq!(sandbox["mode"], "sandbox");
}

#[test]
fn a_hostile_postinst_is_contained_by_the_sandbox() {
    if !sandbox_works("a_hostile_postinst_is_contained_by_the_sandbox") {
        return;
    }
    let target = Target::new();
    let fleet = fleet(Some(&target.postinst()), "");
    let run = apply(&fleet, "sandbox");
    assert_contained(&fleet, &target, &run);
    // The work directory was made private.
    let work = fs::metadata(fleet.state_dir().join("work")).expect("work dir");
    assert_eq!(work.mode() & 0o777, 0o700);
}

#[test]
fn the_same_postinst_escapes_without_the_sandbox() {
    let target = Target::new();
    let fleet = fleet(Some(&target.postinst()), "");
    let run = apply(&fleet, "none");
    run.success();
    assert!(
        run.stderr
            .contains("WARNING: `make image` runs WITHOUT a sandbox: the sandbox is turned off"),
        "{}",
        run.stderr
    );
    assert_eq!(
        fs::read_to_string(target.marker()).expect("the marker outside"),
        "escaped\n"
    );
    assert!(target.connected(), "no connection to the host's loopback");
    let rootfs = rootfs(&fleet);
    assert_eq!(
        file_text(&rootfs, "/leak-secret").as_deref(),
        Some("host secret\n")
    );
    if target.root_secret.is_some() {
        assert_eq!(
            file_text(&rootfs, "/leak-root").as_deref(),
            Some("root secret\n")
        );
    }
    let sandbox = manifest_sandbox(&fleet);
    assert_eq!(sandbox["sandboxed"], false, "{sandbox}");
    assert_eq!(sandbox["mode"], "none");
}

#[test]
fn the_sandbox_holds_when_a_non_root_user_runs_imagegen() {
    let test = "the_sandbox_holds_when_a_non_root_user_runs_imagegen";
    if !is_root() {
        skip(test, "only root can run imagegen as another user here");
        return;
    }
    let target = Target::new();
    let fleet = fleet(Some(&target.postinst()), "");
    fs::set_permissions(fleet.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    chown_tree(fleet.path(), OTHER_UID);
    let mut command = fleet.command(&["apply"]);
    command
        .env("OWRT_IMG_SANDBOX", "sandbox")
        .uid(OTHER_UID)
        .gid(OTHER_UID);
    let run = run(command);
    if run.code != 0 && run.stderr.contains("cannot sandbox") {
        skip(
            test,
            &format!(
                "no sandbox for uid {OTHER_UID} (unprivileged user namespaces?): {}",
                run.stderr
            ),
        );
        return;
    }
    assert_contained(&fleet, &target, &run);
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
    if fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in fs::read_dir(path).expect("list").flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}

/// A `PATH` with every program of the system's `bin` and `sbin` directories except
/// bubblewrap.
fn path_without_bwrap(dir: &Path) -> String {
    fs::create_dir_all(dir).expect("mkdir");
    for system in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let Ok(entries) = fs::read_dir(system) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = dir.join(&name);
            if name != "bwrap" && !link.exists() {
                std::os::unix::fs::symlink(entry.path(), link).expect("symlink");
            }
        }
    }
    dir.display().to_string()
}

#[test]
fn without_bubblewrap_sandbox_mode_fails_and_auto_warns() {
    let fleet = fleet(None, "");
    let path = path_without_bwrap(&fleet.path().join("no-bwrap"));
    let mut command = fleet.command(&["apply", "--json"]);
    command
        .env("PATH", &path)
        .env("OWRT_IMG_SANDBOX", "sandbox");
    let refused = run(command);
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    let error = refused
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "step_finished" && event["address"] == "build.lab.gw")
        .map(|event| event["error"].clone())
        .expect("the build step's result");
    assert_eq!(error["code"], "precondition", "{error}");
    assert_eq!(
        error["message"],
        "cannot sandbox `make image`: bubblewrap (`bwrap`) is not installed or not on `PATH`"
    );
    assert!(
        error["help"]
            .as_str()
            .is_some_and(|help| help.contains("apt-get install bubblewrap")),
        "{error}"
    );
    assert!(!fleet.path().join("out").exists(), "built anyway");

    let mut command = fleet.command(&["apply"]);
    command.env("PATH", &path).env("OWRT_IMG_SANDBOX", "auto");
    let warned = run(command);
    warned.success();
    assert!(
        warned.stderr.contains(
            "WARNING: `make image` runs WITHOUT a sandbox: bubblewrap (`bwrap`) is not installed"
        ),
        "{}",
        warned.stderr
    );
    let sandbox = manifest_sandbox(&fleet);
    assert_eq!(sandbox["sandboxed"], false);
    assert_eq!(sandbox["mode"], "auto");
    assert!(
        sandbox["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("bwrap")),
        "{sandbox}"
    );
}

/// Host processes whose command line contains `tag`.
fn tagged_processes(tag: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| {
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(tag)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A postinst that parks as a process whose command line carries `tag`.
fn sleeper_postinst(tag: &str) -> String {
    format!("#!/bin/bash\nexec -a {tag} sleep 1000\n")
}

#[test]
fn killing_imagegen_kills_everything_in_the_sandbox() {
    if !sandbox_works("killing_imagegen_kills_everything_in_the_sandbox") {
        return;
    }
    let tag = format!("imagegen-sandbox-sleeper-{}", std::process::id());
    let fleet = fleet(Some(&sleeper_postinst(&tag)), "");
    let mut command = fleet.command(&["apply"]);
    command
        .env("OWRT_IMG_SANDBOX", "sandbox")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("spawn imagegen");
    let started = wait_until(Duration::from_secs(120), || {
        !tagged_processes(&tag).is_empty()
    });
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    assert!(started, "the sleeper never started");
    assert!(
        wait_until(Duration::from_secs(20), || tagged_processes(&tag)
            .is_empty()),
        "survivors: {:?}",
        tagged_processes(&tag)
    );
}

/// A stand-in Image Builder tree and a prepared slot, for builds through the library.
struct Standin {
    dir: tempfile::TempDir,
    pristine: PathBuf,
}

impl Standin {
    fn new() -> Standin {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut spec =
            ib::spec_from_data(&upstream_data(), "23.05.4", "x86", "64").expect("stand-in spec");
        // These builds run without imagegen's feed handling: the tree carries its packages.
        spec.local_packages = true;
        let pristine = ib::write_tree(&spec, dir.path()).expect("stand-in tree");
        Standin { dir, pristine }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Prepares (or resets) the slot and returns it.
    fn prepare(&self) -> PathBuf {
        let slot = self.path("slot");
        prepare_slot(&self.pristine, &slot).expect("slot");
        slot
    }

    fn build(
        &self,
        files: &Path,
        tag: &str,
        mode: SandboxMode,
        timeout: Duration,
    ) -> imagegen::Result<imagegen::build::BuildOutput> {
        self.prepare();
        self.run(files, tag, mode, timeout)
    }

    /// Runs a build in the slot as it is.
    fn run(
        &self,
        files: &Path,
        tag: &str,
        mode: SandboxMode,
        timeout: Duration,
    ) -> imagegen::Result<imagegen::build::BuildOutput> {
        let slot = self.path("slot");
        let inputs = BuildInputs {
            schema: 1,
            builder: BuilderPin {
                triple: imagegen::triple::Triple::new("23.05.4", "x86", "64"),
                archive_sha256: None,
                version_code: None,
            },
            imagebuilder_profile: "generic".into(),
            packages: Vec::new(),
            packages_remove: Vec::new(),
            overlay: OverlayInputs::default(),
            options: ImageOptions::default(),
            feeds: Vec::new(),
        };
        run_build(&BuildRequest {
            inputs: &inputs,
            build_key: tag,
            slot_dir: &slot,
            files_dir: Some(files),
            provenance: None,
            output_dir: &self.path(&format!("out-{tag}")),
            log_path: &self.path(&format!("{tag}.log")),
            timeout,
            cancel: &AtomicBool::new(false),
            sandbox: mode,
            feeds: None,
        })
    }

    /// An overlay with `/usr/lib/opkg/info/x.postinst`.
    fn postinst_overlay(&self, name: &str, script: &str) -> PathBuf {
        let overlay = self.path(name);
        let info = overlay.join("usr/lib/opkg/info");
        fs::create_dir_all(&info).expect("mkdir");
        fs::write(info.join("x.postinst"), script).expect("postinst");
        fs::set_permissions(info.join("x.postinst"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        overlay
    }
}

#[test]
fn a_whitespace_split_cleanup_cannot_delete_host_dirs() {
    let sandboxed = sandbox_works("a_whitespace_split_cleanup_cannot_delete_host_dirs");
    let standin = Standin::new();
    let victim = tempfile::Builder::new()
        .prefix("sandbox-victim-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("victim");
    fs::create_dir(victim.path().join(".git")).expect("mkdir");
    fs::write(victim.path().join(".git/HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    // The overlay holds `a /<victim>/.git/HEAD`: `find` prints `<rootfs>/a /<victim>/.git`
    // and `xargs` makes that two arguments to `rm -rf`.
    let overlay = standin.path("overlay");
    let relative = victim.path().strip_prefix("/").expect("absolute");
    let planted = overlay.join("a ").join(relative).join(".git");
    fs::create_dir_all(&planted).expect("mkdir");
    fs::write(planted.join("HEAD"), "planted\n").expect("planted");
    if sandboxed {
        standin
            .build(
                &overlay,
                "sandboxed",
                SandboxMode::Sandbox,
                Duration::from_secs(120),
            )
            .expect("sandboxed build");
        assert!(
            victim.path().join(".git/HEAD").exists(),
            "the sandboxed cleanup deleted a host directory"
        );
    }
    standin
        .build(
            &overlay,
            "unsandboxed",
            SandboxMode::None,
            Duration::from_secs(120),
        )
        .expect("unsandboxed build");
    assert!(
        !victim.path().join(".git").exists(),
        "the stand-in no longer reproduces upstream's cleanup hazard"
    );
}

#[test]
fn a_build_cannot_forge_the_slot_records_or_write_the_pristine_tree() {
    if !sandbox_works("a_build_cannot_forge_the_slot_records_or_write_the_pristine_tree") {
        return;
    }
    let standin = Standin::new();
    let overlay = standin.postinst_overlay(
        "overlay",
        "#!/bin/sh\n\
         echo forged >> \"$TOPDIR/.imagegen-slot/records\" 2>/dev/null\n\
         mv \"$TOPDIR/.imagegen-slot\" \"$TOPDIR/moved\" 2>/dev/null\n\
         echo '# hacked' >> \"$TOPDIR/rules.mk\" 2>/dev/null\n\
         exit 0\n",
    );
    let slot = standin.prepare();
    let records = fs::read(slot.join(".imagegen-slot/records")).expect("records");
    let rules = fs::read(standin.pristine.join("rules.mk")).expect("rules.mk");
    let result = standin.run(
        &overlay,
        "forge",
        SandboxMode::Sandbox,
        Duration::from_secs(120),
    );
    assert_eq!(
        fs::read(slot.join(".imagegen-slot/records")).expect("records"),
        records,
        "the build rewrote the slot's records"
    );
    assert!(!slot.join("moved").exists());
    match result {
        // As root the build user cannot write the pristine (root's) files at all.
        Ok(_) => {
            assert_eq!(
                fs::read(standin.pristine.join("rules.mk")).expect("rules.mk"),
                rules
            );
            assert!(
                prepare_slot(&standin.pristine, &slot)
                    .expect("reset")
                    .reused
            );
        }
        // As a user, the sandbox runs as that user: the write lands and is caught.
        Err(error) => assert!(
            error
                .message
                .contains("wrote into the pristine Image Builder"),
            "{error:?}"
        ),
    }
}

#[test]
fn cleaning_the_slot_does_not_follow_a_planted_symlink() {
    if !sandbox_works("cleaning_the_slot_does_not_follow_a_planted_symlink") {
        return;
    }
    let standin = Standin::new();
    // A host directory shaped like `build_dir`: imagegen (root) deletes `*/root-*` there
    // after the build if it follows the link the build leaves in the slot.
    let victim = tempfile::Builder::new()
        .prefix("sandbox-victim-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("victim");
    fs::create_dir_all(victim.path().join("target-x/root-x")).expect("mkdir");
    let overlay = standin.postinst_overlay(
        "overlay",
        &format!(
            "#!/bin/sh\n\
             mv \"$TOPDIR/build_dir\" \"$TOPDIR/build_dir.moved\"\n\
             ln -s '{}' \"$TOPDIR/build_dir\"\n\
             exit 0\n",
            victim.path().display()
        ),
    );
    let result = standin.build(
        &overlay,
        "swap",
        SandboxMode::Sandbox,
        Duration::from_secs(120),
    );
    assert!(
        result.is_err(),
        "the build cannot finish without its build_dir"
    );
    assert!(
        fs::symlink_metadata(standin.path("slot/build_dir"))
            .expect("the planted link")
            .file_type()
            .is_symlink(),
        "the postinst did not plant its link"
    );
    assert!(victim.path().join("target-x/root-x").is_dir());
}

#[test]
fn preparing_a_slot_stops_a_stale_sandbox_of_it() {
    if !sandbox_works("preparing_a_slot_stops_a_stale_sandbox_of_it") {
        return;
    }
    let standin = Standin::new();
    let slot = standin.prepare();
    // What imagegen killed during bwrap's set-up leaves behind: a sandbox of this slot that
    // nobody supervises.
    let tag = format!("imagegen-sandbox-stale-{}", std::process::id());
    let mut stale = std::process::Command::new("bwrap");
    stale
        .args(["--die-with-parent", "--unshare-pid", "--new-session"])
        .args(["--ro-bind", "/", "/", "--bind"])
        .arg(&slot)
        .args(["/mnt", "--", "bash", "-c"])
        .arg(format!("exec -a {tag} sleep 1000"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut stale = stale.spawn().expect("spawn bwrap");
    // The sandboxed command itself (argv[0] is the tag), not only bwrap, whose command line
    // carries the tag too.
    assert!(
        wait_until(Duration::from_secs(30), || tagged_processes(&tag)
            .iter()
            .any(|line| line
                .split_once(": ")
                .is_some_and(|(_, cmd)| cmd.starts_with(&tag)))),
        "the stale sandbox never started"
    );
    prepare_slot(&standin.pristine, &slot).expect("reset");
    let gone = wait_until(Duration::from_secs(20), || {
        tagged_processes(&tag).is_empty()
    });
    let _ = stale.kill();
    let _ = stale.wait();
    assert!(gone, "the stale sandbox survived the reset");
}

#[test]
fn a_timeout_stops_everything_in_the_sandbox() {
    if !sandbox_works("a_timeout_stops_everything_in_the_sandbox") {
        return;
    }
    let standin = Standin::new();
    let tag = format!("imagegen-sandbox-timeout-{}", std::process::id());
    let overlay = standin.postinst_overlay("overlay", &sleeper_postinst(&tag));
    // A watcher proves the sleeper really ran inside before the timeout hit.
    let finished = AtomicBool::new(false);
    let (result, seen) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            wait_until(Duration::from_secs(120), || {
                finished.load(Ordering::Relaxed) || !tagged_processes(&tag).is_empty()
            }) && !tagged_processes(&tag).is_empty()
        });
        let timeout = Duration::from_secs(15);
        let result = standin.build(&overlay, "timeout", SandboxMode::Sandbox, timeout);
        finished.store(true, Ordering::Relaxed);
        (result, watcher.join().expect("watcher"))
    });
    assert!(seen, "the sleeper never ran");
    let error = result.expect_err("timed out");
    assert_eq!(error.code, ErrorCode::BuildFailed);
    assert_eq!(error.message, "build timed out after 15 s");
    assert!(
        wait_until(Duration::from_secs(20), || tagged_processes(&tag)
            .is_empty()),
        "survivors: {:?}",
        tagged_processes(&tag)
    );
}

#[test]
fn the_slot_keeps_nothing_of_the_overlay_after_a_build() {
    let fleet = fleet(None, "");
    // An overlay directory with a world-writable directory and a setuid file.
    let base = fleet.path().join("files/base");
    fs::create_dir_all(base.join("shared")).expect("mkdir");
    fs::write(base.join("shared/tool"), "#!/bin/sh\n").expect("tool");
    fs::set_permissions(base.join("shared/tool"), fs::Permissions::from_mode(0o4755))
        .expect("chmod");
    fs::set_permissions(base.join("shared"), fs::Permissions::from_mode(0o777)).expect("chmod");
    let profile = fs::read_to_string(fleet.path().join("profiles/gw.yaml")).expect("profile");
    fleet.write(
        "profiles/gw.yaml",
        &format!("{profile}overlay_dir: files/base\n"),
    );
    apply(&fleet, "auto").success();
    let rootfs = rootfs(&fleet);
    assert!(
        matches!(rootfs.get("/shared/tool"), Some(RootfsEntry::File { mode, .. }) if mode & 0o7777 == 0o4755),
        "the image keeps the overlay's modes"
    );
    let mut found = Vec::new();
    risky_entries(&fleet.state_dir().join("work"), &mut found);
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn a_failed_build_leaves_no_overlay_behind() {
    let fleet = fleet(Some("#!/bin/sh\nexit 3\n"), "");
    let base = fleet.path().join("files/base");
    fs::create_dir_all(&base).expect("mkdir");
    fs::write(base.join("tool"), "#!/bin/sh\n").expect("tool");
    fs::set_permissions(base.join("tool"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    let profile = fs::read_to_string(fleet.path().join("profiles/gw.yaml")).expect("profile");
    fleet.write(
        "profiles/gw.yaml",
        &format!("{profile}overlay_dir: files/base\n"),
    );
    let run = apply(&fleet, "auto");
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let work = fleet.state_dir().join("work");
    for scratch in ["stage/slot-0", "out/slot-0"] {
        assert!(
            !work.join(scratch).exists(),
            "{scratch} survived the failed build"
        );
    }
    let mut found = Vec::new();
    risky_entries(&work, &mut found);
    assert_eq!(found, Vec::<String>::new());
}

/// Setuid/setgid files and world-writable directories below `dir`.
fn risky_entries(dir: &Path, found: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("list").flatten() {
        let metadata = fs::symlink_metadata(entry.path()).expect("stat");
        let mode = metadata.mode() & 0o7777;
        if metadata.is_dir() {
            if mode & 0o002 != 0 {
                found.push(format!("{} {mode:o}", entry.path().display()));
            }
            risky_entries(&entry.path(), found);
        } else if metadata.is_file() && mode & 0o6000 != 0 {
            found.push(format!("{} {mode:o}", entry.path().display()));
        }
    }
}

#[test]
fn a_planted_symlink_at_the_work_dir_is_refused() {
    let fleet = fleet(None, "");
    let elsewhere = fleet.path().join("elsewhere");
    fs::create_dir_all(elsewhere.join("slots")).expect("mkdir");
    fs::write(elsewhere.join("slots/keep"), "not imagegen's\n").expect("keep");
    fs::create_dir_all(fleet.state_dir()).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, fleet.state_dir().join("work")).expect("plant");
    let run = apply(&fleet, "auto");
    assert_ne!(run.code, 0);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains("refusing the work directory") && text.contains("it is a symbolic link"),
        "{text}"
    );
    assert_eq!(
        fs::read_to_string(elsewhere.join("slots/keep")).expect("kept"),
        "not imagegen's\n"
    );
    assert_eq!(fs::read_dir(&elsewhere).expect("list").count(), 1);
}

#[test]
fn a_work_dir_of_another_user_is_refused() {
    if !is_root() {
        skip(
            "a_work_dir_of_another_user_is_refused",
            "only root can give a directory to another user here",
        );
        return;
    }
    let fleet = fleet(None, "");
    let work = fleet.state_dir().join("work");
    fs::create_dir_all(&work).expect("mkdir");
    fs::set_permissions(&work, fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::lchown(&work, Some(OTHER_UID), Some(OTHER_UID)).expect("chown");
    let run = apply(&fleet, "auto");
    assert_ne!(run.code, 0);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains(&format!(
            "it belongs to uid {OTHER_UID}, not to you (uid 0)"
        )),
        "{text}"
    );
}
