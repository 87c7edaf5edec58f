//! Why a build failed, read from its log: the Image Builder has no custom exit codes, so the
//! cause (unknown profile, unknown package, image too big, missing host tool) is only in the
//! text (reference §5.7). Pure: log text in, an [`Error`] with a clear cause and the tail out.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;

use serde_json::json;

use crate::error::{Error, ErrorCode};

/// How many trailing log lines an error carries.
const TAIL_LINES: usize = 30;
/// Longer lines are cut in the tail (a verbose recipe can print kilobytes on one line).
const MAX_LINE: usize = 400;

/// What the log says, gathered in one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LogFindings {
    pub tail: Vec<String>,
    pub unknown_profile: Option<String>,
    pub unknown_packages: Vec<String>,
    pub too_big: bool,
    pub prerequisite_failed: bool,
    /// A program the sandbox could not start (`bwrap: execvp make: No such file or directory`).
    pub sandbox_missing_program: Option<String>,
}

impl LogFindings {
    pub fn tail_text(&self) -> String {
        self.tail.join("\n")
    }
}

/// Reads a build log once, keeping the tail and every known failure marker.
pub(crate) fn scan_log(input: impl BufRead) -> LogFindings {
    let mut findings = LogFindings::default();
    let mut tail = VecDeque::with_capacity(TAIL_LINES + 1);
    for line in input.split(b'\n') {
        let Ok(bytes) = line else {
            break;
        };
        let line = String::from_utf8_lossy(&bytes);
        let line = line.trim_end_matches('\r');
        inspect_line(line, &mut findings);
        tail.push_back(cut(line));
        if tail.len() > TAIL_LINES {
            tail.pop_front();
        }
    }
    findings.tail = tail.into();
    findings
}

fn inspect_line(line: &str, findings: &mut LogFindings) {
    // Markers are matched with their surroundings (line starts, digits), so a command line
    // that merely mentions the text (make echoing a recipe) does not count.
    let trimmed = line.trim();
    if trimmed.starts_with("Profile \"")
        && let Some(profile) = between(trimmed, "Profile \"", "\" does not exist!")
    {
        findings
            .unknown_profile
            .get_or_insert_with(|| profile.to_string());
    }
    if let Some(package) = unknown_package(trimmed)
        && !findings
            .unknown_packages
            .iter()
            .any(|known| known == package)
    {
        findings.unknown_packages.push(package.to_string());
    }
    let too_big = line
        .split_once("is too big: ")
        .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()));
    if too_big || trimmed.ends_with("out of space?") {
        findings.too_big = true;
    }
    if trimmed.starts_with("Prerequisite check failed") {
        findings.prerequisite_failed = true;
    }
    if let Some(program) = between(trimmed, "bwrap: execvp ", ": ")
        && trimmed.starts_with("bwrap: execvp ")
    {
        findings
            .sandbox_missing_program
            .get_or_insert_with(|| program.to_string());
    }
}

/// opkg: ` * opkg_install_cmd: Cannot install package <name>.`;
/// apk: `  <name> (no such package):`.
fn unknown_package(trimmed: &str) -> Option<&str> {
    let name = if trimmed.starts_with("* ") {
        let (_, rest) = trimmed.split_once("Cannot install package ")?;
        rest.trim_end_matches('.')
    } else {
        trimmed.strip_suffix(" (no such package):")?
    };
    let plain = !name.is_empty() && !name.contains(char::is_whitespace);
    plain.then_some(name)
}

/// How the make process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Code(i32),
    Signal(i32),
}

/// What the classification needs besides the log.
pub(crate) struct FailureContext<'a> {
    /// `<target>/<subtarget>`.
    pub target: &'a str,
    pub profile: &'a str,
    pub log_path: &'a Path,
    /// Contents of the slot's `tmp/.prereq-error`, when the prerequisite check wrote one.
    pub prerequisite_error: Option<String>,
    /// The build ran in the sandbox, which shows only the host's system directories.
    pub sandboxed: bool,
}

/// What a missing host tool means inside the sandbox.
const SANDBOX_TOOLS_HINT: &str = "the build sandbox sees only the host's /usr, /bin, /sbin, \
     /lib*, /etc, /opt and /nix: install the Image Builder's host tools system-wide (not under \
     /home or /root)";

