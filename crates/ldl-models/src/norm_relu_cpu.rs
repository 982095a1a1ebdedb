//! BatchNorm followed by ReLU as one CPU pass forward and one backward, for `(N, C, H, W)`
//! f32/f64 tensors.
//!
//! candle's BatchNorm in training mode transposes the batch to channels-first, copies
//! it, and runs about ten broadcast ops, each allocating a tensor the size of the
//! activations; with the ReLU and their gradients this costs as much as the convolution
//! it follows. Here the forward pass reads the input twice (statistics, then output) and
//! the backward pass three times, with per-channel sums in f64.
//!
//! Training mode (`batch statistics`): `x̂ = (x − μ)/σ`, `y = max(0, γx̂ + β)`, and with
//! `g = dy·[y > 0]` over the `M = N·H·W` values of a channel
//! `dβ = Σg`, `dγ = Σg·x̂`, `dx = γ/σ · (g − Σg/M − x̂·Σ(g·x̂)/M)`.
//! Evaluation mode uses the running statistics as constants: `dx = γ/σ · g`.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::cpu_float::CpuFloat;
use crate::cpu_storage::{filled_by, map3, slice};
use crate::order::Order;
use crate::sync_batch_norm::{CrossRankSum, RankCounts};

mod channels_last;

/// Per-channel statistics the op normalises with, in f64.
#[derive(Debug, Clone)]
pub(crate) struct ChannelStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Biased variance per channel.
    pub variance: Vec<f64>,
}

impl ChannelStats {
    /// The whole batch's statistics from this rank's (over `count` values per channel) and
    /// the other ranks' (SyncBN), and the whole batch's count per channel.
    pub(crate) fn summed_over_ranks(
        &self,
        count: usize,
        sum: &dyn CrossRankSum,
    ) -> candle_core::Result<(ChannelStats, usize)> {
        let (mean, variance, total) =
            crate::sync_batch_norm::sum_statistics(&self.mean, &self.variance, count, sum)?;
        Ok((ChannelStats { mean, variance }, total))
    }
}

/// Whether `x` (with `gamma`, `beta`) can take the fused path.
pub(crate) fn supported(x: &Tensor, gamma: &Tensor) -> bool {
    x.device().is_cpu()
        && x.rank() == 4
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && gamma.dtype() == x.dtype()
}

/// Batch mean and biased variance per channel of an `(N, C, H, W)` tensor, or of an
/// `(N, H, W, C)` one in channels last.
pub(crate) fn channel_stats(x: &Tensor, order: Order) -> candle_core::Result<ChannelStats> {
    let (batch, channels, plane) = dims(x.dims(), order)?;
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("norm-relu: expected a CPU tensor");
    };
    let dims = (batch, channels, plane);
    match (cpu, order) {
        (CpuStorage::F32(v), Order::Planes) => Ok(stats_of(slice(v, layout, "norm-relu")?, dims)),
        (CpuStorage::F64(v), Order::Planes) => Ok(stats_of(slice(v, layout, "norm-relu")?, dims)),
        (CpuStorage::F32(v), Order::ChannelsLast) => Ok(channels_last::stats(
            slice(v, layout, "norm-relu")?,
            channels,
        )),
        (CpuStorage::F64(v), Order::ChannelsLast) => Ok(channels_last::stats(
            slice(v, layout, "norm-relu")?,
            channels,
        )),
        _ => candle_core::bail!("norm-relu: expected f32 or f64"),
    }
}

/// `(N, C, pixels per channel and sample)` of a 4-D activation in `order`.
pub(crate) fn dims(shape: &[usize], order: Order) -> candle_core::Result<(usize, usize, usize)> {
    let &[n, a, b, c] = shape else {
        candle_core::bail!("norm-relu: expected a 4-D tensor, got {shape:?}");
    };
    Ok(match order {
        Order::Planes => (n, a, b * c),
        Order::ChannelsLast => (n, c, a * b),
    })
}

