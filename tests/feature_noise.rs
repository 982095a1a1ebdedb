//! `data.feature_noise` / `Trainer::feature_noise`: Gaussian noise on the training
//! features only, resolved and saved with the run, refused where there are no features.

use std::path::Path;

use candle_core::Device;
use ldl::data::Dataset;
use ldl::loss::FullKl;
use ldl::models::{MlpConfig, Model};
use ldl::train::{Config, Control, Trainer, DEFAULT_FEATURE_NOISE};
use ldl::{Axis, Label, LabelSpace};

const BDIMS: &str = include_str!("../configs/bdims.toml");
const QUICKSTART: &str = include_str!("../configs/quickstart.toml");

fn config_error(text: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match Config::parse(Path::new("task.toml"), text, &overrides) {
        Ok(_) => panic!("the config should be refused: {overrides:?}"),
        Err(e) => e.to_string(),
    }
}

/// The value a config sets, the default for feature columns when unset, 0 for images;
/// the resolved value is saved; a config saved before the key existed trained without
/// noise and reads back as 0.
#[test]
fn the_noise_is_resolved_saved_and_refused_where_it_cannot_apply() {
    let path = Path::new("configs/bdims.toml");
    let bdims = Config::parse(path, BDIMS, &[]).unwrap();
    assert_eq!(bdims.data.feature_noise, Some(0.5));
    let unset = BDIMS.replace("feature_noise = 0.5\n", "");
    assert_ne!(unset, BDIMS);
    let default = Config::parse(path, &unset, &[]).unwrap();
    assert_eq!(default.data.feature_noise, Some(DEFAULT_FEATURE_NOISE));
    let images = Config::parse(Path::new("quickstart.toml"), QUICKSTART, &[]).unwrap();
    assert_eq!(images.data.feature_noise, Some(0.0));

    let written = toml::to_string(&*bdims).unwrap();
    assert!(written.contains("feature_noise = 0.5"), "{written}");
    let saved = Config::parse_saved(Path::new("config.toml"), &written).unwrap();
    assert_eq!(saved.data.feature_noise, Some(0.5));
    let old = Config::parse_saved(Path::new("checkpoint.safetensors"), &unset).unwrap();
    assert_eq!(old.data.feature_noise, Some(0.0));

    let err = config_error(QUICKSTART, &["data.feature_noise=0.1"]);
    assert!(
        err.contains("data.feature_noise") && err.contains("reads images"),
        "{err}"
    );
    for bad in ["-0.5", "11", "nan"] {
        let err = config_error(BDIMS, &[&format!("data.feature_noise={bad}")]);
        assert!(
            err.contains("data.feature_noise") && err.contains("[0, 10]"),
            "{bad}: {err}"
        );
    }
}

fn space() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("y", 0.0, 10.0, 0.5).unwrap()]).unwrap()
}

/// 64 rows of `y = 10·x`.
fn rows() -> Dataset {
    let xs: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    Dataset::from_features(
        &space(),
        xs.iter().map(|&x| vec![x, 1.0 - x]).collect(),
        xs.iter()
            .map(|&x| vec![Label::value(10.0 * x as f64)])
            .collect(),
    )
    .unwrap()
}

/// (training loss, validation loss) of one epoch on the same rows at a learning rate so
/// small that the weights stay where they started (Adam's first steps move each weight by
/// about the learning rate): the two differ only by what the training batches see.
fn losses(noise: f32) -> (f64, f64) {
    let backbone = MlpConfig::new(2, [16]).into();
    let model = Model::build(&backbone, &space(), 9, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(1)
        .batch_size(16)
        .learning_rate(1e-12)
        .seed(4)
        .feature_noise(noise);
    let data = rows();
    let fit = trainer.fit(&data, &data, |_| Control::Continue).unwrap();
    let epoch = &fit.epochs[0];
    (
        epoch.train.total,
        epoch.validation.as_ref().unwrap().loss.total,
    )
}

#[test]
fn noise_reaches_the_training_batches_and_not_the_validation() {
    let (clean_train, clean_validation) = losses(0.0);
    assert!(
        (clean_train - clean_validation).abs() < 1e-6,
        "without noise the training batches are the validation rows: {clean_train} vs {clean_validation}"
    );
    let (noisy_train, noisy_validation) = losses(3.0);
    assert!(
        (noisy_train - clean_train).abs() > 1e-3,
        "noise of std 3 changes what the training batches score: {noisy_train} vs {clean_train}"
    );
    assert_eq!(
        noisy_validation, clean_validation,
        "validation reads the rows as they are"
    );
    // The same seed draws the same noise.
    assert_eq!(losses(3.0).0, noisy_train);
}

#[test]
fn the_trainer_refuses_noise_on_images() {
    use ldl::data::{InputColumns, LabelColumns, OnBadSample, SynthConfig, TableSpec};
    let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap();
    let spec = TableSpec::new(InputColumns::AllOtherColumns).with_label(
        "age",
        LabelColumns::Value {
            value: "apparent_age".into(),
            std: None,
        },
    );
    let faces = ldl::data::read_synthetic_faces(
        &SynthConfig::default(),
        8,
        &spec,
        &space,
        OnBadSample::Error,
    )
    .unwrap()
    .samples;
    let backbone = ldl::models::BackboneConfig::tiny_age_net();
    let model = Model::build(&backbone, &space, 1, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(1)
        .batch_size(4)
        .image_size(32)
        .feature_noise(0.1);
    let err = trainer
        .fit(&faces, &faces, |_| Control::Continue)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("feature_noise") && err.contains("images"),
        "{err}"
    );
}
