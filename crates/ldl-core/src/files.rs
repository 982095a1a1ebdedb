//! Reading a file a user names: only a regular file, and only up to a size that fits what
//! the file is.
//!
//! A path can name something that is not a file: `/dev/zero` or `/dev/urandom` never end,
//! a FIFO with no writer blocks whoever opens it, a directory or a symlink loop cannot be
//! read at all. [`read_bounded`] and [`read_text`] open the path without blocking, look at
//! what was opened (not at the path again, which could have changed in between), refuse
//! anything but a regular file with a message saying what it is, and read at most the
//! limit of the file's [`FileKind`], so even a file that grows while it is read is cut off.
//!
//! ```
//! use ldl_core::files::{read_text, FileKind, FileProblem};
//!
//! let folder = std::env::temp_dir();
//! let err = read_text(&folder, FileKind::Config).unwrap_err();
//! assert!(matches!(err.problem, FileProblem::Directory));
//! assert!(err.to_string().ends_with("is a directory, not a file"), "{err}");
//! ```

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// What a file is to ldl; each kind has its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A TOML task config.
    Config,
    /// A CSV or JSONL table, or a list file of an age dataset's layout.
    Table,
    /// A JPEG or PNG image.
    Image,
    /// A safetensors file: a checkpoint, pretrained weights, Adam's moments.
    Checkpoint,
    /// A JSON or JSONL file of a run folder (`summary.json`, `metrics.jsonl`, …).
    RunRecord,
}

impl FileKind {
    /// The largest file of this kind that is read, in bytes: the default unless
    /// [`FileKind::override_var`] is set.
    ///
    /// Each default is far above what real files of the kind need, and low enough that
    /// a wrong path fails at once instead of filling the memory.
    pub fn default_limit(self) -> u64 {
        match self {
            // A config is a few KiB of TOML written by hand.
            FileKind::Config => 16 * MIB,
            // A table is read whole into memory and then parsed, taking several times its
            // size; an image dataset's list is a few MiB, a large feature table some
            // hundred MiB. Larger tables need LDL_MAX_TABLE_BYTES.
            FileKind::Table => 4 * GIB,
            // Decoding allows 512 MiB (ldl-data's image limits); an encoded file larger
            // than that could not decode within them (an uncompressed 8192 × 8192 RGBA
            // PNG, the largest side allowed, is 256 MiB).
            FileKind::Image => 512 * MIB,
            // Checkpoints are read whole. The largest file ldl is meant to load, the
            // VGG-16-BN weights `init_from` maps, is about 530 MiB; Adam's moments are
            // twice a model. Larger files need LDL_MAX_CHECKPOINT_BYTES.
            FileKind::Checkpoint => 4 * GIB,
            // `metrics.jsonl` grows by one line of 1 to 5 KiB per epoch: 64 MiB holds
            // over ten thousand epochs; the other records are a few KiB.
            FileKind::RunRecord => 64 * MIB,
        }
    }

    /// The environment variable that raises this kind's limit (a number of bytes), for
    /// the kinds whose real files could outgrow the default.
    pub fn override_var(self) -> Option<&'static str> {
        match self {
            FileKind::Table => Some("LDL_MAX_TABLE_BYTES"),
            FileKind::Checkpoint => Some("LDL_MAX_CHECKPOINT_BYTES"),
            FileKind::Config | FileKind::Image | FileKind::RunRecord => None,
        }
    }

    /// The limit in force: [`FileKind::override_var`] when set, else the default.
    pub fn limit(self) -> Result<u64, FileProblem> {
        let Some(var) = self.override_var() else {
            return Ok(self.default_limit());
        };
        match std::env::var(var) {
            Ok(value) => value
                .trim()
                .parse()
                .map_err(|_| FileProblem::BadLimit { var, value }),
            Err(_) => Ok(self.default_limit()),
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Config => "config",
            FileKind::Table => "table",
            FileKind::Image => "image",
            FileKind::Checkpoint => "checkpoint",
            FileKind::RunRecord => "run record",
        })
    }
}

/// A file that could not be read: its path and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct FileError {
    /// The path as given.
    pub path: PathBuf,
    /// Why it was not read; shown alone where the caller names the path itself.
    pub problem: FileProblem,
}

