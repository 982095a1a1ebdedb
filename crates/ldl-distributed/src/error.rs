//! The error type of `ldl-distributed`.

/// What can go wrong setting up or running collectives.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine is not built into this binary, or cannot start.
    #[error("distributed training: {0}")]
    Unavailable(String),

    /// A launch that cannot train together (one process, mismatched ranks).
    #[error("distributed training: {0}")]
    Launch(String),

    /// Buffers that do not fit what the operation needs.
    #[error("distributed training, rank {rank}: {message}")]
    Mismatch {
        /// The rank that found it.
        rank: usize,
        /// What does not fit.
        message: String,
    },

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
