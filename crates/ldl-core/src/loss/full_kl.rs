//! The full-KL loss (Günder, Piatkowski and Bauckhage, 2022).

use candle_core::{DType, Tensor, D};

use super::fused_cpu::{FullKlCpu, SMALLEST_TARGET};

use super::joint::JointGroup;
use super::tensor_math::{
    log_softmax, log_sum_exp_keepdim, moments, negative_entropy, offsets_in_bins,
};
use super::{conform_targets, AxisParts, Component, Loss, TargetMoments};
use crate::axis::{Axis, AxisKind};
use crate::error::{Error, Result};
use crate::label_space::AxisTargets;

/// The default variance floor of `L_exp`, in bins² (see [`FullKl::with_variance_floor`]).
pub const DEFAULT_VARIANCE_FLOOR: f64 = 1e-3;

/// The full-KL loss: per axis `L_ld + L_exp + L_smooth`, summed over axes with no
/// weights, averaged over the batch.
///
/// - `L_ld = KL(p ‖ q)`, the label-distribution loss of DLDL;
/// - `L_exp = KL(N(μ_p, v_p) ‖ N(μ_q, v_q))`, the KL between the normal approximations
///   of target and prediction;
/// - `L_smooth`, the symmetrised KL between `q` and `q` shifted by one bin (truncated
///   and renormalised on linear axes, a rotation on circular ones).
///
/// All three are in nats and unchanged by an affine change of the axis unit, which is
/// why axes of different units can be summed without weights. Categorical axes get
/// `L_ld` alone.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use ldl_core::{loss::{FullKl, Loss}, Axis, Label, LabelSpace};
/// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 10.0, 1.0)?])?;
/// let targets = space.targets(&[vec![Label::value(4.0)]], DType::F32, &Device::Cpu)?;
/// let logits = Tensor::zeros((1, 11), DType::F32, &Device::Cpu)?;
/// let loss = FullKl::default().compute(&space, &[logits], &targets)?;
/// let keys: Vec<String> = loss.parts.iter().map(|p| p.key()).collect();
/// assert_eq!(keys, ["age/ld", "age/exp", "age/smooth"]);
/// assert!(loss.total_value()? > 0.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FullKl {
    target_moments: TargetMoments,
    variance_floor: f64,
    fused_cpu_kernel: bool,
}

impl Default for FullKl {
    fn default() -> Self {
        FullKl {
            target_moments: TargetMoments::Pmf,
            variance_floor: DEFAULT_VARIANCE_FLOOR,
            fused_cpu_kernel: true,
        }
    }
}

impl FullKl {
    /// The full-KL loss with target moments from the target distribution.
    pub fn new() -> Self {
        FullKl::default()
    }

    /// Chooses where the target's moments come from (default: the target pmf).
    pub fn with_target_moments(mut self, source: TargetMoments) -> Self {
        self.target_moments = source;
        self
    }

    /// Sets the floor applied to both variances in `L_exp`, in bins² (default 1e-3).
    ///
    /// A one-hot target (or a prediction that collapses onto one bin) has variance 0,
    /// which would make `L_exp` infinite. Both variances are raised to at least the
    /// floor; `q = p` still gives exactly 0. Must be finite and > 0.
    pub fn with_variance_floor(mut self, floor: f64) -> Result<Self> {
        if !(floor.is_finite() && floor > 0.0) {
            return Err(Error::InvalidOption(format!(
                "the variance floor must be finite and > 0, got {floor}"
            )));
        }
        self.variance_floor = floor;
        Ok(self)
    }

    /// Whether f32/f64 tensors on the CPU go through the fused kernel (the default) or
    /// through composed tensor ops (what other devices use). Both compute the same values
    /// and gradients; the switch exists to check one against the other.
    pub fn with_fused_cpu_kernel(mut self, enabled: bool) -> Self {
        self.fused_cpu_kernel = enabled;
        self
    }

    /// The target-moment source.
    pub fn target_moments(&self) -> TargetMoments {
        self.target_moments
    }

    /// The variance floor in bins².
    pub fn variance_floor(&self) -> f64 {
        self.variance_floor
    }

