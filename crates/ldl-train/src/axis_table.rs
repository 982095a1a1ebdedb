//! The per-axis results of a run or of an evaluation as one table: which rows there are
//! (each axis on the validation split at the best epoch, then on the test split) and what
//! each holds (the metrics, the training-mean predictor's MAE beside them, and on axes of
//! explicit target distributions the training-mean distribution's LDL measures) are
//! decided once, here, and presented three ways: the lines `ldl train` prints, the results
//! table of the model card, and the columns of `ldl eval`.

use std::fmt::Write as _;

use ldl_core::metrics::{AxisReport, LdlMeasures};

use crate::records::{Evaluation, RunSummary};

/// One axis's results on one split.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisRow<'a> {
    /// The split: `validation` or `test` (empty for an evaluation of other data).
    pub split: &'static str,
    /// Every metric of the axis there.
    pub report: &'a AxisReport,
    /// The MAE of always predicting the training mean on this split, on ordered axes.
    pub baseline_mae: Option<f64>,
    /// The accuracy of always predicting the training split's most frequent class on
    /// this split, on categorical axes.
    pub baseline_accuracy: Option<f64>,
    /// The six LDL measures of always predicting the training split's mean target
    /// distribution on this split, on axes whose targets are explicit distributions.
    pub baseline_ldl: Option<LdlMeasures>,
}

/// The per-axis results, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisTable<'a> {
    /// The rows: the splits in order, each with its axes in label-space order.
    pub rows: Vec<AxisRow<'a>>,
}

