//! Crashes and full disks, against the real `ldl` command: a run killed with SIGKILL at
//! several moments (a checkpoint write among them) resumes to the weights of an
//! uninterrupted run, and a write that fails part-way (a file-size limit) stops the run
//! with a message naming the file and the cause, keeping the last good checkpoint.
#![cfg(unix)]

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;

const BDIMS: &str = include_str!("../../../configs/bdims.toml");

/// A folder with the bdims task config, where runs are written under `runs/LABEL`.
struct Task {
    dir: tempfile::TempDir,
    hidden: &'static str,
    epochs: usize,
}

impl Task {
    fn new(hidden: &'static str, epochs: usize) -> Task {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("task.toml"), BDIMS).unwrap();
        Task {
            dir,
            hidden,
            epochs,
        }
    }

    /// `ldl train task.toml` into `runs/LABEL` (the run folder is `runs/LABEL/bdims-1`).
    fn train(&self, label: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ldl"));
        command
            .current_dir(self.dir.path())
            .args(["train", "task.toml", "--quiet"])
            .args(["--set", &format!("optim.epochs={}", self.epochs)])
            .args(["--set", &format!("model.hidden={}", self.hidden)])
            .args(["--set", &format!("run.output_dir=\"runs/{label}\"")]);
        command
    }

    /// `ldl train --resume` of the run under `runs/LABEL`.
    fn resume(&self, label: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ldl"));
        command
            .current_dir(self.dir.path())
            .args(["train", "--quiet", "--resume"])
            .arg(self.run_dir(label))
            .args(extra);
        command
    }

    fn run_dir(&self, label: &str) -> PathBuf {
        self.dir.path().join("runs").join(label).join("bdims-1")
    }
}

fn succeed(command: &mut Command) -> Output {
    let out = command.output().expect("run ldl");
    assert!(
        out.status.success(),
        "ldl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every tensor of a checkpoint, as bits.
fn tensors(path: &Path) -> HashMap<String, Vec<u32>> {
    let (tensors, _) = ldl_models::read_checkpoint(path, &Device::Cpu).unwrap();
    tensors
        .into_iter()
        .map(|(name, t)| {
            let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (name, values.iter().map(|v| v.to_bits()).collect())
        })
        .collect()
}

/// `metrics.jsonl` without its timings, which differ between runs.
fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            let record = value.as_object_mut().unwrap();
            record.remove("train_seconds");
            record.remove("samples_per_second");
            value
        })
        .collect()
}