/// The error for a `make image` that exited non-zero.
pub(crate) fn failed_build(
    findings: &LogFindings,
    ending: Ending,
    context: &FailureContext,
) -> Error {
    let error = if let Some(program) = &findings.sandbox_missing_program {
        Error::new(
            ErrorCode::ImagebuilderError,
            format!("host tool missing inside the build sandbox: `{program}`"),
        )
        .with_help(SANDBOX_TOOLS_HINT)
    } else if findings.prerequisite_failed {
        prerequisite_error(context)
    } else if let Some(profile) = &findings.unknown_profile {
        Error::new(
            ErrorCode::ImagebuilderError,
            format!("Image Builder has no profile `{profile}`"),
        )
        .with_help(format!(
            "check `imagebuilder_profile`: `make info` in the Image Builder lists the profiles of {}",
            context.target
        ))
    } else if !findings.unknown_packages.is_empty() {
        unknown_packages_error(&findings.unknown_packages, context.target)
    } else if findings.too_big {
        too_big_error()
    } else {
        let message = match ending {
            Ending::Code(code) => format!("`make image` failed with exit status {code}"),
            Ending::Signal(signal) => format!("`make image` was killed by signal {signal}"),
        };
        Error::new(ErrorCode::BuildFailed, message)
            .with_help("the log tail shows the Image Builder's last words")
    };
    with_log(error, findings, ending, context.log_path)
}

/// The error for a build that exited 0 but left an image out (the Image Builder deletes an
/// image that exceeds the device's flash size and carries on).
pub(crate) fn missing_image(findings: &LogFindings, context: &FailureContext, why: &str) -> Error {
    let error = if findings.too_big {
        too_big_error()
    } else {
        Error::new(
            ErrorCode::BuildFailed,
            format!(
                "the Image Builder produced no image for `{}`: {why}",
                context.profile
            ),
        )
        .with_help(
            "an image that is too big for the device is dropped without an error; see the log",
        )
    };
    with_log(error, findings, Ending::Code(0), context.log_path)
}

/// Attaches the log path and tail (and how make ended) to an error.
pub(crate) fn with_log(
    error: Error,
    findings: &LogFindings,
    ending: Ending,
    log_path: &Path,
) -> Error {
    let mut details = json!({ "log_tail": findings.tail_text() });
    match ending {
        Ending::Code(code) => details["exit_status"] = json!(code),
        Ending::Signal(signal) => details["signal"] = json!(signal),
    }
    if !error.details.is_null() {
        details["cause"] = error.details.clone();
    }
    error.with_log(log_path).with_details(details)
}

fn too_big_error() -> Error {
    Error::new(ErrorCode::BuildFailed, "image too big for the device").with_help(
        "remove packages or overlay files, or raise `rootfs_partsize` on targets with a rootfs partition",
    )
}

fn unknown_packages_error(packages: &[String], target: &str) -> Error {
    let message = match packages {
        [one] => format!("package `{one}` does not exist for {target}"),
        many => {
            let names: Vec<String> = many.iter().map(|name| format!("`{name}`")).collect();
            format!("packages {} do not exist for {target}", names.join(", "))
        }
    };
    Error::new(ErrorCode::BuildFailed, message)
        .with_help(
            "check the profile's `packages`; the release's feeds for this target do not offer it",
        )
        .with_details(json!({ "unknown_packages": packages }))
}

fn prerequisite_error(context: &FailureContext) -> Error {
    let reported = context
        .prerequisite_error
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty());
    let mut help = match reported {
        Some(text) => format!("the Image Builder's prerequisite check says:\n{text}"),
        None => "install the Image Builder's host tools (GNU make, gawk, perl, python3, ...); \
                 the log names the failed check"
            .to_string(),
    };
    if context.sandboxed {
        help = format!("{help}\n{SANDBOX_TOOLS_HINT}");
    }
    Error::new(
        ErrorCode::ImagebuilderError,
        "host tool missing for the Image Builder",
    )
    .with_help(help)
    .with_details(json!({ "prerequisite_error": reported }))
}

fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = line.split_once(start)?;
    let (inner, _) = rest.split_once(end)?;
    Some(inner)
}

