//! Using a trained checkpoint: evaluating it on labelled data and predicting with it.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ldl_core::AxisEstimate;
use ldl_data::{
    read_csv, read_feature_cells, read_feature_rows, read_jsonl, FeatureEncoder, OnBadSample,
    Standardizer,
};
use ldl_models::{CheckpointInfo, InferenceModel, Model};

use crate::config::{CheckedConfig, Config, DataFormat};
use crate::error::{Error, Result};
use crate::evaluation::evaluate;
use crate::records::Evaluation;

/// A model loaded from a checkpoint written by [`crate::train`], with what it needs to
/// read new data: its training config, feature names, feature encoding and
/// standardisation.
pub struct TrainedModel {
    /// The model.
    pub model: Model,
    /// The checkpoint's description.
    pub info: CheckpointInfo,
    /// The config it was trained with, checked.
    pub config: CheckedConfig,
    /// The features the model reads, in order (after encoding).
    pub features: Vec<String>,
    /// How table columns become those features (categories one-hot, missing values
    /// filled); `None` when the features are the columns as they are.
    pub encoder: Option<FeatureEncoder>,
    /// The standardisation fitted on its training split, if it used one.
    pub standardizer: Option<Standardizer>,
    device: Device,
}

/// One input's predictions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// Where the input came from: the row's line in a table, or an image file.
    pub input: PredictionInput,
    /// Mean, std and mode per axis, in label-space order.
    pub axes: Vec<AxisEstimate>,
    /// The predicted distribution per axis.
    pub distributions: Vec<Vec<f64>>,
}

/// What a prediction was made from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionInput {
    /// A row of a table, by its line in the file.
    Line(usize),
    /// An image file.
    Image(std::path::PathBuf),
    /// An input given in memory ([`TrainedModel::predict_inputs`]), by its index among
    /// those given.
    Given(usize),
}

impl std::fmt::Display for PredictionInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PredictionInput::Line(line) => write!(f, "{line}"),
            PredictionInput::Image(path) => write!(f, "{}", path.display()),
            PredictionInput::Given(index) => write!(f, "#{index}"),
        }
    }
}

/// The local file for a checkpoint path: an `hf://owner/name[@revision][/file]` path is
/// downloaded into the Hugging Face cache, or found there (offline with `HF_HUB_OFFLINE=1`);
/// any other path is returned as it is.
pub fn local_checkpoint(path: &Path) -> Result<PathBuf> {
    match path.to_str() {
        Some(text) if ldl_hub::is_hub_path(text) => Ok(ldl_hub::local_path(text)?),
        _ => Ok(path.to_path_buf()),
    }
}

/// Images predicted per forward pass.
const PREDICT_BATCH: usize = 32;

impl TrainedModel {
    /// Loads a checkpoint of a training run, or the `model.safetensors` of an exported
    /// model folder. An `hf://owner/name[@revision][/file]` path is downloaded first (or
    /// found in the Hugging Face cache), see [`local_checkpoint`].
    pub fn load(path: &Path, device: &Device) -> Result<TrainedModel> {
        let local = local_checkpoint(path)?;
        let path = local.as_path();
        let (model, info) = Model::from_checkpoint(path, device)?;
        let field = |key: &str| {
            info.extra.get(key).ok_or_else(|| {
                Error::Usage(format!(
                    "{}: the checkpoint lacks `{key}`; was it written by `ldl train`?",
                    path.display()
                ))
            })
        };
        // Named as the checkpoint's part, not as a config file of the user's.
        let stored = PathBuf::from(format!("{} (its train.config)", path.display()));
        let config = Config::parse_saved(&stored, field("train.config")?).map_err(|e| match e {
            Error::Config(message) => Error::Usage(format!(
                "{message}; the checkpoint is damaged or was not written by ldl"
            )),
            other => other,
        })?;
        let features: Vec<String> = serde_json::from_str(field("train.features")?)
            .map_err(|e| Error::Usage(format!("{}: bad `train.features`: {e}", path.display())))?;
        let encoder = stored_encoder(path, &info, &features)?;
        let standardizer = match info.extra.get("train.standardizer") {
            Some(json) => {
                let standardizer: Standardizer = serde_json::from_str(json).map_err(|e| {
                    Error::Usage(format!("{}: bad `train.standardizer`: {e}", path.display()))
                })?;
                if let Some(problem) = standardizer_problem(&standardizer, &features) {
                    return Err(Error::Usage(format!(
                        "{}: `train.standardizer` {problem}; the file is damaged or was not \
                         written by ldl: use another checkpoint, or train again",
                        path.display()
                    )));
                }
                Some(standardizer)
            }
            None => None,
        };
        Ok(TrainedModel {
            model,
            info,
            config,
            features,
            encoder,
            standardizer,
            device: device.clone(),
        })
    }

