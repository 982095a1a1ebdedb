//! Tensor building blocks shared by the losses: a stable log-softmax, a stable
//! log-sum-exp, the bin offsets from each sample's target, and moments.
//!
//! Everything here works on `(batch, K)` tensors of any float dtype.

use candle_core::{DType, Tensor, D};

use crate::axis::{Axis, AxisKind};
use crate::error::Result;

/// `log softmax(z)` along the last dimension.
///
/// The max is detached: it only shifts the logits for stability, and the result does
/// not depend on it, so no gradient should flow through it (candle's own version lets
/// one flow, which is exact only up to rounding and costs a backward pass).
pub(crate) fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_sum)?)
}

/// `log Σ exp(x)` along the last dimension, keeping it (shape `(batch, 1)`).
pub(crate) fn log_sum_exp_keepdim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let sum = x.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    Ok((sum.log()? + max)?)
}

/// `Σ_k p_k ln p_k` per row, with `0 · ln 0 = 0`, as a constant (no gradient).
pub(crate) fn negative_entropy(pmf: &Tensor) -> Result<Tensor> {
    // In f16/bf16 the floor below would round to 0 (and 0 · ln 0 is NaN): work in f32.
    let wide = match pmf.dtype() {
        DType::F16 | DType::BF16 => pmf.to_dtype(DType::F32)?,
        _ => pmf.clone(),
    };
    // ln of the smallest normal f32 is finite, and 0 · finite = 0 exactly.
    let safe = wide.maximum(f32::MIN_POSITIVE as f64)?;
    let sum = (&wide * safe.log()?)?.sum(D::Minus1)?;
    Ok(sum.to_dtype(pmf.dtype())?.detach())
}

/// Offsets of the bin centres from each sample's target value, in bins:
/// `d_bk = (l_k − y_b) / Δ`, wrapped into half a period on circular axes. Shape
/// `(batch, K)`, a constant.
///
/// Measuring in bins from the target makes every unit-free term exactly what it is in
/// any other unit, and keeps f32 sums well conditioned.
pub(crate) fn offsets_in_bins(axis: &Axis, value: &Tensor) -> Result<Tensor> {
    let step = axis.step();
    let dtype = value.dtype();
    let centers: Vec<f64> = axis.centers().iter().map(|c| c / step).collect();
    let centers = Tensor::from_vec(centers, (1, axis.len()), value.device())?.to_dtype(dtype)?;
    let value = value.detach().affine(1.0 / step, 0.0)?.unsqueeze(1)?;
    let offsets = centers.broadcast_sub(&value)?;
    let offsets = match axis.kind() {
        AxisKind::Circular { period } => {
            let period = period / step;
            // ceil(d/P − ½) turns: lands in (−P/2, P/2] like `Axis::difference`, so a
            // bin exactly opposite the label is always at +P/2, wherever the axis starts.
            let turns = offsets.affine(1.0 / period, -0.5)?.ceil()?;
            (offsets - turns.affine(period, 0.0)?)?
        }
        _ => offsets,
    };
    Ok(offsets.detach())
}

/// Mean and variance of each row's distribution over the offsets `d`: `(μ, v)`, each
/// of shape `(batch,)`. The variance is taken around the mean (not `E[d²] − μ²`),
/// which stays accurate in f32.
pub(crate) fn moments(pmf: &Tensor, offsets: &Tensor) -> Result<(Tensor, Tensor)> {
    let mean = (pmf * offsets)?.sum(D::Minus1)?;
    let centred = offsets.broadcast_sub(&mean.unsqueeze(1)?)?;
    let variance = (pmf * centred.sqr()?)?.sum(D::Minus1)?;
    Ok((mean, variance))
}

/// True for the floating-point dtypes the losses accept.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}
