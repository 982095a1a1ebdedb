//! Tests that are their own MPI programs: a test launches `mpirun -np 2` on its own test
//! binary, naming one of its tests as the rank program, which does its work only when the
//! launcher's environment asks for it.

use std::path::Path;
use std::process::Command;

/// Runs this test binary's test `program` as two ranks (`mpirun -np 2`) with the
/// environment variable `name` set to `value` in both; panics with everything they
/// printed if either fails.
pub fn run_as_two_ranks(program: &str, name: &str, value: &Path) {
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(std::env::current_exe().unwrap())
        .args([program, "--exact", "--nocapture", "--test-threads", "1"])
        .env(name, value)
        .output()
        .expect("mpirun runs (Open MPI's openmpi-bin)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