    /// Loss and metrics on labelled data: for a feature model, every row of a `.csv` or
    /// `.jsonl` file with the training data's columns; for an image model, a file of the
    /// training's image format (`chalearn`, `dldl-list`, `utkface`), or a table whose
    /// image column is the training's (`image` for models trained on `builtin:faces`,
    /// as in the `manifest.csv` of `ldl synth`). Images are prepared as validation images.
    pub fn evaluate_file(&self, data: &Path) -> Result<Evaluation> {
        let space = self.model.label_space();
        let loss = self.config.loss();
        let batch = self.config.optim.batch_size;
        let mut spec = self.config.table_spec().clone();
        spec.split = None;
        spec.group = None;
        let read_table =
            |spec: &ldl_data::TableSpec| match data.extension().and_then(|e| e.to_str()) {
                Some("jsonl") => read_jsonl(data, spec, space, OnBadSample::Error),
                _ => read_csv(data, spec, space, OnBadSample::Error),
            };
        if self.config.data.reads_images() {
            let policy = OnBadSample::Error;
            let table = match self.config.data.format {
                DataFormat::ChaLearn => ldl_data::read_chalearn(data, None, space, policy)?,
                DataFormat::DldlList => ldl_data::read_dldl_list(data, None, space, policy)?,
                DataFormat::UtkFace => ldl_data::read_utkface(data, space, policy)?,
                DataFormat::Table => {
                    let column = self.config.data.image_column.as_deref().unwrap_or("image");
                    spec.input = ldl_data::InputColumns::Image(column.to_string());
                    read_table(&spec)?
                }
            };
            let pipeline = ldl_data::ImagePipeline::new(self.config.data.image_size);
            let loader = ldl_data::ImageLoader::new(
                table.samples,
                space,
                pipeline,
                batch,
                self.config.data.loader_threads,
            )?;
            return evaluate(&self.model, loss, space, loader.epoch(0), &self.device);
        }
        spec.input = ldl_data::InputColumns::Features(self.columns());
        spec.missing = self
            .encoder
            .as_ref()
            .map_or_else(Default::default, |e| e.missing());
        spec.text_features = self.encoder.as_ref().is_some_and(|e| e.reads_text());
        let mut samples = read_table(&spec)?.samples;
        if let Some(encoder) = &self.encoder {
            encoder.apply_to(&mut samples)?;
        }
        if let Some(standardizer) = &self.standardizer {
            standardizer.apply_to(&mut samples)?;
        }
        let batches = ldl_data::FeatureLoader::new(&samples, space, batch)?;
        evaluate(&self.model, loss, space, batches.epoch(0), &self.device)
    }

