//! `[run]`: seed, device, precision, outputs, evaluation and early stopping.

use std::path::PathBuf;

use ldl_core::LabelSpace;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[run]`. Every key has a default ([`RunConfig::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The seed of everything random: initialisation, shuffling, splits, dropout
    /// (default 0).
    pub seed: u64,
    /// `cpu` (default), `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// `f32` (default) or `bf16`: mixed precision, bf16 products and activations with f32
    /// weights, normalisation and loss (see [`ldl_models::Precision`]); CUDA only.
    pub precision: ldl_models::Precision,
    /// The folder runs are written under, relative to the working directory (default
    /// `runs`); each run gets its own subfolder `TASK-N`.
    pub output_dir: PathBuf,
    /// Evaluate on the validation split every this many epochs (default 1).
    pub eval_every: usize,
    /// Stop when the monitored validation score has not improved for this many
    /// evaluations (off when absent).
    pub patience: Option<usize>,
    /// What picks the best checkpoint and drives `patience`: `per-axis` for the MLP whose
    /// axes share no weights (one trunk per axis, or one axis), else `loss` (see [`Monitor`];
    /// [`RunConfig::monitor`] reads it with its default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Monitor>,
    /// The most memory the run may plan to use (`"24GiB"` or bytes): a config whose
    /// estimate exceeds it is refused before anything is built. When absent,
    /// `LDL_MEMORY_LIMIT`, else 3/4 of the machine's memory (see `docs/config.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<crate::ByteSize>,
    /// After each epoch's training, log in `metrics.jsonl` the L2 norm of the gradient
    /// each loss part sends to its head's output weights and to the backbone, on the
    /// first validation batch (default `false`; see `docs/loss.md`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gradient_norms: bool,
    /// Data-parallel training: `none` (default, one process), `mpi` (one process per
    /// rank on the CPU, started by `mpirun` or `srun`; needs ldl built with the `mpi`
    /// feature) or `nccl` (one process per GPU, on `cuda:<local rank>`; needs the `nccl`
    /// feature, and `mpi` for more than one rank). Each rank trains on its part of every
    /// global batch of `optim.batch_size` × ranks samples.
    #[serde(skip_serializing_if = "Distributed::is_none")]
    pub distributed: Distributed,
    /// Synchronised BatchNorm with `run.distributed`: BatchNorm (the image networks' and
    /// the MLP's) normalises with the whole global batch's statistics, summed over the ranks,
    /// instead of each rank's own (default `false`; nothing changes in one process).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sync_batch_norm: bool,
    /// How long a rank waits for the others in one collective before every rank stops
    /// (default 600 s).
    #[serde(skip_serializing_if = "is_default_timeout")]
    pub distributed_timeout_s: u64,
}

/// `run.distributed`: how many processes train together, and over what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distributed {
    /// One process (the default).
    #[default]
    None,
    /// One process per rank over MPI, CPU tensors.
    Mpi,
    /// One process per GPU over NCCL, CUDA tensors, each on the GPU of its local rank
    /// (`run.device` is not read).
    Nccl,
}

impl Distributed {
    fn is_none(&self) -> bool {
        *self == Distributed::None
    }

    /// The engine that runs the collectives.
    pub fn engine(self) -> ldl_distributed::Engine {
        match self {
            Distributed::None => ldl_distributed::Engine::None,
            Distributed::Mpi => ldl_distributed::Engine::Mpi,
            Distributed::Nccl => ldl_distributed::Engine::Nccl,
        }
    }
}

fn is_default_timeout(seconds: &u64) -> bool {
    *seconds == ldl_distributed::DEFAULT_TIMEOUT.as_secs()
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            seed: 0,
            device: "cpu".into(),
            precision: ldl_models::Precision::F32,
            output_dir: PathBuf::from("runs"),
            eval_every: 1,
            patience: None,
            monitor: None,
            memory_limit: None,
            gradient_norms: false,
            distributed: Distributed::None,
            sync_batch_norm: false,
            distributed_timeout_s: ldl_distributed::DEFAULT_TIMEOUT.as_secs(),
        }
    }
}

impl RunConfig {
    /// `run.monitor` as set, or `loss` (a checked config holds the resolved value: see
    /// `Config::check`).
    pub fn monitor(&self) -> Monitor {
        self.monitor.clone().unwrap_or_default()
    }
}

