use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn home() -> BTreeMap<String, String> {
    env(&[("HOME", "/home/op")])
}

fn file() -> FileSettings {
    let mut file = FileSettings {
        path: PathBuf::from("/fleet/imagegen.toml"),
        ..FileSettings::default()
    };
    file.values.insert("jobs", Value::Number(3));
    file.values
        .insert("mirror", Value::Text("file:///srv/mirror".to_string()));
    file
}

fn problem_messages(error: &crate::Error) -> Vec<String> {
    error
        .problems
        .iter()
        .map(|problem| problem.to_string())
        .collect()
}

#[test]
fn defaults_follow_home() {
    let settings = resolve(&FlagSettings::default(), &home(), None).unwrap();
    assert_eq!(
        settings.db.value,
        Path::new("/home/op/.local/share/openwrt-imagegen/state.redb")
    );
    assert_eq!(
        settings.artifacts_dir.value,
        Path::new("/home/op/.local/share/openwrt-imagegen/artifacts")
    );
    assert_eq!(
        settings.cache_dir.value,
        Path::new("/home/op/.cache/openwrt-imagegen/builders")
    );
    let uid = crate::fsutil::effective_uid();
    assert_eq!(
        settings.tmp_dir.value,
        Path::new(&format!("/tmp/openwrt-imagegen-{uid}"))
    );
    assert!(!settings.offline.value);
    assert_eq!(settings.log_level.value, "info");
    assert_eq!(settings.mirror.value, "https://downloads.openwrt.org");
    assert_eq!((settings.jobs.value, settings.download_jobs.value), (2, 2));
    assert!(settings.trusted_keys.value.is_empty());
    assert!(settings.verify_signatures.value);
    assert_eq!(settings.build_timeout.value, 3600);
    assert!(
        settings
            .entries()
            .iter()
            .all(|entry| entry.origin == "default")
    );
}

#[test]
fn defaults_honour_xdg_and_tmpdir() {
    let env = env(&[
        ("XDG_DATA_HOME", "/data"),
        ("XDG_CACHE_HOME", "/cache"),
        ("TMPDIR", "/scratch"),
    ]);
    let settings = resolve(&FlagSettings::default(), &env, None).unwrap();
    assert_eq!(
        settings.db.value,
        Path::new("/data/openwrt-imagegen/state.redb")
    );
    assert_eq!(
        settings.artifacts_dir.value,
        Path::new("/data/openwrt-imagegen/artifacts")
    );
    assert_eq!(
        settings.cache_dir.value,
        Path::new("/cache/openwrt-imagegen/builders")
    );
    assert_eq!(
        settings.tmp_dir.value,
        Path::new(&format!(
            "/scratch/openwrt-imagegen-{}",
            crate::fsutil::effective_uid()
        ))
    );
}

#[test]
fn relative_xdg_is_ignored() {
    let env = env(&[("XDG_DATA_HOME", "data"), ("HOME", "/home/op")]);
    let settings = resolve(&FlagSettings::default(), &env, None).unwrap();
    assert_eq!(
        settings.db.value,
        Path::new("/home/op/.local/share/openwrt-imagegen/state.redb")
    );
}

#[test]
fn missing_home_is_an_error_with_a_hint() {
    let error = resolve(&FlagSettings::default(), &BTreeMap::new(), None).unwrap_err();
    assert_eq!(error.code, ErrorCode::Precondition);
    assert!(error.problems[0].message.contains("`HOME` is not set"));
    assert!(
        error.problems[0]
            .help
            .as_deref()
            .unwrap_or("")
            .contains("OWRT_IMG_DB_URL")
    );
}

#[test]
fn missing_home_is_fine_when_every_path_is_given() {
    let env = env(&[
        ("OWRT_IMG_DB_URL", "/s/state.redb"),
        ("OWRT_IMG_ARTIFACTS_DIR", "/s/artifacts"),
        ("OWRT_IMG_CACHE_DIR", "/s/cache"),
    ]);
    assert!(resolve(&FlagSettings::default(), &env, None).is_ok());
}

