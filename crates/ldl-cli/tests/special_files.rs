//! Paths that name something other than a regular file (a device that never ends, a FIFO
//! with no writer, a folder, a symlink loop) or a file too large for what it is, given to
//! the real `ldl` command as a config, a table, an image and a checkpoint. Each is refused
//! at once with a message naming the path and what it is. Before these checks, `/dev/zero`
//! filled the memory and a FIFO blocked forever, so every command here runs under a
//! deadline and a memory ceiling, and is killed and failed past either.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BDIMS: &str = include_str!("../../../configs/bdims.toml");
const QUICKSTART: &str = include_str!("../../../configs/quickstart.toml");

/// Far longer than a refusal takes (milliseconds), far shorter than a hang.
const DEADLINE: Duration = Duration::from_secs(30);
/// Far above what a refusal uses, far below what reading `/dev/zero` reaches.
const MAX_RESIDENT_BYTES: u64 = 2 << 30;

/// What `ldl` printed on stderr, and whether it succeeded.
struct Outcome {
    success: bool,
    stderr: String,
}

/// Runs `ldl ARGS` in `dir`, killing it past [`DEADLINE`] or [`MAX_RESIDENT_BYTES`].
fn ldl(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ldl"))
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ldl");
    let start = Instant::now();
    while child.try_wait().expect("wait for ldl").is_none() {
        let resident = resident_bytes(child.id());
        if start.elapsed() > DEADLINE || resident > MAX_RESIDENT_BYTES {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`ldl {}` was killed after {:.1?} holding {resident} bytes: it blocked or \
                 read without bound",
                args.join(" "),
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("read ldl's output");
    Outcome {
        success: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The resident memory of process `pid` (0 where /proc does not tell).
fn resident_bytes(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Asserts that `ldl ARGS` failed with a message naming `path` and holding `what`.
fn refused(dir: &Path, args: &[&str], path: &str, what: &str) {
    let out = ldl(dir, args, &[]);
    let command = args.join(" ");
    assert!(!out.success, "`ldl {command}` succeeded");
    assert!(
        out.stderr.contains(path) && out.stderr.contains(what),
        "`ldl {command}` should name {path} and say `{what}`, but printed: {}",
        out.stderr
    );
}

/// Special files named `NAME.EXT` in `dir`, each with what the message must say it is:
/// a link to `/dev/zero`, a FIFO (when `mkfifo` exists), a folder and a symlink loop.
fn specials(dir: &Path, ext: &str) -> Vec<(String, &'static str)> {
    let name = |stem: &str| format!("{stem}.{ext}");
    std::os::unix::fs::symlink("/dev/zero", dir.join(name("zero"))).unwrap();
    std::fs::create_dir(dir.join(name("folder"))).unwrap();
    std::os::unix::fs::symlink(name("loop"), dir.join(name("loop"))).unwrap();
    let mut found = vec![
        (name("zero"), "is a character device, not a regular file"),
        (name("folder"), "is a directory, not a file"),
        (name("loop"), "is a symlink loop"),
    ];
    let fifo = Command::new("mkfifo").arg(dir.join(name("fifo"))).status();
    if fifo.is_ok_and(|status| status.success()) {
        found.push((name("fifo"), "is a FIFO (named pipe), not a regular file"));
    } else {
        eprintln!("note: no mkfifo here; the FIFO cases are left out");
    }
    found
}

/// A folder holding `task.toml`, a copy of configs/bdims.toml.
fn bdims_task() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("task.toml"), BDIMS).unwrap();
    dir
}

/// Trains `config` (in `dir`) for one epoch with `overrides`; its best checkpoint.
fn train(dir: &Path, config: &str, name: &str, overrides: &[&str]) -> PathBuf {
    std::fs::write(dir.join(format!("{name}.toml")), config).unwrap();
    let config = format!("{name}.toml");
    let mut args = vec!["train", &config, "--quiet", "--set", "optim.epochs=1"];
    for set in overrides {
        args.extend(["--set", set]);
    }
    let out = ldl(dir, &args, &[]);
    assert!(out.success, "training failed: {}", out.stderr);
    let run = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(name))
        .unwrap();
    run.join("checkpoints/best.safetensors")
}

#[test]
fn a_special_file_as_a_config_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = specials(dir.path(), "toml");
    cases.push(("/dev/zero".into(), "is a character device"));
    cases.push(("/dev/urandom".into(), "is a character device"));
    for (path, what) in &cases {
        refused(dir.path(), &["train", path], path, what);
    }
}

#[test]
fn a_special_file_as_a_table_is_refused_at_once() {
    let dir = bdims_task();
    let checkpoint = train(dir.path(), BDIMS, "bdims", &["run.output_dir=\"runs\""]);
    let checkpoint = checkpoint.to_str().unwrap();
    for (path, what) in specials(dir.path(), "csv") {
        let source = format!("data.source=\"{path}\"");
        refused(
            dir.path(),
            &["train", "task.toml", "--set", &source],
            &path,
            what,
        );
        if !what.contains("directory") {
            // A folder given to `ldl predict` is a folder of images, not a table.
            refused(dir.path(), &["predict", checkpoint, &path], &path, what);
        }
    }
}

#[test]
fn a_special_file_as_an_image_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = [
        "run.output_dir=\"runs\"",
        "data.faces.count=60",
        "model.width=0.25",
    ];
    let checkpoint = train(dir.path(), QUICKSTART, "quickstart", &overrides);
    let checkpoint = checkpoint.to_str().unwrap();
    for (path, what) in specials(dir.path(), "png") {
        if what.contains("directory") {
            continue; // A folder given to `ldl predict` is read as a folder of images.
        }
        refused(dir.path(), &["predict", checkpoint, &path], &path, what);
    }
}