impl<'a> AxisTable<'a> {
    /// A finished run's results: the validation split at the best epoch, then the test
    /// split (when there is one) for the best checkpoint.
    pub fn of_run(summary: &'a RunSummary) -> AxisTable<'a> {
        let splits = [
            ("validation", Some(&summary.best_validation)),
            ("test", summary.test.as_ref()),
        ];
        let mut rows = Vec::new();
        for (split, evaluation) in splits {
            let Some(evaluation) = evaluation else {
                continue;
            };
            rows.extend(evaluation.metrics.axes.iter().map(|report| {
                let mean = summary
                    .mean_predictor
                    .iter()
                    .find(|m| m.axis == report.axis);
                let majority = summary
                    .majority_class
                    .iter()
                    .find(|m| m.axis == report.axis);
                let distribution = summary
                    .mean_distribution
                    .iter()
                    .find(|m| m.axis == report.axis);
                AxisRow {
                    split,
                    report,
                    baseline_mae: mean.and_then(|m| match split {
                        "test" => m.test_mae,
                        _ => Some(m.validation_mae),
                    }),
                    baseline_accuracy: majority.and_then(|m| match split {
                        "test" => m.test_accuracy,
                        _ => Some(m.validation_accuracy),
                    }),
                    baseline_ldl: distribution.and_then(|m| match split {
                        "test" => m.test,
                        _ => Some(m.validation),
                    }),
                }
            }));
        }
        AxisTable { rows }
    }

    /// An evaluation of other data (`ldl eval`): one row per axis, without a baseline.
    pub fn of_evaluation(evaluation: &'a Evaluation) -> AxisTable<'a> {
        let rows = evaluation
            .metrics
            .axes
            .iter()
            .map(|report| AxisRow {
                split: "",
                report,
                baseline_mae: None,
                baseline_accuracy: None,
                baseline_ldl: None,
            })
            .collect();
        AxisTable { rows }
    }

    /// One indented line per row, as `ldl train` ends: MAE with the predicted std and
    /// the ratio to the baseline on ordered axes, accuracy on categorical ones; on axes of
    /// explicit target distributions, two more: the six LDL measures, and the
    /// training-mean distribution's.
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for AxisRow {
            split,
            report,
            baseline_mae,
            baseline_accuracy,
            baseline_ldl,
        } in &self.rows
        {
            let (axis, unit) = (&report.axis, unit_suffix(&report.unit));
            let _ = match (report.mae, report.accuracy) {
                (Some(mae), _) => writeln!(
                    out,
                    "  {split:<10} {axis:<8} MAE {mae:.3}{unit}, predicted std {:.2}{unit}{}",
                    report.mean_predicted_std.unwrap_or(f64::NAN),
                    baseline_mae
                        .map(|b| format!(
                            " (training-mean predictor: MAE {b:.3}; ratio {:.2})",
                            mae / b
                        ))
                        .unwrap_or_default()
                ),
                (None, Some(accuracy)) => writeln!(
                    out,
                    "  {split:<10} {axis:<8} accuracy {accuracy:.3}{}",
                    baseline_accuracy
                        .map(|b| format!(" (majority-class predictor: accuracy {b:.3})"))
                        .unwrap_or_default()
                ),
                _ => Ok(()),
            };
            if let Some(baseline) = baseline_ldl {
                let indent = " ".repeat(22);
                let _ = writeln!(out, "{indent}LDL {}", measures(&report.ldl));
                let _ = writeln!(
                    out,
                    "{indent}(training-mean distribution: {})",
                    measures(baseline)
                );
            }
        }
        out
    }

    /// A Markdown table, as the model card shows it: MAE and the baseline's in the axis
    /// unit, accuracy, `–` where a value does not apply; then, when some axis has explicit
    /// target distributions, a second table of its six LDL measures beside the
    /// training-mean distribution's.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| split | axis | MAE | training-mean predictor's MAE | accuracy | \
             majority-class predictor's accuracy |\n\
             |---|---|---|---|---|---|\n",
        );
        let number = |v: Option<f64>, suffix: &str| {
            v.map(|v| format!("{v:.3}{suffix}"))
                .unwrap_or_else(|| "–".into())
        };
        for row in &self.rows {
            let unit = unit_suffix(&row.report.unit);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.split,
                row.report.axis,
                number(row.report.mae, &unit),
                number(row.baseline_mae, &unit),
                number(row.report.accuracy, ""),
                number(row.baseline_accuracy, "")
            );
        }
        out.push_str(&self.ldl_markdown());
        out
    }

    /// The six LDL measures of the rows whose targets are explicit distributions, each
    /// beside the training-mean distribution's, as a second Markdown table; empty when no
    /// axis has explicit targets.
    fn ldl_markdown(&self) -> String {
        let rows: Vec<_> = self
            .rows
            .iter()
            .filter_map(|row| row.baseline_ldl.as_ref().map(|b| (row, b)))
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\nLDL measures between the predicted and the target distributions (Chebyshev, \
             Clark, Canberra and KL: lower is better; cosine and intersection: higher), and \
             the same for always predicting the training split's mean distribution:\n\n\
             | split | axis | predictor | Chebyshev | Clark | Canberra | KL | cosine | \
             intersection |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for (row, baseline) in rows {
            for (predictor, m) in [("model", &row.report.ldl), ("training mean", baseline)] {
                let _ = writeln!(
                    out,
                    "| {} | {} | {predictor} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
                    row.split,
                    row.report.axis,
                    m.chebyshev,
                    m.clark,
                    m.canberra,
                    m.kl_divergence,
                    m.cosine,
                    m.intersection
                );
            }
        }
        out
    }

    /// Aligned columns with a header, as `ldl eval` prints them: every axis's MAE,
    /// ε-error and predicted std (`-` where they do not apply), then the six LDL measures
    /// between the predicted and the target distributions (PyLDL's: Chebyshev, Clark,
    /// Canberra and KL lower is better; cosine and intersection higher).
    pub fn columns(&self) -> String {
        let mut out = format!(
            "{:<10} {:>8} {:>8} {:>8} {:>10} {:>9} {:>8} {:>9} {:>8} {:>8} {:>12}\n",
            "axis",
            "samples",
            "MAE",
            "ε-error",
            "pred. std",
            "Chebyshev",
            "Clark",
            "Canberra",
            "KL",
            "cosine",
            "intersection"
        );
        let number = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        for AxisRow { report, .. } in &self.rows {
            let ldl = &report.ldl;
            let _ = writeln!(
                out,
                "{:<10} {:>8} {:>8} {:>8} {:>10} {:>9.4} {:>8.4} {:>9.4} {:>8.4} {:>8.4} {:>12.4}",
                report.axis,
                report.samples,
                number(report.mae),
                number(report.epsilon_error),
                number(report.mean_predicted_std),
                ldl.chebyshev,
                ldl.clark,
                ldl.canberra,
                ldl.kl_divergence,
                ldl.cosine,
                ldl.intersection
            );
        }
        out
    }
}

