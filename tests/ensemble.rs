//! Ensembles of MLPs (`model.ensemble`): the model's distribution is the mean of its
//! networks', each network starts from weights of its own, a checkpoint restores the
//! whole ensemble, and `ldl train` trains one end to end.

use candle_core::{Device, Tensor, D};
use ldl::models::{BackboneConfig, BatchRows, MlpConfig, Model};
use ldl::{Axis, LabelSpace};

fn space() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("age", 0.0, 20.0, 1.0).unwrap(),
        Axis::categorical("sex", ["female", "male"]).unwrap(),
    ])
    .unwrap()
}

fn rows() -> Tensor {
    Tensor::new(
        &[[0.5f32, -1.0, 2.0], [0.0, 0.3, -0.7], [1.5, 1.0, 0.2]],
        &Device::Cpu,
    )
    .unwrap()
}

fn softmax_rows(logits: &Tensor) -> Vec<Vec<f32>> {
    candle_nn::ops::softmax(logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

/// Without BatchNorm or dropout a network computes the same in training and evaluation,
/// so its training logits are its evaluation logits: the model's distribution must be the
/// mean of the networks'.
#[test]
fn the_models_distribution_is_the_mean_of_its_networks() {
    let config = MlpConfig::new(3, [8])
        .with_separate_trunks()
        .with_ensemble(4);
    let model = Model::build(&config.into(), &space(), 3, &Device::Cpu).unwrap();
    assert_eq!(model.networks(), 4);
    let x = rows();
    let mixture = model.forward_t(&x, false).unwrap();
    let networks = model
        .forward_networks_rows(std::slice::from_ref(&x), BatchRows::whole(3))
        .unwrap();
    assert_eq!(networks.len(), 4);
    for head in 0..2 {
        let got = softmax_rows(&mixture[head]);
        let each: Vec<Vec<Vec<f32>>> = networks.iter().map(|n| softmax_rows(&n[head])).collect();
        for (row, got) in got.iter().enumerate() {
            for (bin, got) in got.iter().enumerate() {
                let mean = each.iter().map(|n| n[row][bin] as f64).sum::<f64>() / 4.0;
                assert!(
                    (*got as f64 - mean).abs() < 1e-6,
                    "head {head} row {row} bin {bin}"
                );
            }
        }
        // The networks start apart, so the mixture is none of them.
        let first = &each[0];
        assert!(each[1..].iter().all(|n| n != first), "head {head}");
    }
}

#[test]
fn every_network_has_its_own_variables_and_the_count_is_known_in_advance() {
    let space = space();
    let config: BackboneConfig = MlpConfig::new(3, [8, 4])
        .with_batch_norm()
        .with_separate_trunks()
        .with_ensemble(3)
        .into();
    let model = Model::build(&config, &space, 1, &Device::Cpu).unwrap();
    let names: Vec<String> = model.trainable_vars().into_iter().map(|(n, _)| n).collect();
    for network in 0..3 {
        let prefix = format!("ensemble.{network}.");
        let own = names.iter().filter(|n| n.starts_with(&prefix)).count();
        assert_eq!(own * 3, names.len(), "{names:?}");
    }
    assert!(names.contains(&"ensemble.2.backbone.sex.layers.1.bn.weight".to_string()));
    let stored: usize = model.vars().all_vars().iter().map(|v| v.elem_count()).sum();
    assert_eq!(config.stored_elements(&space), stored as u128);
    // BatchNorm of every network starts at PyTorch's 1 and 0, its linear layers apart.
    let data = model.vars().data().lock().unwrap();
    for network in 0..3 {
        let weight = &data[&format!("ensemble.{network}.backbone.age.layers.0.bn.weight")];
        let values = weight.as_tensor().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| *v == 1.0), "network {network}");
    }
    let first = data["ensemble.0.backbone.age.layers.0.weight"]
        .as_tensor()
        .to_vec2::<f32>();
    let second = data["ensemble.1.backbone.age.layers.0.weight"]
        .as_tensor()
        .to_vec2::<f32>();
    assert_ne!(first.unwrap(), second.unwrap());
}

