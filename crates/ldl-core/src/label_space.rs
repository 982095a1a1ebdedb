//! The label space: an ordered product of axes, and the batch targets built on it.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label::{AxisEstimate, EncodedLabel, Label};

/// An ordered product of named axes: what a model predicts, one head per axis.
///
/// ```
/// use ldl_core::{Axis, Label, LabelSpace};
/// let space = LabelSpace::new(vec![
///     Axis::linear("age", 0.0, 100.0, 1.0)?.with_unit("years"),
///     Axis::linear("yaw", -90.0, 90.0, 3.0)?.with_unit("degrees"),
/// ])?;
/// assert_eq!(space.axis("yaw").unwrap().len(), 61);
/// let encoded = space.encode(&[Label::value_with_std(31.0, 2.5), Label::value(12.0)])?;
/// assert_eq!(encoded[1].pmf.len(), 61);
/// # Ok::<(), ldl_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Axis>", into = "Vec<Axis>")]
pub struct LabelSpace {
    axes: Vec<Axis>,
}

impl LabelSpace {
    /// A label space over the given axes (at least one; names unique).
    pub fn new(axes: Vec<Axis>) -> Result<LabelSpace> {
        if axes.is_empty() {
            return Err(Error::InvalidLabelSpace(
                "a label space needs at least one axis".into(),
            ));
        }
        for (i, axis) in axes.iter().enumerate() {
            if axes[..i].iter().any(|a| a.name() == axis.name()) {
                return Err(Error::InvalidLabelSpace(format!(
                    "two axes are named `{}`; axis names must be unique",
                    axis.name()
                )));
            }
        }
        Ok(LabelSpace { axes })
    }

    /// The axes, in order.
    pub fn axes(&self) -> &[Axis] {
        &self.axes
    }

    /// The axis with this name.
    pub fn axis(&self, name: &str) -> Option<&Axis> {
        self.axes.iter().find(|a| a.name() == name)
    }

    /// The position of the axis with this name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.axes.iter().position(|a| a.name() == name)
    }

    /// Number of axes.
    pub fn len(&self) -> usize {
        self.axes.len()
    }

    /// Always false: a label space has at least one axis.
    pub fn is_empty(&self) -> bool {
        self.axes.is_empty()
    }

    /// Encodes one sample's labels, one per axis in order.
    pub fn encode(&self, labels: &[Label]) -> Result<Vec<EncodedLabel>> {
        if labels.len() != self.axes.len() {
            return Err(Error::Shape(format!(
                "got {} labels for a label space of {} axes ({})",
                labels.len(),
                self.axes.len(),
                self.axis_names().join(", ")
            )));
        }
        self.axes
            .iter()
            .zip(labels)
            .map(|(axis, label)| axis.encode(label))
            .collect()
    }

    /// Encodes a batch of samples into per-axis target tensors (errors name the sample).
    pub fn targets(
        &self,
        samples: &[Vec<Label>],
        dtype: DType,
        device: &Device,
    ) -> Result<Vec<AxisTargets>> {
        let encoded = samples
            .iter()
            .enumerate()
            .map(|(i, labels)| self.encode(labels).map_err(|e| e.at_sample(i)))
            .collect::<Result<Vec<_>>>()?;
        (0..self.axes.len())
            .map(|a| {
                let column: Vec<&EncodedLabel> = encoded.iter().map(|sample| &sample[a]).collect();
                AxisTargets::from_encoded(&column, dtype, device)
            })
            .collect()
    }

    /// Per-axis estimates (mean, std, mode) from the model's logits, one tensor of shape
    /// `(batch, K)` per axis. Returns `[axis][sample]`.
    pub fn decode_logits(&self, logits: &[Tensor]) -> Result<Vec<Vec<AxisEstimate>>> {
        self.check_logits(logits)?;
        self.axes
            .iter()
            .zip(logits)
            .map(|(axis, z)| {
                let pmf = candle_nn::ops::softmax_last_dim(&z.to_dtype(DType::F64)?)?;
                pmf.to_vec2::<f64>()?
                    .iter()
                    .map(|row| axis.estimate(row))
                    .collect()
            })
            .collect()
    }

    /// Checks that there is one `(batch, K)` logits tensor per axis, with matching `K`
    /// and batch sizes.
    pub fn check_logits(&self, logits: &[Tensor]) -> Result<()> {
        if logits.len() != self.axes.len() {
            return Err(Error::Shape(format!(
                "got {} logits tensors for a label space of {} axes ({})",
                logits.len(),
                self.axes.len(),
                self.axis_names().join(", ")
            )));
        }
        let mut batch = None;
        for (axis, z) in self.axes.iter().zip(logits) {
            let dims = z.dims();
            if dims.len() != 2 || dims[1] != axis.len() {
                return Err(Error::Shape(format!(
                    "axis `{}`: logits have shape {:?}, expected (batch, {})",
                    axis.name(),
                    dims,
                    axis.len()
                )));
            }
            if *batch.get_or_insert(dims[0]) != dims[0] {
                return Err(Error::Shape(format!(
                    "axis `{}`: batch size {} differs from the other axes' {}",
                    axis.name(),
                    dims[0],
                    batch.unwrap_or(0)
                )));
            }
        }
        Ok(())
    }

    fn axis_names(&self) -> Vec<&str> {
        self.axes.iter().map(|a| a.name()).collect()
    }
}

