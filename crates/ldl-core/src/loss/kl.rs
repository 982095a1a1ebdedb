//! The label-distribution loss alone: DLDL (Gao et al., 2017).

use candle_core::Tensor;

use super::full_kl::kl_divergence;
use super::tensor_math::log_softmax;
use super::{assemble, Component, Loss, LossOutput};
use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label_space::{AxisTargets, LabelSpace};

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

    fn compute(
        &self,
        space: &LabelSpace,
        logits: &[Tensor],
        targets: &[AxisTargets],
    ) -> Result<LossOutput> {
        assemble(
            space,
            logits,
            targets,
            |axis, z, target| {
                Ok(vec![Component::new(
                    "ld",
                    1.0,
                    kl_part(z, &target.pmf, axis)?,
                )])
            },
            |group, z| {
                let ld = kl_divergence(&group.target()?, &log_softmax(z)?)?;
                Ok(vec![Component::new("ld", 1.0, ld)])
            },
        )
    }
}

/// `KL(p ‖ q)` per sample (shape `(batch,)`) for logits and target distributions of
/// shape `(batch, K)` on one axis.
pub fn kl_part(logits: &Tensor, target: &Tensor, axis: &Axis) -> Result<Tensor> {
    let (batch, bins) = logits.dims2()?;
    if bins != axis.len() || target.dims() != [batch, bins] {
        return Err(Error::Shape(format!(
            "axis `{}`: logits {:?} and target {:?} must both have shape (batch, {})",
            axis.name(),
            logits.dims(),
            target.dims(),
            axis.len()
        )));
    }
    let target = target
        .to_device(logits.device())?
        .to_dtype(logits.dtype())?
        .detach();
    kl_divergence(&target, &log_softmax(logits)?)
}
