//! One `make image` in a prepared slot: map the build inputs onto the Image Builder's make
//! variables, apply the filesystem policy to the slot's `.config`, stage a private overlay
//! when a provenance file is added, run make supervised (in the sandbox unless the mode says
//! otherwise: `launch`, `sandbox`), remove what the overlay left in the slot, and turn the
//! result into artifacts or a classified error. Never touches the pristine tree or anything
//! outside the slot, the output directory and the log; reads what the build wrote as hostile.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::BufReader;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::artifacts::{BuiltArtifact, collect_artifacts, missing_images};
use super::config::apply_filesystem_policy;
use super::failure::{
    Ending, FailureContext, LogFindings, failed_build, missing_image, scan_log, with_log,
};
use super::fsops::read_build_file;
use super::launch::{make_command, run_logged};
use super::process::{Finish, describe};
use super::sandbox::{SandboxMode, SandboxReport, choose};
use super::slot::{claim_slot, mark_verified, private_files_dir, scrub_after_build, verify_slot};
use crate::error::{Error, ErrorCode, Result};
use crate::key::BuildInputs;

/// Reads of files a build wrote are capped: `profiles.json` of the largest target is a few MB.
const BUILD_FILE_LIMIT: u64 = 64 << 20;

/// Where the provenance file lands inside the image.
pub const PROVENANCE_PATH: &str = "etc/imagegen/build.json";

/// Everything one build needs.
pub struct BuildRequest<'a> {
    pub inputs: &'a BuildInputs,
    pub build_key: &'a str,
    /// A slot made ready by [`super::prepare_slot`] for this build.
    pub slot_dir: &'a Path,
    /// The staged overlay (absolute), passed as `FILES=`. Only read.
    pub files_dir: Option<&'a Path>,
    /// When set, written to `/etc/imagegen/build.json` in the image (via a private copy of
    /// the overlay inside the slot, so the staged overlay stays untouched).
    pub provenance: Option<&'a Value>,
    /// The private, absolute `BIN_DIR`; created when missing, must be empty.
    pub output_dir: &'a Path,
    pub log_path: &'a Path,
    pub timeout: Duration,
    pub cancel: &'a AtomicBool,
    /// Whether `make image` runs in the sandbox (see [`SandboxMode`]).
    pub sandbox: SandboxMode,
    /// Local copies of the pinned feeds to install from (`None`: the Image Builder's own
    /// repository file is left alone, and it would need a network).
    pub feeds: Option<&'a crate::feeds::SlotFeeds>,
}

/// A successful build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub artifacts: Vec<BuiltArtifact>,
    pub profiles_json: Option<Value>,
    pub duration: Duration,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    /// Whether `make image` ran sandboxed, and why not.
    pub sandbox: SandboxReport,
}

