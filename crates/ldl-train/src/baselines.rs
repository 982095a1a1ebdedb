//! The baselines a trained model must beat, computed from the training split alone: the
//! training-mean predictor on ordered axes (its MAE), the majority-class predictor on
//! categorical ones (its accuracy) and, on axes whose targets are explicit distributions,
//! the training-mean distribution (its six LDL measures), each scored on the validation
//! and test splits.

use candle_core::DType;
use ldl_core::metrics::LdlMeasures;
use ldl_core::{Label, LabelSpace};
use ldl_data::{Sample, Splits};

use crate::error::Result;
use crate::records::{MajorityClass, MeanDistribution, MeanPredictor};

/// Every axis's target values (ordered axes) or target classes (categorical axes, the
/// most probable bin of the target), sample by sample, per axis.
fn axis_values(space: &LabelSpace, samples: &[Sample]) -> Result<Vec<Vec<f64>>> {
    if samples.is_empty() {
        return Ok(vec![Vec::new(); space.axes().len()]);
    }
    let labels: Vec<Vec<ldl_core::Label>> = samples.iter().map(|s| s.labels.clone()).collect();
    let targets = space.targets(&labels, DType::F64, &candle_core::Device::Cpu)?;
    space
        .axes()
        .iter()
        .zip(&targets)
        .map(|(axis, t)| {
            if axis.is_categorical() {
                let classes = t.pmf.argmax_keepdim(1)?.flatten_all()?.to_vec1::<u32>()?;
                Ok(classes.into_iter().map(f64::from).collect())
            } else {
                Ok(t.value.to_vec1::<f64>()?)
            }
        })
        .collect()
}

/// [`axis_values`] of the training, validation and test splits.
fn split_values(space: &LabelSpace, splits: &Splits) -> Result<[Vec<Vec<f64>>; 3]> {
    Ok([
        axis_values(space, &splits.train)?,
        axis_values(space, &splits.validation)?,
        axis_values(space, &splits.test)?,
    ])
}

/// [`MeanPredictor`] for every linear and circular axis.
pub(crate) fn mean_predictor(space: &LabelSpace, splits: &Splits) -> Result<Vec<MeanPredictor>> {
    let [train, validation, test] = split_values(space, splits)?;
    let mut out = Vec::new();
    for (a, axis) in space.axes().iter().enumerate() {
        if axis.is_categorical() || train[a].is_empty() {
            continue;
        }
        let n = train[a].len() as f64;
        let value = match axis.period() {
            Some(period) => {
                let start = axis.centers()[0];
                let angle = |v: f64| (v - start) / period * std::f64::consts::TAU;
                let (sin, cos) = train[a].iter().fold((0.0, 0.0), |(s, c), &v| {
                    (s + angle(v).sin(), c + angle(v).cos())
                });
                axis.canonical_value(start + sin.atan2(cos) / std::f64::consts::TAU * period)
            }
            None => train[a].iter().sum::<f64>() / n,
        };
        let mae = |values: &[f64]| {
            (!values.is_empty()).then(|| {
                values
                    .iter()
                    .map(|&v| axis.difference(v, value).abs())
                    .sum::<f64>()
                    / values.len() as f64
            })
        };
        out.push(MeanPredictor {
            axis: axis.name().to_string(),
            value,
            validation_mae: mae(&validation[a]).unwrap_or(f64::NAN),
            test_mae: mae(&test[a]),
        });
    }
    Ok(out)
}

/// Every axis's target distributions (the encoded pmfs the model is trained against),
/// sample by sample, per axis.
fn axis_pmfs(space: &LabelSpace, samples: &[Sample]) -> Result<Vec<Vec<Vec<f64>>>> {
    if samples.is_empty() {
        return Ok(vec![Vec::new(); space.axes().len()]);
    }
    let labels: Vec<Vec<Label>> = samples.iter().map(|s| s.labels.clone()).collect();
    let targets = space.targets(&labels, DType::F64, &candle_core::Device::Cpu)?;
    targets
        .iter()
        .map(|t| Ok(t.pmf.to_vec2::<f64>()?))
        .collect()
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
    if !(0..space.axes().len()).any(explicit) {
        return Ok(Vec::new());
    }
    let train = axis_pmfs(space, &splits.train)?;
    let validation = axis_pmfs(space, &splits.validation)?;
    let test = axis_pmfs(space, &splits.test)?;
    let mut out = Vec::new();
    for (a, axis) in space.axes().iter().enumerate() {
        if !explicit(a) {
            continue;
        }
        let n = train[a].len() as f64;
        let distribution: Vec<f64> = (0..axis.len())
            .map(|k| train[a].iter().map(|pmf| pmf[k]).sum::<f64>() / n)
            .collect();
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
    let [train, validation, test] = split_values(space, splits)?;
    let mut out = Vec::new();
    for (a, axis) in space.axes().iter().enumerate() {
        let ldl_core::AxisKind::Categorical { classes } = axis.kind() else {
            continue;
        };
        if train[a].is_empty() {
            continue;
        }
        let mut counts = vec![0usize; classes.len()];
        for &class in &train[a] {
            counts[class as usize] += 1;
        }
        // The first of the most frequent: `max_by_key` would keep the last of a tie.
        let top = counts.iter().max().copied().unwrap_or(0);
        let majority = counts.iter().position(|&c| c == top).unwrap_or(0);
        let accuracy = |values: &[f64]| {
            (!values.is_empty()).then(|| {
                let hits = values.iter().filter(|&&c| c as usize == majority).count();
                hits as f64 / values.len() as f64
            })
        };
        out.push(MajorityClass {
            axis: axis.name().to_string(),
            class: classes[majority].clone(),
            validation_accuracy: accuracy(&validation[a]).unwrap_or(f64::NAN),
            test_accuracy: accuracy(&test[a]),
        });
    }
    Ok(out)
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
