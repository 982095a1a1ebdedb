//! The MLP's linear path (`model.linear_path`): each head's logits get `(x wᵀ) z`, with
//! `z` the bins' statistics, checked against the definition computed here in f64; the
//! path starts at zero and changes nothing until trained; it trains, saves and loads,
//! and the config key is on for the MLP, off for checkpoints of an earlier ldl, and
//! refused for the image networks.

use std::f64::consts::TAU;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ldl::models::{BackboneConfig, MlpConfig, Model};
use ldl::train::Config;
use ldl::{Axis, LabelSpace};

const BDIMS: &str = include_str!("../configs/bdims.toml");
const QUICKSTART: &str = include_str!("../configs/quickstart.toml");

/// Age 0..=20 by 1 (linear), a yaw circle of 8 bins of 45°, sex (categorical), and a
/// joint group of pitch −30..=30 by 15 (linear) and hour of day by 6 h (circular).
fn space() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("age", 0.0, 20.0, 1.0).unwrap(),
        Axis::circular("yaw", 0.0, 360.0, 45.0).unwrap(),
        Axis::categorical("sex", ["female", "male"]).unwrap(),
        Axis::linear("pitch", -30.0, 30.0, 15.0).unwrap(),
        Axis::circular("hour", 0.0, 24.0, 6.0).unwrap(),
    ])
    .unwrap()
    .with_joint(&["pitch", "hour"])
    .unwrap()
}

/// The statistics of each head's bins by their definition: for age `(c − 10) / 10`, for
/// yaw the cosine and sine of `c` in degrees, none for sex, and for the pitch × hour grid
/// (pitch slowest) `c_pitch / 30`, then the cosine and sine of `2π c_hour / 24`.
fn statistics_by_definition() -> Vec<Vec<Vec<f64>>> {
    let age = vec![(0..=20).map(|c| (c as f64 - 10.0) / 10.0).collect()];
    let degrees = |c: usize| (45 * c) as f64 * TAU / 360.0;
    let yaw = vec![
        (0..8).map(|c| degrees(c).cos()).collect(),
        (0..8).map(|c| degrees(c).sin()).collect(),
    ];
    let cells: Vec<(f64, f64)> = (0..5)
        .flat_map(|p| (0..4).map(move |h| (-30.0 + 15.0 * p as f64, 6.0 * h as f64)))
        .collect();
    let grid = vec![
        cells.iter().map(|(pitch, _)| pitch / 30.0).collect(),
        cells.iter().map(|(_, h)| (TAU * h / 24.0).cos()).collect(),
        cells.iter().map(|(_, h)| (TAU * h / 24.0).sin()).collect(),
    ];
    vec![age, yaw, Vec::new(), grid]
}

fn rows() -> Tensor {
    Tensor::new(
        &[[0.5f32, -1.0, 2.0], [0.0, 0.3, -0.7], [1.5, 1.0, 0.2]],
        &Device::Cpu,
    )
    .unwrap()
}

fn variable(model: &Model, name: &str) -> Option<candle_core::Var> {
    model.vars().data().lock().unwrap().get(name).cloned()
}

fn path_config(networks: usize) -> BackboneConfig {
    MlpConfig::new(3, [8])
        .with_separate_trunks()
        .with_ensemble(networks)
        .with_linear_path()
        .into()
}

