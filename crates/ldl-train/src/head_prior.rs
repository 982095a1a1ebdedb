//! `model.head_init = "training-mean"`: each head starts at the training split's mean
//! target distribution.
//!
//! Candle initialises a head's bias near zero, so an untrained model predicts close to a
//! uniform distribution over the axis, whose mean is the middle of the axis. On a data
//! set so small that early stopping picks one of the first epochs (linnerud: 12 training
//! rows, one step an epoch), that is what the run keeps, worse than always predicting the
//! training mean. Starting the bias at the log of the training targets' mean distribution
//! makes the untrained model that mean predictor, so training can only start from it.
//! `least-squares` goes one step further (`path_start.rs`): a linear predictor.

use ldl_core::LabelSpace;
use ldl_data::Sample;

use crate::baselines::mean_pmfs;
use crate::error::Result;

/// The smallest probability a bin's prior is given before its log: bins no training
/// target reaches start at log(1e-6) ≈ −13.8 nats below a certain bin, not at −∞.
const FLOOR: f64 = 1e-6;

/// Per axis, the log of the training split's mean target distribution, floored at
/// [`FLOOR`].
pub(crate) fn training_mean_log_priors(
    space: &LabelSpace,
    train: &[Sample],
) -> Result<Vec<Vec<f64>>> {
    Ok(mean_pmfs(space, train)?
        .into_iter()
        .map(|mean| floored_log(&mean))
        .collect())
}

/// The log of a distribution, each probability floored at [`FLOOR`]: the logits a head
/// starts at to predict it.
pub(crate) fn floored_log(pmf: &[f64]) -> Vec<f64> {
    pmf.iter().map(|p| p.max(FLOOR).ln()).collect()
}

/// One bias vector per head of `space` from the axes' log priors: for a joint head, the
/// sum of its members' logs (the product of the members' distributions, row-major as
/// the grid is).
pub(crate) fn head_biases(space: &LabelSpace, log_priors: &[Vec<f64>]) -> Vec<Vec<f32>> {
    space
        .heads()
        .iter()
        .map(|head| {
            let mut grid = vec![0.0f64];
            for &a in head.axes() {
                grid = grid
                    .iter()
                    .flat_map(|g| log_priors[a].iter().map(move |l| g + l))
                    .collect();
            }
            grid.into_iter().map(|b| b as f32).collect()
        })
        .collect()
}

/// One bias vector per head of `space`: the log of the mean of the training targets'
/// distributions; for a joint head, the sum of its members' logs (the product of the
/// members' mean distributions, row-major as the grid is).
#[cfg(test)]
pub(crate) fn training_mean_biases(space: &LabelSpace, train: &[Sample]) -> Result<Vec<Vec<f32>>> {
    Ok(head_biases(space, &training_mean_log_priors(space, train)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldl_core::{Axis, Label};

    fn sample(labels: Vec<Label>) -> Sample {
        Sample {
            input: ldl_data::Input::Features(vec![0.0]),
            labels,
            group: None,
            split: None,
            origin: ldl_data::SampleOrigin::line(std::sync::Arc::new("rows.csv".into()), 2),
        }
    }

    /// The softmax of the biases is the mean of the targets (to the floor), and a joint
    /// head's grid is the product of its members' means.
    #[test]
    fn the_biases_are_the_log_mean_target_and_joint_grids_multiply() {
        let axes = vec![
            Axis::linear("a", 0.0, 2.0, 1.0).unwrap(),
            Axis::linear("b", 0.0, 1.0, 1.0).unwrap(),
        ];
        let single = LabelSpace::new(axes).unwrap();
        let joint = single.clone().with_joint(&["a", "b"]).unwrap();
        let one_hot = |k: usize, n: usize| {
            Label::Distribution((0..n).map(|i| if i == k { 1.0 } else { 0.0 }).collect())
        };
        let train: Vec<Sample> = [(0, 0), (0, 1), (2, 1), (0, 1)]
            .into_iter()
            .map(|(a, b)| sample(vec![one_hot(a, 3), one_hot(b, 2)]))
            .collect();
        let biases = training_mean_biases(&single, &train).unwrap();
        let exp = |b: &[f32]| b.iter().map(|x| (*x as f64).exp()).collect::<Vec<_>>();
        let a = exp(&biases[0]);
        for (got, want) in a.iter().zip([0.75, FLOOR, 0.25]) {
            assert!((got - want).abs() < 1e-7, "{a:?}");
        }
        let b = exp(&biases[1]);
        assert!(
            (b[0] - 0.25).abs() < 1e-7 && (b[1] - 0.75).abs() < 1e-7,
            "{b:?}"
        );
        let grid = exp(&training_mean_biases(&joint, &train).unwrap()[0]);
        assert_eq!(grid.len(), 6);
        // Row-major, `a` slowest: (0, 0), (0, 1), (1, 0), …
        let want = [
            0.75 * 0.25,
            0.75 * 0.75,
            FLOOR * 0.25,
            FLOOR * 0.75,
            0.25 * 0.25,
            0.25 * 0.75,
        ];
        for (got, want) in grid.iter().zip(want) {
            assert!((got - want).abs() < 1e-7, "{grid:?}");
        }
    }
}