    /// Predictions for every row of a `.csv` file with the model's feature columns.
    pub fn predict_file(&self, data: &Path) -> Result<Vec<Prediction>> {
        if self.config.data.reads_images() {
            return Err(Error::Usage(
                "this model reads images: give image files or folders of them, not a table".into(),
            ));
        }
        let rows = self.feature_rows(data)?;
        let mut predictions = Vec::with_capacity(rows.len());
        let inference = self.model.inference()?;
        for chunk in rows.chunks(256) {
            let mut flat = Vec::with_capacity(chunk.len() * self.features.len());
            for (_, features) in chunk {
                flat.extend(self.feature_input(features));
            }
            let inputs = Tensor::from_vec(flat, (chunk.len(), self.features.len()), &self.device)?;
            let sources = chunk.iter().map(|(line, _)| PredictionInput::Line(*line));
            predictions.extend(self.predict_batch(&inference, &inputs, sources)?);
        }
        Ok(predictions)
    }

    /// Whether the model reads images; otherwise it reads the feature vectors of
    /// [`TrainedModel::features`].
    pub fn reads_images(&self) -> bool {
        self.config.data.reads_images()
    }

    /// A decoded image as the model's input, prepared as [`TrainedModel::predict_images`]
    /// prepares its files (resized and centre-cropped to `data.image_size`, no
    /// augmentation, normalised): CHW floats. Callers holding encoded bytes decode them with
    /// `ldl_data::decode_bytes`, which applies the same limits as reading a file.
    pub fn image_input(&self, image: &ldl_data::RgbImage) -> Result<Vec<f32>> {
        let pipeline = ldl_data::ImagePipeline::new(self.config.data.image_size);
        let (pixels, _) = pipeline.process(image, &ldl_data::Augment::default(), None)?;
        Ok(pixels)
    }

    /// A feature vector (the model's features, in order, encoded) as the model's input:
    /// standardised as in training when the model was trained with standardisation, as
    /// [`TrainedModel::predict_file`] does with each row.
    pub fn feature_input(&self, features: &[f32]) -> Vec<f32> {
        match &self.standardizer {
            Some(s) => s.apply(features),
            None => features.to_vec(),
        }
    }

    /// Predictions for inputs already prepared as the model reads them: each one
    /// [`TrainedModel::image_input`] or [`TrainedModel::feature_input`] gives. One forward
    /// pass for all of them, so callers gathering inputs from several places (a server's
    /// concurrent requests) choose the batch; an input of the wrong length is refused.
    /// For many calls, [`TrainedModel::predictor`] prepares the weights once.
    pub fn predict_inputs(&self, inputs: &[Vec<f32>]) -> Result<Vec<Prediction>> {
        self.predictor()?.predict_inputs(inputs)
    }