/// One network keeps the names it had before ensembles existed.
#[test]
fn a_model_of_one_network_keeps_its_names() {
    let config = MlpConfig::new(3, [8]).with_separate_trunks();
    let model = Model::build(&config.into(), &space(), 1, &Device::Cpu).unwrap();
    assert_eq!(model.networks(), 1);
    for (name, _) in model.trainable_vars() {
        assert!(
            name.starts_with("backbone.") || name.starts_with("heads."),
            "{name}"
        );
    }
    // Its checkpoint's header does not mention ensembles, so earlier readers read it.
    let header = serde_json::to_string(model.config()).unwrap();
    assert!(!header.contains("ensemble"), "{header}");
    let ensemble: BackboneConfig = MlpConfig::new(3, [8]).with_ensemble(2).into();
    assert!(serde_json::to_string(&ensemble)
        .unwrap()
        .contains("\"ensemble\":2"));
}

#[test]
fn head_biases_are_set_in_every_network() {
    let config = MlpConfig::new(3, [8]).with_ensemble(3);
    let space = space();
    let model = Model::build(&config.into(), &space, 2, &Device::Cpu).unwrap();
    // Heads that ignore the features: each network predicts its bias's softmax alone.
    for (name, var) in model.trainable_vars() {
        if name.contains(".heads.") && name.ends_with(".weight") {
            var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
        }
    }
    let age: Vec<f32> = (0..21).map(|i| -((i as f32 - 5.0) / 3.0).powi(2)).collect();
    let sex = vec![0.7f32.ln(), 0.3f32.ln()];
    model.set_head_biases(&[age.clone(), sex]).unwrap();
    let mixture = model.forward_t(&rows(), false).unwrap();
    let prior = softmax_rows(&Tensor::from_vec(age, (1, 21), &Device::Cpu).unwrap());
    for row in softmax_rows(&mixture[0]) {
        for (got, want) in row.iter().zip(&prior[0]) {
            assert!((got - want).abs() < 1e-6);
        }
    }
    for row in softmax_rows(&mixture[1]) {
        assert!((row[0] - 0.7).abs() < 1e-6 && (row[1] - 0.3).abs() < 1e-6);
    }
}

#[test]
fn a_saved_ensemble_loads_whole() {
    let config = MlpConfig::new(3, [8])
        .with_batch_norm()
        .with_separate_trunks()
        .with_ensemble(2);
    let model = Model::build(&config.into(), &space(), 4, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ensemble.safetensors");
    model.save(&path).unwrap();
    let loaded = Model::load(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.networks(), 2);
    let x = rows();
    for (a, b) in model
        .forward_t(&x, false)
        .unwrap()
        .iter()
        .zip(loaded.forward_t(&x, false).unwrap())
    {
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }
}

#[test]
fn an_ensemble_of_no_networks_or_too_many_is_refused() {
    for networks in [0, ldl::models::ensemble::MAX_NETWORKS + 1] {
        let config = MlpConfig::new(3, [8]).with_ensemble(networks);
        let error = Model::build(&config.into(), &space(), 4, &Device::Cpu).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("an ensemble has 1 to 64 networks"),
            "{error}"
        );
    }
}

