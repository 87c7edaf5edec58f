//! Shared test support: a temp fleet directory and a runner for the real `imagegen` binary
//! with an isolated environment (its own HOME, state, cache and tmp dirs; no OWRT_IMG_*
//! from the developer's shell).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BINARY: &str = env!("CARGO_BIN_EXE_imagegen");

/// The crate root (where Cargo.toml and the example fleet live).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Real upstream metadata (OpenWrt 23.05.4), carried by the stand-in crate.
pub fn upstream_data() -> PathBuf {
    imagegen_standin::upstream_data()
}

/// A temp directory holding a fleet, with isolated state for the binary.
pub struct TestFleet {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not JSON ({error}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn success(&self) -> &Run {
        assert_eq!(
            self.code, 0,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl TestFleet {
    /// An empty fleet directory.
    pub fn empty() -> TestFleet {
        TestFleet {
            dir: tempfile::Builder::new()
                .prefix("imagegen-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// A copy of the repository's example fleet (imagegen.toml, profiles/, files/).
    pub fn example() -> TestFleet {
        let fleet = TestFleet::empty();
        let root = crate_root();
        std::fs::copy(
            root.join("imagegen.toml"),
            fleet.path().join("imagegen.toml"),
        )
        .expect("copy manifest");
        copy_tree(&root.join("profiles"), &fleet.path().join("profiles"));
        copy_tree(&root.join("files"), &fleet.path().join("files"));
        fleet
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, text: &str) -> &TestFleet {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, text).expect("write file");
        self
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".state")
    }

    /// A command for the real binary, run in the fleet dir with an isolated environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let state = self.state_dir();
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", state.join("home"))
            .env("TMPDIR", state.join("tmp"))
            .env("OWRT_IMG_DB_URL", state.join("state.redb"))
            .env("OWRT_IMG_ARTIFACTS_DIR", state.join("artifacts"))
            .env("OWRT_IMG_CACHE_DIR", state.join("cache"))
            .env("OWRT_IMG_TMP_DIR", state.join("work"))
            .env("OWRT_IMG_OFFLINE", "1")
            .env("NO_COLOR", "1");
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run imagegen"))
    }

    /// Output with the temp dir replaced by `[FLEET]`, for snapshots.
    pub fn redact(&self, text: &str) -> String {
        let real = self
            .path()
            .canonicalize()
            .unwrap_or_else(|_| self.path().to_path_buf());
        text.replace(&real.display().to_string(), "[FLEET]")
            .replace(&self.path().display().to_string(), "[FLEET]")
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).expect("read link");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
