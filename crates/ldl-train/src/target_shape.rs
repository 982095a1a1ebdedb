//! Whether an axis's training targets suit the full-KL loss, said once at the start.
//!
//! The full-KL loss adds to the KL of the distributions a KL between their normal
//! approximations and a smoothness term (the prediction against itself shifted by a
//! bin). Both assume a target with one smooth peak: a value label's discretised Gaussian
//! always is one, but an explicit distribution (a rating histogram with dips at the half
//! stars, budget shares) need not be, and there the two terms pull the prediction away
//! from the target. An axis trained with the full-KL loss whose explicit targets often
//! have several peaks gets a warning that suggests the KL term alone for it.
//!
//! A peak is a maximal run of equal bins higher than the bins on either side (on a
//! circular axis the ends are neighbours), at least [`PEAK_SHARE`] of the highest bin, so
//! that noise in a distribution's tail does not count. An axis warns when at least
//! [`MULTIMODAL_SHARE`] of its training targets have two peaks or more.

use candle_core::DType;
use ldl_core::{Axis, Label, LabelSpace};
use ldl_data::Sample;

use crate::config::{CheckedConfig, LossKind};
use crate::error::Result;

/// A local maximum lower than this share of the distribution's highest bin is not a peak.
pub(crate) const PEAK_SHARE: f64 = 0.2;

/// The share of multimodal training targets from which an axis warns: one target in ten
/// is more than noise in a data set, and fewer would hardly move the loss.
pub(crate) const MULTIMODAL_SHARE: f64 = 0.1;

/// The warnings of `config`'s axes trained with the full-KL loss on the `train` samples.
pub(crate) fn warnings(config: &CheckedConfig, train: &[Sample]) -> Result<Vec<String>> {
    let space = config.space();
    let mut out = Vec::new();
    for (a, (axis, axis_config)) in space.axes().iter().zip(&config.task.axes).enumerate() {
        let kind = axis_config.loss.unwrap_or(config.loss.kind());
        let smooth_peak_terms = matches!(kind, LossKind::FullKl | LossKind::FullKlRelative);
        if !smooth_peak_terms || axis.is_categorical() {
            continue;
        }
        let labels: Vec<Vec<Label>> = train
            .iter()
            .filter(|s| matches!(s.labels[a], Label::Distribution(_)))
            .map(|s| s.labels.clone())
            .collect();
        if labels.is_empty() {
            continue;
        }
        let share = multimodal_share(space, a, &labels)?;
        if share >= MULTIMODAL_SHARE {
            out.push(format!(
                "axis `{}`: {:.0}% of its training distributions have more than one peak; \
                 the full-KL loss's normal-approximation and smoothness terms assume one \
                 smooth peak and can train such targets worse than the KL term alone: \
                 consider `loss = \"kl\"` for this axis in [[task.axes]] (see docs/loss.md)",
                axis.name(),
                share * 100.0
            ));
        }
    }
    Ok(out)
}

/// The share of `labels`' targets on axis `a` of `space` with two peaks or more.
fn multimodal_share(space: &LabelSpace, a: usize, labels: &[Vec<Label>]) -> Result<f64> {
    let targets = space.targets(labels, DType::F64, &candle_core::Device::Cpu)?;
    let rows = targets[a].pmf.to_vec2::<f64>()?;
    let axis: &Axis = &space.axes()[a];
    let circular = axis.period().is_some();
    let multimodal = rows.iter().filter(|p| peaks(p, circular) >= 2).count();
    Ok(multimodal as f64 / rows.len() as f64)
}

/// The peaks of a distribution over ordered bins (see the module doc).
pub(crate) fn peaks(p: &[f64], circular: bool) -> usize {
    let top = p.iter().copied().fold(0.0, f64::max);
    // One value per run of equal bins: a flat top is one peak.
    let mut runs: Vec<f64> = Vec::new();
    for &v in p {
        if runs.last() != Some(&v) {
            runs.push(v);
        }
    }
    if circular && runs.len() > 1 && runs.first() == runs.last() {
        runs.pop();
    }
    let n = runs.len();
    if n < 2 {
        return 0;
    }
    (0..n)
        .filter(|&i| {
            let neighbour = |j: Option<usize>| j.map_or(f64::NEG_INFINITY, |j| runs[j]);
            let (left, right) = if circular {
                (Some((i + n - 1) % n), Some((i + 1) % n))
            } else {
                (i.checked_sub(1), (i + 1 < n).then_some(i + 1))
            };
            runs[i] > neighbour(left) && runs[i] > neighbour(right) && runs[i] >= PEAK_SHARE * top
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(centre: f64, std: f64, bins: usize) -> Vec<f64> {
        (0..bins)
            .map(|k| (-(k as f64 - centre).powi(2) / (2.0 * std * std)).exp())
            .collect()
    }

    #[test]
    fn a_gaussian_has_one_peak_and_a_mixture_two() {
        assert_eq!(peaks(&gaussian(4.0, 1.5, 10), false), 1);
        let mixture: Vec<f64> = gaussian(2.0, 1.0, 12)
            .iter()
            .zip(gaussian(9.0, 1.0, 12))
            .map(|(a, b)| a + 0.8 * b)
            .collect();
        assert_eq!(peaks(&mixture, false), 2);
        // A second bump below a fifth of the highest bin is a tail, not a peak.
        let small: Vec<f64> = gaussian(2.0, 1.0, 12)
            .iter()
            .zip(gaussian(9.0, 1.0, 12))
            .map(|(a, b)| a + 0.1 * b)
            .collect();
        assert_eq!(peaks(&small, false), 1);
    }

    #[test]
    fn plateaus_ends_and_circles_count_as_a_reader_would() {
        // A flat top is one peak; a flat distribution has none.
        assert_eq!(peaks(&[0.1, 0.3, 0.3, 0.2, 0.1], false), 1);
        assert_eq!(peaks(&[0.25; 4], false), 0);
        // Rating histograms with dips at the half stars: three peaks.
        assert_eq!(peaks(&[0.05, 0.2, 0.05, 0.3, 0.1, 0.3], false), 3);
        // Higher ends on a line are peaks; on a circle they are one peak across the seam.
        assert_eq!(peaks(&[0.4, 0.1, 0.1, 0.4], false), 2);
        assert_eq!(peaks(&[0.4, 0.1, 0.1, 0.4], true), 1);
        assert_eq!(peaks(&[0.3, 0.1, 0.3, 0.1], true), 2);
    }
}
