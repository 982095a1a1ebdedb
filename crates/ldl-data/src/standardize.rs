//! Feature standardisation, fitted on the training split only and stored with the model.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sample::{Input, Sample};

/// Per-feature `(x − mean) / std`, with the statistics of the samples it was fitted on.
///
/// A constant feature (std 0) is only centred, not scaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Feature names, in order.
    pub names: Vec<String>,
    /// Means.
    pub mean: Vec<f64>,
    /// Standard deviations (population, as scikit-learn's `StandardScaler`).
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Fits the statistics on feature samples (the training split).
    pub fn fit(names: &[String], samples: &[Sample]) -> Result<Standardizer> {
        let width = names.len();
        let mut sum = vec![0.0; width];
        let mut sum_squares = vec![0.0; width];
        let mut count = 0usize;
        for sample in samples {
            let features = features_of(sample, width)?;
            for (j, x) in features.iter().enumerate() {
                sum[j] += *x as f64;
                sum_squares[j] += (*x as f64) * (*x as f64);
            }
            count += 1;
        }
        if count == 0 {
            return Err(Error::EmptySplit(
                "train (nothing to fit the standardisation on)".into(),
            ));
        }
        let n = count as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sum_squares
            .iter()
            .zip(&mean)
            .map(|(s, m)| (s / n - m * m).max(0.0).sqrt())
            .collect();
        Ok(Standardizer {
            names: names.to_vec(),
            mean,
            std,
        })
    }

    /// Standardises one feature vector.
    pub fn apply(&self, features: &[f32]) -> Vec<f32> {
        features
            .iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(x, (m, s))| {
                let scale = if *s > 1e-12 { *s } else { 1.0 };
                ((*x as f64 - m) / scale) as f32
            })
            .collect()
    }

    /// Standardises the features of every sample in place.
    pub fn apply_to(&self, samples: &mut [Sample]) -> Result<()> {
        for sample in samples {
            let standardised = self.apply(features_of(sample, self.names.len())?);
            sample.input = Input::Features(standardised);
        }
        Ok(())
    }
}

fn features_of(sample: &Sample, width: usize) -> Result<&[f32]> {
    match &sample.input {
        Input::Features(features) if features.len() == width => Ok(features),
        Input::Features(features) => Err(Error::Spec(format!(
            "{}: {} features, expected {width}",
            sample.origin,
            features.len()
        ))),
        Input::Unencoded(_) => Err(Error::Spec(format!(
            "{}: standardisation needs encoded features (this row holds text or missing \
             values; a FeatureEncoder makes them numbers)",
            sample.origin
        ))),
        Input::ImagePath(_) | Input::ImageBytes(_) | Input::Synthetic { .. } => {
            Err(Error::Spec(format!(
                "{}: standardisation needs feature inputs, not images",
                sample.origin
            )))
        }
    }
}
