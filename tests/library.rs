//! The library route: a `Trainer` on in-memory data takes the same steps as `ldl train`,
//! keeps the best epoch's weights, stops early, and its model saves and loads itself; the
//! library's example program runs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use ldl::data::Dataset;
use ldl::loss::{AxisParts, FullKl, Loss, LossOutput};
use ldl::models::{MlpConfig, Model};
use ldl::train::{Config, Control, HeadInit, Monitor, Progress, StopToken, Trainer};
use ldl::{Axis, AxisTargets, CoreError, Label, LabelSpace};

/// What a loss returns.
type CoreResult<T> = Result<T, CoreError>;

/// examples/custom_axes.rs, the program of docs/library.md, run as it is.
#[path = "../examples/custom_axes.rs"]
mod custom_axes;

#[test]
fn the_custom_axes_example_runs() {
    custom_axes::main().unwrap();
}

/// Rows of two features and a target `y = 3 + 4·x1 − 2·x2` (plus a seeded wobble), each
/// with its split: every fifth row validation, the rest training.
fn rows() -> Vec<(f32, f32, f64, &'static str)> {
    (0..120)
        .map(|i| {
            let x1 = (i % 11) as f32 / 10.0;
            let x2 = (i % 7) as f32 / 6.0;
            let wobble = ((i * 37) % 13) as f64 / 26.0 - 0.25;
            let y = 3.0 + 4.0 * x1 as f64 - 2.0 * x2 as f64 + wobble;
            (x1, x2, y, if i % 5 == 0 { "validation" } else { "train" })
        })
        .collect()
}

fn space() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("y", 0.0, 12.0, 0.25).unwrap()]).unwrap()
}

/// The rows of one split as a dataset.
fn dataset(split: &str) -> Dataset {
    let (features, labels) = rows()
        .into_iter()
        .filter(|r| r.3 == split)
        .map(|(x1, x2, y, _)| (vec![x1, x2], vec![Label::value(y)]))
        .unzip();
    Dataset::from_features(&space(), features, labels).unwrap()
}

