//! The error type of `ldl-data`.

use std::path::{Path, PathBuf};

/// Everything that can go wrong reading, splitting and batching data. Every message
/// names the file and line (or the sample) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },

    /// A row of a CSV or JSONL file is bad (line numbers start at 1, the header being
    /// line 1 of a CSV file).
    #[error("{}:{line}: {message}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong and what to do.
        message: String,
    },

    /// The file as a whole does not fit the specification (a missing column, …).
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },

    /// An invalid data specification (split fractions that do not add up, …).
    #[error("data: {0}")]
    Spec(String),

    /// A split ended up with no samples.
    #[error("the {0} split is empty; check the split column or fractions")]
    EmptySplit(String),

    /// An error from the label space.
    #[error(transparent)]
    Core(#[from] ldl_core::Error),

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<ldl_core::files::FileError> for Error {
    fn from(error: ldl_core::files::FileError) -> Self {
        Error::io(&error.path, error.problem)
    }
}

impl Error {
    pub(crate) fn io(path: &Path, error: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }

    pub(crate) fn row(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Error::Row {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
