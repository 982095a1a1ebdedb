//! The label space: an ordered product of axes, and the batch targets built on it.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label::{AxisEstimate, EncodedLabel, Label};

/// An ordered product of named axes: what a model predicts.
///
/// By default every axis has its own head (one distribution per axis). A joint group
/// ([`LabelSpace::with_joint`]) gives several axes one head over the product of their bins
/// (e.g. yaw × pitch): one distribution over the grid, whose marginals are the member
/// axes' predictions.
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
#[serde(try_from = "StoredLabelSpace", into = "StoredLabelSpace")]
pub struct LabelSpace {
    axes: Vec<Axis>,
    joint: Vec<Vec<String>>,
    heads: Vec<Head>,
}

/// The most bins one joint group's grid may have (a head of that many outputs).
pub const MAX_JOINT_BINS: usize = 1 << 20;

/// One output head of a model: a single axis, or a joint group of axes over the product
/// of their bins (row-major: the first member varies slowest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    name: String,
    axes: Vec<usize>,
    shape: Vec<usize>,
}

impl Head {
    /// The head's name: the axis name, or the member names joined by `+` (`yaw+pitch`).
    /// Model weights live under `heads.<name>`; loss parts of the grid are keyed by it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Positions of the member axes in the label space (one for a single-axis head).
    pub fn axes(&self) -> &[usize] {
        &self.axes
    }