fn cut(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_string();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> FailureContext<'static> {
        FailureContext {
            target: "ath79/generic",
            profile: "tplink_archer-c7-v2",
            log_path: Path::new("/logs/build.log"),
            prerequisite_error: None,
            sandboxed: true,
        }
    }

    #[test]
    fn a_program_missing_in_the_sandbox() {
        let error = classify("make image\nbwrap: execvp make: No such file or directory\n");
        assert_eq!(error.code, ErrorCode::ImagebuilderError);
        assert_eq!(
            error.message,
            "host tool missing inside the build sandbox: `make`"
        );
    }

    fn classify(log: &str) -> Error {
        failed_build(&scan_log(log.as_bytes()), Ending::Code(2), &context())
    }

    #[test]
    fn unknown_profile() {
        let error = classify(
            "Profile \"archer\" does not exist!\n\
             Use \"make info\" to get a list of available profile names.\n\
             make: *** [Makefile:312: _check_profile] Error 1\n",
        );
        assert_eq!(error.code, ErrorCode::ImagebuilderError);
        assert_eq!(error.message, "Image Builder has no profile `archer`");
        assert!(error.help.is_some());
        assert_eq!(
            error.log_path.as_deref(),
            Some(Path::new("/logs/build.log"))
        );
        assert_eq!(error.details["exit_status"], 2);
        assert!(
            error.details["log_tail"]
                .as_str()
                .unwrap()
                .ends_with("Error 1")
        );
    }

    #[test]
    fn unknown_package_opkg_and_apk() {
        let opkg = classify(
            "Collected errors:\n * opkg_install_cmd: Cannot install package collectd-nope.\n",
        );
        assert_eq!(opkg.code, ErrorCode::BuildFailed);
        assert_eq!(
            opkg.message,
            "package `collectd-nope` does not exist for ath79/generic"
        );
        let apk = classify(
            "ERROR: unable to select packages:\n  foo (no such package):\n    required by: world[foo]\n  bar (no such package):\n",
        );
        assert_eq!(
            apk.message,
            "packages `foo`, `bar` do not exist for ath79/generic"
        );
    }

    #[test]
    fn too_big_and_out_of_space() {
        let error =
            classify("    WARNING: Image file /x/sysupgrade.bin is too big: 9000000 > 8000000\n");
        assert_eq!(error.message, "image too big for the device");
        let error = classify("make_ext4fs: failed to allocate block, out of space?\n");
        assert_eq!(error.message, "image too big for the device");
        let echoed = classify("echo \"WARNING: Image file $@ is too big: $$size > $$limit\"\n");
        assert_ne!(echoed.message, "image too big for the device");
        let error = classify("    WARNING: Image file x is too big: 2 > 1\n");
        assert_eq!(error.message, "image too big for the device");
    }

    #[test]
    fn prerequisite_failure_points_at_the_check() {
        let findings = scan_log("Prerequisite check failed. Use FORCE=1 to override.\n".as_bytes());
        let mut context = context();
        context.prerequisite_error = Some("Build dependency: Please install GNU 'awk'\n".into());
        let error = failed_build(&findings, Ending::Code(2), &context);
        assert_eq!(error.code, ErrorCode::ImagebuilderError);
        assert_eq!(error.message, "host tool missing for the Image Builder");
        assert!(error.help.unwrap().contains("Please install GNU 'awk'"));
    }

    #[test]
    fn anything_else_keeps_the_tail() {
        let mut log = String::new();
        for number in 0..100 {
            log.push_str(&format!("line {number}\n"));
        }
        let error = failed_build(&scan_log(log.as_bytes()), Ending::Signal(9), &context());
        assert_eq!(error.message, "`make image` was killed by signal 9");
        let tail = error.details["log_tail"].as_str().unwrap();
        assert_eq!(tail.lines().count(), 30);
        assert!(tail.starts_with("line 70") && tail.ends_with("line 99"));
    }

    #[test]
    fn missing_image_without_warning_names_the_profile() {
        let findings = scan_log("Calculating checksums...\n".as_bytes());
        let error = missing_image(&findings, &context(), "it is not in `profiles.json`");
        assert_eq!(error.code, ErrorCode::BuildFailed);
        assert_eq!(
            error.message,
            "the Image Builder produced no image for `tplink_archer-c7-v2`: it is not in `profiles.json`"
        );
    }
}