fn stats_of<T: CpuFloat>(x: &[T], (batch, channels, plane): (usize, usize, usize)) -> ChannelStats {
    let count = (batch * plane) as f64;
    let (mean, variance) = (0..channels)
        .into_par_iter()
        .map(|c| {
            // Two passes, as candle does: the mean, then the centred squares. One pass
            // (Σx² − (Σx)²/M) cancels badly when the mean is far from zero.
            let blocks = || (0..batch).map(|n| &x[(n * channels + c) * plane..][..plane]);
            let mean = blocks()
                .map(|block| lane_sum(plane, |i| block[i]))
                .sum::<f64>()
                / count;
            let centre = T::from_f64(mean);
            let squares: f64 = blocks()
                .map(|block| lane_sum(plane, |i| (block[i] - centre) * (block[i] - centre)))
                .sum();
            // `centre` is the mean rounded to T; correct for the rounding.
            let offset = mean - centre.to_f64();
            (mean, (squares / count - offset * offset).max(0.0))
        })
        .unzip();
    ChannelStats { mean, variance }
}

/// `(x, γ, β) → max(0, γ(x − μ)/σ + β)` with the statistics fixed at construction.
pub(crate) struct NormRelu {
    pub stats: ChannelStats,
    pub eps: f64,
    /// True when the statistics are the batch's own (training), so the gradient flows
    /// through them too.
    pub batch_statistics: bool,
    /// SyncBN: the statistics are the whole batch's over the ranks, whose gradient sums
    /// the backward pass sums over the ranks too.
    pub sync: Option<RankCounts>,
    /// How the activations lie (the gradients likewise).
    pub order: Order,
}

impl NormRelu {
    fn inv_std(&self) -> Vec<f64> {
        self.stats
            .variance
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect()
    }
}

fn vector(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Independent partial sums: a single running sum is one long dependency chain that
/// cannot vectorise.
const LANES: usize = 8;

/// `Σ f(i)` over `0..len` in `LANES` partial sums of `T`, returned in f64.
#[inline(always)]
fn lane_sum<T: CpuFloat>(len: usize, mut f: impl FnMut(usize) -> T) -> f64 {
    let mut lanes = [T::ZERO; LANES];
    let full = len - len % LANES;
    for base in (0..full).step_by(LANES) {
        for (l, lane) in lanes.iter_mut().enumerate() {
            *lane += f(base + l);
        }
    }
    let tail: f64 = (full..len).map(|i| f(i).to_f64()).sum();
    lanes.iter().map(|v| v.to_f64()).sum::<f64>() + tail
}

/// Two sums `(Σ f(i).0, Σ f(i).1)` as [`lane_sum`] computes one.
#[inline(always)]
fn lane_sum2<T: CpuFloat>(len: usize, mut f: impl FnMut(usize) -> (T, T)) -> (f64, f64) {
    let mut first = [T::ZERO; LANES];
    let mut second = [T::ZERO; LANES];
    let full = len - len % LANES;
    for base in (0..full).step_by(LANES) {
        for l in 0..LANES {
            let (a, b) = f(base + l);
            first[l] += a;
            second[l] += b;
        }
    }
    let (mut tail_a, mut tail_b) = (0.0, 0.0);
    for i in full..len {
        let (a, b) = f(i);
        tail_a += a.to_f64();
        tail_b += b.to_f64();
    }
    let total = |lanes: [T; LANES]| lanes.iter().map(|v| v.to_f64()).sum::<f64>();
    (total(first) + tail_a, total(second) + tail_b)
}

/// `dy` where the ReLU passed its input (`y > 0`), else 0: a select, not a branch (about
/// half the activations are zero, and a mispredicted branch per element costs more than
/// the arithmetic).
#[inline(always)]
pub(crate) fn relu_gradient<T: CpuFloat>(y: T, dy: T) -> T {
    if y > T::ZERO {
        dy
    } else {
        T::ZERO
    }
}

/// `max(0, scale·x + shift)` per channel, the per-element loop in `T`.
fn forward<T: CpuFloat>(
    x: &[T],
    scale: &[f64],
    shift: &[f64],
    plane: usize,
    order: Order,
) -> Vec<T> {
    if order == Order::ChannelsLast {
        return channels_last::forward(x, scale, shift);
    }
    let channels = scale.len();
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(block, (out, input))| {
                let c = block % channels;
                let (a, b) = (T::from_f64(scale[c]), T::from_f64(shift[c]));
                for (o, &v) in out.iter_mut().zip(input) {
                    let z = a * v + b;
                    o.write(if z > T::ZERO { z } else { T::ZERO });
                }
            })
    };
    // SAFETY: `fill` writes all `x.len()` elements: the blocks of `y` pair with the
    // equally long blocks of `x`, and each output element with one input element.
    unsafe { filled_by(x.len(), fill) }
}