/// A unit as it follows a number: a space then the unit, or nothing for a unitless axis.
fn unit_suffix(unit: &str) -> String {
    if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    }
}

/// The six measures in PyLDL's order, named (Chebyshev, Clark, Canberra and KL lower is
/// better; cosine and intersection higher).
pub(crate) fn measures(m: &LdlMeasures) -> String {
    format!(
        "Chebyshev {:.4}, Clark {:.4}, Canberra {:.4}, KL {:.4}, cosine {:.4}, intersection {:.4}",
        m.chebyshev, m.clark, m.canberra, m.kl_divergence, m.cosine, m.intersection
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{LossSummary, MajorityClass, MeanPredictor};
    use ldl_core::metrics::{LdlMeasures, MetricsReport};

    fn report(axis: &str, unit: &str, mae: Option<f64>, accuracy: Option<f64>) -> AxisReport {
        AxisReport {
            axis: axis.into(),
            unit: unit.into(),
            samples: 60,
            mae,
            epsilon_error: mae.map(|_| 0.5),
            cumulative_scores: Vec::new(),
            mean_predicted_std: mae.map(|_| 2.0),
            accuracy,
            ldl: LdlMeasures {
                chebyshev: 0.1,
                clark: 0.2,
                canberra: 0.3,
                kl_divergence: 0.8,
                cosine: 0.6,
                intersection: 0.5,
            },
        }
    }

    fn evaluation(size_mae: f64) -> Evaluation {
        Evaluation {
            loss: LossSummary {
                total: 1.0,
                parts: Default::default(),
                heads: Default::default(),
            },
            metrics: MetricsReport {
                axes: vec![
                    report("size", "cm", Some(size_mae), None),
                    report("colour", "", None, Some(0.25)),
                ],
            },
        }
    }

    fn summary() -> RunSummary {
        RunSummary {
            run_dir: "runs/cat-1".into(),
            epochs: 3,
            best_epoch: 2,
            best_epochs: Default::default(),
            best_validation: evaluation(1.5),
            test: Some(evaluation(1.6)),
            samples: [180, 60, 60],
            features: Vec::new(),
            skipped: Vec::new(),
            skipped_batches: 0,
            parameters: 436,
            seconds: 1.0,
            mean_predictor: vec![MeanPredictor {
                axis: "size".into(),
                value: 5.0,
                validation_mae: 2.0,
                test_mae: None,
            }],
            majority_class: vec![MajorityClass {
                axis: "colour".into(),
                class: "red".into(),
                validation_accuracy: 0.5,
                test_accuracy: Some(0.4),
            }],
            mean_distribution: Vec::new(),
            init: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn per_axis_best_epochs_are_listed_in_the_order_given() {
        let mut run = summary();
        assert_eq!(run.listed_best_epochs(["size", "colour"]), None);
        run.best_epochs = [("colour".to_string(), 3), ("size".to_string(), 1)].into();
        assert_eq!(
            run.listed_best_epochs(["size", "colour"]).as_deref(),
            Some("size 1, colour 3")
        );
    }

    #[test]
    fn a_run_reads_as_lines_with_the_baselines_where_there_are_some() {
        let summary = summary();
        assert_eq!(
            AxisTable::of_run(&summary).lines(),
            "  validation size     MAE 1.500 cm, predicted std 2.00 cm (training-mean \
             predictor: MAE 2.000; ratio 0.75)\n  \
             validation colour   accuracy 0.250 (majority-class predictor: accuracy 0.500)\n  \
             test       size     MAE 1.600 cm, predicted std 2.00 cm\n  \
             test       colour   accuracy 0.250 (majority-class predictor: accuracy 0.400)\n"
        );
    }

    #[test]
    fn explicit_distributions_add_the_six_measures_and_the_mean_distributions() {
        let mut summary = summary();
        let baseline = LdlMeasures {
            chebyshev: 0.25,
            clark: 0.5,
            canberra: 1.25,
            kl_divergence: 0.375,
            cosine: 0.75,
            intersection: 0.625,
        };
        summary.mean_distribution = vec![crate::records::MeanDistribution {
            axis: "colour".into(),
            distribution: vec![0.5, 0.5],
            validation: baseline,
            test: None,
        }];
        let lines = AxisTable::of_run(&summary).lines();
        let indent = " ".repeat(22);
        let model = "Chebyshev 0.1000, Clark 0.2000, Canberra 0.3000, KL 0.8000, cosine 0.6000, \
                     intersection 0.5000";
        let mean = "Chebyshev 0.2500, Clark 0.5000, Canberra 1.2500, KL 0.3750, cosine 0.7500, \
                    intersection 0.6250";
        let expected = format!(
            "  validation colour   accuracy 0.250 (majority-class predictor: accuracy 0.500)\n\
             {indent}LDL {model}\n\
             {indent}(training-mean distribution: {mean})\n"
        );
        assert!(lines.contains(&expected), "{lines}");
        // Only that axis, and only where its baseline was scored (no test baseline here).
        assert_eq!(lines.matches("LDL ").count(), 1, "{lines}");

        let card = AxisTable::of_run(&summary).markdown();
        let table = "| split | axis | predictor | Chebyshev | Clark | Canberra | KL | cosine | \
                     intersection |\n|---|---|---|---|---|---|---|---|---|\n\
                     | validation | colour | model | 0.1000 | 0.2000 | 0.3000 | 0.8000 | 0.6000 | \
                     0.5000 |\n\
                     | validation | colour | training mean | 0.2500 | 0.5000 | 1.2500 | 0.3750 | \
                     0.7500 | 0.6250 |\n";
        assert!(card.ends_with(table), "{card}");
    }

    #[test]
    fn a_unitless_axis_has_no_space_before_its_punctuation() {
        let mut summary = summary();
        summary.best_validation.metrics.axes[0].unit = String::new();
        let lines = AxisTable::of_run(&summary).lines();
        assert!(
            lines.contains("size     MAE 1.500, predicted std 2.00 (training-mean"),
            "{lines}"
        );
        let card = AxisTable::of_run(&summary).markdown();
        assert!(
            card.contains("| validation | size | 1.500 | 2.000 | – | – |"),
            "{card}"
        );
    }

    #[test]
    fn a_run_reads_as_the_model_cards_table() {
        let summary = summary();
        assert_eq!(
            AxisTable::of_run(&summary).markdown(),
            "| split | axis | MAE | training-mean predictor's MAE | accuracy | majority-class \
             predictor's accuracy |\n\
             |---|---|---|---|---|---|\n\
             | validation | size | 1.500 cm | 2.000 cm | – | – |\n\
             | validation | colour | – | – | 0.250 | 0.500 |\n\
             | test | size | 1.600 cm | – | – | – |\n\
             | test | colour | – | – | 0.250 | 0.400 |\n"
        );
    }

    #[test]
    fn an_evaluation_reads_as_columns() {
        let evaluation = evaluation(1.5);
        assert_eq!(
            AxisTable::of_evaluation(&evaluation).columns(),
            "axis        samples      MAE  ε-error  pred. std Chebyshev    Clark  Canberra       KL   \
             cosine intersection\n\
             size             60    1.500    0.500      2.000    0.1000   0.2000    0.3000   0.8000   \
             0.6000       0.5000\n\
             colour           60        -        -          -    0.1000   0.2000    0.3000   0.8000   \
             0.6000       0.5000\n"
        );
    }
}
