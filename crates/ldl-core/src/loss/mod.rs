//! The losses: the full-KL loss and the baselines it is compared against.
//!
//! Every loss works on logits (one `(batch, K)` tensor per head of the label space), goes through
//! `log_softmax` (never `ln` of a probability), is differentiable with candle's autograd,
//! and returns its parts per axis and per component, so training can log `age/ld`,
//! `age/exp`, `age/smooth`, …
//!
//! | loss | per axis | components | weights |
//! |---|---|---|---|
//! | [`FullKl`] | `L_ld + L_exp + L_smooth` | `ld`, `exp`, `smooth` | none |
//! | [`FullKlRelative`] | `L_ld + L_exp + L_rsmooth` | `ld`, `exp`, `smooth_rel` | none |
//! | [`Kl`] (DLDL) | `L_ld` | `ld` | none |
//! | [`DldlV2`] | `L_ld + λ·|μ_p − μ_q|` | `ld`, `l1` | λ per axis |
//! | [`MeanVariance`] | `L_softmax + λ1·L_mean + λ2·L_variance` | `softmax`, `mean`, `variance` | λ1, λ2 |
//!
//! Categorical axes have no order, so every loss uses `L_ld` (or, for mean-variance, the
//! softmax loss) alone on them. [`PerAxis`] gives some axes another loss than the rest.
//! See `docs/loss.md` for the mathematics.
//!
//! Every loss has the same three entry points, all on the [`Loss`] trait; the options of
//! a loss (λ, target moments, the variance floor) live in the loss value, so the
//! arguments are the same for all of them:
//!
//! | call | covers | returns |
//! |---|---|---|
//! | [`Loss::axis_parts`]`(logits, target, axis)` | one axis | [`AxisParts`], per sample |
//! | [`Loss::group_parts`]`(logits, targets, axes)` | one joint group | [`AxisParts`], per sample |
//! | [`Loss::compute`]`(space, logits, targets)` | a label space | [`LossOutput`], batch means |
//!
//! [`Loss::compute`] is the one assembly shared by every loss: it runs `axis_parts` or
//! `group_parts` per head and sums the batch means of the components, weighted, into the
//! total. [`AxisParts::total`] is the same weighted sum per sample.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use ldl_core::{loss::{DldlV2, FullKl, Loss}, Axis, AxisTargets};
//! let axis = Axis::linear("x", 0.0, 2.0, 1.0)?;
//! let target = AxisTargets::from_pmf(&Tensor::new(&[[0.2f64, 0.5, 0.3]], &Device::Cpu)?, &axis)?;
//! let logits = target.pmf.log()?; // q = p
//! let full = FullKl::default().axis_parts(&logits, &target, &axis)?;
//! assert_eq!(full.keys(), ["ld", "exp", "smooth"]);
//! assert!(full["exp"].to_vec1::<f64>()?[0].abs() < 1e-12);
//! let v2 = DldlV2::new(0.5)?.axis_parts(&logits, &target, &axis)?;
//! assert_eq!(v2.keys(), ["ld", "l1"]);
//! assert_eq!(v2.components[1].weight, 0.5);
//! assert!(v2.total()?.to_vec1::<f64>()?[0].abs() < 1e-12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dldl_v2;
mod full_kl;
mod full_kl_relative;
mod fused_cpu;
mod joint;
mod kl;
mod mean_variance;
mod per_axis;
mod tensor_math;

use candle_core::{Tensor, D};

pub use dldl_v2::DldlV2;
pub use full_kl::{FullKl, DEFAULT_VARIANCE_FLOOR};
pub use full_kl_relative::{FullKlRelative, DEFAULT_SMOOTHNESS_FLOOR};
pub use joint::multivariate_normal_kl;
pub use kl::Kl;
pub use mean_variance::MeanVariance;
pub use per_axis::PerAxis;

use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label_space::{AxisTargets, LabelSpace};

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
    /// The index of the part's head in [`LabelSpace::heads`].
    pub head: usize,
    /// The component: `ld`, `exp`, `smooth`, `smooth_rel`, `l1`, `softmax`, `mean` or
    /// `variance`.
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
    /// A short name for logs (`full-kl`, `full-kl-rel`, `kl`, `dldl-v2`, `mean-variance`).
    fn name(&self) -> &'static str;

    /// The components of one axis, per sample: `logits` of shape `(batch, K)`, `target`
    /// the axis's targets for the same batch (checked, and cast to the logits' dtype and
    /// device). Categorical axes get the distribution term alone.
    fn axis_parts(&self, logits: &Tensor, target: &AxisTargets, axis: &Axis) -> Result<AxisParts>;

    /// The components of one joint group, per sample: `logits` of shape
    /// `(batch, K₁·…·K_d)`, row-major over the bins of `axes` (linear or circular), and
    /// `targets[j]` the targets of `axes[j]`. A component of one member's marginal is
    /// reported under that member (its [`Component::axis`]).
    fn group_parts(
        &self,
        logits: &Tensor,
        targets: &[AxisTargets],
        axes: &[&Axis],
    ) -> Result<AxisParts>;

    /// The loss of a batch: `logits[h]` belongs to `space.heads()[h]` (with no joint
    /// groups, head `a` is axis `a`) and `targets[a]` to `space.axes()[a]`.
    fn compute(
        &self,
        space: &LabelSpace,
        logits: &[Tensor],
        targets: &[AxisTargets],
    ) -> Result<LossOutput> {
        assemble(self, space, logits, targets)
    }
}

