//! A trained model as ONNX: the `OnnxInput` its training data implies (image size and
//! normalisation, or feature names and standardisation), and the model card section that
//! tells people how to prepare that input and read the outputs, with a Python example.

use std::fmt::Write as _;

use ldl_core::{Axis, AxisKind, LabelSpace};
use ldl_models::onnx::{outputs, OnnxOutput, OPSET};
use ldl_models::{OnnxInput, Standardization};

use crate::error::{Error, Result};
use crate::trained::TrainedModel;

/// The file name of the ONNX model in a model folder.
pub const ONNX_FILE: &str = ldl_hub::OPTIONAL_MODEL_FILES[0];

/// What the exported graph of `trained` takes: its training images' size and
/// normalisation, or its features (after encoding) with the training standardisation.
pub fn onnx_input(trained: &TrainedModel) -> OnnxInput {
    if trained.config.data.reads_images() {
        let pipeline = ldl_data::ImagePipeline::new(trained.config.data.image_size);
        return OnnxInput::Image {
            size: pipeline.size as usize,
            mean: pipeline.mean,
            std: pipeline.std,
        };
    }
    OnnxInput::Features {
        names: trained.features.clone(),
        standardization: trained.standardizer.as_ref().map(|s| Standardization {
            mean: s.mean.clone(),
            std: s.std.clone(),
        }),
    }
}

/// The ONNX file of `trained`, with the task's name, the feature encoding (if any) and
/// `config_text` (the training config as TOML) in its metadata.
pub(crate) fn onnx_bytes(trained: &TrainedModel, config_text: &str) -> Result<Vec<u8>> {
    let mut extra = std::collections::BTreeMap::from([
        ("train.task".to_string(), trained.config.task.name.clone()),
        ("train.config".to_string(), config_text.to_string()),
    ]);
    if let Some(encoder) = &trained.encoder {
        let json = serde_json::to_string(encoder)
            .map_err(|e| Error::Usage(format!("cannot describe the feature encoding: {e}")))?;
        extra.insert("train.encoder".to_string(), json);
    }
    Ok(trained.model.to_onnx_with(&onnx_input(trained), &extra)?)
}

/// The model card's ONNX section: the file, its input and how to prepare it, its outputs
/// and their bins, and a Python example with onnxruntime.
pub(crate) fn onnx_section(trained: &TrainedModel) -> String {
    let input = onnx_input(trained);
    let space = trained.model.label_space();
    let outputs = outputs(space, &input);
    let mut text = format!(
        "\n## ONNX\n\n`{ONNX_FILE}` is the same network for runtimes other than ldl \
         (onnxruntime, onnxruntime-web, tract, OpenCV): ONNX opset {OPSET}, float32, with the \
         softmax included, so its outputs are distributions. Its metadata holds the label \
         space (`ldl.label_space`), the input (`ldl.input`) and the outputs (`ldl.outputs`) as \
         JSON.\n\n"
    );
    text.push_str(&input_text(trained, &input));
    text.push_str(
        "\n**Outputs**, one per axis (a joint group's members get their marginals) and one per \
         joint group (its grid, the first member varying slowest):\n\n\
         | output | shape | distribution over | bins |\n|---|---|---|---|\n",
    );
    for output in &outputs {
        let shape: Vec<String> = output.bins.iter().map(usize::to_string).collect();
        let bins = match output.axes.as_slice() {
            [axis] => axis_by_name(space, axis).map_or(String::new(), bins_text),
            _ => "the members' bins".to_string(),
        };
        let _ = writeln!(
            text,
            "| `{}` | (batch, {}) | {} | {bins} |",
            output.name,
            shape.join(", "),
            output.axes.join(" × ")
        );
    }
    let packages = match input {
        OnnxInput::Image { .. } => "onnxruntime numpy pillow",
        OnnxInput::Features { .. } => "onnxruntime numpy",
    };
    let _ = write!(
        text,
        "\nWith onnxruntime in Python (`pip install {packages}`):\n\n```python\n"
    );
    text.push_str(&python_example(space, &input, &outputs));
    text.push_str("```\n");
    text
}

