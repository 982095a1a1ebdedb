//! Reading a run folder back into typed values: the resolved `config.toml`, one
//! [`EpochRecord`] per line of `metrics.jsonl` and, once the run finished, the
//! [`RunSummary`] of `summary.json`.
//!
//! Plots, comparisons, the model card and the `ldl` command read runs only through
//! [`RunFolder`], so that a file that is missing or not as `ldl train` wrote it is
//! reported in one place, naming the file, the line and what to do, rather than a plot
//! quietly leaving a curve out. A folder is read as the commit protocol (`commit.rs`)
//! leaves it, finished or interrupted at any moment:
//!
//! 1. `config.toml` is written before the first epoch, so every run folder has one;
//! 2. `metrics.jsonl` gains one whole line per epoch, in one write. A last line without
//!    its line break is a write that a kill cut short: its epoch was never committed (a
//!    resume removes the line), so it is left out. Any other line that is not an epoch
//!    record is an error;
//! 3. `summary.json` is written last, so a folder without one holds a run that was
//!    interrupted, or is still training.

use std::path::{Path, PathBuf};

use ldl_core::files::{read_text, FileError, FileKind, FileProblem};

use crate::config::{CheckedConfig, Config};
use crate::error::{Error, Result};
use crate::records::{EpochRecord, RunSummary};

/// The run's config as it trained, relative data paths made absolute.
const CONFIG: &str = "config.toml";
/// One JSON line per epoch.
const METRICS: &str = "metrics.jsonl";
/// What the finished run reports.
const SUMMARY: &str = "summary.json";

/// What to do when a run folder's file is not as `ldl train` wrote it.
const DAMAGED: &str = "the file was changed or damaged outside ldl: restore it, or train \
                       the run again";

/// A run folder written by `ldl train`, to read from. Making one reads nothing; each
/// method reads its file when called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFolder {
    dir: PathBuf,
}

/// Everything a run folder records, read and checked.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run folder.
    pub dir: PathBuf,
    /// `config.toml`.
    pub config: CheckedConfig,
    /// The lines of `metrics.jsonl`, one per epoch trained (none before the first epoch
    /// finished).
    pub epochs: Vec<EpochRecord>,
    /// `summary.json`: `None` while the run is interrupted or still training.
    pub summary: Option<RunSummary>,
}

impl Run {
    /// The summary of a finished run, or an error that says how to finish it.
    pub fn finished(&self) -> Result<&RunSummary> {
        self.summary.as_ref().ok_or_else(|| Error::RunFolder {
            file: self.dir.join(SUMMARY).display().to_string(),
            line: None,
            problem: "missing: the run did not finish".into(),
            fix: format!(
                "finish it with `ldl train --resume {}`, or give a run that finished",
                self.dir.display()
            ),
        })
    }
}

impl RunFolder {
    /// The run folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> RunFolder {
        RunFolder { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder's own name (`bdims-1`), to tell runs apart in legends.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    /// Reads the config, every epoch record and the summary if there is one.
    pub fn read(&self) -> Result<Run> {
        Ok(Run {
            dir: self.dir.clone(),
            config: self.config(&[])?,
            epochs: self.epochs()?,
            summary: self.summary()?,
        })
    }

    /// The run's `config.toml`, with `--set` style `overrides` applied (as a resume
    /// applies them).
    pub fn config(&self, overrides: &[String]) -> Result<CheckedConfig> {
        let path = self.dir.join(CONFIG);
        if !path.is_file() {
            return Err(self.not_a_run(CONFIG));
        }
        Config::load_saved(&path, overrides)
    }

    /// The epoch records of `metrics.jsonl`, in order; none for a run folder whose first
    /// epoch has not finished.
    pub fn epochs(&self) -> Result<Vec<EpochRecord>> {
        let path = self.dir.join(METRICS);
        match read_text(&path, FileKind::RunRecord) {
            Ok(text) => parse_epochs(&path, &text),
            // A run folder gets its first line when its first epoch is committed.
            Err(e) if is_missing(&e) && self.dir.join(CONFIG).is_file() => Ok(Vec::new()),
            Err(e) if is_missing(&e) => Err(self.not_a_run(METRICS)),
            Err(e) => Err(unreadable(e)),
        }
    }

    /// `summary.json`: `None` while the run is interrupted or still training.
    pub fn summary(&self) -> Result<Option<RunSummary>> {
        let path = self.dir.join(SUMMARY);
        let text = match read_text(&path, FileKind::RunRecord) {
            Ok(text) => text,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::RunFolder {
                file: path.display().to_string(),
                line: Some(e.line()),
                problem: format!("{}, column {}", without_position(&e), e.column()),
                fix: DAMAGED.into(),
            })
    }

    /// A folder without `file`: not a run folder at all.
    fn not_a_run(&self, file: &str) -> Error {
        Error::RunFolder {
            file: self.dir.join(file).display().to_string(),
            line: None,
            problem: "missing, so this is not a run folder".into(),
            fix: "give a run folder written by `ldl train` (it prints its name: `run \
                  folder: …`)"
                .into(),
        }
    }
}

/// The whole lines of `metrics.jsonl` as epoch records (see the module on a torn last
/// line).
fn parse_epochs(path: &Path, text: &str) -> Result<Vec<EpochRecord>> {
    let mut records = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|e| Error::RunFolder {
            file: path.display().to_string(),
            line: Some(i + 1),
            problem: format!(
                "not an epoch record ({}, column {})",
                without_position(&e),
                e.column()
            ),
            fix: DAMAGED.into(),
        })?;
        records.push(record);
    }
    Ok(records)
}

