//! The baselines a trained model must beat, computed from the training split alone: the
//! training-mean predictor on ordered axes (its MAE), the majority-class predictor on
//! categorical ones (its accuracy) and, on axes whose targets are explicit distributions,
//! the training-mean distribution (its six LDL measures), each scored on the validation
//! and test splits.

use ldl_core::metrics::LdlMeasures;
use ldl_core::{EncodedLabel, Label, LabelSpace};
use ldl_data::{Sample, Splits};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::records::{MajorityClass, MeanDistribution, MeanPredictor};

/// Calls `visit` with each sample's encoded labels (one per axis), one sample at a time,
/// errors naming the sample. Never the whole split at once: an axis of 10⁶ bins over 305
/// training rows is 2.4 GB of f64 distributions, where one sample's is 8 MB.
fn each_encoded(
    space: &LabelSpace,
    samples: &[Sample],
    visit: impl FnMut(Vec<EncodedLabel>),
) -> Result<()> {
    each_encoded_at(space, samples, 0..samples.len(), visit)
}

/// [`each_encoded`] for the samples at `rows` only (indices into `samples`).
pub(crate) fn each_encoded_at(
    space: &LabelSpace,
    samples: &[Sample],
    rows: impl IntoIterator<Item = usize>,
    mut visit: impl FnMut(Vec<EncodedLabel>),
) -> Result<()> {
    for index in rows {
        let encoded = space
            .encode(&samples[index].labels)
            .map_err(|e| e.at_sample(index))?;
        visit(encoded);
    }
    Ok(())
}

/// Every axis's target values (ordered axes) or target classes (categorical axes, the
/// most probable bin of the target), sample by sample, per axis.
fn axis_values(space: &LabelSpace, samples: &[Sample]) -> Result<Vec<Vec<f64>>> {
    let mut values = vec![Vec::with_capacity(samples.len()); space.axes().len()];
    each_encoded(space, samples, |encoded| {
        for ((axis, label), values) in space.axes().iter().zip(encoded).zip(&mut values) {
            values.push(if axis.is_categorical() {
                label.most_probable_bin() as f64
            } else {
                label.value
            });
        }
    })?;
    Ok(values)
}

/// A constant prediction fitted on the training split alone: what a trained model must
/// beat on an axis.
///
/// ```
/// use ldl_core::{Axis, Label, LabelSpace};
/// use ldl_data::Dataset;
/// use ldl_train::Baseline;
/// let space = LabelSpace::new(vec![Axis::linear("size", 0.0, 10.0, 1.0)?])?;
/// let labels = |values: &[f64]| values.iter().map(|&v| vec![Label::value(v)]).collect();
/// let train = Dataset::from_features(&space, vec![vec![0.0]; 3], labels(&[2.0, 4.0, 9.0]))?;
/// let test = Dataset::from_features(&space, vec![vec![0.0]; 2], labels(&[5.0, 7.0]))?;
/// let baselines = Baseline::fit(&space, &train)?;
/// assert_eq!(baselines, [Baseline::Mean { axis: "size".into(), value: 5.0 }]);
/// // Its MAE on the test samples: (|5 − 5| + |7 − 5|) / 2.
/// assert_eq!(Baseline::score(&baselines, &space, &test)?, [Some(1.0)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Baseline {
    /// The training mean target value of a linear axis, or the circular mean of a circular
    /// one, predicted for every sample; scored by its MAE.
    Mean {
        /// The axis.
        axis: String,
        /// The constant prediction.
        value: f64,
    },
    /// The most frequent training class of a categorical axis (the first of those tied;
    /// a sample's class is its label's class, or its distribution's most probable one);
    /// scored by its accuracy.
    MajorityClass {
        /// The axis.
        axis: String,
        /// The class's name.
        class: String,
        /// The class's index among the axis's classes.
        index: usize,
    },
}

impl Baseline {
    /// The baseline of every axis, fitted on `train` (none when `train` is empty).
    pub fn fit(space: &LabelSpace, train: &[Sample]) -> Result<Vec<Baseline>> {
        let values = axis_values(space, train)?;
        let mut out = Vec::new();
        for (axis, values) in space.axes().iter().zip(&values) {
            if values.is_empty() {
                continue;
            }
            let name = axis.name().to_string();
            out.push(match axis.kind() {
                ldl_core::AxisKind::Categorical { classes } => {
                    let index = majority(values, classes.len());
                    Baseline::MajorityClass {
                        axis: name,
                        class: classes[index].clone(),
                        index,
                    }
                }
                _ => Baseline::Mean {
                    axis: name,
                    value: mean_value(axis, values),
                },
            });
        }
        Ok(out)
    }

