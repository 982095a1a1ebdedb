//! The ONNX export run by an independent runtime, tract: its outputs must equal ldl's
//! distributions (softmax per head, marginals of joint groups) within 1e-5, and its
//! metadata must decode, with tract's own protobuf schema, into the model's label space.

use candle_core::{DType, Device, Tensor};
use ldl_core::{Axis, LabelSpace};
use ldl_models::onnx::{INPUT_KEY, OUTPUTS_KEY};
use ldl_models::{
    network_local_name, BackboneConfig, MlpConfig, Model, OnnxInput, Standardization, VggConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOLERANCE: f64 = 1e-5;

/// Running an exported file with tract (its prelude's names kept apart from candle's).
mod tract {
    use tract_onnx::prelude::*;

    /// The file's outputs for `input` of `shape`: each output's shape and values.
    pub fn run(onnx: &[u8], shape: &[usize], input: &[f32]) -> Vec<(Vec<usize>, Vec<f32>)> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .expect("tract reads the file")
            .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))
            .unwrap()
            .into_optimized()
            .expect("tract optimises the graph")
            .into_runnable()
            .unwrap();
        let input = Tensor::from_shape(shape, input).unwrap().into_tvalue();
        model
            .run(tvec!(input))
            .expect("tract runs the graph")
            .iter()
            .map(|t| {
                let view = t.to_plain_array_view::<f32>().unwrap();
                (view.shape().to_vec(), view.iter().copied().collect())
            })
            .collect()
    }

    /// The file's protobuf message, decoded by tract's own schema.
    pub fn proto(onnx: &[u8]) -> tract_onnx::pb::ModelProto {
        tract_onnx::onnx()
            .proto_model_for_read(&mut &onnx[..])
            .unwrap()
    }
}

/// Gives BatchNorm's scale, shift and running statistics (and convolution biases) values
/// away from their initial 1, 0, 0, 1 (0), so that an export that mixed them up would
/// show, and scales the
/// heads' weights up so that the distributions are far from uniform (a small error in
/// the features then shows in them).
fn randomise_batch_norm(model: &Model, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = model.vars().data().lock().unwrap();
    for (name, var) in data.iter() {
        if network_local_name(name).starts_with("heads.") && name.ends_with(".weight") {
            var.set(&(var.as_tensor() * 30.0).unwrap()).unwrap();
        }
    }
    let mut names: Vec<&String> = data
        .keys()
        .filter(|n| n.contains(".bn.") || n.ends_with("conv.bias"))
        .collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let (low, high) = if name.ends_with("running_var") || name.ends_with("weight") {
            (0.5, 2.0)
        } else {
            (-0.5, 0.5)
        };
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.gen_range(low..high))
            .collect();
        var.set(&Tensor::new(values, &Device::Cpu).unwrap())
            .unwrap();
    }
}

fn uniform(count: usize, low: f32, high: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(|_| rng.gen_range(low..high)).collect()
}

/// What ldl predicts: each axis's distribution, then each joint group's grid (the softmax
/// of its logits), flattened per sample.
fn ldl_distributions(model: &Model, input: &Tensor) -> Vec<Vec<f64>> {
    let logits = model.forward_t(input, false).unwrap();
    let space = model.label_space();
    let mut out: Vec<Vec<f64>> = space
        .axis_distributions(&logits)
        .unwrap()
        .iter()
        .map(|pmf| pmf.flatten_all().unwrap().to_vec1::<f64>().unwrap())
        .collect();
    for (head, z) in space.heads().iter().zip(&logits) {
        if head.is_joint() {
            let z = z.to_dtype(DType::F64).unwrap();
            let grid = candle_nn::ops::softmax_last_dim(&z).unwrap();
            out.push(grid.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        }
    }
    out
}

/// Checks every output's shape and values against ldl's, returns the largest difference.
fn assert_outputs_match(
    tract: &[(Vec<usize>, Vec<f32>)],
    ldl: &[Vec<f64>],
    shapes: &[Vec<usize>],
) -> f64 {
    assert_eq!(
        tract.len(),
        ldl.len(),
        "one output per axis and joint group"
    );
    let mut largest = 0.0f64;
    for (index, ((shape, values), expected)) in tract.iter().zip(ldl).enumerate() {
        assert_eq!(shape, &shapes[index], "output {index}'s shape");
        assert_eq!(values.len(), expected.len());
        for (a, b) in values.iter().zip(expected) {
            largest = largest.max((*a as f64 - b).abs());
        }
    }
    assert!(largest <= TOLERANCE, "largest difference {largest:e}");
    largest
}

fn largest_probability(distributions: &[Vec<f64>]) -> f64 {
    distributions.iter().flatten().fold(0.0, |a, b| a.max(*b))
}

fn metadata(onnx: &[u8]) -> std::collections::HashMap<String, String> {
    let proto = tract::proto(onnx);
    assert_eq!(proto.ir_version, 8);
    assert_eq!(proto.opset_import[0].version, 17);
    proto
        .metadata_props
        .into_iter()
        .map(|entry| (entry.key, entry.value))
        .collect()
}

fn age_and_pose() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::linear("yaw", -90.0, 90.0, 6.0).unwrap(),
        Axis::linear("pitch", -60.0, 60.0, 6.0).unwrap(),
    ])
    .unwrap()
    .with_joint(&["yaw", "pitch"])
    .unwrap()
}

