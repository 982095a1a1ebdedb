//! Regression tests for problems an independent review found: each would fail on the
//! code before its fix.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use ldl::loss::{DldlV2, FullKl, Kl, Loss, MeanVariance};
use ldl::metrics::Metrics;
use ldl::{Axis, AxisTargets, Label, LabelSpace};

fn both_paths() -> [FullKl; 2] {
    [
        FullKl::default(),
        FullKl::default().with_fused_cpu_kernel(false),
    ]
}

/// The same physical circle, starting at 0° or at −180°, with labels on bin centres (so
/// that one bin sits exactly half a turn away): the losses must not depend on the start.
#[test]
fn circular_losses_do_not_depend_on_where_the_axis_starts() {
    let value_at = |start: f64| {
        let axis = Axis::circular("yaw", start, 360.0, 90.0).unwrap();
        let space = LabelSpace::new(vec![axis.clone()]).unwrap();
        let targets = space
            .targets(
                &[vec![Label::value_with_std(0.0, 60.0)]],
                DType::F64,
                &Device::Cpu,
            )
            .unwrap();
        // The prediction {0°: .4, 90°: .3, 180°: .2, 270°: .1} in this axis's bin order.
        let probability = |centre: f64| match (centre.rem_euclid(360.0)) as i64 {
            0 => 0.4,
            90 => 0.3,
            180 => 0.2,
            _ => 0.1,
        };
        let z: Vec<f64> = axis
            .centers()
            .iter()
            .map(|c| f64::ln(probability(*c)))
            .collect();
        let logits = [matrix(&[z])];
        let mut values: Vec<f64> = both_paths()
            .iter()
            .map(|loss| scalar(&loss.compute(&space, &logits, &targets).unwrap().total))
            .collect();
        values.push(scalar(
            &DldlV2::new(1.0)
                .unwrap()
                .compute(&space, &logits, &targets)
                .unwrap()
                .total,
        ));
        values
    };
    let (from_zero, from_minus_180) = (value_at(0.0), value_at(-180.0));
    for (a, b) in from_zero.iter().zip(&from_minus_180) {
        assert_close(*a, *b, 1e-12, "start 0° vs −180°");
    }
    assert_close(from_zero[0], from_zero[1], 1e-12, "fused vs composed");
}

#[test]
fn half_precision_losses_are_finite() {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::categorical("emotion", ["a", "b", "c"]).unwrap(),
    ])
    .unwrap();
    let labels = vec![vec![Label::value_with_std(30.0, 3.0), Label::Class(1)]];
    let mut r = rng(1);
    let z = [
        matrix(&[random_logits(&mut r, 101, 2.0)]),
        matrix(&[vec![0.1, 0.5, -0.2]]),
    ];
    let reference = FullKl::default()
        .compute(
            &space,
            &z,
            &space.targets(&labels, DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let targets = space.targets(&labels, dtype, &Device::Cpu).unwrap();
        let logits: Vec<Tensor> = z.iter().map(|t| t.to_dtype(dtype).unwrap()).collect();
        let losses: Vec<Box<dyn Loss>> = vec![
            Box::new(FullKl::default()),
            Box::new(Kl),
            Box::new(DldlV2::new(1.0).unwrap()),
            Box::new(MeanVariance::default()),
        ];
        for loss in losses {
            for (key, value) in loss
                .compute(&space, &logits, &targets)
                .unwrap()
                .part_values()
                .unwrap()
            {
                assert!(
                    value.is_finite(),
                    "{dtype:?} {}: {key} = {value}",
                    loss.name()
                );
            }
        }
        let half = scalar(
            &FullKl::default()
                .compute(&space, &logits, &targets)
                .unwrap()
                .total,
        );
        assert_close(
            half,
            scalar(&reference.total),
            0.05,
            &format!("{dtype:?} vs f32"),
        );
    }
}

#[test]
fn no_gradient_flows_into_the_targets() {
    let axis = Axis::linear("x", 0.0, 4.0, 1.0).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let pmf = Var::from_tensor(&matrix(&[vec![0.1, 0.2, 0.4, 0.2, 0.1]])).unwrap();
    let targets = vec![AxisTargets::from_pmf(pmf.as_tensor(), &axis).unwrap()];
    let logits = Var::from_tensor(&matrix(&[vec![0.3, -0.1, 0.2, 0.0, 0.5]])).unwrap();
    let [fused, composed] = both_paths();
    let losses: Vec<Box<dyn Loss>> = vec![
        Box::new(fused),
        Box::new(composed),
        Box::new(Kl),
        Box::new(DldlV2::new(1.0).unwrap()),
        Box::new(MeanVariance::default()),
    ];
    for loss in losses {
        let out = loss
            .compute(&space, &[logits.as_tensor().clone()], &targets)
            .unwrap();
        let grads = out.total.backward().unwrap();
        assert!(grads.get(logits.as_tensor()).is_some(), "{}", loss.name());
        assert!(
            grads.get(pmf.as_tensor()).is_none(),
            "{}: gradient reached the target",
            loss.name()
        );
    }
    let kl = Kl
        .axis_parts(logits.as_tensor(), &targets[0], &axis)
        .unwrap();
    assert!(kl["ld"]
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(pmf.as_tensor())
        .is_none());
}