#[test]
fn a_special_file_as_a_checkpoint_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.csv"), "height\n170\n").unwrap();
    let mut cases = specials(dir.path(), "safetensors");
    cases.push(("/dev/zero".into(), "is a character device"));
    cases.push(("/dev/urandom".into(), "is a character device"));
    for (path, what) in &cases {
        refused(dir.path(), &["inspect", path], path, what);
        refused(dir.path(), &["predict", path, "rows.csv"], path, what);
    }
}

#[test]
fn files_over_their_kind_limit_are_refused_with_the_size_limit_and_fix() {
    let dir = bdims_task();
    // Sparse: no disk space is used, and nothing is read.
    let big = std::fs::File::create(dir.path().join("big.toml")).unwrap();
    big.set_len((16 << 20) + 1).unwrap();
    refused(
        dir.path(),
        &["train", "big.toml"],
        "big.toml",
        "is 16777217 bytes, more than a config may be (16 MiB); check that the path names \
         a config",
    );

    let checkpoint = train(dir.path(), BDIMS, "bdims", &["run.output_dir=\"runs\""]);
    let checkpoint = checkpoint.to_str().unwrap();
    let out = ldl(
        dir.path(),
        &["inspect", checkpoint],
        &[("LDL_MAX_CHECKPOINT_BYTES", "1000")],
    );
    assert!(!out.success);
    assert!(
        out.stderr.contains(checkpoint)
            && out.stderr.contains(
                "more than a checkpoint may be (1000 bytes); set LDL_MAX_CHECKPOINT_BYTES to \
                 a larger number of bytes to read it"
            ),
        "{}",
        out.stderr
    );

    std::fs::write(dir.path().join("rows.csv"), "height\n170\n".repeat(20)).unwrap();
    let out = ldl(
        dir.path(),
        &["predict", checkpoint, "rows.csv"],
        &[("LDL_MAX_TABLE_BYTES", "100")],
    );
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("rows.csv: is 220 bytes, more than a table may be (100 bytes)"),
        "{}",
        out.stderr
    );
    let out = ldl(
        dir.path(),
        &["predict", checkpoint, "rows.csv"],
        &[("LDL_MAX_TABLE_BYTES", "4 GiB")],
    );
    assert!(
        out.stderr
            .contains("LDL_MAX_TABLE_BYTES is `4 GiB`, not a number of bytes"),
        "{}",
        out.stderr
    );
}