#[test]
fn file_wins_over_default() {
    let settings = resolve(&FlagSettings::default(), &home(), Some(&file())).unwrap();
    assert_eq!(settings.jobs.value, 3);
    assert_eq!(
        settings.jobs.origin,
        Origin::File(PathBuf::from("/fleet/imagegen.toml"))
    );
    assert_eq!(settings.mirror.value, "file:///srv/mirror");
    assert_eq!(settings.download_jobs.origin, Origin::Default);
}

#[test]
fn env_wins_over_file() {
    let env = env(&[("HOME", "/home/op"), ("OWRT_IMG_JOBS", "5")]);
    let settings = resolve(&FlagSettings::default(), &env, Some(&file())).unwrap();
    assert_eq!(settings.jobs.value, 5);
    assert_eq!(settings.jobs.origin, Origin::Env(env_vars::OWRT_IMG_JOBS));
}

#[test]
fn flag_wins_over_env() {
    let env = env(&[("HOME", "/home/op"), ("OWRT_IMG_JOBS", "5")]);
    let flags = FlagSettings::default().with("jobs", "7");
    let settings = resolve(&flags, &env, Some(&file())).unwrap();
    assert_eq!(settings.jobs.value, 7);
    assert_eq!(settings.jobs.origin, Origin::Flag);
}

#[test]
fn a_flag_overrides_a_malformed_env_value() {
    let env = env(&[("HOME", "/home/op"), ("OWRT_IMG_JOBS", "abc")]);
    let flags = FlagSettings::default().with("jobs", "7");
    assert_eq!(resolve(&flags, &env, None).unwrap().jobs.value, 7);
}

#[test]
fn empty_env_value_counts_as_unset() {
    let env = env(&[("HOME", "/home/op"), ("OWRT_IMG_JOBS", "")]);
    let settings = resolve(&FlagSettings::default(), &env, Some(&file())).unwrap();
    assert_eq!(settings.jobs.value, 3);
}

#[test]
fn an_invalid_boolean_names_the_variable() {
    let env = env(&[("HOME", "/h"), ("OWRT_IMG_OFFLINE", "maybe")]);
    let error = resolve(&FlagSettings::default(), &env, None).unwrap_err();
    assert_eq!(error.code, ErrorCode::Validation);
    assert_eq!(
        problem_messages(&error),
        [
            "`OWRT_IMG_OFFLINE=maybe` is not valid: expected one of 1, 0, true, false, yes, no, on, off"
        ]
    );
}

#[test]
fn every_invalid_env_value_is_reported() {
    let env = env(&[
        ("HOME", "/h"),
        ("OWRT_IMG_JOBS", "abc"),
        ("OWRT_IMG_DOWNLOAD_JOBS", "0"),
        ("OWRT_IMG_LOG_LEVEL", "loud"),
        ("OWRT_IMG_MIRROR", "ftp://example.org"),
        ("OWRT_IMG_BUILD_TIMEOUT", "-1"),
        ("OWRT_IMG_DB_URL", "sqlite:///x.db"),
    ]);
    let error = resolve(&FlagSettings::default(), &env, None).unwrap_err();
    assert_eq!(error.message, "invalid settings: 6 problems");
    assert_eq!(
        problem_messages(&error),
        [
            "`OWRT_IMG_DB_URL=sqlite:///x.db` is not valid: expected a path, redb://PATH or file://PATH",
            "`OWRT_IMG_LOG_LEVEL=loud` is not valid: expected one of error, warn, info, debug, trace",
            "`OWRT_IMG_MIRROR=ftp://example.org` is not valid: expected an http://, https:// or file:/// URL (file:// needs an absolute path)",
            "`OWRT_IMG_JOBS=abc` is not valid: expected a whole number from 1 to 256",
            "`OWRT_IMG_DOWNLOAD_JOBS=0` is not valid: expected a whole number from 1 to 256",
            "`OWRT_IMG_BUILD_TIMEOUT=-1` is not valid: expected a whole number from 1 to 86400",
        ]
    );
}

