//! Evaluation metrics as streaming accumulators over a dataset.
//!
//! Per axis: MAE of the expectation `μ(q)` (wrap-aware on circular axes), the ε-error of
//! the ChaLearn apparent-age challenges, CS(θ) for a list of θ, the mean predicted std,
//! the six LDL measures (PyLDL's conventions), and accuracy on categorical axes.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use ldl_core::{metrics::Metrics, Axis, Label, LabelSpace};
//! let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 4.0, 1.0)?])?;
//! let targets = space.targets(&[vec![Label::value_with_std(1.0, 1.0)]], DType::F32, &Device::Cpu)?;
//! // A prediction that puts everything on bin 3: μ(q) = 3, two years off.
//! let logits = Tensor::new(&[[-50f32, -50., -50., 50., -50.]], &Device::Cpu)?;
//! let mut metrics = Metrics::new(&space);
//! metrics.update(&[logits], &targets)?;
//! let report = metrics.report();
//! assert!((report.axes[0].mae.unwrap() - 2.0).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ldl_measures;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

pub use ldl_measures::{
    canberra, chebyshev, clark, cosine, intersection, kl_divergence, LdlMeasures, LDL_EPSILON,
};

use crate::axis::Axis;
use crate::error::{Error, Result};
use crate::label::argmax;
use crate::label_space::{AxisTargets, LabelSpace};

/// The CS thresholds used unless set otherwise, in bins: DLDL-v2 reports CS at 3, 5 and 8
/// years on 1-year bins.
pub const DEFAULT_CS_THRESHOLDS_IN_BINS: [f64; 3] = [3.0, 5.0, 8.0];

/// Accumulates the metrics of one axis, sample by sample.
#[derive(Debug, Clone)]
pub struct AxisMetrics {
    axis: Axis,
    cs_thresholds: Vec<f64>,
    samples: usize,
    absolute_error_sum: f64,
    epsilon_error_sum: f64,
    epsilon_samples: usize,
    cs_hits: Vec<usize>,
    predicted_std_sum: f64,
    correct: usize,
    ldl_sum: LdlMeasures,
}

/// One CS(θ) value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CumulativeScore {
    /// θ in the axis unit.
    pub threshold: f64,
    /// Share of samples with `|μ(q) − y| ≤ θ`, in `[0, 1]`.
    pub share: f64,
}

/// The metrics of one axis over everything seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AxisReport {
    /// The axis name.
    pub axis: String,
    /// The axis unit.
    pub unit: String,
    /// Number of samples.
    pub samples: usize,
    /// Mean absolute error of the expectation, in the axis unit (`None` on categorical
    /// axes).
    pub mae: Option<f64>,
    /// Mean ε-error `1 − exp(−(μ(q) − y)² / 2s²)` over the samples with a std `s > 0`
    /// (`None` if there were none, and on categorical axes).
    pub epsilon_error: Option<f64>,
    /// CS(θ) for each threshold (empty on categorical axes).
    pub cumulative_scores: Vec<CumulativeScore>,
    /// Mean predicted std `sqrt(v_q)`, the model's uncertainty (`None` on categorical
    /// axes).
    pub mean_predicted_std: Option<f64>,
    /// Share of samples whose most probable bin is the target's (categorical axes only).
    pub accuracy: Option<f64>,
    /// The six LDL measures against the target distributions.
    pub ldl: LdlMeasures,
}

impl AxisMetrics {
    /// An empty accumulator with CS thresholds of 3, 5 and 8 bins.
    pub fn new(axis: &Axis) -> AxisMetrics {
        let thresholds = DEFAULT_CS_THRESHOLDS_IN_BINS
            .iter()
            .map(|t| t * axis.step())
            .collect();
        AxisMetrics {
            axis: axis.clone(),
            cs_hits: vec![0; DEFAULT_CS_THRESHOLDS_IN_BINS.len()],
            cs_thresholds: thresholds,
            samples: 0,
            absolute_error_sum: 0.0,
            epsilon_error_sum: 0.0,
            epsilon_samples: 0,
            predicted_std_sum: 0.0,
            correct: 0,
            ldl_sum: LdlMeasures::default(),
        }
    }

