//! One process per run folder. Two processes training in one folder (a `--resume` started
//! while the run still trains, or two resumes at once) would interleave their epochs in
//! `metrics.jsonl` and overwrite each other's checkpoints, so a run holds an exclusive
//! advisory lock on `RUN/run.lock` from before it reads the folder until it ends. The
//! operating system releases the lock when the process exits, also on a crash or
//! `kill -9`, so a stale lock never blocks a resume; the file itself stays behind, empty
//! of meaning but for the pid of the last holder, which a refused process names.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file's name inside a run folder.
pub(crate) const LOCK_FILE: &str = "run.lock";

/// The most of the lock file read back for the holder's pid: a pid is a short line.
const MAX_HOLDER_TEXT: u64 = 64;

/// An exclusive hold on a run folder, released when dropped or when the process ends.
#[derive(Debug)]
pub(crate) struct RunLock {
    // Held only for its lock; closing the file releases it.
    _file: File,
}

impl RunLock {
    /// Takes the lock of `run_dir`, or refuses at once (no waiting) naming the process
    /// that holds it.
    pub(crate) fn acquire(run_dir: &Path) -> Result<RunLock> {
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Error::output(
                    &path,
                    format!(
                        "cannot open the run folder's lock file ({e}); a run folder must be writable to \
                         train in it: make it writable, or copy it to a folder you can write \
                         and resume the copy"
                    ),
                )
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(held_by_another(run_dir, &mut file)),
            Err(TryLockError::Error(e)) => {
                return Err(Error::Usage(format!(
                    "{}: cannot lock the run folder ({e}); ldl locks a run folder so that no \
                     two processes train in it: use a folder on a local file system",
                    path.display()
                )))
            }
        }
        // Only the holder writes: a refused process reads this pid.
        let pid = format!("{}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        written.map_err(|e| Error::output(&path, e))?;
        Ok(RunLock { _file: file })
    }
}

/// The refusal of a second process, with the holder's pid when the file names one.
fn held_by_another(run_dir: &Path, file: &mut File) -> Error {
    let mut text = String::new();
    let _ = file.take(MAX_HOLDER_TEXT).read_to_string(&mut text);
    let holder = match text.trim().parse::<u32>() {
        Ok(pid) => format!("another ldl process (pid {pid})"),
        Err(_) => "another ldl process".to_string(),
    };
    Error::Usage(format!(
        "{}: {holder} is training in this run folder; wait for it to end or stop it, then \
         resume with `ldl train --resume {}`",
        run_dir.display(),
        run_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::RunLock;

    #[test]
    fn a_second_hold_is_refused_naming_the_holder_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        // A second open file description conflicts like a second process would.
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(
            err.contains(&format!("another ldl process (pid {pid}) is training")),
            "{err}"
        );
        drop(first);
        let again = RunLock::acquire(dir.path());
        assert!(again.is_ok(), "{:?}", again.err());
    }
}