#[test]
fn logits_of_another_axis_length_are_refused_with_the_axis_named() {
    let axis = Axis::linear("x", 0.0, 4.0, 1.0).unwrap();
    let seven = matrix(&[vec![0.0; 7]]);
    let mut target = vec![0.0; 7];
    target[3] = 1.0;
    let targets = AxisTargets {
        pmf: matrix(&[target]),
        value: matrix(&[vec![3.0]]).squeeze(0).unwrap(),
        std: matrix(&[vec![1.0]]).squeeze(0).unwrap(),
    };
    for loss in both_paths() {
        let err = loss
            .axis_parts(&seven, &targets, &axis)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("axis `x`: logits have 7 bins, the axis has 5"),
            "{err}"
        );
    }
    let flat = Tensor::zeros(5, DType::F64, &Device::Cpu).unwrap();
    let err = FullKl::default()
        .axis_parts(&flat, &targets, &axis)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("axis `x`: logits have shape [5], expected (batch, 5)"),
        "{err}"
    );
}

#[test]
fn degenerate_linear_axes_are_refused() {
    let err = Axis::linear("x", 0.0, 1e-7, 1.0).unwrap_err().to_string();
    assert!(err.contains("less than one step"), "{err}");
    let err = Axis::linear("x", 0.0, 2e6 + 0.5, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a whole number of steps"), "{err}");
    assert_eq!(Axis::linear("x", 0.0, 2e6, 1.0).unwrap().len(), 2_000_001);
}

#[test]
fn mismatched_lengths_in_metrics_and_estimates_are_errors_not_panics() {
    let axis = Axis::linear("x", 0.0, 2.0, 1.0).unwrap();
    assert!(axis
        .estimate(&[0.2, 0.3, 0.4, 0.1])
        .unwrap_err()
        .to_string()
        .contains("4 entries for 3 bins"));
    assert!(axis.moments(&[1.0]).is_err());
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let pmf = matrix(&[vec![0.2, 0.5, 0.3], vec![0.3, 0.4, 0.3]]);
    let mut targets = vec![AxisTargets::from_pmf(&pmf, &axis).unwrap()];
    targets[0].std = targets[0].std.narrow(0, 0, 1).unwrap();
    let mut metrics = Metrics::new(&space);
    let err = metrics
        .update(&[pmf.log().unwrap()], &targets)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 stds"), "{err}");
    // A non-finite prediction names the axis and the row, and leaves the metrics untouched.
    let good = vec![AxisTargets::from_pmf(&pmf, &axis).unwrap()];
    let bad_logits = matrix(&[vec![0.0, 0.0, 0.0], vec![f64::NAN, 0.0, 0.0]]);
    let err = metrics
        .update(&[bad_logits], &good)
        .unwrap_err()
        .to_string();
    assert!(err.contains("axis `x`: batch row 1"), "{err}");
    assert_eq!(metrics.report().axes[0].samples, 0);
}

#[test]
fn a_sample_with_the_wrong_number_of_labels_is_named() {
    let space = LabelSpace::new(vec![
        Axis::linear("x", 0.0, 2.0, 1.0).unwrap(),
        Axis::linear("y", 0.0, 2.0, 1.0).unwrap(),
    ])
    .unwrap();
    let samples = vec![
        vec![Label::value(1.0), Label::value(1.0)],
        vec![Label::value(1.0)],
    ];
    let err = space
        .targets(&samples, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("sample 1: got 1 labels"), "{err}");
}

#[test]
fn the_composed_path_keeps_the_loss_properties() {
    // Invariance under a change of unit and non-negativity, through the tensor-op version
    // that devices other than the CPU use.
    let composed = FullKl::default().with_fused_cpu_kernel(false);
    let mut r = rng(13);
    let axis = |scale: f64, offset: f64| {
        Axis::linear("age", offset, 60.0 * scale + offset, scale).unwrap()
    };
    let labels = [(0.0, 2.0), (30.0, 3.5), (60.0, 1.5)];
    let z: Vec<Vec<f64>> = (0..3).map(|_| random_logits(&mut r, 61, 3.0)).collect();
    let total = |scale: f64, offset: f64| {
        let space = LabelSpace::new(vec![axis(scale, offset)]).unwrap();
        let samples: Vec<Vec<Label>> = labels
            .iter()
            .map(|(y, s)| vec![Label::value_with_std(y * scale + offset, s * scale)])
            .collect();
        let targets = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
        scalar(
            &composed
                .compute(&space, &[matrix(&z)], &targets)
                .unwrap()
                .total,
        )
    };
    assert_close(total(12.0, 0.0), total(1.0, 0.0), 1e-9, "months");
    assert_close(total(1.0, 500.0), total(1.0, 0.0), 1e-9, "offset");
    let circle = Axis::circular("a", 0.0, 360.0, 12.0).unwrap();
    let p: Vec<Vec<f64>> = (0..30).map(|_| random_pmf(&mut r, 30)).collect();
    let zz: Vec<Vec<f64>> = (0..30).map(|_| random_logits(&mut r, 30, 5.0)).collect();
    let targets = AxisTargets::from_pmf(&matrix(&p), &circle).unwrap();
    let parts = composed
        .axis_parts(&matrix(&zz), &targets, &circle)
        .unwrap();
    for t in [&parts["ld"], &parts["exp"], &parts["smooth"]] {
        assert!(to_vec(t).iter().all(|v| *v >= 0.0));
    }
}

const BDIMS: &str = include_str!("../configs/bdims.toml");

fn bdims_run(
    output: &std::path::Path,
    extra: &[&str],
) -> ldl::train::Result<ldl::train::RunSummary> {
    let mut overrides = vec![
        "optim.epochs=2".to_string(),
        format!("run.output_dir={:?}", output.display().to_string()),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let config = ldl::train::Config::parse(std::path::Path::new("q.toml"), BDIMS, &overrides)?;
    ldl::train::train(&config, &ldl::train::StopToken::new(), &mut |_| {})
}

#[test]
fn a_last_training_batch_of_one_sample_does_not_poison_batch_norm() {
    // 305 training samples in batches of 304 would leave one sample alone.
    let output = tempfile::tempdir().unwrap();
    let summary = bdims_run(output.path(), &["optim.batch_size=304"]).unwrap();
    let (vars, _) = ldl::models::Model::from_checkpoint(
        &summary.run_dir.join("checkpoints/last.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let vars = vars.vars().clone();
    for (name, var) in vars.data().lock().unwrap().iter() {
        let values = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{name} is not finite");
    }
}

#[test]
fn a_forged_checkpoint_header_is_refused_before_anything_is_allocated() {
    let output = tempfile::tempdir().unwrap();
    let summary = bdims_run(output.path(), &[]).unwrap();
    let bytes = std::fs::read(summary.run_dir.join("checkpoints/best.safetensors")).unwrap();
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + length]).unwrap();
    // Widths of 60000, and widths whose count of numbers does not fit in 128 bits (it
    // saturates rather than overflows).
    for widths in ["60000,60000", "18446744073709551615,18446744073709551615"] {
        let forged_header = header.replace(
            "\\\"hidden\\\":[128,128]",
            &format!("\\\"hidden\\\":[{widths}]"),
        );
        assert_ne!(
            forged_header, header,
            "the header mentions the hidden widths"
        );
        let mut forged = (forged_header.len() as u64).to_le_bytes().to_vec();
        forged.extend_from_slice(forged_header.as_bytes());
        forged.extend_from_slice(&bytes[8 + length..]);
        let path = output.path().join("forged.safetensors");
        std::fs::write(&path, forged).unwrap();
        let err = match ldl::models::Model::from_checkpoint(&path, &Device::Cpu) {
            Ok(_) => panic!("a forged checkpoint loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("the header describes a model of"),
            "{widths}: {err}"
        );
    }
}

#[test]
fn prediction_lines_are_file_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.csv");
    std::fs::write(&path, "a,b\n1,2\n\n3,4\n5,6\n").unwrap();
    let rows = ldl::data::read_feature_rows(&path, &["a".to_string(), "b".to_string()]).unwrap();
    let lines: Vec<usize> = rows.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, [2, 4, 5]);
    std::fs::write(&path, "a,b\n1,1e300\n").unwrap();
    let err = ldl::data::read_feature_rows(&path, &["a".to_string(), "b".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rows.csv:2: column `b`: 1e300 is too large"),
        "{err}"
    );
}

#[test]
fn configs_catch_silent_mistakes() {
    let pose = BDIMS
        .replace("name = \"height\"", "name = \"yaw\"")
        .replace("height = { value", "yaw = { value");
    let with_flip = pose.replace("[model]", "[data.augment]\nflip = true\n\n[model]");
    let err = ldl::train::Config::parse(std::path::Path::new("q.toml"), &with_flip, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`data.label_effects`") && err.contains("`yaw`"),
        "{err}"
    );
    let err = ldl::train::Config::parse(
        std::path::Path::new("q.toml"),
        BDIMS,
        &["model.backbone=tiny-age-net".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`model.backbone`: `tiny-age-net` reads images"),
        "{err}"
    );
}

#[test]
fn a_subject_in_two_column_splits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.csv");
    std::fs::write(
        &path,
        "x,age,person,fold\n1,30,p1,train\n2,31,p1,val\n3,32,p2,val\n",
    )
    .unwrap();
    let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap();
    let spec = ldl::data::TableSpec::new(ldl::data::InputColumns::Features(vec!["x".into()]))
        .with_label(
            "age",
            ldl::data::LabelColumns::Value {
                value: "age".into(),
                std: None,
            },
        )
        .with_group("person")
        .with_split("fold");
    let table = ldl::data::read_csv(&path, &spec, &space, ldl::data::OnBadSample::Error).unwrap();
    let err = ldl::data::split_by_column(table.samples, &ldl::data::SplitNames::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("subject `p1`"), "{err}");
}

/// Review findings on the CPU layers (conv, BatchNorm + ReLU, max-pool): each failed
/// before its fix.
#[test]
fn cpu_layers_handle_narrow_images_far_means_and_half_precision() {
    use ldl::models::{batch_norm_relu, conv2d, max_pool_2x2};

    // A kernel wider than the image with its padding: candle's answer, and gradients.
    for (h, w, k, p) in [(1, 1, 5, 2), (2, 1, 7, 3), (1, 2, 7, 3)] {
        let x = Var::from_tensor(&Tensor::ones((1, 2, h, w), DType::F64, &Device::Cpu).unwrap())
            .unwrap();
        let kernel = Tensor::arange(0.0, (3 * 2 * k * k) as f64, &Device::Cpu)
            .unwrap()
            .reshape((3, 2, k, k))
            .unwrap();
        let ours = conv2d(x.as_tensor(), &kernel, p).unwrap();
        let candle = x.as_tensor().conv2d(&kernel, p, 1, 1, 1).unwrap();
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            candle.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            "{h}×{w}, k {k}, p {p}"
        );
        let grads = ours.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
    }

    // Pooling a 1-pixel-high image is an error, not a panic.
    let thin = Tensor::zeros((1, 1, 1, 4), DType::F32, &Device::Cpu).unwrap();
    let err = max_pool_2x2(&thin).unwrap_err().to_string();
    assert!(err.contains("2×2"), "{err}");

    // Half precision takes candle's pool with a corrected gradient: values exact, no
    // overflow near the top of f16's range.
    let big = Tensor::new(&[20000f32, 30000., -5., 1.5], &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 2, 2))
        .unwrap();
    for dtype in [DType::F16, DType::BF16] {
        // 30000 as the dtype stores it (bf16 rounds it to 29952).
        let stored = Tensor::new(&[30000f32], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let pooled = max_pool_2x2(&big.to_dtype(dtype).unwrap()).unwrap();
        let value = pooled
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(value, stored, "{dtype:?}");
    }

    // A channel whose first value is far from its mean: the batch variance (seen in the
    // running variance with momentum 1) matches candle's two-pass BatchNorm.
    let n = 64 * 64;
    let mut values: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin()).collect();
    values[0] = 100.0;
    let x = Tensor::from_vec(values, (1, 1, 64, 64), &Device::Cpu).unwrap();
    let config = candle_nn::BatchNormConfig {
        momentum: 1.0,
        ..Default::default()
    };
    let running_var = |fused: bool| {
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let bn = candle_nn::batch_norm(1, config, vb).unwrap();
        if fused {
            batch_norm_relu(&bn, &x, true).unwrap();
        } else {
            use candle_nn::ModuleT;
            bn.forward_t(&x, true).unwrap();
        }
        bn.running_var().to_vec1::<f32>().unwrap()[0] as f64
    };
    let (ours, candle) = (running_var(true), running_var(false));
    assert!(
        ((ours - candle) / candle).abs() < 1e-5,
        "{ours} vs {candle}"
    );
}
