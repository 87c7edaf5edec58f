//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`, minimised with
//! `cargo fuzz cmin`, plus the regression inputs of crashes found) through the same
//! functions the libFuzzer targets call, with stable Rust: what the fuzzer once found stays
//! fixed, in CI, without a nightly toolchain.

use std::path::PathBuf;

use imagegen::fuzzing::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    crate::support::crate_root()
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_target_has_a_corpus_and_every_input_passes() {
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let dir = corpus_dir(target);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{target}: empty corpus");
        for input in inputs {
            let data = std::fs::read(&input).expect("read corpus input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", input.display());
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len());
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for (target, _) in TARGETS {
        let path = crate::support::crate_root()
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(text.contains("imagegen::fuzzing::"), "{}", path.display());
    }
}
