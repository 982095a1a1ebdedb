//! The label-distribution loss alone: DLDL (Gao et al., 2017).

use candle_core::Tensor;

use super::full_kl::kl_divergence;
use super::joint::JointGroup;
use super::tensor_math::log_softmax;
use super::{conform_targets, AxisParts, Component, Loss};
use crate::axis::Axis;
use crate::error::Result;
use crate::label_space::AxisTargets;

/// DLDL's loss: `L_ld = KL(p ‖ q)` per axis, summed over axes, averaged over the batch.
///
/// ```
/// use candle_core::{DType, Device};
/// use ldl_core::{loss::{Kl, Loss}, Axis, Label, LabelSpace};
/// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
/// let targets = space.targets(&[vec![Label::value(30.0)]], DType::F64, &Device::Cpu)?;
/// // The target's own log-probabilities are the ideal logits: KL = 0.
/// let logits = targets[0].pmf.clamp(1e-300, 1.0)?.log()?;
/// let out = Kl.compute(&space, &[logits], &targets)?;
/// assert!(out.total_value()?.abs() < 1e-12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kl;

impl Loss for Kl {
    fn name(&self) -> &'static str {
        "kl"
    }

    fn axis_parts(&self, logits: &Tensor, target: &AxisTargets, axis: &Axis) -> Result<AxisParts> {
        let target = conform_targets(axis, logits, target)?;
        let ld = kl_divergence(&target.pmf, &log_softmax(logits)?)?;
        Ok(AxisParts::new(vec![Component::new("ld", 1.0, ld)]))
    }

    fn group_parts(
        &self,
        logits: &Tensor,
        targets: &[AxisTargets],
        axes: &[&Axis],
    ) -> Result<AxisParts> {
        let group = JointGroup::new(axes, logits, targets)?;
        let ld = kl_divergence(&group.target()?, &log_softmax(logits)?)?;
        Ok(AxisParts::new(vec![Component::new("ld", 1.0, ld)]))
    }
}
