//! The mean-variance loss (Pan, Han, Shan and Chen, CVPR 2018).

use candle_core::{DType, Tensor, D};

use super::joint::JointGroup;
use super::tensor_math::{log_softmax, moments, offsets_in_bins};
use super::{check_weight, conform_targets, AxisParts, Component, Loss};
use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label_space::AxisTargets;

/// The mean-variance loss: per axis `L_softmax + λ1·L_mean + λ2·L_variance`.
///
/// - `L_softmax`: cross-entropy against the bin nearest the label value (against the
///   target distribution on categorical axes);
/// - `L_mean = ½ (μ_q − y)²` and `L_variance = v_q`, measured in bins (Pan et al.'s
///   classes are the bins, so their defaults λ1 = 0.2, λ2 = 0.05 keep their meaning on
///   any axis). Unlike the full-KL loss, the balance still depends on the bin width.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use ldl_core::{loss::{Loss, MeanVariance}, Axis, Label, LabelSpace};
/// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
/// let targets = space.targets(&[vec![Label::value(30.0)]], DType::F32, &Device::Cpu)?;
/// let logits = Tensor::zeros((1, 101), DType::F32, &Device::Cpu)?;
/// let out = MeanVariance::default().compute(&space, &[logits], &targets)?;
/// let keys: Vec<String> = out.parts.iter().map(|p| p.key()).collect();
/// assert_eq!(keys, ["age/softmax", "age/mean", "age/variance"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MeanVariance {
    lambda_mean: f64,
    lambda_variance: f64,
}

impl Default for MeanVariance {
    /// Pan et al.'s weights: λ1 = 0.2, λ2 = 0.05.
    fn default() -> Self {
        MeanVariance {
            lambda_mean: 0.2,
            lambda_variance: 0.05,
        }
    }
}

impl MeanVariance {
    /// The loss with weights λ1 (mean) and λ2 (variance), both finite and ≥ 0.
    pub fn new(lambda_mean: f64, lambda_variance: f64) -> Result<Self> {
        Ok(MeanVariance {
            lambda_mean: check_weight("λ1 (mean)", lambda_mean)?,
            lambda_variance: check_weight("λ2 (variance)", lambda_variance)?,
        })
    }

    /// The weighted `mean` and `variance` components of one ordered axis, from `ln q`
    /// and the bins' offsets from the label value.
    fn moment_components(&self, log_q: &Tensor, offsets: &Tensor) -> Result<[Component; 2]> {
        let (mean_q, variance) = moments(&log_q.exp()?, offsets)?;
        let mean = mean_q.sqr()?.affine(0.5, 0.0)?;
        Ok([
            Component::new("mean", self.lambda_mean, mean),
            Component::new("variance", self.lambda_variance, variance),
        ])
    }
}

impl Loss for MeanVariance {
    fn name(&self) -> &'static str {
        "mean-variance"
    }

    fn axis_parts(&self, logits: &Tensor, target: &AxisTargets, axis: &Axis) -> Result<AxisParts> {
        let target = conform_targets(axis, logits, target)?;
        let log_q = log_softmax(logits)?;
        if axis.is_categorical() {
            let softmax = (&target.pmf * &log_q)?.sum(D::Minus1)?.neg()?;
            return Ok(AxisParts::new(vec![Component::new(
                "softmax", 1.0, softmax,
            )]));
        }
        let offsets = offsets_in_bins(axis, &target.value)?;
        // The label's bin is the one nearest the label value (offset closest to 0).
        let nearest = offsets
            .abs()?
            .argmin_keepdim(D::Minus1)?
            .to_dtype(DType::U32)?;
        let softmax = log_q.gather(&nearest, D::Minus1)?.squeeze(1)?.neg()?;
        let mut components = vec![Component::new("softmax", 1.0, softmax)];
        components.extend(self.moment_components(&log_q, &offsets)?);
        Ok(AxisParts::new(components))
    }

    /// The softmax loss on the grid cell nearest the labels; mean and variance on each
    /// member's marginal.
    fn group_parts(
        &self,
        logits: &Tensor,
        targets: &[AxisTargets],
        axes: &[&Axis],
    ) -> Result<AxisParts> {
        let group = JointGroup::new(axes, logits, targets)?;
        let log_q = log_softmax(logits)?;
        let mut cell: Option<Tensor> = None;
        let mut members = Vec::new();
        for (j, ((axis, target), log_marginal)) in group
            .axes
            .iter()
            .zip(&group.targets)
            .zip(group.log_marginals(&log_q)?)
            .enumerate()
        {
            let stride: usize = group.shape[j + 1..].iter().product();
            let offsets = offsets_in_bins(axis, &target.value)?;
            let nearest = offsets
                .abs()?
                .argmin_keepdim(D::Minus1)?
                .to_dtype(DType::F64)?
                .affine(stride as f64, 0.0)?;
            cell = Some(match cell {
                None => nearest,
                Some(c) => (c + nearest)?,
            });
            // Through log_softmax like any one-axis logits, as in the L1 of DLDL-v2.
            let log_marginal = log_softmax(&log_marginal)?;
            for component in self.moment_components(&log_marginal, &offsets)? {
                members.push(component.of_axis(axis.name()));
            }
        }
        let cell = cell
            .ok_or_else(|| Error::Shape("a joint group without axes".into()))?
            .to_dtype(DType::U32)?;
        let softmax = log_q.gather(&cell, D::Minus1)?.squeeze(1)?.neg()?;
        let mut components = vec![Component::new("softmax", 1.0, softmax)];
        components.extend(members);
        Ok(AxisParts::new(components))
    }
}
