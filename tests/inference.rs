//! Inference (`Model::inference`): the fused, graph-free evaluation pass against an
//! independent f64 reference built from candle's own ops and the model's variables.

mod common;

use candle_core::{DType, Device, Tensor};
use common::vgg_reference::{self, randomise_batch_norm};
use common::*;
use ldl::models::{BackboneConfig, Model, VggConfig};
use ldl::{Axis, LabelSpace};
use rand::Rng;

fn space() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::circular("yaw", -180.0, 180.0, 15.0).unwrap(),
    ])
    .unwrap()
}

/// The reference's evaluation-mode logits, from the model's variables.
fn reference_logits(model: &Model, x: &Tensor) -> Vec<Tensor> {
    vgg_reference::logits(
        model,
        &vgg_reference::f64_vars(model),
        x,
        false,
        &mut Vec::new(),
    )
}

/// The largest relative difference (see [`vgg_reference::relative_gap`]) over the heads.
fn relative_gap(a: &[Tensor], b: &[Tensor]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| vgg_reference::relative_gap(a, b))
        .fold(0.0, f64::max)
}

fn images(seed: u64, n: usize, (h, w): (usize, usize), dtype: DType) -> Tensor {
    let mut r = rng(seed);
    let values: Vec<f32> = (0..n * 3 * h * w).map(|_| r.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(values, (n, 3, h, w), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// TinyAgeNet (channels last from the first block on, its 16 → 16 layer on Winograd), at
/// a quarter width (4 channels: planes, im2col over sample groups), and with convolution
/// biases; even and odd image sizes; f32 and f64 input.
#[test]
fn inference_matches_an_independent_f64_reference() {
    let cases = [
        ("TinyAgeNet", VggConfig::tiny_age_net(), (32, 32)),
        ("TinyAgeNet", VggConfig::tiny_age_net(), (37, 45)),
        (
            "TinyAgeNet ×¼",
            VggConfig::tiny_age_net().with_width(0.25).unwrap(),
            (35, 33),
        ),
        (
            "with biases",
            VggConfig {
                conv_bias: true,
                ..VggConfig::tiny_age_net()
            },
            (40, 36),
        ),
    ];
    for (index, (name, config, size)) in cases.into_iter().enumerate() {
        let model = Model::build(
            &BackboneConfig::Vgg(config),
            &space(),
            index as u64,
            &Device::Cpu,
        )
        .unwrap();
        randomise_batch_norm(&model, 10 + index as u64);
        let inference = model.inference().unwrap();
        for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::F64, 1e-6)] {
            let x = images(index as u64, 3, size, dtype);
            let expected = reference_logits(&model, &x);
            let logits = inference.forward(&x).unwrap();
            assert!(
                logits.iter().all(|z| !z.track_op()),
                "{name}: no autograd graph"
            );
            let gap = relative_gap(&logits, &expected);
            assert!(gap < tolerance, "{name} {size:?} {dtype:?}: {gap:e}");
        }
        // The differentiable evaluation pass agrees too, and so do the predictions.
        let x = images(index as u64, 3, size, DType::F32);
        let graph = model.forward_t(&x, false).unwrap();
        let gap = relative_gap(&inference.forward(&x).unwrap(), &graph);
        assert!(gap < 1e-5, "{name}: against forward_t, {gap:e}");
        assert_eq!(model.predict(&x).unwrap(), inference.predict(&x).unwrap());
    }
}

/// An `InferenceModel` is a snapshot: it folds the weights the model had when built.
#[test]
fn inference_folds_the_weights_it_was_built_with() {
    let model = Model::build(&BackboneConfig::tiny_age_net(), &space(), 3, &Device::Cpu).unwrap();
    let x = images(4, 2, (32, 32), DType::F32);
    let before = model.inference().unwrap().forward(&x).unwrap();
    randomise_batch_norm(&model, 5);
    let after = model.inference().unwrap().forward(&x).unwrap();
    assert!(
        relative_gap(&before, &after) > 1e-2,
        "new statistics change the logits"
    );
    assert!(relative_gap(&after, &reference_logits(&model, &x)) < 1e-5);
}
