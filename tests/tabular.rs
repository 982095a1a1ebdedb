//! Tabular inputs as users have them: text columns one-hot encoded and stored in the
//! checkpoint, missing values imputed with the training mean, the features reported, a
//! label refused as a feature, and the rows of each split written to the run folder.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ldl::train::{train, Config, Progress, RunSummary, StopToken, TrainedModel};

/// A task of one linear axis `y` read from `data`, with extra `[data]` lines.
fn task(data: &Path, output: &Path, data_lines: &str) -> String {
    format!(
        r#"
[task]
name = "tab"

[[task.axes]]
name = "y"
min = 0
max = 10
step = 1
default_std = 1

[data]
source = {source:?}
{data_lines}

[data.labels]
y = {{ value = "y" }}

[model]
backbone = "mlp"
hidden = [8]

[optim]
lr = 0.01
batch_size = 8
epochs = 2

[run]
seed = 3
output_dir = {output:?}
"#,
        source = data.display().to_string(),
        output = output.display().to_string(),
    )
}

fn parse(text: &str) -> ldl::Result<ldl::train::CheckedConfig> {
    Ok(Config::parse(Path::new("task.toml"), text, &[])?)
}

/// Trains `text`, returning the summary and the features the run reported at its start.
fn train_reporting(text: &str) -> (RunSummary, Vec<Vec<String>>) {
    let config = parse(text).unwrap();
    let mut reported = Vec::new();
    let summary = train(&config, &StopToken::new(), &mut |p| {
        if let Progress::Features(features) = p {
            reported.push(features.to_vec());
        }
    })
    .unwrap();
    (summary, reported)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Twenty rows: `x` = i, a colour (red, blue or, every fourth row, a number) and `y`.
fn coloured_rows() -> String {
    let mut csv = String::from("x,colour,y\n");
    for i in 0..20 {
        let colour = match i % 4 {
            0 | 1 => "red",
            2 => "blue",
            _ => "7",
        };
        csv.push_str(&format!("{i},{colour},{}\n", i % 10));
    }
    csv
}

/// The model's distributions for inputs already encoded and standardised.
fn forward(trained: &TrainedModel, rows: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let width = rows[0].len();
    let flat: Vec<f32> = rows.concat();
    let inputs = Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu).unwrap();
    let logits = trained.model.forward_t(&inputs, false).unwrap();
    let distributions = trained
        .model
        .label_space()
        .axis_distributions(&logits)
        .unwrap();
    distributions[0].to_vec2::<f64>().unwrap()
}

/// `(value − mean) / std` with the checkpoint's standardisation.
fn standardised(trained: &TrainedModel, raw: &[f32]) -> Vec<f32> {
    let s = trained.standardizer.as_ref().unwrap();
    raw.iter()
        .zip(s.mean.iter().zip(&s.std))
        .map(|(x, (m, sd))| ((*x as f64 - m) / if *sd > 1e-12 { *sd } else { 1.0 }) as f32)
        .collect()
}

fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>]) {
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn text_columns_are_one_hot_encoded_through_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "data.csv", &coloured_rows());
    let text = task(&data, dir.path(), "features = [\"x\", \"colour\"]");
    let (summary, reported) = train_reporting(&text);
    // Categories sorted by their bytes; the number 7 is a category of its own.
    let expected = ["x", "colour=7", "colour=blue", "colour=red"];
    assert_eq!(reported, [expected.to_vec()]);
    assert_eq!(summary.features, expected);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(summary.run_dir.join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["features"], serde_json::json!(expected));

    let checkpoint = summary.run_dir.join("checkpoints/best.safetensors");
    let trained = TrainedModel::load(&checkpoint, &Device::Cpu).unwrap();
    assert_eq!(trained.features, expected);
    // Prediction encodes each row as training did: compared with the model run on
    // inputs one-hot encoded and standardised here.
    let rows = write(dir.path(), "new.csv", "colour,x\nblue,3.5\n7.0,1\nred,12\n");
    let predicted: Vec<Vec<f64>> = trained
        .predict_file(&rows)
        .unwrap()
        .into_iter()
        .map(|p| p.distributions[0].clone())
        .collect();
    let by_hand: Vec<Vec<f32>> = [
        [3.5, 0.0, 1.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [12.0, 0.0, 0.0, 1.0],
    ]
    .iter()
    .map(|raw| standardised(&trained, raw))
    .collect();
    assert_close(&predicted, &forward(&trained, &by_hand));
    // `ldl eval` reads a labelled file the same way.
    let labelled = write(
        dir.path(),
        "labelled.csv",
        "x,colour,y\n1,red,1\n2,blue,2\n",
    );
    trained.evaluate_file(&labelled).unwrap();

    // A category training never saw names the row, the column and the value.
    let unseen = write(dir.path(), "unseen.csv", "x,colour\n1,red\n2,green\n");
    let err = trained.predict_file(&unseen).err().unwrap().to_string();
    assert!(
        err.contains("unseen.csv:3: column `colour`: `green` is a category the training split did not hold (it held 7, blue, red)"),
        "{err}"
    );
    assert!(err.contains("unseen_category = \"zeros\""), "{err}");

    // A damaged encoding (categories out of order) is refused when loading.
    let (model, info) = ldl::models::Model::from_checkpoint(&checkpoint, &Device::Cpu).unwrap();
    let mut extra = info.extra.clone();
    let forged = extra["train.encoder"].replace("\"blue\",\"red\"", "\"red\",\"blue\"");
    assert_ne!(forged, extra["train.encoder"]);
    extra.insert("train.encoder".into(), forged);
    let path = dir.path().join("forged.safetensors");
    model.save_with(&path, &extra).unwrap();
    let err = TrainedModel::load(&path, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`train.encoder` does not list the categories of `colour` once each, sorted"),
        "{err}"
    );
}

#[test]
fn an_unseen_category_is_all_zeros_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "data.csv", &coloured_rows());
    let lines = "features = [\"x\", \"colour\"]\nunseen_category = \"zeros\"";
    let (summary, _) = train_reporting(&task(&data, dir.path(), lines));
    let checkpoint = summary.run_dir.join("checkpoints/best.safetensors");
    let trained = TrainedModel::load(&checkpoint, &Device::Cpu).unwrap();
    let unseen = write(dir.path(), "unseen.csv", "x,colour\n2,green\n");
    let predicted = trained.predict_file(&unseen).unwrap();
    let by_hand = vec![standardised(&trained, &[2.0, 0.0, 0.0, 0.0])];
    assert_close(
        &[predicted[0].distributions[0].clone()],
        &forward(&trained, &by_hand),
    );
}

/// Ten rows split by a column, `x` missing in rows 2 (empty) and 5 (`NA`).
const MISSING: &str = "x,z,y,part\n1,0,1,train\n,1,2,train\n4,0,3,train\n10,1,4,train\nNA,0,5,train\n7,1,6,train\n3,0,7,val\n,1,8,val\n5,0,1,val\n2,1,2,val\n";

#[test]
fn missing_values_are_an_error_naming_row_and_column_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "data.csv", MISSING);
    let text = task(&data, dir.path(), "split = { column = \"part\" }");
    let config = parse(&text).unwrap();
    let err = train(&config, &StopToken::new(), &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("data.csv:3: column `x` has no value"), "{err}");
    assert!(err.contains("missing = \"mean\""), "{err}");
}

