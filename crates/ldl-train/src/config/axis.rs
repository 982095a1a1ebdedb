//! `[[task.axes]]`: one axis of the label space, as an [`AxisConfig`] whose [`AxisBins`]
//! carry only the keys of the axis's kind.
//!
//! A config spells an axis as a flat table; `kind` decides which keys describe its bins,
//! and a key another kind reads is refused (it would have no effect):
//!
//! | `kind` | bin keys | bins |
//! |---|---|---|
//! | `linear` (default) | `min`, `max`, `step` | centres `min`, `min + step`, …, `max` |
//! | `circular` | `min`, `period`, `step` | `period / step` centres from `min`; the last neighbours the first |
//! | `categorical` | `classes` | one per class name, unordered |
//!
//! Every kind also takes `name`, `unit`, `default_std` and `out_of_range`, which
//! [`ldl_core::Axis`] checks when the label space is built, and `loss`: a loss kind for
//! this axis instead of `[loss]`'s (`loss = "kl"` for targets that are not smooth and
//! unimodal, such as rating histograms).

use ldl_core::{Axis, OutOfRange, PositiveStd};
use serde::{Deserialize, Serialize};

use super::keyword::{keyword_conversions, Keyword};
use super::loss::LossKind;
use crate::error::{Error, Result};

/// One `[[task.axes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AxisTable", into = "AxisTable")]
pub struct AxisConfig {
    /// The axis name: its head's name and the prefix of its log keys.
    pub name: String,
    /// The kind of axis and where its bins lie.
    pub bins: AxisBins,
    /// The unit, printed in reports (`""` for none).
    pub unit: String,
    /// Label std for samples without one (`None`: the axis default, two bins).
    pub default_std: Option<f64>,
    /// What a label value outside the axis does: an error (the default) or clamping.
    pub out_of_range: OutOfRange,
    /// This axis's own loss kind (`None`: `[loss]`'s). Its parameters are `[loss]`'s when
    /// the kinds agree, else the kind's defaults.
    pub loss: Option<LossKind>,
}

/// The bins of an axis, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum AxisBins {
    /// Ordered bins on a line: centres `min`, `min + step`, …, `max`.
    Linear {
        /// The first bin centre.
        min: f64,
        /// The last bin centre.
        max: f64,
        /// The distance between centres.
        step: f64,
    },
    /// Ordered bins on a circle: `period / step` centres from `start`.
    Circular {
        /// The first bin centre (`min` in a config file).
        start: f64,
        /// The length of one turn (360 for degrees).
        period: f64,
        /// The distance between centres.
        step: f64,
    },
    /// Unordered classes, one bin each.
    Categorical {
        /// The class names, in bin order.
        classes: Vec<String>,
    },
}

/// `task.axes[].kind`: the name of an [`AxisBins`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AxisKindName {
    /// `linear`.
    Linear,
    /// `circular`.
    Circular,
    /// `categorical`.
    Categorical,
}

impl Keyword for AxisKindName {
    const KEY: &'static str = "task.axes[].kind";
    const WHAT: &'static str = "axis kind";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("linear", AxisKindName::Linear),
        ("circular", AxisKindName::Circular),
        ("categorical", AxisKindName::Categorical),
    ];
}
keyword_conversions!(AxisKindName);

impl AxisBins {
    /// The kind's name in a config.
    pub fn kind(&self) -> AxisKindName {
        match self {
            AxisBins::Linear { .. } => AxisKindName::Linear,
            AxisBins::Circular { .. } => AxisKindName::Circular,
            AxisBins::Categorical { .. } => AxisKindName::Categorical,
        }
    }
}