/// Runs `make image` for one build in its slot and collects the outputs.
pub fn run_build(request: &BuildRequest) -> Result<BuildOutput> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let slot = fs::canonicalize(request.slot_dir)
        .map_err(|error| Error::io("opening the build slot", request.slot_dir, error))?;
    // Decided first: a build the sandbox mode refuses must not use up the slot.
    let isolation = choose(request.sandbox, std::env::var_os("PATH").as_deref())?;
    let sandbox = isolation.report(request.sandbox);
    prepare_output_dir(request.output_dir)?;
    claim_slot(&slot)?;
    let target = format!(
        "{}/{}",
        request.inputs.builder.triple.target, request.inputs.builder.triple.subtarget
    );
    if let Some(filesystem) = &request.inputs.options.filesystem {
        edit_config(&slot, filesystem, &target)?;
    }
    let files = stage_files(&slot, request.files_dir, request.provenance)?;
    if let Some(feeds) = request.feeds {
        let seen_as = match isolation {
            super::sandbox::Isolation::Sandboxed(_) => PathBuf::from(super::sandbox::SANDBOX_FEEDS),
            super::sandbox::Isolation::Unsandboxed { .. } => super::feeds::feeds_dir(&slot),
        };
        super::feeds::install(&slot, feeds, &seen_as)?;
    }
    let (command, arguments) = make_command(request, &slot, files.as_deref(), &isolation)?;
    let finish = run_logged(command, request, &slot, &arguments, &isolation)?;
    // Whatever happened, a write through a shared file must be reported first: it damaged
    // the pristine tree every other slot uses.
    verify_slot(&slot).map_err(|error| error.with_log(request.log_path))?;
    mark_verified(&slot)?;
    scrub_after_build(&slot)?;
    super::feeds::remove(&slot)?;
    let findings = read_log(request.log_path)?;
    let prerequisite_error = read_build_file(&slot, Path::new("tmp/.prereq-error"), 1 << 16)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let context = FailureContext {
        target: &target,
        profile: &request.inputs.imagebuilder_profile,
        log_path: request.log_path,
        prerequisite_error,
        sandboxed: sandbox.sandboxed,
    };
    let status = match finish {
        Finish::Exited(status) => status,
        Finish::TimedOut => {
            let message = format!("build timed out after {} s", request.timeout.as_secs());
            let error = Error::new(ErrorCode::BuildFailed, message)
                .with_help("raise the build timeout, or look at the log for a hung step");
            return Err(with_log(
                error,
                &findings,
                Ending::Signal(libc::SIGTERM),
                request.log_path,
            ));
        }
        Finish::Cancelled => {
            let error = Error::new(ErrorCode::Interrupted, "build interrupted");
            return Err(with_log(
                error,
                &findings,
                Ending::Signal(libc::SIGTERM),
                request.log_path,
            ));
        }
    };
    if !status.success() {
        return Err(failed_build(&findings, describe(status), &context));
    }
    let output = finished_output(request, &findings, &context)?;
    Ok(BuildOutput {
        duration: started.elapsed(),
        started_at,
        finished_at: now_rfc3339(),
        sandbox,
        ..output
    })
}

/// Checks a build that exited 0: the image must be there (the Image Builder drops an image
/// that is too big and still exits 0), then hashes and classifies the outputs.
fn finished_output(
    request: &BuildRequest,
    findings: &LogFindings,
    context: &FailureContext,
) -> Result<BuildOutput> {
    let unreadable = |error: &dyn std::fmt::Display| {
        Error::new(
            ErrorCode::ImagebuilderError,
            format!("the build wrote an unreadable `profiles.json`: {error}"),
        )
        .with_log(request.log_path)
    };
    let profiles_json: Option<Value> = match read_build_file(
        request.output_dir,
        Path::new("profiles.json"),
        BUILD_FILE_LIMIT,
    )
    .map_err(|error| unreadable(&error))?
    {
        Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|error| unreadable(&error))?),
        None => None,
    };
    let profile = &request.inputs.imagebuilder_profile;
    let filesystem = request.inputs.options.filesystem.as_deref();
    if findings.too_big {
        return Err(missing_image(
            findings,
            context,
            "the log reports an image too big",
        ));
    }
    if let Some(why) = missing_images(profiles_json.as_ref(), profile, filesystem) {
        return Err(missing_image(findings, context, &why));
    }
    let artifacts = collect_artifacts(request.output_dir, profile, profiles_json.as_ref())
        .map_err(|error| error.with_log(request.log_path))?;
    Ok(BuildOutput {
        artifacts,
        profiles_json,
        duration: Duration::ZERO,
        started_at: String::new(),
        finished_at: String::new(),
        sandbox: SandboxReport {
            mode: request.sandbox,
            sandboxed: false,
            reason: None,
        },
    })
}

/// The `make` arguments for a build: `image` and one `NAME=value` per option in use.
pub fn make_arguments(
    inputs: &BuildInputs,
    files: Option<&Path>,
    output_dir: &Path,
) -> Result<Vec<OsString>> {
    let options = &inputs.options;
    let mut variables: Vec<(&str, String)> = vec![
        ("PROFILE", inputs.imagebuilder_profile.clone()),
        ("PACKAGES", inputs.make_packages()),
    ];
    if let Some(files) = files {
        variables.push(("FILES", absolute_text("FILES", files)?));
    }
    variables.push(("BIN_DIR", absolute_text("BIN_DIR", output_dir)?));
    if let Some(name) = options
        .extra_image_name
        .as_ref()
        .filter(|name| !name.is_empty())
    {
        variables.push(("EXTRA_IMAGE_NAME", name.clone()));
    }
    if !options.disabled_services.is_empty() {
        variables.push(("DISABLED_SERVICES", options.disabled_services.join(" ")));
    }
    if let Some(size) = options.rootfs_partsize {
        variables.push(("ROOTFS_PARTSIZE", size.to_string()));
    }
    if options.add_local_key {
        variables.push(("ADD_LOCAL_KEY", "1".to_string()));
    }
    let mut arguments = vec![OsString::from("image")];
    for (name, value) in variables {
        check_make_value(name, &value)?;
        arguments.push(OsString::from(format!("{name}={value}")));
    }
    Ok(arguments)
}

