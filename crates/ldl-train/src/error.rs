//! The error type of `ldl-train`.

/// Everything that can stop a training run. Messages name the config key, the file and
/// line, or the sample.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad config: the message names the file, the key and what to change.
    #[error("config {0}")]
    Config(String),

    /// Writing the run's outputs failed.
    #[error("{path}: {message}")]
    Output {
        /// The file or folder.
        path: String,
        /// What happened.
        message: String,
    },

    /// The user asked the run to stop (Ctrl-C); the last completed epoch is saved.
    #[error("stopped after epoch {epoch}; continue with `ldl train --resume {run_dir}`")]
    Interrupted {
        /// The run folder.
        run_dir: String,
        /// The last completed epoch.
        epoch: usize,
    },

    /// Saving the run failed (a full disk, a file-size limit, an I/O error). The folder
    /// still holds the last committed epoch, and `--resume` continues from it.
    #[error(
        "{cause}; the run stopped, keeping epoch {epoch}: fix the cause (free space, lift \
         the file-size limit) and run `ldl train --resume {run_dir}`"
    )]
    Save {
        /// What failed: the file and the system's reason.
        cause: String,
        /// The run folder.
        run_dir: String,
        /// The last committed epoch (0: the initial weights).
        epoch: usize,
    },

    /// A file of a run folder that is missing or not as `ldl train` writes it: the
    /// message names the file (and line), what is wrong, and what to do.
    #[error("{file}{}: {problem}; {fix}", .line.map(|n| format!(" line {n}")).unwrap_or_default())]
    RunFolder {
        /// The file (`RUN_DIR/metrics.jsonl`).
        file: String,
        /// The 1-based line, when one line is at fault.
        line: Option<usize>,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },

    /// A loss or gradient turned NaN or infinite.
    #[error("{0}")]
    Numeric(String),

    /// An input that does not fit what was asked (a table for an image model, a folder
    /// that is not a run): the message says what to give instead.
    #[error("{0}")]
    Usage(String),

    /// From the data.
    #[error(transparent)]
    Data(#[from] ldl_data::Error),

    /// From the models.
    #[error(transparent)]
    Model(#[from] ldl_models::Error),

    /// From the label space, losses or metrics.
    #[error(transparent)]
    Core(#[from] ldl_core::Error),

    /// From the Hub (an `hf://` checkpoint). Boxed: the Hub's errors carry several strings,
    /// and every `Result` of ldl-train would otherwise be as large.
    #[error(transparent)]
    Hub(Box<ldl_hub::Error>),

    /// From candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// From data-parallel training (a launch that cannot train together).
    #[error(transparent)]
    Distributed(#[from] ldl_distributed::Error),
}

impl From<ldl_hub::Error> for Error {
    fn from(error: ldl_hub::Error) -> Self {
        Error::Hub(Box::new(error))
    }
}

impl Error {
    pub(crate) fn output(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        Error::Output {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
