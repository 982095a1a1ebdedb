//! Inference (`Model::inference`): the fused, graph-free evaluation pass against an
//! independent f64 reference built from candle's own ops and the model's variables.

mod common;

use candle_core::{DType, Device, Tensor, D};
use common::*;
use ldl::models::{BackboneConfig, Model, VggConfig};
use ldl::{Axis, LabelSpace};
use rand::Rng;

/// VGG-16's layout in units of the base width; 0 is a 2×2 max-pool (DLDL-v2's networks).
const LAYOUT: [usize; 18] = [1, 1, 0, 2, 2, 0, 4, 4, 4, 0, 8, 8, 8, 0, 8, 8, 8, 0];

fn space() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::circular("yaw", -180.0, 180.0, 15.0).unwrap(),
    ])
    .unwrap()
}

/// BatchNorm's scale, shift and running statistics (and convolution biases) away from
/// their initial 1, 0, 0, 1 (0), so that folding them wrongly would show.
fn randomise_batch_norm(model: &Model, seed: u64) {
    let mut r = rng(seed);
    let data = model.vars().data().lock().unwrap();
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
            .map(|_| r.gen_range(low..high))
            .collect();
        var.set(&Tensor::new(values, &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// The logits of `model` (a VGG backbone) on `x` in evaluation mode, in f64 from its
/// variables: candle's direct convolution, BatchNorm as written, ReLU, candle's max-pool
/// and the mean over the pixels.
fn reference_logits(model: &Model, x: &Tensor) -> Vec<Tensor> {
    let vars = model.vars().data().lock().unwrap();
    let get = |name: &str| {
        vars.get(name)
            .map(|v| v.as_tensor().to_dtype(DType::F64).unwrap())
    };
    let channel = |t: Tensor| t.reshape((1, (), 1, 1)).unwrap();
    let mut x = x.to_dtype(DType::F64).unwrap();
    for (i, units) in LAYOUT.iter().enumerate() {
        if *units == 0 {
            x = x.max_pool2d(2).unwrap();
            continue;
        }
        let at = |part: &str| format!("backbone.features.{i}.{part}");
        x = x
            .conv2d(&get(&at("conv.weight")).unwrap(), 1, 1, 1, 1)
            .unwrap();
        if let Some(bias) = get(&at("conv.bias")) {
            x = x.broadcast_add(&channel(bias)).unwrap();
        }
        let mean = channel(get(&at("bn.running_mean")).unwrap());
        let std = channel(
            (get(&at("bn.running_var")).unwrap() + 1e-5)
                .unwrap()
                .sqrt()
                .unwrap(),
        );
        let (gamma, beta) = (get(&at("bn.weight")).unwrap(), get(&at("bn.bias")).unwrap());
        x = x
            .broadcast_sub(&mean)
            .unwrap()
            .broadcast_div(&std)
            .unwrap()
            .broadcast_mul(&channel(gamma))
            .unwrap()
            .broadcast_add(&channel(beta))
            .unwrap()
            .relu()
            .unwrap();
    }
    let features = x.mean(D::Minus1).unwrap().mean(D::Minus1).unwrap();
    model
        .label_space()
        .heads()
        .iter()
        .map(|head| {
            let weight = get(&format!("heads.{}.weight", head.name())).unwrap();
            let bias = get(&format!("heads.{}.bias", head.name())).unwrap();
            features
                .matmul(&weight.t().unwrap())
                .unwrap()
                .broadcast_add(&bias)
                .unwrap()
        })
        .collect()
}

/// The largest difference between two lists of logits, relative to the largest logit.
fn relative_gap(a: &[Tensor], b: &[Tensor]) -> f64 {
    let mut gap = 0.0f64;
    let mut scale = 1e-3f64;
    for (a, b) in a.iter().zip(b) {
        let (a, b) = (
            a.to_dtype(DType::F64).unwrap(),
            b.to_dtype(DType::F64).unwrap(),
        );
        assert_eq!(a.dims(), b.dims());
        let largest = |t: &Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        gap = gap.max(largest(&(&a - &b).unwrap()));
        scale = scale.max(largest(&b));
    }
    gap / scale
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
                ..VggConfig::tiny_age_net().with_width(0.5).unwrap()
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