#[test]
fn invalid_flag_and_file_values_are_reported() {
    let flags = FlagSettings::default().with("jobs", "0");
    let mut file = file();
    file.values
        .insert("log_level", Value::Text("loud".to_string()));
    let error = resolve(&flags, &home(), Some(&file)).unwrap_err();
    assert_eq!(
        problem_messages(&error),
        [
            "/fleet/imagegen.toml: `log_level = \"loud\"` is not valid: expected one of error, warn, info, debug, trace",
            "`--jobs 0` is not valid: expected a whole number from 1 to 256",
        ]
    );
}

#[test]
fn env_values_are_normalised() {
    let env = env(&[
        ("HOME", "/h"),
        ("OWRT_IMG_TRUSTED_KEYS", "/k/a.pub::/k/b.pub"),
        ("OWRT_IMG_LOG_LEVEL", "DEBUG"),
        ("OWRT_IMG_MIRROR", "https://mirror.example/openwrt/"),
    ]);
    let settings = resolve(&FlagSettings::default(), &env, None).unwrap();
    assert_eq!(
        settings.trusted_keys.value,
        [PathBuf::from("/k/a.pub"), PathBuf::from("/k/b.pub")]
    );
    assert_eq!(settings.log_level.value, "debug");
    assert_eq!(settings.mirror.value, "https://mirror.example/openwrt");
}

#[test]
fn entries_name_their_origin() {
    let env = env(&[("HOME", "/h"), ("OWRT_IMG_OFFLINE", "yes")]);
    let flags = FlagSettings::default().with("jobs", "4");
    let settings = resolve(&flags, &env, Some(&file())).unwrap();
    let entries = settings.entries();
    let origin = |name: &str| {
        entries
            .iter()
            .find(|entry| entry.name == name)
            .map(|entry| entry.origin.clone())
    };
    assert_eq!(origin("jobs").as_deref(), Some("flag --jobs"));
    assert_eq!(origin("offline").as_deref(), Some("env OWRT_IMG_OFFLINE"));
    assert_eq!(
        origin("mirror").as_deref(),
        Some("file /fleet/imagegen.toml")
    );
    assert_eq!(origin("db").as_deref(), Some("default"));
    let names: Vec<&str> = entries.iter().map(|entry| entry.env).collect();
    assert_eq!(names, env_vars::ALL);
    let json = serde_json::to_value(&entries[4]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"name": "offline", "value": true, "origin": "env OWRT_IMG_OFFLINE", "env": "OWRT_IMG_OFFLINE"})
    );
}

#[test]
fn origin_serializes_tagged() {
    let origin = Origin::Env(env_vars::OWRT_IMG_JOBS);
    assert_eq!(
        serde_json::to_value(&origin).unwrap(),
        serde_json::json!({"kind": "env", "name": "OWRT_IMG_JOBS"})
    );
    assert_eq!(
        serde_json::to_value(Origin::Default).unwrap(),
        serde_json::json!({"kind": "default"})
    );
}

#[test]
fn every_layer_applies_the_same_checks() {
    // The environment, a flag and the file all refuse 300 jobs and a relative file:// mirror.
    let env = env(&[
        ("HOME", "/h"),
        ("OWRT_IMG_JOBS", "300"),
        ("OWRT_IMG_MIRROR", "file://srv"),
    ]);
    let from_env = resolve(&FlagSettings::default(), &env, None).unwrap_err();
    let flags = FlagSettings::default()
        .with("jobs", "300")
        .with("mirror", "file://srv");
    let from_flags = resolve(&flags, &home(), None).unwrap_err();
    let mut file = file();
    file.values.insert("jobs", Value::Number(300));
    file.values
        .insert("mirror", Value::Text("file://srv".to_string()));
    let from_file = resolve(&FlagSettings::default(), &home(), Some(&file)).unwrap_err();
    for error in [from_env, from_flags, from_file] {
        assert_eq!(error.problems.len(), 2, "{:?}", problem_messages(&error));
    }
}

#[test]
fn the_table_names_each_setting_once() {
    let mut names: Vec<&str> = TABLE.iter().map(|def| def.name).collect();
    let mut flags: Vec<&str> = TABLE.iter().map(|def| def.flag).collect();
    let total = names.len();
    names.sort();
    names.dedup();
    flags.sort();
    flags.dedup();
    assert_eq!((names.len(), flags.len()), (total, total));
}
