//! `[data]`: where the samples come from, their columns, splits and preprocessing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ldl_data::{
    Augment, InputColumns, LabelColumns, LabelEffects, Missing, OnBadSample, SynthConfig,
    TableSpec, UnseenCategory,
};
use serde::{Deserialize, Serialize};

use super::keyword::{keyword_conversions, Keyword};
use super::source::{DataSource, Source};
use super::task::TaskConfig;
use crate::error::{Error, Result};

/// `[data]`: the source table, its columns, splits and preprocessing. `source` is
/// required; every other key has a default ([`DataConfig::new`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `builtin:NAME` (the tables `builtin:bdims` and `builtin:abalone`, or the synthetic
    /// face generator `builtin:faces`, rendered in memory), `hub` (the parquet files of a
    /// Hugging Face dataset, `[data.hub]`) or a path to a `.csv` or `.jsonl` file, relative
    /// to the config file.
    pub source: DataSource,
    /// The Hub dataset of `source = "hub"` (`[data.hub]`).
    pub hub: Option<HubDataConfig>,
    /// The synthetic faces of `builtin:faces` (`[data.faces]`).
    #[serde(default)]
    pub faces: FacesConfig,
    /// How the source is laid out (default `table`).
    #[serde(default)]
    pub format: DataFormat,
    /// The folder images are relative to, for `chalearn` and `dldl-list` (default: the
    /// list's folder).
    pub images: Option<PathBuf>,
    /// Feature columns, in order; all columns not used otherwise when absent. A listed
    /// column whose training values are not all numbers is categorical: one-hot encoded
    /// over the training split's categories.
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
    /// Threads decoding images (default 2; at most [`MAX_LOADER_THREADS`], and lowered to
    /// [`DataConfig::decoding_threads`] on a machine with fewer cores).
    #[serde(default = "default_loader_threads")]
    pub loader_threads: usize,
    /// The label columns of each axis (`[data.labels.AXIS]`; `table` format only).
    #[serde(default, with = "super::labels")]
    pub labels: BTreeMap<String, LabelColumns>,
    /// A subject-id column: splits keep a subject's samples together.
    pub group_column: Option<String>,
    /// How to split train / validation / test.
    #[serde(default)]
    pub split: SplitConfig,
    /// Standardise features with the training split's mean and std (default true).
    #[serde(default = "default_standardize")]
    pub standardize: bool,
    /// `error` (default) or `skip` for bad samples.
    #[serde(default)]
    pub on_bad_sample: OnBadSample,
    /// A feature cell without a value (empty, `NA`, `NaN`): `error` (default, a bad
    /// sample) or `mean` (the training split's mean of the column, stored with the model).
    #[serde(default)]
    pub missing: Missing,
    /// A category of a categorical feature that the training split did not hold, met in
    /// validation, test or prediction: `error` (default, naming row, column and value) or
    /// `zeros` (no category: all its one-hot features 0).
    #[serde(default)]
    pub unseen_category: UnseenCategory,
    /// The std of Gaussian noise added to every training feature, drawn afresh each epoch
    /// (in standardised units unless `standardize = false`): a regulariser akin to ridge
    /// regression's penalty (see `ldl_data::FeatureNoise`). Unset: [`DEFAULT_FEATURE_NOISE`]
    /// for feature columns; image inputs take `augment` instead.
    pub feature_noise: Option<f32>,
}

/// `data.feature_noise` when unset, for feature columns: none. Noise is a regulariser to
/// tune on the validation split, like weight decay: on bdims 0.5 closes the MLP's gap to
/// ridge regression, on abalone 0.3 costs 6% (docs/benchmarks.md).
pub const DEFAULT_FEATURE_NOISE: f32 = 0.0;

// The defaults of [data] that are not their type's default, stated once: serde reads
// them for absent keys, `DataConfig::new` for configs built in code.
fn default_image_size() -> u32 {
    64
}
fn default_loader_threads() -> usize {
    2
}
fn default_standardize() -> bool {
    true
}

/// The most `data.loader_threads` a config may set. Each thread decodes one image at a
/// time, so more threads than a large machine's cores only wait on each other; the bound
/// does not depend on the machine, so a config valid on one is valid on every other.
pub const MAX_LOADER_THREADS: usize = 256;

