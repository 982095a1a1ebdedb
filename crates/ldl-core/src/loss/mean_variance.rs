//! The mean-variance loss (Pan, Han, Shan and Chen, CVPR 2018).

use candle_core::{DType, Tensor, D};

use super::tensor_math::{log_softmax, moments, offsets_in_bins};
use super::{assemble, check_weight, conform_targets, Component, Loss, LossOutput};
use crate::axis::Axis;
use crate::error::Result;
use crate::label_space::{AxisTargets, LabelSpace};

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

/// The mean-variance components of one axis, per sample (shape `(batch,)`), unweighted.
#[derive(Debug, Clone)]
pub struct MeanVarianceParts {
    /// Cross-entropy against the label's bin.
    pub softmax: Tensor,
    /// `½ (μ_q − y)²` in bins² (zeros on categorical axes).
    pub mean: Tensor,
    /// `v_q` in bins² (zeros on categorical axes).
    pub variance: Tensor,
}

impl MeanVariance {
    /// The loss with weights λ1 (mean) and λ2 (variance), both finite and ≥ 0.
    pub fn new(lambda_mean: f64, lambda_variance: f64) -> Result<Self> {
        Ok(MeanVariance {
            lambda_mean: check_weight("λ1 (mean)", lambda_mean)?,
            lambda_variance: check_weight("λ2 (variance)", lambda_variance)?,
        })
    }

    /// The components of one axis, per sample.
    pub fn axis_parts(
        &self,
        logits: &Tensor,
        targets: &AxisTargets,
        axis: &Axis,
    ) -> Result<MeanVarianceParts> {
        let targets = conform_targets(axis, logits, targets)?;
        let log_q = log_softmax(logits)?;
        if axis.is_categorical() {
            let softmax = (&targets.pmf * &log_q)?.sum(D::Minus1)?.neg()?;
            let zeros = softmax.zeros_like()?.detach();
            return Ok(MeanVarianceParts {
                softmax,
                mean: zeros.clone(),
                variance: zeros,
            });
        }
        let offsets = offsets_in_bins(axis, &targets.value)?;
        // The label's bin is the one nearest the label value (offset closest to 0).
        let nearest = offsets
            .abs()?
            .argmin_keepdim(D::Minus1)?
            .to_dtype(DType::U32)?;
        let softmax = log_q.gather(&nearest, D::Minus1)?.squeeze(1)?.neg()?;
        let (mean_q, variance) = moments(&log_q.exp()?, &offsets)?;
        let mean = mean_q.sqr()?.affine(0.5, 0.0)?;
        Ok(MeanVarianceParts {
            softmax,
            mean,
            variance,
        })
    }
}

impl Loss for MeanVariance {
    fn name(&self) -> &'static str {
        "mean-variance"
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
                let parts = self.axis_parts(z, target, axis)?;
                let mut components = vec![Component::new("softmax", 1.0, parts.softmax)];
                if !axis.is_categorical() {
                    components.push(Component::new("mean", self.lambda_mean, parts.mean));
                    components.push(Component::new(
                        "variance",
                        self.lambda_variance,
                        parts.variance,
                    ));
                }
                Ok(components)
            },
            |group, z| {
                // The softmax loss on the grid cell nearest the labels; mean and variance
                // on each member's marginal.
                let log_q = log_softmax(z)?;
                let mut cell: Option<Tensor> = None;
                let mut parts = Vec::new();
                for (j, ((axis, target), log_marginal)) in group
                    .axes
                    .iter()
                    .zip(&group.targets)
                    .zip(group.log_marginals(&log_q)?)
                    .enumerate()
                {
                    let stride: usize = group.shape[j + 1..].iter().product();
                    let nearest = offsets_in_bins(axis, &target.value)?
                        .abs()?
                        .argmin_keepdim(D::Minus1)?
                        .to_dtype(DType::F64)?
                        .affine(stride as f64, 0.0)?;
                    cell = Some(match cell {
                        None => nearest,
                        Some(c) => (c + nearest)?,
                    });
                    parts.push((axis.name(), self.axis_parts(&log_marginal, target, axis)?));
                }
                let cell = cell
                    .ok_or_else(|| crate::Error::Shape("a joint group without axes".into()))?
                    .to_dtype(DType::U32)?;
                let softmax = log_q.gather(&cell, D::Minus1)?.squeeze(1)?.neg()?;
                let mut components = vec![Component::new("softmax", 1.0, softmax)];
                for (name, part) in parts {
                    components
                        .push(Component::new("mean", self.lambda_mean, part.mean).of_axis(name));
                    components.push(
                        Component::new("variance", self.lambda_variance, part.variance)
                            .of_axis(name),
                    );
                }
                Ok(components)
            },
        )
    }
}
