//! Replays the saved fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own bodies
//! (`fuzz/src/lib.rs`), on stable, so CI catches a decoder that regressed on an input the fuzzer
//! once found interesting. The coverage-guided runs themselves need nightly: see README,
//! "Fuzzing".

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::path::Path;

#[test]
fn every_saved_input_of_every_target_is_handled_without_a_panic() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut counts = Vec::new();
    for target in targets::TARGETS {
        let dir = corpus.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus for {target} in {}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "the corpus of {target} is empty");
        for input in &inputs {
            let data = std::fs::read(input).expect("read a corpus input");
            targets::run(target, &data);
        }
        counts.push(format!("{target}: {}", inputs.len()));
    }
    println!("replayed {}", counts.join(", "));
}
