//! The full-KL loss of one linear or circular axis as a single fused CPU kernel, with an
//! analytic backward pass.
//!
//! The composed version in `full_kl.rs` runs about forty small tensor ops per axis, each
//! allocating a `(batch, K)` tensor, and as many again backwards. This kernel does one
//! pass per row for the forward and one for the backward. The two are checked against
//! each other (values and gradients) in `tests/fused_kernel.rs`, and the kernel against
//! finite differences in `tests/loss_gradients.rs`.

// The row loops walk several slices in step (z, p, q, ln q, offsets); indices read
// more plainly there than nested zips.
#![allow(clippy::needless_range_loop)]

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Per-row outputs: `[ld, exp, smooth]`.
pub(crate) const PARTS: usize = 3;

/// The fused op. Inputs: logits `(B, K)`, target pmf `(B, K)`, target value `(B,)` in the
/// axis unit. Output: `(B, 3)` with `ld, exp, smooth` per row, in the logits' dtype.
pub(crate) struct FullKlCpu {
    /// Bin centres divided by the bin width.
    pub centers_in_bins: Vec<f64>,
    /// The bin width in the axis unit.
    pub step: f64,
    /// The period in bins, on circular axes.
    pub period_in_bins: Option<f64>,
    /// Nominal target variances in bins², one per row (`TargetMoments::Nominal`); `None`
    /// for moments from the target pmf.
    pub nominal_variance: Option<Vec<f64>>,
    /// The variance floor in bins².
    pub floor: f64,
    /// `Some(floor)` for the relative smoothness term of [`super::FullKlRelative`] (the
    /// floor of both roughnesses, in nats); `None` for the full-KL loss's own.
    pub relative_smoothness: Option<f64>,
}

/// Per-row working memory, reused across the rows a thread handles.
struct Scratch {
    log_q: Vec<f64>,
    q: Vec<f64>,
    offsets: Vec<f64>,
    /// `ln p`, with zeros raised to [`SMALLEST_TARGET`], for the target's roughness.
    log_p: Vec<f64>,
    /// `a`, `ln a`, `b`, `ln b` of the smoothness term; the backward pass overwrites
    /// `log_a` and `log_b` with the partial derivatives with respect to them.
    a: Vec<f64>,
    log_a: Vec<f64>,
    b: Vec<f64>,
    log_b: Vec<f64>,
    grad_log_q: Vec<f64>,
}

impl Scratch {
    fn new(bins: usize) -> Scratch {
        let buffer = || vec![0.0; bins];
        Scratch {
            log_q: buffer(),
            q: buffer(),
            offsets: buffer(),
            log_p: buffer(),
            a: buffer(),
            log_a: buffer(),
            b: buffer(),
            log_b: buffer(),
            grad_log_q: buffer(),
        }
    }
}

/// A row's loss parts and the moments its backward pass needs.
struct RowStats {
    parts: [f64; PARTS],
    mean_q: f64,
    var_q: f64,
    mean_p: f64,
    var_p: f64,
    /// `∂ smooth-part / ∂ S(q)`: 1 for the full-KL loss's own term, the derivative of the
    /// relative term otherwise.
    smooth_weight: f64,
}

/// Below this, a renormalising sum is recomputed in log space instead of divided by.
const TINY: f64 = 1e-250;

/// Target probabilities below this are raised to it in the target's roughness `S(p)`:
/// `S` of a distribution with exact zeros next to non-zero bins is infinite, and a
/// Gaussian target's far tails underflow to 0. The smallest normal f32, as in the
/// composed version, so that both give the same value on every device.
pub(crate) const SMALLEST_TARGET: f64 = f32::MIN_POSITIVE as f64;

impl FullKlCpu {
    fn fill_offsets(&self, value: f64, offsets: &mut [f64]) {
        let centre = value / self.step;
        for (d, c) in offsets.iter_mut().zip(&self.centers_in_bins) {
            let raw = c - centre;
            *d = match self.period_in_bins {
                // As the composed version: into (−P/2, P/2], ties at +P/2.
                Some(period) => raw - (raw / period - 0.5).ceil() * period,
                None => raw,
            };
        }
    }

