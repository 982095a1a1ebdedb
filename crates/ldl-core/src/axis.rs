//! One discretised label axis: its name, unit, kind and bin centres.
//!
//! # Constructors that say what their numbers are
//!
//! [`Axis::linear`]`(name, min, max, step)` and [`Axis::circular`]`(name, start, period,
//! step)` take four arguments of one type with different meanings: `(0, 360, 10)` is 37
//! bins on a line (both ends included) and 36 on a circle (`360` is `0` again). Rust has
//! no named arguments, so the named forms take the numbers as the fields of a small
//! struct, [`LinearBins`] or [`CircularBins`], given to [`Axis::linear_bins`] or
//! [`Axis::circular_bins`]:
//!
//! ```
//! use ldl_core::{Axis, CircularBins, LinearBins};
//! let tilt = Axis::linear_bins("tilt", LinearBins { min: 0.0, max: 360.0, step: 10.0 })?;
//! let yaw = Axis::circular_bins("yaw", CircularBins { start: 0.0, period: 360.0, step: 10.0 })?;
//! assert_eq!((tilt.len(), yaw.len()), (37, 36));
//! # Ok::<(), ldl_core::Error>(())
//! ```
//!
//! A struct literal was chosen over a builder (`Axis::linear(name).min(0.0)…`): every field
//! is named at the call site, a forgotten field is a compile error rather than a run-time
//! one, field order cannot be mixed up, the names are those of the `[[task.axes]]` keys,
//! and the positional constructors keep their names and meaning for existing code.
//!
//! # Settings
//!
//! The `with_*` settings all return the axis itself, so they chain without `?`. The one
//! that needs checking, the default label std, takes a [`PositiveStd`], which is checked
//! where it is made ([`PositiveStd::new`]).
//!
//! # Default label stds
//!
//! A value label given without a std gets the axis's default:
//!
//! | axis | default std |
//! |---|---|
//! | linear or circular, evenly spaced | two bins, `2 · step` |
//! | explicit uneven centres ([`Axis::from_centers`]) | two widths of the bin the value falls in ([`Axis::default_std_at`]) |
//! | categorical | none: its labels are classes |
//!
//! [`Axis::with_default_std`] replaces it with one std for every value.

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
/// use ldl_core::{Axis, CircularBins, LinearBins};
/// let age = Axis::linear_bins("age", LinearBins { min: 0.0, max: 100.0, step: 1.0 })?
///     .with_unit("years");
/// assert_eq!(age.len(), 101);
/// assert_eq!(age.centers()[42], 42.0);
/// let yaw = Axis::circular_bins("yaw", CircularBins { start: -180.0, period: 360.0, step: 3.0 })?
///     .with_unit("degrees");
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
    /// False for explicit centres whose spacing varies: their targets are bin masses and
    /// their default std follows the local bin width.
    even: bool,
    /// The std of values given without one: set, or the kind's fixed default (two bins on
    /// an even axis); `None` on categorical axes, and on uneven ones where the default
    /// depends on the value ([`Axis::default_std_at`]).
    default_std: Option<f64>,
    out_of_range: OutOfRange,
}

/// The bins of a linear axis, by name: centres `min, min + step, …, max` (both ends are
/// centres, so there are `(max − min) / step + 1` bins).
///
/// ```
/// use ldl_core::{Axis, LinearBins};
/// let pitch = Axis::linear_bins("pitch", LinearBins { min: -60.0, max: 60.0, step: 3.0 })?;
/// assert_eq!(pitch.len(), 41);
/// assert_eq!(pitch.default_std(), Some(6.0)); // two bins
/// # Ok::<(), ldl_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearBins {
    /// The first bin centre.
    pub min: f64,
    /// The last bin centre; `max − min` must be a whole number of steps.
    pub max: f64,
    /// The distance between neighbouring centres (> 0).
    pub step: f64,
}

/// The bins of a circular axis, by name: `period / step` centres `start, start + step, …,
/// start + period − step`; `start + period` is `start` again, so it is no extra bin.
///
/// ```
/// use ldl_core::{Axis, CircularBins};
/// let hour = Axis::circular_bins("hour", CircularBins { start: 0.0, period: 24.0, step: 1.0 })?;
/// assert_eq!(hour.len(), 24);
/// assert_eq!(hour.difference(23.0, 1.0), -2.0); // 23 h is two hours before 1 h
/// # Ok::<(), ldl_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircularBins {
    /// The first bin centre.
    pub start: f64,
    /// The length of one turn (360 for degrees, 24 for hours); a whole number of steps.
    pub period: f64,
    /// The distance between neighbouring centres (> 0).
    pub step: f64,
}

/// A label std in the axis unit, known to be finite and > 0 (see
/// [`Axis::with_default_std`]).
///
/// ```
/// use ldl_core::PositiveStd;
/// assert_eq!(PositiveStd::new(2.5)?.get(), 2.5);
/// assert!(PositiveStd::new(0.0).is_err());
/// assert!(PositiveStd::new(f64::NAN).is_err());
/// # Ok::<(), ldl_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct PositiveStd(f64);