/// Why a file was not read. The messages follow the path, as in `PATH: is a directory`.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// Nothing is at the path.
    #[error("not found")]
    NotFound,
    /// A directory.
    #[error("is a directory, not a file")]
    Directory,
    /// A symbolic link that leads back to itself (or through too many links).
    #[error("is a symlink loop (its links never reach a file); fix the link")]
    SymlinkLoop,
    /// A FIFO: reading it waits for a writer, and what a writer sends need not end.
    #[error("is a FIFO (named pipe), {NOT_REGULAR}")]
    Fifo,
    /// A character device, such as `/dev/zero`, which never ends.
    #[error("is a character device, {NOT_REGULAR}")]
    CharDevice,
    /// A block device.
    #[error("is a block device, {NOT_REGULAR}")]
    BlockDevice,
    /// A socket.
    #[error("is a socket, {NOT_REGULAR}")]
    Socket,
    /// Any other kind of file that is not a regular one.
    #[error("is {NOT_REGULAR}")]
    NotRegular,
    /// Larger than its kind's limit. `size` is `None` for a file that grew past the limit
    /// while it was read.
    #[error("{}", too_large(*.kind, *.limit, *.size))]
    TooLarge {
        /// What the file is.
        kind: FileKind,
        /// The limit in force, in bytes.
        limit: u64,
        /// The file's size in bytes, when it was known before reading.
        size: Option<u64>,
    },
    /// A limit's environment variable that is not a number of bytes.
    #[error("{var} is `{value}`, not a number of bytes")]
    BadLimit {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// [`read_text`] found bytes that are not UTF-8.
    #[error("is not UTF-8 text")]
    NotText,
    /// Any other failure, as the system reports it.
    #[error("cannot read: {0}")]
    Io(std::io::Error),
}

const NOT_REGULAR: &str = "not a regular file: ldl reads only regular files, so save the \
                           data to a file and give its path";

fn too_large(kind: FileKind, limit: u64, size: Option<u64>) -> String {
    let what = match size {
        Some(size) => format!("is {size} bytes, more than"),
        None => "grew while being read to more than".to_string(),
    };
    let fix = match kind.override_var() {
        Some(var) => format!("set {var} to a larger number of bytes to read it"),
        None => format!("check that the path names a {kind}"),
    };
    format!("{what} a {kind} may be ({}); {fix}", human(limit))
}

/// `bytes` in the largest binary unit that divides it.
fn human(bytes: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

/// The bytes of the regular file at `path`, at most `kind`'s [limit](FileKind::limit).
/// Anything else (a directory, a FIFO, a device, a socket, a symlink loop, a file over the
/// limit) is a [`FileError`] saying what it is; nothing blocks, whatever the path names.
pub fn read_bounded(path: &Path, kind: FileKind) -> Result<Vec<u8>, FileError> {
    let fail = |problem| FileError {
        path: path.to_path_buf(),
        problem,
    };
    let limit = kind.limit().map_err(fail)?;
    let file = open(path).map_err(fail)?;
    // Asked of the open file, not of the path, which could name another file by now.
    let metadata = file.metadata().map_err(|e| fail(FileProblem::Io(e)))?;
    let size = regular_size(&metadata).map_err(fail)?;
    if size > limit {
        return Err(fail(FileProblem::TooLarge {
            kind,
            limit,
            size: Some(size),
        }));
    }
    // `take` bounds the read even if the file grows after the size was looked at.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(FileProblem::Io(e)))?;
    if bytes.len() as u64 > limit {
        return Err(fail(FileProblem::TooLarge {
            kind,
            limit,
            size: None,
        }));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text; other bytes are [`FileProblem::NotText`].
pub fn read_text(path: &Path, kind: FileKind) -> Result<String, FileError> {
    let bytes = read_bounded(path, kind)?;
    String::from_utf8(bytes).map_err(|_| FileError {
        path: path.to_path_buf(),
        problem: FileProblem::NotText,
    })
}

/// Opens `path` for reading. On Unix, `O_NONBLOCK` makes opening a FIFO return at once
/// instead of waiting for a writer (it is refused before any read), and `O_NOCTTY` keeps a
/// terminal device from becoming the process's controlling terminal. Regular files ignore
/// `O_NONBLOCK`: reading them never waits for a writer.
fn open(path: &Path) -> Result<File, FileProblem> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path).map_err(|e| open_problem(path, e))
}

fn open_problem(path: &Path, error: std::io::Error) -> FileProblem {
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ELOOP) {
        return FileProblem::SymlinkLoop;
    }
    if error.kind() == std::io::ErrorKind::NotFound {
        return FileProblem::NotFound;
    }
    // Some systems refuse to open a directory rather than opening it.
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return FileProblem::Directory;
    }
    FileProblem::Io(error)
}

