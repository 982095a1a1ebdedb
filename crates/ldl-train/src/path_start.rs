//! `model.head_init = "least-squares"`: the heads start at the training-mean distribution
//! (as `training-mean`) and each linear path at a ridge regression of the targets'
//! locations on the features, so the untrained model is a linear predictor.
//!
//! A path adds `s · z_j` to its head's logits, with `s = W x` (see
//! `ldl_models::linear_path`). Tilting the training-mean distribution `p₀` by `s` moves the
//! expected statistics to first order by `E[z] ≈ E₀[z] + Σ₀ s`, with `Σ₀` the covariance
//! of `z` under `p₀`. A ridge regression of each sample's expected statistics (under its
//! target distribution) on the features gives `E[z | x] ≈ t̄ + B x`, so the path starts at
//! `W = Σ₀⁻¹ B`: the location the ridge regression predicts, in the form of a tilt.
//!
//! Why: on a data set so small that early stopping keeps one of the first epochs
//! (linnerud: 12 training rows, one Adam step an epoch), the path's weights, starting at
//! zero, move by about the learning rate a step and the run keeps nearly the
//! training-mean predictor, where ridge regression finds the linear signal in one solve.
//! Starting from that solution, training refines a linear predictor instead of building one.
//!
//! | step | what | cost |
//! |---|---|---|
//! | 1 | centre the training features; `G = XᵀX`, `C = Xᵀ(T − t̄)` per axis | `n·d²` (in fixed blocks of rows, summed in order) |
//! | 2 | ridge penalty α from the grid `10^-3 … 10^4.5` by generalised cross-validation (Golub, Heath and Wahba 1979), or no path when the mean predicts better | `d³` per α |
//! | 3 | `W = Σ₀⁻¹ Bᵀ` per axis; a joint head stacks its members' rows | `k²·d` |
//!
//! Categorical axes have no path. With more than [`MAX_INPUTS`] features the start is
//! `training-mean`'s; with more than [`MAX_ROWS`] training rows it is computed from
//! `MAX_ROWS` of them, evenly spaced.

use ldl_core::{AxisKind, LabelSpace};
use ldl_data::{Input, Sample};
use ldl_models::linear_path::{axis_statistics, head_statistics};
use rayon::prelude::*;

use crate::baselines::each_encoded;
use crate::error::{Error, Result};

/// The widest input the start is computed for: its cost grows as `d³` per penalty tried
/// and `n·d²` for the Gram matrix. Wider inputs keep the zero start.
pub const MAX_INPUTS: usize = 256;

/// The most training rows the start is computed from, evenly spaced over the split:
/// enough for a starting point, and it bounds the start's memory (`MAX_ROWS ×
/// MAX_INPUTS` f64, 16 MiB) and time whatever the split's size.
pub const MAX_ROWS: usize = 8192;

/// Rows per block of the Gram matrix: blocks are computed in parallel and summed in
/// order, so the result does not depend on the number of threads.
const BLOCK_ROWS: usize = 1024;

/// The ridge penalties tried: `10^-3, 10^-2.5, …, 10^4.5`, the grid of
/// `benches/reference/tabular_baselines.py`.
fn penalties() -> impl Iterator<Item = f64> {
    (0..16).map(|i| 10f64.powf(-3.0 + 0.5 * i as f64))
}

/// Where the heads of a least-squares start begin.
pub(crate) struct PathStart {
    /// Per axis, the log of the distribution its bias starts at instead of the training
    /// mean (the ridge regression's normal distribution on a linear axis), or `None`.
    pub log_priors: Vec<Option<Vec<f64>>>,
    /// Per head (in [`LabelSpace::heads`] order), its path's `(statistics, inputs)`
    /// weights row by row; `None` for a head without a path.
    pub weights: Vec<Option<Vec<f32>>>,
}

