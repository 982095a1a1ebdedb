//! What a run reports: one [`EpochRecord`] per line of `metrics.jsonl`, the
//! [`RunSummary`] of `summary.json`, the values inside them, and the [`Progress`] it
//! shows while it runs. A
//! leaf of the crate: every other module may use it, it uses none of them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ldl_core::metrics::{LdlMeasures, MetricsReport};
use serde::{Deserialize, Serialize};

/// Loss parts averaged over a split: the total and `axis/component` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossSummary {
    /// The weighted total.
    pub total: f64,
    /// Unweighted parts by key (`age/ld`, …).
    pub parts: BTreeMap<String, f64>,
    /// In a label space of several heads, on validation and test splits: each head's
    /// weighted share of the total, by head name (the axis's, or a joint group's): what
    /// `run.monitor = "per-axis"` scores a joint group by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub heads: BTreeMap<String, f64>,
}

/// The loss and metrics of a model over one split (validation, test, or a file given to `ldl eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The loss on the split.
    pub loss: LossSummary,
    /// Every metric per axis.
    pub metrics: MetricsReport,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// The learning rate used.
    pub lr: f64,
    /// The training loss (batch means averaged over the epoch's samples).
    pub train: LossSummary,
    /// Validation results, on evaluation epochs.
    pub validation: Option<Evaluation>,
    /// Wall time of the epoch's training part.
    pub train_seconds: f64,
    /// Training throughput.
    pub samples_per_second: f64,
    /// In data-parallel training: how much of `train_seconds` the steps' collectives took
    /// (the ranks' loss totals and the gradient average, waiting for the slowest rank
    /// included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication_seconds: Option<f64>,
    /// Batches left out for a NaN or infinite loss or gradient
    /// (`optim.on_nonfinite = "skip"`).
    pub skipped_batches: usize,
    /// With `run.gradient_norms`: the gradient norms of each loss part (`axis/component`)
    /// and of the total (`total`) on the first validation batch, after the epoch's
    /// training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_norms: Option<BTreeMap<String, GradientNorm>>,
}

/// The L2 norms of one loss part's gradient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradientNorm {
    /// Over the output weight matrix of the part's head.
    pub head: f64,
    /// Over every trainable variable of the backbone (the layers all heads share).
    pub backbone: f64,
    /// Over the weights of the linear path of the part's head (`model.linear_path`);
    /// absent when the head has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<f64>,
}

/// What a finished run reports (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The last epoch trained (fewer than configured when early stopping ended the run).
    pub epochs: usize,
    /// The epoch with the best validation score (`run.monitor`; the `best` checkpoint).
    /// With `run.monitor = "per-axis"`, the last epoch that changed the checkpoint.
    pub best_epoch: usize,
    /// With `run.monitor = "per-axis"`: each axis's best epoch, which the `best`
    /// checkpoint holds its weights from, by axis name (a joint group's axes share one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub best_epochs: BTreeMap<String, usize>,
    /// Validation results at the best epoch.
    pub best_validation: Evaluation,
    /// Test results of the best checkpoint, when there is a test split.
    pub test: Option<Evaluation>,
    /// Samples per split: train, validation, test.
    pub samples: [usize; 3],
    /// The features the model read, in order (empty for images): a numeric column's
    /// name, or `column=category` for each category of a categorical one.
    #[serde(default)]
    pub features: Vec<String>,
    /// Samples left out as bad (`on_bad_sample = "skip"`), as `file:line: reason`.
    pub skipped: Vec<String>,
    /// Training batches left out for a NaN or infinite loss or gradient, over all epochs
    /// (`optim.on_nonfinite = "skip"`; per epoch in `metrics.jsonl`).
    #[serde(default)]
    pub skipped_batches: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// What always predicting the training mean scores, per ordered axis: the floor a
    /// trained model must beat.
    pub mean_predictor: Vec<MeanPredictor>,
    /// The baseline of categorical axes: always predicting the training split's most
    /// frequent class.
    #[serde(default)]
    pub majority_class: Vec<MajorityClass>,
    /// The LDL baseline of axes whose targets are explicit distributions: always
    /// predicting the training split's mean target distribution.
    #[serde(default)]
    pub mean_distribution: Vec<MeanDistribution>,
    /// With `model.init_from`: the tensors loaded from that checkpoint, newly initialised
    /// and skipped.
    pub init: Option<ldl_models::InitReport>,
    /// What the run warned about at its start (e.g. an axis whose targets do not suit its
    /// loss).
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl RunSummary {
    /// With `run.monitor = "per-axis"`: each axis's best epoch as `age 1, weight 52`, in
    /// the order of `axes` (the names of `[task]`'s axes); `None` for one best epoch.
    pub fn listed_best_epochs<'a>(
        &self,
        axes: impl IntoIterator<Item = &'a str>,
    ) -> Option<String> {
        if self.best_epochs.is_empty() {
            return None;
        }
        let listed: Vec<String> = axes
            .into_iter()
            .filter_map(|axis| Some(format!("{axis} {}", self.best_epochs.get(axis)?)))
            .collect();
        Some(listed.join(", "))
    }
}