    /// Bins per member axis.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Outputs of the head: the product of the members' bins.
    pub fn bins(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a joint group of two or more axes.
    pub fn is_joint(&self) -> bool {
        self.axes.len() > 1
    }
}

/// How a label space is stored (checkpoints, configs): a plain list of axes when there
/// are no joint groups, as earlier versions wrote it; `{axes, joint}` otherwise.
#[derive(Serialize)]
#[serde(untagged)]
enum StoredLabelSpace {
    Axes(Vec<Axis>),
    WithJoint(WithJoint),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithJoint {
    axes: Vec<Axis>,
    joint: Vec<Vec<String>>,
}

// By hand rather than `untagged`, so that an invalid axis keeps its own message instead
// of "did not match any variant".
impl<'de> Deserialize<'de> for StoredLabelSpace {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StoredLabelSpace;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of axes, or a table with `axes` and `joint`")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> std::result::Result<StoredLabelSpace, A::Error> {
                let axes =
                    Vec::<Axis>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(StoredLabelSpace::Axes(axes))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<StoredLabelSpace, A::Error> {
                let stored =
                    WithJoint::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(StoredLabelSpace::WithJoint(stored))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl LabelSpace {
    /// A label space over the given axes (at least one; names unique), one head each.
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
        let heads = (0..axes.len())
            .map(|a| Head {
                name: axes[a].name().to_string(),
                axes: vec![a],
                shape: vec![axes[a].len()],
            })
            .collect();
        Ok(LabelSpace {
            axes,
            joint: Vec::new(),
            heads,
        })
    }

    /// Gives the named axes one joint head over the product of their bins.
    ///
    /// Members must be two or more linear or circular axes of this space, each in at most
    /// one group, with at most [`MAX_JOINT_BINS`] bins in the grid. The joint head takes
    /// the place of its first member in the head order.
    ///
    /// ```
    /// use ldl_core::{Axis, LabelSpace};
    /// let space = LabelSpace::new(vec![
    ///     Axis::linear("age", 0.0, 100.0, 1.0)?,
    ///     Axis::linear("yaw", -90.0, 90.0, 3.0)?,
    ///     Axis::linear("pitch", -60.0, 60.0, 3.0)?,
    /// ])?
    /// .with_joint(&["yaw", "pitch"])?;
    /// let heads: Vec<(&str, usize)> = space.heads().iter().map(|h| (h.name(), h.bins())).collect();
    /// assert_eq!(heads, [("age", 101), ("yaw+pitch", 61 * 41)]);
    /// # Ok::<(), ldl_core::Error>(())
    /// ```
    pub fn with_joint(mut self, members: &[&str]) -> Result<LabelSpace> {
        if members.len() < 2 {
            return Err(Error::InvalidLabelSpace(format!(
                "a joint group needs two or more axes, got {members:?}"
            )));
        }
        let mut indices = Vec::with_capacity(members.len());
        for (i, name) in members.iter().enumerate() {
            let index = self.index_of(name).ok_or_else(|| {
                Error::InvalidLabelSpace(format!(
                    "joint group {members:?}: there is no axis `{name}` (axes: {})",
                    self.axis_names().join(", ")
                ))
            })?;
            if members[..i].contains(name) {
                return Err(Error::InvalidLabelSpace(format!(
                    "joint group {members:?} names `{name}` twice"
                )));
            }
            if self.axes[index].is_categorical() {
                return Err(Error::InvalidLabelSpace(format!(
                    "joint group {members:?}: `{name}` is categorical; joint groups are for \
                     linear and circular axes, whose bins have an order"
                )));
            }
            if let Some(group) = self.joint.iter().find(|g| g.iter().any(|m| m == name)) {
                return Err(Error::InvalidLabelSpace(format!(
                    "joint group {members:?}: `{name}` is already in the group {group:?}; an \
                     axis can belong to one group only"
                )));
            }
            indices.push(index);
        }
        let bins = indices
            .iter()
            .try_fold(1usize, |n, &a| n.checked_mul(self.axes[a].len()))
            .filter(|&n| n <= MAX_JOINT_BINS);
        if bins.is_none() {
            return Err(Error::InvalidLabelSpace(format!(
                "joint group {members:?}: the grid would have more than {MAX_JOINT_BINS} bins; \
                 use fewer or coarser axes"
            )));
        }
        let name = members.join("+");
        // Heads are stored by name (`heads.<name>`): two of one name would share weights.
        if self.axes.iter().any(|a| a.name() == name) || self.heads.iter().any(|h| h.name == name) {
            return Err(Error::InvalidLabelSpace(format!(
                "joint group {members:?}: its name `{name}` is already the name of an axis or \
                 another group; rename an axis (e.g. without `+`)"
            )));
        }
        let head = Head {
            name,
            shape: indices.iter().map(|&a| self.axes[a].len()).collect(),
            axes: indices.clone(),
        };
        let first = self
            .heads
            .iter()
            .position(|h| h.axes.iter().any(|a| indices.contains(a)))
            .unwrap_or(self.heads.len());
        self.heads
            .retain(|h| !h.axes.iter().any(|a| indices.contains(a)));
        self.heads.insert(first.min(self.heads.len()), head);
        self.joint
            .push(members.iter().map(|m| m.to_string()).collect());
        Ok(self)
    }

    /// The axes, in order.
    pub fn axes(&self) -> &[Axis] {
        &self.axes
    }

    /// The joint groups, as lists of member names.
    pub fn joint_groups(&self) -> &[Vec<String>] {
        &self.joint
    }

    /// The model's heads, in order: one per axis outside joint groups, one per group.
    pub fn heads(&self) -> &[Head] {
        &self.heads
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
    ///
    /// Targets are always per axis, also for axes in a joint group: the losses build a
    /// group's target over the grid from its members' (see [`joint_target`]).
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

    /// The predicted distribution of every axis, from the model's logits (one `(batch,
    /// bins)` tensor per head): the softmax of a single-axis head, the marginals of a
    /// joint head. Returns one `(batch, K)` f64 tensor per axis, in axis order.
    pub fn axis_distributions(&self, logits: &[Tensor]) -> Result<Vec<Tensor>> {
        self.check_logits(logits)?;
        let mut out: Vec<Option<Tensor>> = vec![None; self.axes.len()];
        for (head, z) in self.heads.iter().zip(logits) {
            let q = candle_nn::ops::softmax_last_dim(&z.to_dtype(DType::F64)?)?;
            for (j, marginal) in marginals(&q, head.shape())?.into_iter().enumerate() {
                out[head.axes[j]] = Some(marginal);
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(a, t)| {
                t.ok_or_else(|| Error::Shape(format!("axis `{}` has no head", self.axes[a].name())))
            })
            .collect()
    }

    /// Estimates from the model's logits (one `(batch, bins)` tensor per head), sample by
    /// sample: `[sample][axis]`, like the labels given to [`LabelSpace::targets`].
    pub fn decode_logits(&self, logits: &[Tensor]) -> Result<Vec<Vec<AxisEstimate>>> {
        let distributions = self
            .axis_distributions(logits)?
            .iter()
            .map(|pmf| pmf.to_vec2::<f64>())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let samples = distributions.first().map_or(0, Vec::len);
        (0..samples)
            .map(|i| {
                self.axes
                    .iter()
                    .zip(&distributions)
                    .map(|(axis, pmf)| axis.estimate(&pmf[i]))
                    .collect()
            })
            .collect()
    }

    /// Checks that there is one `(batch, bins)` logits tensor per head, with matching
    /// `bins` and batch sizes.
    pub fn check_logits(&self, logits: &[Tensor]) -> Result<()> {
        if logits.len() != self.heads.len() {
            let names: Vec<&str> = self.heads.iter().map(|h| h.name()).collect();
            return Err(Error::Shape(format!(
                "got {} logits tensors for a label space of {} heads ({})",
                logits.len(),
                self.heads.len(),
                names.join(", ")
            )));
        }
        let mut batch = None;
        for (head, z) in self.heads.iter().zip(logits) {
            let dims = z.dims();
            let what = if head.is_joint() {
                "joint group"
            } else {
                "axis"
            };
            if dims.len() != 2 || dims[1] != head.bins() {
                return Err(Error::Shape(format!(
                    "{what} `{}`: logits have shape {:?}, expected (batch, {})",
                    head.name(),
                    dims,
                    head.bins()
                )));
            }
            if *batch.get_or_insert(dims[0]) != dims[0] {
                return Err(Error::Shape(format!(
                    "{what} `{}`: batch size {} differs from the other heads' {}",
                    head.name(),
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

/// The marginal distributions of a grid distribution `(batch, K₁·…·K_d)` laid out
/// row-major over `shape`: one `(batch, K_j)` tensor per member. A one-member shape
/// returns the distribution itself.
pub fn marginals(grid: &Tensor, shape: &[usize]) -> Result<Vec<Tensor>> {
    if shape.len() == 1 {
        return Ok(vec![grid.clone()]);
    }
    let batch = grid.dim(0)?;
    (0..shape.len())
        .map(|j| {
            let before: usize = shape[..j].iter().product();
            let after: usize = shape[j + 1..].iter().product();
            let cube = grid.reshape((batch, before, shape[j], after))?;
            Ok(cube.sum(3)?.sum(1)?)
        })
        .collect()
}

/// The target distribution over a joint group's grid: the product of the members'
/// target distributions (independent axes; for Gaussian targets, the Gaussian with a
/// diagonal covariance), laid out row-major. Its marginals are the members' targets.
/// `members` are the members' `(batch, K_j)` target distributions in group order.
pub fn joint_target(members: &[&Tensor]) -> Result<Tensor> {
    let first = members
        .first()
        .ok_or_else(|| Error::Shape("a joint target needs at least one member".into()))?;
    let batch = first.dim(0)?;
    let mut grid = (*first).clone();
    for member in &members[1..] {
        let (rows, k) = member.dims2()?;
        if rows != batch {
            return Err(Error::Shape(format!(
                "joint target: members have {batch} and {rows} rows"
            )));
        }
        let cells = grid.dim(1)?;
        grid = grid
            .unsqueeze(2)?
            .broadcast_mul(&member.unsqueeze(1)?)?
            .reshape((batch, cells * k))?;
    }
    Ok(grid)
}

impl TryFrom<StoredLabelSpace> for LabelSpace {
    type Error = Error;
    fn try_from(stored: StoredLabelSpace) -> Result<LabelSpace> {
        match stored {
            StoredLabelSpace::Axes(axes) => LabelSpace::new(axes),
            StoredLabelSpace::WithJoint(WithJoint { axes, joint }) => {
                let mut space = LabelSpace::new(axes)?;
                for group in &joint {
                    let names: Vec<&str> = group.iter().map(String::as_str).collect();
                    space = space.with_joint(&names)?;
                }
                Ok(space)
            }
        }
    }
}

impl From<LabelSpace> for StoredLabelSpace {
    fn from(space: LabelSpace) -> StoredLabelSpace {
        if space.joint.is_empty() {
            StoredLabelSpace::Axes(space.axes)
        } else {
            StoredLabelSpace::WithJoint(WithJoint {
                axes: space.axes,
                joint: space.joint,
            })
        }
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