/// Decoding threads per core worth running: a thread waiting on a file read leaves its
/// core to another, so a few per core keep the cores busy on a slow disk.
const THREADS_PER_CORE: usize = 4;

/// Decoding threads always allowed, whatever the cores counted (a container may report
/// one).
const MIN_THREAD_CAP: usize = 4;

/// `data.format`: how the source is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DataFormat {
    /// CSV or JSONL with `[data.labels]` (`table`, the default).
    #[default]
    Table,
    /// ChaLearn LAP apparent age: image, mean, std (`chalearn`).
    ChaLearn,
    /// DLDL's `path age sigma` lines (`dldl-list`).
    DldlList,
    /// A folder of `AGE_GENDER_RACE_DATE.jpg` files (`utkface`).
    UtkFace,
}

impl Keyword for DataFormat {
    const KEY: &'static str = "data.format";
    const WHAT: &'static str = "format";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("table", DataFormat::Table),
        ("chalearn", DataFormat::ChaLearn),
        ("dldl-list", DataFormat::DldlList),
        ("utkface", DataFormat::UtkFace),
    ];
}
keyword_conversions!(DataFormat);

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

/// `[data.faces]`: the set of synthetic faces `builtin:faces` renders (in memory, at
/// `data.image_size`). Its table has the columns `age`, `apparent_age`,
/// `apparent_age_std`, `yaw`, `pitch`, `roll` and `identity`, for `[data.labels]` and
/// `data.group_column`. Every key has a default ([`FacesConfig::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FacesConfig {
    /// How many faces (default 5000).
    pub count: u64,
    /// The generator's seed (default: `run.seed`): face `i` of a seed is always the same.
    pub seed: Option<u64>,
    /// How many distinct people the faces belong to (default 500).
    pub identities: u64,
    /// Largest |yaw| in degrees (default 90).
    pub max_yaw: f64,
    /// Largest |pitch| in degrees (default 60).
    pub max_pitch: f64,
    /// Largest |roll| in degrees (default 30).
    pub max_roll: f64,
}

impl Default for FacesConfig {
    fn default() -> Self {
        FacesConfig {
            count: 5000,
            seed: None,
            identities: 500,
            max_yaw: 90.0,
            max_pitch: 60.0,
            max_roll: 30.0,
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

    /// Checks the count and the pose ranges, naming the key.
    fn check(&self) -> Result<()> {
        let fail = |key: &str, message: String| {
            Err(Error::Config(format!("`data.faces.{key}`: {message}")))
        };
        if self.count == 0 || self.count > ldl_data::MAX_FACES {
            let (count, max) = (self.count, ldl_data::MAX_FACES);
            return fail("count", format!("must be in 1..={max}, got {count}"));
        }
        // Each identity is a person whose faces stay in one split: with none, no face has
        // a person and every split is empty.
        if self.identities == 0 {
            return fail("identities", "must be ≥ 1, got 0".into());
        }
        for (key, value, limit) in [
            ("max_yaw", self.max_yaw, 180.0),
            ("max_pitch", self.max_pitch, 90.0),
            ("max_roll", self.max_roll, 180.0),
        ] {
            if !(0.0..=limit).contains(&value) {
                return fail(key, format!("must be in [0, {limit}] degrees, got {value}"));
            }
        }
        Ok(())
    }
}

/// `[data.split]`. Every key has a default ([`SplitConfig::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// A column naming each sample's split (`train`, `val`, `test`); overrides fractions.
    pub column: Option<String>,
    /// Fraction of samples for validation (default 0.2).
    pub validation: f64,
    /// Fraction of samples for test (default 0).
    pub test: f64,
    /// A separate file of validation samples, in the source's format and columns
    /// (relative to the config file); replaces the validation fraction.
    pub validation_source: Option<DataSource>,
    /// A separate file of test samples, likewise; replaces the test fraction.
    pub test_source: Option<DataSource>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            column: None,
            validation: 0.2,
            test: 0.0,
            validation_source: None,
            test_source: None,
        }
    }
}

