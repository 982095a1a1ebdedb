//! Training for `ldl`: the declarative TOML task config ([`Config`]), Adam with a step
//! schedule, and the loop that writes a run folder (resolved config, `metrics.jsonl`,
//! checkpoints, `summary.json`).
#![warn(missing_docs)]

mod adam;
mod build;
mod config;
mod error;
mod trainer;

pub use adam::Adam;
pub use build::loss;
pub use config::{
    AxisConfig, AxisKindName, Config, DataConfig, LabelConfig, LossConfig, ModelConfig,
    OptimConfig, RunConfig, SplitConfig, TaskConfig,
};
pub use error::{Error, Result};
pub use trainer::{evaluate, train, EpochRecord, Evaluation, LossSummary, RunSummary};
