//! How an epoch is saved so that a run killed at any moment (SIGKILL, a power cut, a
//! full disk) resumes exactly: the run folder's commit protocol.
//!
//! Every file is written whole or not at all ([`ldl_models::durable`]), but an epoch is
//! several files, and they must change together. After every epoch `N` the trainer:
//!
//! 1. appends `N`'s line to `metrics.jsonl` (one write, flushed; a failed append is cut
//!    back off);
//! 2. stages `N`'s checkpoints in `checkpoints/staged-N/`: `last.safetensors`,
//!    `optimizer.safetensors`, and `best.safetensors` when `N` improved on the best, each
//!    written atomically, then flushes that folder;
//! 3. commits: writes `state.json` (epoch `N`, Adam's step count, the best epoch)
//!    atomically. This rename is the commit point;
//! 4. installs: renames the staged files over `checkpoints/*.safetensors`, removes the
//!    staging folder and flushes `checkpoints/`.
//!
//! On resume, [`RunFiles::recover`] first brings the folder back to the epoch
//! `state.json` names: a staging folder of that epoch is installed (the kill fell in
//! step 4: roll forward), one of a later epoch is removed (steps 1–2: roll back),
//! temporary `*.partial` files are removed, and `metrics.jsonl` keeps only the whole
//! lines of committed epochs. Before the first epoch, epoch 0 (the initial weights and
//! zero moments) is committed the same way, so a run killed during its first epoch
//! resumes too.

use std::io::Write;
use std::path::{Path, PathBuf};

use ldl_core::files::{read_bounded, read_text, FileKind, FileProblem};
use ldl_models::durable::{sync_dir, write_atomically};
use serde::Serialize;

use crate::error::{Error, Result};

/// The prefix of a staging folder's name: `staged-N` holds epoch `N`'s checkpoints.
const STAGED: &str = "staged-";

/// The files of one run folder.
pub(crate) struct RunFiles {
    /// The run folder.
    pub dir: PathBuf,
    /// `checkpoints/`.
    pub checkpoints: PathBuf,
    /// `metrics.jsonl`.
    pub metrics: PathBuf,
    /// `state.json`, the commit record.
    pub state: PathBuf,
}

impl RunFiles {
    /// The files of the run folder `dir` (creating `checkpoints/`).
    pub fn new(dir: &Path) -> Result<RunFiles> {
        let checkpoints = dir.join("checkpoints");
        std::fs::create_dir_all(&checkpoints).map_err(|e| Error::output(&checkpoints, e))?;
        Ok(RunFiles {
            dir: dir.to_path_buf(),
            checkpoints,
            metrics: dir.join("metrics.jsonl"),
            state: dir.join("state.json"),
        })
    }

    /// Saves epoch `epoch` as one step (see the module): its metrics line, the
    /// checkpoints `stage` writes into the folder it is given, then `state` as the commit.
    /// A failure before the commit leaves the previous epoch as it was.
    pub fn commit_epoch(
        &self,
        epoch: usize,
        record: Option<&impl Serialize>,
        stage: &mut dyn FnMut(&Path) -> Result<()>,
        state: &[u8],
    ) -> Result<()> {
        let staged = self.checkpoints.join(format!("{STAGED}{epoch}"));
        let metrics_length = std::fs::metadata(&self.metrics).map(|m| m.len()).ok();
        let before_commit = (|| {
            if let Some(record) = record {
                append_line(&self.metrics, record)?;
            }
            if staged.exists() {
                std::fs::remove_dir_all(&staged).map_err(|e| Error::output(&staged, e))?;
            }
            std::fs::create_dir(&staged).map_err(|e| Error::output(&staged, e))?;
            stage(&staged)?;
            sync_dir(&staged).map_err(|e| Error::output(&staged, e))?;
            // The staging folder's own name must be on disk before the commit too, or a
            // power cut could leave a state.json naming an epoch whose files are gone.
            sync_dir(&self.checkpoints).map_err(|e| Error::output(&self.checkpoints, e))?;
            write_atomically(&self.state, state).map_err(|e| Error::output(&self.state, e))
        })();
        if let Err(error) = before_commit {
            if read_bounded(&self.state, FileKind::RunRecord).is_ok_and(|saved| saved == state) {
                // The rename into state.json was done and only flushing its folder failed:
                // the epoch is committed as far as a resume can tell, so its files must
                // stay. Install them; the error still stops the run.
                let _ = install(&staged, &self.checkpoints);
                return Err(error);
            }
            // Nothing was committed: the staged files and the epoch's metrics line are of
            // no use to a resume, and the line must not claim an epoch that is not saved.
            // Best effort: the error to report is the first one.
            let _ = std::fs::remove_dir_all(&staged);
            if record.is_some() {
                let _ = cut_back(&self.metrics, metrics_length.unwrap_or(0));
            }
            return Err(error);
        }
        // Committed: a failure from here on is rolled forward by the next resume.
        install(&staged, &self.checkpoints)
    }