/// Refuses values that make or the recipes' shell would interpret, with the same rules
/// `validate` applies (`manifest::names`): defence in depth for inputs that did not come
/// through a validated profile.
fn check_make_value(name: &str, value: &str) -> Result<()> {
    match crate::manifest::names::make_variable_problem(name, value) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorCode::Validation,
            format!(
                "`{name}` value `{}`: {problem}",
                crate::error::printable(value)
            ),
        )),
    }
}

fn absolute_text(name: &str, path: &Path) -> Result<String> {
    if !path.is_absolute() {
        return Err(Error::internal(format!(
            "`{name}` must be absolute, got `{}`",
            path.display()
        )));
    }
    path.to_str().map(str::to_string).ok_or_else(|| {
        Error::new(
            ErrorCode::Validation,
            format!("`{name}` path `{}` is not UTF-8", path.display()),
        )
    })
}

/// Applies the filesystem policy to the slot's private `.config` (replaced by rename, so a
/// shared inode would be left alone even if the copy list were wrong).
fn edit_config(slot: &Path, filesystem: &str, target: &str) -> Result<()> {
    let path = slot.join(".config");
    let text = fs::read_to_string(&path).map_err(|error| Error::io("reading", &path, error))?;
    let edited = apply_filesystem_policy(&text, filesystem, target)?;
    let temp = slot.join(".config.imagegen-tmp");
    fs::write(&temp, edited).map_err(|error| Error::io("writing", &temp, error))?;
    fs::rename(&temp, &path).map_err(|error| Error::io("writing", &path, error))
}

/// The directory to pass as `FILES=`: the staged overlay itself, or a private copy with the
/// provenance file added.
fn stage_files(
    slot: &Path,
    files_dir: Option<&Path>,
    provenance: Option<&Value>,
) -> Result<Option<PathBuf>> {
    if let Some(files) = files_dir.filter(|files| !files.is_dir()) {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!(
                "the staged overlay `{}` is not a directory",
                files.display()
            ),
        ));
    }
    let Some(provenance) = provenance else {
        return Ok(files_dir.map(Path::to_path_buf));
    };
    let private = private_files_dir(slot);
    super::slot::remove_tree(&private)?;
    match files_dir {
        Some(files) => copy_tree(files, &private)?,
        None => make_dir(&private, 0o755)?,
    }
    let target = private.join(PROVENANCE_PATH);
    for dir in [private.join("etc"), private.join("etc/imagegen")] {
        if !dir.is_dir() {
            make_dir(&dir, 0o755)?;
        }
    }
    let mut text = serde_json::to_vec_pretty(provenance)
        .map_err(|error| Error::internal(format!("serializing provenance: {error}")))?;
    text.push(b'\n');
    let _ = fs::remove_file(&target);
    fs::write(&target, text).map_err(|error| Error::io("writing", &target, error))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644))
        .map_err(|error| Error::io("setting permissions of", &target, error))?;
    Ok(Some(private))
}

/// Copies an overlay tree keeping modes and symlinks (the Image Builder copies it with
/// `cp -fpR`, so modes reach the image).
fn copy_tree(source: &Path, target: &Path) -> Result<()> {
    let metadata =
        fs::symlink_metadata(source).map_err(|error| Error::io("reading", source, error))?;
    make_dir(target, 0o700)?;
    for entry in fs::read_dir(source).map_err(|error| Error::io("listing", source, error))? {
        let entry = entry.map_err(|error| Error::io("listing", source, error))?;
        let (from, to) = (entry.path(), target.join(entry.file_name()));
        let kind = entry
            .file_type()
            .map_err(|error| Error::io("reading", &from, error))?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&from).map_err(|error| Error::io("reading", &from, error))?;
            std::os::unix::fs::symlink(link, &to)
                .map_err(|error| Error::io("creating", &to, error))?;
        } else if kind.is_file() {
            fs::copy(&from, &to).map_err(|error| Error::io("copying", &from, error))?;
        }
    }
    fs::set_permissions(target, metadata.permissions())
        .map_err(|error| Error::io("setting permissions of", target, error))
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|error| Error::io("creating", path, error))
}

