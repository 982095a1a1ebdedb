//! `model.head_init = "least-squares"`: each linear path starts at a ridge regression of
//! the targets' locations on the features, and each head at the distribution that
//! regression predicts, so the untrained model is a linear predictor.
//!
//! A path adds `s · z_j` to its head's logits, with `s = W x` (see
//! `ldl_models::linear_path`). Tilting a starting distribution `p₀` by `s` moves the
//! expected statistics to first order by `E[z] ≈ E₀[z] + Σ₀ s`, with `Σ₀` the covariance
//! of `z` under `p₀`. A ridge regression of each sample's expected statistics (under its
//! target distribution) on the features gives `E[z | x] ≈ t̄ + B (x − μ)`, so the path
//! starts at `W = c Σ₀⁻¹ Bᵀ`, with `c` fitted so that the exact tilts of the training rows
//! match the regression (the first order is exact for a normal `p₀` far from the axis's
//! ends, and not for a training-mean distribution of a few rows, a row of narrow bumps).
//! The path has no intercept, so the bias absorbs `−(W μ)·z`: the features need not be
//! centred (`data.standardize = false`, or the library route).
//!
//! | axis | starting distribution `p₀` (the head's bias) | path |
//! |---|---|---|
//! | linear | normal, mean `t̄` (its centre moved so that the cut, discretised distribution's mean is `t̄`), variance the ridge's residual variance plus the targets' own | the regression |
//! | circular | the training-mean distribution | the regression of cosine and sine |
//! | categorical | the training-mean distribution | none |
//!
//! | step | what | cost |
//! |---|---|---|
//! | 1 | `G = XᵀX` of the centred features, in fixed blocks of rows summed in order | `n·d²` |
//! | 2 | factor `G + αI` for α in `10^-3, 10^-2.5, …, 10^4` (the grid of `benches/reference/tabular_baselines.py`) | `d³` per α, shared by the axes |
//! | 3 | per axis, the α of least generalised cross-validation (Golub, Heath and Wahba 1979), or no path when the mean scores better | `d²·k` per α |
//! | 4 | `p₀`, `W` and `c` (golden-section search on at most [`CALIBRATION_CELLS`] row-bins) | `bins·k` per row and step |
//!
//! Categorical axes have no path. With more than [`MAX_INPUTS`] features the start is
//! `training-mean`'s; with more than [`MAX_ROWS`] training rows it is computed from
//! `MAX_ROWS` of them, evenly spaced.
//!
//! Why: on a data set so small that early stopping keeps one of the first epochs
//! (linnerud: 12 training rows, one Adam step an epoch), the path's weights, starting at
//! zero, move by about the learning rate a step and the run keeps nearly the
//! training-mean predictor, where ridge regression finds the linear signal in one solve.

use ldl_core::{AxisKind, LabelSpace};
use ldl_data::{Input, Sample};
use ldl_models::linear_path::{axis_statistics, head_statistics};
use rayon::prelude::*;

use crate::baselines::each_encoded_at;
use crate::error::{Error, Result};
use crate::head_prior::floored_log;

/// The widest input the start is computed for: its cost grows as `d³` per penalty tried
/// and `n·d²` for the Gram matrix. Wider inputs keep the `training-mean` start.
pub const MAX_INPUTS: usize = 256;

/// The most training rows the start is computed from, evenly spaced over the split:
/// enough for a starting point, and it bounds the start's memory (`MAX_ROWS ×
/// MAX_INPUTS` f64, 16 MiB) and time whatever the split's size.
pub const MAX_ROWS: usize = 8192;

/// The most (row, bin) cells one step of the scale's search evaluates: rows are taken
/// evenly spaced until their bins reach it (at least 16 rows), so the search's cost is
/// bounded whatever the number of rows (on bdims with 10⁶ weight bins the whole start
/// added about a third to a one-epoch run's time, and nothing to its peak memory).
pub const CALIBRATION_CELLS: usize = 1 << 24;

/// Rows per block of the Gram matrix: blocks are computed in parallel and summed in
/// order, so the result does not depend on the number of threads.
const BLOCK_ROWS: usize = 1024;