/// `run.monitor`: a validation quantity to optimise, spelled `loss`, `AXIS/mae`,
/// `AXIS/accuracy` or `per-axis`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Monitor {
    /// The validation loss (lower is better; the default).
    #[default]
    Loss,
    /// The validation MAE of an ordered axis (lower is better).
    Mae(String),
    /// The validation accuracy of a categorical axis (higher is better).
    Accuracy(String),
    /// Each axis on its own (`per-axis`): the best checkpoint holds each axis's weights
    /// from the epoch of its own lowest validation MAE (highest accuracy for a
    /// categorical axis; lowest share of the loss for an axis labelled by explicit
    /// distributions, and for a joint group), as if it had been trained alone.
    /// For models whose axes share no weights: the MLP with one trunk per axis.
    PerAxis,
}

impl Monitor {
    /// The monitored value of an evaluation, oriented so that lower is better; `None`
    /// for one it cannot score, and for [`Monitor::PerAxis`], which scores heads one by
    /// one (see `best_epoch.rs`).
    pub fn score(&self, evaluation: &crate::records::Evaluation) -> Option<f64> {
        match self {
            Monitor::Loss => Some(evaluation.loss.total),
            Monitor::Mae(axis) => evaluation.metrics.axis(axis)?.mae,
            Monitor::Accuracy(axis) => evaluation.metrics.axis(axis)?.accuracy.map(|a| -a),
            Monitor::PerAxis => None,
        }
    }

    /// Checks the axis against `space`: MAE needs an ordered axis, accuracy a categorical
    /// one.
    pub fn check(&self, space: &LabelSpace) -> Result<()> {
        let bad = |why: String| Err(Error::Config(format!("`run.monitor`: {why}")));
        let (axis, wants_categorical) = match self {
            Monitor::Loss | Monitor::PerAxis => return Ok(()),
            Monitor::Mae(axis) => (axis, false),
            Monitor::Accuracy(axis) => (axis, true),
        };
        let Some(found) = space.axis(axis) else {
            let names: Vec<&str> = space.axes().iter().map(|a| a.name()).collect();
            return bad(format!(
                "`{axis}` is not an axis of [task] ({})",
                names.join(", ")
            ));
        };
        match (wants_categorical, found.is_categorical()) {
            (false, true) => bad(format!("`{axis}` is categorical: use `{axis}/accuracy`")),
            (true, false) => bad(format!("`{axis}` is ordered: use `{axis}/mae`")),
            _ => Ok(()),
        }
    }

    /// How a config spells it.
    pub fn spelling(&self) -> String {
        match self {
            Monitor::Loss => "loss".into(),
            Monitor::PerAxis => "per-axis".into(),
            Monitor::Mae(axis) => format!("{axis}/mae"),
            Monitor::Accuracy(axis) => format!("{axis}/accuracy"),
        }
    }
}

impl TryFrom<String> for Monitor {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        match text.as_str() {
            "loss" => return Ok(Monitor::Loss),
            "per-axis" => return Ok(Monitor::PerAxis),
            _ => {}
        }
        let bad = |why: String| format!("`run.monitor`: {why}");
        let Some((axis, metric)) = text.rsplit_once('/') else {
            return Err(bad(format!(
                "`{text}`: use `loss`, `per-axis`, `AXIS/mae` or `AXIS/accuracy`"
            )));
        };
        match metric {
            "mae" => Ok(Monitor::Mae(axis.to_string())),
            "accuracy" => Ok(Monitor::Accuracy(axis.to_string())),
            _ => Err(bad(format!(
                "unknown metric `{metric}`; use `mae` or `accuracy`"
            ))),
        }
    }
}

impl From<Monitor> for String {
    fn from(monitor: Monitor) -> String {
        monitor.spelling()
    }
}

impl std::fmt::Display for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Monitor::Loss => write!(f, "lowest validation loss"),
            Monitor::PerAxis => write!(f, "each axis's own best validation MAE, accuracy or loss"),
            Monitor::Mae(axis) => write!(f, "lowest validation {axis} MAE"),
            Monitor::Accuracy(axis) => write!(f, "highest validation {axis} accuracy"),
        }
    }
}

/// Why `precision` cannot run on `device`, if it cannot.
pub(crate) fn precision_refusal(
    precision: ldl_models::Precision,
    device: &candle_core::Device,
) -> Option<String> {
    match precision.check_device(device) {
        Ok(()) => None,
        Err(ldl_models::Error::Device(message)) => Some(message),
        Err(other) => Some(other.to_string()),
    }
}
