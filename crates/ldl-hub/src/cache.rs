//! The Hugging Face cache layout of one repository, written by ldl itself:
//! `CACHE/models--owner--name/{blobs/<blob id>, snapshots/<commit>/<file>, refs/<revision>}`,
//! a snapshot's files being relative links into `blobs`.
//!
//! Paths are built from checked values only ([`CommitId`], [`BlobId`], [`RepoFile`]), so
//! nothing a server sends can name a path outside the repository's folder. Everything is
//! written under a temporary name and renamed into place, so a reader (another process, a
//! later run) sees a whole file or none: a blob is only renamed into `blobs` after its hash
//! was checked, a link or ref is replaced in one step.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::untrusted::{BlobId, CommitId, RepoFile};

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub(crate) struct RepoCache {
    root: PathBuf,
}

impl RepoCache {
    /// The folder `cache/folder` (`models--owner--name`, `datasets--owner--name`).
    pub(crate) fn new(cache: &Path, folder: &str) -> RepoCache {
        RepoCache {
            root: cache.join(folder),
        }
    }

    /// `blobs/<id>`.
    pub(crate) fn blob(&self, id: &BlobId) -> PathBuf {
        self.root.join("blobs").join(id.as_str())
    }

    /// A fresh temporary name next to the blob `id`, for its download.
    pub(crate) fn partial_blob(&self, id: &BlobId) -> PathBuf {
        self.root
            .join("blobs")
            .join(format!("{id}.{}.incomplete", unique()))
    }

    /// `snapshots/<commit>`.
    pub(crate) fn snapshot(&self, commit: &CommitId) -> PathBuf {
        self.root.join("snapshots").join(commit.as_str())
    }

    /// `snapshots/<commit>/<file>`.
    pub(crate) fn snapshot_file(&self, commit: &CommitId, file: &RepoFile) -> PathBuf {
        let mut path = self.snapshot(commit);
        path.extend(file.parts());
        path
    }

    /// The commit `refs/<revision>` records, when there is one and it is a commit id.
    /// `revision` is a branch or tag given by the user (already checked by its parser).
    /// Anything but a small regular file (a FIFO would block the read) counts as no ref.
    pub(crate) fn read_ref(&self, revision: &RepoFile) -> Option<CommitId> {
        // A ref holds a 40-digit commit id and a newline at most.
        let bytes = crate::local_file::read_small(&self.ref_path(revision), 4096).ok()?;
        CommitId::parse(std::str::from_utf8(&bytes).ok()?.trim()).ok()
    }

    /// Records that `revision` is at `commit`.
    pub(crate) fn write_ref(&self, revision: &RepoFile, commit: &CommitId) -> std::io::Result<()> {
        write_atomically(&self.ref_path(revision), commit.as_str().as_bytes())
    }

    fn ref_path(&self, revision: &RepoFile) -> PathBuf {
        let mut path = self.root.join("refs");
        path.extend(revision.parts());
        path
    }

    /// The cached copy of `file` at `revision` (a commit, or a branch or tag with a ref):
    /// its path and commit, when the cache has it.
    pub(crate) fn cached(&self, revision: &str, file: &RepoFile) -> Option<(PathBuf, CommitId)> {
        let commit = match CommitId::parse(revision) {
            Ok(commit) => commit,
            Err(_) => self.read_ref(&RepoFile::parse(revision).ok()?)?,
        };
        let path = self.snapshot_file(&commit, file);
        path.is_file().then_some((path, commit))
    }

    /// Moves a checked download into `blobs/<id>` (one rename: the blob is whole or absent).
    pub(crate) fn store_blob(&self, partial: &Path, id: &BlobId) -> std::io::Result<PathBuf> {
        let blob = self.blob(id);
        std::fs::rename(partial, &blob)?;
        Ok(blob)
    }

    /// Makes `snapshots/<commit>/<file>` a relative link to `blobs/<id>` (a copy where links
    /// cannot be made), replacing any earlier one in one step.
    pub(crate) fn link(
        &self,
        commit: &CommitId,
        file: &RepoFile,
        id: &BlobId,
    ) -> std::io::Result<PathBuf> {
        let pointer = self.snapshot_file(commit, file);
        let folder = pointer.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&folder)?;
        // From snapshots/<commit>/<a>/<b>/ back to the repository folder, then into blobs.
        let mut target = PathBuf::new();
        for _ in 0..file.parts().count() + 1 {
            target.push("..");
        }
        target.push("blobs");
        target.push(id.as_str());
        let temporary = folder.join(format!(".{}.link", unique()));
        make_link(&target, &self.blob(id), &temporary)?;
        std::fs::rename(&temporary, &pointer).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })?;
        Ok(pointer)
    }
}

#[cfg(unix)]
fn make_link(relative: &Path, _blob: &Path, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(relative, at)
}

#[cfg(not(unix))]
fn make_link(_relative: &Path, blob: &Path, at: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, at).map(|_| ())
}

/// Writes `bytes` to `path` under a temporary name, then renames it into place.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temporary = folder.join(format!(".{name}.{}.partial", unique()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// A name part no other writer (thread or process) uses at the same time.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_into_blobs_from_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoCache::new(dir.path(), "models--o--n");
        let id = BlobId::parse_etag(&"a".repeat(64)).unwrap();
        let commit = CommitId::parse(&"c".repeat(40)).unwrap();
        std::fs::create_dir_all(dir.path().join("models--o--n/blobs")).unwrap();
        let partial = repo.partial_blob(&id);
        std::fs::write(&partial, b"bytes").unwrap();
        repo.store_blob(&partial, &id).unwrap();
        for name in ["model.safetensors", "default/train/0000.parquet"] {
            let file = RepoFile::parse(name).unwrap();
            let path = repo.link(&commit, &file, &id).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"bytes", "{name}");
            // Again: the link is replaced, not an error.
            repo.link(&commit, &file, &id).unwrap();
        }
        let main = RepoFile::parse("main").unwrap();
        repo.write_ref(&main, &commit).unwrap();
        assert_eq!(repo.read_ref(&main), Some(commit.clone()));
        let file = RepoFile::parse("model.safetensors").unwrap();
        assert_eq!(repo.cached("main", &file).unwrap().1, commit);
        assert!(repo.cached("other", &file).is_none());
    }

    #[test]
    fn a_ref_that_is_not_a_commit_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoCache::new(dir.path(), "models--o--n");
        write_atomically(&dir.path().join("models--o--n/refs/main"), b"../../x").unwrap();
        assert_eq!(repo.read_ref(&RepoFile::parse("main").unwrap()), None);
    }
}