impl PositiveStd {
    /// The std, if it is finite and > 0; otherwise an error saying so.
    pub fn new(std: f64) -> Result<PositiveStd> {
        if std.is_finite() && std > 0.0 {
            Ok(PositiveStd(std))
        } else {
            Err(Error::InvalidOption(format!(
                "a std must be finite and > 0, got {std}"
            )))
        }
    }

    /// The std as a number.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for PositiveStd {
    type Error = Error;
    fn try_from(std: f64) -> Result<PositiveStd> {
        PositiveStd::new(std)
    }
}

/// Largest mismatch, in steps, tolerated when `(max − min) / step` should be a whole number,
/// and between a spacing of explicit centres and their mean spacing for them to count as
/// evenly spaced (centres written out from `min + i · step` differ by rounding only).
const GRID_TOLERANCE: f64 = 1e-6;

impl Axis {
    /// A linear axis with bin centres `min, min + step, …, max`.
    ///
    /// The same as [`Axis::linear_bins`] with [`LinearBins`], which names the numbers at
    /// the call site (prefer it in new code: `(0, 360, 10)` means 37 bins here and 36 to
    /// [`Axis::circular`]).
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

    /// A linear axis with bins `min, min + step, …, max`, the numbers named (see the
    /// module documentation).
    ///
    /// `max − min` must be a whole number of steps. The default label std is two bins
    /// (`2 · step`); change it with [`Axis::with_default_std`].
    ///
    /// ```
    /// use ldl_core::{Axis, LinearBins, PositiveStd};
    /// let age = Axis::linear_bins("age", LinearBins { min: 0.0, max: 100.0, step: 1.0 })?
    ///     .with_unit("years")
    ///     .with_default_std(PositiveStd::new(3.0)?);
    /// assert_eq!((age.len(), age.default_std()), (101, Some(3.0)));
    /// # Ok::<(), ldl_core::Error>(())
    /// ```
    pub fn linear_bins(name: impl Into<String>, bins: LinearBins) -> Result<Axis> {
        let LinearBins { min, max, step } = bins;
        Axis::linear(name, min, max, step)
    }

