//! The one error type of `ldl-core`.

/// Everything that can go wrong when defining label spaces, encoding labels or
/// computing losses and metrics.
///
/// Every message names the axis (and, where there is one, the sample) and says what
/// to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An axis was defined with impossible parameters (e.g. `min >= max`, `step <= 0`).
    #[error("axis `{axis}`: {message}")]
    InvalidAxis {
        /// The axis name.
        axis: String,
        /// What is wrong and what to change.
        message: String,
    },

    /// A label space was defined inconsistently (no axes, duplicate names, …).
    #[error("label space: {0}")]
    InvalidLabelSpace(String),

    /// A label could not be turned into a target distribution on its axis.
    #[error("{}axis `{axis}`: {message}", sample_prefix(*.sample))]
    InvalidLabel {
        /// The axis name.
        axis: String,
        /// Index of the sample in the batch or dataset, when known.
        sample: Option<usize>,
        /// What is wrong and what to change.
        message: String,
    },

    /// Tensors handed to a loss or a metric do not fit the label space.
    #[error("{0}")]
    Shape(String),

    /// A model's prediction that cannot be evaluated (e.g. a non-finite probability).
    #[error("axis `{axis}`: {message}")]
    InvalidPrediction {
        /// The axis name.
        axis: String,
        /// What is wrong.
        message: String,
    },

    /// An invalid loss or metric option (e.g. a negative λ), or a std that is not finite
    /// and > 0 ([`crate::PositiveStd::new`]).
    #[error("{0}")]
    InvalidOption(String),

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn sample_prefix(sample: Option<usize>) -> String {
    match sample {
        Some(i) => format!("sample {i}: "),
        None => String::new(),
    }
}

impl Error {
    /// Attaches a sample index to a label error, so a message says which sample was bad.
    pub fn at_sample(self, index: usize) -> Self {
        match self {
            Error::InvalidLabel { axis, message, .. } => Error::InvalidLabel {
                axis,
                sample: Some(index),
                message,
            },
            Error::Shape(message) => Error::Shape(format!("sample {index}: {message}")),
            other => other,
        }
    }

    pub(crate) fn at_batch_row(self, row: usize) -> Self {
        match self {
            Error::InvalidPrediction { axis, message } => Error::InvalidPrediction {
                axis,
                message: format!("batch row {row}: {message}"),
            },
            other => other,
        }
    }

    pub(crate) fn axis(axis: &str, message: impl Into<String>) -> Self {
        Error::InvalidAxis {
            axis: axis.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn label(axis: &str, message: impl Into<String>) -> Self {
        Error::InvalidLabel {
            axis: axis.to_string(),
            sample: None,
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