/// The least-squares start of every head, or `None` when the input is wider than
/// [`MAX_INPUTS`] or there are fewer than two training rows.
pub(crate) fn least_squares_start(
    space: &LabelSpace,
    train: &[Sample],
    inputs: usize,
) -> Result<Option<PathStart>> {
    if inputs > MAX_INPUTS || train.len() < 2 {
        return Ok(None);
    }
    let subset: Vec<Sample>;
    let train = if train.len() > MAX_ROWS {
        subset = (0..MAX_ROWS)
            .map(|i| train[i * train.len() / MAX_ROWS].clone())
            .collect();
        &subset[..]
    } else {
        train
    };
    let x = centred_features(train, inputs)?;
    let targets = AxisTargets::of(space, train)?;
    let gram = gram(&x, inputs);
    let mut per_axis: Vec<Vec<Vec<f64>>> = Vec::with_capacity(space.axes().len());
    let mut log_priors = Vec::with_capacity(space.axes().len());
    for (a, axis) in space.axes().iter().enumerate() {
        let z = axis_statistics(axis);
        let fit = match z.len() {
            0 => None,
            k => ridge_by_gcv(&x, &gram, &targets.expected[a], inputs, k),
        };
        let Some(fit) = fit else {
            per_axis.push(vec![vec![0.0; inputs]; z.len()]);
            log_priors.push(None);
            continue;
        };
        // A linear axis starts at the ridge regression's normal distribution; a circular
        // one keeps the training mean.
        let log_prior = matches!(axis.kind(), AxisKind::Linear)
            .then(|| normal_log_prior(&z[0], &targets, a, fit.residual_variance));
        let p0 = match &log_prior {
            Some(log_p) => softmax(log_p),
            None => prior(&targets.mean_pmf[a]),
        };
        let mut w = tilt_weights(&z, &p0, &fit.b, inputs);
        let scale = calibrated_scale(&z, &p0, &w, &fit.b, &x, inputs);
        w.iter_mut().flatten().for_each(|v| *v *= scale);
        per_axis.push(w);
        log_priors.push(log_prior);
    }
    let weights = space
        .heads()
        .iter()
        .map(|head| {
            let rows: Vec<f32> = head
                .axes()
                .iter()
                .flat_map(|&a| per_axis[a].iter().flatten().map(|&w| w as f32))
                .collect();
            debug_assert_eq!(rows.len(), head_statistics(space, head).len() * inputs);
            (!rows.is_empty()).then_some(rows)
        })
        .collect();
    Ok(Some(PathStart {
        log_priors,
        weights,
    }))
}

/// The log (up to a constant) of a normal distribution over the bins of a linear axis
/// with statistic `z`: centred at the training targets' mean, with the ridge's residual
/// variance plus the targets' own mean variance (what a prediction must cover, since
/// each target is a distribution itself), at least a quarter of the smallest squared
/// bin gap.
fn normal_log_prior(z: &[f64], targets: &AxisTargets, axis: usize, residual: f64) -> Vec<f64> {
    let expected = &targets.expected[axis];
    let mean = expected.iter().sum::<f64>() / expected.len() as f64;
    let gap = z
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min);
    let variance = (residual + targets.within_variance[axis]).max(gap * gap / 4.0);
    z.iter()
        .map(|zj| -(zj - mean).powi(2) / (2.0 * variance))
        .collect()
}

/// The distribution of the logits `log_p`.
fn softmax(log_p: &[f64]) -> Vec<f64> {
    let top = log_p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = log_p.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

/// The training features, row by row, minus their means (`n × d`, row-major).
fn centred_features(train: &[Sample], inputs: usize) -> Result<Vec<f64>> {
    let mut x = Vec::with_capacity(train.len() * inputs);
    for (index, sample) in train.iter().enumerate() {
        match &sample.input {
            Input::Features(f) if f.len() == inputs => x.extend(f.iter().map(|&v| v as f64)),
            _ => {
                return Err(Error::Config(format!(
                    "training sample {index} ({}): the linear path's start needs {inputs} \
                     encoded features",
                    sample.origin
                )))
            }
        }
    }
    let n = train.len() as f64;
    let mut mean = vec![0.0; inputs];
    for row in x.chunks_exact(inputs) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / n);
    }
    for row in x.chunks_exact_mut(inputs) {
        row.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
    }
    Ok(x)
}

