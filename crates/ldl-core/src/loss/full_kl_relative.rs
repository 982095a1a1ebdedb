//! The full-KL loss with a relative smoothness term: `L_ld + L_exp + L_rsmooth`, which
//! the target itself minimises (see `docs/loss.md`, "Relative smoothness").

use candle_core::Tensor;

use super::full_kl::FullKl;
use super::joint::JointGroup;
use super::{AxisParts, Component, Loss, TargetMoments};
use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label_space::AxisTargets;

/// The default floor of both roughnesses in [`FullKlRelative`], in nats: the roughness
/// `1/(2s²)` of a Gaussian about 700 bins wide.
pub const DEFAULT_SMOOTHNESS_FLOOR: f64 = 1e-6;

/// The full-KL loss with its smoothness term measured against the target's own:
/// per axis `L_ld + L_exp + L_rsmooth`, summed over axes with no weights, averaged over
/// the batch.
///
/// `L_ld` and `L_exp` are the full-KL loss's ([`FullKl`]). With `S(r)` the full-KL
/// loss's smoothness term of a distribution `r` (the symmetrised KL between `r` and `r`
/// shifted by one bin, its roughness), and `ρ = S(q) / S(p)`,
///
/// `L_rsmooth = ½ (ρ − ln ρ − 1)`,
///
/// the KL between the zero-mean normals of variances `1/(2 S(p))` and `1/(2 S(q))`: a
/// Gaussian of std `s` bins has `S ≈ 1/(2s²)`, so these are the variances the two
/// roughnesses imply. It is ≥ 0 and 0 exactly when `S(q) = S(p)`, so every term is 0
/// at `q = p` and the target minimises the loss, where the full-KL loss's own smoothness
/// term (`S(q)` itself, not 0 at `q = p`) pulls the prediction wider than a narrow
/// target. Like the other terms it is in nats and does not depend on the axis unit.
///
/// Both roughnesses are raised to at least a floor ([`DEFAULT_SMOOTHNESS_FLOOR`]; a
/// uniform target has `S(p) = 0`), and target probabilities below the smallest normal
/// f32 are raised to it in `S(p)` (a distribution with exact zeros beside non-zero bins
/// has an infinite `S`; for a Gaussian whose tails underflowed the change is far below
/// rounding). The component is logged as `smooth_rel`. Categorical axes get `L_ld` alone.
///
/// ```
/// use candle_core::{DType, Device};
/// use ldl_core::{loss::{FullKlRelative, Loss}, Axis, Label, LabelSpace};
/// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 40.0, 1.0)?])?;
/// let targets = space.targets(&[vec![Label::value_with_std(20.0, 2.0)]], DType::F64, &Device::Cpu)?;
/// // At the target every term is 0.
/// let logits = targets[0].pmf.log()?;
/// let loss = FullKlRelative::default().compute(&space, &[logits], &targets)?;
/// let keys: Vec<String> = loss.parts.iter().map(|p| p.key()).collect();
/// assert_eq!(keys, ["age/ld", "age/exp", "age/smooth_rel"]);
/// assert!(loss.total_value()?.abs() < 1e-12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FullKlRelative {
    base: FullKl,
    smoothness_floor: f64,
}

impl Default for FullKlRelative {
    fn default() -> Self {
        FullKlRelative {
            base: FullKl::default(),
            smoothness_floor: DEFAULT_SMOOTHNESS_FLOOR,
        }
    }
}

impl FullKlRelative {
    /// The loss with target moments from the target distribution.
    pub fn new() -> Self {
        FullKlRelative::default()
    }

    /// Chooses where `L_exp`'s target moments come from (default: the target pmf).
    pub fn with_target_moments(mut self, source: TargetMoments) -> Self {
        self.base = self.base.with_target_moments(source);
        self
    }

    /// Sets `L_exp`'s variance floor in bins² (see [`FullKl::with_variance_floor`]).
    pub fn with_variance_floor(mut self, floor: f64) -> Result<Self> {
        self.base = self.base.with_variance_floor(floor)?;
        Ok(self)
    }

    /// Sets the floor of both roughnesses in `L_rsmooth`, in nats (default 1e-6). Must
    /// be finite and > 0; `q = p` still gives exactly 0.
    pub fn with_smoothness_floor(mut self, floor: f64) -> Result<Self> {
        if !(floor.is_finite() && floor > 0.0) {
            return Err(Error::InvalidOption(format!(
                "the smoothness floor must be finite and > 0, got {floor}"
            )));
        }
        self.smoothness_floor = floor;
        Ok(self)
    }

    /// Whether f32/f64 tensors on the CPU go through the fused kernel (the default), as
    /// [`FullKl::with_fused_cpu_kernel`].
    pub fn with_fused_cpu_kernel(mut self, enabled: bool) -> Self {
        self.base = self.base.with_fused_cpu_kernel(enabled);
        self
    }

    /// The target-moment source.
    pub fn target_moments(&self) -> TargetMoments {
        self.base.target_moments()
    }

    /// The floor of both roughnesses, in nats.
    pub fn smoothness_floor(&self) -> f64 {
        self.smoothness_floor
    }
}

impl Loss for FullKlRelative {
    fn name(&self) -> &'static str {
        "full-kl-rel"
    }

    fn axis_parts(&self, logits: &Tensor, target: &AxisTargets, axis: &Axis) -> Result<AxisParts> {
        let (ld, moment_terms) =
            self.base
                .terms(logits, target, axis, Some(self.smoothness_floor))?;
        let mut components = vec![Component::new("ld", 1.0, ld)];
        if let Some((exp, smooth)) = moment_terms {
            components.push(Component::new("exp", 1.0, exp));
            components.push(Component::new("smooth_rel", 1.0, smooth));
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
        let (ld, exp, smooth) = group.full_kl(
            logits,
            self.base.target_moments(),
            self.base.variance_floor(),
            Some(self.smoothness_floor),
        )?;
        Ok(AxisParts::new(vec![
            Component::new("ld", 1.0, ld),
            Component::new("exp", 1.0, exp),
            Component::new("smooth_rel", 1.0, smooth),
        ]))
    }
}
