//! Fine-tuning from VGG-16-BN ImageNet weights with torchvision's key names (timm's
//! `vgg16_bn.tv_in1k`): a file written here with timm's names and shapes loads into a
//! width-2 backbone with conv biases, tensor for tensor; a missing or misshaped key is an
//! error naming it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ldl::models::{load_pretrained, vgg16_bn_key_map, BackboneConfig, Model, VggConfig};
use ldl::{Axis, LabelSpace};

fn space() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap()
}

fn vgg16_bn(conv_bias: bool, width: f64) -> BackboneConfig {
    let mut config = VggConfig::thin_age_net().with_width(width).unwrap();
    config.conv_bias = conv_bias;
    BackboneConfig::Vgg(config)
}

/// The tensors of timm's `vgg16_bn.tv_in1k` as its safetensors file names and shapes them
/// (VGG-16's conv stack with BatchNorm, then timm's classifier, here smaller), with
/// distinct values.
fn timm_tensors() -> HashMap<String, Tensor> {
    let device = Device::Cpu;
    let widths = [
        64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
    ];
    let mut tensors = HashMap::new();
    let (mut index, mut inputs, mut seed) = (0, 3, 0.0f32);
    let mut add = |name: String, shape: &[usize]| {
        seed += 1.0;
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| seed + i as f32 * 1e-3).collect();
        tensors.insert(name, Tensor::from_vec(values, shape, &device).unwrap());
    };
    for width in widths {
        if width == 0 {
            index += 1;
            continue;
        }
        add(format!("features.{index}.weight"), &[width, inputs, 3, 3]);
        add(format!("features.{index}.bias"), &[width]);
        for part in ["weight", "bias", "running_mean", "running_var"] {
            add(format!("features.{}.{part}", index + 1), &[width]);
        }
        inputs = width;
        index += 3;
    }
    // The classifier has no counterpart (only its names matter here; timm's are
    // [4096, 512, 7, 7] and [1000, 4096]).
    add("pre_logits.fc1.weight".into(), &[16, 512, 1, 1]);
    add("head.fc.weight".into(), &[10, 16]);
    tensors.insert(
        "features.1.num_batches_tracked".into(),
        Tensor::new(&[7i64], &device).unwrap().squeeze(0).unwrap(),
    );
    tensors
}

fn write(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

#[test]
fn timm_vgg16_bn_weights_load_into_a_width_2_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let tensors = timm_tensors();
    write(&tensors, &path);

    let model = Model::build(&vgg16_bn(true, 2.0), &space(), 3, &Device::Cpu).unwrap();
    let vars = model.vars().clone();
    let report = load_pretrained(&vars, &path, &Device::Cpu).unwrap();
    assert_eq!(report.loaded.len(), 78, "{report:?}");
    assert_eq!(report.new, ["heads.age.bias", "heads.age.weight"]);
    assert_eq!(
        report.skipped,
        [
            "features.1.num_batches_tracked",
            "head.fc.weight",
            "pre_logits.fc1.weight"
        ]
    );
    // Every mapped tensor arrived unchanged under its new name.
    let data = vars.data().lock().unwrap();
    for (source, target) in vgg16_bn_key_map() {
        let expected = tensors[&source]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = data[&target]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, expected, "{source} → {target}");
    }
    drop(data);
    // The model runs with them at a small input.
    let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let logits = model.forward_t(&x, false).unwrap();
    assert_eq!(logits[0].dims(), [1, 101]);
}

#[test]
fn a_missing_or_misshaped_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");

    let mut tensors = timm_tensors();
    tensors.remove("features.41.running_var");
    write(&tensors, &path);
    let vars = Model::build(&vgg16_bn(true, 2.0), &space(), 3, &Device::Cpu)
        .unwrap()
        .vars()
        .clone();
    let err = load_pretrained(&vars, &path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lack `features.41.running_var`"), "{err}");

    write(&timm_tensors(), &path);
    // Without conv biases the model has nowhere to put them.
    let vars = Model::build(&vgg16_bn(false, 2.0), &space(), 3, &Device::Cpu)
        .unwrap()
        .vars()
        .clone();
    let err = load_pretrained(&vars, &path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`backbone.features.0.conv.bias`") && err.contains("conv_bias = true"),
        "{err}"
    );
    // At width 1 (ThinAgeNet) the shapes differ: both are named.
    let vars = Model::build(&vgg16_bn(true, 1.0), &space(), 3, &Device::Cpu)
        .unwrap()
        .vars()
        .clone();
    let err = load_pretrained(&vars, &path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`features.0.weight` has shape [64, 3, 3, 3]")
            && err.contains("[32, 3, 3, 3]"),
        "{err}"
    );
    // Some other safetensors file is neither kind.
    let mut other = HashMap::new();
    other.insert(
        "encoder.weight".to_string(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
    );
    write(&other, &path);
    let err = load_pretrained(&vars, &path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither an ldl checkpoint nor VGG-16-BN"),
        "{err}"
    );
}
