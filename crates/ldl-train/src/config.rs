//! The declarative task config: a TOML file with `[task]`, `[data]`, `[model]`, `[loss]`,
//! `[optim]` and `[run]`. Every section but `[task]` and `[data]` has defaults; unknown
//! keys are refused with the nearest valid key suggested. `docs/config.md` documents
//! every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ldl_core::{Axis, LabelSpace, OutOfRange};
use ldl_data::{
    Augment, InputColumns, LabelColumns, LabelEffects, OnBadSample, SynthConfig, TableSpec,
};
use ldl_models::{BackboneConfig, MlpConfig, VggConfig};
use serde::{Deserialize, Serialize};

pub use crate::build::LossConfig;
use crate::error::{Error, Result};
use crate::suggest::{nearest, suggestion};

/// A whole task config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The label space.
    pub task: TaskConfig,
    /// Where the samples come from and how they split.
    pub data: DataConfig,
    /// The network.
    #[serde(default)]
    pub model: ModelConfig,
    /// The loss.
    #[serde(default)]
    pub loss: LossConfig,
    /// The optimiser and schedule.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Seed, device, outputs.
    #[serde(default)]
    pub run: RunConfig,
}

/// `[task]`: the name and the axes of the label space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// A short name, used for the run folder.
    pub name: String,
    /// The axes, in order (`[[task.axes]]`).
    pub axes: Vec<AxisConfig>,
    /// Joint groups (`[[task.joint]]`): axes that share one head over the product of
    /// their bins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joint: Vec<JointConfig>,
}

impl TaskConfig {
    /// The `[task]` of a label space built in code: its axes and joint groups. Fails for
    /// an axis a config cannot express (uneven bin centres from [`Axis::from_centers`]).
    pub fn from_label_space(name: impl Into<String>, space: &LabelSpace) -> Result<TaskConfig> {
        Ok(TaskConfig {
            name: name.into(),
            axes: space
                .axes()
                .iter()
                .map(AxisConfig::from_axis)
                .collect::<Result<_>>()?,
            joint: space
                .joint_groups()
                .iter()
                .map(|axes| JointConfig { axes: axes.clone() })
                .collect(),
        })
    }
}

impl AxisConfig {
    /// The `[[task.axes]]` entry of an axis, with its default std written out.
    pub fn from_axis(axis: &Axis) -> Result<AxisConfig> {
        let centers = axis.centers();
        let (kind, min, max, period, classes) = match axis.kind() {
            ldl_core::AxisKind::Linear => (
                AxisKindName::Linear,
                Some(centers[0]),
                Some(centers[centers.len() - 1]),
                None,
                None,
            ),
            ldl_core::AxisKind::Circular { period } => (
                AxisKindName::Circular,
                Some(centers[0]),
                None,
                Some(*period),
                None,
            ),
            ldl_core::AxisKind::Categorical { classes } => (
                AxisKindName::Categorical,
                None,
                None,
                None,
                Some(classes.clone()),
            ),
        };
        let config = |step: Option<f64>| AxisConfig {
            name: axis.name().to_string(),
            kind,
            unit: axis.unit().to_string(),
            min,
            max,
            step,
            period,
            classes: classes.clone(),
            default_std: (!axis.is_categorical()).then(|| axis.default_std()),
            out_of_range: axis.out_of_range(),
        };
        if axis.is_categorical() {
            return Ok(config(None));
        }
        // The step recomputed from the centres can be an ulp off the one the axis was
        // made with (0.3 / 3 = 0.09999999999999999): try it rounded to fewer digits too.
        // Evenly spaced bins rebuild exactly with one of them; uneven ones have no config
        // form.
        let step = axis.step();
        let rounded = |digits: i32| {
            let scale = 10f64.powi(digits - 1 - step.abs().log10().floor() as i32);
            (step * scale).round() / scale
        };
        [step, rounded(12), rounded(6)]
            .into_iter()
            .map(|s| config(Some(s)))
            .find(|c| c.build().is_ok_and(|rebuilt| rebuilt == *axis))
            .ok_or_else(|| {
                Error::Config(format!(
                    "axis `{}`: its bins are not evenly spaced, which a config cannot \
                     express; train it through the library API",
                    axis.name()
                ))
            })
    }
}

/// One `[[task.joint]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointConfig {
    /// The member axes (two or more linear or circular axes of `[[task.axes]]`), e.g.
    /// `["yaw", "pitch"]`: one softmax over the yaw × pitch grid.
    pub axes: Vec<String>,
}

/// One `[[task.axes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisConfig {
    /// The axis name.
    pub name: String,
    /// `linear` (default), `circular` or `categorical`.
    #[serde(default)]
    pub kind: AxisKindName,
    /// The unit, printed in reports.
    #[serde(default)]
    pub unit: String,
    /// First bin centre (linear), or the start of the period (circular).
    pub min: Option<f64>,
    /// Last bin centre (linear).
    pub max: Option<f64>,
    /// Distance between bin centres.
    pub step: Option<f64>,
    /// Length of one turn (circular).
    pub period: Option<f64>,
    /// Class names (categorical).
    pub classes: Option<Vec<String>>,
    /// Label std for samples without one (default: two bins).
    pub default_std: Option<f64>,
    /// `error` (default) or `clamp` for values outside the axis.
    #[serde(default)]
    pub out_of_range: OutOfRange,
}