fn check_image_model(config: VggConfig, side: usize, seed: u64) {
    let space = age_and_pose();
    let model = Model::build(&BackboneConfig::Vgg(config), &space, seed, &Device::Cpu).unwrap();
    randomise_batch_norm(&model, seed + 1);
    let input = OnnxInput::Image {
        size: side,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    let onnx = model.to_onnx(&input).unwrap();
    let shape = [3, 3, side, side];
    let pixels = uniform(shape.iter().product(), -1.0, 1.0, seed + 2);
    let images = Tensor::from_vec(pixels.clone(), &shape, &Device::Cpu).unwrap();

    let tract = tract::run(&onnx, &shape, &pixels);
    let ldl = ldl_distributions(&model, &images);
    let shapes = [vec![3, 101], vec![3, 31], vec![3, 21], vec![3, 31, 21]];
    let largest = assert_outputs_match(&tract, &ldl, &shapes);
    eprintln!(
        "largest difference {largest:e}, largest probability {}",
        largest_probability(&ldl)
    );

    let metadata = metadata(&onnx);
    let stored: LabelSpace = serde_json::from_str(&metadata["ldl.label_space"]).unwrap();
    assert_eq!(&stored, model.label_space());
    let stored: OnnxInput = serde_json::from_str(&metadata[INPUT_KEY]).unwrap();
    assert_eq!(stored, input);
    let outputs: serde_json::Value = serde_json::from_str(&metadata[OUTPUTS_KEY]).unwrap();
    assert_eq!(outputs[3]["name"], "joint_yaw_pitch");
    assert_eq!(outputs[3]["axes"], serde_json::json!(["yaw", "pitch"]));
}

#[test]
fn tiny_age_net_outputs_match_ldl() {
    check_image_model(VggConfig::tiny_age_net(), 64, 11);
}

#[test]
fn thin_age_net_at_a_quarter_width_outputs_match_ldl() {
    // An odd side: every max-pool drops a row and a column, as PyTorch's and ldl's do.
    check_image_model(VggConfig::thin_age_net().with_width(0.25).unwrap(), 45, 21);
}

#[test]
fn convolutions_with_a_bias_export_it() {
    // VGG-16's own layers have a bias (checkpoints converted from torchvision).
    let config = VggConfig {
        conv_bias: true,
        ..VggConfig::tiny_age_net().with_width(0.25).unwrap()
    };
    check_image_model(config, 32, 31);
}

#[test]
fn mlp_outputs_match_ldl_with_standardisation_in_the_graph() {
    check_mlp_export(false);
}

/// The linear path reads the standardised features, as the MLP does.
#[test]
fn an_mlps_linear_path_is_exported() {
    check_mlp_export(true);
}

/// Gives every linear path's weights values in ±1 (a fresh path is zero, which would
/// check nothing).
fn randomise_linear_paths(model: &Model, seed: u64) {
    let data = model.vars().data().lock().unwrap();
    let mut paths: Vec<_> = data
        .iter()
        .filter(|(name, _)| name.contains(".linear_path."))
        .collect();
    assert!(!paths.is_empty());
    paths.sort_by(|a, b| a.0.cmp(b.0));
    for (index, (_, var)) in paths.into_iter().enumerate() {
        let values = uniform(var.elem_count(), -1.0, 1.0, seed + index as u64);
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

fn check_mlp_export(linear_path: bool) {
    let space = LabelSpace::new(vec![
        Axis::linear("weight", 30.0, 120.0, 1.0).unwrap(),
        Axis::categorical("sex", ["female", "male"]).unwrap(),
        Axis::linear("chest depth", 10.0, 40.0, 1.0).unwrap(),
        Axis::circular("wind", 0.0, 360.0, 18.0).unwrap(),
    ])
    .unwrap()
    .with_joint(&["chest depth", "wind"])
    .unwrap();
    let config = MlpConfig::new(4, [16, 8])
        .with_batch_norm()
        .with_dropout(0.2)
        .with_separate_trunks();
    let config = if linear_path {
        config.with_linear_path()
    } else {
        config
    };
    let model = Model::build(&BackboneConfig::Mlp(config), &space, 5, &Device::Cpu).unwrap();
    randomise_batch_norm(&model, 6);
    if linear_path {
        randomise_linear_paths(&model, 8);
    }
    let standardization = Standardization {
        mean: vec![170.0, 70.0, 1.0, -3.0],
        // The third feature was constant at training: only centred.
        std: vec![9.0, 12.5, 0.0, 0.25],
    };
    let input = OnnxInput::Features {
        names: ["height", "girth", "constant", "shift"]
            .map(String::from)
            .to_vec(),
        standardization: Some(standardization.clone()),
    };
    let onnx = model.to_onnx(&input).unwrap();

    let rows = 5;
    let mut raw = uniform(rows * 4, -1.0, 1.0, 7);
    for (i, value) in raw.iter_mut().enumerate() {
        let j = i % 4;
        *value = (standardization.mean[j] + 2.0 * standardization.std[j] * *value as f64) as f32;
    }
    let standardised: Vec<f32> = raw
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let j = i % 4;
            let std = if standardization.std[j] > 0.0 {
                standardization.std[j]
            } else {
                1.0
            };
            ((*x as f64 - standardization.mean[j]) / std) as f32
        })
        .collect();
    let features = Tensor::from_vec(standardised, (rows, 4), &Device::Cpu).unwrap();

    let tract = tract::run(&onnx, &[rows, 4], &raw);
    let ldl = ldl_distributions(&model, &features);
    let shapes = [
        vec![rows, 91],
        vec![rows, 2],
        vec![rows, 31],
        vec![rows, 20],
        vec![rows, 31, 20],
    ];
    let largest = assert_outputs_match(&tract, &ldl, &shapes);
    eprintln!(
        "largest difference {largest:e}, largest probability {}",
        largest_probability(&ldl)
    );
    let names: Vec<String> = {
        tract::proto(&onnx)
            .graph
            .unwrap()
            .output
            .into_iter()
            .map(|o| o.name)
            .collect()
    };
    assert_eq!(
        names,
        [
            "weight",
            "sex",
            "chest_depth",
            "wind",
            "joint_chest_depth_wind"
        ]
    );
}

/// An ensemble's outputs are the mean of its networks' distributions, as ldl's mixture
/// (each network with a linear path of its own).
#[test]
fn an_ensembles_outputs_are_the_mean_of_its_networks_distributions() {
    let space = LabelSpace::new(vec![
        Axis::linear("weight", 30.0, 120.0, 1.0).unwrap(),
        Axis::linear("chest depth", 10.0, 40.0, 1.0).unwrap(),
        Axis::circular("wind", 0.0, 360.0, 18.0).unwrap(),
    ])
    .unwrap()
    .with_joint(&["chest depth", "wind"])
    .unwrap();
    let config = MlpConfig::new(3, [16])
        .with_batch_norm()
        .with_separate_trunks()
        .with_ensemble(3)
        .with_linear_path();
    let model = Model::build(&BackboneConfig::Mlp(config), &space, 9, &Device::Cpu).unwrap();
    randomise_batch_norm(&model, 10);
    randomise_linear_paths(&model, 12);
    let input = OnnxInput::Features {
        names: ["height", "girth", "shift"].map(String::from).to_vec(),
        standardization: None,
    };
    let onnx = model.to_onnx(&input).unwrap();
    let rows = 4;
    let raw = uniform(rows * 3, -2.0, 2.0, 11);
    let features = Tensor::from_vec(raw.clone(), (rows, 3), &Device::Cpu).unwrap();
    let tract = tract::run(&onnx, &[rows, 3], &raw);
    let ldl = ldl_distributions(&model, &features);
    let shapes = [
        vec![rows, 91],
        vec![rows, 31],
        vec![rows, 20],
        vec![rows, 31, 20],
    ];
    let largest = assert_outputs_match(&tract, &ldl, &shapes);
    eprintln!("largest difference {largest:e}");
}

#[test]
fn an_input_that_does_not_fit_the_model_is_refused() {
    let space = age_and_pose();
    let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 1, &Device::Cpu).unwrap();
    let too_small = OnnxInput::Image {
        size: 16,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    let message = model.to_onnx(&too_small).unwrap_err().to_string();
    assert!(
        message.contains("image size must be in 32..=4096, got 16"),
        "{message}"
    );
    let zero_std = OnnxInput::Image {
        size: 64,
        mean: [0.5; 3],
        std: [0.5, 0.0, 0.5],
    };
    let message = model.to_onnx(&zero_std).unwrap_err().to_string();
    assert!(message.contains("positive stds"), "{message}");

    let mlp = Model::build(&BackboneConfig::mlp(3, [4]), &space, 1, &Device::Cpu).unwrap();
    let two_names = OnnxInput::Features {
        names: vec!["a".into(), "b".into()],
        standardization: None,
    };
    let message = mlp.to_onnx(&two_names).unwrap_err().to_string();
    assert!(
        message.contains("the MLP takes 3 features, but 2 feature names were given"),
        "{message}"
    );
    let reserved =
        std::collections::BTreeMap::from([("ldl.label_space".to_string(), "x".to_string())]);
    let three = OnnxInput::Features {
        names: vec!["a".into(), "b".into(), "c".into()],
        standardization: None,
    };
    let message = mlp.to_onnx_with(&three, &reserved).unwrap_err().to_string();
    assert!(message.contains("reserved"), "{message}");
}
