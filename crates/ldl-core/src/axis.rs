//! One discretised label axis: its name, unit, kind and bin centres.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the bins of an axis relate to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AxisKind {
    /// Ordered bins on a line (age in years, weight in kg, pitch in degrees).
    Linear,
    /// Ordered bins on a circle of the given period (yaw over 360°, hour of day over 24 h):
    /// distances wrap, so the last bin neighbours the first.
    Circular {
        /// The length of one turn, in the axis unit (360 for degrees).
        period: f64,
    },
    /// Unordered named classes (emotions): no distance between bins.
    Categorical {
        /// The class names, in bin order.
        classes: Vec<String>,
    },
}

/// What to do with a label value that lies outside an axis's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfRange {
    /// Refuse the label with an error naming the axis and the value (the default).
    #[default]
    Error,
    /// Move the value to the nearest end of the axis.
    Clamp,
}

/// A discretised label axis.
///
/// The bins are given by their centres, in the axis unit. Linear axes span
/// `[first centre, last centre]`; circular axes cover one period; categorical axes
/// have one bin per class (centres `0, 1, …, K−1`, the class indices).
///
/// ```
/// use ldl_core::Axis;
/// let age = Axis::linear("age", 0.0, 100.0, 1.0)?.with_unit("years");
/// assert_eq!(age.len(), 101);
/// assert_eq!(age.centers()[42], 42.0);
/// let yaw = Axis::circular("yaw", -180.0, 360.0, 3.0)?.with_unit("degrees");
/// assert_eq!(yaw.len(), 120);
/// # Ok::<(), ldl_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AxisRecord", into = "AxisRecord")]
pub struct Axis {
    name: String,
    unit: String,
    kind: AxisKind,
    centers: Vec<f64>,
    default_std: f64,
    out_of_range: OutOfRange,
}

/// Largest mismatch, in steps, tolerated when `(max − min) / step` should be a whole number.
const GRID_TOLERANCE: f64 = 1e-6;

impl Axis {
    /// A linear axis with bin centres `min, min + step, …, max`.
    ///
    /// `max − min` must be a whole number of steps. The default label std is two bins
    /// (`2 · step`); change it with [`Axis::with_default_std`].
    pub fn linear(name: impl Into<String>, min: f64, max: f64, step: f64) -> Result<Axis> {
        let name = name.into();
        check_finite(&name, "min", min)?;
        check_finite(&name, "max", max)?;
        check_finite(&name, "step", step)?;
        if step <= 0.0 {
            return Err(Error::axis(&name, format!("step must be > 0, got {step}")));
        }
        if min >= max {
            return Err(Error::axis(
                &name,
                format!("min must be < max, got min = {min}, max = {max}"),
            ));
        }
        let count = whole_steps(&name, max - min, step, "max − min")?;
        let centers = (0..=count).map(|i| min + i as f64 * step).collect();
        Axis::build(name, AxisKind::Linear, centers)
    }

    /// A linear axis with explicit, strictly increasing bin centres (at least two).
    ///
    /// Spacing may be uneven; the unit-free parts of the losses measure distances in
    /// multiples of the mean spacing.
    pub fn from_centers(name: impl Into<String>, centers: Vec<f64>) -> Result<Axis> {
        let name = name.into();
        if centers.len() < 2 {
            return Err(Error::axis(
                &name,
                format!("needs at least 2 bin centres, got {}", centers.len()),
            ));
        }
        for (i, c) in centers.iter().enumerate() {
            check_finite(&name, &format!("centre {i}"), *c)?;
        }
        if let Some(i) = centers.windows(2).position(|w| w[1] <= w[0]) {
            return Err(Error::axis(
                &name,
                format!(
                    "bin centres must be strictly increasing, but centre {} = {} follows {}",
                    i + 1,
                    centers[i + 1],
                    centers[i]
                ),
            ));
        }
        Axis::build(name, AxisKind::Linear, centers)
    }

    /// A circular axis of the given `period` with bins `start, start + step, …,
    /// start + period − step` (`period / step` bins; `start + period` is `start` again).
    pub fn circular(name: impl Into<String>, start: f64, period: f64, step: f64) -> Result<Axis> {
        let name = name.into();
        check_finite(&name, "start", start)?;
        check_finite(&name, "period", period)?;
        check_finite(&name, "step", step)?;
        if step <= 0.0 {
            return Err(Error::axis(&name, format!("step must be > 0, got {step}")));
        }
        if period <= 0.0 {
            return Err(Error::axis(
                &name,
                format!("period must be > 0, got {period}"),
            ));
        }
        let count = whole_steps(&name, period, step, "period")?;
        if count < 3 {
            return Err(Error::axis(
                &name,
                format!("a circular axis needs at least 3 bins, got period / step = {count}"),
            ));
        }
        let centers = (0..count).map(|i| start + i as f64 * step).collect();
        Axis::build(name, AxisKind::Circular { period }, centers)
    }

