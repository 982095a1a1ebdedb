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

/// SyncBN's sum over the ranks, with this rank's and the whole batch's values per channel.
pub(crate) struct RankCounts {
    pub sum: SharedSum,
    /// This rank's values per channel.
    pub local: usize,
    /// The whole batch's values per channel.
    pub global: usize,
}

/// The whole batch's mean and biased variance per channel, and its values per channel,
/// from this rank's (over `count` values per channel) and the other ranks'. One sum of
/// `2C + 1` numbers: `n·μ`, `n·(σ² + μ²)` and `n`.
pub(crate) fn sum_statistics(
    mean: &[f64],
    variance: &[f64],
    count: usize,
    sum: &dyn CrossRankSum,
) -> candle_core::Result<(Vec<f64>, Vec<f64>, usize)> {
    let n = count as f64;
    let channels = mean.len();
    let mut buffer = Vec::with_capacity(2 * channels + 1);
    buffer.extend(mean.iter().map(|m| n * m));
    buffer.extend(mean.iter().zip(variance).map(|(m, v)| n * (v + m * m)));
    buffer.push(n);
    sum.sum(&mut buffer).map_err(candle_core::Error::Msg)?;
    let total = buffer[2 * channels];
    if total <= 0.0 {
        candle_core::bail!("SyncBN: no values in the batch on any rank");
    }
    let mean: Vec<f64> = buffer[..channels].iter().map(|s| s / total).collect();
    let variance = buffer[channels..2 * channels]
        .iter()
        .zip(&mean)
        .map(|(s, m)| (s / total - m * m).max(0.0))
        .collect();
    Ok((mean, variance, total.round() as usize))
}

/// Replaces this rank's gradient sums (Σg, Σg·x̂ per channel) with the whole batch's, in
/// this rank's scale.
///
/// Each rank's `g` is the gradient of the mean loss over its own `n_r` samples, and the
/// trainer weighs rank `r`'s parameter gradients by `n_r/N`: the whole batch's `g` is
/// `(n_r/N)·g_r`. So each rank adds its sums scaled by `n_r/N` and scales the total back by
/// `N/n_s`, which keeps `dx` right when the parts differ in size (a last batch of 17 over
/// two ranks), and is a sum times one when they are equal.
pub(crate) fn sum_gradient_sums(sums: &mut [f64], counts: &RankCounts) -> candle_core::Result<()> {
    if counts.local == 0 || counts.global == 0 {
        candle_core::bail!("SyncBN: a rank with no values joined the backward pass");
    }
    let share = counts.local as f64 / counts.global as f64;
    sums.iter_mut().for_each(|s| *s *= share);
    counts.sum.sum(sums).map_err(candle_core::Error::Msg)?;
    sums.iter_mut().for_each(|s| *s /= share);
    Ok(())
}