    /// `(ld, exp, smooth)` of one axis, per sample; `None` for the last two on a
    /// categorical axis. `relative` is `None` for the full-KL loss's own smoothness term
    /// and `Some(floor)` for the relative one of [`super::FullKlRelative`].
    pub(crate) fn terms(
        &self,
        logits: &Tensor,
        targets: &AxisTargets,
        axis: &Axis,
        relative: Option<f64>,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let targets = conform_targets(axis, logits, targets)?;
        let fusable = matches!(logits.dtype(), DType::F32 | DType::F64)
            && logits.device().is_cpu()
            && !axis.is_categorical();
        if self.fused_cpu_kernel && fusable {
            let (ld, exp, smooth) = self.fused_terms(logits, &targets, axis, relative)?;
            return Ok((ld, Some((exp, smooth))));
        }
        let log_q = log_softmax(logits)?;
        let ld = kl_divergence(&targets.pmf, &log_q)?;
        if axis.is_categorical() {
            return Ok((ld, None));
        }
        let exp = self.expectation_kl(&log_q, &targets, axis)?;
        let roughness = smoothness_kl(&log_q, axis)?;
        let smooth = match relative {
            None => roughness,
            Some(floor) => {
                let of_target = target_roughness(&targets.pmf, axis)?;
                relative_roughness(&roughness, &of_target, floor)?
            }
        };
        Ok((ld, Some((exp, smooth))))
    }

    fn fused_terms(
        &self,
        logits: &Tensor,
        targets: &AxisTargets,
        axis: &Axis,
        relative: Option<f64>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let step = axis.step();
        let nominal_variance = match self.target_moments {
            TargetMoments::Pmf => None,
            TargetMoments::Nominal => Some(
                targets
                    .std
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?
                    .iter()
                    .map(|s| (s / step).powi(2))
                    .collect(),
            ),
        };
        let op = FullKlCpu {
            centers_in_bins: axis.centers().iter().map(|c| c / step).collect(),
            step,
            period_in_bins: axis.period().map(|p| p / step),
            nominal_variance,
            floor: self.variance_floor,
            relative_smoothness: relative,
        };
        let parts = logits.contiguous()?.apply_op3(
            &targets.pmf.contiguous()?.detach(),
            &targets.value.contiguous()?.detach(),
            op,
        )?;
        let column = |i: usize| -> Result<Tensor> { Ok(parts.narrow(1, i, 1)?.squeeze(1)?) };
        Ok((column(0)?, column(1)?, column(2)?))
    }

    /// `KL(N(μ_p, v_p) ‖ N(μ_q, v_q))`, measured in bins from the target value.
    fn expectation_kl(&self, log_q: &Tensor, targets: &AxisTargets, axis: &Axis) -> Result<Tensor> {
        let offsets = offsets_in_bins(axis, &targets.value)?;
        let q = log_q.exp()?;
        let (mean_q, var_q) = moments(&q, &offsets)?;
        let (mean_p, var_p) = match self.target_moments {
            TargetMoments::Pmf => moments(&targets.pmf, &offsets)?,
            TargetMoments::Nominal => {
                // Offsets are measured from the nominal value, so its mean is 0.
                let std_in_bins = targets.std.affine(1.0 / axis.step(), 0.0)?;
                (std_in_bins.zeros_like()?, std_in_bins.sqr()?)
            }
        };
        gaussian_kl(
            &mean_p.detach(),
            &var_p.detach(),
            &mean_q,
            &var_q,
            self.variance_floor,
        )
    }
}

impl Loss for FullKl {
    fn name(&self) -> &'static str {
        "full-kl"
    }

    fn axis_parts(&self, logits: &Tensor, target: &AxisTargets, axis: &Axis) -> Result<AxisParts> {
        let (ld, moment_terms) = self.terms(logits, target, axis, None)?;
        let mut components = vec![Component::new("ld", 1.0, ld)];
        if let Some((exp, smooth)) = moment_terms {
            components.push(Component::new("exp", 1.0, exp));
            components.push(Component::new("smooth", 1.0, smooth));
        }
        Ok(AxisParts::new(components))
    }

    fn group_parts(
        &self,
        logits: &Tensor,
        targets: &[AxisTargets],
        axes: &[&Axis],
    ) -> Result<AxisParts> {
        let group = JointGroup::new(axes, logits, targets)?;
        let (ld, exp, smooth) =
            group.full_kl(logits, self.target_moments, self.variance_floor, None)?;
        Ok(AxisParts::new(vec![
            Component::new("ld", 1.0, ld),
            Component::new("exp", 1.0, exp),
            Component::new("smooth", 1.0, smooth),
        ]))
    }
}