/// The rows of each split (`splits.json` in the run folder): the 0-based data rows
/// (after the header, counting rows left out as bad) of the file each split was read
/// from, in increasing order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRows {
    /// The training rows.
    pub train: Vec<u64>,
    /// The validation rows.
    pub validation: Vec<u64>,
    /// The test rows (empty without a test split).
    pub test: Vec<u64>,
    /// The file each non-empty split's rows are counted in, by split name.
    pub files: BTreeMap<String, PathBuf>,
}

/// The MAE of always predicting the training split's mean target value (the circular
/// mean on a circle) on one axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanPredictor {
    /// The axis.
    pub axis: String,
    /// The constant prediction.
    pub value: f64,
    /// Its MAE on the validation split.
    pub validation_mae: f64,
    /// Its MAE on the test split, when there is one.
    pub test_mae: Option<f64>,
}

/// The six LDL measures of always predicting the training split's mean target
/// distribution, on one axis whose targets are explicit distributions: the LDL
/// counterpart of [`MeanPredictor`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanDistribution {
    /// The axis.
    pub axis: String,
    /// The constant prediction: the mean of the training split's target distributions.
    pub distribution: Vec<f64>,
    /// Its measures against the validation split's targets, averaged over the samples.
    pub validation: LdlMeasures,
    /// Its measures against the test split's targets, when there is a test split.
    pub test: Option<LdlMeasures>,
}

/// The accuracy of always predicting the training split's most frequent class on one
/// categorical axis (a sample's class: its label's class, or its distribution's most
/// probable one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MajorityClass {
    /// The axis.
    pub axis: String,
    /// The constant prediction: the most frequent class of the training split (the first
    /// of those tied).
    pub class: String,
    /// Its accuracy on the validation split.
    pub validation_accuracy: f64,
    /// Its accuracy on the test split, when there is one.
    pub test_accuracy: Option<f64>,
}

/// Mean and sample standard deviation of a set of runs' values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (0 for one run).
    pub std: f64,
}

impl MeanStd {
    /// Of `values` (NaN when empty).
    pub fn of(values: &[f64]) -> MeanStd {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        MeanStd { mean, std }
    }
}

impl std::fmt::Display for MeanStd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} ± {:.3}", self.mean, self.std)
    }
}

/// What the trainer reports while it runs, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A training batch of `epoch` finished.
    Batch {
        /// The epoch (from 1).
        epoch: usize,
        /// Batches done in this epoch.
        done: usize,
        /// Batches in the epoch.
        batches: usize,
        /// Training samples seen in this epoch so far.
        samples: usize,
        /// The epoch's mean training loss so far.
        loss: f64,
        /// Seconds since the epoch started.
        seconds: f64,
    },
    /// The training batches of `epoch` are done; validation runs now.
    Validating {
        /// The epoch.
        epoch: usize,
    },
    /// An epoch finished and its record was written to `metrics.jsonl`.
    Epoch(&'a EpochRecord),
    /// Something about the run the user should know before it trains (said once, at
    /// the start; also kept in [`RunSummary::warnings`]).
    Warning(&'a str),
    /// The features the model reads, in order, once the data is read (feature data
    /// only; also kept in [`RunSummary::features`]).
    Features(&'a [String]),
}