/// The kinds of axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AxisKindName {
    /// Ordered bins on a line.
    #[default]
    Linear,
    /// Ordered bins on a circle.
    Circular,
    /// Unordered classes.
    Categorical,
}

/// `[data]`: the source table, its columns, splits and preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `builtin:NAME` (the tables `builtin:bdims` and `builtin:abalone`, or the synthetic
    /// face generator `builtin:faces`, rendered in memory), `hub` (the parquet files of a
    /// Hugging Face dataset, `[data.hub]`) or a path to a `.csv` or `.jsonl` file, relative
    /// to the config file.
    pub source: String,
    /// The Hub dataset of `source = "hub"` (`[data.hub]`).
    pub hub: Option<HubDataConfig>,
    /// The synthetic faces of `builtin:faces` (`[data.faces]`).
    #[serde(default)]
    pub faces: FacesConfig,
    /// `table` (default: CSV or JSONL with `[data.labels]`), `chalearn` (image, mean,
    /// std), `dldl-list` (`path age sigma` lines) or `utkface` (a folder of
    /// `AGE_GENDER_RACE_DATE.jpg` files).
    #[serde(default = "default_format")]
    pub format: String,
    /// The folder images are relative to, for `chalearn` and `dldl-list` (default: the
    /// list's folder).
    pub images: Option<PathBuf>,
    /// Feature columns, in order; all columns not used otherwise when absent.
    pub features: Option<Vec<String>>,
    /// A column of image paths (relative to the table): the inputs are images.
    pub image_column: Option<String>,
    /// Side of the square images the network sees (default 64).
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    /// Training-time augmentation of images (none by default).
    #[serde(default)]
    pub augment: Augment,
    /// How augmentation changes labels (which axes a flip negates, which a rotation
    /// adds to).
    #[serde(default)]
    pub label_effects: LabelEffects,
    /// Threads decoding images (default 2).
    #[serde(default = "default_loader_threads")]
    pub loader_threads: usize,
    /// The label columns of each axis (`[data.labels.AXIS]`; `table` format only).
    #[serde(default)]
    pub labels: BTreeMap<String, LabelConfig>,
    /// A subject-id column: splits keep a subject's samples together.
    pub group_column: Option<String>,
    /// How to split train / validation / test.
    #[serde(default)]
    pub split: SplitConfig,
    /// Standardise features with the training split's mean and std (default true).
    #[serde(default = "yes")]
    pub standardize: bool,
    /// `error` (default) or `skip` for bad samples.
    #[serde(default)]
    pub on_bad_sample: OnBadSample,
}

fn yes() -> bool {
    true
}

/// `[data.hub]`: a dataset on the Hugging Face Hub, read from its parquet files (by
/// default the Hub's parquet conversion, revision `refs/convert/parquet`). Its columns are
/// mapped like a table's: `data.image_column` (an `Image` feature or a binary column),
/// `data.features`, `[data.labels]`, `data.group_column`, `data.split.column`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubDataConfig {
    /// `owner/name[@revision]`.
    pub dataset: String,
    /// The config (subset): the folder of the parquet conversion (default `default`).
    #[serde(default = "default_hub_config")]
    pub config: String,
    /// The split trained on (default `train`).
    #[serde(default = "default_hub_split")]
    pub split: String,
    /// A split of the dataset used for validation; replaces the validation fraction.
    pub validation_split: Option<String>,
    /// A split of the dataset used for testing; replaces the test fraction.
    pub test_split: Option<String>,
}

fn default_hub_config() -> String {
    "default".into()
}

fn default_hub_split() -> String {
    "train".into()
}

/// The `data.source` that reads `[data.hub]`.
pub const HUB_SOURCE: &str = "hub";

/// `[data.faces]`: the set of synthetic faces `builtin:faces` renders (in memory, at
/// `data.image_size`). Its table has the columns `age`, `apparent_age`,
/// `apparent_age_std`, `yaw`, `pitch`, `roll` and `identity`, for `[data.labels]` and
/// `data.group_column`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacesConfig {
    /// How many faces (default 5000).
    #[serde(default = "default_face_count")]
    pub count: u64,
    /// The generator's seed (default: `run.seed`): face `i` of a seed is always the same.
    pub seed: Option<u64>,
    /// How many distinct people the faces belong to (default 500).
    #[serde(default = "default_identities")]
    pub identities: u64,
    /// Largest |yaw| in degrees (default 90).
    #[serde(default = "default_max_yaw")]
    pub max_yaw: f64,
    /// Largest |pitch| in degrees (default 60).
    #[serde(default = "default_max_pitch")]
    pub max_pitch: f64,
    /// Largest |roll| in degrees (default 30).
    #[serde(default = "default_max_roll")]
    pub max_roll: f64,
}