impl DataConfig {
    /// `[data]` reading from `source` (e.g. `builtin:faces`, a CSV file) with every other
    /// key at its default.
    pub fn new(source: DataSource) -> DataConfig {
        DataConfig {
            source,
            hub: None,
            faces: FacesConfig::default(),
            format: DataFormat::default(),
            images: None,
            features: None,
            image_column: None,
            image_size: default_image_size(),
            augment: Augment::default(),
            label_effects: LabelEffects::default(),
            loader_threads: default_loader_threads(),
            labels: BTreeMap::new(),
            group_column: None,
            split: SplitConfig::default(),
            standardize: default_standardize(),
            on_bad_sample: OnBadSample::default(),
            missing: Missing::default(),
            unseen_category: UnseenCategory::default(),
            feature_noise: None,
        }
    }

    /// `feature_noise` as set, else [`DEFAULT_FEATURE_NOISE`] for feature columns and 0
    /// for images.
    pub fn feature_noise(&self) -> f32 {
        match self.feature_noise {
            Some(std) => std,
            None if self.reads_images() => 0.0,
            None => DEFAULT_FEATURE_NOISE,
        }
    }

    /// True when the inputs are images (an image column, or an image-list format).
    pub fn reads_images(&self) -> bool {
        self.image_column.is_some()
            || self.format != DataFormat::Table
            || self.source == DataSource::Faces
    }

    /// The column spec of `[data]`.
    pub fn table_spec(&self) -> Result<TableSpec> {
        let input = match (&self.image_column, &self.features) {
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
        for (axis, label) in &self.labels {
            spec = spec.with_label(axis.clone(), label.clone());
        }
        spec.group = self.group_column.clone();
        spec.split = self.split.column.clone();
        spec.missing = self.missing;
        // Text in a listed column is a category; among all other columns, it is a bad
        // row, since an id or a note column would otherwise become features unseen.
        spec.text_features = self.features.is_some();
        Ok(spec)
    }

    /// How `data.source` is read.
    pub(crate) fn source(&self) -> Result<Source<'_>> {
        self.source_of("data.source", &self.source)
    }

    /// How `source`, the value of `key` (the main source or a split's file), is read,
    /// given `data.format`.
    pub(crate) fn source_of<'s>(&'s self, key: &str, source: &'s DataSource) -> Result<Source<'s>> {
        let path = match source {
            DataSource::Faces => return Ok(Source::Faces),
            DataSource::Builtin(name) => return Ok(Source::Builtin(name)),
            DataSource::Hub => {
                return match &self.hub {
                    Some(hub) => Ok(Source::Hub(&hub.split)),
                    None => fail(
                        key,
                        "`hub` needs [data.hub] with dataset = \"owner/name\"".into(),
                    ),
                }
            }
            DataSource::File(path) => path.as_path(),
        };
        match self.format {
            DataFormat::ChaLearn => return Ok(Source::ChaLearn(path)),
            DataFormat::DldlList => return Ok(Source::DldlList(path)),
            DataFormat::UtkFace => return Ok(Source::UtkFace(path)),
            DataFormat::Table => {}
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(Source::Csv(path)),
            Some("jsonl") => Ok(Source::Jsonl(path)),
            _ => fail(
                key,
                format!(
                    "`{source}` is neither `builtin:NAME` nor a .csv or .jsonl file (or set \
                     data.format for an image list)"
                ),
            ),
        }
    }

    /// Makes the file paths of `[data]` absolute against `folder` (the config file's),
    /// so that the copy saved in the run folder still finds the data.
    pub(crate) fn resolve_paths(&mut self, folder: &Path) {
        let absolute = |path: &Path| {
            let joined = folder.join(path);
            std::path::absolute(&joined).unwrap_or(joined)
        };
        let split = &mut self.split;
        let sources = [&mut split.validation_source, &mut split.test_source];
        for source in sources.into_iter().flatten().chain([&mut self.source]) {
            if let DataSource::File(path) = source {
                if path.is_relative() {
                    *path = absolute(path);
                }
            }
        }
        if let Some(images) = &mut self.images {
            if images.is_relative() {
                *images = absolute(images);
            }
        }
    }