#[test]
fn missing_values_are_imputed_with_the_training_mean() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "data.csv", MISSING);
    let lines = "split = { column = \"part\" }\nmissing = \"mean\"";
    let (summary, _) = train_reporting(&task(&data, dir.path(), lines));
    let checkpoint = summary.run_dir.join("checkpoints/best.safetensors");
    let trained = TrainedModel::load(&checkpoint, &Device::Cpu).unwrap();
    // The training rows with an x: 1, 4, 10, 7 (the validation rows do not count).
    let mean = (1.0 + 4.0 + 10.0 + 7.0) / 4.0;
    let encoder = trained.encoder.as_ref().unwrap();
    assert_eq!(
        encoder.columns[0],
        ldl::data::EncodedColumn::Numeric {
            name: "x".into(),
            fill: Some(mean)
        }
    );
    // The standardisation saw the filled values: mean of x over six training rows.
    let filled = [1.0, mean, 4.0, 10.0, mean, 7.0];
    let standardizer = trained.standardizer.as_ref().unwrap();
    let filled_mean = filled.iter().sum::<f64>() / 6.0;
    assert!((standardizer.mean[0] - filled_mean).abs() < 1e-6);
    // A missing x predicts as the training mean does.
    let rows = write(dir.path(), "new.csv", "x,z\nNA,1\n5.5,1\n,1\n");
    let predicted = trained.predict_file(&rows).unwrap();
    assert_eq!(predicted[0].distributions, predicted[1].distributions);
    assert_eq!(predicted[2].distributions, predicted[1].distributions);
}

#[test]
fn a_label_column_listed_as_a_feature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "data.csv", &coloured_rows());
    let text = task(&data, dir.path(), "features = [\"x\", \"y\"]");
    let err = parse(&text).err().unwrap().to_string();
    assert!(
        err.contains("`data.features`: `y` is a label column of axis `y` ([data.labels.y])"),
        "{err}"
    );
    assert!(err.contains("remove `y` from data.features"), "{err}");
}

#[test]
fn splits_json_lists_every_row_once_in_the_fractions() {
    let dir = tempfile::tempdir().unwrap();
    // 41 data rows; row 17 (line 19) has a label out of range and is skipped.
    let mut csv = String::from("x,y\n");
    for i in 0..41 {
        let y = if i == 17 { 99 } else { i % 10 };
        csv.push_str(&format!("{i},{y}\n"));
    }
    let data = write(dir.path(), "data.csv", &csv);
    let lines = "split = { validation = 0.2, test = 0.1 }\non_bad_sample = \"skip\"";
    let (summary, _) = train_reporting(&task(&data, dir.path(), lines));
    let text = std::fs::read_to_string(summary.run_dir.join("splits.json")).unwrap();
    let splits: ldl::train::SplitRows = serde_json::from_str(&text).unwrap();
    // 40 good rows: round(0.2 · 40) = 8 validation, round(0.1 · 40) = 4 test, 28 train.
    assert_eq!(
        [
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ],
        [28, 8, 4]
    );
    assert_eq!(summary.samples, [28, 8, 4]);
    let mut all: Vec<u64> = [&splits.train, &splits.validation, &splits.test]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    all.sort_unstable();
    let expected: Vec<u64> = (0..41).filter(|&i| i != 17).collect();
    assert_eq!(all, expected);
    for name in ["train", "validation", "test"] {
        assert_eq!(splits.files[name], data);
    }
    // The rows are the ones trained on: the mean predictor's value is the mean y of the
    // training rows listed (y = row mod 10).
    let mean = splits.train.iter().map(|&i| (i % 10) as f64).sum::<f64>() / 28.0;
    assert!((summary.mean_predictor[0].value - mean).abs() < 1e-9);
    // Numbers only: the checkpoint is as checkpoints were before encoders.
    let checkpoint = summary.run_dir.join("checkpoints/best.safetensors");
    let (_, info) = ldl::models::Model::from_checkpoint(&checkpoint, &Device::Cpu).unwrap();
    assert!(!info.extra.contains_key("train.encoder"));
    assert!(TrainedModel::load(&checkpoint, &Device::Cpu)
        .unwrap()
        .encoder
        .is_none());
}