/// The same epochs in `metrics.jsonl` with the same values (the epochs shown on failure,
/// not the whole records).
fn assert_same_metrics(run_dir: &Path, expected: &Path) {
    let (ours, theirs) = (metrics(run_dir), metrics(expected));
    let epochs = |records: &[serde_json::Value]| -> Vec<u64> {
        records
            .iter()
            .map(|r| r["epoch"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(epochs(&ours), epochs(&theirs));
    assert!(
        ours == theirs,
        "the metrics differ from the uninterrupted run's"
    );
}

fn metrics_lines(run_dir: &Path) -> usize {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .map(|text| text.matches('\n').count())
        .unwrap_or(0)
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

fn has_name(dir: &Path, wanted: impl Fn(&str) -> bool) -> bool {
    walk(dir)
        .iter()
        .any(|p| p.file_name().is_some_and(|n| wanted(&n.to_string_lossy())))
}

/// The epoch `state.json` names.
fn committed(run_dir: &Path) -> usize {
    let text = std::fs::read_to_string(run_dir.join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["epoch"].as_u64().unwrap() as usize
}

/// The staging folders `checkpoints/staged-N` present, with their epochs.
fn staged(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    std::fs::read_dir(run_dir.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let epoch = name.strip_prefix("staged-")?.parse().ok()?;
            Some((epoch, entry.path()))
        })
        .collect()
}

/// Polls until `moment` holds, then kills the child with SIGKILL. Panics if the run ends
/// first: the moment must be hit, or the test shows nothing.
fn kill_when(child: &mut Child, what: &str, moment: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if moment() {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: {status}");
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before the moment `{what}`");
        }
        assert!(Instant::now() < deadline, "`{what}` never happened");
        std::thread::yield_now();
    }
}

fn spawn(command: &mut Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Killed (SIGKILL) at four moments, each resumed: after the first metrics line, while a
/// checkpoint's temporary file exists, while an epoch's staging folder exists, and right
/// after an epoch's metrics line (before its commit). The finished run's checkpoints and
/// metrics equal an uninterrupted run's, bit for bit (same seed, CPU).
#[test]
fn a_run_killed_at_any_moment_resumes_to_the_uninterrupted_result() {
    // Wide enough that a checkpoint takes a moment to write (about 0.2 MB, moments 0.4 MB).
    let task = Task::new("[128, 128]", 12);
    succeed(&mut task.train("straight"));
    let straight = task.run_dir("straight");

    let run = task.run_dir("killed");
    let mut child = spawn(&mut task.train("killed"));
    kill_when(&mut child, "a metrics line", || metrics_lines(&run) >= 1);

    // Leftovers of the last kill are cleaned up by the resume; only an epoch it stages
    // after its first (K ≥ C + 2) shows a write of the resumed run.
    let after = committed(&run) + 2;
    let mut child = spawn(&mut task.resume("killed", &[]));
    kill_when(&mut child, "a checkpoint write", || {
        staged(&run)
            .iter()
            .any(|(epoch, dir)| *epoch >= after && has_name(dir, |n| n.ends_with(".partial")))
    });

    let after = committed(&run) + 2;
    let mut child = spawn(&mut task.resume("killed", &[]));
    kill_when(&mut child, "an epoch being staged", || {
        staged(&run).iter().any(|(epoch, _)| *epoch >= after)
    });

    let lines = metrics_lines(&run);
    let mut child = spawn(&mut task.resume("killed", &[]));
    kill_when(&mut child, "a metrics line before its commit", || {
        metrics_lines(&run) > lines
    });

    succeed(&mut task.resume("killed", &[]));
    for name in ["last", "best", "optimizer"] {
        let file = format!("checkpoints/{name}.safetensors");
        if name == "optimizer" {
            // Not an ldl checkpoint (no model header): compare the bytes.
            assert_eq!(
                std::fs::read(run.join(&file)).unwrap(),
                std::fs::read(straight.join(&file)).unwrap(),
                "{file}"
            );
        } else {
            assert_eq!(
                tensors(&run.join(&file)),
                tensors(&straight.join(&file)),
                "{file}"
            );
        }
    }
    // One line per epoch, none repeated by a resume, each as the uninterrupted run's.
    assert_same_metrics(&run, &straight);
    assert_eq!(metrics(&run).len(), 12);
    assert!(!has_name(&run, |n| n.ends_with(".partial")
        || n.starts_with("staged-")));
}

/// A resume started while the run still trains is refused, naming the training process,
/// and leaves the run untouched; once that process is gone (killed, so the lock is
/// released by the OS, not by the run) a resume trains on, and every epoch is in
/// `metrics.jsonl` once.
#[test]
fn a_run_folder_trains_in_one_process_at_a_time() {
    // Far more epochs than the test waits for: the run is still training when refused.
    let task = Task::new("[64, 64]", 100_000);
    let run = task.run_dir("locked");
    let mut child = spawn(&mut task.train("locked"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.join("state.json").is_file() || committed(&run) < 1 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(Instant::now() < deadline, "no epoch was committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Bounded, so that without the lock it would end (and succeed) instead of hanging.
    let epochs = format!("optim.epochs={}", committed(&run) + 1);
    let out = task.resume("locked", &["--set", &epochs]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a second process trained: {err}");
    let holder = format!("another ldl process (pid {}) is training", child.id());
    assert!(err.contains(&holder), "{err}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the refusal stopped the run"
    );
    kill_when(&mut child, "the refusal", || true);

    let epochs = format!("optim.epochs={}", committed(&run) + 2);
    succeed(&mut task.resume("locked", &["--set", &epochs]));
    let numbers: Vec<u64> = metrics(&run)
        .iter()
        .map(|record| record["epoch"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected);
    assert_eq!(numbers.len(), committed(&run));
}

/// The limit on file sizes for a child process (RLIMIT_FSIZE), with SIGXFSZ ignored so
/// that a write past it fails with EFBIG ("File too large") instead of killing it.
fn with_file_size_limit(command: &mut Command, bytes: u64) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit) are
    // made, touching no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Two epochs saved, then a resume under a file-size limit of half a checkpoint: writing
/// epoch 3's checkpoint fails part-way. The message names the file and the cause and says
/// how to go on; no temporary or half file is left; epoch 2 still loads and is what
/// `state.json` names; and a resume without the limit finishes with an uninterrupted
/// run's weights.
#[test]
fn a_write_that_fails_part_way_keeps_the_last_good_checkpoint() {
    let task = Task::new("[32]", 4);
    succeed(&mut task.train("straight"));
    succeed(task.train("full").args(["--set", "optim.epochs=2"]));
    let run = task.run_dir("full");
    let last = run.join("checkpoints/last.safetensors");
    let epoch_2 = tensors(&last);
    let size = std::fs::metadata(&last).unwrap().len();
    assert!(
        (metrics_lines(&run) as u64) * 4096 < size / 2,
        "the limit must let the small files through"
    );

    let out = with_file_size_limit(
        &mut task.resume("full", &["--set", "optim.epochs=4"]),
        size / 2,
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for part in [
        "last.safetensors",
        "File too large",
        "keeping epoch 2",
        "ldl train --resume",
    ] {
        assert!(stderr.contains(part), "`{part}` missing from: {stderr}");
    }
    assert!(
        !has_name(&run, |n| n.ends_with(".partial")
            || n.starts_with("staged-")),
        "{:?}",
        walk(&run)
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["epoch"], 2);
    assert_eq!(metrics_lines(&run), 2);
    // The library loads the kept checkpoint, and it holds epoch 2's weights.
    ldl_models::Model::from_checkpoint(&last, &Device::Cpu).unwrap();
    assert_eq!(tensors(&last), epoch_2);

    succeed(&mut task.resume("full", &[]));
    assert_eq!(
        tensors(&last),
        tensors(
            &task
                .run_dir("straight")
                .join("checkpoints/last.safetensors")
        )
    );
    assert_same_metrics(&run, &task.run_dir("straight"));
}

/// `--resume` refuses, in one line, a folder that is not a run, a run without a saved
/// epoch and a damaged `state.json`.
#[test]
fn resume_refuses_a_folder_it_cannot_continue() {
    let task = Task::new("[8]", 1);
    let refused = |label: &str| {
        let out = task.resume(label, &[]).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused("nothing");
    assert!(err.contains("cannot resume: no such folder"), "{err}");

    let run = task.run_dir("empty");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.toml"), BDIMS).unwrap();
    let err = refused("empty");
    assert!(
        err.contains("no state.json") && err.contains("start the run again"),
        "{err}"
    );

    std::fs::write(run.join("state.json"), "{\"epoch\": ").unwrap();
    let err = refused("empty");
    assert!(err.contains("state.json is not a valid run state"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Well-formed, but naming an epoch that the run never saved (the largest there is,
    // which once overflowed the first epoch to train).
    succeed(&mut task.train("trained"));
    std::fs::write(
        task.run_dir("trained").join("state.json"),
        format!(
            "{{\"epoch\": {}, \"adam_steps\": 0, \"best\": null, \"since_improvement\": 0}}",
            u64::MAX
        ),
    )
    .unwrap();
    let err = refused("trained");
    assert!(
        err.contains("cannot resume: state.json names epoch") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The run's `summary.json`, parsed.
fn summary(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

/// A run that early stopping ended, killed after its last commit but before its
/// `summary.json` (the file removed stands for the kill): the resume trains no further
/// epoch, and ends where the uninterrupted run ended.
#[test]
fn an_early_stopped_run_killed_before_its_summary_trains_no_further() {
    let task = Task::new("[32]", 30);
    succeed(task.train("stopped").args(["--set", "run.patience=1"]));
    let run = task.run_dir("stopped");
    let finished = summary(&run);
    let epochs = finished["epochs"].as_u64().unwrap() as usize;
    assert!(
        epochs < 30,
        "early stopping must end the run (it ran {epochs})"
    );
    let lines = metrics(&run);
    let last = tensors(&run.join("checkpoints/last.safetensors"));

    std::fs::remove_file(run.join("summary.json")).unwrap();
    succeed(&mut task.resume("stopped", &[]));
    let resumed = summary(&run);
    assert_eq!(resumed["epochs"], finished["epochs"]);
    assert_eq!(resumed["best_epoch"], finished["best_epoch"]);
    assert_eq!(committed(&run), epochs);
    assert!(metrics(&run) == lines, "the resume trained again");
    assert_eq!(tensors(&run.join("checkpoints/last.safetensors")), last);
}

/// A resume refused because an override does not fit the saved checkpoints leaves the
/// run folder as it was: its `config.toml` is unchanged, and a resume without the bad
/// override continues.
#[test]
fn a_refused_resume_leaves_the_run_folder_resumable() {
    let task = Task::new("[32]", 2);
    succeed(&mut task.train("run"));
    let run = task.run_dir("run");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let out = task
        .resume(
            "run",
            &["--set", "model.hidden=[16]", "--set", "optim.epochs=3"],
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("last.safetensors"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        config
    );
    succeed(&mut task.resume("run", &["--set", "optim.epochs=3"]));
    assert_eq!(committed(&run), 3);
}

/// A finished run resumed to train longer has no `summary.json` until it finishes again:
/// killed on the way, its old summary (of fewer epochs) must not claim that the run
/// with the new `config.toml` finished.
#[test]
fn a_run_resumed_to_train_longer_is_unfinished_until_it_ends() {
    let task = Task::new("[128, 128]", 2);
    succeed(&mut task.train("run"));
    let run = task.run_dir("run");
    assert!(run.join("summary.json").is_file());
    let mut child = spawn(&mut task.resume("run", &["--set", "optim.epochs=40"]));
    kill_when(&mut child, "an epoch after the old end", || {
        std::fs::read_to_string(run.join("state.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|state| state["epoch"].as_u64().is_some_and(|e| e >= 3))
    });
    assert!(
        !run.join("summary.json").exists(),
        "a summary.json of {} epochs is left in a run of {} committed epochs",
        summary(&run)["epochs"],
        committed(&run)
    );
    succeed(&mut task.resume("run", &[]));
    assert_eq!(summary(&run)["epochs"], 40);
}

/// A failure after the commit (installing the staged files) names the epoch that
/// `state.json` now holds, the one a resume continues from, not the one before it.
#[test]
fn a_failure_after_the_commit_names_the_committed_epoch() {
    let task = Task::new("[32]", 1);
    succeed(&mut task.train("run"));
    let run = task.run_dir("run");
    // `best.safetensors` as a folder that is not empty: renaming the staged one over it
    // fails (epoch 2 improves on epoch 1's loss, so it stages a best; monitored per
    // axis, an epoch that improves some axes would read the installed best first).
    let best = run.join("checkpoints/best.safetensors");
    std::fs::remove_file(&best).unwrap();
    std::fs::create_dir(&best).unwrap();
    std::fs::write(best.join("in-the-way"), "").unwrap();
    let out = task
        .resume(
            "run",
            &["--set", "optim.epochs=2", "--set", "run.monitor=\"loss\""],
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(committed(&run), 2, "{stderr}");
    assert!(stderr.contains("keeping epoch 2"), "{stderr}");
}
