//! One error type for programs that use several parts of ldl.
//!
//! Each crate of the workspace has its own error enum, precise about its own failures.
//! A program that builds a label space, reads data, trains and saves a model meets
//! several of them; [`Error`] takes each (`?` converts), so such a program can return
//! `ldl::Result<T>` throughout. The message is the crate's own.
//!
//! ```
//! use std::path::Path;
//!
//! fn age_model(config: &Path) -> ldl::Result<usize> {
//!     let axis = ldl::Axis::linear("age", 0.0, 100.0, 1.0)?; // a label-space error
//!     let config = ldl::train::Config::load(config, &[])?; // a config error
//!     Ok(axis.len() + config.task.axes.len())
//! }
//!
//! let err = age_model(Path::new("no-such-config.toml")).unwrap_err();
//! assert!(matches!(err, ldl::Error::Train(_)));
//! assert!(err.to_string().contains("no-such-config.toml"), "{err}");
//! ```

/// Any error of ldl's crates, or of candle or the file system beneath them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Label axes, label spaces, targets, losses and metrics.
    #[error(transparent)]
    Core(#[from] ldl_core::Error),
    /// Reading a file a user named.
    #[error(transparent)]
    File(#[from] ldl_core::files::FileError),
    /// Tables, images, splits, standardisation and batches.
    #[error(transparent)]
    Data(#[from] ldl_data::Error),
    /// Models, checkpoints and devices.
    #[error(transparent)]
    Models(#[from] ldl_models::Error),
    /// Task configs, training, evaluation, run folders, plots and exports.
    #[error(transparent)]
    Train(#[from] ldl_train::Error),
    /// The Hugging Face Hub (boxed: its errors carry several strings, and every
    /// `Result` would otherwise be as large).
    #[error(transparent)]
    Hub(Box<ldl_hub::Error>),
    /// A tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The file system.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ldl_hub::Error> for Error {
    fn from(error: ldl_hub::Error) -> Self {
        Error::Hub(Box::new(error))
    }
}

/// A result of [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
