//! Opening the local files ldl-hub reads: the token file, the cache's refs and split
//! records, and cached parquet files.
//!
//! A path in the cache, or the one `HF_TOKEN_PATH` names, may hold something other than a
//! file: opening a FIFO waits for a writer that may never come, and `/dev/zero` or
//! `/dev/urandom` never end. So files are opened without blocking, the opened file (not the
//! path again, which could have changed in between) must be a regular file, and small
//! records are read with a size bound. (ldl-core's `files` module does the same for the
//! files a user names; ldl-hub uses no other workspace crate, so it keeps its own.)

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Why a local file was not opened or read, in words that follow its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Nothing is at the path.
    NotFound,
    /// Anything else: what the path names instead of a regular file, a size over the
    /// limit, or the system's error.
    Other(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::NotFound => f.write_str("does not exist"),
            Problem::Other(text) => f.write_str(text),
        }
    }
}

/// Opens `path` for reading if it is a regular file. On Unix, `O_NONBLOCK` makes opening a
/// FIFO return at once instead of waiting for a writer (regular files ignore it), and
/// `O_NOCTTY` keeps a terminal from becoming the process's controlling terminal.
pub(crate) fn open_regular(path: &Path) -> Result<File, Problem> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Problem::NotFound,
        _ if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) => not_regular("a directory"),
        _ => Problem::Other(format!("cannot be opened ({e})")),
    })?;
    let kind = file
        .metadata()
        .map_err(|e| Problem::Other(format!("cannot be read ({e})")))?
        .file_type();
    if kind.is_file() {
        return Ok(file);
    }
    if kind.is_dir() {
        return Err(not_regular("a directory"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Err(not_regular("a FIFO (named pipe)"));
        }
        if kind.is_char_device() {
            return Err(not_regular("a character device"));
        }
        if kind.is_block_device() {
            return Err(not_regular("a block device"));
        }
        if kind.is_socket() {
            return Err(not_regular("a socket"));
        }
    }
    Err(not_regular("something"))
}

fn not_regular(what: &str) -> Problem {
    Problem::Other(format!("is {what}, not a regular file"))
}

/// The bytes of the regular file at `path`, if it holds at most `limit` bytes.
pub(crate) fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, Problem> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    // `take` bounds the read even if the file grows after it was opened.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Problem::Other(format!("cannot be read ({e})")))?;
    if bytes.len() as u64 > limit {
        return Err(Problem::Other(format!(
            "is larger than the {limit} bytes such a file may hold"
        )));
    }
    Ok(bytes)
}

/// Runs `f` on another thread and panics if it takes more than 5 s: a FIFO opened for
/// reading the ordinary way would wait for a writer for ever, and a test should fail, not
/// hang.
#[cfg(test)]
pub(crate) fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(f()));
    receive
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("it blocked")
}

/// Makes a FIFO at `path`.
#[cfg(all(test, unix))]
pub(crate) fn make_fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `name` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "hf_abc\n").unwrap();
        assert_eq!(read_small(&file, 64).unwrap(), b"hf_abc\n");
        assert_eq!(
            read_small(&file, 3),
            Err(Problem::Other(
                "is larger than the 3 bytes such a file may hold".into()
            ))
        );
        assert_eq!(
            read_small(&dir.path().join("missing"), 64),
            Err(Problem::NotFound)
        );
        assert_eq!(
            read_small(dir.path(), 64).unwrap_err().to_string(),
            "is a directory, not a regular file"
        );
        #[cfg(unix)]
        {
            let e = read_small(Path::new("/dev/zero"), 64).unwrap_err();
            assert_eq!(e.to_string(), "is a character device, not a regular file");
            let fifo = dir.path().join("fifo");
            make_fifo(&fifo);
            let e = within_seconds(move || read_small(&fifo, 64)).unwrap_err();
            assert_eq!(e.to_string(), "is a FIFO (named pipe), not a regular file");
        }
    }
}
