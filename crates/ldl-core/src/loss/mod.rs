//! The losses: the full-KL loss and the baselines it is compared against.
//!
//! Every loss works on logits (one `(batch, K)` tensor per axis), goes through
//! `log_softmax` (never `ln` of a probability), is differentiable with candle's autograd,
//! and returns its parts per axis and per component, so training can log `age/ld`,
//! `age/exp`, `age/smooth`, …
//!
//! | loss | per axis | weights |
//! |---|---|---|
//! | [`FullKl`] | `L_ld + L_exp + L_smooth` | none |
//! | [`Kl`] (DLDL) | `L_ld` | none |
//! | [`DldlV2`] | `L_ld + λ·|μ_p − μ_q|` | λ per axis |
//! | [`MeanVariance`] | `L_softmax + λ1·L_mean + λ2·L_variance` | λ1, λ2 |
//!
//! Categorical axes have no order, so every loss uses `L_ld` (or, for mean-variance, the
//! softmax loss) alone on them. See `docs/loss.md` for the mathematics.

mod dldl_v2;
mod full_kl;
mod fused_cpu;
mod joint;
mod kl;
mod mean_variance;
mod tensor_math;

use candle_core::{Tensor, D};

pub use dldl_v2::{dldl_v2_parts, DldlV2, DldlV2Parts};
pub use full_kl::{full_kl_parts, FullKl, FullKlParts, DEFAULT_VARIANCE_FLOOR};
pub use joint::{joint_full_kl_parts, multivariate_normal_kl};
pub use kl::{kl_part, Kl};
pub use mean_variance::{MeanVariance, MeanVarianceParts};

use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label_space::{AxisTargets, LabelSpace};
use joint::JointGroup;

/// Where the target's mean and variance come from in the moment-based terms
/// (`L_exp` of the full-KL loss, the L1 term of DLDL-v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetMoments {
    /// The target distribution's own mean and variance. `L_exp` is then exactly 0 when
    /// the prediction equals the target, also at the ends of the axis, and explicit
    /// distributions work too. The default.
    #[default]
    Pmf,
    /// The nominal label value and std `(y, s²)`, as the full-KL authors' code does for
    /// scalar labels. Near the axis ends this leaves a non-zero floor, because the
    /// truncated target's moments differ from `(y, s²)`.
    Nominal,
}

/// One component of a loss on one axis or one joint group.
#[derive(Debug, Clone)]
pub struct LossPart {
    /// The axis name, or a joint group's name (`yaw+pitch`) for a part over its grid.
    pub axis: String,
    /// The component: `ld`, `exp`, `smooth`, `l1`, `softmax`, `mean` or `variance`.
    pub component: &'static str,
    /// The weight this component enters the total with (1 for the full-KL loss).
    pub weight: f64,
    /// The unweighted component per sample, shape `(batch,)`.
    pub per_sample: Tensor,
    /// The unweighted component's batch mean, a scalar.
    pub value: Tensor,
}

impl LossPart {
    /// The log key, `axis/component` (e.g. `age/smooth`).
    pub fn key(&self) -> String {
        format!("{}/{}", self.axis, self.component)
    }
}

/// A loss value with its parts.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// `Σ weight · value` over all parts: the scalar to call `backward` on.
    pub total: Tensor,
    /// The parts, axis by axis in label-space order.
    pub parts: Vec<LossPart>,
}

impl LossOutput {
    /// The total as an `f64`.
    pub fn total_value(&self) -> Result<f64> {
        Ok(self
            .total
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?)
    }

    /// Every part's batch mean as `(key, value)`, for logging.
    pub fn part_values(&self) -> Result<Vec<(String, f64)>> {
        self.parts
            .iter()
            .map(|part| {
                let value = part
                    .value
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                Ok((part.key(), value))
            })
            .collect()
    }
}

/// A loss over a whole label space.
pub trait Loss: Send + Sync {
    /// A short name for logs (`full-kl`, `kl`, `dldl-v2`, `mean-variance`).
    fn name(&self) -> &'static str;

    /// The loss of a batch: `logits[h]` belongs to `space.heads()[h]` (with no joint
    /// groups, head `a` is axis `a`) and `targets[a]` to `space.axes()[a]`.
    fn compute(
        &self,
        space: &LabelSpace,
        logits: &[Tensor],
        targets: &[AxisTargets],
    ) -> Result<LossOutput>;
}

/// A weighted per-sample component of one axis or joint group, before batch averaging.
pub(crate) struct Component {
    pub name: &'static str,
    pub weight: f64,
    pub per_sample: Tensor,
    /// The axis the part is reported under, where it is not the head's own name (a
    /// member axis's part inside a joint group).
    pub axis: Option<String>,
}

