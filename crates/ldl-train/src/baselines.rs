//! The baselines a trained model must beat, computed from the training split alone: the
//! training-mean predictor on ordered axes (its MAE) and the majority-class predictor on
//! categorical ones (its accuracy), each scored on the validation and test splits.

use candle_core::DType;
use ldl_core::LabelSpace;
use ldl_data::{Sample, Splits};

use crate::error::Result;
use crate::records::{MajorityClass, MeanPredictor};

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
