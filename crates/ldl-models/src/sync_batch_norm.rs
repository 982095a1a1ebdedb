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

use crate::norm_relu_cpu::ChannelStats;

/// Element-wise sums over the ranks of data-parallel training.
pub trait CrossRankSum: Send + Sync {
    /// Replaces `values` on every rank with their element-wise sum over the ranks; every
    /// rank calls it with the same length at the same point.
    fn sum(&self, values: &mut [f64]) -> Result<(), String>;
}

/// A [`CrossRankSum`] the BatchNorm layers of a model share.
pub type SharedSum = Arc<dyn CrossRankSum>;

/// The whole batch's statistics from this rank's (`local`, over `count` values per
/// channel) and the other ranks', and the whole batch's count per channel. One sum of
/// `2C + 1` numbers: `n·μ`, `n·(σ² + μ²)` and `n`.
pub(crate) fn global_stats(
    local: &ChannelStats,
    count: usize,
    sum: &dyn CrossRankSum,
) -> candle_core::Result<(ChannelStats, usize)> {
    let n = count as f64;
    let channels = local.mean.len();
    let mut buffer = Vec::with_capacity(2 * channels + 1);
    buffer.extend(local.mean.iter().map(|m| n * m));
    buffer.extend(
        local
            .mean
            .iter()
            .zip(&local.variance)
            .map(|(m, v)| n * (v + m * m)),
    );
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
    Ok((ChannelStats { mean, variance }, total.round() as usize))
}