/// Whether `path` names a regular file (following links), without opening it: a quick
/// check of many paths, such as a table's images, before they are read. The file is
/// checked again when [`read_bounded`] reads it.
pub fn check_regular(path: &Path) -> Result<(), FileProblem> {
    let metadata = std::fs::metadata(path).map_err(|e| open_problem(path, e))?;
    regular_size(&metadata).map(|_| ())
}

/// The size of a regular file from its `metadata`, or what the file is instead.
fn regular_size(metadata: &std::fs::Metadata) -> Result<u64, FileProblem> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(metadata.len());
    }
    if kind.is_dir() {
        return Err(FileProblem::Directory);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Err(FileProblem::Fifo);
        }
        if kind.is_char_device() {
            return Err(FileProblem::CharDevice);
        }
        if kind.is_block_device() {
            return Err(FileProblem::BlockDevice);
        }
        if kind.is_socket() {
            return Err(FileProblem::Socket);
        }
    }
    Err(FileProblem::NotRegular)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &Path, kind: FileKind) -> FileProblem {
        read_bounded(path, kind).unwrap_err().problem
    }

    #[test]
    fn regular_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "x = 1\n").unwrap();
        assert_eq!(read_text(&path, FileKind::Config).unwrap(), "x = 1\n");
        assert_eq!(read_bounded(&path, FileKind::Image).unwrap(), b"x = 1\n");
    }

    #[test]
    fn missing_files_and_folders_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.csv");
        assert!(matches!(
            problem(&missing, FileKind::Table),
            FileProblem::NotFound
        ));
        assert!(matches!(
            problem(dir.path(), FileKind::Table),
            FileProblem::Directory
        ));
    }

    #[test]
    fn check_regular_tells_files_from_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jpg");
        std::fs::write(&path, "x").unwrap();
        assert!(check_regular(&path).is_ok());
        assert!(matches!(
            check_regular(dir.path()),
            Err(FileProblem::Directory)
        ));
        let missing = dir.path().join("b.jpg");
        assert!(matches!(
            check_regular(&missing),
            Err(FileProblem::NotFound)
        ));
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        let err = read_text(&path, FileKind::Table).unwrap_err();
        assert!(matches!(err.problem, FileProblem::NotText));
        assert_eq!(
            err.to_string(),
            format!("{}: is not UTF-8 text", path.display())
        );
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        assert!(matches!(
            problem(&looped, FileKind::Config),
            FileProblem::SymlinkLoop
        ));
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let err = read_bounded(zero, FileKind::Checkpoint).unwrap_err();
            assert!(matches!(err.problem, FileProblem::CharDevice));
            assert!(err
                .to_string()
                .starts_with("/dev/zero: is a character device"));
        }
    }

    #[test]
    fn over_the_limit_is_refused_with_the_limit_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        let file = File::create(&path).unwrap();
        // Sparse: no disk space is used.
        file.set_len(FileKind::Config.default_limit() + 1).unwrap();
        let message = problem(&path, FileKind::Config).to_string();
        assert_eq!(
            message,
            "is 16777217 bytes, more than a config may be (16 MiB); check that the path \
             names a config"
        );
    }

    #[test]
    fn limits_print_in_round_units() {
        assert_eq!(human(16 * MIB), "16 MiB");
        assert_eq!(human(4 * GIB), "4 GiB");
        assert_eq!(human(1000), "1000 bytes");
        let table = FileProblem::TooLarge {
            kind: FileKind::Table,
            limit: 4 * GIB,
            size: None,
        };
        assert_eq!(
            table.to_string(),
            "grew while being read to more than a table may be (4 GiB); set \
             LDL_MAX_TABLE_BYTES to a larger number of bytes to read it"
        );
    }
}