/// `XᵀX` (`d × d`, row-major), blocks of [`BLOCK_ROWS`] rows in parallel, summed in order.
fn gram(x: &[f64], d: usize) -> Vec<f64> {
    let blocks: Vec<Vec<f64>> = x
        .par_chunks(BLOCK_ROWS * d)
        .map(|block| {
            let mut g = vec![0.0; d * d];
            for row in block.chunks_exact(d) {
                for (i, &xi) in row.iter().enumerate() {
                    let gi = &mut g[i * d..(i + 1) * d];
                    gi.iter_mut().zip(row).for_each(|(g, &xj)| *g += xi * xj);
                }
            }
            g
        })
        .collect();
    let mut g = vec![0.0; d * d];
    for block in blocks {
        g.iter_mut().zip(block).for_each(|(g, b)| *g += b);
    }
    g
}

/// Per axis, each training sample's expected statistics under its target distribution
/// (`n × k`, row-major), and the mean target distribution.
struct AxisTargets {
    expected: Vec<Vec<f64>>,
    mean_pmf: Vec<Vec<f64>>,
    /// The mean over the samples of the variance of the first statistic under each
    /// target distribution (0 for an axis without statistics).
    within_variance: Vec<f64>,
}

impl AxisTargets {
    fn of(space: &LabelSpace, train: &[Sample]) -> Result<AxisTargets> {
        let statistics: Vec<Vec<Vec<f64>>> = space.axes().iter().map(axis_statistics).collect();
        let mut expected = vec![Vec::new(); space.axes().len()];
        let mut mean_pmf: Vec<Vec<f64>> = space.axes().iter().map(|a| vec![0.0; a.len()]).collect();
        let mut within_variance = vec![0.0; space.axes().len()];
        let n = train.len() as f64;
        each_encoded(space, train, |encoded| {
            for (a, label) in encoded.iter().enumerate() {
                for (r, z) in statistics[a].iter().enumerate() {
                    let e: f64 = z.iter().zip(&label.pmf).map(|(z, p)| z * p).sum();
                    expected[a].push(e);
                    if r == 0 {
                        let square: f64 = z.iter().zip(&label.pmf).map(|(z, p)| z * z * p).sum();
                        within_variance[a] += (square - e * e).max(0.0) / n;
                    }
                }
                let sum = &mut mean_pmf[a];
                sum.iter_mut()
                    .zip(&label.pmf)
                    .for_each(|(s, p)| *s += p / n);
            }
        })?;
        Ok(AxisTargets {
            expected,
            mean_pmf,
            within_variance,
        })
    }
}

/// A ridge regression chosen by generalised cross-validation.
struct ChosenRidge {
    /// The coefficients `B`, `d × k`.
    b: Vec<f64>,
    /// The residual variance per statistic, `RSS / (k (n − dof))`.
    residual_variance: f64,
}

