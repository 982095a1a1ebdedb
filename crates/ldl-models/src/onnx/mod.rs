//! ONNX export: a [`Model`] as an ONNX file that onnxruntime, onnxruntime-web, tract or
//! OpenCV's DNN module run without ldl.
//!
//! The graph is the model in inference mode (BatchNorm with its running statistics, no
//! dropout), followed by a softmax per head, so its outputs are distributions:
//!
//! | output | shape | what it is |
//! |---|---|---|
//! | one per axis, named after it (`age`) | `(batch, K)` | the axis's distribution over its `K` bins |
//! | one per joint group (`joint_yaw_pitch`) | `(batch, K₁, K₂, …)` | the distribution over the group's grid, the first member varying slowest |
//!
//! A joint group's members get their marginal distributions as their axis outputs, as
//! `ldl predict` decodes them. Names are the axis names with characters other than
//! letters, digits and `_` replaced by `_` (ONNX asks for identifiers).
//!
//! The input is `image`, `(batch, 3, S, S)` float32 RGB normalised as [`OnnxInput::Image`]
//! says, or `features`, `(batch, F)` float32 in the order [`OnnxInput::Features`] names;
//! a feature model's standardisation is part of the graph, so it takes the raw values.
//!
//! The file's metadata (`metadata_props`) describes it for programs:
//!
//! | key | value (JSON) |
//! |---|---|
//! | `ldl.label_space` | the label space, as in checkpoints: axes with their bin centres, units and kinds |
//! | `ldl.model` | the backbone configuration |
//! | `ldl.input` | the input: image size and normalisation, or feature names and standardisation |
//! | `ldl.outputs` | each output's name, axes and bins |
//! | `ldl.version` | the version of ldl that wrote it |
//!
//! and its `doc_string` says the same for people. Operators are from the default domain
//! at opset [`OPSET`]: `Conv`, `BatchNormalization`, `Relu`, `MaxPool`,
//! `GlobalAveragePool`, `Flatten`, `Gemm`, `Softmax`, `Reshape`, `ReduceSum`, `Sub`,
//! `Div`, and for the MLP's linear path `MatMul` and `Add`, for an ensemble `Mean`.

mod graph;
mod network;
mod outputs;
mod proto;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost::Message as _;
use serde::{Deserialize, Serialize};

use ldl_core::LabelSpace;

use crate::checkpoint::{LABEL_SPACE_KEY, MODEL_KEY, VERSION_KEY};
use crate::error::{Error, Result};
use crate::model::{BackboneConfig, Model};
use crate::vgg::MIN_INPUT_SIZE;
use graph::{Dim, GraphBuilder};
pub use outputs::OnnxOutput;
use outputs::OutputNames;
use proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};

/// The ONNX operator set the graph uses: 17 (2022) is read by onnxruntime 1.11 and later,
/// onnxruntime-web, tract and OpenCV 4.7 and later.
pub const OPSET: i64 = 17;

/// ONNX IR version 8, the one opset 17 came with.
const IR_VERSION: i64 = 8;

/// Metadata key of the input description.
pub const INPUT_KEY: &str = "ldl.input";

/// Metadata key of the output descriptions.
pub const OUTPUTS_KEY: &str = "ldl.outputs";

/// What the exported graph takes, and how raw data becomes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OnnxInput {
    /// RGB images `(batch, 3, size, size)`, each pixel scaled to `[0, 1]`, then
    /// `(value − mean[c]) / std[c]` per channel `c`. The images are resized, shorter side
    /// to `size`, and centre-cropped to a square before that.
    Image {
        /// The side in pixels the model was trained at.
        size: usize,
        /// Per-channel mean subtracted after scaling to `[0, 1]`.
        mean: [f32; 3],
        /// Per-channel std divided by after that.
        std: [f32; 3],
    },
    /// Feature vectors `(batch, F)`, the features in the order of `names`.
    Features {
        /// The features' names, in input order.
        names: Vec<String>,
        /// The standardisation fitted at training, if the model used one: the graph
        /// computes `(x − mean) / std` itself (a feature of std 0 only centred), so it
        /// takes the features' raw values.
        #[serde(skip_serializing_if = "Option::is_none")]
        standardization: Option<Standardization>,
    },
}

impl OnnxInput {
    /// The graph input's name: `image` or `features`.
    pub fn name(&self) -> &'static str {
        match self {
            OnnxInput::Image { .. } => "image",
            OnnxInput::Features { .. } => "features",
        }
    }
}

/// The outputs a model of label space `space` exports with `input`, in graph order: one
/// per axis, then one per joint group's grid.
pub fn outputs(space: &LabelSpace, input: &OnnxInput) -> Vec<OnnxOutput> {
    OutputNames::new(space, &[input.name()]).describe(space)
}

