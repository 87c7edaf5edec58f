//! The offline demo: generates a `file://` mirror of stand-in OpenWrt Image Builders (made
//! from the real 23.05.4 device data the `imagegen-standin` crate carries), copies the example fleet next to it
//! with settings that point at that mirror and trust its TEST signing key, then runs
//! `imagegen plan`, `imagegen apply` and `imagegen plan` again, for real (GNU make builds
//! every image). Needs no network.
//!
//! Run: `cargo run --release --example demo [-- DIR]` (default DIR: target/imagegen-demo).
//! Afterwards, try the CLI yourself: `cd DIR/fleet && ../../release/imagegen builds list`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn main() {
    let crate_root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate_root.join("target"));
            target.join("imagegen-demo")
        });
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .unwrap_or_else(|error| panic!("cannot clear {}: {error}", dir.display()));
    }
    let data = imagegen_standin::upstream_data();
    let fleet = dir.join("fleet");
    copy_fleet(&crate_root, &fleet);
    eprintln!(
        "== generating a stand-in mirror in {}",
        dir.join("mirror").display()
    );
    let loaded = imagegen::manifest::load_fleet(&fleet.join("imagegen.toml"), None)
        .unwrap_or_else(|error| panic!("loading the example fleet: {error}"));
    let mirror =
        imagegen_standin::demo::write_mirror_for_fleet(&dir.join("mirror"), &data, &loaded, 0.0)
            .unwrap_or_else(|error| panic!("writing the mirror: {error}"));
    // The demo's state lives next to it, named in the fleet's own settings, so plain
    // `imagegen --manifest DIR/fleet/imagegen.toml builds list` works afterwards.
    let state = dir.join("state");
    let manifest = std::fs::read_to_string(fleet.join("imagegen.toml")).expect("manifest");
    let manifest = manifest.replace(
        "mirror = \"https://downloads.openwrt.org\"",
        &format!(
            "mirror = \"{}\"\ntrusted_keys = [\"{}\"]\noffline = true\ndb = \"{}\"\nartifacts_dir = \"{}\"\ncache_dir = \"{}\"\ntmp_dir = \"{}\"",
            mirror.url,
            mirror.public_key.display(),
            state.join("state.redb").display(),
            state.join("artifacts").display(),
            state.join("cache").display(),
            state.join("tmp").display()
        ),
    );
    std::fs::write(fleet.join("imagegen.toml"), manifest).expect("write manifest");
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(name, _)| !name.starts_with("OWRT_IMG_"))
        .collect();
    let run = |args: &[&str]| {
        eprintln!("\n== imagegen {}", args.join(" "));
        let mut argv = vec![
            "imagegen".into(),
            "--manifest".into(),
            fleet.join("imagegen.toml").into_os_string(),
        ];
        argv.extend(args.iter().map(Into::into));
        imagegen::cli::run(argv, env.clone())
    };
    let steps: [(&[&str], i32); 4] = [
        (&["lock"], 0),
        (&["plan"], 0),
        (&["apply"], 0),
        (&["plan", "--detailed-exitcode"], 0),
    ];
    for (args, expected) in steps {
        let code = run(args);
        if code != expected {
            eprintln!("imagegen {} exited {code}", args.join(" "));
            std::process::exit(code);
        }
    }
    eprintln!(
        "\nThe demo fleet, its state and the mirror are in {}.",
        dir.display()
    );
    eprintln!(
        "Edit {} and run `imagegen --manifest {} plan` to see a change explained.",
        fleet.join("profiles").display(),
        fleet.join("imagegen.toml").display()
    );
}

fn copy_fleet(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("fleet dir");
    std::fs::copy(from.join("imagegen.toml"), to.join("imagegen.toml")).expect("copy manifest");
    for dir in ["profiles", "files"] {
        copy_tree(&from.join(dir), &to.join(dir));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).expect("link"), &target)
                .expect("symlink");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
