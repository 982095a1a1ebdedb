//! `ldl export --onnx`: a trained run and a bare checkpoint as `model.onnx`, run by an
//! independent runtime (tract) on the same inputs as `ldl predict`: the distributions
//! agree within 1e-5. The model card says how to prepare the input; files already there
//! are not replaced without --force.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BDIMS: &str = include_str!("../../../configs/bdims.toml");
const QUICKSTART: &str = include_str!("../../../configs/quickstart.toml");

fn ldl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ldl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ldl_ok(dir: &Path, args: &[&str]) -> String {
    let out = ldl(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Running a file with tract (its prelude's names kept apart).
mod tract {
    use tract_onnx::prelude::*;

    /// Each output's values for `input` of `shape`.
    pub fn run(onnx: &[u8], shape: &[usize], input: &[f32]) -> Vec<Vec<f32>> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .unwrap()
            .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let input = Tensor::from_shape(shape, input).unwrap().into_tvalue();
        model
            .run(tvec!(input))
            .unwrap()
            .iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect()
    }

    /// The file's metadata entry `key`.
    pub fn metadata(onnx: &[u8], key: &str) -> String {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &onnx[..])
            .unwrap();
        proto
            .metadata_props
            .into_iter()
            .find(|entry| entry.key == key)
            .map(|entry| entry.value)
            .unwrap_or_else(|| panic!("no metadata entry {key}"))
    }
}

/// Checks the ONNX outputs (samples × bins, per axis) against `ldl predict --json --pmf`'s
/// distributions for the same samples; returns the largest difference.
fn assert_matches_predict(outputs: &[Vec<f32>], axes: &[&str], predicted: &[Value]) -> f64 {
    let mut largest = 0.0f64;
    for (axis, output) in axes.iter().zip(outputs) {
        let bins = output.len() / predicted.len();
        for (sample, expected) in predicted.iter().enumerate() {
            let expected = expected[axis]["distribution"].as_array().unwrap();
            assert_eq!(expected.len(), bins, "{axis}");
            for (a, b) in output[sample * bins..(sample + 1) * bins]
                .iter()
                .zip(expected)
            {
                largest = largest.max((*a as f64 - b.as_f64().unwrap()).abs());
            }
        }
    }
    assert!(largest <= 1e-5, "largest difference {largest:e}");
    largest
}

#[test]
fn a_feature_run_exports_as_onnx_that_tract_runs_as_ldl_predict() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("task.toml"), BDIMS).unwrap();
    ldl_ok(
        dir,
        &[
            "train",
            "task.toml",
            "--quiet",
            "--set",
            "optim.epochs=2",
            "--set",
            "run.output_dir=\"runs\"",
        ],
    );
    let written = ldl_ok(dir, &["export", "runs/bdims-1", "--out", "model", "--onnx"]);
    let files: Vec<&str> = written
        .lines()
        .map(|l| l.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        files,
        ["model.safetensors", "ldl.toml", "model.onnx", "README.md"]
    );
    let card = std::fs::read_to_string(dir.join("model/README.md")).unwrap();
    assert!(card.contains("## ONNX"), "{card}");
    assert!(
        card.contains("Give the raw values: the graph standardises them"),
        "{card}"
    );
    assert!(
        card.contains("| `weight` | (batch, 81) | weight | 40, 41, …, 120 |"),
        "{card}"
    );
    assert!(
        card.contains("outputs = session.run(None, {\"features\": x})"),
        "{card}"
    );

    let rows: Vec<&str> = ldl_data::builtin_csv("bdims")
        .unwrap()
        .lines()
        .take(6)
        .collect();
    std::fs::write(dir.join("people.csv"), rows.join("\n")).unwrap();
    let predicted: Vec<Value> = ldl_ok(
        dir,
        &[
            "predict",
            "model/model.safetensors",
            "people.csv",
            "--json",
            "--pmf",
        ],
    )
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect();

    let onnx = std::fs::read(dir.join("model/model.onnx")).unwrap();
    let input: Value = serde_json::from_str(&tract::metadata(&onnx, "ldl.input")).unwrap();
    assert_eq!(input["kind"], "features");
    let names: Vec<&str> = input["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(input["standardization"]["mean"].is_array());
    // The raw values of the named columns, in the model's order.
    let header: Vec<&str> = rows[0].split(',').collect();
    let columns: Vec<usize> = names
        .iter()
        .map(|name| header.iter().position(|h| h == name).unwrap())
        .collect();
    let mut features = Vec::new();
    for row in &rows[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        features.extend(columns.iter().map(|c| cells[*c].parse::<f32>().unwrap()));
    }
    let outputs = tract::run(&onnx, &[rows.len() - 1, names.len()], &features);
    let largest = assert_matches_predict(&outputs, &["age", "weight", "height"], &predicted);
    eprintln!("largest difference {largest:e}");
    assert!(tract::metadata(&onnx, "train.config").contains("name = \"bdims\""));

    // A second export into the same folder is refused without --force, and names the files.
    let refused = ldl(dir, &["export", "runs/bdims-1", "--out", "model", "--onnx"]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        message.contains(
            "already holds model.safetensors, ldl.toml, README.md, model.onnx; give --force"
        ),
        "{message}"
    );
    ldl_ok(
        dir,
        &[
            "export",
            "runs/bdims-1",
            "--out",
            "model",
            "--onnx",
            "--force",
        ],
    );
}