#[test]
fn the_trainer_takes_the_same_steps_as_ldl_train() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let mut text = String::from("x1,x2,y,split\n");
    for (x1, x2, y, split) in rows() {
        text.push_str(&format!("{x1},{x2},{y},{split}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let config = format!(
        r#"
[task]
name = "rows"
[[task.axes]]
name = "y"
min = 0
max = 12
step = 0.25
[data]
source = "{}"
features = ["x1", "x2"]
standardize = false
feature_noise = 0.2
split = {{ column = "split" }}
[data.labels]
y = {{ value = "y" }}
[model]
backbone = "mlp"
hidden = [16]
dropout = 0.2
[optim]
lr = 0.01
batch_size = 16
epochs = 4
[run]
seed = 5
output_dir = "{}"
"#,
        csv.display(),
        dir.path().join("runs").display()
    );
    let checked = Config::parse(Path::new("rows.toml"), &config, &[]).unwrap();
    let summary = ldl::train::train(&checked, &StopToken::new(), &mut |_| {}).unwrap();
    let metrics = std::fs::read_to_string(summary.run_dir.join("metrics.jsonl")).unwrap();
    let cli: Vec<f64> = metrics
        .lines()
        .map(|line| {
            let record: ldl::train::EpochRecord = serde_json::from_str(line).unwrap();
            record.validation.unwrap().loss.total
        })
        .collect();

    // The same model, loss and settings through the library.
    // One MLP per axis (with one axis, one MLP either way) and a linear path, as
    // `ldl train` builds by default.
    let backbone = MlpConfig::new(2, [16])
        .with_batch_norm()
        .with_dropout(0.2)
        .with_separate_trunks()
        .with_linear_path()
        .into();
    assert_eq!(backbone, checked.backbone(2));
    let model = Model::build(&backbone, &space(), 5, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(4)
        .batch_size(16)
        .learning_rate(0.01)
        .feature_noise(0.2)
        // `ldl train` starts a fresh MLP with a linear path as a ridge regression, and
        // keeps each axis at the epoch of its own lowest validation MAE.
        .head_init(HeadInit::LeastSquares)
        .monitor(Monitor::PerAxis)
        .seed(5);
    let fit = trainer
        .fit(&dataset("train"), &dataset("validation"), |_| {
            Control::Continue
        })
        .unwrap();
    let library: Vec<f64> = fit
        .epochs
        .iter()
        .map(|e| e.validation.as_ref().unwrap().loss.total)
        .collect();
    assert_eq!(
        library, cli,
        "bit-identical validation losses, epoch by epoch"
    );
    assert_eq!(fit.best_epoch, summary.best_epoch);
    assert_eq!(fit.best_epochs, summary.best_epochs);
}

#[test]
fn fit_keeps_the_best_epochs_weights_and_stops_on_patience_or_a_callback() {
    // Validation targets 2 above the training relation: the validation loss falls while
    // the predictions narrow towards it, then rises as they sharpen 2 away.
    let train = dataset("train");
    let (features, labels) = rows()
        .into_iter()
        .filter(|r| r.3 == "validation")
        .map(|(x1, x2, y, _)| (vec![x1, x2], vec![Label::value(y + 2.0)]))
        .unzip();
    let validation = Dataset::from_features(&space(), features, labels).unwrap();
    let build = || {
        let model = Model::build(&MlpConfig::new(2, [16]).into(), &space(), 3, &Device::Cpu);
        Trainer::new(model.unwrap(), FullKl::new())
            .epochs(12)
            .batch_size(8)
            .learning_rate(0.03)
    };
    let mut trainer = build();
    let fit = trainer
        .fit(&train, &validation, |_| Control::Continue)
        .unwrap();
    // The last epoch is not the best, so the weights were set back.
    assert!(
        fit.best_epoch < fit.epochs.len(),
        "best epoch {}",
        fit.best_epoch
    );
    let best = fit.epochs[fit.best_epoch - 1].validation.clone().unwrap();
    assert_eq!(best, fit.best_validation);
    let lowest = fit
        .epochs
        .iter()
        .map(|e| e.validation.as_ref().unwrap().loss.total)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best.loss.total, lowest);
    // The model holds the best epoch's weights: evaluating it again gives its results.
    let report = trainer.evaluate(&validation).unwrap();
    assert_eq!(report.evaluation, fit.best_validation);

    // Patience: training stops `patience` evaluations after the best one.
    let mut patient = build().patience(2);
    let fit = patient
        .fit(&train, &validation, |_| Control::Continue)
        .unwrap();
    let last = fit.epochs.len();
    assert!(fit.best_epoch + 2 < 12);
    assert_eq!(last, fit.best_epoch + 2);

    // A callback that stops after epoch 3, having seen every batch and epoch.
    let (mut batches, mut epochs) = (0, 0);
    let fit = build()
        .fit(&train, &validation, |event| match event {
            Progress::Batch { .. } => {
                batches += 1;
                Control::Continue
            }
            Progress::Epoch(record) => {
                epochs += 1;
                if record.epoch == 3 {
                    Control::Stop
                } else {
                    Control::Continue
                }
            }
            _ => Control::Continue,
        })
        .unwrap();
    assert_eq!((fit.epochs.len(), epochs), (3, 3));
    // 96 training rows in batches of 8: 12 a epoch.
    assert_eq!(batches, 3 * 12);
}

#[test]
fn the_report_scores_the_training_mean_on_the_evaluated_samples() {
    let (train, validation) = (dataset("train"), dataset("validation"));
    let model = Model::build(&MlpConfig::new(2, [8]).into(), &space(), 1, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new()).epochs(1);
    trainer
        .fit(&train, &validation, |_| Control::Continue)
        .unwrap();
    let report = trainer.evaluate(&validation).unwrap();
    let value = |s: &ldl::data::Sample| match s.labels[0] {
        Label::Value { value, .. } => value,
        _ => unreachable!(),
    };
    let mean = train.iter().map(value).sum::<f64>() / train.len() as f64;
    let mae = validation
        .iter()
        .map(|s| (value(s) - mean).abs())
        .sum::<f64>()
        / validation.len() as f64;
    assert!((report.baseline("y").unwrap() - mae).abs() < 1e-12);
}

/// Two axes from the rows: `y`, and `z = 6 − y/2` with its validation targets moved, so
/// that the two axes' validation MAEs bottom out at different epochs.
fn two_axis_split(split: &str) -> (LabelSpace, Dataset) {
    let space = LabelSpace::new(vec![
        Axis::linear("y", 0.0, 12.0, 0.25).unwrap(),
        Axis::linear("z", 0.0, 12.0, 0.25).unwrap(),
    ])
    .unwrap();
    let shift = if split == "validation" { 1.5 } else { 0.0 };
    let (features, labels) = rows()
        .into_iter()
        .filter(|r| r.3 == split)
        .map(|(x1, x2, y, _)| {
            let z = 6.0 - y / 2.0 + shift;
            (vec![x1, x2], vec![Label::value(y), Label::value(z)])
        })
        .unzip();
    let data = Dataset::from_features(&space, features, labels).unwrap();
    (space, data)
}

#[test]
fn per_axis_keeps_each_axis_at_the_epoch_of_its_lowest_validation_mae() {
    let (space, train) = two_axis_split("train");
    let (_, validation) = two_axis_split("validation");
    let build = |config: MlpConfig| {
        let model = Model::build(&config.into(), &space, 3, &Device::Cpu).unwrap();
        Trainer::new(model, FullKl::new())
            .epochs(12)
            .batch_size(8)
            .learning_rate(0.03)
            .monitor(Monitor::PerAxis)
    };
    let mut trainer = build(MlpConfig::new(2, [16]).with_separate_trunks());
    let fit = trainer
        .fit(&train, &validation, |_| Control::Continue)
        .unwrap();
    let mae = |epoch: usize, axis: &str| {
        let evaluation = fit.epochs[epoch - 1].validation.as_ref().unwrap();
        evaluation.metrics.axis(axis).unwrap().mae.unwrap()
    };
    for axis in ["y", "z"] {
        // The first epoch of the lowest MAE (a tie does not improve).
        let lowest = (1..=fit.epochs.len())
            .min_by(|&a, &b| mae(a, axis).total_cmp(&mae(b, axis)))
            .unwrap();
        assert_eq!(fit.best_epochs[axis], lowest, "{axis}");
    }
    assert_ne!(fit.best_epochs["y"], fit.best_epochs["z"]);
    // The model holds each axis's weights from its own epoch: evaluating it again gives
    // each axis's figures of that epoch.
    let report = trainer.evaluate(&validation).unwrap();
    for axis in ["y", "z"] {
        let expected = mae(fit.best_epochs[axis], axis);
        let again = report.mae(axis).unwrap();
        assert!(
            (again - expected).abs() < 1e-9,
            "{axis}: {again} {expected}"
        );
    }
    assert_eq!(
        report.evaluation.metrics, fit.best_validation.metrics,
        "the assembled figures are the assembled model's"
    );

    // Axes that share one MLP cannot keep weights of different epochs.
    let err = build(MlpConfig::new(2, [16]))
        .fit(&train, &validation, |_| Control::Continue)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Trainer::monitor") && err.contains("with_separate_trunks"),
        "{err}"
    );
}