    /// A categorical axis with one bin per named class (at least two, unique).
    pub fn categorical<S: Into<String>>(
        name: impl Into<String>,
        classes: impl IntoIterator<Item = S>,
    ) -> Result<Axis> {
        let name = name.into();
        let classes: Vec<String> = classes.into_iter().map(Into::into).collect();
        if classes.len() < 2 {
            return Err(Error::axis(
                &name,
                format!("needs at least 2 classes, got {}", classes.len()),
            ));
        }
        for (i, class) in classes.iter().enumerate() {
            if class.is_empty() {
                return Err(Error::axis(&name, format!("class {i} has an empty name")));
            }
            if classes[..i].contains(class) {
                return Err(Error::axis(&name, format!("class `{class}` appears twice")));
            }
        }
        let centers = (0..classes.len()).map(|i| i as f64).collect();
        Axis::build(name, AxisKind::Categorical { classes }, centers)
    }

    fn build(name: String, kind: AxisKind, centers: Vec<f64>) -> Result<Axis> {
        if name.trim().is_empty() {
            return Err(Error::axis(&name, "the axis name must not be empty"));
        }
        let mut axis = Axis {
            name,
            unit: String::new(),
            kind,
            centers,
            default_std: 0.0,
            out_of_range: OutOfRange::Error,
        };
        axis.default_std = 2.0 * axis.step();
        Ok(axis)
    }

    /// Sets the unit the axis is measured in (printed in logs and reports).
    pub fn with_unit(mut self, unit: impl Into<String>) -> Axis {
        self.unit = unit.into();
        self
    }

    /// Sets the label std used for values given without one. Must be finite and > 0.
    pub fn with_default_std(mut self, std: f64) -> Result<Axis> {
        if !(std.is_finite() && std > 0.0) {
            return Err(Error::axis(
                &self.name,
                format!("default std must be finite and > 0, got {std}"),
            ));
        }
        self.default_std = std;
        Ok(self)
    }

    /// Sets the policy for label values outside the axis (linear axes only; values on a
    /// circular axis always wrap).
    pub fn with_out_of_range(mut self, policy: OutOfRange) -> Axis {
        self.out_of_range = policy;
        self
    }

    /// The axis name, as used for heads and log keys (`age/ld`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The unit of the axis (may be empty).
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// Linear, circular or categorical.
    pub fn kind(&self) -> &AxisKind {
        &self.kind
    }

    /// The bin centres in the axis unit (class indices on a categorical axis).
    pub fn centers(&self) -> &[f64] {
        &self.centers
    }

    /// Number of bins `K`.
    pub fn len(&self) -> usize {
        self.centers.len()
    }

    /// Always false: an axis has at least two bins.
    pub fn is_empty(&self) -> bool {
        self.centers.is_empty()
    }

    /// The (mean) distance between neighbouring bin centres: the unit in which the
    /// loss measures distances internally, and the scale of the variance floor.
    pub fn step(&self) -> f64 {
        match self.kind {
            AxisKind::Circular { period } => period / self.len() as f64,
            _ => (self.centers[self.len() - 1] - self.centers[0]) / (self.len() - 1) as f64,
        }
    }

    /// The label std used for values given without one.
    pub fn default_std(&self) -> f64 {
        self.default_std
    }

    /// The out-of-range policy.
    pub fn out_of_range(&self) -> OutOfRange {
        self.out_of_range
    }

    /// The period of a circular axis.
    pub fn period(&self) -> Option<f64> {
        match self.kind {
            AxisKind::Circular { period } => Some(period),
            _ => None,
        }
    }

    /// True for categorical axes, which have no order (their loss is `L_ld` alone).
    pub fn is_categorical(&self) -> bool {
        matches!(self.kind, AxisKind::Categorical { .. })
    }

    /// True for circular axes.
    pub fn is_circular(&self) -> bool {
        matches!(self.kind, AxisKind::Circular { .. })
    }