    /// Sets the CS thresholds, in the axis unit (each finite and ≥ 0). Resets nothing
    /// else; call before the first update.
    pub fn with_cs_thresholds(mut self, thresholds: Vec<f64>) -> Result<AxisMetrics> {
        if let Some(t) = thresholds.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
            return Err(Error::InvalidOption(format!(
                "axis `{}`: CS threshold {t} must be finite and ≥ 0",
                self.axis.name()
            )));
        }
        self.cs_hits = vec![0; thresholds.len()];
        self.cs_thresholds = thresholds;
        Ok(self)
    }

    /// Adds one sample: the predicted distribution, and the target distribution, value
    /// and std (as in [`crate::EncodedLabel`]).
    pub fn update(
        &mut self,
        predicted: &[f64],
        target_pmf: &[f64],
        target_value: f64,
        target_std: f64,
    ) -> Result<()> {
        let name = self.axis.name();
        if predicted.len() != self.axis.len() || target_pmf.len() != self.axis.len() {
            return Err(Error::Shape(format!(
                "axis `{name}`: a prediction of {} bins and a target of {} bins for an axis of {}",
                predicted.len(),
                target_pmf.len(),
                self.axis.len()
            )));
        }
        check_prediction(name, predicted)?;
        self.samples += 1;
        self.ldl_sum
            .add(&LdlMeasures::between(target_pmf, predicted));
        match self.axis.moments(predicted)? {
            None => {
                if argmax(predicted).0 == argmax(target_pmf).0 {
                    self.correct += 1;
                }
            }
            Some((mean, variance)) => {
                let error = self.axis.difference(mean, target_value);
                self.absolute_error_sum += error.abs();
                if target_std > 0.0 {
                    self.epsilon_error_sum +=
                        1.0 - (-error * error / (2.0 * target_std * target_std)).exp();
                    self.epsilon_samples += 1;
                }
                for (hits, threshold) in self.cs_hits.iter_mut().zip(&self.cs_thresholds) {
                    if error.abs() <= *threshold {
                        *hits += 1;
                    }
                }
                self.predicted_std_sum += variance.sqrt();
            }
        }
        Ok(())
    }

    /// Every accumulator as numbers (counts, sums, the six LDL measures' sums), in a
    /// fixed order: the element-wise sum of two sets of samples' numbers, given to
    /// [`AxisMetrics::set_sums`], gives the metrics of both sets, so that ranks evaluating
    /// parts of a split can sum theirs.
    pub fn sums(&self) -> Vec<f64> {
        let ldl = &self.ldl_sum;
        let mut sums = vec![
            self.samples as f64,
            self.absolute_error_sum,
            self.epsilon_error_sum,
            self.epsilon_samples as f64,
            self.predicted_std_sum,
            self.correct as f64,
            ldl.chebyshev,
            ldl.clark,
            ldl.canberra,
            ldl.kl_divergence,
            ldl.cosine,
            ldl.intersection,
        ];
        sums.extend(self.cs_hits.iter().map(|h| *h as f64));
        sums
    }

    /// Replaces the accumulators with `sums`, laid out as [`AxisMetrics::sums`] lays
    /// them out for this axis and its CS thresholds.
    pub fn set_sums(&mut self, sums: &[f64]) -> Result<()> {
        let expected = 12 + self.cs_hits.len();
        if sums.len() != expected {
            return Err(Error::Shape(format!(
                "axis `{}`: {} metric sums, expected {expected}",
                self.axis.name(),
                sums.len()
            )));
        }
        let count = |x: f64| x.round().max(0.0) as usize;
        self.samples = count(sums[0]);
        self.absolute_error_sum = sums[1];
        self.epsilon_error_sum = sums[2];
        self.epsilon_samples = count(sums[3]);
        self.predicted_std_sum = sums[4];
        self.correct = count(sums[5]);
        self.ldl_sum = LdlMeasures {
            chebyshev: sums[6],
            clark: sums[7],
            canberra: sums[8],
            kl_divergence: sums[9],
            cosine: sums[10],
            intersection: sums[11],
        };
        for (hits, sum) in self.cs_hits.iter_mut().zip(&sums[12..]) {
            *hits = count(*sum);
        }
        Ok(())
    }

    /// The metrics over every sample seen so far.
    pub fn report(&self) -> AxisReport {
        let n = self.samples.max(1) as f64;
        let ordinal = !self.axis.is_categorical();
        let per_sample = |sum: f64| (ordinal && self.samples > 0).then_some(sum / n);
        AxisReport {
            axis: self.axis.name().to_string(),
            unit: self.axis.unit().to_string(),
            samples: self.samples,
            mae: per_sample(self.absolute_error_sum),
            epsilon_error: (ordinal && self.epsilon_samples > 0)
                .then(|| self.epsilon_error_sum / self.epsilon_samples as f64),
            cumulative_scores: if ordinal {
                self.cs_thresholds
                    .iter()
                    .zip(&self.cs_hits)
                    .map(|(threshold, hits)| CumulativeScore {
                        threshold: *threshold,
                        share: *hits as f64 / n,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            mean_predicted_std: per_sample(self.predicted_std_sum),
            accuracy: (!ordinal && self.samples > 0).then(|| self.correct as f64 / n),
            ldl: self.ldl_sum.scaled(1.0 / n),
        }
    }
}

fn check_prediction(axis: &str, predicted: &[f64]) -> Result<()> {
    match predicted.iter().position(|p| !p.is_finite()) {
        Some(i) => Err(Error::InvalidPrediction {
            axis: axis.to_string(),
            message: format!("the predicted distribution has a non-finite entry at bin {i}"),
        }),
        None => Ok(()),
    }
}

/// Accumulates the metrics of every axis of a label space.
#[derive(Debug, Clone)]
pub struct Metrics {
    space: LabelSpace,
    axes: Vec<AxisMetrics>,
}

/// The metrics of every axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// One report per axis, in label-space order.
    pub axes: Vec<AxisReport>,
}

impl MetricsReport {
    /// The report of the axis with this name.
    pub fn axis(&self, name: &str) -> Option<&AxisReport> {
        self.axes.iter().find(|a| a.axis == name)
    }
}

impl Metrics {
    /// Empty accumulators for every axis, with the default CS thresholds.
    pub fn new(space: &LabelSpace) -> Metrics {
        Metrics {
            space: space.clone(),
            axes: space.axes().iter().map(AxisMetrics::new).collect(),
        }
    }

    /// Sets the CS thresholds (axis unit) of one axis.
    pub fn with_cs_thresholds(mut self, axis: &str, thresholds: Vec<f64>) -> Result<Metrics> {
        let index = self.space.index_of(axis).ok_or_else(|| {
            Error::InvalidOption(format!("CS thresholds given for unknown axis `{axis}`"))
        })?;
        self.axes[index] = self.axes[index].clone().with_cs_thresholds(thresholds)?;
        Ok(self)
    }

    /// Adds a batch: one logits tensor `(batch, bins)` per head (see
    /// [`LabelSpace::heads`]; one per axis without joint groups) and the targets of every
    /// axis. Axes in a joint group are measured on their marginals.
    pub fn update(&mut self, logits: &[Tensor], targets: &[AxisTargets]) -> Result<()> {
        let distributions = self.space.axis_distributions(logits)?;
        if targets.len() != self.axes.len() {
            return Err(Error::Shape(format!(
                "got {} targets for {} axes",
                targets.len(),
                self.axes.len()
            )));
        }
        // Read and check the whole batch first, so that a bad batch leaves the
        // accumulators as they were.
        let mut columns = Vec::with_capacity(self.axes.len());
        for ((metrics, q), target) in self.axes.iter().zip(&distributions).zip(targets) {
            let name = metrics.axis.name();
            let predicted = q.to_vec2::<f64>()?;
            let to_f64 = |t: &Tensor| t.to_dtype(DType::F64);
            let target_pmf = to_f64(&target.pmf)?.to_vec2::<f64>()?;
            let values = to_f64(&target.value)?.to_vec1::<f64>()?;
            let stds = to_f64(&target.std)?.to_vec1::<f64>()?;
            let n = predicted.len();
            if target_pmf.len() != n || values.len() != n || stds.len() != n {
                return Err(Error::Shape(format!(
                    "axis `{name}`: {n} predictions but {} target distributions, {} values and {} stds",
                    target_pmf.len(),
                    values.len(),
                    stds.len()
                )));
            }
            for (i, row) in predicted.iter().enumerate() {
                check_prediction(name, row).map_err(|e| e.at_batch_row(i))?;
            }
            columns.push((predicted, target_pmf, values, stds));
        }
        for (metrics, (predicted, target_pmf, values, stds)) in self.axes.iter_mut().zip(columns) {
            for i in 0..predicted.len() {
                metrics.update(&predicted[i], &target_pmf[i], values[i], stds[i])?;
            }
        }
        Ok(())
    }

    /// The accumulator of one axis, for sample-level updates.
    pub fn axis_mut(&mut self, name: &str) -> Option<&mut AxisMetrics> {
        let index = self.space.index_of(name)?;
        self.axes.get_mut(index)
    }

    /// Every axis's accumulators, one axis after the other ([`AxisMetrics::sums`]).
    pub fn sums(&self) -> Vec<f64> {
        self.axes.iter().flat_map(AxisMetrics::sums).collect()
    }

    /// Replaces every axis's accumulators with `sums`, laid out as [`Metrics::sums`]
    /// lays them out.
    ///
    /// ```
    /// use ldl_core::{metrics::Metrics, Axis, LabelSpace};
    /// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
    /// let mut metrics = Metrics::new(&space);
    /// let mut sums = metrics.sums();
    /// sums[0] = 4.0; // samples
    /// sums[1] = 10.0; // absolute errors
    /// metrics.set_sums(&sums)?;
    /// assert_eq!(metrics.report().axes[0].mae, Some(2.5));
    /// assert!(metrics.set_sums(&sums[1..]).is_err());
    /// # Ok::<(), ldl_core::Error>(())
    /// ```
    pub fn set_sums(&mut self, sums: &[f64]) -> Result<()> {
        let expected: usize = self.axes.iter().map(|a| a.sums().len()).sum();
        if sums.len() != expected {
            return Err(Error::Shape(format!(
                "{} metric sums, expected {expected}",
                sums.len()
            )));
        }
        let mut offset = 0;
        for axis in &mut self.axes {
            let length = axis.sums().len();
            axis.set_sums(&sums[offset..offset + length])?;
            offset += length;
        }
        Ok(())
    }

    /// The metrics over everything seen so far.
    pub fn report(&self) -> MetricsReport {
        MetricsReport {
            axes: self.axes.iter().map(AxisMetrics::report).collect(),
        }
    }
}
