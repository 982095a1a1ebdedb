//! The losses of a joint group: one distribution over the product grid of its axes.
//!
//! For a group of `d` axes the full-KL terms become (see `docs/loss.md`):
//! - `L_ld`: `KL(p ‖ q)` over the grid, with `p` the product of the members' targets;
//! - `L_exp`: the KL between the multivariate normals with the pmfs' mean vectors and
//!   covariance matrices, `½[tr(Σ_q⁻¹Σ_p) + δᵀΣ_q⁻¹δ − d + ln(det Σ_q / det Σ_p)]`;
//! - `L_smooth`: the mean over the grid dimensions of the one-bin smoothness along that
//!   dimension (truncated and renormalised on linear axes, a rotation on circular ones);
//!   for [`super::FullKlRelative`], the mean over the dimensions of the relative term.
//!
//! Offsets are measured in bins of each member axis (from the member's target value,
//! wrapped on circular axes), so every term is unit-free as in one dimension.

// Index loops over small matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use candle_core::{DType, Tensor, D};

use super::full_kl::{kl_divergence, relative_roughness};
use super::fused_cpu::SMALLEST_TARGET;
use super::tensor_math::{log_softmax, log_sum_exp_keepdim, moments, offsets_in_bins};
use super::{conform_targets_to, TargetMoments};
use crate::axis::{Axis, AxisKind};
use crate::error::{Error, Result};
use crate::label_space::{joint_target, AxisTargets};

/// A joint group's members and their targets for one batch, checked and cast to the
/// logits' dtype and device.
pub(crate) struct JointGroup<'a> {
    pub axes: Vec<&'a Axis>,
    pub shape: Vec<usize>,
    pub targets: Vec<AxisTargets>,
}

impl<'a> JointGroup<'a> {
    /// Checks a group's logits `(batch, K₁·…·K_d)` and its members' targets, and casts
    /// the targets to the logits' dtype and device.
    pub(crate) fn new(
        axes: &[&'a Axis],
        logits: &Tensor,
        targets: &[AxisTargets],
    ) -> Result<JointGroup<'a>> {
        let names: Vec<&str> = axes.iter().map(|a| a.name()).collect();
        let name = names.join("+");
        if axes.is_empty() || targets.len() != axes.len() {
            return Err(Error::Shape(format!(
                "joint group `{name}`: {} axes and {} targets; need one target per axis and \
                 at least one axis",
                axes.len(),
                targets.len()
            )));
        }
        if let Some(axis) = axes.iter().find(|a| a.is_categorical()) {
            return Err(Error::InvalidLabelSpace(format!(
                "joint group `{name}`: `{}` is categorical; joint groups are for linear and \
                 circular axes, whose bins have an order",
                axis.name()
            )));
        }
        let shape: Vec<usize> = axes.iter().map(|a| a.len()).collect();
        let bins: usize = shape.iter().product();
        let batch = match logits.dims() {
            &[batch, got] if got == bins => batch,
            dims => {
                return Err(Error::Shape(format!(
                    "joint group `{name}`: logits have shape {dims:?}, expected (batch, {bins})"
                )))
            }
        };
        let targets = axes
            .iter()
            .zip(targets)
            .map(|(axis, target)| conform_targets_to(axis, logits, batch, target))
            .collect::<Result<Vec<_>>>()?;
        Ok(JointGroup {
            axes: axes.to_vec(),
            shape,
            targets,
        })
    }

    /// The target distribution over the grid, `(batch, bins)`.
    pub(crate) fn target(&self) -> Result<Tensor> {
        let members: Vec<&Tensor> = self.targets.iter().map(|t| &t.pmf).collect();
        joint_target(&members)
    }

    /// `ln` of each member's marginal of `exp(log_q)`, `(batch, K_j)` each, computed with
    /// a log-sum-exp so that no underflowed probability reaches a `ln`.
    pub(crate) fn log_marginals(&self, log_q: &Tensor) -> Result<Vec<Tensor>> {
        let batch = log_q.dim(0)?;
        (0..self.shape.len())
            .map(|j| {
                let (before, k, after) = split_at(&self.shape, j);
                let grouped = log_q
                    .reshape((batch, before, k, after))?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((batch * k, before * after))?;
                Ok(log_sum_exp_keepdim(&grouped)?.reshape((batch, k))?)
            })
            .collect()
    }