fn prepare_output_dir(output_dir: &Path) -> Result<()> {
    if !output_dir.is_absolute() {
        return Err(Error::internal(format!(
            "the output directory `{}` must be absolute",
            output_dir.display()
        )));
    }
    fs::create_dir_all(output_dir).map_err(|error| Error::io("creating", output_dir, error))?;
    let mut entries =
        fs::read_dir(output_dir).map_err(|error| Error::io("listing", output_dir, error))?;
    if entries.next().is_some() {
        return Err(Error::internal(format!(
            "the output directory `{}` is not empty; every build needs a fresh one",
            output_dir.display()
        )));
    }
    Ok(())
}

fn read_log(path: &Path) -> Result<LogFindings> {
    let file = File::open(path).map_err(|error| Error::io("reading", path, error))?;
    Ok(scan_log(BufReader::new(file)))
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{BuilderPin, ImageOptions, OverlayInputs};

    fn inputs(options: ImageOptions) -> BuildInputs {
        BuildInputs {
            schema: 1,
            builder: BuilderPin {
                triple: crate::triple::Triple::new("23.05.4", "x86", "64"),
                archive_sha256: Some("ab".repeat(32)),
                version_code: None,
            },
            imagebuilder_profile: "generic".into(),
            packages: vec!["collectd".into(), "luci".into()],
            packages_remove: vec!["dnsmasq".into()],
            overlay: OverlayInputs::default(),
            options,
            feeds: Vec::new(),
        }
    }

    fn text(arguments: Vec<OsString>) -> Vec<String> {
        arguments
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn every_option_maps_to_its_variable() {
        let options = ImageOptions {
            extra_image_name: Some("fleet-a".into()),
            disabled_services: vec!["dnsmasq".into(), "odhcpd".into()],
            rootfs_partsize: Some(512),
            add_local_key: true,
            filesystem: Some("ext4".into()),
            provenance: true,
            initramfs: None,
        };
        let arguments = make_arguments(
            &inputs(options),
            Some(Path::new("/s/files")),
            Path::new("/out"),
        )
        .unwrap();
        assert_eq!(
            text(arguments),
            [
                "image",
                "PROFILE=generic",
                "PACKAGES=collectd luci -dnsmasq",
                "FILES=/s/files",
                "BIN_DIR=/out",
                "EXTRA_IMAGE_NAME=fleet-a",
                "DISABLED_SERVICES=dnsmasq odhcpd",
                "ROOTFS_PARTSIZE=512",
                "ADD_LOCAL_KEY=1",
            ]
        );
    }

    #[test]
    fn defaults_pass_only_the_essentials() {
        let arguments =
            make_arguments(&inputs(ImageOptions::default()), None, Path::new("/out")).unwrap();
        assert_eq!(
            text(arguments),
            [
                "image",
                "PROFILE=generic",
                "PACKAGES=collectd luci -dnsmasq",
                "BIN_DIR=/out"
            ]
        );
    }

    #[test]
    fn values_make_would_expand_are_refused() {
        let mut bad = inputs(ImageOptions::default());
        bad.packages = vec!["$(shell touch /tmp/x)".into()];
        let mut local = inputs(ImageOptions::default());
        local.packages = vec!["/srv/x.ipk".into()];
        assert!(make_arguments(&local, None, Path::new("/out")).is_err());
        let error = make_arguments(&bad, None, Path::new("/out")).unwrap_err();
        assert_eq!(error.code, ErrorCode::Validation);
        let mut spaced = inputs(ImageOptions::default());
        spaced.imagebuilder_profile = "a b".into();
        assert!(make_arguments(&spaced, None, Path::new("/out")).is_err());
        assert!(make_arguments(&inputs(ImageOptions::default()), None, Path::new("out")).is_err());
    }
}