/// `Trainer::fit` trains every network of an ensemble: on 64 rows of `y = 10·x` each
/// network alone, and their mixture, end with an MAE well under the training-mean
/// predictor's (2.5 here).
#[test]
fn the_trainer_fits_every_network_of_an_ensemble() {
    use ldl::data::Dataset;
    use ldl::loss::FullKl;
    use ldl::train::{Control, Trainer};
    use ldl::Label;
    let space = LabelSpace::new(vec![Axis::linear("y", 0.0, 10.0, 0.5).unwrap()]).unwrap();
    let xs: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    let data = Dataset::from_features(
        &space,
        xs.iter().map(|&x| vec![x, 1.0 - x]).collect(),
        xs.iter()
            .map(|&x| vec![Label::value(10.0 * x as f64)])
            .collect(),
    )
    .unwrap();
    let backbone = MlpConfig::new(2, [16]).with_ensemble(3).into();
    let model = Model::build(&backbone, &space, 9, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(60)
        .batch_size(16)
        .learning_rate(0.01)
        .seed(4)
        .feature_noise(0.05);
    trainer.fit(&data, &data, |_| Control::Continue).unwrap();
    // Each network alone has learnt: the mixture is not carried by one of them.
    let x: Vec<f32> = xs.iter().flat_map(|&x| [x, 1.0 - x]).collect();
    let x = Tensor::from_vec(x, (64, 2), &Device::Cpu).unwrap();
    let networks = trainer
        .model()
        .forward_networks_rows(std::slice::from_ref(&x), BatchRows::whole(64))
        .unwrap();
    let centers = space.axes()[0].centers();
    let mut errors = Vec::new();
    for logits in networks.iter().map(|n| &n[0]) {
        let mae = softmax_rows(logits)
            .iter()
            .zip(&xs)
            .map(|(pmf, x)| {
                let mean: f64 = pmf.iter().zip(centers).map(|(p, c)| *p as f64 * c).sum();
                (mean - 10.0 * *x as f64).abs()
            })
            .sum::<f64>()
            / 64.0;
        errors.push(mae);
    }
    assert!(errors.iter().all(|mae| *mae < 1.0), "{errors:?}");
    let mae = trainer.evaluate(&data).unwrap().mae("y").unwrap();
    assert!(mae < 1.0, "{mae}");
}

/// `model.ensemble` reaches the MLP, and is refused by name for the image networks and
/// outside 1..=64.
#[test]
fn the_config_key_sets_the_mlps_networks_and_is_refused_where_it_cannot_apply() {
    use ldl::train::Config;
    use std::path::Path;
    const BDIMS: &str = include_str!("../configs/bdims.toml");
    const QUICKSTART: &str = include_str!("../configs/quickstart.toml");
    let parse = |text: &str, set: &str| Config::parse(Path::new("task.toml"), text, &[set.into()]);
    let config = parse(BDIMS, "model.ensemble=3").unwrap();
    match config.model.backbone_config(21).unwrap() {
        BackboneConfig::Mlp(mlp) => assert_eq!(mlp.ensemble, 3),
        other => panic!("{other:?}"),
    }
    let refuse = |text: &str, set: &str| match parse(text, set) {
        Ok(config) => config.model.backbone_config(21).unwrap_err().to_string(),
        Err(error) => error.to_string(),
    };
    for bad in ["0", "65"] {
        let error = refuse(BDIMS, &format!("model.ensemble={bad}"));
        assert!(
            error.contains("`model.ensemble`") && error.contains("1..=64"),
            "{error}"
        );
    }
    let error = refuse(QUICKSTART, "model.ensemble=2");
    assert!(
        error.contains("`model.ensemble`") && error.contains("for the MLP"),
        "{error}"
    );
}

/// Fine-tuning (`model.init_from`) from an ensemble: into an ensemble of the same size
/// every tensor loads and heads of another number of bins start afresh; between an
/// ensemble and one network, or ensembles of other sizes, it is refused by name.
#[test]
fn init_from_an_ensemble_loads_into_one_of_the_same_size_only() {
    let config = |networks| -> BackboneConfig {
        MlpConfig::new(3, [8])
            .with_separate_trunks()
            .with_ensemble(networks)
            .into()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ensemble.safetensors");
    let trained = Model::build(&config(3), &space(), 1, &Device::Cpu).unwrap();
    trained.save(&path).unwrap();
    let load = |model: &Model| ldl::models::load_pretrained(model.vars(), &path, &Device::Cpu);

    let same = Model::build(&config(3), &space(), 2, &Device::Cpu).unwrap();
    let report = load(&same).unwrap();
    assert!(report.new.is_empty(), "{:?}", report.new);
    assert_eq!(report.loaded.len(), trained.vars().all_vars().len());

    // An age axis of another range: every network's age head is new, the rest loads.
    let wider = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 30.0, 1.0).unwrap(),
        Axis::categorical("sex", ["female", "male"]).unwrap(),
    ])
    .unwrap();
    let other_bins = Model::build(&config(3), &wider, 2, &Device::Cpu).unwrap();
    let report = load(&other_bins).unwrap();
    let mut new = report.new.clone();
    new.sort();
    let expected: Vec<String> = (0..3)
        .flat_map(|k| ["bias", "weight"].map(|p| format!("ensemble.{k}.heads.age.{p}")))
        .collect();
    assert_eq!(new, expected);

    for networks in [1, 2, 4] {
        let other = Model::build(&config(networks), &space(), 2, &Device::Cpu).unwrap();
        let error = load(&other).unwrap_err().to_string();
        assert!(
            error.contains("it holds 3 network(s)") && error.contains("model.ensemble = 3"),
            "{networks}: {error}"
        );
    }
}