    /// The model ready for many [`Predictor::predict_inputs`] calls: its inference pass
    /// built once (BatchNorm folded, kernels transformed), as a server keeps it.
    pub fn predictor(&self) -> Result<Predictor<'_>> {
        Ok(Predictor {
            trained: self,
            inference: self.model.inference()?,
        })
    }

    /// One row of named feature values (as a JSON object: numbers, strings for
    /// categorical columns, `null` for a missing value) encoded as in training: the
    /// model's features in order, not yet standardised (see
    /// [`TrainedModel::feature_input`]). A column left out counts as missing, filled as in
    /// training or refused. The error names the column: one the model does not read,
    /// one without a value, or one whose value is of the wrong type.
    pub fn encode_named_features(
        &self,
        row: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<f32>> {
        let columns = self.columns();
        if let Some(unknown) = row.keys().find(|name| !columns.contains(name)) {
            return Err(Error::Usage(format!(
                "unknown feature `{unknown}`; the model reads {}",
                columns.join(", ")
            )));
        }
        let cells = columns
            .iter()
            .map(|name| feature_cell(name, row.get(name)))
            .collect::<Result<Vec<_>>>()?;
        match &self.encoder {
            Some(encoder) => encoder.encode(&cells).map_err(Error::Usage),
            None => cells
                .iter()
                .zip(&columns)
                .map(|(cell, name)| match cell {
                    ldl_data::FeatureValue::Number(x) => Ok(*x),
                    ldl_data::FeatureValue::Missing => {
                        Err(Error::Usage(format!("feature `{name}` has no value")))
                    }
                    ldl_data::FeatureValue::Text(text) => Err(Error::Usage(format!(
                        "feature `{name}`: \"{text}\" is not a number"
                    ))),
                })
                .collect(),
        }
    }

    /// The table columns the model reads: the encoder's, or the features themselves.
    pub fn columns(&self) -> Vec<String> {
        match &self.encoder {
            Some(encoder) => encoder.column_names(),
            None => self.features.clone(),
        }
    }

    /// The features of every row of a `.csv` file, encoded as in training, with its line.
    fn feature_rows(&self, data: &Path) -> Result<Vec<(usize, Vec<f32>)>> {
        let Some(encoder) = &self.encoder else {
            return Ok(read_feature_rows(data, &self.features)?);
        };
        let cells = read_feature_cells(
            data,
            &self.columns(),
            encoder.missing(),
            encoder.reads_text(),
        )?;
        cells
            .into_iter()
            .map(|(line, cells)| {
                let features = encoder.encode(&cells).map_err(|message| {
                    Error::Usage(format!("{}:{line}: {message}", data.display()))
                })?;
                Ok((line, features))
            })
            .collect()
    }

    /// Predictions for image files (JPEG or PNG), prepared as the validation images were
    /// in training (resized and centre-cropped to `data.image_size`, no augmentation).
    pub fn predict_images(&self, images: &[std::path::PathBuf]) -> Result<Vec<Prediction>> {
        if !self.config.data.reads_images() {
            return Err(Error::Usage(format!(
                "this model reads the feature columns {}; give a .csv file, not images",
                self.features.join(", ")
            )));
        }
        let side = self.config.data.image_size as usize;
        let mut predictions = Vec::with_capacity(images.len());
        let inference = self.model.inference()?;
        for chunk in images.chunks(PREDICT_BATCH) {
            let pixels: Vec<Vec<f32>> = chunk
                .iter()
                .map(|path| self.image_input(&ldl_data::decode(path)?))
                .collect::<Result<_>>()?;
            let inputs =
                Tensor::from_vec(pixels.concat(), (chunk.len(), 3, side, side), &Device::Cpu)?
                    .to_device(&self.device)?;
            let sources = chunk
                .iter()
                .map(|path| PredictionInput::Image(path.clone()));
            predictions.extend(self.predict_batch(&inference, &inputs, sources)?);
        }
        Ok(predictions)
    }

    /// The model's estimates and distributions for one batch of inputs, by `inference`
    /// (the model's, built once for all the batches of a call).
    fn predict_batch(
        &self,
        inference: &InferenceModel,
        inputs: &Tensor,
        sources: impl Iterator<Item = PredictionInput>,
    ) -> Result<Vec<Prediction>> {
        let logits = inference.forward(inputs)?;
        let space = self.model.label_space();
        let estimates = space.decode_logits(&logits)?;
        // Per axis: the softmax of its head, or its marginal of a joint head.
        let distributions: Vec<Vec<Vec<f64>>> = space
            .axis_distributions(&logits)?
            .iter()
            .map(|q| Ok(q.to_vec2::<f64>()?))
            .collect::<Result<_>>()?;
        Ok(sources
            .zip(estimates)
            .enumerate()
            .map(|(row, (input, axes))| Prediction {
                input,
                axes,
                distributions: distributions.iter().map(|axis| axis[row].clone()).collect(),
            })
            .collect())
    }
}

/// A [`TrainedModel`] with its inference pass built once (see
/// [`TrainedModel::predictor`]): for repeated predictions from the same weights.
pub struct Predictor<'a> {
    trained: &'a TrainedModel,
    inference: InferenceModel<'a>,
}

