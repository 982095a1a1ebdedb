//! Turning raw labels into target distributions on an axis, and distributions back
//! into estimates (mean, std, mode) in the axis unit.

use serde::{Deserialize, Serialize};

use crate::axis::{wrap_offset, Axis, AxisKind, OutOfRange};
use crate::error::{Error, Result};

/// Largest tolerated deviation of an explicit distribution's sum from 1.
pub const PMF_SUM_TOLERANCE: f64 = 1e-4;

/// A raw label for one axis of one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// A value in the axis unit, with an optional std (the axis default when `None`),
    /// encoded as a discretised Gaussian (wrapped on circular axes; by bin mass on
    /// unevenly spaced centres, see [`Axis::encode`]).
    Value {
        /// The value in the axis unit.
        value: f64,
        /// The label std in the axis unit; the axis default when `None`.
        std: Option<f64>,
    },
    /// A class index on a categorical axis, encoded one-hot.
    Class(usize),
    /// An explicit distribution over the bins, used as given.
    Distribution(Vec<f64>),
}

impl Label {
    /// A value with the axis's default std.
    pub fn value(value: f64) -> Label {
        Label::Value { value, std: None }
    }

    /// A value with its own std (e.g. the annotators' spread of an apparent age).
    pub fn value_with_std(value: f64, std: f64) -> Label {
        Label::Value {
            value,
            std: Some(std),
        }
    }
}

/// A label encoded on its axis: the target pmf plus the nominal value and std that the
/// metrics (MAE, ε-error) and the `nominal` loss options use.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedLabel {
    /// The target distribution over the bins (sums to 1).
    pub pmf: Vec<f64>,
    /// The label value in the axis unit: the given value (after the out-of-range policy),
    /// or the distribution's mean (circular mean on circular axes) for explicit
    /// distributions, or the class index.
    pub value: f64,
    /// The label std in the axis unit: the given or default std, or the distribution's
    /// std for explicit distributions, or 0 for a class.
    pub std: f64,
}

impl EncodedLabel {
    /// The index of the target's most probable bin (its class on a categorical axis), the
    /// first of equal ones.
    pub fn most_probable_bin(&self) -> usize {
        argmax(&self.pmf).0
    }
}

/// A predicted distribution summarised in the terms of its axis's kind: a value with its
/// uncertainty on a linear or circular axis, a class on a categorical one.
///
/// ```
/// use ldl_core::{Axis, AxisEstimate};
/// let age = Axis::linear("age", 0.0, 4.0, 1.0)?;
/// let AxisEstimate::Value(estimate) = age.estimate(&[0.0, 0.25, 0.5, 0.25, 0.0])? else {
///     unreachable!("a linear axis gives a value")
/// };
/// assert_eq!((estimate.mean, estimate.mode), (2.0, 2.0));
/// assert!((estimate.std - 0.5f64.sqrt()).abs() < 1e-12);
///
/// let mood = Axis::categorical("mood", ["calm", "angry"])?;
/// let class = mood.estimate(&[0.3, 0.7])?;
/// assert_eq!(class.as_class().unwrap().name, "angry");
/// assert_eq!((class.mode_index(), class.mode_probability()), (1, 0.7));
/// # Ok::<(), ldl_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum AxisEstimate {
    /// On a linear or circular axis.
    Value(ValueEstimate),
    /// On a categorical axis.
    Class(ClassEstimate),
}

/// A distribution on a linear or circular axis, in the axis unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueEstimate {
    /// Expectation (the circular mean on a circular axis).
    pub mean: f64,
    /// Standard deviation around the mean: the model's uncertainty.
    pub std: f64,
    /// Centre of the most probable bin.
    pub mode: f64,
    /// Index of the most probable bin.
    pub mode_index: usize,
    /// Probability of the most probable bin.
    pub mode_probability: f64,
}

/// A distribution on a categorical axis: its most probable class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassEstimate {
    /// The class's index among the axis's classes.
    pub index: usize,
    /// The class's name.
    pub name: String,
    /// Its probability.
    pub probability: f64,
}

impl AxisEstimate {
    /// Index of the most probable bin (the class's index on a categorical axis).
    pub fn mode_index(&self) -> usize {
        match self {
            AxisEstimate::Value(v) => v.mode_index,
            AxisEstimate::Class(c) => c.index,
        }
    }