/// Where the heads of a least-squares start begin.
pub(crate) struct PathStart {
    /// Per axis, the log (up to a constant) of the distribution its bias starts at, or
    /// `None` for the training-mean distribution (an axis without a path).
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
    let rows = evenly_spaced(train.len(), MAX_ROWS);
    let features = CentredFeatures::of(train, &rows, inputs)?;
    let targets = AxisTargets::of(space, train, &rows)?;
    let gram = gram(&features.x, inputs);
    let penalties: Vec<Factored> = penalties()
        .filter_map(|alpha| Factored::new(&gram, inputs, alpha))
        .collect();
    let mut per_axis: Vec<Vec<Vec<f64>>> = Vec::with_capacity(space.axes().len());
    let mut log_priors = Vec::with_capacity(space.axes().len());
    for (a, axis) in space.axes().iter().enumerate() {
        let z = axis_statistics(axis);
        let t = &targets.expected[a];
        let fit = match z.len() {
            0 => None,
            k => ridge_by_gcv(&features.x, &gram, &penalties, t, (inputs, k)),
        };
        let Some(fit) = fit else {
            per_axis.push(vec![vec![0.0; inputs]; z.len()]);
            log_priors.push(None);
            continue;
        };
        let mut log_p0 = match axis.kind() {
            AxisKind::Linear => {
                let variance = fit.residual_variance + targets.within_variance[a];
                normal_log_prior(&z[0], fit.target_mean[0], variance)
            }
            _ => floored_log(&targets.mean_pmf[a]),
        };
        let p0 = softmax(&log_p0);
        let mut w = tilt_weights(&z, &p0, &fit.b, inputs);
        let scale = calibrated_scale(
            &Tilt {
                z: &z,
                log_p0: &log_p0,
                w: &w,
            },
            &fit,
            &features.x,
        );
        w.iter_mut().flatten().for_each(|v| *v *= scale);
        // The model applies W to x, the regression to x − μ: the bias takes −(W μ)·z.
        for (wr, zr) in w.iter().zip(&z) {
            let offset: f64 = wr.iter().zip(&features.mean).map(|(w, m)| w * m).sum();
            log_p0
                .iter_mut()
                .zip(zr)
                .for_each(|(l, zj)| *l -= offset * zj);
        }
        per_axis.push(w);
        log_priors.push(Some(log_p0));
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

/// At most `most` indices of `0..n`, evenly spaced (all of them when `n ≤ most`).
fn evenly_spaced(n: usize, most: usize) -> Vec<usize> {
    let m = n.min(most.max(1));
    (0..m).map(|i| i * n / m).collect()
}

/// The ridge penalties tried: `10^-3, 10^-2.5, …, 10^4`, the grid of
/// `benches/reference/tabular_baselines.py`.
fn penalties() -> impl Iterator<Item = f64> {
    (0..15).map(|i| 10f64.powf(-3.0 + 0.5 * i as f64))
}

/// The training features of the chosen rows, minus their means (`n × d`, row-major),
/// and those means.
struct CentredFeatures {
    x: Vec<f64>,
    mean: Vec<f64>,
}

impl CentredFeatures {
    fn of(train: &[Sample], rows: &[usize], inputs: usize) -> Result<CentredFeatures> {
        let mut x = Vec::with_capacity(rows.len() * inputs);
        for &index in rows {
            let sample = &train[index];
            match &sample.input {
                Input::Features(f) if f.len() == inputs => x.extend(f.iter().map(|&v| v as f64)),
                _ => {
                    return Err(Error::Config(format!(
                        "training sample {index} ({}): the least-squares start \
                         (`model.head_init`) needs {inputs} encoded features",
                        sample.origin
                    )))
                }
            }
        }
        let n = rows.len() as f64;
        let mut mean = vec![0.0; inputs];
        for row in x.chunks_exact(inputs) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / n);
        }
        for row in x.chunks_exact_mut(inputs) {
            row.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
        }
        Ok(CentredFeatures { x, mean })
    }
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

/// Per axis, each chosen training sample's expected statistics under its target
/// distribution (`n × k`, row-major), the mean target distribution, and the mean
/// variance of the first statistic under the targets.
struct AxisTargets {
    expected: Vec<Vec<f64>>,
    mean_pmf: Vec<Vec<f64>>,
    /// 0 for an axis without statistics.
    within_variance: Vec<f64>,
}

impl AxisTargets {
    /// Encodes one sample at a time (an axis may have millions of bins).
    fn of(space: &LabelSpace, train: &[Sample], rows: &[usize]) -> Result<AxisTargets> {
        let statistics: Vec<Vec<Vec<f64>>> = space.axes().iter().map(axis_statistics).collect();
        let axes = space.axes().len();
        let mut expected = vec![Vec::new(); axes];
        let mut mean_pmf: Vec<Vec<f64>> = space.axes().iter().map(|a| vec![0.0; a.len()]).collect();
        let mut within_variance = vec![0.0; axes];
        let n = rows.len() as f64;
        each_encoded_at(space, train, rows.iter().copied(), |encoded| {
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

/// `G + αI` factored: its Cholesky factor and the degrees of freedom of its ridge fit,
/// `tr((G + αI)⁻¹ G) = d − α tr((G + αI)⁻¹)`, with `tr(A⁻¹) = |L⁻¹|²_F`.
struct Factored {
    l: Vec<f64>,
    degrees_of_freedom: f64,
}

impl Factored {
    /// `None` when `G + αI` is not positive definite to working precision (features
    /// holding NaN or infinities).
    fn new(gram: &[f64], d: usize, alpha: f64) -> Option<Factored> {
        let mut a = gram.to_vec();
        (0..d).for_each(|i| a[i * d + i] += alpha);
        let l = cholesky(&a, d)?;
        let mut inverse_trace = 0.0;
        for i in 0..d {
            let mut e = vec![0.0; d];
            e[i] = 1.0;
            inverse_trace += forward(&l, d, &e).iter().map(|v| v * v).sum::<f64>();
        }
        Some(Factored {
            l,
            degrees_of_freedom: d as f64 - alpha * inverse_trace,
        })
    }

    /// `B = (G + αI)⁻¹ C` for `C` `d × k`.
    fn solve(&self, c: &[f64], d: usize, k: usize) -> Vec<f64> {
        let mut b = vec![0.0; d * k];
        for j in 0..k {
            let column: Vec<f64> = (0..d).map(|i| c[i * k + j]).collect();
            let solved = solve_cholesky(&self.l, d, &column);
            (0..d).for_each(|i| b[i * k + j] = solved[i]);
        }
        b
    }
}

/// A ridge regression chosen by generalised cross-validation.
struct ChosenRidge {
    /// The coefficients `B`, `d × k`, on centred features.
    b: Vec<f64>,
    /// The targets' mean statistics `t̄` (the intercept).
    target_mean: Vec<f64>,
    /// The residual variance per statistic, `RSS / (k (n − dof))`.
    residual_variance: f64,
}

/// The ridge regression of the targets `t` (`n × k`) on the centred features `x` with
/// the penalty of least generalised cross-validation score, `RSS / (n (1 − dof/n)²)`
/// with one degree of freedom for the intercept; `None` when the mean of the targets
/// scores better than every penalty.
fn ridge_by_gcv(
    x: &[f64],
    gram: &[f64],
    penalties: &[Factored],
    t: &[f64],
    (d, k): (usize, usize),
) -> Option<ChosenRidge> {
    let n = t.len() / k;
    let mut target_mean = vec![0.0; k];
    for row in t.chunks_exact(k) {
        target_mean
            .iter_mut()
            .zip(row)
            .for_each(|(m, v)| *m += v / n as f64);
    }
    // C = Xᵀ (T − t̄), d × k; and the total sum of squares.
    let mut c = vec![0.0; d * k];
    let mut total = 0.0;
    for (xr, tr) in x.chunks_exact(d).zip(t.chunks_exact(k)) {
        for (j, (tj, mj)) in tr.iter().zip(&target_mean).enumerate() {
            let centred = tj - mj;
            total += centred * centred;
            for (i, xi) in xr.iter().enumerate() {
                c[i * k + j] += xi * centred;
            }
        }
    }
    let mut best = (gcv_score(total, 1.0, n)?, None);
    for factored in penalties {
        let b = factored.solve(&c, d, k);
        let rss = residual_sum_of_squares(gram, &c, &b, total, d, k);
        let dof = factored.degrees_of_freedom + 1.0;
        if let Some(score) = gcv_score(rss, dof, n) {
            if score < best.0 {
                let residual_variance = rss / (k as f64 * (n as f64 - dof));
                best = (score, Some((b, residual_variance)));
            }
        }
    }
    let (b, residual_variance) = best.1?;
    Some(ChosenRidge {
        b,
        target_mean,
        residual_variance,
    })
}

/// `RSS / (n (1 − dof/n)²)`; `None` when the fit uses every degree of freedom.
fn gcv_score(rss: f64, dof: f64, n: usize) -> Option<f64> {
    let free = 1.0 - dof / n as f64;
    (free > 0.0).then(|| rss / (n as f64 * free * free))
}

/// `|T_c − X B|² = |T_c|² − 2 tr(BᵀC) + tr(Bᵀ G B)`, without another pass over the rows.
fn residual_sum_of_squares(
    gram: &[f64],
    c: &[f64],
    b: &[f64],
    total: f64,
    d: usize,
    k: usize,
) -> f64 {
    let mut rss = total;
    for j in 0..k {
        let bj: Vec<f64> = (0..d).map(|i| b[i * k + j]).collect();
        let cb: f64 = (0..d).map(|i| c[i * k + j] * bj[i]).sum();
        let gb: f64 = (0..d)
            .map(|i| bj[i] * (0..d).map(|l| gram[i * d + l] * bj[l]).sum::<f64>())
            .sum();
        rss += gb - 2.0 * cb;
    }
    rss.max(0.0)
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

/// The log (up to a constant) of a normal distribution over the bins of a linear axis
/// with statistic `z` whose mean over the bins is `mean` (the centre is moved for that
/// where the axis's ends cut the normal) and whose variance is `variance`, at least a
/// quarter of the smallest squared bin gap.
fn normal_log_prior(z: &[f64], mean: f64, variance: f64) -> Vec<f64> {
    let gap = z
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min);
    let variance = variance.max(gap * gap / 4.0);
    let log_p = |centre: f64| -> Vec<f64> {
        z.iter()
            .map(|zj| -(zj - centre).powi(2) / (2.0 * variance))
            .collect()
    };
    let mean_of = |centre: f64| -> f64 {
        softmax(&log_p(centre))
            .iter()
            .zip(z)
            .map(|(p, zj)| p * zj)
            .sum()
    };
    // The mean grows with the centre; far beyond the ends it saturates.
    let reach = 1.0 + 8.0 * variance.sqrt();
    let centre = golden_section_minimum(|c| (mean_of(c) - mean).powi(2), -reach, reach);
    log_p(centre)
}

/// The distribution of the logits `log_p`.
fn softmax(log_p: &[f64]) -> Vec<f64> {
    let top = log_p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = log_p.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

/// The path weights `W = Σ₀⁻¹ Bᵀ` (`k` rows of `d`) of an axis with statistics `z` and
/// starting distribution `p0`; zero rows when `Σ₀` is singular (all the mass in one
/// bin, or a circular axis of two bins).
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

/// One axis's tilt: its statistics, the logits it starts at and the path's weights.
struct Tilt<'a> {
    z: &'a [Vec<f64>],
    log_p0: &'a [f64],
    w: &'a [Vec<f64>],
}

impl Tilt<'_> {
    /// The expected statistics of the start tilted by `c · W x` at centred features `x`.
    fn expected(&self, c: f64, x: &[f64]) -> Vec<f64> {
        let s: Vec<f64> = self
            .w
            .iter()
            .map(|wr| wr.iter().zip(x).map(|(w, x)| w * x).sum())
            .collect();
        let logits: Vec<f64> = (0..self.log_p0.len())
            .map(|j| {
                self.log_p0[j] + c * s.iter().zip(self.z).map(|(s, zr)| s * zr[j]).sum::<f64>()
            })
            .collect();
        let p = softmax(&logits);
        self.z
            .iter()
            .map(|zr| zr.iter().zip(&p).map(|(z, p)| z * p).sum())
            .collect()
    }
}

/// The factor `c` on `W` whose exact tilts put the training rows' expected statistics
/// closest (least squares) to the regression's `t̄ + B x`, searched in `[0, 16]` on rows
/// evenly spaced up to [`CALIBRATION_CELLS`] row-bins (rows in parallel, summed in
/// order).
fn calibrated_scale(tilt: &Tilt<'_>, fit: &ChosenRidge, x: &[f64]) -> f64 {
    let k = tilt.z.len();
    let d = tilt.w[0].len();
    let n = x.len() / d;
    let per_row = tilt.log_p0.len().saturating_mul(k).max(1);
    let rows = evenly_spaced(n, (CALIBRATION_CELLS / per_row).max(16));
    let targets: Vec<Vec<f64>> = rows
        .iter()
        .map(|&i| {
            let xr = &x[i * d..(i + 1) * d];
            (0..k)
                .map(|j| {
                    fit.target_mean[j]
                        + xr.iter()
                            .enumerate()
                            .map(|(l, x)| x * fit.b[l * k + j])
                            .sum::<f64>()
                })
                .collect()
        })
        .collect();
    let misfit = |c: f64| -> f64 {
        let parts: Vec<f64> = rows
            .par_iter()
            .zip(&targets)
            .map(|(&i, target)| {
                let e = tilt.expected(c, &x[i * d..(i + 1) * d]);
                e.iter().zip(target).map(|(e, t)| (e - t).powi(2)).sum()
            })
            .collect();
        parts.iter().sum()
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

    fn all_penalties(gram: &[f64], d: usize) -> Vec<Factored> {
        penalties()
            .filter_map(|a| Factored::new(gram, d, a))
            .collect()
    }

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
        let factored = Factored::new(&[2.0], 1, 0.5).unwrap();
        assert!((factored.solve(&[4.0], 1, 1)[0] - 1.6).abs() < 1e-12);
        assert!((factored.degrees_of_freedom - 0.8).abs() < 1e-12);
    }

    /// The score and residuals computed from the Gram matrix against the hat matrix
    /// `H = X (XᵀX + αI)⁻¹ Xᵀ` built column by column: `RSS = |(I − H) t|²` and
    /// `dof = tr H`, on 7 rows of 3 features.
    #[test]
    fn the_gram_shortcuts_match_the_hat_matrix() {
        let (n, d) = (7, 3);
        let raw: Vec<f64> = (0..n * d)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let mut x = raw.clone();
        for j in 0..d {
            let mean = (0..n).map(|i| raw[i * d + j]).sum::<f64>() / n as f64;
            (0..n).for_each(|i| x[i * d + j] -= mean);
        }
        let t: Vec<f64> = (0..n).map(|i| ((i * 5 % 7) as f64) - 3.0).collect();
        let g = gram(&x, d);
        let alpha = 0.7;
        let factored = Factored::new(&g, d, alpha).unwrap();
        let c: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| x[i * d + j] * t[i]).sum())
            .collect();
        let b = factored.solve(&c, d, 1);
        let total: f64 = t.iter().map(|v| v * v).sum();
        let rss = residual_sum_of_squares(&g, &c, &b, total, d, 1);
        // H's columns: H e_m = X (G + αI)⁻¹ x_m.
        let mut trace = 0.0;
        let mut fitted = vec![0.0; n];
        for m in 0..n {
            let coefficients = solve_cholesky(&factored.l, d, &x[m * d..(m + 1) * d]);
            for i in 0..n {
                let h: f64 = (0..d).map(|j| x[i * d + j] * coefficients[j]).sum();
                fitted[i] += h * t[m];
                if i == m {
                    trace += h;
                }
            }
        }
        let direct: f64 = t.iter().zip(&fitted).map(|(t, f)| (t - f).powi(2)).sum();
        assert!((rss - direct).abs() < 1e-10 * direct, "{rss} vs {direct}");
        assert!((factored.degrees_of_freedom - trace).abs() < 1e-12);
    }

    /// Targets no feature explains (`Xᵀt = 0`): every penalty fits nothing and costs
    /// degrees of freedom, so the mean wins and there is no path. An exact line is
    /// fitted with the smallest penalty.
    #[test]
    fn cross_validation_keeps_the_mean_without_a_signal_and_fits_a_line() {
        let x = [1.0, -1.0, 1.0, -1.0];
        let g = gram(&x, 1);
        let t = [1.0, 1.0, -1.0, -1.0];
        assert!(ridge_by_gcv(&x, &g, &all_penalties(&g, 1), &t, (1, 1)).is_none());
        let x = [-1.5, -0.5, 0.5, 1.5, -1.0, 1.0];
        let g = gram(&x, 1);
        let t: Vec<f64> = x.iter().map(|v| 3.0 + 2.0 * v).collect();
        let fit = ridge_by_gcv(&x, &g, &all_penalties(&g, 1), &t, (1, 1)).unwrap();
        // Σx² = 7: b = 14 / (7 + 0.001); the intercept is the mean, 3.
        assert!((fit.b[0] - 14.0 / 7.001).abs() < 1e-12, "{}", fit.b[0]);
        assert!((fit.target_mean[0] - 3.0).abs() < 1e-12);
    }

    fn ridge(b: f64, target_mean: f64) -> ChosenRidge {
        ChosenRidge {
            b: vec![b],
            target_mean: vec![target_mean],
            residual_variance: 0.0,
        }
    }

    /// The tilt of a normal distribution over a fine, wide grid moves its mean by
    /// `s·σ²` (in the statistic's units): the first-order weights are exact and the
    /// calibration keeps them.
    #[test]
    fn a_normal_prior_needs_no_calibration() {
        let z: Vec<f64> = (0..=400).map(|j| j as f64 / 200.0 - 1.0).collect();
        let log_p0 = normal_log_prior(&z, 0.0, 0.01);
        let w = tilt_weights(std::slice::from_ref(&z), &softmax(&log_p0), &[0.05], 1);
        assert!((w[0][0] - 5.0).abs() < 1e-3, "{w:?}");
        let tilt = Tilt {
            z: std::slice::from_ref(&z),
            log_p0: &log_p0,
            w: &w,
        };
        let scale = calibrated_scale(&tilt, &ridge(0.05, 0.0), &[-1.0, 0.0, 1.0, 2.0]);
        assert!((scale - 1.0).abs() < 1e-3, "{scale}");
    }

    /// A start of three narrow bumps (a training-mean distribution of three rows): the
    /// first-order weights move the mean too little, and the calibrated scale, above 1,
    /// brings the tilted means closer to the regression's.
    #[test]
    fn a_bumpy_prior_is_calibrated() {
        let z: Vec<f64> = (0..=40).map(|j| j as f64 / 20.0 - 1.0).collect();
        let log_p0: Vec<f64> = z
            .iter()
            .map(|v| {
                let bump = |c: f64| (-(v - c).powi(2) / 0.002).exp();
                (bump(-0.4) + bump(0.0) + bump(0.4)).max(1e-6).ln()
            })
            .collect();
        let fit = ridge(0.3, 0.0);
        let w = tilt_weights(std::slice::from_ref(&z), &softmax(&log_p0), &fit.b, 1);
        let tilt = Tilt {
            z: std::slice::from_ref(&z),
            log_p0: &log_p0,
            w: &w,
        };
        let x = [-1.0, -0.5, 0.5, 1.0];
        let misfit = |c: f64| -> f64 {
            x.iter()
                .map(|&xi| (tilt.expected(c, &[xi])[0] - 0.3 * xi).powi(2))
                .sum()
        };
        let scale = calibrated_scale(&tilt, &fit, &x);
        assert!(scale > 1.2, "{scale}");
        assert!(
            misfit(scale) < 0.5 * misfit(1.0),
            "{} vs {}",
            misfit(scale),
            misfit(1.0)
        );
    }

    /// Near an end of the axis the normal is cut; its centre moves so that the mean of
    /// the discretised distribution is still the one asked for.
    #[test]
    fn a_cut_normal_keeps_its_mean() {
        let z: Vec<f64> = (0..=20).map(|j| j as f64 / 10.0 - 1.0).collect();
        let p = softmax(&normal_log_prior(&z, -0.9, 0.09));
        let mean: f64 = p.iter().zip(&z).map(|(p, z)| p * z).sum();
        assert!((mean + 0.9).abs() < 1e-6, "{mean}");
    }

    #[test]
    fn golden_section_finds_a_parabolas_minimum() {
        let x = golden_section_minimum(|x| (x - 3.0) * (x - 3.0) + 1.0, 0.0, 16.0);
        assert!((x - 3.0).abs() < 1e-7, "{x}");
        // At an end when the minimum lies outside.
        let x = golden_section_minimum(|x| x, 0.0, 16.0);
        assert!(x < 1e-7, "{x}");
    }

    #[test]
    fn rows_are_taken_evenly_spaced() {
        assert_eq!(evenly_spaced(10, 4), vec![0, 2, 5, 7]);
        assert_eq!(evenly_spaced(3, 8), vec![0, 1, 2]);
    }
}