/// A serde_json message without its ` at line L column C` tail, which the caller states
/// in the file's own terms.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rsplit_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => message,
    }
}

fn is_missing(error: &FileError) -> bool {
    matches!(error.problem, FileProblem::NotFound)
}

/// A record that is there but cannot be read: a permission, or something `ldl train`
/// does not write (a folder, a FIFO, a file far too large).
fn unreadable(error: FileError) -> Error {
    let fix = match error.problem {
        FileProblem::Io(_) => "check the folder's permissions",
        _ => DAMAGED,
    };
    Error::RunFolder {
        file: error.path.display().to_string(),
        line: None,
        problem: error.problem.to_string(),
        fix: fix.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of two axes, one categorical, as `ldl train` writes it.
    const CONFIG_TEXT: &str = r#"
[task]
name = "cat"

[[task.axes]]
name = "size"
unit = "cm"
min = 1
max = 9
step = 0.5

[[task.axes]]
name = "colour"
kind = "categorical"
classes = ["red", "green", "blue"]

[data]
source = "builtin:bdims"

[data.labels]
size = { value = "size" }
colour = { class = "colour" }
"#;

    /// Epoch 1's line of that run, byte for byte.
    const EPOCH_1: &str = r#"{"epoch":1,"lr":0.001,"train":{"total":3.0344919045766194,"parts":{"colour/ld":1.2986727184719509,"size/exp":0.7695675214131673,"size/ld":0.825123397509257,"size/smooth":0.14112823042604658}},"validation":{"loss":{"total":2.9266583760579428,"parts":{"colour/ld":1.2482470989227294,"size/exp":0.7764265974362691,"size/ld":0.8152498682339986,"size/smooth":0.08673480898141861}},"metrics":{"axes":[{"axis":"size","unit":"cm","samples":60,"mae":1.5376183082133006,"epsilon_error":0.5540194592334954,"cumulative_scores":[{"threshold":1.5,"share":0.5333333333333333},{"threshold":2.5,"share":0.8},{"threshold":4.0,"share":1.0}],"mean_predicted_std":2.327484810705793,"accuracy":null,"ldl":{"chebyshev":0.15353846365073487,"clark":2.982509898608067,"canberra":11.034742687805542,"kl_divergence":0.8152497810474347,"cosine":0.6226159184716362,"intersection":0.4652268580236361}},{"axis":"colour","unit":"","samples":60,"mae":null,"epsilon_error":null,"cumulative_scores":[],"mean_predicted_std":null,"accuracy":0.1,"ldl":{"chebyshev":0.7074626969430237,"clark":1.5185977912993474,"canberra":2.549990459258156,"kl_divergence":1.2482472054747078,"cosine":0.4918226483812075,"intersection":0.29253730305697634}}]}},"train_seconds":0.016227943,"samples_per_second":11091.978817031832,"skipped_batches":0}"#;

    /// Epoch 2's line: no validation on this epoch (`run.eval_every`).
    const EPOCH_2: &str = r#"{"epoch":2,"lr":0.0001,"train":{"total":2.9,"parts":{"colour/ld":1.25,"size/exp":0.75,"size/ld":0.8,"size/smooth":0.1}},"validation":null,"train_seconds":0.5,"samples_per_second":360.0,"skipped_batches":1}"#;

    fn folder(metrics: Option<&str>, summary: Option<&str>) -> (tempfile::TempDir, RunFolder) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG), CONFIG_TEXT).unwrap();
        if let Some(metrics) = metrics {
            std::fs::write(dir.path().join(METRICS), metrics).unwrap();
        }
        if let Some(summary) = summary {
            std::fs::write(dir.path().join(SUMMARY), summary).unwrap();
        }
        let folder = RunFolder::new(dir.path());
        (dir, folder)
    }

    /// The summary of a finished run of two epochs, as `summary.json` holds it.
    fn summary_text(dir: &Path) -> String {
        let epoch: EpochRecord = serde_json::from_str(EPOCH_1).unwrap();
        let summary = RunSummary {
            run_dir: dir.to_path_buf(),
            epochs: 2,
            best_epoch: 1,
            best_epochs: Default::default(),
            best_validation: epoch.validation.unwrap(),
            test: None,
            samples: [180, 60, 0],
            features: vec!["x".into()],
            skipped: vec!["rows.csv:7: no value".into()],
            skipped_batches: 1,
            parameters: 436,
            seconds: 1.25,
            mean_predictor: vec![crate::records::MeanPredictor {
                axis: "size".into(),
                value: 5.0,
                validation_mae: 1.633,
                test_mae: None,
            }],
            majority_class: Vec::new(),
            mean_distribution: Vec::new(),
            init: None,
            warnings: Vec::new(),
        };
        serde_json::to_string_pretty(&summary).unwrap()
    }

    #[test]
    fn a_finished_run_reads_back_as_written() {
        let metrics = format!("{EPOCH_1}\n{EPOCH_2}\n");
        let (dir, folder) = folder(Some(&metrics), None);
        let summary = summary_text(dir.path());
        std::fs::write(dir.path().join(SUMMARY), &summary).unwrap();
        let run = folder.read().unwrap();
        assert_eq!(run.config.task.name, "cat");
        assert_eq!(run.epochs.len(), 2);
        let first = &run.epochs[0];
        assert_eq!(
            (first.epoch, first.lr, first.skipped_batches),
            (1, 0.001, 0)
        );
        assert_eq!(first.train.parts["size/ld"], 0.825123397509257);
        let axes = &first.validation.as_ref().unwrap().metrics.axes;
        assert_eq!(axes[0].mae, Some(1.5376183082133006));
        assert_eq!((axes[1].mae, axes[1].accuracy), (None, Some(0.1)));
        assert_eq!(run.epochs[1].validation, None);
        let finished = run.finished().unwrap();
        assert_eq!((finished.best_epoch, finished.samples), (1, [180, 60, 0]));
        assert_eq!(finished.mean_predictor[0].validation_mae, 1.633);
        // Written again, every record is the same bytes: same keys, order and numbers.
        assert_eq!(serde_json::to_string(&run.epochs[0]).unwrap(), EPOCH_1);
        assert_eq!(serde_json::to_string(&run.epochs[1]).unwrap(), EPOCH_2);
        assert_eq!(serde_json::to_string_pretty(finished).unwrap(), summary);
    }

    /// Killed while appending epoch 2: the torn line is an epoch never committed.
    #[test]
    fn a_torn_last_line_is_left_out() {
        let metrics = format!("{EPOCH_1}\n{}", &EPOCH_2[..60]);
        let (_dir, folder) = folder(Some(&metrics), None);
        let epochs = folder.epochs().unwrap();
        assert_eq!(epochs.len(), 1);
        assert_eq!(epochs[0].epoch, 1);
    }

    #[test]
    fn a_line_without_a_key_names_the_file_line_and_key() {
        // Line 2 lacks `train.total`; serde finds that at the brace closing `train`.
        let metrics = format!("{EPOCH_1}\n{{\"epoch\":2,\"train\":{{}}}}\n");
        let (dir, folder) = folder(Some(&metrics), None);
        let err = folder.read().unwrap_err().to_string();
        let file = dir.path().join(METRICS);
        assert_eq!(
            err,
            format!(
                "{} line 2: not an epoch record (missing field `total`, column 21); {DAMAGED}",
                file.display()
            )
        );
    }

    #[test]
    fn a_summary_without_a_key_names_its_line() {
        let (dir, folder) = folder(Some(&format!("{EPOCH_1}\n")), None);
        let summary = summary_text(dir.path()).replace("  \"parameters\": 436,\n", "");
        std::fs::write(dir.path().join(SUMMARY), &summary).unwrap();
        let err = folder.summary().unwrap_err().to_string();
        let file = dir.path().join(SUMMARY);
        // serde finds a key missing at the object's end: the closing brace, the last line.
        let last = summary.lines().count();
        assert!(
            err.starts_with(&format!(
                "{} line {last}: missing field `parameters`, column 1;",
                file.display()
            )),
            "{err}"
        );
    }

    /// Interrupted after epoch 1: epochs, but no summary yet.
    #[test]
    fn an_interrupted_run_has_no_summary() {
        let (dir, folder) = folder(Some(&format!("{EPOCH_1}\n")), None);
        let run = folder.read().unwrap();
        assert_eq!(run.epochs.len(), 1);
        assert!(run.summary.is_none());
        let err = run.finished().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: missing: the run did not finish; finish it with `ldl train --resume {}`, \
                 or give a run that finished",
                dir.path().join(SUMMARY).display(),
                dir.path().display()
            )
        );
    }

    /// Interrupted before its first epoch finished: a config and nothing else.
    #[test]
    fn a_run_before_its_first_epoch_has_no_epochs() {
        let (_dir, folder) = folder(None, None);
        let run = folder.read().unwrap();
        assert!(run.epochs.is_empty() && run.summary.is_none());
    }

    #[test]
    fn a_folder_that_is_no_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let folder = RunFolder::new(dir.path());
        let err = folder.epochs().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: missing, so this is not a run folder; give a run folder written by \
                 `ldl train`",
                dir.path().join(METRICS).display()
            )),
            "{err}"
        );
        let err = folder.read().unwrap_err().to_string();
        assert!(err.contains("config.toml: missing"), "{err}");
    }
}