    /// Checks what serde cannot (label columns against the axes, the split files, the
    /// Hub dataset, the faces, image sizes, augmentation), naming the key.
    pub(crate) fn check(&self, task: &TaskConfig) -> Result<()> {
        self.check_labels(task)?;
        let min_size = ldl_models::MIN_INPUT_SIZE as u32;
        if self.image_size < min_size && self.reads_images() {
            return fail(
                "data.image_size",
                format!("must be at least {min_size}, got {}", self.image_size),
            );
        }
        if self.loader_threads > MAX_LOADER_THREADS {
            return fail(
                "data.loader_threads",
                format!(
                    "must be at most {MAX_LOADER_THREADS}, got {}; more threads than cores \
                     only wait on each other (ldl runs at most {THREADS_PER_CORE} per core)",
                    self.loader_threads
                ),
            );
        }
        self.check_label_effects(task)?;
        self.check_hub()?;
        self.source()?;
        self.check_split_files()?;
        if self.source == DataSource::Faces {
            if self.image_column.is_some()
                || self.features.is_some()
                || self.format != DataFormat::Table
            {
                return fail(
                    "data.source",
                    "`builtin:faces` renders its own images: remove data.image_column, \
                     data.features and data.format"
                        .into(),
                );
            }
            self.faces.check()?;
        }
        Ok(())
    }