impl CustomOp3 for NormRelu {
    fn name(&self) -> &'static str {
        "ldl-norm-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, _, plane) = dims(l1.shape().dims(), self.order)?;
        let gamma = to_f64(s2, l2)?;
        let beta = to_f64(s3, l3)?;
        let inv_std = self.inv_std();
        let scale: Vec<f64> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
        let shift: Vec<f64> = (0..scale.len())
            .map(|c| beta[c] - self.stats.mean[c] * scale[c])
            .collect();
        let order = self.order;
        let out = match s1 {
            CpuStorage::F32(v) => CpuStorage::F32(forward(
                slice(v, l1, self.name())?,
                &scale,
                &shift,
                plane,
                order,
            )),
            CpuStorage::F64(v) => CpuStorage::F64(forward(
                slice(v, l1, self.name())?,
                &scale,
                &shift,
                plane,
                order,
            )),
            _ => candle_core::bail!("norm-relu: expected f32 or f64"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, d_gamma, d_beta) = self.gradients(x, gamma, y, dy, x.track_op())?;
        Ok((dx, Some(d_gamma), Some(d_beta)))
    }
}

impl NormRelu {
    /// `(dx, dγ, dβ)` for input `x`, output `y` and output gradient `dy`; `dx` only when
    /// `input_gradient` asks for it.
    pub(crate) fn gradients(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        input_gradient: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
        let (x, y, dy) = (x.contiguous()?, y.contiguous()?, dy.contiguous()?);
        let sums_op = GradientSums {
            mean: self.stats.mean.clone(),
            inv_std: self.inv_std(),
            order: self.order,
        };
        // Row 0: Σg, row 1: Σg·x̂, per channel: this rank's, for its dγ and dβ (which the
        // trainer averages over the ranks with the other gradients).
        let sums = x.apply_op3_no_bwd(&y, &dy, &sums_op)?;
        let d_beta = sums.get(0)?.to_dtype(gamma.dtype())?;
        let d_gamma = sums.get(1)?.to_dtype(gamma.dtype())?;
        if !input_gradient {
            return Ok((None, d_gamma, d_beta));
        }
        let mut sums = vector(&sums)?;
        // SyncBN: dx depends on the whole batch's sums.
        let count = match &self.sync {
            Some(counts) if self.batch_statistics => {
                crate::sync_batch_norm::sum_gradient_sums(&mut sums, counts)?;
                Some(counts.global)
            }
            _ => None,
        };
        let channels = sums_op.mean.len();
        let input_op = InputGradient {
            mean: sums_op.mean,
            inv_std: sums_op.inv_std,
            gamma: vector(gamma)?,
            sum_g: sums[..channels].to_vec(),
            sum_g_xhat: sums[channels..].to_vec(),
            batch_statistics: self.batch_statistics,
            count,
            order: self.order,
        };
        let dx = x.apply_op3_no_bwd(&y, &dy, &input_op)?;
        Ok((Some(dx), d_gamma, d_beta))
    }
}

fn to_f64(s: &CpuStorage, l: &Layout) -> candle_core::Result<Vec<f64>> {
    fn widened<T: CpuFloat>(v: &[T]) -> Vec<f64> {
        v.iter().map(|&x| x.to_f64()).collect()
    }
    match s {
        CpuStorage::F32(v) => Ok(widened(slice(v, l, "norm-relu")?)),
        CpuStorage::F64(v) => Ok(widened(slice(v, l, "norm-relu")?)),
        _ => candle_core::bail!("norm-relu: expected f32 or f64"),
    }
}

/// `(x, y, dy) → [[Σg], [Σg·x̂]]` per channel, `g = dy·[y > 0]`.
struct GradientSums {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    order: Order,
}