    /// Probability of the most probable bin.
    pub fn mode_probability(&self) -> f64 {
        match self {
            AxisEstimate::Value(v) => v.mode_probability,
            AxisEstimate::Class(c) => c.probability,
        }
    }

    /// The value estimate, on a linear or circular axis.
    pub fn as_value(&self) -> Option<&ValueEstimate> {
        match self {
            AxisEstimate::Value(v) => Some(v),
            AxisEstimate::Class(_) => None,
        }
    }

    /// The class estimate, on a categorical axis.
    pub fn as_class(&self) -> Option<&ClassEstimate> {
        match self {
            AxisEstimate::Class(c) => Some(c),
            AxisEstimate::Value(_) => None,
        }
    }
}

/// The JSON of `ldl predict --json`: one object whatever the axis's kind, as since its
/// first version, with `mean` and `std` null, `mode` the class index and `class` the
/// class's name on a categorical axis.
impl Serialize for AxisEstimate {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            class: Option<&'a str>,
            mean: Option<f64>,
            std: Option<f64>,
            mode_index: usize,
            mode: f64,
            mode_probability: f64,
        }
        let wire = match self {
            AxisEstimate::Value(v) => Wire {
                class: None,
                mean: Some(v.mean),
                std: Some(v.std),
                mode_index: v.mode_index,
                mode: v.mode,
                mode_probability: v.mode_probability,
            },
            AxisEstimate::Class(c) => Wire {
                class: Some(&c.name),
                mean: None,
                std: None,
                mode_index: c.index,
                mode: c.index as f64,
                mode_probability: c.probability,
            },
        };
        wire.serialize(serializer)
    }
}

impl Axis {
    /// Encodes a raw label as a target distribution.
    ///
    /// A value `y` with std `s` (or the axis default, [`Axis::default_std_at`]) becomes a
    /// discretised Gaussian normalised over the bins:
    ///
    /// - on evenly spaced axes, its density at the centres, `p_k ∝ exp(−d_k² / 2s²)`
    ///   (`d_k = c_k − y`, wrapped into half a period on a circular axis);
    /// - on uneven centres ([`Axis::from_centers`]), its probability mass over each bin,
    ///   `p_k ∝ Φ((e_{k+1} − y)/s) − Φ((e_k − y)/s)`, between the bin edges `e` (midpoints
    ///   between centres; the outer edges half a spacing beyond the outer centres). The
    ///   density at the centres would over-weight the side where centres are dense and move
    ///   the target's mean off the value; the mass keeps it on the value up to
    ///   discretisation. The mass beyond the outer edges is left out and the rest
    ///   renormalised, as on even axes, rather than piled onto the end bins.
    ///
    /// A class index becomes one-hot; an explicit distribution is checked and used as given.
    ///
    /// ```
    /// use ldl_core::{Axis, Label};
    /// let age = Axis::linear("age", 0.0, 100.0, 1.0)?;
    /// let target = age.encode(&Label::value_with_std(30.0, 3.0))?;
    /// assert!((target.pmf.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    /// assert_eq!(target.pmf.iter().cloned().fold(0.0, f64::max), target.pmf[30]);
    /// assert!(age.encode(&Label::value(120.0)).is_err()); // outside 0..100
    /// # Ok::<(), ldl_core::Error>(())
    /// ```
    pub fn encode(&self, label: &Label) -> Result<EncodedLabel> {
        match label {
            Label::Value { value, std } => self.gaussian_target(*value, *std),
            Label::Class(index) => self.class_target(*index),
            Label::Distribution(pmf) => self.distribution_target(pmf),
        }
    }

