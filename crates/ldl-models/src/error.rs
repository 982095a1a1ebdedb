//! The error type of `ldl-models`.

use std::path::PathBuf;

/// Everything that can go wrong building, running, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid model configuration (a zero width, an input too small, …).
    #[error("model config: {0}")]
    Config(String),

    /// A device string that is not `cpu`, `cuda`, `cuda:N` or `auto`, or a device that
    /// is not available.
    #[error("device: {0}")]
    Device(String),

    /// A checkpoint that cannot be read or does not fit the model.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },

    /// A model that cannot be exported as described (an input that does not fit it).
    #[error("ONNX export: {0}")]
    Export(String),

    /// An error from the label space.
    #[error(transparent)]
    Core(#[from] ldl_core::Error),

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<ldl_core::files::FileError> for Error {
    fn from(error: ldl_core::files::FileError) -> Self {
        Error::checkpoint(&error.path, error.problem.to_string())
    }
}

impl Error {
    pub(crate) fn checkpoint(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