fn default_face_count() -> u64 {
    5000
}
fn default_identities() -> u64 {
    500
}
fn default_max_yaw() -> f64 {
    90.0
}
fn default_max_pitch() -> f64 {
    60.0
}
fn default_max_roll() -> f64 {
    30.0
}

impl Default for FacesConfig {
    fn default() -> Self {
        FacesConfig {
            count: default_face_count(),
            seed: None,
            identities: default_identities(),
            max_yaw: default_max_yaw(),
            max_pitch: default_max_pitch(),
            max_roll: default_max_roll(),
        }
    }
}

impl FacesConfig {
    /// The generator's settings for images of `size` pixels, seeded by `run_seed` unless
    /// `seed` is set.
    pub fn generator(&self, size: u32, run_seed: u64) -> SynthConfig {
        SynthConfig {
            size,
            seed: self.seed.unwrap_or(run_seed),
            identities: self.identities,
            max_yaw: self.max_yaw,
            max_pitch: self.max_pitch,
            max_roll: self.max_roll,
        }
    }
}

fn default_format() -> String {
    "table".into()
}

fn default_image_size() -> u32 {
    64
}

fn default_loader_threads() -> usize {
    2
}

/// `[data.labels.AXIS]`: exactly one of `value`, `distribution`, `class`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    /// The value column.
    pub value: Option<String>,
    /// A per-sample std column (with `value`).
    pub std: Option<String>,
    /// One column per bin with an explicit distribution.
    pub distribution: Option<Vec<String>>,
    /// A class name or index column (categorical axes).
    pub class: Option<String>,
}

impl DataConfig {
    /// `[data]` reading from `source` (e.g. `builtin:faces`, a CSV file) with every other
    /// key at its default.
    pub fn new(source: impl Into<String>) -> DataConfig {
        let mut table = toml::Table::new();
        table.insert("source".into(), toml::Value::String(source.into()));
        // Every other key has a serde default, so this cannot fail.
        toml::Value::Table(table)
            .try_into()
            .expect("`source` is the only required key of [data]")
    }
}

/// `[data.split]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// A column naming each sample's split (`train`, `val`, `test`); overrides fractions.
    pub column: Option<String>,
    /// Fraction of samples for validation (default 0.2).
    #[serde(default = "default_validation")]
    pub validation: f64,
    /// Fraction of samples for test (default 0).
    #[serde(default)]
    pub test: f64,
    /// A separate file of validation samples, in the source's format and columns
    /// (relative to the config file); replaces the validation fraction.
    pub validation_source: Option<String>,
    /// A separate file of test samples, likewise; replaces the test fraction.
    pub test_source: Option<String>,
}

fn default_validation() -> f64 {
    0.2
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            column: None,
            validation: default_validation(),
            test: 0.0,
            validation_source: None,
            test_source: None,
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `mlp` (default), `tiny-age-net`, `thin-age-net`.
    #[serde(default = "default_backbone")]
    pub backbone: String,
    /// Hidden layer widths of the MLP (default `[64, 64]`).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// BatchNorm in the MLP's hidden layers (default true).
    #[serde(default = "yes")]
    pub batch_norm: bool,
    /// Dropout after the MLP's hidden layers (default 0).
    #[serde(default)]
    pub dropout: f64,
    /// Width multiplier of the age networks (default 1).
    #[serde(default = "one")]
    pub width: f64,
    /// Biases in the age networks' convolutions (default false, as DLDL-v2; VGG-16's
    /// ImageNet weights have them).
    #[serde(default)]
    pub conv_bias: bool,
    /// Fine-tuning: start from the weights of this ldl checkpoint (relative to the config
    /// file, or a Hub path `hf://owner/name[@revision][/file]`) wherever name and shape match; heads of another size, and tensors it lacks,
    /// keep their fresh initialisation. Ignored when resuming.
    pub init_from: Option<PathBuf>,
}

fn default_backbone() -> String {
    "mlp".into()
}

fn default_hidden() -> Vec<usize> {
    vec![64, 64]
}

fn one() -> f64 {
    1.0
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backbone: default_backbone(),
            hidden: default_hidden(),
            batch_norm: true,
            dropout: 0.0,
            width: 1.0,
            conv_bias: false,
            init_from: None,
        }
    }
}

/// `[optim]`: Adam with a step schedule, as DLDL-v2 trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Learning rate (default 1e-3).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// L2 weight decay added to the gradient, as PyTorch's Adam (default 0).
    #[serde(default)]
    pub weight_decay: f64,
    /// Batch size (default 32).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Epochs (default 60).
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Multiply the learning rate by `lr_gamma` every this many epochs (default 30).
    #[serde(default = "default_lr_step")]
    pub lr_step_epochs: usize,
    /// The factor (default 0.1).
    #[serde(default = "default_lr_gamma")]
    pub lr_gamma: f64,
    /// What a NaN or infinite loss or gradient does: stop the run (default) or skip the
    /// batch and count it.
    #[serde(default)]
    pub on_nonfinite: OnNonFinite,
}

