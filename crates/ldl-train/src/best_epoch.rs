//! The best validated epoch so far, for the `best` checkpoint and early stopping.
//!
//! Each evaluation is scored one of two ways ([`Scoring`], from `run.monitor`):
//!
//! | `run.monitor` | scored | the `best` checkpoint holds |
//! |---|---|---|
//! | `loss`, `AXIS/mae`, `AXIS/accuracy` | the whole model by that figure | the whole model at the best epoch |
//! | `per-axis` | each head by its own figure: an ordered axis's MAE, a categorical axis's accuracy, the share of the loss of an axis labelled by explicit distributions or of a joint group | each head at its own best epoch |
//!
//! Lower is better (accuracy counts negated); an evaluation the monitor cannot score,
//! such as an MAE that is missing, never improves. An epoch that scores strictly lower
//! than the best so far (for any head, per axis) improves and resets the count of
//! evaluations since; `run.patience` evaluations without improvement end the run. Per
//! axis, the best evaluation is assembled: each head's loss share, loss parts and axis
//! metrics from its own best epoch, the total the sum of the shares, which is what
//! evaluating the assembled checkpoint gives, since the heads share no weights. The
//! tracker is part of the run's `state.json`, so a resumed run counts on.

use std::collections::BTreeMap;

use ldl_core::{Label, LabelSpace};
use ldl_data::Sample;
use serde::{Deserialize, Serialize};

use crate::config::Monitor;
use crate::records::Evaluation;

/// How evaluations are compared.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scoring {
    /// The whole model, by `run.monitor`.
    Whole(Monitor),
    /// Each head by its own figure (`run.monitor = "per-axis"`).
    PerHead(Vec<HeadAxes>),
}

/// A head's name, the names of its axes (one, or a joint group's members) and what it is
/// scored by.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeadAxes {
    name: String,
    axes: Vec<String>,
    /// The whole-model monitor that scores this head alone.
    monitor: Monitor,
}

impl Scoring {
    /// How `monitor` scores evaluations of a model of `space`; `explicit` marks the axes
    /// labelled by explicit distributions (see [`explicit_axes`]).
    pub(crate) fn new(monitor: &Monitor, space: &LabelSpace, explicit: &[bool]) -> Scoring {
        if *monitor != Monitor::PerAxis {
            return Scoring::Whole(monitor.clone());
        }
        let heads = space.heads().iter().map(|head| {
            let axes: Vec<&ldl_core::Axis> =
                head.axes().iter().map(|&a| &space.axes()[a]).collect();
            let explicit_axis = matches!(head.axes(), &[a] if explicit.get(a) == Some(&true));
            let monitor = match axes[..] {
                // What is learnt is the distribution, not its mean or its mode.
                [_] if explicit_axis => Monitor::Loss,
                [axis] if axis.is_categorical() => Monitor::Accuracy(axis.name().to_string()),
                [axis] => Monitor::Mae(axis.name().to_string()),
                // A joint group's axes are in different units: its share of the loss.
                _ => Monitor::Loss,
            };
            HeadAxes {
                name: head.name().to_string(),
                axes: axes.iter().map(|axis| axis.name().to_string()).collect(),
                monitor,
            }
        });
        Scoring::PerHead(heads.collect())
    }
}

/// For each axis of a space of `axes` axes, whether a training sample labels it by an
/// explicit distribution ([`Label::Distribution`]).
pub(crate) fn explicit_axes(axes: usize, train: &[Sample]) -> Vec<bool> {
    let mut explicit = vec![false; axes];
    for sample in train {
        for (flag, label) in explicit.iter_mut().zip(&sample.labels) {
            *flag |= matches!(label, Label::Distribution(_));
        }
    }
    explicit
}

/// What an evaluation improved on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Improvement {
    /// Nothing: the `best` checkpoint stays.
    None,
    /// The whole model: it becomes the `best` checkpoint.
    Whole,
    /// These heads (indices into the label space's heads, not all of them): their
    /// weights replace theirs in the `best` checkpoint.
    Heads(Vec<usize>),
}

