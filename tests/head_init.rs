//! `model.head_init` / `Trainer::head_init`: a fresh MLP's heads start at the training
//! split's mean target distribution, so that an untrained model predicts the training
//! mean, and with `least-squares` (the default with a linear path) each path at a ridge
//! regression, so that it predicts the linear fit; saved configs and image networks keep
//! the uniform start.

use std::path::Path;

use candle_core::Device;
use ldl::data::Dataset;
use ldl::loss::FullKl;
use ldl::models::{MlpConfig, Model};
use ldl::train::{Config, Control, HeadInit, Trainer};
use ldl::{Axis, Label, LabelSpace};

const BDIMS: &str = include_str!("../configs/bdims.toml");
const QUICKSTART: &str = include_str!("../configs/quickstart.toml");

#[test]
fn the_default_is_least_squares_for_the_mlp_and_saved_configs_keep_uniform() {
    let bdims = Config::parse(Path::new("bdims.toml"), BDIMS, &[]).unwrap();
    assert_eq!(bdims.model.head_init, Some(HeadInit::LeastSquares));
    let no_path = ["model.linear_path=false".to_string()];
    let no_path = Config::parse(Path::new("bdims.toml"), BDIMS, &no_path).unwrap();
    assert_eq!(no_path.model.head_init, Some(HeadInit::TrainingMean));
    let images = Config::parse(Path::new("quickstart.toml"), QUICKSTART, &[]).unwrap();
    assert_eq!(images.model.head_init, Some(HeadInit::Uniform));
    let set = ["model.head_init=uniform".to_string()];
    let uniform = Config::parse(Path::new("bdims.toml"), BDIMS, &set).unwrap();
    assert_eq!(uniform.model.head_init, Some(HeadInit::Uniform));

    let written = toml::to_string(&*bdims).unwrap();
    assert!(
        written.contains("head_init = \"least-squares\""),
        "{written}"
    );
    let saved = Config::parse_saved(Path::new("config.toml"), &written).unwrap();
    assert_eq!(saved.model.head_init, Some(HeadInit::LeastSquares));
    // Saved by an ldl without the key: the uniform start it trained from.
    assert!(!BDIMS.contains("head_init"));
    let old = Config::parse_saved(Path::new("checkpoint.safetensors"), BDIMS).unwrap();
    assert_eq!(old.model.head_init, Some(HeadInit::Uniform));

    let bad = ["model.head_init=mean".to_string()];
    let err = Config::parse(Path::new("bdims.toml"), BDIMS, &bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("model.head_init") && err.contains("least-squares"),
        "{err}"
    );

    // `least-squares` starts the linear paths: refused, naming the key, without one.
    let refused = |text: &str, set: &[&str], width: usize| {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        let error = match Config::parse(Path::new("c.toml"), text, &set) {
            Ok(config) => config.model.backbone_config(width).unwrap_err(),
            Err(error) => error,
        };
        error.to_string()
    };
    let set = ["model.head_init=least-squares", "model.linear_path=false"];
    let err = refused(BDIMS, &set, 21);
    assert!(
        err.contains("`model.head_init`") && err.contains("linear_path"),
        "{err}"
    );
    let err = refused(QUICKSTART, &["model.head_init=least-squares"], 0);
    assert!(
        err.contains("`model.head_init`") && err.contains("training-mean"),
        "{err}"
    );
}

fn space() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("y", 0.0, 20.0, 0.5).unwrap()]).unwrap()
}