    /// A linear axis with explicit, strictly increasing bin centres (at least two).
    ///
    /// Spacing may be uneven; the unit-free parts of the losses measure distances in
    /// multiples of the mean spacing ([`Axis::step`]). Evenly spaced centres make the
    /// same axis as [`Axis::linear`]. On uneven centres:
    ///
    /// - bin `k` reaches from the midpoint with its left neighbour to the midpoint with its
    ///   right one; the first and last bins reach out by half their spacing, so the axis
    ///   covers `[c₁ − (c₂ − c₁)/2, c_K + (c_K − c_{K−1})/2]`;
    /// - a value label becomes the Gaussian's probability mass over each bin, normalised
    ///   over the axis (see [`Axis::encode`]), so that the target's mean is the value up to
    ///   discretisation whatever the bin widths;
    /// - the default label std is two widths of the bin the value falls in
    ///   ([`Axis::default_std_at`]), so a label on a narrow bin is not spread over its
    ///   neighbours by the wide bins elsewhere; [`Axis::with_default_std`] sets one std
    ///   for every value instead.
    ///
    /// ```
    /// use ldl_core::Axis;
    /// let dose = Axis::from_centers("dose", vec![0.0, 1.0, 3.0, 7.0])?;
    /// assert!(!dose.is_evenly_spaced());
    /// assert_eq!(dose.default_std(), None); // depends on the value
    /// assert_eq!(dose.default_std_at(3.0), Some(6.0)); // bin [2, 5], width 3
    /// # Ok::<(), ldl_core::Error>(())
    /// ```
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
        check_span(&name, &centers)?;
        Axis::build(name, AxisKind::Linear, centers)
    }

    /// A circular axis of the given `period` with bins `start, start + step, …,
    /// start + period − step` (`period / step` bins; `start + period` is `start` again).
    ///
    /// The same as [`Axis::circular_bins`] with [`CircularBins`], which names the numbers
    /// at the call site (prefer it in new code: `(0, 360, 10)` means 36 bins here and 37 to
    /// [`Axis::linear`]).
    ///
    /// The default label std is two bins (`2 · step`); change it with
    /// [`Axis::with_default_std`].
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

    /// A circular axis of `period / step` bins from `start`, the numbers named (see the
    /// module documentation). At least three bins.
    ///
    /// The default label std is two bins (`2 · step`); change it with
    /// [`Axis::with_default_std`].
    ///
    /// ```
    /// use ldl_core::{Axis, CircularBins};
    /// let yaw = Axis::circular_bins("yaw", CircularBins { start: -180.0, period: 360.0, step: 3.0 })?
    ///     .with_unit("degrees");
    /// assert_eq!((yaw.len(), yaw.default_std()), (120, Some(6.0)));
    /// # Ok::<(), ldl_core::Error>(())
    /// ```
    pub fn circular_bins(name: impl Into<String>, bins: CircularBins) -> Result<Axis> {
        let CircularBins {
            start,
            period,
            step,
        } = bins;
        Axis::circular(name, start, period, step)
    }

    /// A categorical axis with one bin per named class (at least two, unique).
    ///
    /// It has no default label std: its labels are classes ([`crate::Label::Class`]) or
    /// explicit distributions, never values.
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
        let even = evenly_spaced(&centers);
        let mut axis = Axis {
            name,
            unit: String::new(),
            kind,
            centers,
            even,
            default_std: None,
            out_of_range: OutOfRange::Error,
        };
        if even && !axis.is_categorical() {
            axis.default_std = Some(2.0 * axis.step());
        }
        Ok(axis)
    }

    /// Sets the unit the axis is measured in (printed in logs and reports).
    pub fn with_unit(mut self, unit: impl Into<String>) -> Axis {
        self.unit = unit.into();
        self
    }

    /// Sets the label std used for every value given without one, in the axis unit.
    ///
    /// No effect on a categorical axis, whose labels are classes.
    pub fn with_default_std(mut self, std: PositiveStd) -> Axis {
        if !self.is_categorical() {
            self.default_std = Some(std.get());
        }
        self
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

    /// The label std used for every value given without one: the one set with
    /// [`Axis::with_default_std`], or two bins on an evenly spaced axis. `None` on a
    /// categorical axis, and on uneven centres without one set, where the default depends
    /// on the value ([`Axis::default_std_at`]).
    pub fn default_std(&self) -> Option<f64> {
        self.default_std
    }

    /// The label std a value given without one gets: [`Axis::default_std`] where there is
    /// one, else (uneven centres) two widths of the bin the value falls in, the nearest
    /// end bin for a value outside. `None` on a categorical axis.
    pub fn default_std_at(&self, value: f64) -> Option<f64> {
        if self.is_categorical() {
            return None;
        }
        Some(
            self.default_std
                .unwrap_or_else(|| 2.0 * self.bin_width_at(value)),
        )
    }

    /// True when the bin centres are evenly spaced: always on circular and categorical
    /// axes and those from [`Axis::linear`]; on explicit centres, when every spacing is
    /// within a millionth of a step of the mean.
    pub fn is_evenly_spaced(&self) -> bool {
        self.even
    }

    /// The `K + 1` bin edges of a linear axis: the midpoints between centres, and the
    /// outer centres moved out by half their spacing.
    pub(crate) fn bin_edges(&self) -> Vec<f64> {
        let c = &self.centers;
        let k = c.len();
        let mut edges = Vec::with_capacity(k + 1);
        edges.push(c[0] - (c[1] - c[0]) / 2.0);
        edges.extend(c.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0));
        edges.push(c[k - 1] + (c[k - 1] - c[k - 2]) / 2.0);
        edges
    }

    /// The width of the bin holding `value` (bins are `[lower edge, upper edge)`; a value
    /// outside the axis takes the nearest end bin).
    fn bin_width_at(&self, value: f64) -> f64 {
        let edges = self.bin_edges();
        let inner = &edges[1..edges.len() - 1];
        let k = inner.partition_point(|&e| e <= value);
        edges[k + 1] - edges[k]
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

/// Refuses centres so far apart that the bin edges (half a spacing beyond the outer
/// centres) or the bin widths would overflow to infinity.
fn check_span(axis: &str, centers: &[f64]) -> Result<()> {
    let (first, last) = (centers[0], centers[centers.len() - 1]);
    let span = last - first;
    if (2.0 * span).is_finite() && (first - span).is_finite() && (last + span).is_finite() {
        return Ok(());
    }
    Err(Error::axis(
        axis,
        format!(
            "bin centres from {first} to {last} span too wide a range to compute bin widths; \
             rescale the axis unit"
        ),
    ))
}

/// True when every spacing of the centres is within [`GRID_TOLERANCE`] steps of the mean
/// spacing.
fn evenly_spaced(centers: &[f64]) -> bool {
    let k = centers.len();
    let mean = (centers[k - 1] - centers[0]) / (k - 1) as f64;
    centers
        .windows(2)
        .all(|w| ((w[1] - w[0]) - mean).abs() <= GRID_TOLERANCE * mean)
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
    /// Absent on categorical axes and on uneven centres without a std set (their default
    /// follows the bin width).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_std: Option<f64>,
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
        let axis = axis
            .with_unit(record.unit)
            .with_out_of_range(record.out_of_range);
        // Categorical axes written by earlier versions carry a default std; it never had
        // an effect and is dropped.
        match record.default_std {
            Some(std) if !axis.is_categorical() => {
                let std = PositiveStd::new(std).map_err(|_| {
                    Error::axis(
                        &axis.name,
                        format!("default std must be finite and > 0, got {std}"),
                    )
                })?;
                Ok(axis.with_default_std(std))
            }
            _ => Ok(axis),
        }
    }
}