/// With weights `w` set, every head's logits are those with `w = 0` plus `Σ_s (x·w_s) z_s`,
/// in every network of an ensemble; the categorical head has no path.
#[test]
fn each_head_gets_its_tilt_along_its_bins_statistics() {
    let space = space();
    let model = Model::build(&path_config(2), &space, 5, &Device::Cpu).unwrap();
    let x = rows();
    let statistics = statistics_by_definition();
    for network in 0..2 {
        let prefix = format!("ensemble.{network}.heads");
        assert!(variable(&model, &format!("{prefix}.sex.linear_path.weight")).is_none());
        // Zero paths: what the heads alone give.
        let without: Vec<Vec<Vec<f32>>> = network_logits(&model, &x, network);
        let mut weights = Vec::new();
        for (index, head) in space.heads().iter().enumerate() {
            let Some(var) = variable(
                &model,
                &format!("{prefix}.{}.linear_path.weight", head.name()),
            ) else {
                weights.push(Vec::new());
                continue;
            };
            assert_eq!(var.dims(), [statistics[index].len(), 3], "{}", head.name());
            assert!(var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|w| *w == 0.0));
            let values: Vec<Vec<f32>> = (0..statistics[index].len())
                .map(|s| {
                    (0..3)
                        .map(|i| 0.3 * (s as f32 + 1.0) - 0.2 * i as f32 + network as f32)
                        .collect()
                })
                .collect();
            var.set(&Tensor::new(values.clone(), &Device::Cpu).unwrap())
                .unwrap();
            weights.push(values);
        }
        let with = network_logits(&model, &x, network);
        let inputs = x.to_vec2::<f32>().unwrap();
        for (index, head) in space.heads().iter().enumerate() {
            for (row, input) in inputs.iter().enumerate() {
                for bin in 0..head.bins() {
                    let tilt: f64 = weights[index]
                        .iter()
                        .zip(&statistics[index])
                        .map(|(w, z)| {
                            let s: f64 = w
                                .iter()
                                .zip(input)
                                .map(|(w, x)| *w as f64 * *x as f64)
                                .sum();
                            s * z[bin]
                        })
                        .sum();
                    let got = (with[index][row][bin] - without[index][row][bin]) as f64;
                    assert!(
                        (got - tilt).abs() < 1e-5 * (1.0 + tilt.abs()),
                        "network {network} head {} row {row} bin {bin}: {got} against {tilt}",
                        head.name()
                    );
                }
            }
        }
    }
}

fn network_logits(model: &Model, x: &Tensor, network: usize) -> Vec<Vec<Vec<f32>>> {
    let rows = ldl::models::BatchRows::whole(x.dim(0).unwrap());
    let networks = model
        .forward_networks_rows(std::slice::from_ref(x), rows)
        .unwrap();
    networks[network]
        .iter()
        .map(|logits| logits.to_vec2::<f32>().unwrap())
        .collect()
}

/// A fresh path is zero and draws nothing from the seed: the model's other variables and
/// its outputs are those of the model without it.
#[test]
fn an_untrained_path_changes_nothing() {
    let space = space();
    let plain: BackboneConfig = MlpConfig::new(3, [8]).with_separate_trunks().into();
    let without = Model::build(&plain, &space, 11, &Device::Cpu).unwrap();
    let with = Model::build(&path_config(1), &space, 11, &Device::Cpu).unwrap();
    for (name, var) in without.vars().data().lock().unwrap().iter() {
        let other = variable(&with, name).unwrap();
        let same = var
            .as_tensor()
            .eq(other.as_tensor())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(same, 1.0, "{name}");
    }
    // Three heads with a path: age 1 × 3 inputs, yaw 2 × 3, the grid 3 × 3.
    assert_eq!(with.parameter_count(), without.parameter_count() + 18);
    assert_eq!(
        path_config(1).stored_elements(&space),
        with.parameter_count() as u128
    );
    let x = rows();
    let a = without.forward_t(&x, false).unwrap();
    let b = with.forward_t(&x, false).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }
}

/// Saved and loaded, a model with a trained path predicts the same; the header of a model
/// without one does not mention it, so its checkpoints are the ones an earlier ldl wrote.
#[test]
fn a_path_is_saved_and_loaded_and_a_model_without_one_keeps_its_header() {
    let space = space();
    let model = Model::build(&path_config(1), &space, 3, &Device::Cpu).unwrap();
    let var = variable(&model, "heads.age.linear_path.weight").unwrap();
    var.set(&Tensor::new(&[[1.0f32, -0.5, 0.25]], &Device::Cpu).unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    model.save(&path).unwrap();
    let loaded = Model::load(&path, &Device::Cpu).unwrap();
    let x = rows();
    let before = model.forward_t(&x, false).unwrap();
    let after = loaded.forward_t(&x, false).unwrap();
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }
    assert!(std::fs::read(&path)
        .unwrap()
        .windows(11)
        .any(|w| w == b"linear_path"));

    let plain: BackboneConfig = MlpConfig::new(3, [8]).into();
    let plain_path = dir.path().join("plain.safetensors");
    Model::build(&plain, &space, 3, &Device::Cpu)
        .unwrap()
        .save(&plain_path)
        .unwrap();
    assert!(!std::fs::read(&plain_path)
        .unwrap()
        .windows(11)
        .any(|w| w == b"linear_path"));
}