    /// The axis the baseline predicts.
    pub fn axis(&self) -> &str {
        match self {
            Baseline::Mean { axis, .. } | Baseline::MajorityClass { axis, .. } => axis,
        }
    }

    /// Each baseline's score on `samples`, in order: the MAE of a [`Baseline::Mean`], the
    /// accuracy of a [`Baseline::MajorityClass`]; `None` where `samples` is empty.
    pub fn score(
        baselines: &[Baseline],
        space: &LabelSpace,
        samples: &[Sample],
    ) -> Result<Vec<Option<f64>>> {
        let values = axis_values(space, samples)?;
        baselines
            .iter()
            .map(|baseline| {
                let a = space.index_of(baseline.axis()).ok_or_else(|| {
                    Error::Usage(format!(
                        "the baseline of axis `{}` does not belong to this label space",
                        baseline.axis()
                    ))
                })?;
                let values = &values[a];
                if values.is_empty() {
                    return Ok(None);
                }
                let n = values.len() as f64;
                Ok(Some(match baseline {
                    Baseline::Mean { value, .. } => {
                        let axis = &space.axes()[a];
                        values
                            .iter()
                            .map(|&v| axis.difference(v, *value).abs())
                            .sum::<f64>()
                            / n
                    }
                    Baseline::MajorityClass { index, .. } => {
                        values.iter().filter(|&&c| c as usize == *index).count() as f64 / n
                    }
                }))
            })
            .collect()
    }
}

/// The mean of an ordered axis's values: the circular mean on a circular axis.
fn mean_value(axis: &ldl_core::Axis, values: &[f64]) -> f64 {
    match axis.period() {
        Some(period) => {
            let start = axis.centers()[0];
            let angle = |v: f64| (v - start) / period * std::f64::consts::TAU;
            let (sin, cos) = values.iter().fold((0.0, 0.0), |(s, c), &v| {
                (s + angle(v).sin(), c + angle(v).cos())
            });
            axis.canonical_value(start + sin.atan2(cos) / std::f64::consts::TAU * period)
        }
        None => values.iter().sum::<f64>() / values.len() as f64,
    }
}

/// The most frequent of `classes` classes in `values` (the first of those tied:
/// `max_by_key` would keep the last).
fn majority(values: &[f64], classes: usize) -> usize {
    let mut counts = vec![0usize; classes];
    for &class in values {
        counts[class as usize] += 1;
    }
    let top = counts.iter().max().copied().unwrap_or(0);
    counts.iter().position(|&c| c == top).unwrap_or(0)
}

/// The baselines fitted on the training split, scored on the validation and test splits.
fn fit_and_score(space: &LabelSpace, splits: &Splits) -> Result<Vec<(Baseline, f64, Option<f64>)>> {
    let baselines = Baseline::fit(space, &splits.train)?;
    let validation = Baseline::score(&baselines, space, &splits.validation)?;
    let test = Baseline::score(&baselines, space, &splits.test)?;
    Ok(baselines
        .into_iter()
        .zip(validation)
        .zip(test)
        .map(|((b, v), t)| (b, v.unwrap_or(f64::NAN), t))
        .collect())
}

/// [`MeanPredictor`] for every linear and circular axis.
pub(crate) fn mean_predictor(space: &LabelSpace, splits: &Splits) -> Result<Vec<MeanPredictor>> {
    Ok(fit_and_score(space, splits)?
        .into_iter()
        .filter_map(|(baseline, validation_mae, test_mae)| match baseline {
            Baseline::Mean { axis, value } => Some(MeanPredictor {
                axis,
                value,
                validation_mae,
                test_mae,
            }),
            Baseline::MajorityClass { .. } => None,
        })
        .collect())
}

/// Every axis's mean target distribution over `samples` (the encoded pmfs the model is
/// trained against; all zeros when there are none), summed in sample order.
pub(crate) fn mean_pmfs(space: &LabelSpace, samples: &[Sample]) -> Result<Vec<Vec<f64>>> {
    let mut sums: Vec<Vec<f64>> = space.axes().iter().map(|a| vec![0.0; a.len()]).collect();
    each_encoded(space, samples, |encoded| {
        for (sum, label) in sums.iter_mut().zip(encoded) {
            sum.iter_mut().zip(&label.pmf).for_each(|(s, p)| *s += p);
        }
    })?;
    let n = samples.len().max(1) as f64;
    sums.iter_mut().flatten().for_each(|s| *s /= n);
    Ok(sums)
}