    /// The forward pass of one row; leaves `q`, `ln q`, the offsets and the smoothness
    /// distributions in `s`.
    fn row(&self, index: usize, z: &[f64], p: &[f64], value: f64, s: &mut Scratch) -> RowStats {
        let k = z.len();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for (q, x) in s.q.iter_mut().zip(z) {
            *q = (x - max).exp();
            sum += *q;
        }
        let log_sum = sum.ln() + max;
        for i in 0..k {
            s.q[i] /= sum;
            s.log_q[i] = z[i] - log_sum;
        }

        let mut ld = 0.0;
        for i in 0..k {
            let entropy = if p[i] > 0.0 { p[i] * p[i].ln() } else { 0.0 };
            ld += entropy - p[i] * s.log_q[i];
        }

        self.fill_offsets(value, &mut s.offsets);
        let (mean_q, var_q) = moments(&s.q, &s.offsets);
        let (mean_p, var_p) = match &self.nominal_variance {
            Some(variances) => (0.0, variances[index]),
            None => moments(p, &s.offsets),
        };
        let (vp, vq) = (var_p.max(self.floor), var_q.max(self.floor));
        let exp = 0.5 * (vq / vp).ln() + (vp + (mean_p - mean_q).powi(2)) / (2.0 * vq) - 0.5;

        // The target's roughness first: the shifted buffers must hold q's afterwards,
        // for the backward pass.
        let target_roughness = self.relative_smoothness.map(|_| {
            let floored: Vec<f64> = p.iter().map(|x| x.max(SMALLEST_TARGET)).collect();
            for (l, x) in s.log_p.iter_mut().zip(&floored) {
                *l = x.ln();
            }
            let Scratch {
                log_p,
                a,
                log_a,
                b,
                log_b,
                ..
            } = s;
            self.roughness(&floored, log_p, [a, log_a, b, log_b])
        });
        let Scratch {
            q,
            log_q,
            a,
            log_a,
            b,
            log_b,
            ..
        } = s;
        let roughness = self.roughness(q, log_q, [a, log_a, b, log_b]);
        let (smooth, smooth_weight) = match (self.relative_smoothness, target_roughness) {
            (Some(floor), Some(of_target)) => relative_roughness(roughness, of_target, floor),
            _ => (roughness, 1.0),
        };
        RowStats {
            parts: [ld, exp, smooth],
            mean_q,
            var_q,
            mean_p,
            var_p,
            smooth_weight,
        }
    }

    /// The roughness `S(r) = ½ Σ (a − b)(ln a − ln b)` of `r` (with `ln r`), leaving its
    /// shifted distributions `[a, ln a, b, ln b]` in `shifted`.
    fn roughness(&self, r: &[f64], log_r: &[f64], shifted: [&mut Vec<f64>; 4]) -> f64 {
        let [a, log_a, b, log_b] = shifted;
        let m = self.fill_shifted(r, log_r, a, log_a, b, log_b);
        let mut sum = 0.0;
        for i in 0..m {
            sum += (a[i] - b[i]) * (log_a[i] - log_b[i]);
        }
        0.5 * sum
    }

    /// Fills `a`, `ln a`, `b`, `ln b` of the smoothness term from `r` and `ln r`: shifted
    /// by one bin, truncated and renormalised on linear axes, rotated on circular ones.
    /// Returns their length.
    fn fill_shifted(
        &self,
        r: &[f64],
        log_r: &[f64],
        a: &mut [f64],
        log_a: &mut [f64],
        b: &mut [f64],
        log_b: &mut [f64],
    ) -> usize {
        let k = r.len();
        match self.period_in_bins {
            Some(_) => {
                for i in 0..k {
                    let next = (i + 1) % k;
                    a[i] = r[next];
                    log_a[i] = log_r[next];
                    b[i] = r[i];
                    log_b[i] = log_r[i];
                }
                k
            }
            None => {
                renormalise(&r[1..], &log_r[1..], a, log_a);
                renormalise(&r[..k - 1], &log_r[..k - 1], b, log_b);
                k - 1
            }
        }
    }

