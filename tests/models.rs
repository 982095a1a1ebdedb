//! The models: parameter counts, shapes, pooling gradients, seeded initialisation,
//! BatchNorm state, checkpoints, and a one-batch overfit.

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use common::*;
use ldl::loss::{Kl, Loss};
use ldl::models::{
    batch_norm_relu, conv2d, max_pool_2x2, parameter_count, read_checkpoint, BackboneConfig,
    BatchRows, MlpConfig, Model, VggConfig,
};
use ldl::{Axis, Label, LabelSpace};
use rand::Rng;

fn age_space() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)
        .unwrap()
        .with_unit("years")])
    .unwrap()
}

fn random_images(seed: u64, n: usize, size: usize) -> Tensor {
    let mut r = rng(seed);
    let values: Vec<f32> = (0..n * 3 * size * size)
        .map(|_| r.gen_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(values, (n, 3, size, size), &Device::Cpu).unwrap()
}

fn error_of<T>(result: ldl::models::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parameter_counts_match_dldl_v2() {
    let space = age_space();
    let thin = Model::build(&BackboneConfig::thin_age_net(), &space, 0, &Device::Cpu)
        .unwrap()
        .vars()
        .clone();
    assert_eq!(parameter_count(&thin), 3_708_229);
    let tiny = Model::build(&BackboneConfig::tiny_age_net(), &space, 0, &Device::Cpu)
        .unwrap()
        .vars()
        .clone();
    assert_eq!(parameter_count(&tiny), 934_869);
    // Running statistics are stored but are not parameters: 2 × 2112 (Thin), 2 × 1056 (Tiny).
    let stored = |vars: &VarMap| -> usize { vars.all_vars().iter().map(|v| v.elem_count()).sum() };
    assert_eq!(stored(&thin) - parameter_count(&thin), 2 * 2112);
    assert_eq!(stored(&tiny) - parameter_count(&tiny), 2 * 1056);
}

#[test]
fn outputs_have_one_head_per_axis_for_any_input_size() {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::linear("yaw", -90.0, 90.0, 3.0).unwrap(),
        Axis::circular("roll", -180.0, 360.0, 10.0).unwrap(),
    ])
    .unwrap();
    let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 1, &Device::Cpu).unwrap();
    for size in [32, 45, 64] {
        let logits = model.forward_t(&random_images(2, 2, size), false).unwrap();
        let dims: Vec<Vec<usize>> = logits.iter().map(|l| l.dims().to_vec()).collect();
        assert_eq!(
            dims,
            [vec![2, 101], vec![2, 61], vec![2, 36]],
            "size {size}"
        );
    }
    let err = model
        .forward_t(&random_images(2, 1, 31), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 32×32"), "{err}");
    let narrow = VggConfig::thin_age_net().with_width(0.25).unwrap();
    assert_eq!(narrow.base_channels, 8);
    let model = Model::build(&narrow.into(), &space, 1, &Device::Cpu).unwrap();
    assert_eq!(
        model.forward_t(&random_images(3, 1, 40), true).unwrap()[0].dims(),
        [1, 101]
    );
}

