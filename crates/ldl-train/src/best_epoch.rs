//! The best validated epoch so far, for the `best` checkpoint and early stopping.
//!
//! Each evaluation is scored by `run.monitor` (lower is better; an evaluation the monitor
//! cannot score, such as an MAE that is missing, never improves). An epoch that scores
//! strictly lower than the best so far becomes the best and resets the count of
//! evaluations since; `run.patience` evaluations without improvement end the run.
//! The tracker is part of the run's `state.json`, so a resumed run counts on.

use serde::{Deserialize, Serialize};

use crate::config::Monitor;
use crate::records::Evaluation;

/// The best epoch and its evaluation, and the evaluations since it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct BestEpoch {
    /// The best epoch so far and its validation results.
    best: Option<(usize, Evaluation)>,
    /// Evaluations since the best one.
    #[serde(default)]
    since_improvement: usize,
}

impl BestEpoch {
    /// Takes in epoch `epoch`'s validation results; true when they are the best so far
    /// by `monitor` (so the epoch becomes the `best` checkpoint).
    pub(crate) fn evaluated(
        &mut self,
        epoch: usize,
        evaluation: &Evaluation,
        monitor: &Monitor,
    ) -> bool {
        let score = |e: &Evaluation| monitor.score(e).unwrap_or(f64::INFINITY);
        let improved = self
            .best
            .as_ref()
            .is_none_or(|(_, best)| score(evaluation) < score(best));
        if improved {
            self.best = Some((epoch, evaluation.clone()));
            self.since_improvement = 0;
        } else {
            self.since_improvement += 1;
        }
        improved
    }

    /// Whether early stopping (`run.patience`) ends the run here.
    pub(crate) fn patience_ran_out(&self, patience: Option<usize>) -> bool {
        patience.is_some_and(|p| self.since_improvement >= p)
    }

    /// The best epoch and its evaluation, once one was evaluated.
    pub(crate) fn best(&self) -> Option<&(usize, Evaluation)> {
        self.best.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::LossSummary;

    fn with_loss(total: f64) -> Evaluation {
        Evaluation {
            loss: LossSummary {
                total,
                parts: Default::default(),
            },
            metrics: ldl_core::metrics::MetricsReport { axes: Vec::new() },
        }
    }

    #[test]
    fn only_a_strictly_lower_score_improves_and_patience_counts_the_rest() {
        let mut tracker = BestEpoch::default();
        let monitor = Monitor::Loss;
        let outcomes: Vec<bool> = [(1, 2.0), (2, 1.5), (3, 1.5), (4, 1.7)]
            .into_iter()
            .map(|(epoch, loss)| tracker.evaluated(epoch, &with_loss(loss), &monitor))
            .collect();
        assert_eq!(outcomes, [true, true, false, false]);
        assert_eq!(tracker.best().unwrap().0, 2);
        assert!(!tracker.patience_ran_out(Some(3)));
        assert!(tracker.patience_ran_out(Some(2)));
        assert!(!tracker.patience_ran_out(None));
        assert!(tracker.evaluated(5, &with_loss(1.0), &monitor));
        assert!(!tracker.patience_ran_out(Some(1)));
    }

    #[test]
    fn an_evaluation_the_monitor_cannot_score_never_improves_on_one_it_can() {
        let mut tracker = BestEpoch::default();
        let by_mae = Monitor::Mae("age".into());
        // No `age` metrics: unscorable, but the first evaluation is still the best so far.
        assert!(tracker.evaluated(1, &with_loss(1.0), &by_mae));
        assert!(!tracker.evaluated(2, &with_loss(0.5), &by_mae));
        assert_eq!(tracker.best().unwrap().0, 1);
    }
}