    /// The class names of a categorical axis.
    pub fn classes(&self) -> Option<&[String]> {
        match &self.kind {
            AxisKind::Categorical { classes } => Some(classes),
            _ => None,
        }
    }

    /// The signed difference `a − b` in the axis unit: wrapped into `(−P/2, P/2]` on a
    /// circular axis of period `P`, plain otherwise.
    ///
    /// ```
    /// use ldl_core::Axis;
    /// let yaw = Axis::circular("yaw", -180.0, 360.0, 1.0)?;
    /// assert_eq!(yaw.difference(179.0, -179.0), -2.0);
    /// # Ok::<(), ldl_core::Error>(())
    /// ```
    pub fn difference(&self, a: f64, b: f64) -> f64 {
        match self.kind {
            AxisKind::Circular { period } => wrap_offset(a - b, period),
            _ => a - b,
        }
    }

    /// Maps a value into the axis's canonical period `[first centre, first centre + P)` on
    /// a circular axis; returns it unchanged otherwise.
    pub fn canonical_value(&self, value: f64) -> f64 {
        match self.kind {
            AxisKind::Circular { period } => {
                let start = self.centers[0];
                start + (value - start).rem_euclid(period)
            }
            _ => value,
        }
    }
}

/// Wraps an offset into `(−period/2, period/2]`.
pub(crate) fn wrap_offset(offset: f64, period: f64) -> f64 {
    let half = period / 2.0;
    let wrapped = (offset + half).rem_euclid(period) - half;
    // rem_euclid lands in [−P/2, P/2); the interval is documented as (−P/2, P/2].
    if wrapped <= -half {
        wrapped + period
    } else {
        wrapped
    }
}

fn check_finite(axis: &str, what: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::axis(
            axis,
            format!("{what} must be finite, got {value}"),
        ))
    }
}

fn whole_steps(axis: &str, span: f64, step: f64, what: &str) -> Result<usize> {
    let steps = span / step;
    let rounded = steps.round();
    if (steps - rounded).abs() > GRID_TOLERANCE {
        return Err(Error::axis(
            axis,
            format!("{what} = {span} is not a whole number of steps of {step}; adjust the range or the step"),
        ));
    }
    if rounded < 1.0 {
        return Err(Error::axis(
            axis,
            format!("{what} = {span} is less than one step of {step}: the axis would have one bin"),
        ));
    }
    if rounded > 1e7 {
        return Err(Error::axis(
            axis,
            format!("{what} / step = {rounded} bins is too many (at most 10,000,000)"),
        ));
    }
    Ok(rounded as usize)
}

/// The serialised form of an axis (explicit centres), validated on the way back in.
#[derive(Serialize, Deserialize)]
struct AxisRecord {
    name: String,
    #[serde(default)]
    unit: String,
    #[serde(flatten)]
    kind: AxisKind,
    centers: Vec<f64>,
    default_std: f64,
    #[serde(default)]
    out_of_range: OutOfRange,
}

impl From<Axis> for AxisRecord {
    fn from(axis: Axis) -> Self {
        AxisRecord {
            name: axis.name,
            unit: axis.unit,
            kind: axis.kind,
            centers: axis.centers,
            default_std: axis.default_std,
            out_of_range: axis.out_of_range,
        }
    }
}

impl TryFrom<AxisRecord> for Axis {
    type Error = Error;

    fn try_from(record: AxisRecord) -> Result<Axis> {
        let axis = match &record.kind {
            AxisKind::Linear => Axis::from_centers(record.name.clone(), record.centers.clone())?,
            AxisKind::Circular { period } => {
                let first = record.centers.first().copied().unwrap_or(f64::NAN);
                let step = period / record.centers.len().max(1) as f64;
                let axis = Axis::circular(record.name.clone(), first, *period, step)?;
                if axis.centers.len() != record.centers.len() {
                    return Err(Error::axis(
                        &record.name,
                        "stored centres do not cover one period evenly",
                    ));
                }
                axis
            }
            AxisKind::Categorical { classes } => {
                let axis = Axis::categorical(record.name.clone(), classes.clone())?;
                if axis.centers.len() != record.centers.len() {
                    return Err(Error::axis(
                        &record.name,
                        "stored centres do not match the number of classes",
                    ));
                }
                axis
            }
        };
        Ok(axis
            .with_unit(record.unit)
            .with_default_std(record.default_std)?
            .with_out_of_range(record.out_of_range))
    }
}