/// `KL(p ‖ q) = Σ p (ln p − ln q)` per row, from `ln q`; `0 · ln 0 = 0`.
pub(crate) fn kl_divergence(pmf: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    let cross = (pmf * log_q)?.sum(D::Minus1)?;
    Ok((negative_entropy(pmf)? - cross)?)
}

/// `KL(N(μ_p, v_p) ‖ N(μ_q, v_q)) = ½ ln(v_q / v_p) + (v_p + (μ_p − μ_q)²) / (2 v_q) − ½`,
/// with both variances raised to at least `floor`.
fn gaussian_kl(
    mean_p: &Tensor,
    var_p: &Tensor,
    mean_q: &Tensor,
    var_q: &Tensor,
    floor: f64,
) -> Result<Tensor> {
    let var_p = var_p.maximum(floor)?;
    let var_q = var_q.maximum(floor)?;
    let log_ratio = (var_q.log()? - var_p.log()?)?;
    let spread = (&var_p + (mean_p - mean_q)?.sqr()?)?;
    let ratio = (spread / &var_q)?;
    Ok(((log_ratio + ratio)? - 1.0)?.affine(0.5, 0.0)?)
}

/// `½ [KL(a ‖ b) + KL(b ‖ a)] = ½ Σ (a − b)(ln a − ln b)` between `q` shifted by one bin
/// (`a`) and `q` (`b`).
///
/// On a linear axis both are truncated to the `K − 1` bins they share and renormalised;
/// on a circular axis the shift is a rotation and nothing is dropped. The logs come from
/// `ln q` directly, so an underflowed probability never reaches a `ln`.
pub(crate) fn smoothness_kl(log_q: &Tensor, axis: &Axis) -> Result<Tensor> {
    let bins = axis.len();
    let (log_a, log_b) = match axis.kind() {
        AxisKind::Circular { .. } => {
            let rotated = Tensor::cat(&[log_q.narrow(1, 1, bins - 1)?, log_q.narrow(1, 0, 1)?], 1)?;
            (rotated, log_q.clone())
        }
        _ => {
            let upper = log_q.narrow(1, 1, bins - 1)?;
            let lower = log_q.narrow(1, 0, bins - 1)?;
            let log_a = upper.broadcast_sub(&log_sum_exp_keepdim(&upper)?)?;
            let log_b = lower.broadcast_sub(&log_sum_exp_keepdim(&lower)?)?;
            (log_a, log_b)
        }
    };
    let difference = (log_a.exp()? - log_b.exp()?)?;
    let log_difference = (log_a - log_b)?;
    Ok((difference * log_difference)?
        .sum(D::Minus1)?
        .affine(0.5, 0.0)?)
}

/// The roughness `S(p)` of target distributions (the smoothness KL of `p` itself), a
/// constant. Probabilities are raised to at least [`SMALLEST_TARGET`] first, in at least
/// f32: `S` of a distribution with exact zeros beside non-zero bins is infinite.
pub(crate) fn target_roughness(pmf: &Tensor, axis: &Axis) -> Result<Tensor> {
    let wide = match pmf.dtype() {
        DType::F16 | DType::BF16 => pmf.to_dtype(DType::F32)?,
        _ => pmf.clone(),
    };
    let log_p = wide.detach().maximum(SMALLEST_TARGET)?.log()?;
    Ok(smoothness_kl(&log_p, axis)?.to_dtype(pmf.dtype())?.detach())
}

/// `½ (ρ − ln ρ − 1)` with `ρ = S(q) / S(p)`, both raised to at least `floor`: the KL
/// between zero-mean normals of variances `1/(2 S(p))` and `1/(2 S(q))`.
pub(crate) fn relative_roughness(
    of_prediction: &Tensor,
    of_target: &Tensor,
    floor: f64,
) -> Result<Tensor> {
    let ratio = (of_prediction.maximum(floor)? / of_target.maximum(floor)?)?;
    Ok(((&ratio - ratio.log()?)? - 1.0)?.affine(0.5, 0.0)?)
}
