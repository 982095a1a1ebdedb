//! Untrusted files and Hub answers never crash `ldl`: the fuzz targets' bodies
//! (tests/fuzz/src/lib.rs) replayed on stable Rust over
//! - the seeds (tests/fuzz/seeds/TARGET/*), which must be accepted: they are real files
//!   and answers;
//! - the inputs in tests/fuzz/regressions/TARGET/NAME (any a fuzzing run found to crash,
//!   and hand-made hostile files: a decompression bomb, a pickle, forged headers, Hub
//!   answers whose ETag, commit or listed file names lead out of the cache), which
//!   must be refused with a message containing the text of NAME.expect;
//! - seeded mutations of the seeds (bit flips, byte changes, truncations, splices), which
//!   may be accepted or refused but never panic.
//!
//! `cargo fuzz run --fuzz-dir tests/fuzz TARGET` explores far more; see docs/reliability.md.

#[path = "fuzz/src/lib.rs"]
mod fuzz_targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Target = fn(&[u8]) -> fuzz_targets::Outcome;

const TARGETS: [(&str, Target); 6] = [
    ("config", fuzz_targets::config),
    ("manifest", fuzz_targets::manifest),
    ("image", fuzz_targets::image),
    ("checkpoint", fuzz_targets::checkpoint),
    ("hub_response", fuzz_targets::hub_response),
    ("parquet", fuzz_targets::parquet),
];

/// Mutations per seed file: enough to reach the parsers' error paths in a few seconds.
const MUTATIONS_PER_SEED: usize = 60;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "expect"))
        .collect();
    files.sort();
    files
}

fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(kind)
        .join(target)
}

/// Runs a target, turning a panic into a test failure that names the input.
fn run(target: Target, data: &[u8], what: &str) -> fuzz_targets::Outcome {
    match catch_unwind(AssertUnwindSafe(|| target(data))) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what}: panicked: {message}");
        }
    }
}

#[test]
fn every_seed_is_a_valid_file_and_is_accepted() {
    for (name, target) in TARGETS {
        let seeds = files(&fuzz_dir("seeds", name));
        assert!(!seeds.is_empty(), "no seeds for the {name} target");
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap();
            let what = format!("{name} seed {}", seed.display());
            if let Err(message) = run(target, &data, &what) {
                panic!("{what} was refused: {message}");
            }
        }
    }
    fuzz_targets::remove_scratch();
}

#[test]
fn inputs_that_once_crashed_are_refused_with_a_clear_message() {
    for (name, target) in TARGETS {
        for input in files(&fuzz_dir("regressions", name)) {
            let data = std::fs::read(&input).unwrap();
            let what = format!("{name} regression {}", input.display());
            let expect_path = PathBuf::from(format!("{}.expect", input.display()));
            let expected = std::fs::read_to_string(&expect_path)
                .unwrap_or_else(|_| panic!("{what}: {} is missing", expect_path.display()));
            match run(target, &data, &what) {
                Ok(accepted) => panic!("{what} was accepted ({accepted})"),
                Err(message) => assert!(
                    message.contains(expected.trim()),
                    "{what}: the message `{message}` lacks `{}`",
                    expected.trim()
                ),
            }
        }
    }
    fuzz_targets::remove_scratch();
}

#[test]
fn mutated_seeds_never_panic() {
    for (name, target) in TARGETS {
        let seeds: Vec<Vec<u8>> = files(&fuzz_dir("seeds", name))
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(name.len() as u64);
        let mut refused = 0;
        for (index, seed) in seeds.iter().enumerate() {
            for round in 0..MUTATIONS_PER_SEED {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let data = mutate(seed, other, &mut rng);
                let what = format!(
                    "{name} seed {index} mutation {round} ({} bytes)",
                    data.len()
                );
                if let Err(message) = run(target, &data, &what) {
                    assert!(!message.trim().is_empty(), "{what}: an empty message");
                    refused += 1;
                }
            }
        }
        // The mutations must reach the error paths, or this test checks nothing.
        assert!(refused > 0, "{name}: every mutation was accepted");
    }
    fuzz_targets::remove_scratch();
}

/// One random change of the kinds that break parsers: flipped bits, bytes set to
/// boundary values, a cut, a duplicated or deleted range, or a splice with another seed.
fn mutate(seed: &[u8], other: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    if data.is_empty() {
        return other.to_vec();
    }
    for _ in 0..rng.gen_range(1..=4) {
        let len = data.len().max(1);
        let at = rng.gen_range(0..len).min(data.len().saturating_sub(1));
        match rng.gen_range(0..6) {
            0 => data[at] ^= 1 << rng.gen_range(0..8),
            1 => data[at] = [0, 0x7f, 0x80, 0xff, b'9', b'-'][rng.gen_range(0..6)],
            2 => data.truncate(at),
            3 => {
                let end = (at + rng.gen_range(1..64)).min(data.len());
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
            4 => {
                let end = (at + rng.gen_range(1..64)).min(data.len());
                data.drain(at..end);
            }
            _ => {
                let from = rng.gen_range(0..other.len().max(1)).min(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
        }
        if data.is_empty() {
            break;
        }
    }
    data
}