/// The best epoch and its evaluation, and the evaluations since it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct BestEpoch {
    /// The last epoch that changed the best checkpoint, and the checkpoint's validation
    /// results (per axis, assembled from each head's best epoch).
    best: Option<(usize, Evaluation)>,
    /// Evaluations since the last improvement.
    #[serde(default)]
    since_improvement: usize,
    /// With `per-axis`: each axis's best epoch (a joint group's for each of its axes),
    /// by axis name; empty otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    axis_epochs: BTreeMap<String, usize>,
}

impl BestEpoch {
    /// Takes in epoch `epoch`'s validation results; what they improved on.
    pub(crate) fn evaluated(
        &mut self,
        epoch: usize,
        evaluation: &Evaluation,
        scoring: &Scoring,
    ) -> Improvement {
        let improvement = match scoring {
            Scoring::Whole(monitor) => self.whole_model(epoch, evaluation, monitor),
            Scoring::PerHead(heads) => self.per_head(epoch, evaluation, heads),
        };
        if improvement == Improvement::None {
            self.since_improvement += 1;
        } else {
            self.since_improvement = 0;
        }
        improvement
    }

    fn whole_model(
        &mut self,
        epoch: usize,
        evaluation: &Evaluation,
        monitor: &Monitor,
    ) -> Improvement {
        // The checkpoint is, or becomes, one epoch's whole model (a run resumed from
        // per-axis keeps its assembled best until an epoch beats it).
        self.axis_epochs.clear();
        let score = |e: &Evaluation| monitor.score(e).unwrap_or(f64::INFINITY);
        let improved = self
            .best
            .as_ref()
            .is_none_or(|(_, best)| score(evaluation) < score(best));
        if !improved {
            return Improvement::None;
        }
        self.best = Some((epoch, evaluation.clone()));
        Improvement::Whole
    }

    fn per_head(
        &mut self,
        epoch: usize,
        evaluation: &Evaluation,
        heads: &[HeadAxes],
    ) -> Improvement {
        let share = |e: &Evaluation, head: &HeadAxes| {
            let score = match (&head.monitor, heads.len()) {
                (Monitor::Loss, 1) => Some(e.loss.total),
                (Monitor::Loss, _) => e.loss.heads.get(&head.name).copied(),
                (monitor, _) => monitor.score(e),
            };
            score.unwrap_or(f64::INFINITY)
        };
        // A best without every head's loss share (one an earlier ldl recorded, resumed as
        // per-axis) cannot be assembled from: the whole model starts it afresh.
        let assemblable = |best: &Evaluation| {
            heads.len() == 1 || heads.iter().all(|h| best.loss.heads.contains_key(&h.name))
        };
        let improved: Vec<usize> = match &self.best {
            Some((_, best)) if assemblable(best) => (0..heads.len())
                .filter(|&h| share(evaluation, &heads[h]) < share(best, &heads[h]))
                .collect(),
            _ => (0..heads.len()).collect(),
        };
        // A run resumed with the monitor changed to per-axis: every axis was best together.
        let together = self
            .best
            .as_ref()
            .map_or(epoch, |(best_epoch, _)| *best_epoch);
        for axis in heads.iter().flat_map(|head| &head.axes) {
            self.axis_epochs.entry(axis.clone()).or_insert(together);
        }
        if improved.is_empty() {
            return Improvement::None;
        }
        for &h in &improved {
            for axis in &heads[h].axes {
                self.axis_epochs.insert(axis.clone(), epoch);
            }
        }
        if improved.len() == heads.len() {
            self.best = Some((epoch, evaluation.clone()));
            return Improvement::Whole;
        }
        let (best_epoch, best) = self.best.as_mut().expect("a best evaluation was kept");
        for &h in &improved {
            take_head(best, evaluation, &heads[h]);
        }
        best.loss.total = best.loss.heads.values().sum();
        *best_epoch = epoch;
        Improvement::Heads(improved)
    }

