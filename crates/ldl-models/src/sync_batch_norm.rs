//! Synchronised BatchNorm (SyncBN) for data-parallel training: each rank holds part of the
//! batch, and BatchNorm's statistics, and the two sums its gradient needs, are summed over
//! the ranks, so that every rank normalises with the whole batch's mean and variance, as
//! one process training on the whole batch would.
//!
//! The model knows the ranks only through [`CrossRankSum`]; `ldl-train` gives it one over
//! its collective. Each rank's loss is taken to be the mean over its own samples, and its
//! gradients to be weighed by its share of the batch when they are averaged (as the trainer
//! does), so parts of different sizes (a last batch of 17 over two ranks) are handled; a
//! rank with no samples in a batch cannot join it (the trainer drops such a last batch).
//! It serves the image networks' BatchNorm and the MLP's alike.

use std::sync::Arc;

/// Element-wise sums over the ranks of data-parallel training.
pub trait CrossRankSum: Send + Sync {
    /// Replaces `values` on every rank with their element-wise sum over the ranks; every
    /// rank calls it with the same length at the same point.
    fn sum(&self, values: &mut [f64]) -> Result<(), String>;
}

/// A [`CrossRankSum`] the BatchNorm layers of a model share.
pub type SharedSum = Arc<dyn CrossRankSum>;