    /// The threads that decode images: `loader_threads`, lowered to four per core (at
    /// least four in all). Batches are the same whatever the number of threads.
    pub fn decoding_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cap = (THREADS_PER_CORE * cores).max(MIN_THREAD_CAP);
        self.loader_threads.clamp(1, cap)
    }

    /// The remaining checks, after the model's: the image size's upper bound, the
    /// augmentation, the column spec and no label among the features.
    pub(crate) fn check_inputs(&self) -> Result<TableSpec> {
        if self.image_size > 1024 {
            return fail(
                "data.image_size",
                format!("must be at most 1024, got {}", self.image_size),
            );
        }
        self.augment
            .validate()
            .map_err(|e| Error::Config(format!("`data.augment`: {e}")))?;
        self.check_feature_noise()?;
        // After the spec, whose error for features beside an image column comes first.
        let spec = self.table_spec()?;
        self.check_features_are_not_labels()?;
        Ok(spec)
    }

    /// `feature_noise` in range, and only where there are feature columns to add it to.
    fn check_feature_noise(&self) -> Result<()> {
        let std = self.feature_noise();
        if self.reads_images() && std != 0.0 {
            return fail(
                "data.feature_noise",
                format!(
                    "adds noise to feature columns, and this config reads images (got                      {std}); remove it and augment images with [data.augment]"
                ),
            );
        }
        ldl_data::FeatureNoise::new(std, 0)
            .map(drop)
            .map_err(|e| Error::Config(format!("`data.feature_noise`: {e}")))
    }

    /// Every axis has label columns in a table, and every label names an axis.
    fn check_labels(&self, task: &TaskConfig) -> Result<()> {
        if self.format == DataFormat::Table {
            if let Some(axis) = task
                .axes
                .iter()
                .find(|a| !self.labels.contains_key(&a.name))
            {
                let name = &axis.name;
                return fail(
                    "data.labels",
                    format!("axis `{name}` has no label columns; add [data.labels.{name}]"),
                );
            }
        }
        if let Some(name) = self
            .labels
            .keys()
            .find(|name| !task.axes.iter().any(|a| &a.name == *name))
        {
            return fail(
                &format!("data.labels.{name}"),
                format!("`{name}` is not an axis of [task]"),
            );
        }
        Ok(())
    }

    /// A label column listed as a feature would let the model read its own answer.
    fn check_features_are_not_labels(&self) -> Result<()> {
        let Some(features) = &self.features else {
            return Ok(());
        };
        for (axis, columns) in &self.labels {
            let label_columns: Vec<&String> = match columns {
                LabelColumns::Value { value, std } => std::iter::once(value).chain(std).collect(),
                LabelColumns::Distribution(columns) => columns.iter().collect(),
                LabelColumns::Class(column) => vec![column],
            };
            if let Some(column) = label_columns.into_iter().find(|c| features.contains(c)) {
                return fail(
                    "data.features",
                    format!(
                        "`{column}` is a label column of axis `{axis}` ([data.labels.{axis}]); \
                         a label cannot also be an input: remove `{column}` from data.features"
                    ),
                );
            }
        }
        Ok(())
    }

    /// Flips and rotations of images with pose labels need label effects.
    fn check_label_effects(&self, task: &TaskConfig) -> Result<()> {
        let geometric = self.augment.flip || self.augment.rotation > 0.0;
        let effects = &self.label_effects;
        let no_effects = effects.negate_on_flip.is_empty() && effects.rotation_adds_to.is_none();
        let pose_axis = task
            .axes
            .iter()
            .find(|a| matches!(a.name.as_str(), "yaw" | "roll"));
        match pose_axis {
            Some(axis) if geometric && no_effects => fail(
                "data.label_effects",
                format!(
                    "flips and rotations change the `{}` label, but no label effects are set; \
                     add label_effects = {{ negate_on_flip = [\"yaw\", \"roll\"], \
                     rotation_adds_to = \"roll\" }} (keeping the axes you have)",
                    axis.name
                ),
            ),
            _ => Ok(()),
        }
    }

    /// Split files: not with a split column, a Hub dataset or a built-in source.
    fn check_split_files(&self) -> Result<()> {
        let split = &self.split;
        for (key, file) in [
            ("data.split.validation_source", &split.validation_source),
            ("data.split.test_source", &split.test_source),
        ] {
            let Some(file) = file else { continue };
            if split.column.is_some() {
                return fail(key, "give split files or a split column, not both".into());
            }
            if self.source == DataSource::Hub {
                return fail(
                    key,
                    "a Hub dataset takes its other splits from the dataset: use \
                     data.hub.validation_split / data.hub.test_split"
                        .into(),
                );
            }
            if !self.source.is_file() || !file.is_file() {
                return fail(
                    key,
                    "split files need a file source, not a built-in one".into(),
                );
            }
            self.source_of(key, file)?;
        }
        Ok(())
    }

    /// Checks `source = "hub"` against `[data.hub]` and the keys that do not apply to it.
    fn check_hub(&self) -> Result<()> {
        let hub = match (&self.hub, self.source == DataSource::Hub) {
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
                        self.source
                    ),
                )
            }
            (None, false) => return Ok(()),
            (Some(hub), true) => hub,
        };
        hub.check(self.split.column.is_some())?;
        if self.format != DataFormat::Table {
            return fail(
                "data.format",
                format!(
                    "a Hub dataset is read as a table of columns; remove data.format = \"{}\" \
                     and map the columns with data.image_column and [data.labels]",
                    self.format
                ),
            );
        }
        if self.images.is_some() {
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

impl HubDataConfig {
    /// Checks the dataset name and the split names; `split_column` says whether
    /// `data.split.column` is set too.
    fn check(&self, split_column: bool) -> Result<()> {
        if let Err(e) = self.dataset.parse::<ldl_hub::DatasetSpec>() {
            return fail("data.hub.dataset", e.to_string());
        }
        let name_check = |key: &str, value: &str| {
            if value.trim().is_empty() || value.contains('/') {
                return fail(key, format!("`{value}` must be a name without `/`"));
            }
            Ok(())
        };
        name_check("data.hub.config", &self.config)?;
        name_check("data.hub.split", &self.split)?;
        for (key, value) in [
            ("data.hub.validation_split", &self.validation_split),
            ("data.hub.test_split", &self.test_split),
        ] {
            let Some(value) = value else { continue };
            name_check(key, value)?;
            if *value == self.split {
                return fail(
                    key,
                    format!("`{value}` is also the training split (data.hub.split)"),
                );
            }
            if split_column {
                return fail(key, "give hub splits or a split column, not both".into());
            }
        }
        match (&self.validation_split, &self.test_split) {
            (Some(v), Some(t)) if v == t => fail(
                "data.hub.test_split",
                format!("`{t}` is also the validation split (data.hub.validation_split)"),
            ),
            _ => Ok(()),
        }
    }
}

/// The error of a bad value at `key`.
fn fail<T>(key: &str, message: String) -> Result<T> {
    Err(Error::Config(format!("`{key}`: {message}")))
}