    /// The full-KL components over the grid, per sample. `relative` is `None` for the
    /// full-KL loss's own smoothness term, `Some(floor)` for the relative one of
    /// [`super::FullKlRelative`].
    pub(crate) fn full_kl(
        &self,
        logits: &Tensor,
        target_moments: TargetMoments,
        floor: f64,
        relative: Option<f64>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let log_q = log_softmax(logits)?;
        let p = self.target()?;
        let ld = kl_divergence(&p, &log_q)?;
        let exp = self.expectation_kl(&log_q, &p, target_moments, floor)?;
        let smooth = match relative {
            None => self.smoothness(&log_q)?,
            Some(smoothness_floor) => self.relative_smoothness(&log_q, &p, smoothness_floor)?,
        };
        Ok((ld, exp, smooth))
    }

    /// Offsets of the grid cells from the target along member `j`, in bins of that axis,
    /// `(batch, bins)`, in f64.
    fn grid_offsets(&self, j: usize) -> Result<Tensor> {
        let value = self.targets[j].value.to_dtype(DType::F64)?;
        let offsets = offsets_in_bins(self.axes[j], &value)?;
        let batch = offsets.dim(0)?;
        let (before, k, after) = split_at(&self.shape, j);
        Ok(offsets
            .reshape((batch, 1, k, 1))?
            .broadcast_as((batch, before, k, after))?
            .contiguous()?
            .reshape((batch, before * k * after))?)
    }

    /// Computed in f64 whatever the logits' dtype: on a large grid the variances are
    /// of order K²/12 bins², next to which the floor vanishes in f32, and the Cholesky
    /// step `Σ₂₂ − Σ₁₂²/Σ₁₁` of a prediction concentrated along a line would cancel to
    /// nothing (or below).
    fn expectation_kl(
        &self,
        log_q: &Tensor,
        p: &Tensor,
        target_moments: TargetMoments,
        floor: f64,
    ) -> Result<Tensor> {
        let dtype = log_q.dtype();
        let log_q = &log_q.to_dtype(DType::F64)?;
        let p = &p.to_dtype(DType::F64)?;
        let d = self.shape.len();
        let offsets = (0..d)
            .map(|j| self.grid_offsets(j))
            .collect::<Result<Vec<_>>>()?;
        let q = log_q.exp()?;
        let (mean_q, cov_q) = grid_moments(&q, &offsets)?;
        let (mean_p, cov_p) = match target_moments {
            TargetMoments::Pmf => grid_moments(p, &offsets)?,
            TargetMoments::Nominal => {
                // Offsets are measured from the nominal values, so their means are 0;
                // the nominal covariance is diagonal.
                let zeros = mean_q[0].zeros_like()?.detach();
                let mut cov = vec![vec![zeros.clone(); d]; d];
                for j in 0..d {
                    let std = self.targets[j]
                        .std
                        .to_dtype(DType::F64)?
                        .affine(1.0 / self.axes[j].step(), 0.0)?;
                    cov[j][j] = std.sqr()?;
                }
                (vec![zeros; d], cov)
            }
        };
        let detach = |v: Vec<Tensor>| v.into_iter().map(|t| t.detach()).collect::<Vec<_>>();
        let mean_p = detach(mean_p);
        let cov_p = cov_p.into_iter().map(detach).collect::<Vec<_>>();
        Ok(gaussian_kl(&mean_p, &cov_p, &mean_q, &cov_q, floor)?.to_dtype(dtype)?)
    }