    /// The epoch `state.json` names, if it can be read: after a failed
    /// [`RunFiles::commit_epoch`], the new epoch when the failure came after the commit.
    pub fn committed_epoch(&self) -> Option<usize> {
        let text = read_text(&self.state, FileKind::RunRecord).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value.get("epoch")?.as_u64().map(|e| e as usize)
    }

    /// Brings the folder back to the committed epoch `committed` after a kill (see the
    /// module): staged checkpoints are installed or removed, temporary files removed and
    /// `metrics.jsonl` cut back to the committed epochs.
    pub fn recover(&self, committed: usize) -> Result<()> {
        for (epoch, staged) in self.staged()? {
            if epoch <= committed {
                install(&staged, &self.checkpoints)?;
            } else {
                std::fs::remove_dir_all(&staged).map_err(|e| Error::output(&staged, e))?;
            }
        }
        for dir in [&self.dir, &self.checkpoints, &self.dir.join("plots")] {
            remove_partials(dir)?;
        }
        self.truncate_metrics(committed)
    }

    /// The staging folders present, with their epochs.
    fn staged(&self) -> Result<Vec<(usize, PathBuf)>> {
        let entries = std::fs::read_dir(&self.checkpoints)
            .map_err(|e| Error::output(&self.checkpoints, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::output(&self.checkpoints, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(epoch) = name.strip_prefix(STAGED).and_then(|n| n.parse().ok()) {
                found.push((epoch, entry.path()));
            }
        }
        Ok(found)
    }

    /// Keeps the whole lines of `metrics.jsonl` whose epoch is at most `committed`: lines
    /// of an epoch that was never committed are trained again, and must not appear twice.
    fn truncate_metrics(&self, committed: usize) -> Result<()> {
        let text = match read_text(&self.metrics, FileKind::RunRecord) {
            Ok(text) => text,
            Err(e) if matches!(e.problem, FileProblem::NotFound) => return Ok(()),
            Err(e) => return Err(Error::output(&self.metrics, e.problem)),
        };
        let kept: String = text
            .split_inclusive('\n')
            .filter(|line| line.ends_with('\n') && line_epoch(line).is_some_and(|e| e <= committed))
            .collect();
        if kept.len() == text.len() {
            return Ok(());
        }
        write_atomically(&self.metrics, kept.as_bytes())
            .map_err(|e| Error::output(&self.metrics, e))
    }
}

/// Whether `metrics.jsonl` at `path` has a whole line of epoch `epoch`.
pub(crate) fn holds_epoch(path: &Path, epoch: usize) -> bool {
    read_text(path, FileKind::RunRecord).is_ok_and(|text| {
        text.split_inclusive('\n')
            .any(|line| line.ends_with('\n') && line_epoch(line) == Some(epoch))
    })
}

/// The `epoch` of a `metrics.jsonl` line, if it is one.
fn line_epoch(line: &str) -> Option<usize> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get("epoch")?.as_u64().map(|e| e as usize)
}

/// Renames every file of the staging folder `staged` into `checkpoints`, then removes
/// the folder. Renaming again what was already renamed is not needed: moved files are
/// simply no longer there, so this can run any number of times.
fn install(staged: &Path, checkpoints: &Path) -> Result<()> {
    let entries = std::fs::read_dir(staged).map_err(|e| Error::output(staged, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::output(staged, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".partial") {
            continue;
        }
        let target = checkpoints.join(&name);
        std::fs::rename(entry.path(), &target).map_err(|e| Error::output(&target, e))?;
    }
    std::fs::remove_dir_all(staged).map_err(|e| Error::output(staged, e))?;
    sync_dir(checkpoints).map_err(|e| Error::output(checkpoints, e))
}

/// Removes the temporary files (`*.partial`) that a killed write left in `dir` (if the
/// folder exists).
fn remove_partials(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::output(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::output(dir, e))?;
        if entry.file_name().to_string_lossy().ends_with(".partial") && entry.path().is_file() {
            std::fs::remove_file(entry.path()).map_err(|e| Error::output(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Cuts `path` back to its first `length` bytes.
fn cut_back(path: &Path, length: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(length)?;
    file.sync_data()
}

/// Appends `record` as one JSON line, in one write, flushed. If the write fails part-way
/// (a full disk), the file is cut back to its old length, so it never ends in half a
/// line.
pub(crate) fn append_line(path: &Path, record: &impl Serialize) -> Result<()> {
    let mut line = serde_json::to_string(record).map_err(|e| Error::output(path, e))?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::output(path, e))?;
    let length = file.metadata().map_err(|e| Error::output(path, e))?.len();
    let written = file
        .write_all(line.as_bytes())
        .and_then(|()| file.sync_data());
    written.map_err(|e| {
        // Best effort: shrinking a file needs no space.
        let _ = file.set_len(length);
        Error::output(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> (tempfile::TempDir, RunFiles) {
        let dir = tempfile::tempdir().unwrap();
        let files = RunFiles::new(dir.path()).unwrap();
        (dir, files)
    }

    fn stage_with(content: &'static str) -> impl FnMut(&Path) -> Result<()> {
        move |dir: &Path| {
            std::fs::write(dir.join("last.safetensors"), content).unwrap();
            Ok(())
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn an_epoch_is_committed_and_installed() {
        let (_dir, files) = folder();
        let record = serde_json::json!({"epoch": 1});
        files
            .commit_epoch(1, Some(&record), &mut stage_with("one"), b"{\"epoch\":1}")
            .unwrap();
        assert_eq!(read(&files.checkpoints.join("last.safetensors")), "one");
        assert_eq!(read(&files.state), "{\"epoch\":1}");
        assert_eq!(read(&files.metrics), "{\"epoch\":1}\n");
        assert!(files.staged().unwrap().is_empty());
    }

    #[test]
    fn a_failed_stage_keeps_the_previous_epoch() {
        let (_dir, files) = folder();
        let line = |epoch: usize| serde_json::json!({ "epoch": epoch });
        files
            .commit_epoch(1, Some(&line(1)), &mut stage_with("one"), b"1")
            .unwrap();
        let err = files
            .commit_epoch(
                2,
                Some(&line(2)),
                &mut |_| Err(Error::Usage("disk full".into())),
                b"2",
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(read(&files.metrics), "{\"epoch\":1}\n");
        assert_eq!(read(&files.checkpoints.join("last.safetensors")), "one");
        assert_eq!(read(&files.state), "1");
        assert!(files.staged().unwrap().is_empty());
    }

    /// Killed after the commit, before the install: the staged epoch is rolled forward.
    #[test]
    fn recovery_installs_a_committed_staging_folder() {
        let (_dir, files) = folder();
        std::fs::write(files.checkpoints.join("last.safetensors"), "one").unwrap();
        std::fs::write(files.checkpoints.join("best.safetensors"), "best one").unwrap();
        let staged = files.checkpoints.join("staged-2");
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("last.safetensors"), "two").unwrap();
        files.recover(2).unwrap();
        assert_eq!(read(&files.checkpoints.join("last.safetensors")), "two");
        assert_eq!(
            read(&files.checkpoints.join("best.safetensors")),
            "best one"
        );
        assert!(!staged.exists());
    }

    /// Killed before the commit: the staged epoch, its temporary files and its metrics
    /// line are dropped.
    #[test]
    fn recovery_drops_an_uncommitted_epoch() {
        let (_dir, files) = folder();
        std::fs::write(files.checkpoints.join("last.safetensors"), "one").unwrap();
        let staged = files.checkpoints.join("staged-2");
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join(".last.safetensors.partial"), "tw").unwrap();
        std::fs::write(files.dir.join(".state.json.partial"), "{").unwrap();
        std::fs::create_dir(files.dir.join("plots")).unwrap();
        std::fs::write(files.dir.join("plots/.losses.png.partial"), "PN").unwrap();
        std::fs::write(&files.metrics, "{\"epoch\":1}\n{\"epoch\":2}\n{\"epo").unwrap();
        files.recover(1).unwrap();
        assert_eq!(read(&files.checkpoints.join("last.safetensors")), "one");
        assert!(!staged.exists());
        assert!(!files.dir.join(".state.json.partial").exists());
        assert!(!files.dir.join("plots/.losses.png.partial").exists());
        assert_eq!(read(&files.metrics), "{\"epoch\":1}\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_append_names_the_file_and_the_cause() {
        // `/dev/full` fails every write with "no space left on device".
        let err = append_line(Path::new("/dev/full"), &serde_json::json!({"epoch": 2}));
        let message = err.unwrap_err().to_string();
        assert!(message.starts_with("/dev/full: No space left"), "{message}");
    }
}