/// Targets 12 to 15 (away from the axis's middle, 10), every feature 0: a linear head
/// then outputs its bias alone, and the trainer's learning rate is too small to move it.
fn predicted_mean(init: Option<HeadInit>) -> f64 {
    let ys = [12.0, 13.0, 14.0, 15.0, 12.5, 13.5, 14.5, 13.0];
    let data = Dataset::from_features(
        &space(),
        ys.iter().map(|_| vec![0.0f32, 0.0]).collect(),
        ys.iter().map(|&y| vec![Label::value(y)]).collect(),
    )
    .unwrap();
    let model = Model::build(&MlpConfig::new(2, []).into(), &space(), 3, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(1)
        .batch_size(4)
        .learning_rate(1e-12);
    if let Some(init) = init {
        trainer = trainer.head_init(init);
    }
    trainer.fit(&data, &data, |_| Control::Continue).unwrap();
    let predictions = trainer.predict(&data[..1]).unwrap();
    predictions[0][0].as_value().unwrap().mean
}

#[test]
fn a_training_mean_start_predicts_the_training_mean() {
    // The mean of the targets' discretised normals (nothing is cut off at the axis's
    // ends, 5 units away): the labels' mean, 107.5 / 8.
    let start = predicted_mean(Some(HeadInit::TrainingMean));
    assert!((start - 13.4375).abs() < 1e-3, "{start}");
    // Unset or uniform: the model as built, whose zero-input output is candle's near-zero
    // bias: close to the middle of the axis.
    for init in [None, Some(HeadInit::Uniform)] {
        let mean = predicted_mean(init);
        assert!((mean - 10.0).abs() < 1.5, "{init:?}: {mean}");
    }
}

/// `ldl train` sets the biases of a fresh MLP run: after one epoch at a learning rate
/// that cannot move them, each head's softmax has the training mean (`summary.json`'s
/// mean predictor, computed from the labels) as its mean.
#[test]
fn ldl_train_starts_a_fresh_mlp_at_the_training_mean() {
    let dir = tempfile::tempdir().unwrap();
    let run = |init: &str| {
        let overrides = vec![
            "optim.epochs=1".to_string(),
            "optim.lr=1e-12".to_string(),
            "data.feature_noise=0".to_string(),
            format!("model.head_init={init}"),
            format!(
                "run.output_dir={:?}",
                dir.path().join(init).display().to_string()
            ),
        ];
        let config = Config::parse(Path::new("bdims.toml"), BDIMS, &overrides).unwrap();
        ldl::train::train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap()
    };
    for init in ["training-mean", "uniform"] {
        let summary = run(init);
        let (model, _) = Model::from_checkpoint(
            &summary.run_dir.join("checkpoints/last.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let vars = model.vars().data().lock().unwrap();
        let bias = vars["heads.weight.bias"].to_vec1::<f32>().unwrap();
        let weights: Vec<f64> = bias.iter().map(|b| (*b as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mean = weights
            .iter()
            .enumerate()
            .map(|(k, w)| (40.0 + k as f64) * w / total)
            .sum::<f64>();
        let training_mean = summary
            .mean_predictor
            .iter()
            .find(|m| m.axis == "weight")
            .unwrap()
            .value;
        if init == "training-mean" {
            assert!(
                (mean - training_mean).abs() < 0.05,
                "{mean} vs {training_mean}"
            );
        } else {
            assert!(
                (mean - training_mean).abs() > 5.0,
                "{mean} vs {training_mean}"
            );
        }
    }
}

/// Rows `(x₁, x₂)` on a grid and the targets of `truth`, as a data set of `space` whose
/// features are the rows as given.
fn linear_data(space: &LabelSpace, truth: impl Fn(f64, f64) -> f64) -> (Vec<[f64; 2]>, Dataset) {
    linear_data_as(space, truth, |r| vec![r[0] as f32, r[1] as f32])
}

/// The same rows with features `features(row)`, one label per axis of `space` from
/// `truth` (the same value on every axis).
fn linear_data_as(
    space: &LabelSpace,
    truth: impl Fn(f64, f64) -> f64,
    features: impl Fn(&[f64; 2]) -> Vec<f32>,
) -> (Vec<[f64; 2]>, Dataset) {
    let rows: Vec<[f64; 2]> = (0..48)
        .map(|i| [(i % 8) as f64 / 3.5 - 1.0, (i / 8) as f64 / 2.5 - 1.0])
        .collect();
    let axes = space.axes().len();
    let data = Dataset::from_features(
        space,
        rows.iter().map(&features).collect(),
        rows.iter()
            .map(|r| vec![Label::value(truth(r[0], r[1])); axes])
            .collect(),
    )
    .unwrap();
    (rows, data)
}

/// A trainer of `config` after a start as `init` and one epoch at a learning rate that
/// cannot move the weights.
fn started(space: &LabelSpace, data: &Dataset, config: MlpConfig, init: HeadInit) -> Trainer {
    let model = Model::build(&config.into(), space, 5, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(1)
        .batch_size(16)
        .learning_rate(1e-12)
        .head_init(init);
    trainer.fit(data, data, |_| Control::Continue).unwrap();
    trainer
}

/// The predicted means of axis `axis` of every row.
fn means(trainer: &Trainer, data: &Dataset, axis: usize) -> Vec<f64> {
    trainer
        .predict(data)
        .unwrap()
        .iter()
        .map(|p| p[axis].as_value().unwrap().mean)
        .collect()
}

/// A variable of the trainer's model, flattened.
fn variable(trainer: &Trainer, name: &str) -> Vec<f32> {
    let vars = trainer.model().vars().data().lock().unwrap();
    let tensor = vars[name].as_tensor().flatten_all().unwrap();
    tensor.to_vec1::<f32>().unwrap()
}

/// The predicted means of an MLP with a linear path after a start as `init`, and its
/// head's weight matrix, flattened.
fn untrained_means(space: &LabelSpace, data: &Dataset, init: HeadInit) -> (Vec<f64>, Vec<f32>) {
    let config = MlpConfig::new(2, [8]).with_linear_path();
    let trainer = started(space, data, config, init);
    let head = variable(
        &trainer,
        &format!("heads.{}.weight", space.axes()[0].name()),
    );
    (means(&trainer, data, 0), head)
}

/// On an exactly linear target, `y = 20 + 3·x₁ − 2·x₂`, generalised cross-validation picks
/// the smallest penalty and the untrained model predicts the linear function itself (to
/// the rounding of a discretised normal distribution), where the training-mean start
/// predicts one value for every row. The heads' weight matrices start at zero, so the
/// hidden layers add nothing yet.
#[test]
fn a_least_squares_start_predicts_the_linear_fit() {
    let space = LabelSpace::new(vec![Axis::linear("y", 0.0, 40.0, 0.5).unwrap()]).unwrap();
    let truth = |a: f64, b: f64| 20.0 + 3.0 * a - 2.0 * b;
    let (rows, data) = linear_data(&space, truth);
    let (means, head) = untrained_means(&space, &data, HeadInit::LeastSquares);
    for (row, mean) in rows.iter().zip(&means) {
        let expected = truth(row[0], row[1]);
        assert!(
            (mean - expected).abs() < 0.05,
            "{row:?}: {mean} vs {expected}"
        );
    }
    // Zero at the start; one Adam step of 1e-12 since.
    assert!(head.iter().all(|w| w.abs() < 1e-9), "{head:?}");

    let (flat, _) = untrained_means(&space, &data, HeadInit::TrainingMean);
    let spread = flat.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        - flat.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(spread < 1.0, "{spread}");
}

/// On a circular axis the path tilts along the angle's cosine and sine: directions that
/// turn with `x₁` (40° to 140°, around 90°) are predicted to within a few degrees, where
/// the training-mean start predicts about 90° for all.
#[test]
fn a_least_squares_start_turns_a_circular_axis() {
    let space = LabelSpace::new(vec![Axis::circular("yaw", 0.0, 360.0, 5.0).unwrap()]).unwrap();
    let truth = |a: f64, _: f64| 90.0 + 50.0 * a;
    let (rows, data) = linear_data(&space, truth);
    let error = |means: &[f64]| {
        rows.iter()
            .zip(means)
            .map(|(row, mean)| {
                let d = (mean - truth(row[0], row[1])).rem_euclid(360.0);
                d.min(360.0 - d)
            })
            .sum::<f64>()
            / rows.len() as f64
    };
    let (start, _) = untrained_means(&space, &data, HeadInit::LeastSquares);
    let (flat, _) = untrained_means(&space, &data, HeadInit::TrainingMean);
    let (start, flat) = (error(&start), error(&flat));
    assert!(
        start < 5.0 && flat > 20.0,
        "least-squares {start}°, training mean {flat}°"
    );
}

/// The path has no intercept: on features that are not centred (raw units, as the
/// library takes them, or `data.standardize = false`) the bias absorbs the offset, and
/// the untrained model still predicts the linear function.
#[test]
fn a_least_squares_start_needs_no_centred_features() {
    let space = LabelSpace::new(vec![Axis::linear("y", 0.0, 40.0, 0.5).unwrap()]).unwrap();
    let truth = |a: f64, b: f64| 20.0 + 3.0 * a - 2.0 * b;
    let raw = |r: &[f64; 2]| vec![(50.0 + 3.0 * r[0]) as f32, (0.5 * r[1] - 20.0) as f32];
    let (rows, data) = linear_data_as(&space, truth, raw);
    let (means, _) = untrained_means(&space, &data, HeadInit::LeastSquares);
    for (row, mean) in rows.iter().zip(&means) {
        let expected = truth(row[0], row[1]);
        assert!(
            (mean - expected).abs() < 0.05,
            "{row:?}: {mean} vs {expected}"
        );
    }
}

/// A joint head's path stacks its members' weights (the linear axis's, then the
/// circular axis's cosine and sine), and its start is the product of the members'
/// starts: the same marginal means as two separate heads, and the same path weights.
#[test]
fn a_joint_head_starts_as_its_members() {
    let axes = || {
        vec![
            Axis::linear("y", 0.0, 40.0, 1.0).unwrap(),
            Axis::circular("yaw", 0.0, 360.0, 10.0).unwrap(),
        ]
    };
    let separate = LabelSpace::new(axes()).unwrap();
    let joint = LabelSpace::new(axes())
        .unwrap()
        .with_joint(&["y", "yaw"])
        .unwrap();
    let truth = |a: f64, b: f64| 20.0 + 6.0 * a - 4.0 * b;
    let config = || MlpConfig::new(2, [8]).with_linear_path();
    let (_, data) = linear_data(&separate, truth);
    let alone = started(&separate, &data, config(), HeadInit::LeastSquares);
    let (_, data) = linear_data(&joint, truth);
    let together = started(&joint, &data, config(), HeadInit::LeastSquares);

    let mut stacked = variable(&alone, "heads.y.linear_path.weight");
    stacked.extend(variable(&alone, "heads.yaw.linear_path.weight"));
    let joint_weights = variable(&together, "heads.y+yaw.linear_path.weight");
    assert_eq!(joint_weights.len(), 3 * 2);
    for (a, b) in stacked.iter().zip(&joint_weights) {
        assert!(
            (a - b).abs() < 1e-4 * a.abs().max(1.0),
            "{stacked:?} vs {joint_weights:?}"
        );
    }
    for axis in 0..2 {
        let (a, b) = (means(&alone, &data, axis), means(&together, &data, axis));
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-3, "axis {axis}: {a} vs {b}");
        }
    }
}

/// Every network of an ensemble gets the same start; `least-squares` on a model without
/// a path is refused by `Trainer::fit`, naming the setting.
#[test]
fn ensembles_share_the_start_and_a_model_without_a_path_is_refused() {
    let space = LabelSpace::new(vec![Axis::linear("y", 0.0, 40.0, 0.5).unwrap()]).unwrap();
    let (_, data) = linear_data(&space, |a, b| 20.0 + 3.0 * a - 2.0 * b);
    let config = MlpConfig::new(2, [8]).with_linear_path().with_ensemble(2);
    let trainer = started(&space, &data, config, HeadInit::LeastSquares);
    let first = variable(&trainer, "ensemble.0.heads.y.linear_path.weight");
    let second = variable(&trainer, "ensemble.1.heads.y.linear_path.weight");
    assert_eq!(first, second);
    assert!(first.iter().all(|w| w.abs() > 0.1), "{first:?}");

    let model = Model::build(&MlpConfig::new(2, [8]).into(), &space, 5, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(1)
        .head_init(HeadInit::LeastSquares);
    let err = trainer
        .fit(&data, &data, |_| Control::Continue)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("Trainer::head_init") && err.contains("with_linear_path"),
        "{err}"
    );
}
