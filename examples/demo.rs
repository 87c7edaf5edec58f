//! The offline demo: generates a `file://` mirror of stand-in OpenWrt Image Builders (made
//! from the real 23.05.4 device data the `imagegen-standin` crate carries), copies the
//! example fleet next to it with settings that point at that mirror and trust its TEST
//! signing key, then runs `imagegen lock`, `plan`, `apply` and `plan` again, for real (GNU
//! make builds every image). Needs no network.
//!
//! Run: `cargo run --example demo [-- DIR]` (default DIR: target/imagegen-demo).
//! A directory left by an earlier or interrupted run is replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imagegen::error::{Error, ErrorCode, Result};

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error[{}]: {}", error.code, error.message);
            for problem in &error.problems {
                eprintln!("  {problem}");
            }
            if let Some(help) = &error.help {
                eprintln!("hint: {help}");
            }
            std::process::exit(error.exit_code());
        }
    }
}

fn run() -> Result<i32> {
    let crate_root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate_root.join("target"))
            .join("imagegen-demo"),
    };
    prepare_dir(&dir)?;
    let fleet = dir.join("fleet");
    copy_fleet(&crate_root, &fleet)?;
    eprintln!(
        "== generating a stand-in mirror in {}",
        dir.join("mirror").display()
    );
    let manifest_path = fleet.join("imagegen.toml");
    let loaded = imagegen::manifest::load_fleet(&manifest_path, None)?;
    let mirror = imagegen_standin::demo::write_mirror_for_fleet(
        &dir.join("mirror"),
        &imagegen_standin::upstream_data(),
        &loaded,
        0.0,
    )?;
    point_fleet_at(&manifest_path, &mirror, &dir.join("state"))?;
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(name, _)| !name.starts_with("OWRT_IMG_"))
        .collect();
    let steps: [&[&str]; 4] = [
        &["lock"],
        &["plan"],
        &["apply"],
        &["plan", "--detailed-exitcode"],
    ];
    for args in steps {
        eprintln!("\n== imagegen {}", args.join(" "));
        let mut argv = vec![
            "imagegen".into(),
            "--manifest".into(),
            manifest_path.clone().into_os_string(),
        ];
        argv.extend(args.iter().map(Into::into));
        let code = imagegen::cli::run(argv, env.clone());
        if code != 0 {
            eprintln!("imagegen {} exited {code}", args.join(" "));
            return Ok(code);
        }
    }
    let manifest = manifest_path.display();
    eprintln!(
        "\nThe demo fleet, its state and the mirror are in {}.",
        dir.display()
    );
    eprintln!("Next, from the repository:");
    eprintln!("  cargo run -- --manifest {manifest} builds list");
    eprintln!(
        "  cargo run -- --manifest {manifest} artifacts export home.ap-livingroom.23.05 --out {}",
        dir.join("images").display()
    );
    eprintln!(
        "or install it (`cargo install --path . --locked`) and run `imagegen --manifest {manifest} plan`"
    );
    eprintln!(
        "after editing a profile in {} to see the change explained.",
        fleet.join("profiles").display()
    );
    Ok(0)
}

/// An empty demo directory: what an earlier (perhaps interrupted) run left is removed.
fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|error| {
            Error::io("clearing the demo directory", dir, error).with_help(
                "remove it yourself, or pass another directory: `cargo run --example demo -- DIR`",
            )
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|error| Error::io("creating", dir, error))
}

/// Points the copied fleet's `[settings]` at the stand-in mirror and keeps the demo's state
/// next to it, so `imagegen --manifest DIR/fleet/imagegen.toml …` works afterwards.
fn point_fleet_at(
    manifest_path: &Path,
    mirror: &imagegen_standin::demo::DemoMirror,
    state: &Path,
) -> Result<()> {
    let text = std::fs::read_to_string(manifest_path)
        .map_err(|error| Error::io("reading", manifest_path, error))?;
    let original = "mirror = \"https://downloads.openwrt.org\"";
    if !text.contains(original) {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!("the example manifest has no `{original}` line to replace"),
        )
        .with_help("restore imagegen.toml from git"));
    }
    let settings = format!(
        "mirror = \"{}\"\ntrusted_keys = [\"{}\"]\noffline = true\ndb = \"{}\"\nartifacts_dir = \"{}\"\ncache_dir = \"{}\"\ntmp_dir = \"{}\"",
        mirror.url,
        mirror.public_key.display(),
        state.join("state.redb").display(),
        state.join("artifacts").display(),
        state.join("cache").display(),
        state.join("tmp").display()
    );
    imagegen::fsutil::write_atomically(manifest_path, text.replace(original, &settings).as_bytes())
}

fn copy_fleet(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|error| Error::io("creating", to, error))?;
    let manifest = from.join("imagegen.toml");
    std::fs::copy(&manifest, to.join("imagegen.toml"))
        .map_err(|error| Error::io("copying", &manifest, error))?;
    for dir in ["profiles", "files"] {
        copy_tree(&from.join(dir), &to.join(dir))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|error| Error::io("creating", to, error))?;
    let entries = std::fs::read_dir(from).map_err(|error| Error::io("reading", from, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("reading", from, error))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .map_err(|error| Error::io("reading", &source, error))?;
        let copied = if kind.is_dir() {
            copy_tree(&source, &target)?;
            Ok(())
        } else if kind.is_symlink() {
            std::fs::read_link(&source).and_then(|link| std::os::unix::fs::symlink(link, &target))
        } else {
            std::fs::copy(&source, &target).map(drop)
        };
        copied.map_err(|error| Error::io("copying", &source, error))?;
    }
    Ok(())
}
