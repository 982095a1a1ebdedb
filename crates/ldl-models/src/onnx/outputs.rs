//! The exported graph's output names: one per axis, one per joint group's grid. ONNX asks
//! for C identifiers, axis names may be any text (`head pose`, `yaw+pitch`), so names are
//! made of the axis names' letters, digits and underscores, and kept unique.

use std::collections::{BTreeMap, BTreeSet};

use ldl_core::LabelSpace;
use serde::{Deserialize, Serialize};

/// The output names of a label space's model.
pub(crate) struct OutputNames {
    axes: Vec<String>,
    /// Joint group (head name) → its grid output.
    joint: BTreeMap<String, String>,
}

/// One output of an exported graph, as its `ldl.outputs` metadata describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnnxOutput {
    /// The graph output's name.
    pub name: String,
    /// The axes it is a distribution over: one for an axis's distribution, the members
    /// (first varying slowest) for a joint group's grid.
    pub axes: Vec<String>,
    /// Its shape after the batch dimension.
    pub bins: Vec<usize>,
}

impl OutputNames {
    /// Names for the outputs of `space`, none of them equal to the names in `taken`.
    pub(crate) fn new(space: &LabelSpace, taken: &[&str]) -> OutputNames {
        let mut used: BTreeSet<String> = taken.iter().map(|s| s.to_string()).collect();
        let axes = space
            .axes()
            .iter()
            .map(|axis| unique(identifier(axis.name()), &mut used))
            .collect();
        let joint = space
            .heads()
            .iter()
            .filter(|head| head.is_joint())
            .map(|head| {
                let members: Vec<String> = head
                    .axes()
                    .iter()
                    .map(|a| identifier(space.axes()[*a].name()))
                    .collect();
                let name = unique(format!("joint_{}", members.join("_")), &mut used);
                (head.name().to_string(), name)
            })
            .collect();
        OutputNames { axes, joint }
    }

    /// The output of the axis at `index` in the label space.
    pub(crate) fn axis(&self, index: usize) -> &str {
        &self.axes[index]
    }

    /// The grid output of the joint group named `head` (`yaw+pitch`).
    pub(crate) fn joint(&self, head: &str) -> &str {
        // Every joint head was named in `new`.
        self.joint.get(head).map_or("", String::as_str)
    }

    /// Every output in graph order (axes, then grids), described.
    pub(crate) fn describe(&self, space: &LabelSpace) -> Vec<OnnxOutput> {
        let mut outputs: Vec<OnnxOutput> = space
            .axes()
            .iter()
            .zip(&self.axes)
            .map(|(axis, name)| OnnxOutput {
                name: name.clone(),
                axes: vec![axis.name().to_string()],
                bins: vec![axis.len()],
            })
            .collect();
        for head in space.heads().iter().filter(|h| h.is_joint()) {
            outputs.push(OnnxOutput {
                name: self.joint(head.name()).to_string(),
                axes: head
                    .axes()
                    .iter()
                    .map(|a| space.axes()[*a].name().to_string())
                    .collect(),
                bins: head.shape().to_vec(),
            });
        }
        outputs
    }
}

/// `name` with every character other than ASCII letters, digits and `_` replaced by `_`,
/// and a leading `_` before a digit.
fn identifier(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// `wanted`, or `wanted_2`, `wanted_3`, … if taken; marks the result as used.
fn unique(wanted: String, used: &mut BTreeSet<String>) -> String {
    let mut name = wanted.clone();
    let mut suffix = 1;
    while used.contains(&name) {
        suffix += 1;
        name = format!("{wanted}_{suffix}");
    }
    used.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldl_core::Axis;

    #[test]
    fn names_are_identifiers_and_unique() {
        let space = LabelSpace::new(vec![
            Axis::linear("head yaw", -90.0, 90.0, 3.0).unwrap(),
            Axis::linear("head+yaw", -90.0, 90.0, 3.0).unwrap(),
            Axis::linear("3d", 0.0, 1.0, 0.5).unwrap(),
        ])
        .unwrap()
        .with_joint(&["head yaw", "head+yaw"])
        .unwrap();
        let names = OutputNames::new(&space, &["image"]);
        assert_eq!(names.axis(0), "head_yaw");
        assert_eq!(names.axis(1), "head_yaw_2");
        assert_eq!(names.axis(2), "_3d");
        assert_eq!(names.joint("head yaw+head+yaw"), "joint_head_yaw_head_yaw");
        let described = names.describe(&space);
        assert_eq!(described.len(), 4);
        assert_eq!(described[3].bins, vec![61, 61]);
        assert_eq!(described[3].axes, vec!["head yaw", "head+yaw"]);
    }
}