    /// Whether early stopping (`run.patience`) ends the run here.
    pub(crate) fn patience_ran_out(&self, patience: Option<usize>) -> bool {
        patience.is_some_and(|p| self.since_improvement >= p)
    }

    /// The best epoch (per axis, the last that changed the best checkpoint) and the best
    /// checkpoint's validation results, once one was evaluated.
    pub(crate) fn best(&self) -> Option<&(usize, Evaluation)> {
        self.best.as_ref()
    }

    /// With `per-axis`: each axis's best epoch, by axis name; empty otherwise.
    pub(crate) fn axis_epochs(&self) -> &BTreeMap<String, usize> {
        &self.axis_epochs
    }
}

/// Replaces `head`'s figures in `best` (its loss share, loss parts and axis metrics) by
/// those of `evaluation`.
fn take_head(best: &mut Evaluation, evaluation: &Evaluation, head: &HeadAxes) {
    let owned = |key: &str| {
        // `axis/component`; an axis name may hold a `/`, a component never does.
        let part_of = key.rsplit_once('/').map_or(key, |(axis, _)| axis);
        part_of == head.name || head.axes.iter().any(|axis| axis == part_of)
    };
    for (key, value) in &evaluation.loss.parts {
        if owned(key) {
            best.loss.parts.insert(key.clone(), *value);
        }
    }
    if let Some(share) = evaluation.loss.heads.get(&head.name) {
        best.loss.heads.insert(head.name.clone(), *share);
    }
    for report in &mut best.metrics.axes {
        if head.axes.contains(&report.axis) {
            if let Some(new) = evaluation.metrics.axis(&report.axis) {
                *report = new.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::LossSummary;
    use ldl_core::metrics::{AxisReport, MetricsReport};

    fn with_loss(total: f64) -> Evaluation {
        Evaluation {
            loss: LossSummary {
                total,
                parts: Default::default(),
                heads: Default::default(),
            },
            metrics: ldl_core::metrics::MetricsReport { axes: Vec::new() },
        }
    }

    #[test]
    fn only_a_strictly_lower_score_improves_and_patience_counts_the_rest() {
        let mut tracker = BestEpoch::default();
        let monitor = Scoring::Whole(Monitor::Loss);
        let outcomes: Vec<Improvement> = [(1, 2.0), (2, 1.5), (3, 1.5), (4, 1.7)]
            .into_iter()
            .map(|(epoch, loss)| tracker.evaluated(epoch, &with_loss(loss), &monitor))
            .collect();
        use Improvement::{None as No, Whole};
        assert_eq!(outcomes, [Whole, Whole, No, No]);
        assert_eq!(tracker.best().unwrap().0, 2);
        assert!(!tracker.patience_ran_out(Some(3)));
        assert!(tracker.patience_ran_out(Some(2)));
        assert!(!tracker.patience_ran_out(None));
        assert_eq!(tracker.evaluated(5, &with_loss(1.0), &monitor), Whole);
        assert!(!tracker.patience_ran_out(Some(1)));
    }

    #[test]
    fn an_evaluation_the_monitor_cannot_score_never_improves_on_one_it_can() {
        let mut tracker = BestEpoch::default();
        let by_mae = Scoring::Whole(Monitor::Mae("age".into()));
        // No `age` metrics: unscorable, but the first evaluation is still the best so far.
        assert_eq!(
            tracker.evaluated(1, &with_loss(1.0), &by_mae),
            Improvement::Whole
        );
        assert_eq!(
            tracker.evaluated(2, &with_loss(0.5), &by_mae),
            Improvement::None
        );
        assert_eq!(tracker.best().unwrap().0, 1);
    }

    fn axis_report(axis: &str, mae: Option<f64>, accuracy: Option<f64>) -> AxisReport {
        AxisReport {
            axis: axis.into(),
            unit: String::new(),
            samples: 10,
            mae,
            epsilon_error: None,
            cumulative_scores: Vec::new(),
            mean_predicted_std: None,
            accuracy,
            ldl: Default::default(),
        }
    }

    /// An evaluation of the space of [`space`]: `age` (MAE), `kind` (accuracy) and the
    /// joint group `yaw+pitch` (loss share `pose`); each head's share and one loss part.
    fn evaluation(age_mae: f64, kind_accuracy: f64, pose: f64) -> Evaluation {
        let heads = BTreeMap::from([
            ("age".to_string(), age_mae / 10.0),
            ("kind".to_string(), 1.0 - kind_accuracy),
            ("yaw+pitch".to_string(), pose),
        ]);
        Evaluation {
            loss: LossSummary {
                total: heads.values().sum(),
                parts: BTreeMap::from([
                    ("age/ld".to_string(), age_mae / 10.0),
                    ("kind/ld".to_string(), 1.0 - kind_accuracy),
                    ("yaw+pitch/ld".to_string(), pose / 2.0),
                    ("yaw/exp".to_string(), pose / 4.0),
                    ("pitch/exp".to_string(), pose / 4.0),
                ]),
                heads,
            },
            metrics: MetricsReport {
                axes: vec![
                    axis_report("age", Some(age_mae), None),
                    axis_report("kind", None, Some(kind_accuracy)),
                    axis_report("yaw", Some(10.0 * pose), None),
                    axis_report("pitch", Some(20.0 * pose), None),
                ],
            },
        }
    }

    fn space() -> LabelSpace {
        use ldl_core::Axis;
        let axes = vec![
            Axis::linear("age", 0.0, 10.0, 1.0).unwrap(),
            Axis::categorical("kind", ["a", "b"]).unwrap(),
            Axis::circular("yaw", 0.0, 360.0, 10.0).unwrap(),
            Axis::linear("pitch", -10.0, 10.0, 5.0).unwrap(),
        ];
        LabelSpace::new(axes)
            .unwrap()
            .with_joint(&["yaw", "pitch"])
            .unwrap()
    }

    #[test]
    fn per_axis_each_head_keeps_its_own_best_epoch_and_the_best_evaluation_is_assembled() {
        let scoring = Scoring::new(&Monitor::PerAxis, &space(), &[false; 4]);
        let mut tracker = BestEpoch::default();
        let first = evaluation(5.0, 0.5, 1.0);
        assert_eq!(tracker.evaluated(1, &first, &scoring), Improvement::Whole);
        // Epoch 2: age better (MAE), kind worse (accuracy), the group better (loss share);
        // the total is worse, which a whole-model monitor would have refused.
        let second = evaluation(4.0, 0.1, 0.9);
        assert!(second.loss.total > first.loss.total);
        assert_eq!(
            tracker.evaluated(2, &second, &scoring),
            Improvement::Heads(vec![0, 2])
        );
        // Epoch 3: only kind improves; epoch 4: nothing.
        let third = evaluation(6.0, 0.75, 2.0);
        assert_eq!(
            tracker.evaluated(3, &third, &scoring),
            Improvement::Heads(vec![1])
        );
        assert_eq!(
            tracker.evaluated(4, &evaluation(4.5, 0.6, 0.95), &scoring),
            Improvement::None
        );
        assert!(tracker.patience_ran_out(Some(1)));
        let epochs: Vec<(&str, usize)> = tracker
            .axis_epochs()
            .iter()
            .map(|(a, e)| (a.as_str(), *e))
            .collect();
        assert_eq!(epochs, [("age", 2), ("kind", 3), ("pitch", 2), ("yaw", 2)]);
        let (epoch, best) = tracker.best().unwrap();
        assert_eq!(*epoch, 3, "the last epoch that changed the checkpoint");
        let mae = |axis: &str| best.metrics.axis(axis).unwrap().mae;
        assert_eq!(mae("age"), Some(4.0));
        assert_eq!(best.metrics.axis("kind").unwrap().accuracy, Some(0.75));
        assert_eq!((mae("yaw"), mae("pitch")), (Some(9.0), Some(18.0)));
        let part = |key: &str| best.loss.parts[key];
        assert_eq!(part("age/ld"), 0.4);
        assert_eq!(part("kind/ld"), 0.25);
        assert_eq!((part("yaw/exp"), part("pitch/exp")), (0.9 / 4.0, 0.9 / 4.0));
        assert_eq!(best.loss.total, 0.4 + 0.25 + 0.9);
    }

    #[test]
    fn an_axis_labelled_by_distributions_is_scored_by_its_loss_share_not_its_mae() {
        let explicit = [true, false, false, false];
        let scoring = Scoring::new(&Monitor::PerAxis, &space(), &explicit);
        let mut tracker = BestEpoch::default();
        tracker.evaluated(1, &evaluation(5.0, 0.5, 1.0), &scoring);
        // age's MAE falls but its loss share rises: no improvement for age.
        let mut second = evaluation(4.0, 0.5, 1.0);
        second.loss.heads.insert("age".into(), 0.9);
        assert_eq!(tracker.evaluated(2, &second, &scoring), Improvement::None);
        let mut third = evaluation(6.0, 0.5, 1.0);
        third.loss.heads.insert("age".into(), 0.3);
        assert_eq!(
            tracker.evaluated(3, &third, &scoring),
            Improvement::Heads(vec![0])
        );
    }

    #[test]
    fn explicit_axes_are_those_a_training_sample_labels_by_a_distribution() {
        let sample = |labels: Vec<Label>| Sample {
            input: ldl_data::Input::Features(vec![0.0]),
            labels,
            group: None,
            split: None,
            origin: ldl_data::SampleOrigin::line(std::sync::Arc::new("rows.csv".into()), 1),
        };
        let train = [
            sample(vec![Label::value(1.0), Label::Class(0)]),
            sample(vec![Label::value(2.0), Label::Distribution(vec![0.5, 0.5])]),
        ];
        assert_eq!(explicit_axes(2, &train), [false, true]);
    }

    #[test]
    fn a_best_without_head_shares_is_replaced_whole_rather_than_assembled() {
        let mut tracker = BestEpoch::default();
        let mut older = evaluation(5.0, 0.5, 1.0);
        older.loss.heads.clear();
        tracker.evaluated(3, &older, &Scoring::Whole(Monitor::Loss));
        let scoring = Scoring::new(&Monitor::PerAxis, &space(), &[false; 4]);
        let worse = evaluation(6.0, 0.4, 2.0);
        assert_eq!(tracker.evaluated(4, &worse, &scoring), Improvement::Whole);
        assert_eq!(tracker.best().unwrap(), &(4, worse));
    }

    #[test]
    fn per_axis_with_every_head_improving_takes_the_whole_model() {
        let scoring = Scoring::new(&Monitor::PerAxis, &space(), &[false; 4]);
        let mut tracker = BestEpoch::default();
        tracker.evaluated(1, &evaluation(5.0, 0.5, 1.0), &scoring);
        let better = evaluation(4.0, 0.6, 0.5);
        assert_eq!(tracker.evaluated(2, &better, &scoring), Improvement::Whole);
        assert_eq!(tracker.best().unwrap(), &(2, better));
    }

    #[test]
    fn a_run_resumed_per_axis_after_a_whole_model_best_starts_every_head_there() {
        let mut tracker = BestEpoch::default();
        let whole = Scoring::Whole(Monitor::Loss);
        tracker.evaluated(4, &evaluation(5.0, 0.5, 1.0), &whole);
        assert!(tracker.axis_epochs().is_empty());
        let per_axis = Scoring::new(&Monitor::PerAxis, &space(), &[false; 4]);
        let improvement = tracker.evaluated(5, &evaluation(4.0, 0.4, 1.5), &per_axis);
        assert_eq!(improvement, Improvement::Heads(vec![0]));
        let epochs: Vec<usize> = tracker.axis_epochs().values().copied().collect();
        assert_eq!(epochs, [5, 4, 4, 4]);
    }
}