/// The target distributions of the axes in `axes` (by position), sample by sample; the
/// other axes' lists are left empty.
fn axis_pmfs(space: &LabelSpace, samples: &[Sample], axes: &[usize]) -> Result<Vec<Vec<Vec<f64>>>> {
    let mut pmfs = vec![Vec::new(); space.axes().len()];
    each_encoded(space, samples, |encoded| {
        for (a, label) in encoded.into_iter().enumerate() {
            if axes.contains(&a) {
                pmfs[a].push(label.pmf);
            }
        }
    })?;
    Ok(pmfs)
}

/// The six measures of `predicted` against each target, averaged over the targets
/// (`None` when there are none).
fn mean_measures(targets: &[Vec<f64>], predicted: &[f64]) -> Option<LdlMeasures> {
    if targets.is_empty() {
        return None;
    }
    let all: Vec<LdlMeasures> = targets
        .iter()
        .map(|t| LdlMeasures::between(t, predicted))
        .collect();
    let mean = |f: fn(&LdlMeasures) -> f64| all.iter().map(f).sum::<f64>() / all.len() as f64;
    Some(LdlMeasures {
        chebyshev: mean(|m| m.chebyshev),
        clark: mean(|m| m.clark),
        canberra: mean(|m| m.canberra),
        kl_divergence: mean(|m| m.kl_divergence),
        cosine: mean(|m| m.cosine),
        intersection: mean(|m| m.intersection),
    })
}

/// [`MeanDistribution`] for every axis whose training labels are all explicit
/// distributions: the mean of the training targets, scored against the validation and
/// test targets.
pub(crate) fn mean_distribution(
    space: &LabelSpace,
    splits: &Splits,
) -> Result<Vec<MeanDistribution>> {
    let explicit = |a: usize| {
        !splits.train.is_empty()
            && splits
                .train
                .iter()
                .all(|s| matches!(s.labels.get(a), Some(Label::Distribution(_))))
    };
    let explicit_axes: Vec<usize> = (0..space.axes().len()).filter(|&a| explicit(a)).collect();
    if explicit_axes.is_empty() {
        return Ok(Vec::new());
    }
    let mut means = mean_pmfs(space, &splits.train)?;
    let validation = axis_pmfs(space, &splits.validation, &explicit_axes)?;
    let test = axis_pmfs(space, &splits.test, &explicit_axes)?;
    let mut out = Vec::new();
    for &a in &explicit_axes {
        let axis = &space.axes()[a];
        let distribution = std::mem::take(&mut means[a]);
        out.push(MeanDistribution {
            axis: axis.name().to_string(),
            validation: mean_measures(&validation[a], &distribution).unwrap_or_else(nan_measures),
            test: mean_measures(&test[a], &distribution),
            distribution,
        });
    }
    Ok(out)
}

/// Measures of nothing (an empty validation split, which the splits refuse anyway).
fn nan_measures() -> LdlMeasures {
    LdlMeasures {
        chebyshev: f64::NAN,
        clark: f64::NAN,
        canberra: f64::NAN,
        kl_divergence: f64::NAN,
        cosine: f64::NAN,
        intersection: f64::NAN,
    }
}