/// `optim.on_nonfinite`: what a batch with a NaN or infinite loss or gradient does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNonFinite {
    /// Stop the run with a message naming the epoch, the batch, and the loss part or the
    /// variable; the last committed epoch stays saved (the default).
    #[default]
    Stop,
    /// Leave the weights, the optimiser and the BatchNorm statistics as they were before
    /// the batch, count it (`skipped_batches` in `metrics.jsonl` and `summary.json`) and
    /// go on. An epoch whose every batch is skipped still stops the run.
    Skip,
}

fn default_lr() -> f64 {
    1e-3
}

fn default_batch_size() -> usize {
    32
}

fn default_epochs() -> usize {
    60
}

fn default_lr_step() -> usize {
    30
}

fn default_lr_gamma() -> f64 {
    0.1
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: default_lr(),
            weight_decay: 0.0,
            batch_size: default_batch_size(),
            epochs: default_epochs(),
            lr_step_epochs: default_lr_step(),
            lr_gamma: default_lr_gamma(),
            on_nonfinite: OnNonFinite::default(),
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The seed of everything random: initialisation, shuffling, splits, dropout.
    #[serde(default)]
    pub seed: u64,
    /// `cpu` (default), `cuda`, `cuda:N` or `auto`.
    #[serde(default = "default_device")]
    pub device: String,
    /// `f32` (default) or `bf16`: mixed precision, bf16 products and activations with f32
    /// weights, normalisation and loss (see [`ldl_models::Precision`]); CUDA only.
    #[serde(default)]
    pub precision: ldl_models::Precision,
    /// The folder runs are written under, relative to the working directory (default
    /// `runs`); each run gets its own subfolder `TASK-N`.
    #[serde(default = "default_output")]
    pub output_dir: PathBuf,
    /// Evaluate on the validation split every this many epochs (default 1).
    #[serde(default = "default_eval_every")]
    pub eval_every: usize,
    /// Stop when the validation loss has not improved for this many evaluations (off
    /// when absent).
    pub patience: Option<usize>,
    /// What picks the best checkpoint and drives `patience`: `loss` (the validation loss,
    /// the default), `AXIS/mae` (lowest MAE on an ordered axis) or `AXIS/accuracy`
    /// (highest accuracy on a categorical axis).
    #[serde(default = "default_monitor")]
    pub monitor: String,
}

fn default_monitor() -> String {
    "loss".into()
}

/// A validation quantity to optimise (`run.monitor`).
#[derive(Debug, Clone, PartialEq)]
pub enum Monitor {
    /// The validation loss (lower is better).
    Loss,
    /// The validation MAE of an ordered axis (lower is better).
    Mae(String),
    /// The validation accuracy of a categorical axis (higher is better).
    Accuracy(String),
}

impl Monitor {
    /// The monitored value of an evaluation, oriented so that lower is better.
    pub fn score(&self, evaluation: &crate::records::Evaluation) -> Option<f64> {
        match self {
            Monitor::Loss => Some(evaluation.loss.total),
            Monitor::Mae(axis) => evaluation.metrics.axis(axis)?.mae,
            Monitor::Accuracy(axis) => evaluation.metrics.axis(axis)?.accuracy.map(|a| -a),
        }
    }
}

impl std::fmt::Display for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Monitor::Loss => write!(f, "lowest validation loss"),
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

fn default_device() -> String {
    "cpu".into()
}

fn default_output() -> PathBuf {
    PathBuf::from("runs")
}

fn default_eval_every() -> usize {
    1
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            seed: 0,
            device: default_device(),
            precision: ldl_models::Precision::F32,
            output_dir: default_output(),
            eval_every: 1,
            patience: None,
            monitor: default_monitor(),
        }
    }
}

impl Config {
    /// A config for `task` and `data` with every other section at its defaults (set
    /// `model`, `loss`, `optim` and `run` afterwards). For building configs in code; see
    /// `examples/age_headpose.rs`.
    pub fn new(task: TaskConfig, data: DataConfig) -> Config {
        Config {
            task,
            data,
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            run: RunConfig::default(),
        }
    }

