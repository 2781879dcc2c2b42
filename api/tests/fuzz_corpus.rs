//! Replays every committed fuzz corpus file (fuzz/corpus/<target>/) and every past crash
//! (fuzz/regressions/<target>/) through the same checks the fuzz targets run
//! (fuzz/src/checks.rs, included here), so CI catches a regression on the stable
//! toolchain without libFuzzer.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `check` on every file under `dir/<target>`; the number of files run.
fn replay(dir: &Path, target: &str, check: checks::Check) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        // A panic names the file, so it can be handed to `cargo fuzz run` as it is.
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            panic!("fuzz input {} fails its check", path.display());
        }
        n += 1;
    }
    n
}

#[test]
fn every_corpus_file_and_past_crash_passes_its_check() {
    let fuzz = fuzz_dir();
    for (target, check) in checks::TARGETS {
        let corpus = replay(&fuzz.join("corpus"), target, *check);
        assert!(corpus > 0, "fuzz/corpus/{target} is missing or empty");
        replay(&fuzz.join("regressions"), target, *check);
    }
}

/// A corpus directory without a check would silently never be replayed.
#[test]
fn every_corpus_directory_has_a_check() {
    for dir in ["corpus", "regressions"] {
        for entry in std::fs::read_dir(fuzz_dir().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            // agent_config is replayed by agent/tests/fuzz_corpus.rs.
            let known = checks::TARGETS.iter().any(|(t, _)| *t == name) || name == "agent_config";
            assert!(
                known,
                "fuzz/{dir}/{name} has no check in fuzz/src/checks.rs"
            );
        }
    }
}