#[test]
fn an_image_checkpoint_exports_as_onnx_that_tract_runs_as_ldl_predict() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("task.toml"), QUICKSTART).unwrap();
    ldl_ok(
        dir,
        &[
            "train",
            "task.toml",
            "--quiet",
            "--set",
            "optim.epochs=1",
            "--set",
            "data.faces.count=60",
            "--set",
            "model.width=0.25",
            "--set",
            "run.output_dir=\"runs\"",
        ],
    );
    let checkpoint = "runs/quickstart-faces-1/checkpoints/best.safetensors";
    // Without --onnx a checkpoint is not a run folder.
    let refused = ldl(dir, &["export", checkpoint, "--out", "onnx"]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("is a file, not a run folder")
            && message.contains("give --onnx to export this checkpoint file alone"),
        "{message}"
    );
    assert!(!dir.join("onnx").exists());

    let written = ldl_ok(dir, &["export", checkpoint, "--out", "onnx", "--onnx"]);
    assert_eq!(written.lines().count(), 2, "{written}");
    let card = std::fs::read_to_string(dir.join("onnx/README.md")).unwrap();
    assert!(
        card.contains("**Input** `image`: float32 (batch, 3, 32, 32), RGB"),
        "{card}"
    );
    assert!(
        card.contains("photo.resize((32, 32), Image.LANCZOS)"),
        "{card}"
    );

    ldl_ok(
        dir,
        &[
            "synth", "--count", "3", "--size", "48", "--seed", "5", "--out", "faces",
        ],
    );
    let images: Vec<String> = (0..3).map(|i| format!("faces/images/{i:06}.png")).collect();
    let mut args = vec!["predict", checkpoint, "--json", "--pmf"];
    args.extend(images.iter().map(String::as_str));
    let predicted: Vec<Value> = ldl_ok(dir, &args)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();

    let onnx = std::fs::read(dir.join("onnx/model.onnx")).unwrap();
    let input: Value = serde_json::from_str(&tract::metadata(&onnx, "ldl.input")).unwrap();
    assert_eq!(input["kind"], "image");
    let size = input["size"].as_u64().unwrap() as u32;
    // The preprocessing the card describes, as ldl's image pipeline does it.
    let pipeline = ldl_data::ImagePipeline::new(size);
    let mut pixels = Vec::new();
    for image in &images {
        let decoded = ldl_data::decode(&dir.join(image)).unwrap();
        let (chw, _) = pipeline
            .process(&decoded, &ldl_data::Augment::default(), None)
            .unwrap();
        pixels.extend(chw);
    }
    let side = size as usize;
    let outputs = tract::run(&onnx, &[images.len(), 3, side, side], &pixels);
    let largest = assert_matches_predict(&outputs, &["age"], &predicted);
    eprintln!("largest difference {largest:e}");
}