impl TryFrom<Vec<Axis>> for LabelSpace {
    type Error = Error;
    fn try_from(axes: Vec<Axis>) -> Result<LabelSpace> {
        LabelSpace::new(axes)
    }
}

impl From<LabelSpace> for Vec<Axis> {
    fn from(space: LabelSpace) -> Vec<Axis> {
        space.axes
    }
}

/// The targets of one axis for a batch, as the losses and metrics take them.
#[derive(Debug, Clone)]
pub struct AxisTargets {
    /// Target distributions, shape `(batch, K)`.
    pub pmf: Tensor,
    /// Label values in the axis unit, shape `(batch,)` (see [`EncodedLabel::value`]).
    pub value: Tensor,
    /// Label stds in the axis unit, shape `(batch,)` (see [`EncodedLabel::std`]).
    pub std: Tensor,
}

impl AxisTargets {
    /// Stacks encoded labels of one axis into tensors.
    pub fn from_encoded(labels: &[&EncodedLabel], dtype: DType, device: &Device) -> Result<Self> {
        let batch = labels.len();
        let bins = labels.first().map_or(0, |l| l.pmf.len());
        let pmf: Vec<f64> = labels.iter().flat_map(|l| l.pmf.iter().copied()).collect();
        let value: Vec<f64> = labels.iter().map(|l| l.value).collect();
        let std: Vec<f64> = labels.iter().map(|l| l.std).collect();
        Ok(AxisTargets {
            pmf: Tensor::from_vec(pmf, (batch, bins), device)?.to_dtype(dtype)?,
            value: Tensor::from_vec(value, batch, device)?.to_dtype(dtype)?,
            std: Tensor::from_vec(std, batch, device)?.to_dtype(dtype)?,
        })
    }

    /// Targets from target distributions alone, shape `(batch, K)`: values and stds are
    /// the distributions' own moments (circular on circular axes). The distributions are
    /// validated (right length, finite, non-negative, summing to 1 within 1e-4).
    pub fn from_pmf(pmf: &Tensor, axis: &Axis) -> Result<Self> {
        let rows = pmf.to_dtype(DType::F64)?.to_vec2::<f64>().map_err(|e| {
            Error::Shape(format!(
                "axis `{}`: target must have shape (batch, {}): {e}",
                axis.name(),
                axis.len()
            ))
        })?;
        let encoded = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                axis.encode(&Label::Distribution(row))
                    .map_err(|e| e.at_sample(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&EncodedLabel> = encoded.iter().collect();
        let mut targets = AxisTargets::from_encoded(&refs, pmf.dtype(), pmf.device())?;
        // Keep the caller's pmf tensor itself (bit-exact), not the re-normalised copy.
        targets.pmf = pmf.clone();
        Ok(targets)
    }

    /// Batch size.
    pub fn batch_size(&self) -> usize {
        self.value.dims().first().copied().unwrap_or(0)
    }
}
