//! `run.monitor = "per-axis"` (the default for the MLP whose axes share no weights): the
//! `best` checkpoint holds each axis's weights from the epoch of its own lowest
//! validation MAE. Since the axes share no weights and the monitor changes nothing about
//! training, each axis must be exactly what a run monitored by that axis's MAE alone
//! keeps: the same best epoch, bit-identical weights, the same validation and test
//! figures.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use ldl::train::{resume, train, CheckedConfig, Config, Error, Progress, RunSummary, StopToken};

const AXES: [&str; 3] = ["age", "weight", "height"];

fn bdims(output: &Path, extra: &[&str]) -> CheckedConfig {
    let text = include_str!("../configs/bdims.toml");
    let mut overrides = vec![
        "optim.epochs=14".to_string(),
        format!("run.output_dir={:?}", output.display().to_string()),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Config::parse(Path::new("configs/bdims.toml"), text, &overrides).unwrap()
}

fn best_tensors(summary: &RunSummary) -> HashMap<String, Tensor> {
    let path = summary.run_dir.join("checkpoints/best.safetensors");
    ldl::models::read_checkpoint(&path, &Device::Cpu).unwrap().0
}

fn values(tensor: &Tensor) -> Vec<f32> {
    tensor.flatten_all().unwrap().to_vec1().unwrap()
}

/// The validation figures of `epoch` in the run's `metrics.jsonl`.
fn logged_validation(summary: &RunSummary, epoch: usize) -> serde_json::Value {
    let text = std::fs::read_to_string(summary.run_dir.join("metrics.jsonl")).unwrap();
    let line = text.lines().nth(epoch - 1).unwrap();
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(record["epoch"], epoch);
    record["validation"].clone()
}

#[test]
fn each_axis_of_the_best_checkpoint_is_the_run_monitored_by_that_axis_alone() {
    let output = tempfile::tempdir().unwrap();
    let config = bdims(&output.path().join("per-axis"), &[]);
    assert_eq!(config.run.monitor(), ldl::train::Monitor::PerAxis);
    let per_axis = train(&config, &StopToken::new(), &mut |_| {}).unwrap();
    let epochs: Vec<usize> = AXES.iter().map(|a| per_axis.best_epochs[*a]).collect();
    // The three axes peak at different epochs here, so the checkpoint is assembled.
    assert!(
        epochs.iter().any(|&e| e != epochs[0]),
        "best epochs {epochs:?}"
    );
    assert_eq!(per_axis.best_epoch, *epochs.iter().max().unwrap());
    let assembled = best_tensors(&per_axis);
    let mut compared = 0;
    for axis in AXES {
        let monitor = format!("run.monitor=\"{axis}/mae\"");
        let alone_config = bdims(&output.path().join(axis), &[&monitor]);
        let alone = train(&alone_config, &StopToken::new(), &mut |_| {}).unwrap();
        assert_eq!(alone.best_epoch, per_axis.best_epochs[axis], "{axis}");
        assert!(alone.best_epochs.is_empty());
        // The axis's trunk, head and linear path, bit for bit.
        let own = |name: &&String| {
            name.starts_with(&format!("backbone.{axis}."))
                || name.starts_with(&format!("heads.{axis}."))
        };
        let alone_tensors = best_tensors(&alone);
        for name in assembled.keys().filter(own) {
            assert!(
                values(&assembled[name]) == values(&alone_tensors[name]),
                "{name}"
            );
            compared += 1;
        }
        let figures = |summary: &RunSummary| {
            let test = summary.test.as_ref().unwrap().metrics.axis(axis).cloned();
            let validation = summary.best_validation.metrics.axis(axis).cloned();
            (validation, test)
        };
        assert_eq!(figures(&per_axis), figures(&alone), "{axis}");
        // The assembled validation figures are the ones logged at the axis's epoch.
        let logged = logged_validation(&per_axis, per_axis.best_epochs[axis]);
        let mae = per_axis.best_validation.metrics.axis(axis).unwrap().mae;
        let logged_mae = logged["metrics"]["axes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["axis"] == axis)
            .unwrap()["mae"]
            .as_f64();
        assert_eq!(mae, logged_mae, "{axis}");
        let share = per_axis.best_validation.loss.heads[axis];
        assert_eq!(
            Some(share),
            logged["loss"]["heads"][axis].as_f64(),
            "{axis}"
        );
    }
    // Per network: two hidden layers of six tensors (with BatchNorm), the output layer's
    // two and the path's one, for each of three axes: every tensor was compared.
    assert_eq!(compared, assembled.len());
    assert_eq!(compared, 3 * (2 * 6 + 3));
}

#[test]
fn a_stopped_per_axis_run_resumes_to_the_same_checkpoint() {
    let output = tempfile::tempdir().unwrap();
    let straight_config = bdims(&output.path().join("straight"), &[]);
    let straight = train(&straight_config, &StopToken::new(), &mut |_| {}).unwrap();
    // The axes peak on both sides of the stop: resuming must assemble from both.
    let epochs: Vec<usize> = straight.best_epochs.values().copied().collect();
    assert!(
        epochs.iter().any(|&e| e <= 6) && epochs.iter().any(|&e| e > 6),
        "{epochs:?}"
    );
    let stop = StopToken::new();
    let stopped_config = bdims(&output.path().join("stopped"), &[]);
    let err = train(&stopped_config, &stop, &mut |progress| {
        if let Progress::Epoch(record) = progress {
            if record.epoch == 6 {
                stop.stop();
            }
        }
    })
    .unwrap_err();
    let Error::Interrupted { run_dir, epoch } = &err else {
        panic!("{err}")
    };
    assert_eq!(*epoch, 6);
    let resumed = resume(Path::new(run_dir), &[], &StopToken::new(), &mut |_| {}).unwrap();
    assert_eq!(resumed.best_epochs, straight.best_epochs);
    assert_eq!(resumed.best_validation, straight.best_validation);
    assert_eq!(resumed.test, straight.test);
    // The tensors, bit for bit (the headers differ: they name the output folders).
    let (resumed, straight) = (best_tensors(&resumed), best_tensors(&straight));
    assert_eq!(resumed.len(), straight.len());
    for (name, tensor) in &straight {
        assert!(values(&resumed[name]) == values(tensor), "{name}");
    }
}

#[test]
fn the_default_monitor_follows_the_model_and_per_axis_is_refused_where_axes_share_weights() {
    let output = tempfile::tempdir().unwrap();
    let monitor = |extra: &[&str]| bdims(output.path(), extra).run.monitor();
    use ldl::train::Monitor;
    assert_eq!(monitor(&[]), Monitor::PerAxis);
    assert_eq!(monitor(&["model.trunk=\"shared\""]), Monitor::Loss);
    // One axis shares nothing either; an image network keeps the loss.
    let one_axis = Config::parse(
        Path::new("configs/abalone.toml"),
        include_str!("../configs/abalone.toml"),
        &[],
    );
    assert_eq!(one_axis.ok().unwrap().run.monitor(), Monitor::PerAxis);
    let images = Config::parse(
        Path::new("configs/quickstart.toml"),
        include_str!("../configs/quickstart.toml"),
        &[],
    );
    assert_eq!(images.ok().unwrap().run.monitor(), Monitor::Loss);
    assert_eq!(monitor(&["run.monitor=\"loss\""]), Monitor::Loss);
    assert_eq!(
        monitor(&["run.monitor=\"age/mae\""]),
        Monitor::Mae("age".into())
    );
    // The resolved monitor is saved; a config saved before `per-axis` existed, without
    // the key, picked its best epoch by the loss and reads back so.
    let text = include_str!("../configs/bdims.toml");
    let written = toml::to_string(&*bdims(output.path(), &[])).unwrap();
    assert!(written.contains("monitor = \"per-axis\""), "{written}");
    let saved = Config::parse_saved(Path::new("config.toml"), &written).unwrap();
    assert_eq!(saved.run.monitor(), Monitor::PerAxis);
    let old = Config::parse_saved(Path::new("config.toml"), text).unwrap();
    assert_eq!(old.run.monitor(), Monitor::Loss);

    let overrides = vec![
        "model.trunk=\"shared\"".to_string(),
        "run.monitor=\"per-axis\"".to_string(),
    ];
    let err = match Config::parse(Path::new("configs/bdims.toml"), text, &overrides) {
        Ok(_) => panic!("per-axis on a shared trunk is refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("`run.monitor = \"per-axis\"`") && err.contains("model.trunk"),
        "{err}"
    );
}