/// `Trainer::fit` trains the path: on 64 rows of `y = 10·x` (features `x − ½` and
/// `½ − x`) the path's weights grow with the sign of each feature's slope, and the model
/// fits the target.
#[test]
fn the_trainer_trains_the_path() {
    use ldl::data::Dataset;
    use ldl::loss::FullKl;
    use ldl::train::{Control, Trainer};
    use ldl::Label;
    let space = LabelSpace::new(vec![Axis::linear("y", 0.0, 10.0, 0.5).unwrap()]).unwrap();
    let xs: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    let data = Dataset::from_features(
        &space,
        xs.iter().map(|&x| vec![x - 0.5, 0.5 - x]).collect(),
        xs.iter()
            .map(|&x| vec![Label::value(10.0 * x as f64)])
            .collect(),
    )
    .unwrap();
    let config = MlpConfig::new(2, [4]).with_linear_path();
    let model = Model::build(&config.into(), &space, 9, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(60)
        .batch_size(16)
        .learning_rate(0.03)
        .seed(4);
    trainer.fit(&data, &data, |_| Control::Continue).unwrap();
    let mae = trainer.evaluate(&data).unwrap().mae("y").unwrap();
    let weight = variable(trainer.model(), "heads.y.linear_path.weight").unwrap();
    let weight = weight.as_tensor().to_vec2::<f32>().unwrap();
    assert!(weight[0][0] > 0.5 && weight[0][1] < -0.5, "{weight:?}");
    assert!(mae < 0.5, "{mae}");
}

/// `model.linear_path`: on for the MLP unless set off; a config saved by an earlier ldl,
/// which has no such key, trained without and loads without; refused by name for the
/// image networks.
#[test]
fn the_config_key_is_on_for_the_mlp_and_saved_configs_keep_theirs() {
    let path = Path::new("configs/bdims.toml");
    let parse = |text: &str, set: &[&str]| {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        Config::parse(path, text, &set)
    };
    let mlp_path = |config: &Config| match config.model.backbone_config(21).unwrap() {
        BackboneConfig::Mlp(mlp) => mlp.linear_path,
        other => panic!("{other:?}"),
    };
    let config = parse(BDIMS, &[]).unwrap();
    assert_eq!(config.model.linear_path, Some(true));
    assert!(mlp_path(&config));
    assert!(!mlp_path(
        &parse(BDIMS, &["model.linear_path=false"]).unwrap()
    ));

    // The resolved value is what a run folder saves, and reads back unchanged.
    let written = toml::to_string(&*config).unwrap();
    assert!(written.contains("linear_path = true"), "{written}");
    let saved = Config::parse_saved(Path::new("config.toml"), &written).unwrap();
    assert!(mlp_path(&saved));
    // Saved without the key: no path, as it was trained.
    assert!(!BDIMS.contains("linear_path"));
    let old = Config::parse_saved(Path::new("checkpoint.safetensors"), BDIMS).unwrap();
    assert!(!mlp_path(&old));

    let image = parse(QUICKSTART, &[]).unwrap();
    assert_eq!(image.model.linear_path, Some(false));
    let error = match parse(QUICKSTART, &["model.linear_path=true"]) {
        Ok(config) => config.model.backbone_config(0).unwrap_err().to_string(),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("`model.linear_path`") && error.contains("for the MLP"),
        "{error}"
    );
}

/// An axis named `….linear_path` would give its head's weights the name of another head's
/// path: refused by name, with or without the path, and in a config naming the key.
#[test]
fn an_axis_named_like_a_path_is_refused() {
    let space =
        LabelSpace::new(vec![Axis::linear("x.linear_path", 0.0, 10.0, 1.0).unwrap()]).unwrap();
    for config in [BackboneConfig::mlp(3, [4]), path_config(1)] {
        let error = Model::build(&config, &space, 1, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`x.linear_path`") && error.contains("rename the axis"),
            "{error}"
        );
    }
    let renamed = BDIMS
        .replace("name = \"age\"\n", "name = \"age.linear_path\"\n")
        .replace("\nage = { value", "\n\"age.linear_path\" = { value");
    assert!(renamed.contains("\"age.linear_path\" = { value"));
    let error = Config::parse(Path::new("task.toml"), &renamed, &[])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`task.axes[0].name`") && error.contains("rename the axis"),
        "{error}"
    );
}