#[test]
fn max_pool_gradient_matches_finite_differences_on_odd_sizes() {
    let mut r = rng(5);
    for (h, w) in [(4, 4), (5, 7), (7, 6)] {
        let values: Vec<f64> = (0..2 * 3 * h * w).map(|_| r.gen_range(-1.0..1.0)).collect();
        let weights: Vec<f64> = (0..2 * 3 * (h / 2) * (w / 2))
            .map(|_| r.gen_range(-1.0..1.0))
            .collect();
        let weights = Tensor::from_vec(weights, (2, 3, h / 2, w / 2), &Device::Cpu).unwrap();
        let f = |x: &Tensor| -> f64 {
            (max_pool_2x2(x).unwrap() * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let x = Var::from_vec(values.clone(), (2, 3, h, w), &Device::Cpu).unwrap();
        let value = (max_pool_2x2(x.as_tensor()).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap();
        let analytic = value
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let step = 1e-6;
        for i in 0..values.len() {
            let mut plus = values.clone();
            plus[i] += step;
            let mut minus = values.clone();
            minus[i] -= step;
            let t = |v: Vec<f64>| Tensor::from_vec(v, (2, 3, h, w), &Device::Cpu).unwrap();
            let numeric = (f(&t(plus)) - f(&t(minus))) / (2.0 * step);
            assert!(
                (numeric - analytic[i]).abs() < 1e-8,
                "{h}×{w}, element {i}: autograd {} vs numeric {numeric}",
                analytic[i]
            );
        }
    }
}

fn random_tensor(r: &mut rand_chacha::ChaCha8Rng, shape: &[usize]) -> Vec<f64> {
    (0..shape.iter().product::<usize>())
        .map(|_| r.gen_range(-1.0..1.0))
        .collect()
}

/// The gemm convolution against candle's direct one (forward, f32 and f64) and against
/// finite differences (both gradients, f64), on odd sizes, several paddings and kernels.
#[test]
fn conv2d_matches_candle_and_finite_differences() {
    let mut r = rng(8);
    for (n, c_in, h, w, c_out, k, padding) in [
        (2, 3, 5, 7, 4, 3, 1),
        (1, 2, 6, 6, 3, 3, 0),
        (3, 1, 4, 5, 2, 2, 1),
        (2, 4, 3, 3, 2, 1, 0),
        (2, 2, 4, 5, 3, 5, 2),
        // Padding ≥ kernel: candle's path.
        (3, 1, 4, 5, 2, 2, 2),
    ] {
        let x_values = random_tensor(&mut r, &[n, c_in, h, w]);
        let k_values = random_tensor(&mut r, &[c_out, c_in, k, k]);
        let t = |v: &[f64], shape: &[usize]| Tensor::from_vec(v.to_vec(), shape, &Device::Cpu);
        let x = t(&x_values, &[n, c_in, h, w]).unwrap();
        let kernel = t(&k_values, &[c_out, c_in, k, k]).unwrap();
        let case = format!("{n}×{c_in}×{h}×{w}, {c_out} kernels {k}×{k}, padding {padding}");
        for dtype in [DType::F64, DType::F32] {
            let (x, kernel) = (x.to_dtype(dtype).unwrap(), kernel.to_dtype(dtype).unwrap());
            let ours = to_vec(&conv2d(&x, &kernel, padding).unwrap());
            let candle = to_vec(&x.conv2d(&kernel, padding, 1, 1, 1).unwrap());
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert_eq!(ours.len(), candle.len(), "{case}");
            for (a, b) in ours.iter().zip(&candle) {
                assert!((a - b).abs() < tolerance, "{case} {dtype:?}: {a} vs {b}");
            }
        }

        let out_shape = conv2d(&x, &kernel, padding).unwrap().dims().to_vec();
        let weights = t(&random_tensor(&mut r, &out_shape), &out_shape).unwrap();
        let objective = |x: &Tensor, kernel: &Tensor| {
            (conv2d(x, kernel, padding).unwrap() * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let x_var = Var::from_tensor(&x).unwrap();
        let k_var = Var::from_tensor(&kernel).unwrap();
        let grads = objective(x_var.as_tensor(), k_var.as_tensor())
            .backward()
            .unwrap();
        let dx = to_vec(grads.get(x_var.as_tensor()).unwrap());
        let dk = to_vec(grads.get(k_var.as_tensor()).unwrap());
        let step = 1e-4;
        let numeric = |values: &[f64], i: usize, of_input: bool| {
            let mut plus = values.to_vec();
            plus[i] += step;
            let mut minus = values.to_vec();
            minus[i] -= step;
            let value = |v: &[f64]| {
                let result = if of_input {
                    objective(&t(v, &[n, c_in, h, w]).unwrap(), &kernel)
                } else {
                    objective(&x, &t(v, &[c_out, c_in, k, k]).unwrap())
                };
                scalar(&result)
            };
            (value(&plus) - value(&minus)) / (2.0 * step)
        };
        for (i, analytic) in dx.iter().enumerate() {
            let numeric = numeric(&x_values, i, true);
            assert!(
                (numeric - analytic).abs() < 1e-8,
                "{case}: dx[{i}] {analytic} vs {numeric}"
            );
        }
        for (i, analytic) in dk.iter().enumerate() {
            let numeric = numeric(&k_values, i, false);
            assert!(
                (numeric - analytic).abs() < 1e-8,
                "{case}: dk[{i}] {analytic} vs {numeric}"
            );
        }

        // On the gemm path (padding < k), a data input (no variable) gets no gradient;
        // the kernel's is unchanged.
        let grads = objective(&x, k_var.as_tensor()).backward().unwrap();
        assert_eq!(grads.get(&x).is_none(), padding < k, "{case}");
        assert_eq!(to_vec(grads.get(k_var.as_tensor()).unwrap()), dk, "{case}");
    }
}

/// Larger convolutions than the finite-difference test can afford, against candle's own
/// `conv2d` and its autograd: with 8 or more input channels the Winograd path (odd sizes,
/// paddings 0–2, bands of tile rows, groups of samples), and im2col for the others
/// (images unfolded in several bands of rows, small images several samples to one gemm,
/// with a last group shorter than the others).
#[test]
fn conv2d_bands_and_sample_groups_match_candle() {
    // Two threads, as group sizes depend on the thread count.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut r = rng(21);
    for (n, c_in, h, w, c_out, padding) in [
        // 144 × 37 columns per row: 7 bands in f64, 4 in f32.
        (3, 16, 40, 37, 8, 1),
        (2, 16, 41, 40, 5, 0),
        // 30 pixels: groups of 4 and 3 samples.
        (7, 8, 5, 6, 4, 1),
        // 16 pixels: groups of 3 and 2.
        (5, 32, 4, 4, 16, 1),
        // Padding 2: the outputs are larger than the image.
        (2, 8, 7, 9, 8, 2),
    ] {
        let case = format!("{n}×{c_in}×{h}×{w}, {c_out} kernels, padding {padding}");
        check_3x3_conv_in_f64_and_f32(&pool, &mut r, (n, c_in, h, w, c_out), padding, &case);
    }
}

/// [`assert_conv_matches_candle`] for a random 3×3 convolution of `(N, C_in, H, W)`
/// images to `C_out` channels, in f64 (to 1e-12) and f32 (to 1e-5).
fn check_3x3_conv_in_f64_and_f32(
    pool: &rayon::ThreadPool,
    r: &mut rand_chacha::ChaCha8Rng,
    (n, c_in, h, w, c_out): (usize, usize, usize, usize, usize),
    padding: usize,
    case: &str,
) {
    let x_values = random_tensor(r, &[n, c_in, h, w]);
    let k_values = random_tensor(r, &[c_out, c_in, 3, 3]);
    let x = Tensor::from_vec(x_values, (n, c_in, h, w), &Device::Cpu).unwrap();
    let kernel = Tensor::from_vec(k_values, (c_out, c_in, 3, 3), &Device::Cpu).unwrap();
    for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        let (x, kernel) = (x.to_dtype(dtype).unwrap(), kernel.to_dtype(dtype).unwrap());
        assert_conv_matches_candle(pool, r, &x, &kernel, padding, tolerance, case, &|| {});
    }
}

/// Checks [`conv2d`] against candle's direct `conv2d` and its autograd, run on `pool`:
/// the output and both gradients of `Σ y·probe` (a random probe), each within
/// `tolerance` times the largest magnitude of candle's values (at least 1). `before`
/// runs on the pool before each pass.
#[allow(clippy::too_many_arguments)]
fn assert_conv_matches_candle(
    pool: &rayon::ThreadPool,
    r: &mut rand_chacha::ChaCha8Rng,
    x: &Tensor,
    kernel: &Tensor,
    padding: usize,
    tolerance: f64,
    case: &str,
    before: &(dyn Fn() + Sync),
) {
    let x = Var::from_tensor(x).unwrap();
    let kernel = Var::from_tensor(kernel).unwrap();
    let (ours, theirs) = pool.install(|| {
        before();
        (
            conv2d(&x, &kernel, padding).unwrap(),
            x.conv2d(&kernel, padding, 1, 1, 1).unwrap(),
        )
    });
    assert_eq!(ours.dims(), theirs.dims(), "{case}");
    let probe_values = random_tensor(r, theirs.dims());
    let probe = Tensor::from_vec(probe_values, theirs.dims(), &Device::Cpu)
        .unwrap()
        .to_dtype(x.dtype())
        .unwrap();
    let gradients = |y: &Tensor| {
        let grads = pool
            .install(|| {
                before();
                (y * &probe).unwrap().sum_all().unwrap().backward()
            })
            .unwrap();
        let get = |v: &Var| to_vec(grads.get(v.as_tensor()).unwrap());
        (get(&x), get(&kernel))
    };
    let (dx, dk) = gradients(&ours);
    let (dx_candle, dk_candle) = gradients(&theirs);
    for (what, a, b) in [
        ("output", to_vec(&ours), to_vec(&theirs)),
        ("input gradient", dx, dx_candle),
        ("kernel gradient", dk, dk_candle),
    ] {
        assert_eq!(a.len(), b.len(), "{case} {what}");
        let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * scale,
                "{case} {:?} {what}[{i}]: {a} vs {b}",
                x.dtype()
            );
        }
    }
}

/// The fused BatchNorm + ReLU against candle's BatchNorm followed by ReLU (outputs and
/// running statistics, training and evaluation) and against finite differences.
#[test]
fn batch_norm_relu_matches_candle_and_finite_differences() {
    let mut r = rng(9);
    let (n, c, h, w) = (3, 4, 5, 3);
    let shape = [n, c, h, w];
    let x_values: Vec<f64> = random_tensor(&mut r, &shape)
        .iter()
        .enumerate()
        // Channels with different offsets and scales.
        .map(|(i, v)| v * (1.0 + (i / (h * w) % c) as f64) + (i / (h * w) % c) as f64)
        .collect();
    let gamma_values = random_tensor(&mut r, &[c]);
    let beta_values = random_tensor(&mut r, &[c]);
    let x = Tensor::from_vec(x_values.clone(), &shape, &Device::Cpu).unwrap();
    let config = candle_nn::BatchNormConfig::default();
    let build = |varmap: &VarMap| {
        let vb = VarBuilder::from_varmap(varmap, DType::F64, &Device::Cpu);
        let bn = candle_nn::batch_norm(c, config, vb.clone()).unwrap();
        let (gamma, beta) = bn.weight_and_bias().unwrap();
        Var::from_tensor(gamma)
            .unwrap()
            .set(&Tensor::new(gamma_values.as_slice(), &Device::Cpu).unwrap())
            .unwrap();
        Var::from_tensor(beta)
            .unwrap()
            .set(&Tensor::new(beta_values.as_slice(), &Device::Cpu).unwrap())
            .unwrap();
        bn
    };
    let (ours_map, candle_map) = (VarMap::new(), VarMap::new());
    let (ours, reference) = (build(&ours_map), build(&candle_map));
    use candle_core::ModuleT;
    for train in [true, true, false] {
        let a = to_vec(&batch_norm_relu(&ours, &x, train).unwrap());
        let b = to_vec(&reference.forward_t(&x, train).unwrap().relu().unwrap());
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-12, "train {train}: {a} vs {b}");
        }
        for (a, b) in [
            (ours.running_mean(), reference.running_mean()),
            (ours.running_var(), reference.running_var()),
        ] {
            for (a, b) in to_vec(a).iter().zip(to_vec(b)) {
                assert!((a - b).abs() < 1e-12, "running statistics: {a} vs {b}");
            }
        }
    }

    for train in [true, false] {
        let weights =
            Tensor::from_vec(random_tensor(&mut r, &shape), &shape, &Device::Cpu).unwrap();
        // A frozen copy of the layer: finite differences must not move running statistics.
        let objective = |x: &Tensor, gamma: &Tensor, beta: &Tensor| {
            let frozen = candle_nn::BatchNorm::new(
                c,
                ours.running_mean().copy().unwrap(),
                ours.running_var().copy().unwrap(),
                gamma.clone(),
                beta.clone(),
                config.eps,
            )
            .unwrap();
            (batch_norm_relu(&frozen, x, train).unwrap() * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let params = [x_values.clone(), gamma_values.clone(), beta_values.clone()];
        let tensor = |which: usize, v: &[f64]| {
            let dims: &[usize] = if which == 0 { &shape } else { &[c] };
            Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap()
        };
        let vars: Vec<Var> = (0..3)
            .map(|i| Var::from_tensor(&tensor(i, &params[i])).unwrap())
            .collect();
        let grads = objective(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        )
        .backward()
        .unwrap();
        let step = 1e-6;
        for which in 0..3 {
            let analytic = to_vec(grads.get(vars[which].as_tensor()).unwrap());
            for (i, analytic) in analytic.iter().enumerate() {
                let value = |delta: f64| {
                    let mut p = params.clone();
                    p[which][i] += delta;
                    let t: Vec<Tensor> = (0..3).map(|j| tensor(j, &p[j])).collect();
                    scalar(&objective(&t[0], &t[1], &t[2]))
                };
                let numeric = (value(step) - value(-step)) / (2.0 * step);
                assert!(
                    (numeric - analytic).abs() < 1e-6,
                    "train {train}, argument {which}, element {i}: {analytic} vs {numeric}"
                );
            }
        }
    }
}

#[test]
fn the_same_seed_gives_bit_identical_weights() {
    let space = age_space();
    let build = |seed| {
        Model::build(&BackboneConfig::tiny_age_net(), &space, seed, &Device::Cpu)
            .unwrap()
            .vars()
            .clone()
    };
    let (a, b, c) = (build(3), build(3), build(4));
    assert_eq!(values_of(&a), values_of(&b));
    assert_ne!(values_of(&a), values_of(&c));
    // PyTorch's defaults: conv weights in ±1/√fan_in, BatchNorm weight 1 and bias 0.
    for (name, values) in values_of(&a) {
        let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        if name == "backbone.features.0.conv.weight" {
            assert!(
                max <= 1.0 / 27f32.sqrt() && max > 0.9 / 27f32.sqrt(),
                "{name}: {max}"
            );
        }
        if name.ends_with("bn.weight") || name.ends_with("running_var") {
            assert!(values.iter().all(|v| *v == 1.0), "{name}");
        }
        if name.ends_with("bn.bias") || name.ends_with("running_mean") {
            assert!(values.iter().all(|v| *v == 0.0), "{name}");
        }
        if name == "heads.age.bias" {
            assert!(max <= 1.0 / 128f32.sqrt(), "{name}: {max}");
        }
    }
}

#[test]
fn batch_norm_state_differs_by_mode_and_survives_a_checkpoint() {
    let space = age_space();
    let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 9, &Device::Cpu).unwrap();
    let vars = model.vars().clone();
    let images = random_images(10, 4, 32);
    let running = |vars: &VarMap| {
        vars.data().lock().unwrap()["backbone.features.0.bn.running_mean"]
            .to_vec1::<f32>()
            .unwrap()
    };
    let before = running(&vars);
    let train = model.forward_t(&images, true).unwrap()[0]
        .to_vec2::<f32>()
        .unwrap();
    let after = running(&vars);
    assert_ne!(
        before, after,
        "training mode updates the running statistics"
    );
    let eval = model.forward_t(&images, false).unwrap()[0]
        .to_vec2::<f32>()
        .unwrap();
    assert_ne!(train, eval, "train and eval modes use different statistics");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    model.save(&path).unwrap();
    let (loaded, info) = Model::from_checkpoint(&path, &Device::Cpu).unwrap();
    let loaded_vars = loaded.vars().clone();
    assert_eq!(info.label_space, space);
    assert_eq!(info.model, BackboneConfig::tiny_age_net());
    assert_eq!(values_of(&loaded_vars), values_of(&vars));
    let reloaded = loaded.forward_t(&images, false).unwrap()[0]
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(reloaded, eval, "bit-identical outputs after save → load");
    // Nothing but the checkpoint is left in the folder (no temporary file).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A checkpoint holding a value training never saves (a NaN or infinite weight, a negative
/// BatchNorm running variance) is refused when read, naming the tensor, so that no command
/// predicts NaN or silently wrong numbers from it.
#[test]
fn a_checkpoint_with_an_impossible_value_is_refused_naming_the_tensor() {
    let space = age_space();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("backbone.features.0.conv.weight", f32::NAN, "holds NaN"),
        (
            "backbone.features.0.bn.running_mean",
            f32::INFINITY,
            "holds inf",
        ),
        (
            "backbone.features.0.bn.running_var",
            -0.5,
            "holds the negative variance -0.5",
        ),
    ];
    for (i, (name, value, expected)) in cases.into_iter().enumerate() {
        let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 1, &Device::Cpu).unwrap();
        let vars = model.vars().clone();
        {
            let data = vars.data().lock().unwrap();
            let var = &data[name];
            let mut values = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            values[0] = value;
            var.set(&Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
        let path = dir.path().join(format!("forged-{i}.safetensors"));
        model.save(&path).unwrap();
        let err = Model::from_checkpoint(&path, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!(
                "tensor `{name}` {expected}, which no trained model holds"
            )),
            "{err}"
        );
    }
}

/// Fine-tuning from a checkpoint of another backbone, of which no backbone tensor fits the
/// model, is refused instead of quietly training from scratch.
#[test]
fn init_from_a_checkpoint_with_nothing_to_load_is_refused() {
    let space = age_space();
    let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 1, &Device::Cpu).unwrap();
    let vars = model.vars().clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    model.save(&path).unwrap();
    let mlp: BackboneConfig = MlpConfig {
        inputs: 4,
        hidden: vec![8],
        batch_norm: false,
        dropout: 0.0,
        separate_trunks: false,
        ensemble: 1,
        linear_path: false,
    }
    .into();
    let mlp_vars = Model::build(&mlp, &space, 1, &Device::Cpu)
        .unwrap()
        .vars()
        .clone();
    let err = ldl::models::load_pretrained(&mlp_vars, &path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("none of its backbone tensors has the name and shape of one of the model's"),
        "{err}"
    );
    // The same checkpoint into its own backbone loads every tensor.
    let same_vars = Model::build(&BackboneConfig::tiny_age_net(), &space, 2, &Device::Cpu)
        .unwrap()
        .vars()
        .clone();
    let report = ldl::models::load_pretrained(&same_vars, &path, &Device::Cpu).unwrap();
    assert!(report.new.is_empty() && report.skipped.is_empty());
    assert_eq!(report.loaded.len(), vars.all_vars().len());
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let space = age_space();
    let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 1, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    model.save(&path).unwrap();

    // Into a model whose head has another number of bins.
    let other = LabelSpace::new(vec![Axis::linear("age", 0.0, 80.0, 1.0).unwrap()]).unwrap();
    let other_model =
        Model::build(&BackboneConfig::tiny_age_net(), &other, 0, &Device::Cpu).unwrap();
    let (tensors, _) = read_checkpoint(&path, &Device::Cpu).unwrap();
    let err = ldl::models::load_into(other_model.vars(), &tensors, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`heads.age.bias` has shape [101] in the checkpoint but [81] in the model"),
        "{err}"
    );

    // Truncated.
    let bytes = std::fs::read(&path).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = error_of(Model::from_checkpoint(&truncated, &Device::Cpu));
    assert!(
        err.contains("truncated.safetensors") && err.contains("truncated or corrupt"),
        "{err}"
    );

    // Garbage and a missing file.
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(
        &garbage,
        b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a checkpoint",
    )
    .unwrap();
    assert!(!error_of(Model::from_checkpoint(&garbage, &Device::Cpu)).is_empty());
    let err = error_of(Model::from_checkpoint(
        &dir.path().join("none.safetensors"),
        &Device::Cpu,
    ));
    assert!(err.contains("none.safetensors: not found"), "{err}");

    // A safetensors file that is not an ldl checkpoint.
    let plain = dir.path().join("plain.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(
            "w".to_string(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        )]),
        &plain,
    )
    .unwrap();
    let err = error_of(Model::from_checkpoint(&plain, &Device::Cpu));
    assert!(err.contains("not an ldl checkpoint"), "{err}");
}