    /// `∂(g · [ld, exp, smooth]) / ∂z` for one row, written to `grad_z`. Expects `s` as
    /// [`FullKlCpu::row`] left it.
    fn row_gradient(
        &self,
        stats: &RowStats,
        p: &[f64],
        g: [f64; PARTS],
        s: &mut Scratch,
        grad_z: &mut [f64],
    ) {
        let k = s.q.len();
        // The gradient with respect to ln q, mapped to the logits at the end through
        // ∂ ln q_j / ∂ z_i = δ_ij − q_i.
        let grad_log_q = &mut s.grad_log_q;

        // ld = Σ p ln p − Σ p ln q.
        for j in 0..k {
            grad_log_q[j] = -g[0] * p[j];
        }

        // exp, through μ_q and v_q: ∂μ_q/∂z_i = q_i (d_i − μ_q) and
        // ∂v_q/∂z_i = q_i ((d_i − μ_q)² − v_q), added straight to the logits' gradient.
        let (vp, vq) = (stats.var_p.max(self.floor), stats.var_q.max(self.floor));
        let gap = stats.mean_p - stats.mean_q;
        let d_mean = (stats.mean_q - stats.mean_p) / vq;
        // Where v_q sits below the floor the floor is constant, so no gradient flows.
        let d_var = if stats.var_q > self.floor {
            1.0 / (2.0 * vq) - (vp + gap * gap) / (2.0 * vq * vq)
        } else {
            0.0
        };
        for i in 0..k {
            let centred = s.offsets[i] - stats.mean_q;
            grad_z[i] =
                g[1] * s.q[i] * (d_mean * centred + d_var * (centred * centred - stats.var_q));
        }

        // S = ½ Σ (a − b)(α − β) with α = ln a, β = ln b:
        // ∂/∂α_i = ½ [a_i (α_i − β_i) + (a_i − b_i)], ∂/∂β_i = −½ [b_i (α_i − β_i) + (a_i − b_i)],
        // times ∂ smooth / ∂S (1 for the full-KL loss's own term).
        let g_smooth = g[2] * stats.smooth_weight;
        let m = if self.period_in_bins.is_some() {
            k
        } else {
            k - 1
        };
        let (mut sum_alpha, mut sum_beta) = (0.0, 0.0);
        for i in 0..m {
            let log_ratio = s.log_a[i] - s.log_b[i];
            let difference = s.a[i] - s.b[i];
            let alpha = 0.5 * g_smooth * (s.a[i] * log_ratio + difference);
            let beta = -0.5 * g_smooth * (s.b[i] * log_ratio + difference);
            s.log_a[i] = alpha;
            s.log_b[i] = beta;
            sum_alpha += alpha;
            sum_beta += beta;
        }
        match self.period_in_bins {
            // α_i = ln q_{i+1 mod K}, β_i = ln q_i.
            Some(_) => {
                for i in 0..k {
                    grad_log_q[(i + 1) % k] += s.log_a[i];
                    grad_log_q[i] += s.log_b[i];
                }
            }
            // α_i = ln q_{i+1} − LSE(ln q_{2..K}), and ∂LSE/∂ ln q_{i+1} = a_i; likewise β.
            None => {
                for i in 0..m {
                    grad_log_q[i + 1] += s.log_a[i] - s.a[i] * sum_alpha;
                    grad_log_q[i] += s.log_b[i] - s.b[i] * sum_beta;
                }
            }
        }

        let total: f64 = grad_log_q.iter().sum();
        for i in 0..k {
            grad_z[i] += grad_log_q[i] - s.q[i] * total;
        }
    }
}

/// The relative smoothness term `½ (ρ − ln ρ − 1)` with `ρ = S(q) / S(p)`, both
/// raised to at least `floor`, and its derivative with respect to `S(q)` (0 where the
/// floor holds `S(q)`, which is then a constant).
pub(crate) fn relative_roughness(of_prediction: f64, of_target: f64, floor: f64) -> (f64, f64) {
    let (sq, sp) = (of_prediction.max(floor), of_target.max(floor));
    let ratio = sq / sp;
    let value = 0.5 * (ratio - ratio.ln() - 1.0);
    let slope = if of_prediction > floor {
        0.5 * (1.0 / sp - 1.0 / sq)
    } else {
        0.0
    };
    (value, slope)
}