#[test]
fn settings_that_cannot_train_are_refused_by_name() {
    let (train, validation) = (dataset("train"), dataset("validation"));
    let trainer = || {
        let model = Model::build(&MlpConfig::new(2, [8]).into(), &space(), 1, &Device::Cpu);
        Trainer::new(model.unwrap(), FullKl::new())
    };
    let refused = |mut trainer: Trainer, train: &Dataset| {
        trainer
            .fit(train, &validation, |_| Control::Continue)
            .unwrap_err()
            .to_string()
    };
    let err = refused(trainer().batch_size(0), &train);
    assert!(err.contains("Trainer::batch_size: 0"), "{err}");
    let err = refused(trainer().learning_rate(f64::NAN), &train);
    assert!(err.contains("Trainer::learning_rate: NaN"), "{err}");
    let err = refused(trainer().lr_steps(0, 0.1), &train);
    assert!(err.contains("Trainer::lr_steps"), "{err}");
    let err = refused(trainer(), &Dataset::default());
    assert!(
        err.contains("0 training and 24 validation samples"),
        "{err}"
    );
}

/// FullKl, noting for each batch whose logits carry a gradient graph (a training step's)
/// which of rayon's workers computed its loss.
struct ThreadNoting {
    inner: FullKl,
    steps: Arc<Mutex<Vec<Option<usize>>>>,
}

impl Loss for ThreadNoting {
    fn name(&self) -> &'static str {
        "thread-noting"
    }

    fn axis_parts(
        &self,
        logits: &Tensor,
        target: &AxisTargets,
        axis: &Axis,
    ) -> CoreResult<AxisParts> {
        self.inner.axis_parts(logits, target, axis)
    }

    fn group_parts(
        &self,
        logits: &Tensor,
        targets: &[AxisTargets],
        axes: &[&Axis],
    ) -> CoreResult<AxisParts> {
        self.inner.group_parts(logits, targets, axes)
    }

    fn compute(
        &self,
        space: &LabelSpace,
        logits: &[Tensor],
        targets: &[AxisTargets],
    ) -> CoreResult<LossOutput> {
        if logits[0].track_op() {
            let worker = rayon::current_thread_index();
            self.steps.lock().unwrap().push(worker);
        }
        self.inner.compute(space, logits, targets)
    }
}

#[test]
fn fit_runs_each_training_step_on_a_worker_of_rayons_pool() {
    // Started from a thread outside the pool, as a program's main thread is; each step's
    // kernels then run in place instead of handing every parallel loop over.
    assert_eq!(rayon::current_thread_index(), None);
    let (train, validation) = (dataset("train"), dataset("validation"));
    let steps = Arc::new(Mutex::new(Vec::new()));
    let loss = ThreadNoting {
        inner: FullKl::new(),
        steps: steps.clone(),
    };
    let model = Model::build(&MlpConfig::new(2, [16]).into(), &space(), 3, &Device::Cpu);
    let mut trainer = Trainer::new(model.unwrap(), loss).epochs(2).batch_size(8);
    trainer
        .fit(&train, &validation, |_| Control::Continue)
        .unwrap();
    let steps = steps.lock().unwrap();
    // 96 training rows in batches of 8: 12 steps an epoch.
    assert_eq!(steps.len(), 2 * 12);
    assert!(steps.iter().all(Option::is_some), "{steps:?}");
}
