//! Replays the committed corpus and past crashes of the `agent_config` fuzz target
//! (fuzz/corpus/agent_config, fuzz/regressions/agent_config) through the same check the
//! target runs (fuzz/src/agent_checks.rs, included here), on the stable toolchain.

#[path = "../../fuzz/src/agent_checks.rs"]
mod agent_checks;

use std::path::Path;

#[test]
fn agent_config_corpus_and_past_crashes_pass_their_check() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (target, check) in agent_checks::TARGETS {
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| check(&bytes)).is_err() {
                    panic!("fuzz input {} fails its check", path.display());
                }
                n += 1;
            }
        }
        assert!(n > 0, "fuzz/corpus/{target} is missing or empty");
    }
}