fn gradient_sums<T: CpuFloat>(
    x: &[T],
    y: &[T],
    dy: &[T],
    op: &GradientSums,
    batch: usize,
    plane: usize,
) -> Vec<T> {
    if op.order == Order::ChannelsLast {
        return channels_last::gradient_sums(x, y, dy, &op.mean, &op.inv_std);
    }
    let channels = op.mean.len();
    let (sum_g, sum_g_xhat): (Vec<f64>, Vec<f64>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let mean = T::from_f64(op.mean[c]);
            let (mut s, mut t) = (0.0, 0.0);
            for n in 0..batch {
                let start = (n * channels + c) * plane;
                let (x, y, dy) = (
                    &x[start..start + plane],
                    &y[start..start + plane],
                    &dy[start..start + plane],
                );
                // One pass for both sums: the three inputs are read once.
                // Centred before multiplying, so Σg·x̂ does not cancel when |μ| ≫ σ.
                let (sum_g, sum_g_x) = lane_sum2(plane, |i| {
                    let g = relu_gradient(y[i], dy[i]);
                    (g, g * (x[i] - mean))
                });
                s += sum_g;
                t += sum_g_x;
            }
            (s, t * op.inv_std[c])
        })
        .unzip();
    sum_g
        .into_iter()
        .chain(sum_g_xhat)
        .map(T::from_f64)
        .collect()
}

impl CustomOp3 for GradientSums {
    fn name(&self) -> &'static str {
        "ldl-norm-relu-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, channels, plane) = dims(l1.shape().dims(), self.order)?;
        let out = map3(
            self.name(),
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, y, dy| gradient_sums(x, y, dy, self, batch, plane),
            |x, y, dy| gradient_sums(x, y, dy, self, batch, plane),
        )?;
        Ok((out, Shape::from((2, channels))))
    }
}

/// `(x, y, dy) → dx`.
struct InputGradient {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    gamma: Vec<f64>,
    sum_g: Vec<f64>,
    sum_g_xhat: Vec<f64>,
    batch_statistics: bool,
    /// The values per channel the sums are over, when not this tensor's (SyncBN).
    count: Option<usize>,
    order: Order,
}

impl InputGradient {
    /// Per channel, `dx = a·g + slope·x + offset`: `a·(g − mean_g − x̂·mean_g_xhat)`
    /// expanded, with the means over the `count` values per channel (zero in evaluation
    /// mode, where the statistics are constants).
    fn coefficients(&self, count: usize) -> Vec<(f64, f64, f64)> {
        (0..self.mean.len())
            .map(|c| {
                let a = self.gamma[c] * self.inv_std[c];
                let (mean_g, mean_g_xhat) = if self.batch_statistics {
                    (
                        self.sum_g[c] / count as f64,
                        self.sum_g_xhat[c] / count as f64,
                    )
                } else {
                    (0.0, 0.0)
                };
                let slope = -a * self.inv_std[c] * mean_g_xhat;
                let offset = -a * mean_g - slope * self.mean[c];
                (a, slope, offset)
            })
            .collect()
    }
}

fn input_gradient<T: CpuFloat>(
    x: &[T],
    y: &[T],
    dy: &[T],
    op: &InputGradient,
    count: usize,
    plane: usize,
) -> Vec<T> {
    let coefficients = op.coefficients(count);
    if op.order == Order::ChannelsLast {
        return channels_last::input_gradient(x, y, dy, &coefficients);
    }
    let channels = op.mean.len();
    let fill = |dx: &mut [MaybeUninit<T>]| {
        dx.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(block, out)| {
                let (a, slope, offset) = coefficients[block % channels];
                let (a, slope, offset) = (T::from_f64(a), T::from_f64(slope), T::from_f64(offset));
                let range = block * plane..(block + 1) * plane;
                for ((o, &x), (&y, &dy)) in out
                    .iter_mut()
                    .zip(&x[range.clone()])
                    .zip(y[range.clone()].iter().zip(&dy[range]))
                {
                    o.write(a * relu_gradient(y, dy) + slope * x + offset);
                }
            })
    };
    // SAFETY: `fill` writes all `x.len()` elements: every block of `dx` is `plane` long
    // and zips with `plane` elements each of `x`, `y` and `dy` (the indexing panics,
    // before anything is returned, if one of them is shorter).
    unsafe { filled_by(x.len(), fill) }
}

impl CustomOp3 for InputGradient {
    fn name(&self) -> &'static str {
        "ldl-norm-relu-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, _, plane) = dims(l1.shape().dims(), self.order)?;
        let count = self.count.unwrap_or(batch * plane);
        let out = map3(
            self.name(),
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, y, dy| input_gradient(x, y, dy, self, count, plane),
            |x, y, dy| input_gradient(x, y, dy, self, count, plane),
        )?;
        Ok((out, l1.shape().clone()))
    }
}
