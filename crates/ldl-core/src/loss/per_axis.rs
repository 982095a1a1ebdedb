//! One loss for most axes and another for some: [`PerAxis`].
//!
//! The full-KL loss's normal-approximation and smoothness terms assume a smooth, unimodal
//! target; an axis whose targets are rating histograms with dips, or budget shares, is
//! better served by the plain KL term. Every loss is in nats per axis and the total is the
//! unweighted sum over axes, so axes trained with different losses still add up without
//! weights. A joint group shares one head and one softmax, so it takes the default loss.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::{AxisParts, Loss};
use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label_space::{AxisTargets, LabelSpace};

/// A loss per axis: `default` for every axis but those given their own with
/// [`PerAxis::with_axis`].
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use ldl_core::loss::{FullKl, Kl, Loss, PerAxis};
/// use ldl_core::{Axis, Label, LabelSpace};
/// let space = LabelSpace::new(vec![
///     Axis::linear("age", 0.0, 100.0, 1.0)?,
///     Axis::linear("rating", 0.5, 5.0, 0.5)?,
/// ])?;
/// let loss = PerAxis::new(FullKl::default()).with_axis("rating", Kl);
/// loss.check(&space)?;
/// let targets = space.targets(
///     &[vec![Label::value(30.0), Label::value(3.5)]],
///     DType::F64,
///     &Device::Cpu,
/// )?;
/// let logits = [
///     Tensor::zeros((1, 101), DType::F64, &Device::Cpu)?,
///     Tensor::zeros((1, 10), DType::F64, &Device::Cpu)?,
/// ];
/// let keys: Vec<String> = loss
///     .compute(&space, &logits, &targets)?
///     .parts
///     .iter()
///     .map(|p| p.key())
///     .collect();
/// assert_eq!(keys, ["age/ld", "age/exp", "age/smooth", "rating/ld"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PerAxis {
    default: Box<dyn Loss>,
    axes: BTreeMap<String, Box<dyn Loss>>,
}

impl PerAxis {
    /// `default` on every axis.
    pub fn new(default: impl Loss + 'static) -> PerAxis {
        PerAxis::boxed(Box::new(default))
    }

    /// [`PerAxis::new`] of a boxed loss.
    pub fn boxed(default: Box<dyn Loss>) -> PerAxis {
        PerAxis {
            default,
            axes: BTreeMap::new(),
        }
    }

    /// The same, with `loss` on the axis named `axis`.
    pub fn with_axis(self, axis: impl Into<String>, loss: impl Loss + 'static) -> PerAxis {
        self.with_axis_boxed(axis, Box::new(loss))
    }

    /// [`PerAxis::with_axis`] of a boxed loss.
    pub fn with_axis_boxed(mut self, axis: impl Into<String>, loss: Box<dyn Loss>) -> PerAxis {
        self.axes.insert(axis.into(), loss);
        self
    }

    /// Checks the axes against `space`: each must be one of its axes, and not a member of
    /// a joint group (whose head takes the default loss).
    pub fn check(&self, space: &LabelSpace) -> Result<()> {
        for name in self.axes.keys() {
            let index = space
                .axes()
                .iter()
                .position(|a| a.name() == name)
                .ok_or_else(|| {
                    Error::InvalidOption(format!(
                        "a loss is given for axis `{name}`, which is not in the label space"
                    ))
                })?;
            let joint = space
                .heads()
                .iter()
                .find(|h| h.axes().contains(&index))
                .is_some_and(|h| h.is_joint());
            if joint {
                return Err(Error::InvalidOption(format!(
                    "axis `{name}` is in a joint group, whose axes share one head and one \
                     loss: give the group's axes no loss of their own"
                )));
            }
        }
        Ok(())
    }

    /// The loss of the axis named `axis`.
    pub fn loss_of(&self, axis: &str) -> &dyn Loss {
        self.axes.get(axis).unwrap_or(&self.default).as_ref()
    }
}

impl Loss for PerAxis {
    /// The default loss's name.
    fn name(&self) -> &'static str {
        self.default.name()
    }

    fn axis_parts(&self, logits: &Tensor, target: &AxisTargets, axis: &Axis) -> Result<AxisParts> {
        self.loss_of(axis.name()).axis_parts(logits, target, axis)
    }

    fn group_parts(
        &self,
        logits: &Tensor,
        targets: &[AxisTargets],
        axes: &[&Axis],
    ) -> Result<AxisParts> {
        self.default.group_parts(logits, targets, axes)
    }
}
