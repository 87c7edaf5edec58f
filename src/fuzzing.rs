//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer) and of the test that
//! replays their corpora with stable Rust (`tests/it/fuzz_corpus.rs`). Each takes arbitrary
//! bytes and must return without panicking, hanging or allocating without bound. A property
//! that must hold is an `assert!` here, so that a violation is a crash the fuzzer reports.
//! Not part of the stable API.

use std::sync::Arc;

use crate::error::{Error, Problem};
use crate::imagebuilder::unpack::{self, ArchiveLimits};
use crate::imagebuilder::{checksums, usign};
use crate::lock::LockFile;
use crate::manifest::{check_manifest_text, parse_profile};
use crate::source::{self, Format, Node, SourceFile, Spanned};

/// A target's function: arbitrary bytes in, nothing out; a failure panics.
pub type Target = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` file and the
/// `fuzz/corpus/<name>/` directory) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("profile_yaml", profile_yaml),
    ("profile_json", profile_json),
    ("profile_toml", profile_toml),
    ("manifest", manifest),
    ("lock", lock),
    ("sha256sums", sha256sums),
    ("usign", usign_files),
    ("tar", tar),
    ("feed_index", feed_index),
];

pub fn profile_yaml(data: &[u8]) {
    profile(data, Format::Yaml);
}

pub fn profile_json(data: &[u8]) {
    profile(data, Format::Json);
}

pub fn profile_toml(data: &[u8]) {
    profile(data, Format::Toml);
}

/// Parses a profile; checks every span of the tree and renders the problems.
fn profile(data: &[u8], format: Format) {
    let Some(source) = source_of(data, format.extension()) else {
        return;
    };
    if let Ok(tree) = source::parse(&source, format) {
        check_spans(&source, &tree, 0);
    }
    if let Err(problems) = parse_profile(&source, format) {
        render(problems);
    }
}

/// `imagegen.toml` text alone (its profiles are not read).
pub fn manifest(data: &[u8]) {
    let Some(source) = source_of(data, "toml") else {
        return;
    };
    let problems = check_manifest_text(&source, std::path::Path::new("/nonexistent-fleet"));
    render(problems);
}

/// `imagegen.lock`: what parses must write back to text that parses to the same lock.
pub fn lock(data: &[u8]) {
    let Some(source) = source_of(data, "lock") else {
        return;
    };
    match LockFile::parse(&source) {
        Ok(lock) => {
            let text = lock.to_text();
            let again = source_of(text.as_bytes(), "lock").map(|source| LockFile::parse(&source));
            match again {
                Some(Ok(again)) => assert_eq!(again, lock, "the lock file does not round-trip"),
                _ => panic!("the lock file imagegen writes does not parse:\n{text}"),
            }
        }
        Err(problems) => render(problems),
    }
}

/// A target directory's `sha256sums`.
pub fn sha256sums(data: &[u8]) {
    let Ok(entries) = checksums::parse(data) else {
        return;
    };
    let _ = checksums::find_imagebuilder(&entries);
    if let Some(first) = entries.first() {
        assert_eq!(
            checksums::lookup(&entries, &first.path),
            Some(first.sha256.as_str())
        );
    }
}

/// usign public key, signature and secret key files; a key that parses round-trips.
pub fn usign_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = usign::PublicKey::parse(&text) {
        assert_eq!(usign::PublicKey::parse(&key.to_file_text()).ok(), Some(key));
    }
    if let Ok(signature) = usign::Signature::parse(&text) {
        assert_eq!(
            usign::Signature::parse(&signature.to_file_text()).ok(),
            Some(signature)
        );
    }
    let _ = usign::SecretKey::parse(&text);
    let _ = usign::Keyring::official().verify(data, &text);
}

/// Bytes as a tar stream into the safe unpacker, in a fresh temp dir, under small caps.
pub fn tar(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let limits = ArchiveLimits {
        max_download_bytes: 16 * 1024 * 1024,
        max_unpacked_bytes: 16 * 1024 * 1024,
        max_entries: 10_000,
        max_file_bytes: 8 * 1024 * 1024,
    };
    let result = unpack::extract(data, dir.path(), "top", &limits);
    if result.is_ok() {
        assert!(dir.path().join("top").is_dir());
    }
    // Nothing may appear next to the top directory.
    if let Ok(entries) = std::fs::read_dir(dir.path()) {
        for entry in entries.flatten() {
            assert_eq!(
                entry.file_name(),
                "top",
                "an entry escaped the top directory"
            );
        }
    }
}

fn source_of(data: &[u8], extension: &str) -> Option<Arc<SourceFile>> {
    let text = std::str::from_utf8(data).ok()?;
    Some(Arc::new(SourceFile::new(
        format!("fuzz.{extension}").into(),
        format!("fuzz.{extension}"),
        text.to_string(),
    )))
}

/// Every span lies inside the text, on character boundaries; the tree is no deeper than
/// the parsers allow.
fn check_spans(source: &SourceFile, node: &Spanned<Node>, depth: usize) {
    let text = source.text();
    let span = &node.span;
    assert!(
        span.start <= span.end && span.end <= text.len(),
        "span {span:?}"
    );
    assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
    assert!(
        depth <= 2 * source::MAX_DEPTH + 2,
        "tree deeper than the limit"
    );
    match &node.value {
        Node::Sequence(items) => {
            for item in items {
                check_spans(source, item, depth + 1);
            }
        }
        Node::Mapping(entries) => {
            for (key, value) in entries {
                assert!(key.span.end <= text.len(), "key span {:?}", key.span);
                check_spans(source, value, depth + 1);
            }
        }
        _ => {}
    }
}

/// Renders problems as the terminal would; every location must point into its file.
fn render(problems: Vec<Problem>) {
    for problem in &problems {
        if let Some(location) = &problem.location
            && let Some(source) = &location.source
        {
            assert!(location.span.end <= source.text().len());
            assert!(location.line >= 1 && location.column >= 1);
        }
    }
    let error = Error::from_problems("fuzz", problems);
    let _ = crate::cli::report::render_error(&error, false);
}

/// A feed index (opkg `Packages`, as a mirror serves it), parsed and resolved against
/// itself: the first names it lists are requested, the last one removed. Whatever the
/// index says (cycles, self-conflicts, missing fields), the resolution ends, installs each
/// package once and sums its sizes.
pub fn feed_index(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let names = crate::feeds::names_in(&text);
    let additions: Vec<String> = names.iter().take(8).cloned().collect();
    let removals: Vec<String> = names.last().cloned().into_iter().collect();
    let defaults = vec!["base-files".to_string(), "libc".to_string()];
    let feeds = crate::feeds::feeds_from_text(&[("openwrt_base", &text), ("openwrt_core", "")]);
    let check = feeds.check(
        &crate::feeds::PackageList {
            defaults: &defaults,
            device: &[],
            additions: &additions,
            removals: &removals,
        },
        None,
    );
    let installed = &check.packages.packages;
    let mut seen = std::collections::HashSet::new();
    for package in installed {
        assert!(
            seen.insert(&package.name),
            "`{}` installed twice",
            package.name
        );
    }
    let sum: u64 = installed
        .iter()
        .map(|package| package.installed_size)
        .fold(0, u64::saturating_add);
    assert_eq!(check.packages.installed_size, sum);
    for failure in &check.failures {
        let _ = crate::feeds::prepare::describe(failure);
    }
}
