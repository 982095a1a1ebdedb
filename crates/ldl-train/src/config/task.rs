//! `[task]`: the name, the axes and the joint groups of the label space.

use ldl_core::{Axis, LabelSpace, OutOfRange};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[task]`: the name and the axes of the label space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// A short name, used for the run folder.
    pub name: String,
    /// The axes, in order (`[[task.axes]]`).
    pub axes: Vec<AxisConfig>,
    /// Joint groups (`[[task.joint]]`): axes that share one head over the product of
    /// their bins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joint: Vec<JointConfig>,
}

impl TaskConfig {
    /// The `[task]` of a label space built in code: its axes and joint groups. Fails for
    /// an axis a config cannot express (uneven bin centres from [`Axis::from_centers`]).
    pub fn from_label_space(name: impl Into<String>, space: &LabelSpace) -> Result<TaskConfig> {
        Ok(TaskConfig {
            name: name.into(),
            axes: space
                .axes()
                .iter()
                .map(AxisConfig::from_axis)
                .collect::<Result<_>>()?,
            joint: space
                .joint_groups()
                .iter()
                .map(|axes| JointConfig { axes: axes.clone() })
                .collect(),
        })
    }
}

impl AxisConfig {
    /// The `[[task.axes]]` entry of an axis, with its default std written out.
    pub fn from_axis(axis: &Axis) -> Result<AxisConfig> {
        let centers = axis.centers();
        let (kind, min, max, period, classes) = match axis.kind() {
            ldl_core::AxisKind::Linear => (
                AxisKindName::Linear,
                Some(centers[0]),
                Some(centers[centers.len() - 1]),
                None,
                None,
            ),
            ldl_core::AxisKind::Circular { period } => (
                AxisKindName::Circular,
                Some(centers[0]),
                None,
                Some(*period),
                None,
            ),
            ldl_core::AxisKind::Categorical { classes } => (
                AxisKindName::Categorical,
                None,
                None,
                None,
                Some(classes.clone()),
            ),
        };
        let config = |step: Option<f64>| AxisConfig {
            name: axis.name().to_string(),
            kind,
            unit: axis.unit().to_string(),
            min,
            max,
            step,
            period,
            classes: classes.clone(),
            default_std: (!axis.is_categorical()).then(|| axis.default_std()),
            out_of_range: axis.out_of_range(),
        };
        if axis.is_categorical() {
            return Ok(config(None));
        }
        // The step recomputed from the centres can be an ulp off the one the axis was
        // made with (0.3 / 3 = 0.09999999999999999): try it rounded to fewer digits too.
        // Evenly spaced bins rebuild exactly with one of them; uneven ones have no config
        // form.
        let step = axis.step();
        let rounded = |digits: i32| {
            let scale = 10f64.powi(digits - 1 - step.abs().log10().floor() as i32);
            (step * scale).round() / scale
        };
        [step, rounded(12), rounded(6)]
            .into_iter()
            .map(|s| config(Some(s)))
            .find(|c| c.build().is_ok_and(|rebuilt| rebuilt == *axis))
            .ok_or_else(|| {
                Error::Config(format!(
                    "axis `{}`: its bins are not evenly spaced, which a config cannot \
                     express; train it through the library API",
                    axis.name()
                ))
            })
    }
}

/// One `[[task.joint]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointConfig {
    /// The member axes (two or more linear or circular axes of `[[task.axes]]`), e.g.
    /// `["yaw", "pitch"]`: one softmax over the yaw × pitch grid.
    pub axes: Vec<String>,
}

/// One `[[task.axes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisConfig {
    /// The axis name.
    pub name: String,
    /// `linear` (default), `circular` or `categorical`.
    #[serde(default)]
    pub kind: AxisKindName,
    /// The unit, printed in reports.
    #[serde(default)]
    pub unit: String,
    /// First bin centre (linear), or the start of the period (circular).
    pub min: Option<f64>,
    /// Last bin centre (linear).
    pub max: Option<f64>,
    /// Distance between bin centres.
    pub step: Option<f64>,
    /// Length of one turn (circular).
    pub period: Option<f64>,
    /// Class names (categorical).
    pub classes: Option<Vec<String>>,
    /// Label std for samples without one (default: two bins).
    pub default_std: Option<f64>,
    /// `error` (default) or `clamp` for values outside the axis.
    #[serde(default)]
    pub out_of_range: OutOfRange,
}