/// The ridge coefficients `B` (`d × k`) of the targets `t` (`n × k`) on the centred
/// features `x`, with the penalty that minimises generalised cross-validation; `None`
/// when the mean of the targets scores better than every penalty.
fn ridge_by_gcv(x: &[f64], gram: &[f64], t: &[f64], d: usize, k: usize) -> Option<ChosenRidge> {
    let n = t.len() / k;
    let mut mean = vec![0.0; k];
    for row in t.chunks_exact(k) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, v)| *m += v / n as f64);
    }
    // C = Xᵀ (T − t̄), d × k; and the total sum of squares.
    let mut c = vec![0.0; d * k];
    let mut total = 0.0;
    for (xr, tr) in x.chunks_exact(d).zip(t.chunks_exact(k)) {
        for (j, (tj, mj)) in tr.iter().zip(&mean).enumerate() {
            let centred = tj - mj;
            total += centred * centred;
            for (i, xi) in xr.iter().enumerate() {
                c[i * k + j] += xi * centred;
            }
        }
    }
    // The mean predictor: one degree of freedom (the intercept).
    let gcv = |rss: f64, dof: f64| {
        let free = 1.0 - dof / n as f64;
        (free > 0.0).then(|| rss / (n as f64 * free * free))
    };
    let mut best: (f64, Option<ChosenRidge>) = (gcv(total, 1.0)?, None);
    for alpha in penalties() {
        let Some(fit) = RidgeFit::solve(gram, &c, d, k, alpha) else {
            continue;
        };
        // RSS = |T_c|² − 2 tr(BᵀC) + tr(Bᵀ G B)
        let mut rss = total;
        for j in 0..k {
            let b: Vec<f64> = (0..d).map(|i| fit.b[i * k + j]).collect();
            let cb: f64 = (0..d).map(|i| c[i * k + j] * b[i]).sum();
            let gb: f64 = (0..d)
                .map(|i| b[i] * (0..d).map(|l| gram[i * d + l] * b[l]).sum::<f64>())
                .sum();
            rss += gb - 2.0 * cb;
        }
        let dof = fit.degrees_of_freedom + 1.0;
        if let Some(score) = gcv(rss.max(0.0), dof) {
            if score < best.0 {
                let residual_variance = rss.max(0.0) / (k as f64 * (n as f64 - dof));
                best = (
                    score,
                    Some(ChosenRidge {
                        b: fit.b,
                        residual_variance,
                    }),
                );
            }
        }
    }
    best.1
}

/// One ridge solution: `B = (G + αI)⁻¹ C` and its degrees of freedom `tr((G + αI)⁻¹ G)`.
struct RidgeFit {
    b: Vec<f64>,
    degrees_of_freedom: f64,
}

impl RidgeFit {
    /// `None` when `G + αI` is not positive definite to working precision.
    fn solve(gram: &[f64], c: &[f64], d: usize, k: usize, alpha: f64) -> Option<RidgeFit> {
        let mut a = gram.to_vec();
        (0..d).for_each(|i| a[i * d + i] += alpha);
        let l = cholesky(&a, d)?;
        let mut b = vec![0.0; d * k];
        for j in 0..k {
            let column: Vec<f64> = (0..d).map(|i| c[i * k + j]).collect();
            let solved = solve_cholesky(&l, d, &column);
            (0..d).for_each(|i| b[i * k + j] = solved[i]);
        }
        // tr((G + αI)⁻¹ G) = d − α tr((G + αI)⁻¹), and tr(A⁻¹) = |L⁻¹|²_F.
        let mut inverse_trace = 0.0;
        for i in 0..d {
            let mut e = vec![0.0; d];
            e[i] = 1.0;
            inverse_trace += forward(&l, d, &e).iter().map(|v| v * v).sum::<f64>();
        }
        Some(RidgeFit {
            b,
            degrees_of_freedom: d as f64 - alpha * inverse_trace,
        })
    }
}

/// The lower Cholesky factor of the symmetric `d × d` matrix `a`, `None` when a pivot is
/// not positive.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|m| l[i * d + m] * l[j * d + m]).sum();
            let v = a[i * d + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = v / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// `L⁻¹ b` for lower-triangular `L`.
fn forward(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; d];
    for i in 0..d {
        let dot: f64 = (0..i).map(|m| l[i * d + m] * y[m]).sum();
        y[i] = (b[i] - dot) / l[i * d + i];
    }
    y
}

/// `(L Lᵀ)⁻¹ b`.
fn solve_cholesky(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let y = forward(l, d, b);
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let dot: f64 = (i + 1..d).map(|m| l[m * d + i] * x[m]).sum();
        x[i] = (y[i] - dot) / l[i * d + i];
    }
    x
}

