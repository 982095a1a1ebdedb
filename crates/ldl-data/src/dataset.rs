//! Samples held in memory, for programs that bring their own data rather than a file.

use std::path::PathBuf;
use std::sync::Arc;

use ldl_core::{Label, LabelSpace};

use crate::error::{Error, Result};
use crate::sample::{Input, Sample, SampleOrigin};
use crate::split::{split_by_fractions, Splits};

/// The name in-memory samples report as their file in messages (`in-memory data row 3`).
pub const IN_MEMORY: &str = "in-memory data";

/// A set of samples: what a training loop and an evaluation read. It dereferences to
/// `[Sample]`, so it goes wherever a slice of samples does.
///
/// ```
/// use ldl_core::{Axis, Label, LabelSpace};
/// use ldl_data::Dataset;
/// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
/// let features = vec![vec![0.5, 1.0], vec![0.1, 3.0], vec![0.7, 2.0]];
/// let labels = vec![vec![Label::value(31.0)], vec![Label::value(54.0)], vec![Label::value(40.0)]];
/// let data = Dataset::from_features(&space, features, labels)?;
/// assert_eq!(data.len(), 3);
///
/// // Labels are checked against the label space at once, naming the row.
/// let err = Dataset::from_features(&space, vec![vec![0.0]], vec![vec![Label::Class(1)]]);
/// assert!(err.unwrap_err().to_string().contains("in-memory data row 0"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    samples: Vec<Sample>,
}

impl Dataset {
    /// Feature vectors (`features[i]`, all of one length, finite) with their labels
    /// (`labels[i]`: one per axis of `space`, in its order). Every label is encoded once
    /// here, so a label that does not fit its axis is refused now, naming its row, rather
    /// than in the middle of training.
    pub fn from_features(
        space: &LabelSpace,
        features: Vec<Vec<f32>>,
        labels: Vec<Vec<Label>>,
    ) -> Result<Dataset> {
        if features.len() != labels.len() {
            return Err(Error::Spec(format!(
                "{} feature rows but {} label rows; give one label row per feature row",
                features.len(),
                labels.len()
            )));
        }
        let file = Arc::new(PathBuf::from(IN_MEMORY));
        let width = features.first().map_or(0, Vec::len);
        let mut samples = Vec::with_capacity(features.len());
        for (row, (x, y)) in features.into_iter().zip(labels).enumerate() {
            let origin = SampleOrigin {
                file: file.clone(),
                line: 0,
                row: Some(row as u64),
                record: Some(row as u64),
            };
            if x.len() != width {
                return Err(Error::Spec(format!(
                    "{origin}: {} features where row 0 has {width}; every row needs the same \
                     features",
                    x.len()
                )));
            }
            if let Some(column) = x.iter().position(|v| !v.is_finite()) {
                return Err(Error::Spec(format!(
                    "{origin}: feature {column} is {}; replace or drop the row",
                    x[column]
                )));
            }
            space
                .encode(&y)
                .map_err(|e| Error::Spec(format!("{origin}: {e}")))?;
            samples.push(Sample {
                input: Input::Features(x),
                labels: y,
                group: None,
                split: None,
                origin,
            });
        }
        Ok(Dataset { samples })
    }

    /// Samples built by the caller (image paths, groups, their own origins), as they are.
    pub fn from_samples(samples: Vec<Sample>) -> Dataset {
        Dataset { samples }
    }

    /// The samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The samples, owned.
    pub fn into_samples(self) -> Vec<Sample> {
        self.samples
    }

    /// Splits the samples into train, validation and test by seeded fractions (samples of
    /// one group stay together; see [`split_by_fractions`]).
    pub fn split(self, validation: f64, test: f64, seed: u64) -> Result<Splits> {
        split_by_fractions(self.samples, validation, test, seed)
    }
}

impl std::ops::Deref for Dataset {
    type Target = [Sample];

    fn deref(&self) -> &[Sample] {
        &self.samples
    }
}

impl From<Vec<Sample>> for Dataset {
    fn from(samples: Vec<Sample>) -> Self {
        Dataset { samples }
    }
}

#[cfg(test)]
mod tests {
    use ldl_core::Axis;

    use super::*;

    fn space() -> LabelSpace {
        LabelSpace::new(vec![Axis::linear("y", 0.0, 10.0, 1.0).unwrap()]).unwrap()
    }

    fn message(result: Result<Dataset>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn rows_of_another_width_non_finite_features_and_count_mismatches_are_refused_by_row() {
        let y = |v: f64| vec![Label::value(v)];
        let err = message(Dataset::from_features(
            &space(),
            vec![vec![1.0, 2.0], vec![1.0]],
            vec![y(1.0), y(2.0)],
        ));
        assert!(
            err.contains("in-memory data row 1: 1 features where row 0 has 2"),
            "{err}"
        );
        let err = message(Dataset::from_features(
            &space(),
            vec![vec![1.0], vec![f32::NAN]],
            vec![y(1.0), y(2.0)],
        ));
        assert!(
            err.contains("in-memory data row 1: feature 0 is NaN"),
            "{err}"
        );
        let err = message(Dataset::from_features(&space(), vec![vec![1.0]], vec![]));
        assert!(err.contains("1 feature rows but 0 label rows"), "{err}");
        let err = message(Dataset::from_features(
            &space(),
            vec![vec![1.0]],
            vec![vec![Label::value(1.0), Label::value(2.0)]],
        ));
        assert!(err.contains("in-memory data row 0"), "{err}");
    }

    #[test]
    fn samples_keep_their_features_labels_and_row() {
        let data = Dataset::from_features(
            &space(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]],
            vec![
                vec![Label::value(2.0)],
                vec![Label::value_with_std(5.0, 0.5)],
            ],
        )
        .unwrap();
        assert_eq!(data[1].input, Input::Features(vec![3.0, 4.0]));
        assert_eq!(data[1].labels, [Label::value_with_std(5.0, 0.5)]);
        assert_eq!(data[1].origin.to_string(), "in-memory data row 1");
        let splits = data.split(0.5, 0.0, 1).unwrap();
        assert_eq!((splits.train.len(), splits.validation.len()), (1, 1));
    }
}
