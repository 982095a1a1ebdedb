//! Training for `ldl`: the declarative TOML task config ([`Config`]), Adam with a step
//! schedule, and the loop that writes a run folder (resolved config, `metrics.jsonl`,
//! checkpoints, `summary.json`).
#![warn(missing_docs)]

mod adam;
mod adam_cpu;
#[cfg(feature = "cuda")]
mod adam_cuda;
mod axis_table;
mod baselines;
mod batch_norm_sync;
mod batches;
mod best_epoch;
mod commit;
mod compare;
mod config;
mod epoch;
mod error;
mod evaluation;
mod export;
mod export_onnx;
mod fit;
mod gradient_norms;
mod head_prior;
mod head_start;
mod hub_data;
mod inputs;
mod numeric;
mod output;
mod path_start;
mod plot;
mod records;
mod run_folder;
mod run_lock;
mod runtime_tuning;
mod schedule;
mod stop;
mod suggest;
mod target_shape;
mod trained;
mod trainer;

pub use adam::Adam;
pub use axis_table::{AxisRow, AxisTable};
pub use baselines::Baseline;
pub use compare::{
    compare, AxisResult, CompareColumns, Comparison, ComponentResult, LdlResult, LdlSpread,
    LossResult,
};
pub use config::ByteSize;
pub use config::{
    AxisBins, AxisConfig, AxisKindName, Backbone, CheckedConfig, Config, DataConfig, DataFormat,
    DataSource, Distributed, FacesConfig, HeadInit, HubDataConfig, JointConfig, LossConfig,
    LossKind, ModelConfig, Monitor, OnNonFinite, OptimConfig, RunConfig, SplitConfig, TaskConfig,
    Trunk, DEFAULT_FEATURE_NOISE, MAX_LOADER_THREADS,
};
pub use error::{Error, Result};
pub use export::{
    export_checkpoint_onnx, export_run, export_run_with, ExportOptions, IfExists, MODEL_FILES,
};
pub use export_onnx::{onnx_input, ONNX_FILE};
pub use fit::{Control, FitReport, Report, Trainer};
pub use gradient_norms::{gradient_norms, TOTAL_KEY as GRADIENT_NORM_TOTAL};
pub use hub_data::read_hub_split;
pub use ldl_core::{Axis, AxisEstimate, AxisKind};
pub use ldl_data::{write_synthetic_set, SynthConfig, MAX_FACES};
pub use ldl_distributed::launcher_rank;
pub use plot::{plot_groups, plot_runs, RunCurves};
pub use runtime_tuning::{tune_for_training, CANDLE_SPIN_LIMIT};

/// Parses a device name (`cpu`, `cuda`, `cuda:N`, `auto`).
pub fn device(name: &str) -> Result<candle_core::Device> {
    Ok(ldl_models::device(name)?)
}
pub use evaluation::evaluate;
pub use records::{
    EpochRecord, Evaluation, GradientNorm, LossSummary, MajorityClass, MeanDistribution,
    MeanPredictor, MeanStd, Progress, RunSummary, SplitRows,
};
pub use run_folder::{Run, RunFolder};
pub use stop::StopToken;
pub use trained::{local_checkpoint, Prediction, PredictionInput, Predictor, TrainedModel};
pub use trainer::{check_resumable, resume, train};