/// The path weights `W = Σ₀⁻¹ Bᵀ` (`k` rows of `d`) of an axis with statistics `z` and
/// training-mean distribution `mean_pmf`; zero rows when `b` is `None` or `Σ₀` is
/// singular (all the mass in one bin).
fn tilt_weights(z: &[Vec<f64>], p0: &[f64], b: &[f64], d: usize) -> Vec<Vec<f64>> {
    let k = z.len();
    let zero = vec![vec![0.0; d]; k];
    let expect =
        |f: &dyn Fn(usize) -> f64| p0.iter().enumerate().map(|(j, p)| p * f(j)).sum::<f64>();
    let means: Vec<f64> = z.iter().map(|zr| expect(&|j| zr[j])).collect();
    let cov: Vec<f64> = (0..k * k)
        .map(|e| {
            let (r, s) = (e / k, e % k);
            expect(&|j| (z[r][j] - means[r]) * (z[s][j] - means[s]))
        })
        .collect();
    let Some(inverse) = invert_small(&cov, k) else {
        return zero;
    };
    (0..k)
        .map(|r| {
            (0..d)
                .map(|i| (0..k).map(|s| inverse[r * k + s] * b[i * k + s]).sum())
                .collect()
        })
        .collect()
}

/// The distribution the head starts at: the mean, floored and renormalised as the biases
/// of `training-mean` make it (`head_prior.rs`).
fn prior(mean_pmf: &[f64]) -> Vec<f64> {
    let floored: Vec<f64> = mean_pmf
        .iter()
        .map(|p| p.max(crate::head_prior::FLOOR))
        .collect();
    let sum: f64 = floored.iter().sum();
    floored.into_iter().map(|p| p / sum).collect()
}

/// The inverse of a 1 × 1 or 2 × 2 covariance, `None` when it is (nearly) singular.
fn invert_small(m: &[f64], k: usize) -> Option<Vec<f64>> {
    const TINY: f64 = 1e-12;
    match k {
        1 => (m[0] > TINY).then(|| vec![1.0 / m[0]]),
        2 => {
            let det = m[0] * m[3] - m[1] * m[2];
            (det > TINY * (m[0] * m[3]).max(TINY))
                .then(|| vec![m[3] / det, -m[1] / det, -m[2] / det, m[0] / det])
        }
        _ => None,
    }
}