/// Per-feature statistics for `(x − mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    /// Means, one per feature.
    pub mean: Vec<f64>,
    /// Standard deviations, one per feature; values up to 1e-12 divide by 1.
    pub std: Vec<f64>,
}

impl Model {
    /// The model as an ONNX file (the bytes of a `.onnx`) taking `input`; see the
    /// [module documentation](crate::onnx) for its outputs and metadata.
    ///
    /// ```
    /// use candle_core::Device;
    /// use ldl_core::{Axis, LabelSpace};
    /// use ldl_models::{BackboneConfig, Model, OnnxInput};
    /// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
    /// let model = Model::build(&BackboneConfig::mlp(2, [8]), &space, 1, &Device::Cpu)?;
    /// let input = OnnxInput::Features { names: vec!["height".into(), "weight".into()], standardization: None };
    /// let onnx = model.to_onnx(&input)?;
    /// // Every weight is in the file as float32: 2·8 + 8 for the MLP, 8·101 + 101 for the head.
    /// assert!(onnx.len() > 4 * model.parameter_count());
    /// assert_eq!(model.parameter_count(), 2 * 8 + 8 + 8 * 101 + 101);
    /// let wrong = OnnxInput::Image { size: 64, mean: [0.5; 3], std: [0.5; 3] };
    /// assert!(model.to_onnx(&wrong).unwrap_err().to_string().contains("feature"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_onnx(&self, input: &OnnxInput) -> Result<Vec<u8>> {
        self.to_onnx_with(input, &BTreeMap::new())
    }

    /// [`Model::to_onnx`] with further metadata entries (keys must not start with `ldl.`),
    /// such as a task name or the training config.
    pub fn to_onnx_with(
        &self,
        input: &OnnxInput,
        extra: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>> {
        check_input(self.config(), input)?;
        if let Some(key) = extra.keys().find(|k| k.starts_with("ldl.")) {
            return Err(Error::Export(format!(
                "metadata key `{key}` is reserved for ldl's own entries"
            )));
        }
        let space = self.label_space();
        let input_name = input.name();
        let names = OutputNames::new(space, &[input_name]);
        let mut graph = GraphBuilder::default();
        graph.reserve(input_name)?;
        let outputs = names.describe(space);
        for output in &outputs {
            graph.reserve(&output.name)?;
        }
        let (shape, doc) = input_shape(input);
        graph.input(input_name, &shape, doc);
        let first = standardize(&mut graph, input_name, input);
        network::add_network(&mut graph, self, &first, &names)?;
        for output in &outputs {
            let mut shape = vec![Dim::Named("batch")];
            shape.extend(output.bins.iter().map(|k| Dim::Fixed(*k)));
            let doc = format!("distribution over {}", output.axes.join(" × "));
            graph.output(&output.name, &shape, doc);
        }

        let doc_string = describe(input, &outputs);
        let model = ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "ldl".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc_string.clone(),
            graph: Some(graph.finish("ldl", doc_string)),
            metadata_props: metadata(self, input, &outputs, extra)?,
        };
        Ok(model.encode_to_vec())
    }
}

