//! A NaN or an infinity in training: found the step it appears, the run stopped with the
//! epoch, the batch, the axis and the loss part named and the last good checkpoint intact;
//! or, with `optim.on_nonfinite = "skip"`, the batch skipped and counted.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ldl::train::{train, CheckedConfig, Config, Error};

const BDIMS: &str = include_str!("../configs/bdims.toml");

fn config(dir: &Path, text: &str, extra: &[&str]) -> CheckedConfig {
    let mut overrides = vec![format!(
        "run.output_dir={:?}",
        dir.join("runs").display().to_string()
    )];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Config::parse(&dir.join("task.toml"), text, &overrides).unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every value of every tensor of a checkpoint is finite, and the library loads it.
fn assert_loads_finite(path: &Path) {
    let (vars, _) = ldl::models::Model::from_checkpoint(path, &Device::Cpu).unwrap();
    let vars = vars.vars().clone();
    for (name, var) in vars.data().lock().unwrap().iter() {
        let values = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
    }
}

/// From epoch 2 the learning rate is 0.03 · 1e300, infinite in the f32 weights: the first
/// step of epoch 2 makes the weights infinite or NaN, and the loss of batch 2 is NaN. The
/// run stops there, naming epoch, batch, axis and part, and epoch 1 stays saved.
#[test]
fn a_nan_loss_stops_the_run_naming_where_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        BDIMS,
        &[
            "optim.epochs=3",
            "optim.lr_step_epochs=1",
            "optim.lr_gamma=1e300",
        ],
    );
    let err = train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Numeric(_)), "{err:?}");
    let message = err.to_string();
    for part in [
        "epoch 2, batch 2 of 10: the loss is NaN",
        "axis `age`, part `",
        "the last good checkpoint (epoch 1)",
        "optim.on_nonfinite = \"skip\"",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    assert_eq!(message.lines().count(), 1, "{message}");
    let run_dir = dir.path().join("runs/bdims-1");
    assert_eq!(json(&run_dir.join("state.json"))["epoch"], 1);
    assert_eq!(metrics(&run_dir).len(), 1);
    assert!(!run_dir.join("summary.json").exists());
    for name in ["last", "best"] {
        assert_loads_finite(&run_dir.join(format!("checkpoints/{name}.safetensors")));
    }
}

/// bdims as separate training and validation files, where the first `huge` training rows
/// have a feature of 3e38: finite as an f32 (so it is read), but it overflows the first
/// layer, so a batch that holds one has a non-finite loss. Which batch that is changes with
/// the shuffling.
fn with_huge_features(dir: &Path, huge: usize) -> String {
    let text = ldl::data::builtin_csv("bdims").unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let write = |name: &str, rows: &[String]| {
        let body: Vec<&str> = std::iter::once(header)
            .chain(rows.iter().map(String::as_str))
            .collect();
        std::fs::write(dir.join(name), body.join("\n") + "\n").unwrap();
    };
    let mut train: Vec<String> = rows[..300].iter().map(|r| r.to_string()).collect();
    for row in &mut train[..huge] {
        let (_, rest) = row.split_once(',').unwrap();
        *row = format!("3e38,{rest}");
    }
    write("train.csv", &train);
    let validation: Vec<String> = rows[300..400].iter().map(|r| r.to_string()).collect();
    write("val.csv", &validation);
    BDIMS
        .replace("source = \"builtin:bdims\"", "source = \"train.csv\"")
        .replace(
            "split = { validation = 0.2, test = 0.2 }",
            "split = { validation_source = \"val.csv\" }\nstandardize = false",
        )
}

/// With `skip`, the batch with the huge feature is left out every epoch: counted per epoch
/// in metrics.jsonl and in all in summary.json, the run finishes, and the weights and the
/// BatchNorm statistics stay finite (the skipped batch's statistics are rolled back).
#[test]
fn a_skipped_batch_is_counted_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let text = with_huge_features(dir.path(), 1);
    let stop = config(dir.path(), &text, &["optim.epochs=3"]);
    let err = train(&stop, &ldl::train::StopToken::new(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("epoch 1, batch "), "{err}");

    let skip = config(
        dir.path(),
        &text,
        &["optim.epochs=3", "optim.on_nonfinite=\"skip\""],
    );
    let summary = train(&skip, &ldl::train::StopToken::new(), &mut |_| {}).unwrap();
    assert_eq!(summary.skipped_batches, 3);
    let run_dir: PathBuf = summary.run_dir.clone();
    assert_eq!(json(&run_dir.join("summary.json"))["skipped_batches"], 3);
    let skipped: Vec<u64> = metrics(&run_dir)
        .iter()
        .map(|m| m["skipped_batches"].as_u64().unwrap())
        .collect();
    assert_eq!(skipped, [1, 1, 1]);
    // Adam stepped only on the 9 kept batches of each epoch's 10.
    assert_eq!(json(&run_dir.join("state.json"))["adam_steps"], 27);
    assert!(summary.best_validation.loss.total.is_finite());
    assert_loads_finite(&run_dir.join("checkpoints/last.safetensors"));
}

/// When every batch of an epoch is skipped nothing is learnt: the run stops and says so.
#[test]
fn an_epoch_of_skipped_batches_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = with_huge_features(dir.path(), 300);
    let config = config(
        dir.path(),
        &text,
        &["optim.epochs=3", "optim.on_nonfinite=\"skip\""],
    );
    let err = train(&config, &ldl::train::StopToken::new(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("epoch 1: all 10 batches had a non-finite loss or gradient"),
        "{err}"
    );
    assert!(err.contains("the last good checkpoint (epoch 0)"), "{err}");
}

/// An unknown `optim.on_nonfinite` is a config error that names the key and the choices.
#[test]
fn an_unknown_on_nonfinite_is_refused() {
    let err = Config::parse(
        Path::new("task.toml"),
        BDIMS,
        &["optim.on_nonfinite=\"ignore\"".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("on_nonfinite") && err.contains("`stop`") && err.contains("`skip`"),
        "{err}"
    );
}
