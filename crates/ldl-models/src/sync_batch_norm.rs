//! Synchronised BatchNorm (SyncBN) for data-parallel training: each rank holds part of the
//! batch, and BatchNorm's statistics, and the two sums its gradient needs, are summed over
//! the ranks, so that every rank normalises with the whole batch's mean and variance, as
//! one process training on the whole batch would.
//!
//! The model knows the ranks only through [`CrossRankSum`]; `ldl-train` gives it one over
//! its collective. Equal parts per rank are assumed: the backward pass divides the summed
//! gradient sums by the whole batch's size, which is right when every rank's loss is the
//! mean over the same number of samples (the trainer drops a last batch that would split
//! unevenly).

use std::sync::Arc;

/// Element-wise sums over the ranks of data-parallel training.
pub trait CrossRankSum: Send + Sync {
    /// Replaces `values` on every rank with their element-wise sum over the ranks; every
    /// rank calls it with the same length at the same point.
    fn sum(&self, values: &mut [f64]) -> Result<(), String>;
}

/// A [`CrossRankSum`] the BatchNorm layers of a model share.
pub type SharedSum = Arc<dyn CrossRankSum>;