/// One weighted component of a loss on one axis or joint group, per sample.
#[derive(Debug, Clone)]
pub struct Component {
    /// The component: `ld`, `exp`, `smooth`, `smooth_rel`, `l1`, `softmax`, `mean` or
    /// `variance`.
    pub name: &'static str,
    /// The weight this component enters the total with.
    pub weight: f64,
    /// The unweighted component per sample, shape `(batch,)`.
    pub per_sample: Tensor,
    /// The member axis a component of a joint group belongs to (DLDL-v2's `l1` and the
    /// mean-variance terms are per member); `None` for a component of the head itself.
    pub axis: Option<String>,
}

impl Component {
    /// A component of the head itself.
    pub fn new(name: &'static str, weight: f64, per_sample: Tensor) -> Self {
        Component {
            name,
            weight,
            per_sample,
            axis: None,
        }
    }

    /// The same component, reported under the member axis `axis`.
    pub fn of_axis(mut self, axis: &str) -> Self {
        self.axis = Some(axis.to_string());
        self
    }

    /// The key within its head: `name`, or `axis/name` for a member's component.
    pub fn key(&self) -> String {
        match &self.axis {
            None => self.name.to_string(),
            Some(axis) => format!("{axis}/{}", self.name),
        }
    }
}

/// The components of a loss on one axis or one joint group, per sample, as
/// [`Loss::axis_parts`] and [`Loss::group_parts`] return them.
///
/// Index by key (`parts["ld"]`, `parts["yaw/l1"]`) for a component's per-sample tensor;
/// [`AxisParts::total`] is the weighted sum.
#[derive(Debug, Clone)]
pub struct AxisParts {
    /// The components in log order.
    pub components: Vec<Component>,
}

impl AxisParts {
    /// Parts from their components.
    pub fn new(components: Vec<Component>) -> Self {
        AxisParts { components }
    }

    /// `Σ weight · component` per sample, shape `(batch,)`.
    pub fn total(&self) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for component in &self.components {
            // A weight of 1 is added as is, so that the sum is bit for bit the plain sum.
            let weighted = if component.weight == 1.0 {
                component.per_sample.clone()
            } else {
                component.per_sample.affine(component.weight, 0.0)?
            };
            total = Some(match total {
                None => weighted,
                Some(sum) => (sum + weighted)?,
            });
        }
        total.ok_or_else(|| Error::Shape("a loss with no components".into()))
    }

    /// The per-sample tensor of the component with this key (see [`Component::key`]).
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.components
            .iter()
            .find(|c| c.key() == key)
            .map(|c| &c.per_sample)
    }

    /// The components' keys, in order.
    pub fn keys(&self) -> Vec<String> {
        self.components.iter().map(Component::key).collect()
    }
}

impl std::ops::Index<&str> for AxisParts {
    type Output = Tensor;

    /// The per-sample tensor of a component; panics if there is none of that key.
    fn index(&self, key: &str) -> &Tensor {
        match self.get(key) {
            Some(tensor) => tensor,
            None => panic!("no loss component `{key}` (have {:?})", self.keys()),
        }
    }
}

/// Checks shapes, runs `axis_parts` on every single-axis head and `group_parts` on every
/// joint group, averages over the batch and sums the weighted components into the
/// total. Shared by every loss.
pub(crate) fn assemble<L: Loss + ?Sized>(
    loss: &L,
    space: &LabelSpace,
    logits: &[Tensor],
    targets: &[AxisTargets],
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
    for (index, (head, z)) in space.heads().iter().zip(logits).enumerate() {
        let components = if head.is_joint() {
            let axes: Vec<&Axis> = head.axes().iter().map(|&a| &space.axes()[a]).collect();
            let members: Vec<AxisTargets> =
                head.axes().iter().map(|&a| targets[a].clone()).collect();
            loss.group_parts(z, &members, &axes)?
        } else {
            let a = head.axes()[0];
            loss.axis_parts(z, &targets[a], &space.axes()[a])?
        };
        for component in components.components {
            let value = component.per_sample.mean(D::Minus1)?;
            let weighted = value.affine(component.weight, 0.0)?;
            total = Some(match total {
                None => weighted,
                Some(sum) => (sum + weighted)?,
            });
            parts.push(LossPart {
                axis: component.axis.unwrap_or_else(|| head.name().to_string()),
                head: index,
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