impl AxisConfig {
    /// The axis this entry describes; [`ldl_core::Axis`]'s constructors check the values.
    pub fn build(&self) -> ldl_core::Result<Axis> {
        let name = self.name.clone();
        let axis = match &self.bins {
            AxisBins::Linear { min, max, step } => Axis::linear(name, *min, *max, *step)?,
            AxisBins::Circular {
                start,
                period,
                step,
            } => Axis::circular(name, *start, *period, *step)?,
            AxisBins::Categorical { classes } => Axis::categorical(name, classes.clone())?,
        };
        let axis = axis
            .with_unit(self.unit.clone())
            .with_out_of_range(self.out_of_range);
        match self.default_std {
            Some(std) => {
                let std = PositiveStd::new(std).map_err(|_| ldl_core::Error::InvalidAxis {
                    axis: self.name.clone(),
                    message: format!("default std must be finite and > 0, got {std}"),
                })?;
                Ok(axis.with_default_std(std))
            }
            None => Ok(axis),
        }
    }

    /// The `[[task.axes]]` entry of an axis, with its default std written out. Fails for
    /// an axis a config cannot express (uneven bin centres from [`Axis::from_centers`]).
    pub fn from_axis(axis: &Axis) -> Result<AxisConfig> {
        let config = |bins: AxisBins| AxisConfig {
            name: axis.name().to_string(),
            bins,
            unit: axis.unit().to_string(),
            default_std: axis.default_std(),
            out_of_range: axis.out_of_range(),
            loss: None,
        };
        let centers = axis.centers();
        let (first, last) = (centers[0], centers[centers.len() - 1]);
        let with_step = |step: f64| match axis.kind() {
            ldl_core::AxisKind::Linear => AxisBins::Linear {
                min: first,
                max: last,
                step,
            },
            ldl_core::AxisKind::Circular { period } => AxisBins::Circular {
                start: first,
                period: *period,
                step,
            },
            ldl_core::AxisKind::Categorical { classes } => AxisBins::Categorical {
                classes: classes.clone(),
            },
        };
        if axis.is_categorical() {
            return Ok(config(with_step(0.0)));
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
            .map(|s| config(with_step(s)))
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

/// `[[task.axes]]` as a file spells it: the keys of every kind, flat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisTable {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default)]
    unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_std: Option<f64>,
    #[serde(default)]
    out_of_range: OutOfRange,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss: Option<String>,
}

impl TryFrom<AxisTable> for AxisConfig {
    type Error = String;

    fn try_from(table: AxisTable) -> std::result::Result<Self, String> {
        let kind = AxisKindName::parse(table.kind.as_deref().unwrap_or("linear"))?;
        let name = &table.name;
        let keys = [
            ("min", table.min.is_some()),
            ("max", table.max.is_some()),
            ("step", table.step.is_some()),
            ("period", table.period.is_some()),
            ("classes", table.classes.is_some()),
        ];
        let own: &[&str] = match kind {
            AxisKindName::Linear => &["min", "max", "step"],
            AxisKindName::Circular => &["min", "period", "step"],
            AxisKindName::Categorical => &["classes"],
        };
        if let Some((key, _)) = keys.iter().find(|(key, set)| *set && !own.contains(key)) {
            return Err(format!(
                "axis `{name}`: a {kind} axis does not read `{key}` (its keys are {}); remove \
                 it or change `kind`",
                own.join(", ")
            ));
        }
        if let Some((key, _)) = keys.iter().find(|(key, set)| !*set && own.contains(key)) {
            return Err(format!("axis `{name}`: a {kind} axis needs `{key}`"));
        }
        let number = |value: Option<f64>| value.unwrap_or_default();
        let bins = match kind {
            AxisKindName::Linear => AxisBins::Linear {
                min: number(table.min),
                max: number(table.max),
                step: number(table.step),
            },
            AxisKindName::Circular => AxisBins::Circular {
                start: number(table.min),
                period: number(table.period),
                step: number(table.step),
            },
            AxisKindName::Categorical => AxisBins::Categorical {
                classes: table.classes.unwrap_or_default(),
            },
        };
        let loss = table
            .loss
            .as_deref()
            .map(LossKind::parse)
            .transpose()
            .map_err(|e| format!("axis `{name}`: {}", e.replacen("`loss.kind`", "`loss`", 1)))?;
        Ok(AxisConfig {
            name: table.name,
            bins,
            unit: table.unit,
            default_std: table.default_std,
            out_of_range: table.out_of_range,
            loss,
        })
    }
}

impl From<AxisConfig> for AxisTable {
    fn from(config: AxisConfig) -> AxisTable {
        let kind = Some(config.bins.kind().to_string());
        let table = AxisTable {
            name: config.name,
            kind,
            unit: config.unit,
            default_std: config.default_std,
            out_of_range: config.out_of_range,
            loss: config.loss.map(|kind| kind.to_string()),
            ..AxisTable::default()
        };
        match config.bins {
            AxisBins::Linear { min, max, step } => AxisTable {
                min: Some(min),
                max: Some(max),
                step: Some(step),
                ..table
            },
            AxisBins::Circular {
                start,
                period,
                step,
            } => AxisTable {
                min: Some(start),
                period: Some(period),
                step: Some(step),
                ..table
            },
            AxisBins::Categorical { classes } => AxisTable {
                classes: Some(classes),
                ..table
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<AxisConfig, String> {
        toml::from_str::<AxisConfig>(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn a_flat_table_becomes_the_bins_of_its_kind() {
        let age = parse("name = \"age\"\nmin = 0\nmax = 100\nstep = 1").unwrap();
        assert_eq!(
            age.bins,
            AxisBins::Linear {
                min: 0.0,
                max: 100.0,
                step: 1.0
            }
        );
        let yaw = parse("name = \"yaw\"\nkind = \"circular\"\nmin = -180\nperiod = 360\nstep = 3")
            .unwrap();
        assert_eq!(
            yaw.bins,
            AxisBins::Circular {
                start: -180.0,
                period: 360.0,
                step: 3.0
            }
        );
        assert_eq!(yaw.build().unwrap().len(), 120);
        let sex =
            parse("name = \"sex\"\nkind = \"categorical\"\nclasses = [\"f\", \"m\"]").unwrap();
        assert_eq!(sex.build().unwrap().len(), 2);
    }

    #[test]
    fn a_key_of_another_kind_or_a_missing_one_is_named() {
        let err = parse("name = \"yaw\"\nkind = \"circular\"\nmin = 0\nmax = 350\nstep = 10")
            .unwrap_err();
        assert!(
            err.contains(
                "axis `yaw`: a circular axis does not read `max` (its keys are min, \
                          period, step)"
            ),
            "{err}"
        );
        let err = parse("name = \"age\"\nmin = 0\nstep = 1").unwrap_err();
        assert!(
            err.contains("axis `age`: a linear axis needs `max`"),
            "{err}"
        );
        let err = parse("name = \"yaw\"\nkind = \"circuler\"").unwrap_err();
        assert!(err.contains("did you mean `circular`?"), "{err}");
    }

    #[test]
    fn a_default_std_that_is_not_positive_names_the_axis() {
        let age = parse("name = \"age\"\nmin = 0\nmax = 10\nstep = 1\ndefault_std = -1").unwrap();
        let err = age.build().unwrap_err().to_string();
        assert!(
            err.contains("axis `age`: default std must be finite and > 0, got -1"),
            "{err}"
        );
    }

    #[test]
    fn every_kind_is_written_as_the_table_it_is_read_from() {
        for text in [
            "name = \"age\"\nunit = \"years\"\nmin = 0\nmax = 100\nstep = 1\ndefault_std = 3",
            "name = \"yaw\"\nkind = \"circular\"\nmin = -180\nperiod = 360\nstep = 3",
            "name = \"sex\"\nkind = \"categorical\"\nclasses = [\"f\", \"m\"]",
        ] {
            let config = parse(text).unwrap();
            let written = toml::to_string(&config).unwrap();
            assert_eq!(parse(&written).unwrap(), config, "{written}");
        }
    }
}