#[test]
fn mlp_dropout_is_seeded_and_off_in_eval() {
    let space = LabelSpace::new(vec![
        Axis::linear("weight", 40.0, 120.0, 1.0).unwrap(),
        Axis::linear("height", 140.0, 200.0, 1.0).unwrap(),
    ])
    .unwrap();
    let config: BackboneConfig = MlpConfig {
        inputs: 21,
        hidden: vec![64, 32],
        batch_norm: true,
        dropout: 0.5,
        separate_trunks: false,
        ensemble: 1,
        linear_path: false,
    }
    .into();
    let x = Tensor::from_vec(
        (0..8 * 21).map(|i| (i as f32 * 0.37).sin()).collect(),
        (8, 21),
        &Device::Cpu,
    )
    .unwrap();
    let run = |seed| {
        let model = Model::build(&config, &space, seed, &Device::Cpu).unwrap();
        let train = model.forward_t(&x, true).unwrap()[1]
            .to_vec2::<f32>()
            .unwrap();
        let eval_a = model.forward_t(&x, false).unwrap()[1]
            .to_vec2::<f32>()
            .unwrap();
        let eval_b = model.forward_t(&x, false).unwrap()[1]
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(eval_a, eval_b, "no dropout in eval mode");
        train
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
    assert_eq!(
        Model::build(&config, &space, 0, &Device::Cpu)
            .unwrap()
            .parameter_count(),
        21 * 64 + 64 + 2 * 64 + 64 * 32 + 32 + 2 * 32 + (32 * 81 + 81) + (32 * 61 + 61)
    );
}

/// Data-parallel dropout: two ranks holding rows 0..3 and 3..8 of a global batch of 8
/// drop exactly what one process holding all 8 drops, with two per-axis trunks; a part
/// that draws its masks as a batch of its own does not.
#[test]
fn mlp_dropout_of_a_batch_part_is_the_whole_batch_masks_rows() {
    let space = LabelSpace::new(vec![
        Axis::linear("weight", 40.0, 120.0, 1.0).unwrap(),
        Axis::linear("height", 140.0, 200.0, 1.0).unwrap(),
    ])
    .unwrap();
    let config: BackboneConfig = MlpConfig {
        inputs: 5,
        hidden: vec![16, 8],
        batch_norm: false,
        dropout: 0.4,
        separate_trunks: true,
        ensemble: 1,
        linear_path: false,
    }
    .into();
    let model = Model::build(&config, &space, 3, &Device::Cpu).unwrap();
    let x = Tensor::from_vec(
        (0..8 * 5).map(|i| (i as f32 * 0.61).cos()).collect(),
        (8, 5),
        &Device::Cpu,
    )
    .unwrap();
    let rows = |logits: Vec<Tensor>| -> Vec<Vec<Vec<f32>>> {
        logits.iter().map(|t| t.to_vec2::<f32>().unwrap()).collect()
    };
    model.reseed_dropout(11);
    let whole = rows(model.forward_t(&x, true).unwrap());
    let part = |start: usize, len: usize, rows_of: BatchRows| {
        model.reseed_dropout(11);
        rows(
            model
                .forward_rows(&x.narrow(0, start, len).unwrap(), rows_of)
                .unwrap(),
        )
    };
    // The products differ from the whole batch's by rounding only (a matrix product of 3
    // or 5 rows blocks differently from one of 8); a different mask changes a unit by
    // its whole value.
    let largest_difference = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()))
    };
    let first = part(
        0,
        3,
        BatchRows {
            start: 0,
            global: 8,
        },
    );
    let second = part(
        3,
        5,
        BatchRows {
            start: 3,
            global: 8,
        },
    );
    for head in 0..2 {
        let joined: Vec<Vec<f32>> = first[head].iter().chain(&second[head]).cloned().collect();
        let difference = largest_difference(&joined, &whole[head]);
        assert!(difference <= 1e-6, "head {head}: {difference:e}");
    }
    // Drawn as a batch of its own, the second part gets other masks.
    let own = part(3, 5, BatchRows::whole(5));
    let difference = largest_difference(&own[0], &whole[0][3..]);
    assert!(difference > 1e-2, "{difference:e}");
    // A part that does not fit its global batch is refused.
    let err = model
        .forward_rows(
            &x,
            BatchRows {
                start: 3,
                global: 8,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows 3..11 of a global batch of 8"), "{err}");
}

#[test]
fn tiny_age_net_overfits_one_batch() {
    // 16 fixed images and ages; Adam on every trainable variable until L_ld is near 0.
    let space = age_space();
    let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 11, &Device::Cpu).unwrap();
    let vars = model.vars().clone();
    let images = random_images(12, 16, 32);
    let labels: Vec<Vec<Label>> = (0..16)
        .map(|i| vec![Label::value_with_std(5.0 + 6.0 * i as f64, 2.0)])
        .collect();
    let targets = space.targets(&labels, DType::F32, &Device::Cpu).unwrap();
    let trainable: Vec<Var> = ldl::models::trainable_vars(&vars)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let mut optimizer = candle_nn::AdamW::new(
        trainable,
        candle_nn::ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut first = f64::NAN;
    let mut last = f64::NAN;
    for step in 0..400 {
        let logits = model.forward_t(&images, true).unwrap();
        let loss = Kl.compute(&space, &logits, &targets).unwrap();
        last = loss.total_value().unwrap();
        if step == 0 {
            first = last;
        }
        if last < 0.05 {
            break;
        }
        optimizer.backward_step(&loss.total).unwrap();
    }
    assert!(
        last < 0.05,
        "L_ld went from {first:.3} to {last:.3}, not below 0.05 in 400 steps"
    );
    let _ = D::Minus1;
}

/// Cosine of the angle between two vectors.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The features and every trainable variable's gradient (in the variable's dtype) of
/// `sum(features · probe)`, for one forward in training mode on input `x`.
fn features_and_gradients(
    forward: &dyn Fn(&Tensor) -> Tensor,
    vars: &VarMap,
    x: &Tensor,
    probe: &Tensor,
) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let features = forward(x);
    assert_eq!(features.dtype(), DType::F32, "f32 features for the heads");
    let grads = (&features * probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gradients = ldl::models::trainable_vars(vars)
        .into_iter()
        .map(|(name, var)| {
            assert_eq!(var.dtype(), DType::F32, "{name} stays f32");
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            assert_eq!(grad.dtype(), DType::F32, "{name}'s gradient");
            (name, grad.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
        .collect();
    (
        features.flatten_all().unwrap().to_vec1().unwrap(),
        gradients,
    )
}

/// Checks that a half-precision pass is close to the f32 one but not the same pass.
fn assert_close_but_not_equal(
    f32_pass: &(Vec<f32>, Vec<(String, Vec<f32>)>),
    half_pass: &(Vec<f32>, Vec<(String, Vec<f32>)>),
) {
    let (features, gradients) = f32_pass;
    let (half_features, half_gradients) = half_pass;
    assert_ne!(features, half_features, "the half-precision path ran");
    let scale = features.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = features
        .iter()
        .zip(half_features)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst < 0.02 * scale,
        "features differ by {worst} (scale {scale})"
    );
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let largest = gradients.iter().map(|(_, g)| norm(g)).fold(0.0, f64::max);
    for ((name, g), (_, h)) in gradients.iter().zip(half_gradients) {
        if norm(g) < 1e-3 * largest {
            // A bias before BatchNorm: its true gradient is zero, both are rounding noise.
            assert!(norm(h) < 1e-2 * largest, "{name}: {} vs {largest}", norm(h));
            continue;
        }
        // Small gradients (BatchNorm's, a few % of the largest) are sums of terms that
        // nearly cancel, and the ReLU masks of the two passes differ near zero.
        let needed = if norm(g) > 0.1 * largest { 0.98 } else { 0.9 };
        let c = cosine(g, h);
        assert!(
            c > needed,
            "{name}: cosine {c} between f32 and half gradients"
        );
    }
}

#[test]
fn half_precision_blocks_track_f32_and_train_the_f32_weights() {
    // `Precision::Bf16` (CUDA) feeds the backbone bf16 images: every conv block computes in
    // the dtype of its input, with its f32 weight cast on the fly, BatchNorm in f32, and
    // f32 features. candle has no bf16 matrix product on the CPU, so f16 stands in for
    // bf16 here: the same code path, chosen by the input's dtype alone.
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let vgg = ldl::models::Vgg::new(&VggConfig::tiny_age_net(), vb).unwrap();
    ldl::models::seeded_init(&vars, 4).unwrap();
    let images = random_images(5, 4, 32);
    let probe = random_images(6, 4, 32)
        .flatten_from(1)
        .unwrap()
        .narrow(1, 0, 128)
        .unwrap()
        .contiguous()
        .unwrap();
    let forward = |x: &Tensor| vgg.forward_t(x, true).unwrap();
    let f32_pass = features_and_gradients(&forward, &vars, &images, &probe);
    let half = images.to_dtype(DType::F16).unwrap();
    let half_pass = features_and_gradients(&forward, &vars, &half, &probe);
    assert_close_but_not_equal(&f32_pass, &half_pass);
    // BatchNorm's running statistics stay f32 and were updated by the half pass too.
    let data = vars.data().lock().unwrap();
    let mean = &data["features.0.bn.running_mean"];
    assert_eq!(mean.dtype(), DType::F32);
    assert!(
        mean.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    drop(data);
    // Evaluation mode too.
    let eval = |x: &Tensor| vgg.forward_t(x, false).unwrap().flatten_all().unwrap();
    let (a, b) = (eval(&images), eval(&half));
    let diff = (&a - &b).unwrap().abs().unwrap().max(0).unwrap();
    let scale = a.abs().unwrap().max(0).unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 0.02 * scale.to_scalar::<f32>().unwrap());
}

#[test]
fn mlp_half_precision_products_track_f32() {
    let config = MlpConfig {
        inputs: 21,
        hidden: vec![64, 32],
        batch_norm: true,
        dropout: 0.0,
        separate_trunks: false,
        ensemble: 1,
        linear_path: false,
    };
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let mut mlp = ldl::models::Mlp::new(&config, 0, vb).unwrap();
    ldl::models::seeded_init(&vars, 8).unwrap();
    let mut r = rng(9);
    let values: Vec<f32> = (0..16 * 21).map(|_| r.gen_range(-2.0..2.0)).collect();
    let x = Tensor::from_vec(values, (16, 21), &Device::Cpu).unwrap();
    let values: Vec<f32> = (0..16 * 32).map(|_| r.gen_range(-1.0..1.0)).collect();
    let probe = Tensor::from_vec(values, (16, 32), &Device::Cpu).unwrap();
    let f32_pass = {
        let forward = |x: &Tensor| mlp.forward_t(x, true).unwrap();
        features_and_gradients(&forward, &vars, &x, &probe)
    };
    mlp.set_compute_dtype(DType::F16);
    let forward = |x: &Tensor| mlp.forward_t(x, true).unwrap();
    let half_pass = features_and_gradients(&forward, &vars, &x, &probe);
    assert_close_but_not_equal(&f32_pass, &half_pass);
}

/// Forward pass and both gradients of `conv2d` against candle's direct convolution over a
/// sweep of small shapes: every kernel size from 1 to 5 with every padding below it,
/// images down to one pixel, outputs one row or column wide, 1–9 samples, channel counts
/// on both sides of the Winograd threshold, and pools of 1, 2, 3 and 5 threads.
#[test]
fn conv2d_edge_shapes_match_candle() {
    let mut r = rng(77);
    let mut cases = Vec::new();
    for k in 1..=5usize {
        for padding in 0..k {
            for (h, w) in [(1, 1), (1, 4), (3, 1), (2, 5), (5, 5), (6, 3), (7, 8)] {
                if h + 2 * padding < k || w + 2 * padding < k {
                    continue;
                }
                for (n, c_in, c_out) in [(1, 1, 1), (3, 3, 2), (5, 8, 3), (2, 9, 8), (9, 10, 1)] {
                    cases.push((n, c_in, h, w, c_out, k, padding));
                }
            }
        }
    }
    for threads in [1, 2, 3, 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for &(n, c_in, h, w, c_out, k, padding) in &cases {
            let case = format!(
                "{threads} threads, {n}×{c_in}×{h}×{w}, {c_out} {k}×{k} kernels, padding {padding}"
            );
            let x_values = random_tensor(&mut r, &[n, c_in, h, w]);
            let k_values = random_tensor(&mut r, &[c_out, c_in, k, k]);
            let x = Tensor::from_vec(x_values, (n, c_in, h, w), &Device::Cpu).unwrap();
            let kernel = Tensor::from_vec(k_values, (c_out, c_in, k, k), &Device::Cpu).unwrap();
            // Freed NaN buffers of the sizes involved: memory the op leaves unwritten
            // would likely show as NaN.
            let poison = || {
                for len in [
                    n * c_in * h * w,
                    n * c_out * (h + 2 * padding) * (w + 2 * padding),
                ] {
                    drop(std::hint::black_box(vec![f64::NAN; len]));
                }
            };
            assert_conv_matches_candle(&pool, &mut r, &x, &kernel, padding, 1e-12, &case, &poison);
        }
    }
}

/// The max-pool gradient on windows with tied maxima and NaNs: each output's gradient goes
/// whole to the first cell of its window equal to the maximum (scan order), a NaN maximum's
/// to the first cell, and an odd last row and column get none.
#[test]
fn max_pool_gradient_goes_to_the_first_of_tied_maxima() {
    let nan = f64::NAN;
    #[rustfmt::skip]
    let values = vec![
        2.0, 2.0,   1.0, 3.0,   0.0, 0.0,   -0.0, 0.0,   9.0,
        1.0, 1.0,   3.0, 3.0,   5.0, 5.0,    0.0, -0.0,  9.0,
        nan, 1.0,   1.0, nan,   4.0, 4.0,    7.0, 7.0,   9.0,
        2.0, 3.0,   0.0, 0.0,   4.0, 4.0,    7.0, 7.0,   9.0,
        9.0, 9.0,   9.0, 9.0,   9.0, 9.0,    9.0, 9.0,   9.0,
    ];
    let (h, w) = (5, 9);
    for dtype in [DType::F64, DType::F32] {
        let x = Var::from_tensor(
            &Tensor::from_vec(values.clone(), (1, 1, h, w), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let y = max_pool_2x2(&x).unwrap();
        assert_eq!(y.dims(), &[1, 1, 2, 4]);
        let weights: Vec<f64> = (1..=8).map(|v| v as f64).collect();
        let probe = Tensor::from_vec(weights.clone(), (1, 1, 2, 4), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dx = to_vec(grads.get(x.as_tensor()).unwrap());
        let maxima = to_vec(&y);
        let mut expected = vec![0.0; h * w];
        for oy in 0..2 {
            for ox in 0..4 {
                let cells = [
                    2 * oy * w + 2 * ox,
                    2 * oy * w + 2 * ox + 1,
                    (2 * oy + 1) * w + 2 * ox,
                    (2 * oy + 1) * w + 2 * ox + 1,
                ];
                let m = maxima[oy * 4 + ox];
                let first = cells.iter().position(|&i| values[i] == m).unwrap_or(0);
                expected[cells[first]] = weights[oy * 4 + ox];
            }
        }
        assert_eq!(dx, expected, "{dtype:?}");
    }
}

/// The composed max-pool that CUDA (and every dtype without ldl's CPU op) takes: bf16 on
/// the CPU runs it here. Forward values and the first-of-tied-maxima gradient as the op.
#[test]
fn composed_max_pool_gives_the_gradient_to_the_first_of_tied_maxima() {
    #[rustfmt::skip]
    let values: Vec<f32> = vec![
        2.0, 2.0,   1.0, 3.0,   0.0, 0.0,   -0.0, 0.0,   9.0,
        1.0, 1.0,   3.0, 3.0,   5.0, 5.0,    0.0, -0.0,  9.0,
        1.5, 1.0,   1.0, 0.5,   4.0, 4.0,    7.0, 7.0,   9.0,
        2.0, 3.0,   0.0, 0.0,   4.0, 4.0,    7.0, 7.0,   9.0,
        9.0, 9.0,   9.0, 9.0,   9.0, 9.0,    9.0, 9.0,   9.0,
    ];
    let (h, w) = (5, 9);
    let input = Tensor::from_vec(values.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
    let x = Var::from_tensor(&input).unwrap();
    let y = max_pool_2x2(&x.to_dtype(DType::BF16).unwrap()).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let maxima = to_vec(&y.to_dtype(DType::F64).unwrap());
    assert_eq!(maxima, [2.0, 3.0, 5.0, 0.0, 3.0, 1.0, 4.0, 7.0]);
    let probe = Tensor::arange(1f32, 9.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 2, 4))
        .unwrap();
    let grads = (y.to_dtype(DType::F32).unwrap() * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let dx = to_vec(grads.get(x.as_tensor()).unwrap());
    // Window by window: the first cell (row-major within the window) holding the maximum.
    let mut expected = vec![0.0; h * w];
    for (window, &first) in [0, 3, w + 4, 6, 3 * w + 1, 2 * w + 2, 2 * w + 4, 2 * w + 6]
        .iter()
        .enumerate()
    {
        expected[first] = (window + 1) as f64;
    }
    // Window 1 holds 3 at (0,3), (1,2) and (1,3): the first is (0,3). Window 3 holds
    // -0, 0, 0, -0, all equal: (0,6). Windows 6 and 7 are four equal values.
    assert_eq!(dx, expected);
}

/// Winograd-sized convolutions (3×3, 32 channels each side) whose single samples are cut
/// into several bands of tile rows, the last one shorter, with odd output sizes, paddings
/// 0–2, and batches whose last sample group holds one sample: outputs and both gradients
/// against candle's direct convolution, f64 and f32.
#[test]
fn conv2d_winograd_bands_match_candle() {
    let mut r = rng(91);
    for threads in [1, 2, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (n, h, w, padding) in [
            (1, 29, 31, 1),
            (3, 29, 31, 1),
            (3, 30, 33, 0),
            (1, 27, 29, 2),
            (5, 9, 70, 2),
        ] {
            let case = format!("{threads} threads, {n}×32×{h}×{w}, padding {padding}");
            check_3x3_conv_in_f64_and_f32(&pool, &mut r, (n, 32, h, w, 32), padding, &case);
        }
    }
}

/// Separate MLP trunks share nothing: a loss on one head sends gradient to that head and
/// its own trunk only, and the parameter count is the closed form of one MLP per head.
/// An axis named `bn` gets a linear trunk, not BatchNorm's constant initialisation.
#[test]
fn separate_mlp_trunks_share_no_features() {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 10.0, 1.0).unwrap(),
        Axis::linear("bn", 0.0, 4.0, 1.0).unwrap(),
    ])
    .unwrap();
    let shared = MlpConfig::new(6, vec![8, 4]).with_batch_norm();
    let separate = shared.clone().with_separate_trunks();
    // Per trunk: two linear layers and BatchNorm's weight and bias after each.
    let trunk = (6 * 8 + 8 + 2 * 8) + (8 * 4 + 4 + 2 * 4);
    let heads = (4 * 11 + 11) + (4 * 5 + 5);
    let running_statistics = 2 * 8 + 2 * 4;
    let cpu = &Device::Cpu;
    let one = Model::build(&shared.clone().into(), &space, 3, cpu).unwrap();
    let model = Model::build(&separate.clone().into(), &space, 3, cpu).unwrap();
    assert_eq!(one.parameter_count(), trunk + heads);
    assert_eq!(model.parameter_count(), 2 * trunk + heads);
    assert_eq!(
        BackboneConfig::from(separate).stored_elements(&space),
        (2 * (trunk + running_statistics) + heads) as u128
    );

    let x = Tensor::from_vec(
        (0..5 * 6).map(|i| (i as f32 * 0.61).sin()).collect(),
        (5, 6),
        cpu,
    )
    .unwrap();
    // In evaluation mode, so that every bias has a gradient (batch statistics would
    // cancel the ones before BatchNorm).
    let logits = model.forward_t(&x, false).unwrap();
    let grads = (logits[0].sqr().unwrap().sum_all().unwrap())
        .backward()
        .unwrap();
    let vars = model.vars().data().lock().unwrap();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    assert!(names
        .iter()
        .any(|n| n.starts_with("backbone.bn.layers.1.bn.")));
    for name in names {
        if ldl::models::is_running_statistic(name) {
            continue;
        }
        let var = &vars[name];
        let touched = grads.get(var).is_some_and(|g| {
            let g: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            g > 0.0
        });
        let own = name.starts_with("backbone.age.") || name.starts_with("heads.age.");
        assert_eq!(touched, own, "{name}");
    }
    let values = |name: &str| {
        (vars[name].flatten_all().unwrap())
            .to_vec1::<f32>()
            .unwrap()
    };
    let linear = values("backbone.bn.layers.0.weight");
    assert!(linear.iter().any(|v| *v != linear[0]), "{linear:?}");
    assert!(values("backbone.bn.layers.0.bn.weight")
        .iter()
        .all(|v| *v == 1.0));
}

/// With one head the setting changes nothing: the same variables, initial weights and
/// outputs, so a one-axis checkpoint loads whichever way it was trained.
#[test]
fn a_single_head_model_is_the_same_with_separate_trunks() {
    let space = age_space();
    let config = MlpConfig::new(6, vec![8]).with_batch_norm();
    let cpu = &Device::Cpu;
    let shared = Model::build(&config.clone().into(), &space, 9, cpu).unwrap();
    let separate = Model::build(&config.with_separate_trunks().into(), &space, 9, cpu).unwrap();
    let names = |model: &Model| {
        let mut names: Vec<String> = model
            .vars()
            .data()
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&shared), names(&separate));
    let x = Tensor::from_vec((0..4 * 6).map(|i| i as f32 * 0.1).collect(), (4, 6), cpu).unwrap();
    let outputs = |model: &Model| {
        model.forward_t(&x, false).unwrap()[0]
            .to_vec2::<f32>()
            .unwrap()
    };
    assert_eq!(outputs(&shared), outputs(&separate));

    // A checkpoint written before the setting existed has no such field: shared.
    let old: MlpConfig =
        serde_json::from_str(r#"{"inputs":6,"hidden":[8],"batch_norm":true,"dropout":0.0}"#)
            .unwrap();
    assert!(!old.separate_trunks);
}

/// A "sum over the ranks" of one rank: the values as they are.
struct OneRank;

impl ldl::models::CrossRankSum for OneRank {
    fn sum(&self, _values: &mut [f64]) -> Result<(), String> {
        Ok(())
    }
}

/// Synchronised BatchNorm with a single rank is BatchNorm: the same gradients and running
/// statistics from one training step (its statistics are combined from sums, so they
/// agree to rounding, not bit for bit), for TinyAgeNet's fused BatchNorm and for the MLP's,
/// which is candle's layer unless synchronised.
#[test]
fn sync_batch_norm_over_one_rank_is_batch_norm() {
    let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap();
    let pixels: Vec<f32> = (0..6 * 3 * 32 * 32)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let images = Tensor::from_vec(pixels, (6, 3, 32, 32), &Device::Cpu).unwrap();
    let rows: Vec<f32> = (0..6 * 3).map(|i| (i as f32 * 0.7).sin()).collect();
    let rows = Tensor::from_vec(rows, (6, 3), &Device::Cpu).unwrap();
    let labels: Vec<Vec<Label>> = (0..6)
        .map(|i| vec![Label::value(10.0 * i as f64)])
        .collect();
    let tiny = BackboneConfig::Vgg(VggConfig::tiny_age_net().with_width(0.25).unwrap());
    let mlp = BackboneConfig::Mlp(MlpConfig::new(3, [8, 4]).with_batch_norm());
    for (config, inputs) in [(tiny, images), (mlp, rows)] {
        let largest = one_rank_sync_difference(&config, &space, &inputs, &labels);
        assert!(largest <= 1e-5, "{config:?}: {largest:e}");
    }
}

/// The largest difference, relative to each tensor's largest value, between one training
/// step's gradients and running statistics with plain BatchNorm and with SyncBN over one
/// rank.
fn one_rank_sync_difference(
    config: &BackboneConfig,
    space: &LabelSpace,
    inputs: &Tensor,
    labels: &[Vec<Label>],
) -> f32 {
    use candle_core::backprop::GradStore;
    let targets = space.targets(labels, DType::F32, &Device::Cpu).unwrap();
    let step = |synced: bool| -> (Model, GradStore) {
        let mut model = Model::build(config, space, 2, &Device::Cpu).unwrap();
        if synced {
            model
                .set_batch_norm_sync(Some(std::sync::Arc::new(OneRank)))
                .unwrap();
        }
        let logits = model.forward_t(inputs, true).unwrap();
        let loss = ldl::loss::FullKl::new()
            .compute(space, &logits, &targets)
            .unwrap();
        let grads = loss.total.backward().unwrap();
        (model, grads)
    };
    let ((plain, plain_grads), (synced, synced_grads)) = (step(false), step(true));
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let relative = |x: &[f32], y: &[f32]| {
        let scale = x.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        x.iter()
            .zip(y)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs() / scale))
    };
    let mut largest = 0.0f32;
    for ((name, a), (_, b)) in plain.trainable_vars().iter().zip(synced.trainable_vars()) {
        let (x, y) = (
            values(plain_grads.get(a.as_tensor()).unwrap()),
            values(synced_grads.get(b.as_tensor()).unwrap()),
        );
        // The MLP's linear biases before BatchNorm: zero up to rounding in both.
        if x.iter().all(|v| v.abs() < 1e-6) {
            assert!(y.iter().all(|v| v.abs() < 1e-6), "{name}: {y:?}");
            continue;
        }
        largest = largest.max(relative(&x, &y));
    }
    let running = |m: &Model| -> Vec<f32> {
        let data = m.vars().data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().filter(|n| n.contains("running")).collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| values(data[*n].as_tensor()))
            .collect()
    };
    let (a, b) = (running(&plain), running(&synced));
    assert!(!a.is_empty());
    largest.max(relative(&a, &b))
}

/// SyncBN over two ranks, each a thread with its own copy of the model and a part of 7 or
/// 9 of a batch of 16, against one process on the whole batch: the gradients (each rank's
/// scaled by its share and summed, as the trainer averages them) and the running
/// statistics agree to rounding, for TinyAgeNet's fused BatchNorm and for the MLP's
/// (with dropout, whose masks the ranks draw as one process does). Each rank with its own
/// BatchNorm does not. The same check runs on the GPU in `tests/gpu.rs`.
#[test]
fn sync_batch_norm_over_two_thread_ranks_takes_the_whole_batch_step() {
    use common::thread_ranks::{assert_two_ranks_take_the_whole_step, Tolerances};
    let tolerances = Tolerances {
        gradients: 1e-4,
        statistics: 1e-5,
        unsynced_at_least: 1e-2,
    };
    assert_two_ranks_take_the_whole_step(&Device::Cpu, tolerances);
}
