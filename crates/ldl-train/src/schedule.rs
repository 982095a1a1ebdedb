//! The step learning-rate schedule of `[optim]`: `lr · gamma^⌊(epoch − 1) / step_epochs⌋`.

use crate::config::OptimConfig;

/// DLDL-v2's schedule: the learning rate is multiplied by `gamma` every `step_epochs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepSchedule {
    lr: f64,
    gamma: f64,
    step_epochs: usize,
}

impl StepSchedule {
    /// The schedule of a (validated) `[optim]` section.
    pub(crate) fn of(optim: &OptimConfig) -> StepSchedule {
        StepSchedule::new(optim.lr, optim.lr_gamma, optim.lr_step_epochs)
    }

    /// `lr`, multiplied by `gamma` every `step_epochs` epochs (at least 1).
    pub(crate) fn new(lr: f64, gamma: f64, step_epochs: usize) -> StepSchedule {
        StepSchedule {
            lr,
            gamma,
            step_epochs: step_epochs.max(1),
        }
    }

    /// The learning rate of `epoch` (from 1).
    pub(crate) fn lr(&self, epoch: usize) -> f64 {
        let decays = (epoch.saturating_sub(1) / self.step_epochs) as i32;
        self.lr * self.gamma.powi(decays)
    }
}

#[cfg(test)]
mod tests {
    use super::StepSchedule;

    #[test]
    fn the_rate_drops_by_gamma_after_every_step() {
        let schedule = StepSchedule {
            lr: 0.01,
            gamma: 0.1,
            step_epochs: 30,
        };
        for (epoch, expected) in [(1, 0.01), (30, 0.01), (31, 0.001), (60, 0.001), (61, 1e-4)] {
            let lr = schedule.lr(epoch);
            assert!(
                (lr - expected).abs() < 1e-15 * expected.max(1.0),
                "epoch {epoch}: {lr}"
            );
        }
    }
}
