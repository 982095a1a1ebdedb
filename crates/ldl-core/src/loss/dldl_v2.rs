//! DLDL-v2's loss (Gao et al., IJCAI 2018): `L_ld + λ·|μ_p − μ_q|`.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::full_kl::kl_divergence;
use super::joint::JointGroup;
use super::tensor_math::{log_softmax, moments, offsets_in_bins};
use super::{
    assemble, check_weight, conform_targets, AxisParts, Component, Loss, LossOutput, TargetMoments,
};
use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label_space::{AxisTargets, LabelSpace};

/// DLDL-v2's loss: per axis `L_ld + λ·L_l1` with `L_l1 = |μ_p − μ_q|` in the axis unit
/// (wrap-aware on circular axes), summed over axes, averaged over the batch.
///
/// `λ` must be tuned per axis: `L_l1` is measured in the axis unit, so re-expressing an
/// axis (years → months) changes the balance. DLDL-v2's own code divides the KL by the
/// number of bins but not the L1 term, so its `λ = 1` corresponds to about `λ = 101`
/// here for 101 age bins.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use ldl_core::{loss::{DldlV2, Loss}, Axis, Label, LabelSpace};
/// let space = LabelSpace::new(vec![
///     Axis::linear("age", 0.0, 100.0, 1.0)?,
///     Axis::linear("height", 140.0, 200.0, 1.0)?,
/// ])?;
/// // λ has to be tuned per axis: here 1 for age (years) and 0.5 for height (cm).
/// let loss = DldlV2::new(1.0)?.with_axis_lambda("height", 0.5)?;
/// let targets = space.targets(
///     &[vec![Label::value(30.0), Label::value(172.0)]],
///     DType::F32,
///     &Device::Cpu,
/// )?;
/// let logits = [
///     Tensor::zeros((1, 101), DType::F32, &Device::Cpu)?,
///     Tensor::zeros((1, 61), DType::F32, &Device::Cpu)?,
/// ];
/// let out = loss.compute(&space, &logits, &targets)?;
/// let weights: Vec<f64> = out.parts.iter().map(|p| p.weight).collect();
/// assert_eq!(weights, [1.0, 1.0, 1.0, 0.5]); // age/ld, age/l1, height/ld, height/l1
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DldlV2 {
    lambda: f64,
    per_axis: BTreeMap<String, f64>,
    target_moments: TargetMoments,
}

impl DldlV2 {
    /// The loss with the same `λ` on every axis.
    pub fn new(lambda: f64) -> Result<Self> {
        Ok(DldlV2 {
            lambda: check_weight("λ", lambda)?,
            per_axis: BTreeMap::new(),
            target_moments: TargetMoments::Pmf,
        })
    }

    /// Overrides `λ` for one axis.
    pub fn with_axis_lambda(mut self, axis: impl Into<String>, lambda: f64) -> Result<Self> {
        let axis = axis.into();
        let lambda = check_weight(&format!("λ of axis `{axis}`"), lambda)?;
        self.per_axis.insert(axis, lambda);
        Ok(self)
    }

    /// Chooses the target mean: the target pmf's (default) or the nominal label value
    /// (as DLDL-v2's code does).
    pub fn with_target_moments(mut self, source: TargetMoments) -> Self {
        self.target_moments = source;
        self
    }

    /// The `λ` of an axis.
    pub fn lambda(&self, axis: &str) -> f64 {
        self.per_axis.get(axis).copied().unwrap_or(self.lambda)
    }

    /// `|μ_p − μ_q|` per sample in the axis unit, from `ln q` and targets already
    /// conformed to it.
    fn l1(&self, log_q: &Tensor, targets: &AxisTargets, axis: &Axis) -> Result<Tensor> {
        let offsets = offsets_in_bins(axis, &targets.value)?;
        let (mean_q, _) = moments(&log_q.exp()?, &offsets)?;
        let gap = match self.target_moments {
            TargetMoments::Pmf => {
                let (mean_p, _) = moments(&targets.pmf, &offsets)?;
                (mean_p.detach() - mean_q)?
            }
            // Offsets are measured from the nominal value, whose offset is 0.
            TargetMoments::Nominal => mean_q.neg()?,
        };
        Ok(gap.abs()?.affine(axis.step(), 0.0)?)
    }

    fn check_axes(&self, space: &LabelSpace) -> Result<()> {
        match self.per_axis.keys().find(|name| space.axis(name).is_none()) {
            Some(name) => Err(Error::InvalidOption(format!(
                "dldl-v2: λ given for axis `{name}`, which is not in the label space"
            ))),
            None => Ok(()),
        }
    }
}

impl Loss for DldlV2 {
    fn name(&self) -> &'static str {
        "dldl-v2"
    }

    fn axis_parts(&self, logits: &Tensor, target: &AxisTargets, axis: &Axis) -> Result<AxisParts> {
        let target = conform_targets(axis, logits, target)?;
        let log_q = log_softmax(logits)?;
        let mut components = vec![Component::new(
            "ld",
            1.0,
            kl_divergence(&target.pmf, &log_q)?,
        )];
        if !axis.is_categorical() {
            let l1 = self.l1(&log_q, &target, axis)?;
            components.push(Component::new("l1", self.lambda(axis.name()), l1));
        }
        Ok(AxisParts::new(components))
    }

    /// `L_ld` over the grid; each member's L1 on its marginal's expectation.
    fn group_parts(
        &self,
        logits: &Tensor,
        targets: &[AxisTargets],
        axes: &[&Axis],
    ) -> Result<AxisParts> {
        let group = JointGroup::new(axes, logits, targets)?;
        let log_q = log_softmax(logits)?;
        let mut components = vec![Component::new(
            "ld",
            1.0,
            kl_divergence(&group.target()?, &log_q)?,
        )];
        for ((axis, target), log_marginal) in group
            .axes
            .iter()
            .zip(&group.targets)
            .zip(group.log_marginals(&log_q)?)
        {
            // Through log_softmax like any one-axis logits: the marginal's L1 is the
            // one-axis L1 of the marginal.
            let l1 = self.l1(&log_softmax(&log_marginal)?, target, axis)?;
            let lambda = self.lambda(axis.name());
            components.push(Component::new("l1", lambda, l1).of_axis(axis.name()));
        }
        Ok(AxisParts::new(components))
    }

    /// Refuses a per-axis λ for an axis the space does not have, then assembles.
    fn compute(
        &self,
        space: &LabelSpace,
        logits: &[Tensor],
        targets: &[AxisTargets],
    ) -> Result<LossOutput> {
        self.check_axes(space)?;
        assemble(self, space, logits, targets)
    }
}