    /// The full-KL loss's smoothness: the mean over the dimensions of the roughness
    /// along each.
    fn smoothness(&self, log_q: &Tensor) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for term in self.roughness_along(log_q)? {
            sum = Some(match sum {
                None => term,
                Some(s) => (s + term)?,
            });
        }
        let sum = sum.ok_or_else(|| Error::Shape("a joint group without axes".into()))?;
        Ok(sum.affine(1.0 / self.shape.len() as f64, 0.0)?)
    }

    /// The relative smoothness of [`super::FullKlRelative`]: the mean over the dimensions
    /// of `½ (ρ − ln ρ − 1)`, `ρ` the ratio of the prediction's roughness along that
    /// dimension to the target's.
    fn relative_smoothness(&self, log_q: &Tensor, p: &Tensor, floor: f64) -> Result<Tensor> {
        let wide = match p.dtype() {
            DType::F16 | DType::BF16 => p.to_dtype(DType::F32)?,
            _ => p.clone(),
        };
        let log_p = wide.detach().maximum(SMALLEST_TARGET)?.log()?;
        let of_target = self.roughness_along(&log_p)?;
        let mut sum: Option<Tensor> = None;
        for (of_q, of_p) in self.roughness_along(log_q)?.iter().zip(of_target) {
            let of_p = of_p.to_dtype(log_q.dtype())?.detach();
            let term = relative_roughness(of_q, &of_p, floor)?;
            sum = Some(match sum {
                None => term,
                Some(s) => (s + term)?,
            });
        }
        let sum = sum.ok_or_else(|| Error::Shape("a joint group without axes".into()))?;
        Ok(sum.affine(1.0 / self.shape.len() as f64, 0.0)?)
    }

    /// The one-bin smoothness KL of `exp(log_r)` along each dimension of the grid, per
    /// sample: `r` against `r` shifted by one bin along that dimension (truncated to the
    /// cells both cover and renormalised on a linear member, rotated on a circular one).
    fn roughness_along(&self, log_r: &Tensor) -> Result<Vec<Tensor>> {
        let batch = log_r.dim(0)?;
        let mut out = Vec::with_capacity(self.shape.len());
        for j in 0..self.shape.len() {
            let (before, k, after) = split_at(&self.shape, j);
            let cube = log_r.reshape((batch, before, k, after))?;
            let flat = |t: Tensor| -> Result<Tensor> {
                let cells = t.dims()[1..].iter().product::<usize>();
                Ok(t.contiguous()?.reshape((batch, cells))?)
            };
            let (log_a, log_b) = match self.axes[j].kind() {
                AxisKind::Circular { .. } => {
                    let rotated =
                        Tensor::cat(&[cube.narrow(2, 1, k - 1)?, cube.narrow(2, 0, 1)?], 2)?;
                    (flat(rotated)?, flat(cube)?)
                }
                _ => {
                    let upper = flat(cube.narrow(2, 1, k - 1)?)?;
                    let lower = flat(cube.narrow(2, 0, k - 1)?)?;
                    (
                        upper.broadcast_sub(&log_sum_exp_keepdim(&upper)?)?,
                        lower.broadcast_sub(&log_sum_exp_keepdim(&lower)?)?,
                    )
                }
            };
            let term = ((log_a.exp()? - log_b.exp()?)? * (log_a - log_b)?)?
                .sum(D::Minus1)?
                .affine(0.5, 0.0)?;
            out.push(term);
        }
        Ok(out)
    }
}

/// `(Π shape[..j], shape[j], Π shape[j+1..])`.
fn split_at(shape: &[usize], j: usize) -> (usize, usize, usize) {
    (
        shape[..j].iter().product(),
        shape[j],
        shape[j + 1..].iter().product(),
    )
}

/// Mean vector and covariance matrix of each row's grid distribution over the offsets
/// (one `(batch, bins)` tensor per dimension). Entries are `(batch,)` tensors. The
/// covariance is taken around the mean, which stays accurate in f32.
fn grid_moments(pmf: &Tensor, offsets: &[Tensor]) -> Result<(Vec<Tensor>, Vec<Vec<Tensor>>)> {
    let d = offsets.len();
    let mut means = Vec::with_capacity(d);
    let mut centred = Vec::with_capacity(d);
    for o in offsets {
        let (mean, _) = moments(pmf, o)?;
        centred.push(o.broadcast_sub(&mean.unsqueeze(1)?)?);
        means.push(mean);
    }
    let mut cov: Vec<Vec<Tensor>> = vec![Vec::with_capacity(d); d];
    for i in 0..d {
        for j in 0..d {
            let entry = if j < i {
                cov[j][i].clone()
            } else {
                (pmf * (&centred[i] * &centred[j])?)?.sum(D::Minus1)?
            };
            cov[i].push(entry);
        }
    }
    Ok((means, cov))
}

/// Lower Cholesky factor of a symmetric positive-definite matrix of `(batch,)` tensors.
fn cholesky(matrix: &[Vec<Tensor>]) -> Result<Vec<Vec<Option<Tensor>>>> {
    let d = matrix.len();
    let mut l: Vec<Vec<Option<Tensor>>> = vec![vec![None; d]; d];
    for j in 0..d {
        let mut diagonal = matrix[j][j].clone();
        for m in 0..j {
            let ljm = l[j][m].as_ref().expect("filled above");
            diagonal = (diagonal - ljm.sqr()?)?;
        }
        let ljj = diagonal.sqrt()?;
        for i in j + 1..d {
            let mut entry = matrix[i][j].clone();
            for m in 0..j {
                let lim = l[i][m].as_ref().expect("filled above");
                let ljm = l[j][m].as_ref().expect("filled above");
                entry = (entry - (lim * ljm)?)?;
            }
            l[i][j] = Some((entry / &ljj)?);
        }
        l[j][j] = Some(ljj);
    }
    Ok(l)
}

/// Solves `L x = b` for lower-triangular `L` (entries above the diagonal are `None`).
fn forward_substitute(l: &[Vec<Option<Tensor>>], b: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut x: Vec<Tensor> = Vec::with_capacity(b.len());
    for i in 0..b.len() {
        let mut entry = b[i].clone();
        for (m, xm) in x.iter().enumerate() {
            let lim = l[i][m].as_ref().expect("lower triangle");
            entry = (entry - (lim * xm)?)?;
        }
        x.push((entry / l[i][i].as_ref().expect("diagonal"))?);
    }
    Ok(x)
}