/// The file's metadata entries: ldl's own (see the module documentation) and `extra`.
fn metadata(
    model: &Model,
    input: &OnnxInput,
    outputs: &[OnnxOutput],
    extra: &BTreeMap<String, String>,
) -> Result<Vec<StringStringEntryProto>> {
    let json = |value: serde_json::Result<String>| {
        value.map_err(|e| Error::Export(format!("cannot describe the model: {e}")))
    };
    let mut entries = BTreeMap::from([
        (
            LABEL_SPACE_KEY.to_string(),
            json(serde_json::to_string(model.label_space()))?,
        ),
        (
            MODEL_KEY.to_string(),
            json(serde_json::to_string(model.config()))?,
        ),
        (INPUT_KEY.to_string(), json(serde_json::to_string(input))?),
        (
            OUTPUTS_KEY.to_string(),
            json(serde_json::to_string(outputs))?,
        ),
        (
            VERSION_KEY.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    entries.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(entries
        .into_iter()
        .map(|(key, value)| StringStringEntryProto { key, value })
        .collect())
}

/// Refuses an input that does not fit the backbone, saying what would.
fn check_input(config: &BackboneConfig, input: &OnnxInput) -> Result<()> {
    match (config, input) {
        (BackboneConfig::Vgg(vgg), OnnxInput::Image { size, mean, std }) => {
            if vgg.input_channels != 3 {
                return Err(Error::Export(format!(
                    "the backbone takes {} channels; only RGB (3) models export with an image input",
                    vgg.input_channels
                )));
            }
            if !(MIN_INPUT_SIZE..=4096).contains(size) {
                return Err(Error::Export(format!(
                    "image size must be in {MIN_INPUT_SIZE}..=4096, got {size}"
                )));
            }
            if mean.iter().chain(std).any(|v| !v.is_finite()) || std.iter().any(|s| *s <= 0.0) {
                return Err(Error::Export(format!(
                    "image normalisation needs finite means and positive stds, got mean {mean:?}, std {std:?}"
                )));
            }
            Ok(())
        }
        (
            BackboneConfig::Mlp(mlp),
            OnnxInput::Features {
                names,
                standardization,
            },
        ) => {
            if names.len() != mlp.inputs {
                return Err(Error::Export(format!(
                    "the MLP takes {} features, but {} feature names were given",
                    mlp.inputs,
                    names.len()
                )));
            }
            if let Some(s) = standardization {
                let bad = s.mean.iter().chain(&s.std).any(|v| !v.is_finite());
                if s.mean.len() != names.len() || s.std.len() != names.len() || bad {
                    return Err(Error::Export(format!(
                        "the standardisation needs {} finite means and stds, got {} and {}",
                        names.len(),
                        s.mean.len(),
                        s.std.len()
                    )));
                }
            }
            Ok(())
        }
        (BackboneConfig::Vgg(_), OnnxInput::Features { .. }) => Err(Error::Export(
            "an image model needs an image input (its size and normalisation), not features".into(),
        )),
        (BackboneConfig::Mlp(_), OnnxInput::Image { .. }) => Err(Error::Export(
            "a feature (MLP) model needs a features input (the feature names), not an image".into(),
        )),
    }
}

/// The input's shape and its description.
fn input_shape(input: &OnnxInput) -> (Vec<Dim>, String) {
    match input {
        OnnxInput::Image { size, .. } => (
            vec![
                Dim::Named("batch"),
                Dim::Fixed(3),
                Dim::Fixed(*size),
                Dim::Fixed(*size),
            ],
            "RGB images, NCHW float32, normalised (see the model's doc_string)".into(),
        ),
        OnnxInput::Features { names, .. } => (
            vec![Dim::Named("batch"), Dim::Fixed(names.len())],
            format!("features in this order: {}", names.join(", ")),
        ),
    }
}

/// The standardisation as `Sub` and `Div` nodes when the input has one; returns the value
/// the network reads.
fn standardize(graph: &mut GraphBuilder, input_name: &str, input: &OnnxInput) -> String {
    let OnnxInput::Features {
        names,
        standardization: Some(s),
    } = input
    else {
        return input_name.to_string();
    };
    let mean: Vec<f32> = s.mean.iter().map(|m| *m as f32).collect();
    // As ldl's `Standardizer`: a constant feature is only centred.
    let scale: Vec<f32> = s
        .std
        .iter()
        .map(|d| if *d > 1e-12 { *d as f32 } else { 1.0 })
        .collect();
    let mean = graph.floats("standardize.mean", &[names.len()], &mean);
    let scale = graph.floats("standardize.std", &[names.len()], &scale);
    let centred = graph.node("Sub", &[input_name, &mean], "centred", vec![]);
    graph.node("Div", &[&centred, &scale], "standardized", vec![])
}

/// The file's `doc_string`: its input and how to prepare it, and its outputs.
fn describe(input: &OnnxInput, outputs: &[OnnxOutput]) -> String {
    let mut text = String::from("A label distribution learning model exported by ldl.\n\nInput: ");
    match input {
        OnnxInput::Image { size, mean, std } => {
            let _ = write!(
                text,
                "`image`, float32 (batch, 3, {size}, {size}), RGB, channels first. Resize each \
                 image so that its shorter side is {size} pixels, crop the centre {size}×{size} \
                 square, scale pixel values to [0, 1], then subtract the mean {mean:?} and \
                 divide by the std {std:?} per channel (R, G, B)."
            );
        }
        OnnxInput::Features {
            names,
            standardization,
        } => {
            let _ = write!(
                text,
                "`features`, float32 (batch, {}), in this order: {}.",
                names.len(),
                names.join(", ")
            );
            if standardization.is_some() {
                text.push_str(
                    " Give the raw values: the graph standardises them with the statistics \
                     of the training split.",
                );
            }
        }
    }
    text.push_str("\n\nOutputs (probabilities that sum to 1 over the bins; the bins' centres are in the `ldl.label_space` metadata):\n");
    for output in outputs {
        let _ = writeln!(
            text,
            "- `{}`: (batch, {}), the distribution over {}",
            output.name,
            output
                .bins
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            output.axes.join(" × ")
        );
    }
    text
}
