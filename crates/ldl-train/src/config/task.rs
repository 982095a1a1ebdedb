//! `[task]`: the name, the axes and the joint groups of the label space.

use ldl_core::LabelSpace;
use serde::{Deserialize, Serialize};

use super::axis::AxisConfig;
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
    /// an axis a config cannot express (uneven bin centres from
    /// [`ldl_core::Axis::from_centers`]).
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
                if ldl_models::linear_path::is_reserved_head_name(&axis.name) {
                    return Err(Error::Config(format!(
                        "`task.axes[{i}].name`: {:?} ends in `.linear_path`, which names \
                         the heads' linear paths' weights; rename the axis",
                        axis.name
                    )));
                }
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

/// The longest `task.name`: it names run folders (`NAME-3`, `NAME-compare`), which file
/// systems limit to 255 bytes.
const MAX_NAME_BYTES: usize = 100;

/// One `[[task.joint]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointConfig {
    /// The member axes (two or more linear or circular axes of `[[task.axes]]`), e.g.
    /// `["yaw", "pitch"]`: one softmax over the yaw × pitch grid.
    pub axes: Vec<String>,
}

/// `name` cut to 40 characters for a message.
fn truncated(name: &str) -> String {
    match name.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name.to_string(),
    }
}
