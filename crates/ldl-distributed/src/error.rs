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

    /// A collective that waited past the timeout for the other ranks.
    #[error(
        "distributed training, rank {rank} of {world}: {what} waited {seconds} s for the other \
         ranks; one of them stopped or is stuck, so this rank stops now (resume with --resume \
         once all ranks can run)"
    )]
    Timeout {
        /// The rank that waited.
        rank: usize,
        /// How many ranks train together.
        world: usize,
        /// The operation.
        what: String,
        /// How long it waited.
        seconds: u64,
    },

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