/// The kinds of axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AxisKindName {
    /// Ordered bins on a line.
    #[default]
    Linear,
    /// Ordered bins on a circle.
    Circular,
    /// Unordered classes.
    Categorical,
}

/// The longest `task.name`: it names run folders (`NAME-3`, `NAME-compare`), which file
/// systems limit to 255 bytes.
const MAX_NAME_BYTES: usize = 100;

impl TaskConfig {
    /// `task.name` names the run's folder inside `run.output_dir`, so it must be one plain
    /// file name: not empty, at most 100 bytes, without `/`, `\`, `:` or control
    /// characters, none of which can lead the run outside `output_dir`.
    pub(crate) fn check_name(&self) -> Result<()> {
        let name = &self.name;
        let refusal = if name.is_empty() {
            Some("is empty".to_string())
        } else if name.len() > MAX_NAME_BYTES {
            Some(format!(
                "is {} bytes long (at most {MAX_NAME_BYTES})",
                name.len()
            ))
        } else {
            name.chars()
                .find(|&c| matches!(c, '/' | '\\' | ':') || c.is_control())
                .map(|c| format!("holds {c:?}"))
        };
        match refusal {
            None => Ok(()),
            Some(problem) => Err(Error::Config(format!(
                "`task.name`: {:?} {problem}; it names the run folder inside run.output_dir, \
                 so use a plain name such as \"age\" (set run.output_dir for another place)",
                truncated(name)
            ))),
        }
    }

    /// The label space of the axes and joint groups; an error names the entry
    /// (`task.axes[2]`, `task.joint[0].axes`).
    pub fn label_space(&self) -> Result<LabelSpace> {
        let axes = self
            .axes
            .iter()
            .enumerate()
            .map(|(i, axis)| {
                axis.build()
                    .map_err(|e| Error::Config(format!("`task.axes[{i}]`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut space =
            LabelSpace::new(axes).map_err(|e| Error::Config(format!("`task.axes`: {e}")))?;
        for (i, group) in self.joint.iter().enumerate() {
            let members: Vec<&str> = group.axes.iter().map(String::as_str).collect();
            space = space
                .with_joint(&members)
                .map_err(|e| Error::Config(format!("`task.joint[{i}].axes`: {e}")))?;
        }
        Ok(space)
    }
}

impl AxisConfig {
    fn build(&self) -> ldl_core::Result<Axis> {
        let need = |what: &str, value: Option<f64>| {
            value.ok_or_else(|| ldl_core::Error::InvalidAxis {
                axis: self.name.clone(),
                message: format!("a {:?} axis needs `{what}`", self.kind).to_lowercase(),
            })
        };
        let axis = match self.kind {
            AxisKindName::Linear => Axis::linear(
                self.name.clone(),
                need("min", self.min)?,
                need("max", self.max)?,
                need("step", self.step)?,
            )?,
            AxisKindName::Circular => Axis::circular(
                self.name.clone(),
                need("min", self.min)?,
                need("period", self.period)?,
                need("step", self.step)?,
            )?,
            AxisKindName::Categorical => Axis::categorical(
                self.name.clone(),
                self.classes
                    .clone()
                    .ok_or_else(|| ldl_core::Error::InvalidAxis {
                        axis: self.name.clone(),
                        message: "a categorical axis needs `classes`".into(),
                    })?,
            )?,
        };
        let axis = axis
            .with_unit(self.unit.clone())
            .with_out_of_range(self.out_of_range);
        match self.default_std {
            Some(std) => axis.with_default_std(std),
            None => Ok(axis),
        }
    }
}

/// `name` cut to 40 characters for a message.
fn truncated(name: &str) -> String {
    match name.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name.to_string(),
    }
}