/// How to make the input from a photo or a table row.
fn input_text(trained: &TrainedModel, input: &OnnxInput) -> String {
    match input {
        OnnxInput::Image { size, mean, std } => format!(
            "**Input** `image`: float32 (batch, 3, {size}, {size}), RGB, channels first. Crop \
             the centre square of each photo (its side the photo's shorter side), resize it to \
             {size}×{size} pixels (ldl uses a Lanczos-3 filter), scale the values to [0, 1], \
             then subtract {} and divide by {} in each channel (R, G, B).\n",
            numbers(mean),
            numbers(std)
        ),
        OnnxInput::Features {
            names,
            standardization,
        } => {
            let mut text = format!(
                "**Input** `features`: float32 (batch, {}), in this order: {}.",
                names.len(),
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if standardization.is_some() {
                text.push_str(
                    " Give the raw values: the graph standardises them with the training \
                     split's means and stds.",
                );
            }
            if trained.encoder.as_ref().is_some_and(|e| !e.is_identity()) {
                text.push_str(
                    " Categorical columns come one-hot, one 0/1 feature `column=category` per \
                     category seen in training, and missing values must be filled before (the \
                     encoding is in the `train.encoder` metadata; `ldl predict` does all this \
                     from the table).",
                );
            }
            text.push('\n');
            text
        }
    }
}

/// An axis's bins as the card lists them: `0, 1, …, 100` or the class names.
fn bins_text(axis: &Axis) -> String {
    if let Some(classes) = axis.classes() {
        return classes.join(", ");
    }
    let centres = axis.centers();
    match centres {
        [a, b, .., last] if axis.is_evenly_spaced() => format!("{a}, {b}, …, {last}"),
        _ => numbers(centres),
    }
}

fn axis_by_name<'a>(space: &'a LabelSpace, name: &str) -> Option<&'a Axis> {
    space.axes().iter().find(|axis| axis.name() == name)
}

/// Numbers as a list (`0.5, 0.5, 0.5`).
fn numbers<T: std::fmt::Display>(values: &[T]) -> String {
    values
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Python script that prepares one input, runs the model and prints each axis's mean
/// and std (or class and probability), as `ldl predict` computes them.
fn python_example(space: &LabelSpace, input: &OnnxInput, outputs: &[OnnxOutput]) -> String {
    let mut code = String::from("import numpy as np\nimport onnxruntime as ort\n");
    match input {
        OnnxInput::Image { size, mean, std } => {
            let _ = write!(
                code,
                "from PIL import Image\n\n\
                 photo = Image.open(\"face.jpg\").convert(\"RGB\")\n\
                 side = min(photo.size)\n\
                 left, top = (photo.width - side) // 2, (photo.height - side) // 2\n\
                 photo = photo.crop((left, top, left + side, top + side))\n\
                 photo = photo.resize(({size}, {size}), Image.LANCZOS)\n\
                 x = (np.asarray(photo, np.float32) / 255 - [{}]) / [{}]\n\
                 x = x.transpose(2, 0, 1)[None].astype(np.float32)\n\n\
                 session = ort.InferenceSession(\"{ONNX_FILE}\")\n\
                 outputs = session.run(None, {{\"image\": x}})\n",
                numbers(mean),
                numbers(std)
            );
        }
        OnnxInput::Features {
            names,
            standardization,
        } => {
            // The training means make a row that means something: the average sample.
            let (row, what) = match standardization {
                Some(s) => (
                    s.mean.iter().map(|m| format!("{m:.6}")).collect::<Vec<_>>(),
                    "the training split's means",
                ),
                None => (vec!["0.0".to_string(); names.len()], "zeros"),
            };
            let _ = write!(
                code,
                "\n# One row ({what}): {}\n\
                 x = np.array([[{}]], np.float32)\n\n\
                 session = ort.InferenceSession(\"{ONNX_FILE}\")\n\
                 outputs = session.run(None, {{\"features\": x}})\n",
                names.join(", "),
                row.join(", ")
            );
        }
    }
    for (index, output) in outputs.iter().enumerate() {
        let [axis] = output.axes.as_slice() else {
            continue;
        };
        if let Some(axis) = axis_by_name(space, axis) {
            code.push_str(&python_readout(axis, index));
        }
    }
    code
}

/// Python lines printing the estimate of `axis` from `outputs[index]`.
fn python_readout(axis: &Axis, index: usize) -> String {
    let name = axis.name().replace('\\', "\\\\").replace('"', "\\\"");
    if let Some(classes) = axis.classes() {
        let classes: Vec<String> = classes
            .iter()
            .map(|c| format!("\"{}\"", c.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        return format!(
            "\np = outputs[{index}][0]\nclasses = [{}]\n\
             print(\"{name}\", classes[p.argmax()], \"probability\", p.max())\n",
            classes.join(", ")
        );
    }
    let centres = match axis.centers() {
        [first, .., last] if axis.is_evenly_spaced() => {
            format!("np.linspace({first}, {last}, {})", axis.len())
        }
        centres => format!("np.array([{}])", numbers(centres)),
    };
    match axis.kind() {
        AxisKind::Circular { period } => format!(
            "\np, centres = outputs[{index}][0], {centres}\n\
             angles = 2 * np.pi * centres / {period}\n\
             mean = np.arctan2(p @ np.sin(angles), p @ np.cos(angles)) * {period} / (2 * np.pi)\n\
             mean = centres[0] + (mean - centres[0]) % {period}\n\
             print(\"{name}\", \"mean\", mean)\n"
        ),
        _ => format!(
            "\np, centres = outputs[{index}][0], {centres}\n\
             mean = p @ centres\n\
             print(\"{name}\", \"mean\", mean, \"std\", np.sqrt(p @ (centres - mean) ** 2))\n"
        ),
    }
}