/// `KL(N(μ_p, Σ_p) ‖ N(μ_q, Σ_q))` per sample, with `floor·I` added to both covariances
/// so that degenerate distributions (a one-hot target) stay finite. Through Cholesky
/// factors: `tr(Σ_q⁻¹Σ_p) = ‖L_q⁻¹L_p‖²_F`, `δᵀΣ_q⁻¹δ = ‖L_q⁻¹δ‖²`,
/// `ln det Σ = 2 Σ ln L_jj`.
fn gaussian_kl(
    mean_p: &[Tensor],
    cov_p: &[Vec<Tensor>],
    mean_q: &[Tensor],
    cov_q: &[Vec<Tensor>],
    floor: f64,
) -> Result<Tensor> {
    let d = mean_p.len();
    let regularise = |cov: &[Vec<Tensor>]| -> Result<Vec<Vec<Tensor>>> {
        let mut out = cov.to_vec();
        for (j, row) in out.iter_mut().enumerate() {
            row[j] = (&row[j] + floor)?;
        }
        Ok(out)
    };
    let lp = cholesky(&regularise(cov_p)?)?;
    let lq = cholesky(&regularise(cov_q)?)?;
    let zero = mean_p[0].zeros_like()?;
    let mut total = zero.clone();
    // tr(Σ_q⁻¹Σ_p): the columns of L_q⁻¹ L_p.
    for k in 0..d {
        let column: Vec<Tensor> = (0..d)
            .map(|i| lp[i][k].clone().unwrap_or_else(|| zero.clone()))
            .collect();
        for x in forward_substitute(&lq, &column)? {
            total = (total + x.sqr()?)?;
        }
    }
    let delta: Vec<Tensor> = mean_q
        .iter()
        .zip(mean_p)
        .map(|(q, p)| Ok((q - p)?))
        .collect::<Result<_>>()?;
    for x in forward_substitute(&lq, &delta)? {
        total = (total + x.sqr()?)?;
    }
    for j in 0..d {
        let log_q = lq[j][j].as_ref().expect("diagonal").log()?;
        let log_p = lp[j][j].as_ref().expect("diagonal").log()?;
        total = (total + (log_q - log_p)?.affine(2.0, 0.0)?)?;
    }
    Ok((total - d as f64)?.affine(0.5, 0.0)?)
}

/// `KL(N(μ_p, Σ_p) ‖ N(μ_q, Σ_q))` for one pair of `d`-dimensional normals (row-major
/// `d × d` covariances; both must be positive definite), computed the way the joint
/// `L_exp` computes it, with no floor. For checking against closed forms.
///
/// ```
/// use ldl_core::loss::multivariate_normal_kl;
/// // Identical normals: 0. Standard normals one unit apart: ½.
/// assert!(multivariate_normal_kl(&[1.0, 2.0], &[2.0, 0.5, 0.5, 1.0], &[1.0, 2.0], &[2.0, 0.5, 0.5, 1.0])?.abs() < 1e-12);
/// let kl = multivariate_normal_kl(&[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0], &[1.0, 0.0], &[1.0, 0.0, 0.0, 1.0])?;
/// assert!((kl - 0.5).abs() < 1e-12);
/// # Ok::<(), ldl_core::Error>(())
/// ```
pub fn multivariate_normal_kl(
    mean_p: &[f64],
    cov_p: &[f64],
    mean_q: &[f64],
    cov_q: &[f64],
) -> Result<f64> {
    let d = mean_p.len();
    if d == 0 || mean_q.len() != d || cov_p.len() != d * d || cov_q.len() != d * d {
        return Err(Error::Shape(format!(
            "multivariate normal KL: means of length {} and {}, covariances of {} and {} \
             entries; need d, d, d² and d² with d ≥ 1",
            d,
            mean_q.len(),
            cov_p.len(),
            cov_q.len()
        )));
    }
    let device = candle_core::Device::Cpu;
    let scalar = |v: f64| Tensor::new(&[v], &device);
    let vector = |v: &[f64]| {
        v.iter()
            .map(|&x| scalar(x))
            .collect::<candle_core::Result<Vec<_>>>()
    };
    let matrix = |m: &[f64]| {
        m.chunks(d)
            .map(&vector)
            .collect::<candle_core::Result<Vec<_>>>()
    };
    let kl = gaussian_kl(
        &vector(mean_p)?,
        &matrix(cov_p)?,
        &vector(mean_q)?,
        &matrix(cov_q)?,
        0.0,
    )?;
    let value = kl.to_vec1::<f64>()?[0];
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::InvalidOption(
            "multivariate normal KL: a covariance is not positive definite".into(),
        ))
    }
}