/// `out = r / Σ r` and `log_out = ln r − ln Σ r`, from `r` and `ln r`. When `Σ r`
/// underflows, the sum is taken in log space so that `ln out` stays finite.
fn renormalise(r: &[f64], log_r: &[f64], out: &mut [f64], log_out: &mut [f64]) {
    let sum: f64 = r.iter().sum();
    if sum > TINY {
        let log_sum = sum.ln();
        for i in 0..r.len() {
            out[i] = r[i] / sum;
            log_out[i] = log_r[i] - log_sum;
        }
    } else {
        let log_sum = log_sum_exp(log_r);
        for i in 0..r.len() {
            log_out[i] = log_r[i] - log_sum;
            out[i] = log_out[i].exp();
        }
    }
}

fn moments(r: &[f64], offsets: &[f64]) -> (f64, f64) {
    let mean: f64 = r.iter().zip(offsets).map(|(a, d)| a * d).sum();
    let variance = r
        .iter()
        .zip(offsets)
        .map(|(a, d)| a * (d - mean) * (d - mean))
        .sum();
    (mean, variance)
}

fn log_sum_exp(x: &[f64]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    x.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max
}

/// A contiguous CPU tensor's data as `f64`.
fn values(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Vec<f64>> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("ldl-full-kl: inputs must be contiguous".into()))?;
    Ok(match storage {
        CpuStorage::F32(v) => v[start..end].iter().map(|x| *x as f64).collect(),
        CpuStorage::F64(v) => v[start..end].to_vec(),
        _ => {
            return Err(candle_core::Error::Msg(
                "ldl-full-kl: only f32 and f64 are supported".into(),
            ))
        }
    })
}

fn rows_of(z: &[f64], p: &[f64], shape: &Shape) -> candle_core::Result<(usize, usize)> {
    let (batch, bins) = shape.dims2()?;
    if z.len() != batch * bins || p.len() != batch * bins {
        return Err(candle_core::Error::Msg(
            "ldl-full-kl: logits and targets differ in size".into(),
        ));
    }
    Ok((batch, bins))
}

impl CustomOp3 for FullKlCpu {
    fn name(&self) -> &'static str {
        "ldl-full-kl"
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
        let (z, p, value) = (values(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        let (batch, bins) = rows_of(&z, &p, l1.shape())?;
        let mut out = vec![0.0; batch * PARTS];
        out.par_chunks_mut(PARTS).enumerate().for_each_init(
            || Scratch::new(bins),
            |scratch, (b, parts)| {
                let span = b * bins..(b + 1) * bins;
                let stats = self.row(b, &z[span.clone()], &p[span], value[b], scratch);
                parts.copy_from_slice(&stats.parts);
            },
        );
        let storage = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(out.into_iter().map(|x| x as f32).collect()),
            _ => CpuStorage::F64(out),
        };
        Ok((storage, Shape::from((batch, PARTS))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        pmf: &Tensor,
        value: &Tensor,
        _result: &Tensor,
        grad_result: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let as_f64 = |t: &Tensor| -> candle_core::Result<Vec<f64>> {
            t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
        };
        let (z, p, value, g) = (
            as_f64(logits)?,
            as_f64(pmf)?,
            as_f64(value)?,
            as_f64(grad_result)?,
        );
        let (batch, bins) = rows_of(&z, &p, logits.shape())?;
        let mut grad = vec![0.0; batch * bins];
        grad.par_chunks_mut(bins).enumerate().for_each_init(
            || Scratch::new(bins),
            |scratch, (b, grad_row)| {
                let span = b * bins..(b + 1) * bins;
                let stats = self.row(b, &z[span.clone()], &p[span.clone()], value[b], scratch);
                let weights = [g[b * PARTS], g[b * PARTS + 1], g[b * PARTS + 2]];
                self.row_gradient(&stats, &p[span], weights, scratch, grad_row);
            },
        );
        let grad =
            Tensor::from_vec(grad, (batch, bins), logits.device())?.to_dtype(logits.dtype())?;
        Ok((Some(grad), None, None))
    }
}