    /// Reads and checks a config file, applying `key.path=value` overrides (as from
    /// `--set`). Relative data paths are resolved against the file's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let reason = if e.kind() == std::io::ErrorKind::InvalidData {
                "not UTF-8 text; a config is a TOML text file".to_string()
            } else {
                e.to_string()
            };
            Error::Config(format!("{}: cannot read: {reason}", path.display()))
        })?;
        Config::parse(path, &text, overrides)
    }

    /// Parses config text; `path` names it in messages and anchors relative paths.
    pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<Config> {
        let at = |e: toml::de::Error| Error::Config(format!("{}: {}", path.display(), explain(&e)));
        // Parse the text as written first, so that errors point at its lines.
        let mut config: Config = toml::from_str(text).map_err(at)?;
        if !overrides.is_empty() {
            let mut value: toml::Value = toml::from_str(text).map_err(at)?;
            for assignment in overrides {
                apply_override(&mut value, assignment)?;
            }
            config = value.try_into().map_err(|e: toml::de::Error| {
                Error::Config(format!(
                    "{} with --set {}: {}",
                    path.display(),
                    overrides.join(" "),
                    explain(&e)
                ))
            })?;
        }
        let folder = path.parent().unwrap_or(Path::new(""));
        if !config.data.source.starts_with("builtin:") && config.data.source != HUB_SOURCE {
            let source = Path::new(&config.data.source);
            if source.is_relative() {
                // Absolute, so that the copy saved in the run folder still finds the data.
                let joined = folder.join(source);
                let absolute = std::path::absolute(&joined).unwrap_or(joined);
                config.data.source = absolute.to_string_lossy().into_owned();
            }
        }
        for file in [
            &mut config.data.split.validation_source,
            &mut config.data.split.test_source,
        ]
        .into_iter()
        .flatten()
        {
            if Path::new(file.as_str()).is_relative() {
                let joined = folder.join(file.as_str());
                let absolute = std::path::absolute(&joined).unwrap_or(joined);
                *file = absolute.to_string_lossy().into_owned();
            }
        }
        if let Some(init) = &config.model.init_from {
            // `hf://owner/name` is a Hub path, not a file next to the config.
            let hub = init.to_str().is_some_and(ldl_hub::is_hub_path);
            if init.is_relative() && !hub {
                let joined = folder.join(init);
                config.model.init_from = Some(std::path::absolute(&joined).unwrap_or(joined));
            }
        }
        if let Some(images) = &config.data.images {
            if images.is_relative() {
                let joined = folder.join(images);
                config.data.images = Some(std::path::absolute(&joined).unwrap_or(joined));
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// `run.monitor`, checked against the label space.
    pub fn monitor(&self) -> Result<Monitor> {
        let text = self.run.monitor.as_str();
        if text == "loss" {
            return Ok(Monitor::Loss);
        }
        let space = self.label_space()?;
        let bad = |why: String| Error::Config(format!("`run.monitor`: {why}"));
        let Some((axis, metric)) = text.split_once('/') else {
            return Err(bad(format!(
                "`{text}`: use `loss`, `AXIS/mae` or `AXIS/accuracy`"
            )));
        };
        let Some(found) = space.axis(axis) else {
            let names: Vec<&str> = space.axes().iter().map(|a| a.name()).collect();
            return Err(bad(format!(
                "`{axis}` is not an axis of [task] ({})",
                names.join(", ")
            )));
        };
        match (metric, found.is_categorical()) {
            ("mae", false) => Ok(Monitor::Mae(axis.to_string())),
            ("accuracy", true) => Ok(Monitor::Accuracy(axis.to_string())),
            ("mae", true) => Err(bad(format!(
                "`{axis}` is categorical: use `{axis}/accuracy`"
            ))),
            ("accuracy", false) => Err(bad(format!("`{axis}` is ordered: use `{axis}/mae`"))),
            _ => Err(bad(format!(
                "unknown metric `{metric}`; use `mae` or `accuracy`"
            ))),
        }
    }

    /// Checks what serde cannot: ranges and combinations.
    pub fn validate(&self) -> Result<()> {
        let fail = |key: &str, message: String| Err(Error::Config(format!("`{key}`: {message}")));
        self.label_space()?;
        if self.run.device.trim() == "cpu" {
            if let Some(refused) = precision_refusal(self.run.precision, &candle_core::Device::Cpu)
            {
                return fail("run.precision", refused);
            }
        }
        let table = match self.data.format.as_str() {
            "table" => true,
            "chalearn" | "dldl-list" | "utkface" => false,
            other => {
                let formats = ["table", "chalearn", "dldl-list", "utkface"];
                return fail(
                    "data.format",
                    format!(
                        "unknown format `{other}`{}; use one of {}",
                        suggestion(other, &formats),
                        formats.join(", ")
                    ),
                );
            }
        };
        for axis in self.task.axes.iter().filter(|_| table) {
            if !self.data.labels.contains_key(&axis.name) {
                return fail(
                    "data.labels",
                    format!(
                        "axis `{}` has no label columns; add [data.labels.{}]",
                        axis.name, axis.name
                    ),
                );
            }
        }
        for name in self.data.labels.keys() {
            if !self.task.axes.iter().any(|a| &a.name == name) {
                return fail(
                    &format!("data.labels.{name}"),
                    format!("`{name}` is not an axis of [task]"),
                );
            }
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return fail("optim.lr", format!("must be finite and > 0, got {}", o.lr));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return fail(
                "optim.weight_decay",
                format!("must be finite and ≥ 0, got {}", o.weight_decay),
            );
        }
        if o.batch_size == 0 {
            return fail("optim.batch_size", "must be ≥ 1".into());
        }
        if o.epochs == 0 {
            return fail("optim.epochs", "must be ≥ 1".into());
        }
        if o.lr_step_epochs == 0 {
            return fail("optim.lr_step_epochs", "must be ≥ 1".into());
        }
        if !(o.lr_gamma.is_finite() && o.lr_gamma > 0.0) {
            return fail(
                "optim.lr_gamma",
                format!("must be finite and > 0, got {}", o.lr_gamma),
            );
        }
        if self.data.image_size < ldl_models::MIN_INPUT_SIZE as u32 && self.data.reads_images() {
            return fail(
                "data.image_size",
                format!(
                    "must be at least {}, got {}",
                    ldl_models::MIN_INPUT_SIZE,
                    self.data.image_size
                ),
            );
        }
        let geometric = self.data.augment.flip || self.data.augment.rotation > 0.0;
        let effects = &self.data.label_effects;
        let pose_axis = self
            .task
            .axes
            .iter()
            .find(|a| matches!(a.name.as_str(), "yaw" | "roll"));
        if let (true, Some(axis), true) = (
            geometric,
            pose_axis,
            effects.negate_on_flip.is_empty() && effects.rotation_adds_to.is_none(),
        ) {
            return fail(
                "data.label_effects",
                format!(
                    "flips and rotations change the `{}` label, but no label effects are set; \
                     add label_effects = {{ negate_on_flip = [\"yaw\", \"roll\"], rotation_adds_to = \"roll\" }} \
                     (keeping the axes you have)",
                    axis.name
                ),
            );
        }
        self.check_hub()?;
        let split = &self.data.split;
        for (key, file) in [
            ("data.split.validation_source", &split.validation_source),
            ("data.split.test_source", &split.test_source),
        ] {
            let Some(file) = file else { continue };
            if split.column.is_some() {
                return fail(key, "give split files or a split column, not both".into());
            }
            if self.data.source == HUB_SOURCE {
                return fail(
                    key,
                    "a Hub dataset takes its other splits from the dataset: use \
                     data.hub.validation_split / data.hub.test_split"
                        .into(),
                );
            }
            if self.data.source.starts_with("builtin:") || file.starts_with("builtin:") {
                return fail(
                    key,
                    "split files need a file source, not a built-in one".into(),
                );
            }
            if let Err(e) = self.data.source_of(file) {
                return fail(key, e.to_string());
            }
        }
        if self.data.source == FACES {
            if self.data.image_column.is_some() || self.data.features.is_some() || !table {
                return fail(
                    "data.source",
                    "`builtin:faces` renders its own images: remove data.image_column, \
                     data.features and data.format"
                        .into(),
                );
            }
            let count = self.data.faces.count;
            if count == 0 || count > ldl_data::MAX_FACES {
                return fail(
                    "data.faces.count",
                    format!("must be in 1..={}, got {count}", ldl_data::MAX_FACES),
                );
            }
            for (key, value, limit) in [
                ("max_yaw", self.data.faces.max_yaw, 180.0),
                ("max_pitch", self.data.faces.max_pitch, 90.0),
                ("max_roll", self.data.faces.max_roll, 180.0),
            ] {
                if !(0.0..=limit).contains(&value) {
                    return fail(
                        &format!("data.faces.{key}"),
                        format!("must be in [0, {limit}] degrees, got {value}"),
                    );
                }
            }
        }
        self.monitor()?;
        self.backbone(1)?;
        let vgg = self.model.backbone != "mlp";
        if vgg != self.data.reads_images() {
            return fail(
                "model.backbone",
                if vgg {
                    format!(
                        "`{}` reads images; set data.image_column or an image format",
                        self.model.backbone
                    )
                } else {
                    "`mlp` reads feature columns, but the data are images; use tiny-age-net or thin-age-net".into()
                },
            );
        }
        if self.data.image_size > 1024 {
            return fail(
                "data.image_size",
                format!("must be at most 1024, got {}", self.data.image_size),
            );
        }
        self.data
            .augment
            .validate()
            .map_err(|e| Error::Config(format!("`data.augment`: {e}")))?;
        self.table_spec()?;
        if self.run.patience == Some(0) {
            return fail(
                "run.patience",
                "must be ≥ 1 (or left out to train every epoch)".into(),
            );
        }
        if self.run.eval_every == 0 {
            return fail("run.eval_every", "must be ≥ 1".into());
        }
        crate::build::build_loss(&self.loss, &self.label_space()?)?;
        self.backbone(1)?;
        Ok(())
    }

    /// The label space of `[task]`.
    pub fn label_space(&self) -> Result<LabelSpace> {
        let axes = self
            .task
            .axes
            .iter()
            .enumerate()
            .map(|(i, axis)| {
                axis.build()
                    .map_err(|e| Error::Config(format!("`task.axes[{i}]`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut space =
            LabelSpace::new(axes).map_err(|e| Error::Config(format!("`task.axes`: {e}")))?;
        for (i, group) in self.task.joint.iter().enumerate() {
            let members: Vec<&str> = group.axes.iter().map(String::as_str).collect();
            space = space
                .with_joint(&members)
                .map_err(|e| Error::Config(format!("`task.joint[{i}].axes`: {e}")))?;
        }
        Ok(space)
    }

    /// The column spec of `[data]`.
    pub fn table_spec(&self) -> Result<TableSpec> {
        let input = match (&self.data.image_column, &self.data.features) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "`data`: give `image_column` or `features`, not both".into(),
                ))
            }
            (Some(column), None) => InputColumns::Image(column.clone()),
            (None, Some(columns)) => InputColumns::Features(columns.clone()),
            (None, None) => InputColumns::AllOtherColumns,
        };
        let mut spec = TableSpec::new(input);
        for (axis, label) in &self.data.labels {
            let key = format!("data.labels.{axis}");
            let columns = match (&label.value, &label.distribution, &label.class) {
                (Some(value), None, None) => LabelColumns::Value {
                    value: value.clone(),
                    std: label.std.clone(),
                },
                (None, Some(columns), None) if label.std.is_none() => LabelColumns::Distribution(columns.clone()),
                (None, None, Some(column)) if label.std.is_none() => LabelColumns::Class(column.clone()),
                _ => {
                    return Err(Error::Config(format!(
                        "`{key}`: give exactly one of `value` (with an optional `std`), `distribution` or `class`"
                    )))
                }
            };
            spec = spec.with_label(axis.clone(), columns);
        }
        spec.group = self.data.group_column.clone();
        spec.split = self.data.split.column.clone();
        Ok(spec)
    }

    /// The backbone of `[model]`, for inputs of `features` features (MLP).
    pub fn backbone(&self, features: usize) -> Result<BackboneConfig> {
        let m = &self.model;
        let vgg = |base: VggConfig| -> Result<BackboneConfig> {
            let mut config = base
                .with_width(m.width)
                .map_err(|e| Error::Config(format!("`model.width`: {e}")))?;
            config.conv_bias = m.conv_bias;
            Ok(config.into())
        };
        match m.backbone.as_str() {
            "mlp" => {
                if !(0.0..1.0).contains(&m.dropout) {
                    return Err(Error::Config(format!("`model.dropout`: must be in [0, 1), got {}", m.dropout)));
                }
                if m.hidden.contains(&0) {
                    return Err(Error::Config("`model.hidden`: widths must be ≥ 1".into()));
                }
                Ok(MlpConfig {
                    inputs: features,
                    hidden: m.hidden.clone(),
                    batch_norm: m.batch_norm,
                    dropout: m.dropout,
                }
                .into())
            }
            "tiny-age-net" => vgg(VggConfig::tiny_age_net()),
            "thin-age-net" => vgg(VggConfig::thin_age_net()),
            other => Err(Error::Config(format!(
                "`model.backbone`: unknown backbone `{other}`{}; use mlp, tiny-age-net or thin-age-net",
                suggestion(other, &["mlp", "tiny-age-net", "thin-age-net"])
            ))),
        }
    }
}

impl AxisConfig {
    fn build(&self) -> ldl_core::Result<Axis> {
        let need = |what: &str, value: Option<f64>| {
            value.ok_or_else(|| ldl_core::Error::InvalidAxis {
                axis: self.name.clone(),
                message: format!("a {:?} axis needs `{what}`", self.kind).to_lowercase(),
            })
        };
        let axis = match self.kind {
            AxisKindName::Linear => Axis::linear(
                self.name.clone(),
                need("min", self.min)?,
                need("max", self.max)?,
                need("step", self.step)?,
            )?,
            AxisKindName::Circular => Axis::circular(
                self.name.clone(),
                need("min", self.min)?,
                need("period", self.period)?,
                need("step", self.step)?,
            )?,
            AxisKindName::Categorical => Axis::categorical(
                self.name.clone(),
                self.classes
                    .clone()
                    .ok_or_else(|| ldl_core::Error::InvalidAxis {
                        axis: self.name.clone(),
                        message: "a categorical axis needs `classes`".into(),
                    })?,
            )?,
        };
        let axis = axis
            .with_unit(self.unit.clone())
            .with_out_of_range(self.out_of_range);
        match self.default_std {
            Some(std) => axis.with_default_std(std),
            None => Ok(axis),
        }
    }
}

impl Config {
    /// Checks `source = "hub"` against `[data.hub]` and the keys that do not apply to it.
    fn check_hub(&self) -> Result<()> {
        let fail = |key: &str, message: String| Err(Error::Config(format!("`{key}`: {message}")));
        let data = &self.data;
        let hub = data.source == HUB_SOURCE;
        match (&data.hub, hub) {
            (None, true) => {
                return fail(
                    "data.source",
                    "`hub` reads a Hub dataset: add [data.hub] with dataset = \"owner/name\""
                        .into(),
                )
            }
            (Some(_), false) => {
                return fail(
                    "data.hub",
                    format!(
                        "[data.hub] is read only with source = \"hub\" (the source is `{}`)",
                        data.source
                    ),
                )
            }
            (None, false) => return Ok(()),
            (Some(_), true) => {}
        }
        let Some(h) = &data.hub else { return Ok(()) };
        if let Err(e) = h.dataset.parse::<ldl_hub::DatasetSpec>() {
            return fail("data.hub.dataset", e.to_string());
        }
        for (key, value) in [("data.hub.config", &h.config), ("data.hub.split", &h.split)] {
            if value.trim().is_empty() || value.contains('/') {
                return fail(key, format!("`{value}` must be a name without `/`"));
            }
        }
        for (key, value) in [
            ("data.hub.validation_split", &h.validation_split),
            ("data.hub.test_split", &h.test_split),
        ] {
            let Some(value) = value else { continue };
            if value.trim().is_empty() || value.contains('/') {
                return fail(key, format!("`{value}` must be a name without `/`"));
            }
            if *value == h.split {
                return fail(
                    key,
                    format!("`{value}` is also the training split (data.hub.split)"),
                );
            }
            if data.split.column.is_some() {
                return fail(key, "give hub splits or a split column, not both".into());
            }
        }
        if let (Some(v), Some(t)) = (&h.validation_split, &h.test_split) {
            if v == t {
                return fail(
                    "data.hub.test_split",
                    format!("`{t}` is also the validation split (data.hub.validation_split)"),
                );
            }
        }
        if data.format != "table" {
            return fail(
                "data.format",
                format!(
                    "a Hub dataset is read as a table of columns; remove data.format = \"{}\" \
                     and map the columns with data.image_column and [data.labels]",
                    data.format
                ),
            );
        }
        if data.images.is_some() {
            return fail(
                "data.images",
                "a Hub dataset holds its images in a column: remove data.images and set \
                 data.image_column"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The source name of the synthetic face generator.
pub(crate) const FACES: &str = "builtin:faces";

/// The data source as the trainer reads it.
pub(crate) enum Source<'a> {
    Faces,
    Builtin(&'a str),
    Csv(PathBuf),
    Jsonl(PathBuf),
    ChaLearn(PathBuf),
    DldlList(PathBuf),
    UtkFace(PathBuf),
    /// A split of `[data.hub]`'s dataset.
    Hub(&'a str),
}

impl DataConfig {
    /// True when the inputs are images (an image column, or an image-list format).
    pub fn reads_images(&self) -> bool {
        self.image_column.is_some() || self.format != "table" || self.source == FACES
    }

    pub(crate) fn source(&self) -> Result<Source<'_>> {
        self.source_of(&self.source)
    }

    /// How `source` (the main source or a split's file) is read, given `format`.
    pub(crate) fn source_of<'s>(&'s self, source: &'s str) -> Result<Source<'s>> {
        if source == FACES {
            return Ok(Source::Faces);
        }
        if let Some(name) = source.strip_prefix("builtin:") {
            return Ok(Source::Builtin(name));
        }
        if source == HUB_SOURCE {
            return match &self.hub {
                Some(hub) => Ok(Source::Hub(&hub.split)),
                None => Err(Error::Config(
                    "`data.source`: `hub` needs [data.hub] with dataset = \"owner/name\"".into(),
                )),
            };
        }
        let path = PathBuf::from(source);
        match self.format.as_str() {
            "chalearn" => return Ok(Source::ChaLearn(path)),
            "dldl-list" => return Ok(Source::DldlList(path)),
            "utkface" => return Ok(Source::UtkFace(path)),
            _ => {}
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(Source::Csv(path)),
            Some("jsonl") => Ok(Source::Jsonl(path)),
            _ => Err(Error::Config(format!(
                "`{source}` is neither `builtin:NAME` nor a .csv or .jsonl file"
            ))),
        }
    }
}

/// Sets `a.b.c = value` in a TOML document; the value is read as TOML (`0.01`, `true`,
/// `[1, 2]`, `"text"`), or taken as a string if it does not parse.
fn apply_override(document: &mut toml::Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        Error::Config(format!(
            "--set `{assignment}`: expected KEY=VALUE, e.g. optim.lr=0.01"
        ))
    })?;
    let key = key.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = document;
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| {
            Error::Config(format!(
                "--set `{key}`: `{}` is not a table",
                parts[..i].join(".")
            ))
        })?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Err(Error::Config(format!("--set `{assignment}`: empty key")))
}

/// toml's message, with the nearest valid key suggested for an unknown one.
fn explain(error: &toml::de::Error) -> String {
    let message = error.to_string();
    let Some(rest) = message.split("unknown field `").nth(1) else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match nearest(unknown, &candidates) {
        Some(key) => format!("{}\nhint: did you mean `{key}`?", message.trim_end()),
        None => message,
    }
}