impl Component {
    pub(crate) fn new(name: &'static str, weight: f64, per_sample: Tensor) -> Self {
        Component {
            name,
            weight,
            per_sample,
            axis: None,
        }
    }

    /// The same component, reported under `axis`.
    pub(crate) fn of_axis(mut self, axis: &str) -> Self {
        self.axis = Some(axis.to_string());
        self
    }
}

/// Checks shapes, runs `per_axis` on every single-axis head and `per_group` on every
/// joint group, averages over the batch and sums the weighted components into the
/// total. Shared by every loss.
pub(crate) fn assemble(
    space: &LabelSpace,
    logits: &[Tensor],
    targets: &[AxisTargets],
    per_axis: impl Fn(&Axis, &Tensor, &AxisTargets) -> Result<Vec<Component>>,
    per_group: impl Fn(&JointGroup, &Tensor) -> Result<Vec<Component>>,
) -> Result<LossOutput> {
    space.check_logits(logits)?;
    if targets.len() != space.len() {
        return Err(Error::Shape(format!(
            "got {} targets for a label space of {} axes",
            targets.len(),
            space.len()
        )));
    }
    let mut parts = Vec::new();
    let mut total: Option<Tensor> = None;
    for (head, z) in space.heads().iter().zip(logits) {
        let components = if head.is_joint() {
            let group = JointGroup::new(space, head, z, targets)?;
            per_group(&group, z)?
        } else {
            let axis = &space.axes()[head.axes()[0]];
            let target = conform_targets(axis, z, &targets[head.axes()[0]])?;
            per_axis(axis, z, &target)?
        };
        for component in components {
            let value = component.per_sample.mean(D::Minus1)?;
            let weighted = value.affine(component.weight, 0.0)?;
            total = Some(match total {
                None => weighted,
                Some(sum) => (sum + weighted)?,
            });
            parts.push(LossPart {
                axis: component.axis.unwrap_or_else(|| head.name().to_string()),
                component: component.name,
                weight: component.weight,
                per_sample: component.per_sample,
                value,
            });
        }
    }
    let total = total.ok_or_else(|| Error::Shape("the label space has no axes".into()))?;
    Ok(LossOutput { total, parts })
}

/// Checks one axis's targets against its logits and casts them to the logits' dtype
/// and device.
pub(crate) fn conform_targets(
    axis: &Axis,
    logits: &Tensor,
    target: &AxisTargets,
) -> Result<AxisTargets> {
    let (batch, bins) = logits.dims2().map_err(|_| {
        Error::Shape(format!(
            "axis `{}`: logits have shape {:?}, expected (batch, {})",
            axis.name(),
            logits.dims(),
            axis.len()
        ))
    })?;
    if bins != axis.len() {
        return Err(Error::Shape(format!(
            "axis `{}`: logits have {bins} bins, the axis has {}",
            axis.name(),
            axis.len()
        )));
    }
    conform_targets_to(axis, logits, batch, target)
}

/// Checks one axis's targets for a batch of `batch` samples (`(batch, K)`
/// distributions, `(batch,)` values and stds) and casts them to the dtype and device of
/// `like`, detached.
pub(crate) fn conform_targets_to(
    axis: &Axis,
    like: &Tensor,
    batch: usize,
    target: &AxisTargets,
) -> Result<AxisTargets> {
    if !tensor_math::is_float(like.dtype()) {
        return Err(Error::Shape(format!(
            "axis `{}`: logits must be floating point, got {:?}",
            axis.name(),
            like.dtype()
        )));
    }
    if batch == 0 {
        return Err(Error::Shape(format!(
            "axis `{}`: the batch is empty; a loss needs at least one sample",
            axis.name()
        )));
    }
    let bins = axis.len();
    if target.pmf.dims() != [batch, bins] {
        return Err(Error::Shape(format!(
            "axis `{}`: target distributions have shape {:?}, expected ({batch}, {bins})",
            axis.name(),
            target.pmf.dims(),
        )));
    }
    for (what, t) in [("values", &target.value), ("stds", &target.std)] {
        if t.dims() != [batch] {
            return Err(Error::Shape(format!(
                "axis `{}`: target {what} have shape {:?}, expected ({batch},)",
                axis.name(),
                t.dims()
            )));
        }
    }
    // Targets are constants: no gradient flows into them.
    let cast = |t: &Tensor| -> Result<Tensor> {
        Ok(t.to_device(like.device())?.to_dtype(like.dtype())?.detach())
    };
    Ok(AxisTargets {
        pmf: cast(&target.pmf)?,
        value: cast(&target.value)?,
        std: cast(&target.std)?,
    })
}

fn check_weight(what: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::InvalidOption(format!(
            "{what} must be finite and ≥ 0, got {value}"
        )))
    }
}