    /// A discretised Gaussian around `value` (see [`Axis::encode`]); `std` is the label's
    /// own, or `None` for the axis default at the value.
    fn gaussian_target(&self, value: f64, std: Option<f64>) -> Result<EncodedLabel> {
        let name = self.name();
        if let AxisKind::Categorical { .. } = self.kind() {
            return Err(Error::label(
                name,
                format!("a categorical axis takes a class index, not the value {value}"),
            ));
        }
        if !value.is_finite() {
            return Err(Error::label(
                name,
                format!("label value {value} is not finite"),
            ));
        }
        if let Some(std) = std.filter(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::label(
                name,
                format!("label std must be finite and > 0, got {std} (value {value})"),
            ));
        }
        let value = self.apply_range_policy(value)?;
        // Every non-categorical axis has a default; the `else` is for completeness.
        let Some(std) = std.or_else(|| self.default_std_at(value)) else {
            return Err(Error::label(
                name,
                format!("the axis has no default std; give the value {value} a std"),
            ));
        };
        let pmf = if self.is_evenly_spaced() {
            self.density_pmf(value, std)
        } else {
            self.bin_mass_pmf(value, std)
        };
        Ok(EncodedLabel { pmf, value, std })
    }

    /// The Gaussian's density at the centres, normalised: the target on even axes.
    fn density_pmf(&self, value: f64, std: f64) -> Vec<f64> {
        // Work in log space so that a std far below the bin width still gives a valid pmf
        // (the nearest bin gets everything) instead of 0/0.
        let log_weights: Vec<f64> = self
            .centers()
            .iter()
            .map(|&c| {
                let d = self.difference(c, value);
                -d * d / (2.0 * std * std)
            })
            .collect();
        normalise_log_weights(&log_weights)
    }

    /// The Gaussian's mass over each bin, normalised over the axis: the target on uneven
    /// centres.
    fn bin_mass_pmf(&self, value: f64, std: f64) -> Vec<f64> {
        let z: Vec<f64> = self.bin_edges().iter().map(|e| (e - value) / std).collect();
        let mass: Vec<f64> = z.windows(2).map(|w| normal_mass(w[0], w[1])).collect();
        let total: f64 = mass.iter().sum();
        if total.is_finite() && total > 0.0 {
            return mass.into_iter().map(|m| m / total).collect();
        }
        // Only bins of no width in f64 (or a degenerate std) leave no mass: give the
        // value's nearest bin everything, as a std far below the bin width would.
        let nearest = self
            .centers()
            .iter()
            .map(|c| -(c - value).abs())
            .collect::<Vec<_>>();
        let mut pmf = vec![0.0; self.len()];
        pmf[argmax(&nearest).0] = 1.0;
        pmf
    }

    fn apply_range_policy(&self, value: f64) -> Result<f64> {
        if self.is_circular() {
            return Ok(self.canonical_value(value));
        }
        let (min, max) = (self.centers()[0], self.centers()[self.len() - 1]);
        // Allow rounding noise of a millionth of a bin at the ends.
        let slack = 1e-6 * self.step();
        if value >= min - slack && value <= max + slack {
            return Ok(value.clamp(min, max));
        }
        match self.out_of_range() {
            OutOfRange::Clamp => Ok(value.clamp(min, max)),
            OutOfRange::Error => Err(Error::label(
                self.name(),
                format!(
                    "label value {value} is outside the axis range [{min}, {max}]{}; \
                     widen the axis or set its out-of-range policy to `clamp`",
                    unit_suffix(self.unit())
                ),
            )),
        }
    }

    fn class_target(&self, index: usize) -> Result<EncodedLabel> {
        let Some(classes) = self.classes() else {
            return Err(Error::label(
                self.name(),
                format!("class index {index} given, but the axis is not categorical"),
            ));
        };
        if index >= classes.len() {
            return Err(Error::label(
                self.name(),
                format!(
                    "class index {index} is out of range: the axis has {} classes (0..{})",
                    classes.len(),
                    classes.len() - 1
                ),
            ));
        }
        let mut pmf = vec![0.0; classes.len()];
        pmf[index] = 1.0;
        Ok(EncodedLabel {
            pmf,
            value: index as f64,
            std: 0.0,
        })
    }

    fn distribution_target(&self, pmf: &[f64]) -> Result<EncodedLabel> {
        let name = self.name();
        if pmf.len() != self.len() {
            return Err(Error::label(
                name,
                format!(
                    "the distribution has {} entries, but the axis has {} bins",
                    pmf.len(),
                    self.len()
                ),
            ));
        }
        if let Some(i) = pmf.iter().position(|p| !p.is_finite() || *p < 0.0) {
            return Err(Error::label(
                name,
                format!(
                    "distribution entry {i} is {}; entries must be finite and ≥ 0",
                    pmf[i]
                ),
            ));
        }
        let sum: f64 = pmf.iter().sum();
        if (sum - 1.0).abs() > PMF_SUM_TOLERANCE {
            return Err(Error::label(
                name,
                format!("the distribution sums to {sum}, not 1 (tolerance {PMF_SUM_TOLERANCE})"),
            ));
        }
        // Remove the residual (≤ 1e-4) so that KL terms stay exactly ≥ 0.
        let pmf: Vec<f64> = pmf.iter().map(|p| p / sum).collect();
        let (value, std) = match self.moments(&pmf)? {
            Some((mean, variance)) => (mean, variance.sqrt()),
            None => (argmax(&pmf).0 as f64, 0.0),
        };
        Ok(EncodedLabel { pmf, value, std })
    }

    /// Mean and variance of a distribution over the bins, in the axis unit and unit².
    ///
    /// On circular axes the mean is the circular mean `atan2(Σ p sin θ, Σ p cos θ)` (in the
    /// canonical period) and the variance is that of the offsets wrapped into half a
    /// period around it. `None` on categorical axes.
    /// A distribution of the wrong length is an error naming the axis.
    pub fn moments(&self, pmf: &[f64]) -> Result<Option<(f64, f64)>> {
        self.check_length(pmf)?;
        Ok(match self.kind() {
            AxisKind::Categorical { .. } => None,
            AxisKind::Linear => {
                let mean: f64 = pmf.iter().zip(self.centers()).map(|(p, c)| p * c).sum();
                let variance = pmf
                    .iter()
                    .zip(self.centers())
                    .map(|(p, c)| p * (c - mean) * (c - mean))
                    .sum();
                Some((mean, variance))
            }
            AxisKind::Circular { period } => {
                let (mut sin, mut cos) = (0.0, 0.0);
                for (p, c) in pmf.iter().zip(self.centers()) {
                    let angle = 2.0 * std::f64::consts::PI * c / period;
                    sin += p * angle.sin();
                    cos += p * angle.cos();
                }
                let centre = sin.atan2(cos) * period / (2.0 * std::f64::consts::PI);
                // The variance is taken over the offsets wrapped around the circular mean,
                // as the loss measures it.
                let offsets: Vec<f64> = self
                    .centers()
                    .iter()
                    .map(|c| wrap_offset(c - centre, *period))
                    .collect();
                let shift: f64 = pmf.iter().zip(&offsets).map(|(p, d)| p * d).sum();
                let variance = pmf
                    .iter()
                    .zip(&offsets)
                    .map(|(p, d)| p * (d - shift) * (d - shift))
                    .sum();
                Some((self.canonical_value(centre), variance))
            }
        })
    }

    fn check_length(&self, pmf: &[f64]) -> Result<()> {
        if pmf.len() == self.len() {
            Ok(())
        } else {
            Err(Error::Shape(format!(
                "axis `{}`: a distribution of {} entries for {} bins",
                self.name(),
                pmf.len(),
                self.len()
            )))
        }
    }

    /// Summarises a distribution over the bins: mean, std and mode in the axis unit, or
    /// the most probable class on a categorical axis. A distribution of the wrong length
    /// is an error naming the axis.
    pub fn estimate(&self, pmf: &[f64]) -> Result<AxisEstimate> {
        let moments = self.moments(pmf)?;
        let (mode_index, mode_probability) = argmax(pmf);
        // Moments exist on every axis but a categorical one.
        let Some((mean, variance)) = moments else {
            let classes = self.classes().unwrap_or_default();
            return Ok(AxisEstimate::Class(ClassEstimate {
                index: mode_index,
                name: classes.get(mode_index).cloned().unwrap_or_default(),
                probability: mode_probability,
            }));
        };
        Ok(AxisEstimate::Value(ValueEstimate {
            mean,
            std: variance.sqrt(),
            mode: self.centers()[mode_index],
            mode_index,
            mode_probability,
        }))
    }
}

fn unit_suffix(unit: &str) -> String {
    if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    }
}

pub(crate) fn argmax(values: &[f64]) -> (usize, f64) {
    values
        .iter()
        .copied()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
}

/// `Φ(b) − Φ(a)` for `a ≤ b`, the standard normal's mass over `[a, b]`, from the tail on
/// the side of the interval so that far-out bins keep their (small) mass instead of a
/// difference of two numbers near 1.
fn normal_mass(a: f64, b: f64) -> f64 {
    let tail = |z: f64| 0.5 * libm::erfc(z / std::f64::consts::SQRT_2);
    if a >= 0.0 {
        tail(a) - tail(b)
    } else {
        tail(-b) - tail(-a)
    }
}

fn normalise_log_weights(log_weights: &[f64]) -> Vec<f64> {
    let max = log_weights
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = log_weights.iter().map(|w| (w - max).exp()).collect();
    let sum: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / sum).collect()
}
