//! Every input kept under `corpus/<target>/` (seeds, and what the fuzzer found worth
//! keeping) runs through its target's harness, under the same allocation bound, without
//! a fuzzer: a regression of any decoder or handler fails here, wherever `cargo test`
//! runs.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn every_corpus_input_runs_clean() {
    let mut total = 0;
    for (name, _) in rask_fuzz::TARGETS {
        let files = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(
            !files.is_empty(),
            "no seeds for {name}: run the capture example"
        );
        for f in &files {
            let data = std::fs::read(f).unwrap();
            rask_fuzz::alloc::label(&f.display().to_string());
            let outcome = std::panic::catch_unwind(|| rask_fuzz::run(name, &data));
            if outcome.is_err() {
                panic!("{name}: {} fails", f.display());
            }
        }
        println!("{name}: {} inputs", files.len());
        total += files.len();
    }
    println!("{total} corpus inputs replayed");
}

/// Inputs of defects found by fuzzing and not fixed yet (in code this crate's targets
/// may not change), kept under `crashes/<target>/` with the harness that shows them:
/// each must still fail. One that passes is fixed: move it to `corpus/<target>/`.
/// None now: the last one (a receiving arena mapping what a peer announced) is fixed and
/// its input replays from `corpus/frame_reader/`.
const KNOWN: &[(&str, rask_fuzz::Harness)] = &[];

#[test]
fn every_known_defect_still_shows() {
    for (name, harness) in KNOWN {
        for f in inputs(&fuzz_dir().join("crashes").join(name)) {
            let data = std::fs::read(&f).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(
                outcome.is_err(),
                "{name}: {} passes now: the defect is fixed; move the input to corpus/{name}/",
                f.display()
            );
            println!("{name}: {} still fails (known)", f.display());
        }
    }
}
