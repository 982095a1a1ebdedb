//! Gaussian noise added to training features: the tabular counterpart of image
//! augmentation, and a regulariser.
//!
//! Training a model on inputs with small added Gaussian noise is, to first order,
//! training it with a penalty on how fast its output changes with its input (Bishop,
//! "Training with noise is equivalent to Tikhonov regularization", 1995): for a linear
//! model, exactly ridge regression's penalty. An MLP trained on a few hundred rows fits
//! curvature the data cannot support; noise in the (standardised) inputs pulls it towards
//! the smooth, near-linear function that ridge regression finds, without taking away the
//! non-linear fit where the data asks for one. docs/benchmarks.md has the measurements
//! behind the default.
//!
//! Each sample's noise is drawn from `(seed, epoch, sample index)` alone, so it does not
//! depend on the batch size, the order within an epoch or the number of data-parallel
//! ranks, and a resumed run draws what an uninterrupted one would.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::seeds::mix;

/// The largest accepted noise std: ten standard deviations of a standardised feature
/// already drown every feature; more is a typo.
pub const MAX_FEATURE_NOISE: f32 = 10.0;

/// Zero-mean Gaussian noise of a fixed std added to every feature of every training
/// sample, drawn afresh each epoch.
///
/// ```
/// use ldl_data::FeatureNoise;
/// let noise = FeatureNoise::new(0.3, 7)?;
/// let mut a = vec![1.0f32; 4];
/// let mut b = a.clone();
/// noise.add(&mut a, 0, 12);
/// noise.add(&mut b, 0, 12);
/// assert_eq!(a, b); // the same epoch and sample: the same draw
/// assert!(a.iter().any(|x| *x != 1.0));
/// assert!(FeatureNoise::new(-0.1, 7).is_err());
/// # Ok::<(), ldl_data::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureNoise {
    std: f32,
    seed: u64,
}

impl FeatureNoise {
    /// Noise of standard deviation `std` (in the features' units: standardised features
    /// make it a fraction of each feature's spread), drawn from `seed`. `std` must be
    /// finite and in `[0, 10]`; 0 adds nothing.
    pub fn new(std: f32, seed: u64) -> Result<FeatureNoise> {
        if !(0.0..=MAX_FEATURE_NOISE).contains(&std) {
            return Err(Error::Spec(format!(
                "the feature noise std must be a number in [0, {MAX_FEATURE_NOISE}] (a \
                 fraction of a standardised feature's spread), got {std}"
            )));
        }
        Ok(FeatureNoise { std, seed })
    }

    /// The standard deviation.
    pub fn std(&self) -> f32 {
        self.std
    }

    /// Adds the noise of `epoch` for the sample at position `sample` of its split.
    pub fn add(&self, features: &mut [f32], epoch: u64, sample: usize) {
        if self.std == 0.0 {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(self.seed, epoch), sample as u64));
        for x in features {
            *x += self.std * standard_normal(&mut rng) as f32;
        }
    }
}

/// A draw from the standard normal distribution (Box–Muller), without another dependency.
pub(crate) fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let v: f64 = rng.gen_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draws over many samples have the configured std and mean zero (the sample
    /// moments of 20 000 draws are within 4 standard errors of 0 and of the std).
    #[test]
    fn noise_has_the_configured_moments() {
        let noise = FeatureNoise::new(0.3, 11).unwrap();
        let draws: Vec<f64> = (0..5000)
            .flat_map(|i| {
                let mut x = vec![0.0f32; 4];
                noise.add(&mut x, 3, i);
                x.into_iter().map(f64::from)
            })
            .collect();
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / n;
        let std = (draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 4.0 * 0.3 / n.sqrt(), "mean {mean}");
        // The std of a sample std is about σ/√(2n).
        assert!(
            (std - 0.3).abs() < 4.0 * 0.3 / (2.0 * n).sqrt(),
            "std {std}"
        );
    }

    #[test]
    fn epochs_and_samples_draw_differently_and_zero_adds_nothing() {
        let noise = FeatureNoise::new(1.0, 5).unwrap();
        let draw = |epoch, sample| {
            let mut x = vec![0.0f32; 3];
            noise.add(&mut x, epoch, sample);
            x
        };
        assert_ne!(draw(0, 0), draw(1, 0));
        assert_ne!(draw(0, 0), draw(0, 1));
        let mut x = vec![2.5f32; 3];
        FeatureNoise::new(0.0, 5).unwrap().add(&mut x, 0, 0);
        assert_eq!(x, vec![2.5; 3]);
    }

    #[test]
    fn out_of_range_std_is_refused_with_the_range() {
        for bad in [f32::NAN, f32::INFINITY, -0.5, 11.0] {
            let message = FeatureNoise::new(bad, 0).unwrap_err().to_string();
            assert!(message.contains("[0, 10]"), "{message}");
        }
    }
}