impl Predictor<'_> {
    /// As [`TrainedModel::predict_inputs`], without building the inference pass again.
    pub fn predict_inputs(&self, inputs: &[Vec<f32>]) -> Result<Vec<Prediction>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let trained = self.trained;
        let side = trained.config.data.image_size as usize;
        let width = if trained.reads_images() {
            3 * side * side
        } else {
            trained.features.len()
        };
        if let Some(i) = inputs.iter().position(|input| input.len() != width) {
            return Err(Error::Usage(format!(
                "input {i} holds {} numbers; the model reads {width}",
                inputs[i].len()
            )));
        }
        let flat = inputs.concat();
        let inputs_tensor = if trained.reads_images() {
            Tensor::from_vec(flat, (inputs.len(), 3, side, side), &Device::Cpu)?
        } else {
            Tensor::from_vec(flat, (inputs.len(), width), &Device::Cpu)?
        }
        .to_device(&trained.device)?;
        trained.predict_batch(
            &self.inference,
            &inputs_tensor,
            (0..inputs.len()).map(PredictionInput::Given),
        )
    }
}

/// A JSON value as a feature cell: a number (finite as an `f32`), a string (a category),
/// or `null` / absent for no value.
fn feature_cell(name: &str, value: Option<&serde_json::Value>) -> Result<ldl_data::FeatureValue> {
    use ldl_data::FeatureValue;
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => Ok(FeatureValue::Missing),
        Some(Value::Number(number)) => match number.as_f64().map(|x| x as f32) {
            Some(x) if x.is_finite() => Ok(FeatureValue::Number(x)),
            _ => Err(Error::Usage(format!(
                "feature `{name}`: {number} is out of range"
            ))),
        },
        Some(Value::String(text)) => Ok(FeatureValue::Text(text.clone())),
        Some(other) => Err(Error::Usage(format!(
            "feature `{name}`: expected a number or a string, got {}",
            match other {
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "an array",
                _ => "an object",
            }
        ))),
    }
}

/// The checkpoint's feature encoding (`train.encoder`), checked against its features;
/// `None` for a checkpoint without one (the features are the columns as they are).
fn stored_encoder(
    path: &Path,
    info: &CheckpointInfo,
    features: &[String],
) -> Result<Option<FeatureEncoder>> {
    let Some(json) = info.extra.get("train.encoder") else {
        return Ok(None);
    };
    let damaged = |problem: String| {
        Error::Usage(format!(
            "{}: `train.encoder` {problem}; the file is damaged or was not written by ldl: use \
             another checkpoint, or train again",
            path.display()
        ))
    };
    let encoder: FeatureEncoder =
        serde_json::from_str(json).map_err(|e| damaged(format!("is not valid ({e})")))?;
    if let Some(problem) = encoder.problem() {
        return Err(damaged(problem));
    }
    if encoder.feature_names() != features {
        return Err(damaged(
            "does not give the features of `train.features`".into(),
        ));
    }
    Ok(Some(encoder))
}

/// What makes a stored feature standardisation unusable, if anything: one mean and one
/// std per feature, finite, and no std below 0 (0 is what a constant feature has).
fn standardizer_problem(standardizer: &Standardizer, features: &[String]) -> Option<String> {
    let width = features.len();
    if standardizer.names != features
        || standardizer.mean.len() != width
        || standardizer.std.len() != width
    {
        return Some(format!(
            "does not hold one mean and one std for each of the {width} features"
        ));
    }
    let name = |i: usize| &features[i];
    if let Some(i) = standardizer.mean.iter().position(|m| !m.is_finite()) {
        return Some(format!(
            "holds the mean {} for `{}`",
            standardizer.mean[i],
            name(i)
        ));
    }
    if let Some(i) = standardizer
        .std
        .iter()
        .position(|s| !s.is_finite() || *s < 0.0)
    {
        return Some(format!(
            "holds the std {} for `{}`",
            standardizer.std[i],
            name(i)
        ));
    }
    None
}
