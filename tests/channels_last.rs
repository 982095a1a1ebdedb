//! Training on the CPU with channels-last activations (`Vgg::forward_t`): the logits, every
//! variable's gradient and the running statistics against an independent f64 reference
//! in planes (candle's direct convolution, BatchNorm written out, its autograd).

mod common;

use candle_core::{DType, Device, Tensor};
use common::vgg_reference::{self, largest, randomise_batch_norm, relative_gap};
use common::*;
use ldl::models::{BackboneConfig, Model, VggConfig};
use ldl::{Axis, LabelSpace};
use rand::Rng;

fn space() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::linear("yaw", -90.0, 90.0, 6.0).unwrap(),
    ])
    .unwrap()
}

/// `Σ_heads Σ logits · weights`: a loss whose gradient reaches every logit with a
/// different weight.
fn weighted_sum(logits: &[Tensor], weights: &[Tensor]) -> Tensor {
    let parts: Vec<Tensor> = logits
        .iter()
        .zip(weights)
        .map(|(z, w)| {
            (z.to_dtype(DType::F64).unwrap() * w)
                .unwrap()
                .sum_all()
                .unwrap()
        })
        .collect();
    Tensor::stack(&parts, 0).unwrap().sum_all().unwrap()
}

/// One training-mode forward and backward pass of `config` at `size` against the
/// reference: logits, the gradient of every variable, and the running statistics.
fn check_training_pass(name: &str, config: VggConfig, size: (usize, usize), seed: u64) {
    let model = Model::build(&BackboneConfig::Vgg(config), &space(), seed, &Device::Cpu).unwrap();
    randomise_batch_norm(&model, seed + 100);
    let reference_vars = vgg_reference::f64_vars(&model);
    let mut r = rng(seed);
    let (n, (h, w)) = (3, size);
    let pixels: Vec<f32> = (0..n * 3 * h * w).map(|_| r.gen_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(pixels, (n, 3, h, w), &Device::Cpu).unwrap();
    let weights: Vec<Tensor> = space()
        .heads()
        .iter()
        .map(|head| {
            let values: Vec<f64> = (0..n * head.bins())
                .map(|_| r.gen_range(-1.0..1.0))
                .collect();
            Tensor::from_vec(values, (n, head.bins()), &Device::Cpu).unwrap()
        })
        .collect();

    let mut statistics = Vec::new();
    let expected = vgg_reference::logits(&model, &reference_vars, &x, true, &mut statistics);
    let expected_grads = weighted_sum(&expected, &weights).backward().unwrap();
    let running_before: Vec<(String, Tensor)> = running_statistics(&model);

    let logits = model.forward_t(&x, true).unwrap();
    for (z, e) in logits.iter().zip(&expected) {
        let gap = relative_gap(z, e);
        assert!(gap < 1e-4, "{name}: logits differ by {gap:e}");
    }
    let grads = weighted_sum(&logits, &weights).backward().unwrap();
    let reference = reference_vars.data().lock().unwrap();
    let scale = reference
        .values()
        .filter_map(|var| expected_grads.get(var.as_tensor()))
        .map(largest)
        .fold(0.0, f64::max);
    for (var_name, var) in model.trainable_vars() {
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no {var_name}"));
        let want = expected_grads
            .get(reference[&var_name].as_tensor())
            .unwrap();
        if var_name.ends_with("conv.bias") {
            // Before BatchNorm in training, a convolution's bias has no effect (the batch
            // mean removes it): its gradient is zero, up to rounding in f32.
            assert!(
                largest(want) < 1e-12 * scale,
                "{name}: the reference's {var_name}"
            );
            let residue = largest(got) / scale;
            assert!(
                residue < 1e-5,
                "{name}: gradient of {var_name} is {residue:e}, not 0"
            );
            continue;
        }
        let difference = (got.to_dtype(DType::F64).unwrap() - want).unwrap();
        let gap = largest(&difference) / largest(want);
        assert!(
            gap < 1e-3,
            "{name}: gradient of {var_name} differs by {gap:e}"
        );
    }
    // Running statistics: 0.9·old + 0.1·batch (unbiased variance), block by block.
    for (block, (mean, variance)) in statistics.iter().enumerate() {
        for (part, batch) in [("running_mean", mean), ("running_var", variance)] {
            let (key, old) = &running_before
                .iter()
                .filter(|(k, _)| k.ends_with(part))
                .nth(block)
                .unwrap();
            let now = model.vars().data().lock().unwrap()[key].as_tensor().clone();
            let want = ((old.to_dtype(DType::F64).unwrap() * 0.9).unwrap()
                + (batch * 0.1).unwrap())
            .unwrap();
            let gap = relative_gap(&now, &want);
            assert!(gap < 1e-5, "{name}: {key} differs by {gap:e}");
        }
    }
}

/// The running statistics by name, in block order (`features.{i}` sorted by `i`).
fn running_statistics(model: &Model) -> Vec<(String, Tensor)> {
    let data = model.vars().data().lock().unwrap();
    let mut named: Vec<(usize, String, Tensor)> = data
        .iter()
        .filter(|(k, _)| k.contains("running_"))
        .map(|(k, v)| {
            let index: usize = k.split('.').nth(2).unwrap().parse().unwrap();
            (index, k.clone(), v.as_tensor().copy().unwrap())
        })
        .collect();
    named.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    named.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// TinyAgeNet trains channels last (its 16 → 16 layer on Winograd from channels last);
/// at a quarter width (4 → 4 channels) it trains in planes; both against the same reference,
/// on even and odd image sizes, with and without convolution biases.
#[test]
fn training_matches_an_independent_f64_reference() {
    check_training_pass("TinyAgeNet 32×32", VggConfig::tiny_age_net(), (32, 32), 1);
    check_training_pass("TinyAgeNet 37×45", VggConfig::tiny_age_net(), (37, 45), 2);
    let quarter = VggConfig::tiny_age_net().with_width(0.25).unwrap();
    check_training_pass("TinyAgeNet ×¼ 35×33", quarter, (35, 33), 3);
    let biased = VggConfig {
        conv_bias: true,
        ..VggConfig::tiny_age_net()
    };
    check_training_pass("with biases 40×36", biased, (40, 36), 4);
}