/// The factor `c` on `W` whose exact tilts put each training row's expected statistics
/// closest (least squares) to the ridge regression's: the first-order `W` is exact for a
/// normal `p₀`, while a training-mean distribution of a few rows is a sum of narrow
/// bumps, which a tilt moves less far. Golden-section search over `[0, 16]`.
fn calibrated_scale(
    z: &[Vec<f64>],
    p0: &[f64],
    w: &[Vec<f64>],
    b: &[f64],
    x: &[f64],
    d: usize,
) -> f64 {
    let k = z.len();
    let log_p0: Vec<f64> = p0.iter().map(|p| p.ln()).collect();
    let means: Vec<f64> = z
        .iter()
        .map(|zr| zr.iter().zip(p0).map(|(z, p)| z * p).sum())
        .collect();
    // Per row: the path's s = W x, and the ridge's expected statistics t̄ + B x.
    let rows: Vec<(Vec<f64>, Vec<f64>)> = x
        .chunks_exact(d)
        .map(|xr| {
            let s = w
                .iter()
                .map(|wr| wr.iter().zip(xr).map(|(w, x)| w * x).sum())
                .collect();
            let target = (0..k)
                .map(|j| {
                    means[j]
                        + xr.iter()
                            .enumerate()
                            .map(|(i, x)| x * b[i * k + j])
                            .sum::<f64>()
                })
                .collect();
            (s, target)
        })
        .collect();
    let misfit = |c: f64| -> f64 {
        rows.iter()
            .map(|(s, target)| {
                let logits: Vec<f64> = (0..p0.len())
                    .map(|j| log_p0[j] + c * (0..k).map(|r| s[r] * z[r][j]).sum::<f64>())
                    .collect();
                let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
                let total: f64 = weights.iter().sum();
                (0..k)
                    .map(|r| {
                        let e: f64 =
                            weights.iter().zip(&z[r]).map(|(w, z)| w * z).sum::<f64>() / total;
                        (e - target[r]).powi(2)
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    golden_section_minimum(misfit, 0.0, 16.0)
}

/// The minimum of a unimodal `f` on `[lo, hi]`, by 40 steps of golden-section search
/// (the interval shrinks to 0.618⁴⁰ of its width, about 4e-9).
fn golden_section_minimum(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - ratio * (hi - lo);
    let mut b = lo + ratio * (hi - lo);
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..40 {
        if fa < fb {
            (hi, b, fb) = (b, a, fa);
            a = hi - ratio * (hi - lo);
            fa = f(a);
        } else {
            (lo, a, fa) = (a, b, fb);
            b = lo + ratio * (hi - lo);
            fb = f(b);
        }
    }
    (lo + hi) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_symmetric_system() {
        // A = [[4, 2], [2, 3]], b = A · [1, −2] = [0, −4].
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        let x = solve_cholesky(&l, 2, &[0.0, -4.0]);
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] + 2.0).abs() < 1e-12,
            "{x:?}"
        );
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    /// A ridge fit against its closed form `(XᵀX + αI)⁻¹ Xᵀy` worked by hand for one
    /// feature: `Σx² = 2`, `Σxy = 4` give `b = 4 / (2 + α)` and `dof = 2 / (2 + α)`.
    #[test]
    fn a_ridge_fit_matches_its_closed_form() {
        let fit = RidgeFit::solve(&[2.0], &[4.0], 1, 1, 0.5).unwrap();
        assert!((fit.b[0] - 1.6).abs() < 1e-12);
        assert!((fit.degrees_of_freedom - 0.8).abs() < 1e-12);
    }

    /// Targets no feature explains (`Xᵀt = 0`): every penalty fits nothing and costs
    /// degrees of freedom, so the mean wins and there is no path. An exact line is
    /// fitted with the smallest penalty.
    #[test]
    fn cross_validation_keeps_the_mean_without_a_signal_and_fits_a_line() {
        let x = [1.0, -1.0, 1.0, -1.0];
        let g = gram(&x, 1);
        assert!(ridge_by_gcv(&x, &g, &[1.0, 1.0, -1.0, -1.0], 1, 1).is_none());
        let x = [-1.5, -0.5, 0.5, 1.5, -1.0, 1.0];
        let t: Vec<f64> = x.iter().map(|v| 3.0 + 2.0 * v).collect();
        let fit = ridge_by_gcv(&x, &gram(&x, 1), &t, 1, 1).unwrap();
        // Σx² = 7: b = 14 / (7 + 0.001).
        assert!((fit.b[0] - 14.0 / 7.001).abs() < 1e-12, "{}", fit.b[0]);
    }

    /// The tilt of a normal distribution over a fine, wide grid moves its mean by
    /// `s·σ²` (in the statistic's units): the first-order weights are exact and the
    /// calibration keeps them.
    #[test]
    fn a_normal_prior_needs_no_calibration() {
        let z: Vec<f64> = (0..=400).map(|j| j as f64 / 200.0 - 1.0).collect();
        let variance = 0.01;
        let log_p: Vec<f64> = z.iter().map(|v| -v * v / (2.0 * variance)).collect();
        let p0 = softmax(&log_p);
        let b = [0.05];
        let w = tilt_weights(std::slice::from_ref(&z), &p0, &b, 1);
        assert!((w[0][0] - 5.0).abs() < 1e-3, "{w:?}");
        let x = [-1.0, 0.0, 1.0, 2.0];
        let scale = calibrated_scale(std::slice::from_ref(&z), &p0, &w, &b, &x, 1);
        assert!((scale - 1.0).abs() < 1e-3, "{scale}");
    }

    #[test]
    fn golden_section_finds_a_parabolas_minimum() {
        let x = golden_section_minimum(|x| (x - 3.0) * (x - 3.0) + 1.0, 0.0, 16.0);
        assert!((x - 3.0).abs() < 1e-7, "{x}");
        // At an end when the minimum lies outside.
        let x = golden_section_minimum(|x| x, 0.0, 16.0);
        assert!(x < 1e-7, "{x}");
    }
}