/// [`MajorityClass`] for every categorical axis.
pub(crate) fn majority_class(space: &LabelSpace, splits: &Splits) -> Result<Vec<MajorityClass>> {
    Ok(fit_and_score(space, splits)?
        .into_iter()
        .filter_map(
            |(baseline, validation_accuracy, test_accuracy)| match baseline {
                Baseline::MajorityClass { axis, class, .. } => Some(MajorityClass {
                    axis,
                    class,
                    validation_accuracy,
                    test_accuracy,
                }),
                Baseline::Mean { .. } => None,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use ldl_core::{Axis, Label};
    use ldl_data::{Input, SampleOrigin};

    use super::*;

    fn space() -> LabelSpace {
        LabelSpace::new(vec![
            Axis::categorical("colour", ["red", "green", "blue"]).unwrap(),
            Axis::linear("size", 0.0, 10.0, 1.0).unwrap(),
        ])
        .unwrap()
    }

    fn samples(rows: &[(usize, f64)]) -> Vec<Sample> {
        let file = Arc::new(PathBuf::from("rows.csv"));
        rows.iter()
            .enumerate()
            .map(|(i, &(class, size))| Sample {
                input: Input::Features(vec![0.0]),
                labels: vec![Label::Class(class), Label::value(size)],
                group: None,
                split: None,
                origin: SampleOrigin::line(file.clone(), i + 2),
            })
            .collect()
    }

    #[test]
    fn the_majority_class_is_the_most_frequent_training_class_scored_by_its_share() {
        let splits = Splits {
            train: samples(&[(1, 2.0), (1, 4.0), (0, 6.0), (2, 8.0), (1, 5.0)]),
            validation: samples(&[(1, 1.0), (0, 3.0), (1, 5.0), (2, 7.0)]),
            test: Vec::new(),
        };
        let majority = majority_class(&space(), &splits).unwrap();
        assert_eq!(
            majority,
            [MajorityClass {
                axis: "colour".into(),
                class: "green".into(),
                validation_accuracy: 0.5,
                test_accuracy: None,
            }]
        );
        // The training mean of size is 5; its validation MAE (4 + 2 + 0 + 2) / 4 = 2.
        let mean = mean_predictor(&space(), &splits).unwrap();
        assert_eq!(mean.len(), 1);
        assert!((mean[0].value - 5.0).abs() < 1e-12);
        assert!((mean[0].validation_mae - 2.0).abs() < 1e-12);
    }

    /// Samples of one three-bin axis with explicit distributions.
    fn shares(rows: &[[f64; 3]]) -> Vec<Sample> {
        let file = Arc::new(PathBuf::from("shares.csv"));
        rows.iter()
            .enumerate()
            .map(|(i, pmf)| Sample {
                input: Input::Features(vec![0.0]),
                labels: vec![Label::Distribution(pmf.to_vec())],
                group: None,
                split: None,
                origin: SampleOrigin::line(file.clone(), i + 2),
            })
            .collect()
    }

    #[test]
    fn the_mean_distribution_is_scored_with_the_six_measures() {
        let space = LabelSpace::new(vec![Axis::linear("share", 0.0, 2.0, 1.0).unwrap()]).unwrap();
        let splits = Splits {
            train: shares(&[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]),
            validation: shares(&[[0.2, 0.2, 0.6], [0.4, 0.4, 0.2]]),
            test: Vec::new(),
        };
        let baseline = mean_distribution(&space, &splits).unwrap();
        assert_eq!(baseline.len(), 1);
        let b = &baseline[0];
        // The training mean, entry by entry.
        let v = [0.3, 0.45, 0.25];
        for (got, want) in b.distribution.iter().zip(v) {
            assert!((got - want).abs() < 1e-12, "{:?}", b.distribution);
        }
        // Each measure by its formula on the two validation targets, then averaged.
        let (u1, u2) = ([0.2, 0.2, 0.6], [0.4, 0.4, 0.2]);
        let chebyshev = (0.35 + 0.1) / 2.0;
        let intersection = ((1.0 - 0.5 * (0.1 + 0.25 + 0.35)) + (1.0 - 0.5 * 0.2)) / 2.0;
        let sum = |f: &dyn Fn(f64, f64) -> f64, u: [f64; 3]| -> f64 {
            u.iter().zip(v).map(|(a, b)| f(*a, b)).sum()
        };
        let pair = |f: &dyn Fn(f64, f64) -> f64| (sum(f, u1) + sum(f, u2)) / 2.0;
        let kl = pair(&|a, b| a * (a / b).ln());
        let canberra = pair(&|a, b| (a - b).abs() / (a + b));
        let clark = (sum(&|a, b| ((a - b) / (a + b)).powi(2), u1).sqrt()
            + sum(&|a, b| ((a - b) / (a + b)).powi(2), u2).sqrt())
            / 2.0;
        let norm_v = (0.3f64 * 0.3 + 0.45 * 0.45 + 0.25 * 0.25).sqrt();
        let cosine = ((0.2 * 0.3 + 0.2 * 0.45 + 0.6 * 0.25) / (0.44f64.sqrt() * norm_v)
            + (0.4 * 0.3 + 0.4 * 0.45 + 0.2 * 0.25) / (0.36f64.sqrt() * norm_v))
            / 2.0;
        let m = &b.validation;
        for (got, want) in [
            (m.chebyshev, chebyshev),
            (m.clark, clark),
            (m.canberra, canberra),
            (m.kl_divergence, kl),
            (m.cosine, cosine),
            (m.intersection, intersection),
        ] {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}: {m:?}");
        }
        assert_eq!(b.test, None);
        // Axes of values or classes get no mean distribution.
        let other = Splits {
            train: samples(&[(1, 2.0)]),
            validation: samples(&[(1, 2.0)]),
            test: Vec::new(),
        };
        assert!(mean_distribution(&super::tests::space(), &other)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_tie_goes_to_the_first_class() {
        let splits = Splits {
            train: samples(&[(2, 1.0), (1, 1.0), (2, 1.0), (1, 1.0)]),
            validation: samples(&[(1, 1.0)]),
            test: samples(&[(2, 1.0), (2, 1.0)]),
        };
        let majority = &majority_class(&space(), &splits).unwrap()[0];
        assert_eq!(majority.class, "green");
        assert_eq!(majority.validation_accuracy, 1.0);
        assert_eq!(majority.test_accuracy, Some(0.0));
    }
}
