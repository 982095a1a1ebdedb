//! Properties of the losses: invariance under a change of unit, numerical stability at
//! the extremes, non-negativity, zeros where they belong, and the smoothness floor.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use ldl::loss::{AxisParts, DldlV2, FullKl, FullKlRelative, Kl, Loss, MeanVariance};
use ldl::{Axis, AxisTargets, Label, LabelSpace};

/// The full-KL loss of the same labels and logits on an axis re-expressed through
/// `x ↦ scale · x + offset`.
fn full_kl_in_unit(scale: f64, offset: f64, circular: bool) -> (f64, f64) {
    let mut r = rng(21);
    let (axis, labels): (Axis, Vec<(f64, f64)>) = if circular {
        // Degrees → another unit of the same circle (e.g. radians: scale = π/180).
        let axis =
            Axis::circular("yaw", -180.0 * scale + offset, 360.0 * scale, 10.0 * scale).unwrap();
        let labels = vec![(175.0, 12.0), (-60.0, 20.0), (3.0, 8.0)];
        (axis, labels)
    } else {
        // Years → months (scale 12) or an offset.
        let axis = Axis::linear("age", offset, 80.0 * scale + offset, scale).unwrap();
        let labels = vec![(0.0, 2.0), (23.5, 3.2), (61.0, 4.0)];
        (axis, labels)
    };
    let samples: Vec<Vec<Label>> = labels
        .iter()
        .map(|(y, s)| vec![Label::value_with_std(y * scale + offset, s * scale)])
        .collect();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let targets = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
    let z: Vec<Vec<f64>> = (0..3)
        .map(|_| random_logits(&mut r, axis.len(), 3.0))
        .collect();
    let full = FullKl::default()
        .compute(&space, &[matrix(&z)], &targets)
        .unwrap();
    let v2 = DldlV2::new(1.0)
        .unwrap()
        .compute(&space, &[matrix(&z)], &targets)
        .unwrap();
    (scalar(&full.total), scalar(&v2.total))
}

/// `full-kl-rel` of the same labels and logits as [`full_kl_in_unit`], with its
/// smoothness part on its own.
fn full_kl_rel_in_unit(scale: f64, offset: f64, circular: bool) -> (f64, f64) {
    let mut r = rng(21);
    let axis = if circular {
        Axis::circular("yaw", -180.0 * scale + offset, 360.0 * scale, 10.0 * scale).unwrap()
    } else {
        Axis::linear("age", offset, 80.0 * scale + offset, scale).unwrap()
    };
    let labels = if circular {
        [(175.0, 12.0), (-60.0, 20.0), (3.0, 8.0)]
    } else {
        [(0.0, 2.0), (23.5, 3.2), (61.0, 4.0)]
    };
    let samples: Vec<Vec<Label>> = labels
        .iter()
        .map(|(y, s)| vec![Label::value_with_std(y * scale + offset, s * scale)])
        .collect();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let targets = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
    let z: Vec<Vec<f64>> = (0..3)
        .map(|_| random_logits(&mut r, axis.len(), 3.0))
        .collect();
    let out = FullKlRelative::default()
        .compute(&space, &[matrix(&z)], &targets)
        .unwrap();
    let smooth = out
        .parts
        .iter()
        .find(|p| p.component == "smooth_rel")
        .unwrap();
    (scalar(&out.total), scalar(&smooth.value))
}

#[test]
fn full_kl_rel_is_invariant_under_a_change_of_unit() {
    let (years, smooth_years) = full_kl_rel_in_unit(1.0, 0.0, false);
    assert!(smooth_years > 1e-3, "the smoothness term takes part");
    for (scale, offset, what) in [
        (12.0, 0.0, "months"),
        (1.0, 1000.0, "offset"),
        (0.1, -3.0, "affine"),
    ] {
        let (total, smooth) = full_kl_rel_in_unit(scale, offset, false);
        assert_close(total, years, 1e-9, what);
        assert_close(smooth, smooth_years, 1e-9, what);
    }
    let (degrees, _) = full_kl_rel_in_unit(1.0, 0.0, true);
    let (radians, _) = full_kl_rel_in_unit(std::f64::consts::PI / 180.0, 0.0, true);
    assert_close(radians, degrees, 1e-9, "degrees → radians");
    let (shifted, _) = full_kl_rel_in_unit(1.0, 37.0, true);
    assert_close(shifted, degrees, 1e-9, "rotated origin");
}

/// The loss's total and its gradient with respect to the logits `z` (one sample).
fn total_and_gradient(
    loss: &dyn Loss,
    z: &[f64],
    target: &AxisTargets,
    axis: &Axis,
) -> (f64, Vec<f64>) {
    let var = Var::from_tensor(&matrix(&[z.to_vec()])).unwrap();
    let total = loss
        .axis_parts(var.as_tensor(), target, axis)
        .unwrap()
        .total()
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = total.backward().unwrap();
    (scalar(&total), to_vec(grads.get(var.as_tensor()).unwrap()))
}

#[test]
fn the_target_minimises_full_kl_rel_and_not_full_kl() {
    let mut r = rng(22);
    let cases = [
        (Axis::linear("x", 0.0, 40.0, 1.0).unwrap(), 20.0),
        (Axis::linear("x", 0.0, 40.0, 1.0).unwrap(), 2.0),
        (Axis::circular("a", 0.0, 360.0, 10.0).unwrap(), 350.0),
    ];
    for (axis, y) in cases {
        for s in [1.5, 2.0, 4.0] {
            let pmf = axis
                .encode(&Label::value_with_std(y, s * axis.step()))
                .unwrap()
                .pmf;
            let target = AxisTargets::from_pmf(&matrix(std::slice::from_ref(&pmf)), &axis).unwrap();
            let ideal: Vec<f64> = pmf.iter().map(|p| p.ln()).collect();
            let what = format!("{} y = {y} s = {s}", axis.name());
            for fused in [true, false] {
                let relative = FullKlRelative::default().with_fused_cpu_kernel(fused);
                let (at_target, gradient) = total_and_gradient(&relative, &ideal, &target, &axis);
                assert!(
                    at_target.abs() < 1e-12,
                    "{what}: value {at_target:e} at the target"
                );
                let worst = gradient.iter().fold(0.0f64, |m, g| m.max(g.abs()));
                assert!(
                    worst < 1e-10,
                    "{what} fused={fused}: gradient {worst:e} at the target"
                );
                // Every direction goes uphill: random ones, and the widening and
                // narrowing that the full-KL loss's smoothness term favours.
                let centred: Vec<f64> = ideal.iter().map(|l| l - ideal[0]).collect();
                let mut directions: Vec<Vec<f64>> = (0..20)
                    .map(|_| random_logits(&mut r, axis.len(), 1.0))
                    .collect();
                directions.push(centred.iter().map(|l| -0.05 * l).collect());
                directions.push(centred.iter().map(|l| 0.05 * l).collect());
                for direction in &directions {
                    let moved: Vec<f64> = ideal
                        .iter()
                        .zip(direction)
                        .map(|(a, b)| a + 0.1 * b)
                        .collect();
                    let (value, _) = total_and_gradient(&relative, &moved, &target, &axis);
                    assert!(
                        value > at_target,
                        "{what}: a step away lowers the loss to {value:e}"
                    );
                }
            }
            // The full-KL loss, by contrast, is not stationary at the target.
            let (_, gradient) = total_and_gradient(&FullKl::default(), &ideal, &target, &axis);
            let worst = gradient.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            assert!(
                worst > 1e-3,
                "{what}: full-kl's gradient at the target is {worst:e}"
            );
        }
    }
}

#[test]
fn full_kl_rel_is_non_negative_and_its_joint_form_reduces_to_one_axis() {
    let mut r = rng(23);
    for axis in [
        Axis::linear("x", 0.0, 30.0, 1.0).unwrap(),
        Axis::circular("a", 0.0, 360.0, 12.0).unwrap(),
    ] {
        let p: Vec<Vec<f64>> = (0..50).map(|_| random_pmf(&mut r, axis.len())).collect();
        let z: Vec<Vec<f64>> = (0..50)
            .map(|_| random_logits(&mut r, axis.len(), 6.0))
            .collect();
        let target = pmf_targets(&matrix(&p), &axis);
        let loss = FullKlRelative::default();
        let parts = loss.axis_parts(&matrix(&z), &target, &axis).unwrap();
        let min = to_vec(&parts["smooth_rel"])
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        assert!(min >= 0.0, "smooth_rel on {}: min {min}", axis.name());
        // A group of one axis is that axis: the same distribution and smoothness terms
        // (`exp` differs by design: a group adds its variance floor, an axis raises to it).
        let group = loss
            .group_parts(&matrix(&z), std::slice::from_ref(&target), &[&axis])
            .unwrap();
        for name in ["ld", "smooth_rel"] {
            for (a, b) in to_vec(&group[name]).iter().zip(to_vec(&parts[name])) {
                assert_close(*a, b, 1e-10, &format!("group of one, {name}"));
            }
        }
    }
}

#[test]
fn full_kl_is_invariant_under_a_change_of_unit_and_dldl_v2_is_not() {
    let (years, v2_years) = full_kl_in_unit(1.0, 0.0, false);
    for (scale, offset, what) in [
        (12.0, 0.0, "months"),
        (1.0, 1000.0, "offset"),
        (0.1, -3.0, "affine"),
    ] {
        let (full, v2) = full_kl_in_unit(scale, offset, false);
        assert_close(full, years, 1e-9, what);
        if scale != 1.0 {
            assert!(
                (v2 - v2_years).abs() > 0.1 * v2_years,
                "dldl-v2 should change ({what})"
            );
        }
    }
    let (degrees, v2_degrees) = full_kl_in_unit(1.0, 0.0, true);
    let (radians, v2_radians) = full_kl_in_unit(std::f64::consts::PI / 180.0, 0.0, true);
    assert_close(radians, degrees, 1e-9, "degrees → radians");
    let (shifted, _) = full_kl_in_unit(1.0, 37.0, true);
    assert_close(shifted, degrees, 1e-9, "rotated origin");
    assert!((v2_radians - v2_degrees).abs() > 0.1 * v2_degrees);
}

fn finite_everything(axis: &Axis, p: &[Vec<f64>], z: &[Vec<f64>], what: &str) {
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let targets = vec![AxisTargets::from_pmf(&matrix(p), axis).unwrap()];
    for dtype in [DType::F64, DType::F32] {
        let losses: Vec<Box<dyn Loss>> = vec![
            Box::new(FullKl::default()),
            Box::new(FullKlRelative::default()),
            Box::new(Kl),
            Box::new(DldlV2::new(1.0).unwrap()),
            Box::new(MeanVariance::default()),
        ];
        for loss in losses {
            let var = Var::from_tensor(&matrix(z).to_dtype(dtype).unwrap()).unwrap();
            let out = loss
                .compute(&space, &[var.as_tensor().clone()], &targets)
                .unwrap();
            for (key, value) in out.part_values().unwrap() {
                assert!(
                    value.is_finite(),
                    "{what} {dtype:?} {}: {key} = {value}",
                    loss.name()
                );
            }
            let grads = out.total.backward().unwrap();
            let g = grads
                .get(var.as_tensor())
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap();
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            assert!(
                g.iter().all(|x| x.is_finite()),
                "{what} {dtype:?} {}: non-finite gradient",
                loss.name()
            );
        }
    }
}

#[test]
fn huge_logits_give_finite_values_and_gradients() {
    let axis = Axis::linear("age", 0.0, 100.0, 1.0).unwrap();
    let p = vec![gaussian(&axis, 40.0, 3.0), gaussian(&axis, 0.0, 2.0)];
    let z = vec![
        (0..101).map(|k| if k == 90 { 1e4 } else { -1e4 }).collect(),
        (0..101)
            .map(|k| if k % 2 == 0 { 1e4 } else { -1e4 })
            .collect(),
    ];
    finite_everything(&axis, &p, &z, "±1e4 logits");
}

#[test]
fn exact_zeros_and_one_hot_targets_give_finite_values() {
    let axis = Axis::linear("x", 0.0, 9.0, 1.0).unwrap();
    let mut one_hot = vec![0.0; 10];
    one_hot[0] = 1.0;
    let mut sparse = vec![0.0; 10];
    sparse[4] = 0.5;
    sparse[6] = 0.5;
    let z = vec![vec![0.3; 10], (0..10).map(|k| k as f64).collect()];
    finite_everything(&axis, &[one_hot.clone(), sparse], &z, "zeros");
    // And with a prediction that is itself one-hot on the same bin: every term is 0.
    let z_one_hot: Vec<f64> = (0..10).map(|k| if k == 0 { 1e4 } else { -1e4 }).collect();
    let parts = full_kl_parts(&matrix(&[z_one_hot]), &matrix(&[one_hot]), &axis);
    assert_eq!(to_vec(&parts["ld"])[0], 0.0);
    assert_eq!(to_vec(&parts["exp"])[0], 0.0);
}

#[test]
fn two_bins_and_a_61_by_61_grid_give_finite_values() {
    let two = Axis::linear("x", 0.0, 1.0, 1.0).unwrap();
    finite_everything(
        &two,
        &[vec![0.3, 0.7], vec![1.0, 0.0]],
        &[vec![2.0, -1.0], vec![0.0, 0.0]],
        "K = 2",
    );
    let big = Axis::linear("cell", 0.0, 3720.0, 1.0).unwrap();
    let mut r = rng(8);
    let p = vec![gaussian(&big, 1800.0, 30.0), random_pmf(&mut r, 3721)];
    let z = vec![
        random_logits(&mut r, 3721, 5.0),
        random_logits(&mut r, 3721, 50.0),
    ];
    finite_everything(&big, &p, &z, "K = 3721");
}

#[test]
fn every_term_is_non_negative_on_random_inputs() {
    let mut r = rng(9);
    for axis in [
        Axis::linear("x", 0.0, 30.0, 1.0).unwrap(),
        Axis::circular("a", 0.0, 360.0, 12.0).unwrap(),
    ] {
        let p: Vec<Vec<f64>> = (0..50).map(|_| random_pmf(&mut r, axis.len())).collect();
        let z: Vec<Vec<f64>> = (0..50)
            .map(|_| random_logits(&mut r, axis.len(), 6.0))
            .collect();
        let parts = full_kl_parts(&matrix(&z), &matrix(&p), &axis);
        for (name, t) in [
            ("ld", &parts["ld"]),
            ("exp", &parts["exp"]),
            ("smooth", &parts["smooth"]),
        ] {
            let min = to_vec(t).into_iter().fold(f64::INFINITY, f64::min);
            assert!(min >= 0.0, "{name} on {}: min {min}", axis.name());
        }
    }
}

#[test]
fn distribution_and_expectation_terms_vanish_at_q_equal_p() {
    let mut r = rng(10);
    for axis in [
        Axis::linear("x", 0.0, 40.0, 1.0).unwrap(),
        Axis::circular("a", -180.0, 360.0, 10.0).unwrap(),
    ] {
        let p: Vec<Vec<f64>> = (0..20).map(|_| random_pmf(&mut r, axis.len())).collect();
        let z: Vec<Vec<f64>> = p
            .iter()
            .map(|row| row.iter().map(|x| x.ln()).collect())
            .collect();
        let parts = full_kl_parts(&matrix(&z), &matrix(&p), &axis);
        for (name, t) in [("ld", &parts["ld"]), ("exp", &parts["exp"])] {
            let max = to_vec(t).into_iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert!(max < 1e-12, "{name} on {}: {max}", axis.name());
        }
    }
}

#[test]
fn smoothness_at_q_equal_p_is_about_one_over_two_s_squared() {
    let axis = Axis::linear("age", 0.0, 100.0, 1.0).unwrap();
    for s in [2.0, 3.0, 5.0, 8.0] {
        let p = gaussian(&axis, 50.0, s);
        let z: Vec<f64> = p.iter().map(|x| x.ln()).collect();
        let parts = full_kl_parts(&matrix(&[z]), &matrix(&[p]), &axis);
        let smooth = to_vec(&parts["smooth"])[0];
        let predicted = 1.0 / (2.0 * s * s);
        assert!(
            (smooth - predicted).abs() <= 0.1 * predicted,
            "s = {s}: smooth {smooth} vs 1/(2s²) = {predicted}"
        );
    }
}

fn gaussian(axis: &Axis, y: f64, s: f64) -> Vec<f64> {
    axis.encode(&Label::value_with_std(y, s)).unwrap().pmf
}

#[test]
fn the_loss_of_a_batch_is_the_mean_of_its_samples() {
    let axis = Axis::linear("x", 0.0, 9.0, 1.0).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let mut r = rng(12);
    let p: Vec<Vec<f64>> = (0..4).map(|_| random_pmf(&mut r, 10)).collect();
    let z: Vec<Vec<f64>> = (0..4).map(|_| random_logits(&mut r, 10, 2.0)).collect();
    let targets = vec![AxisTargets::from_pmf(&matrix(&p), &axis).unwrap()];
    let batch = FullKl::default()
        .compute(&space, &[matrix(&z)], &targets)
        .unwrap();
    let mut sum = 0.0;
    for i in 0..4 {
        let one = vec![AxisTargets::from_pmf(&matrix(&p[i..i + 1]), &axis).unwrap()];
        sum += scalar(
            &FullKl::default()
                .compute(&space, &[matrix(&z[i..i + 1])], &one)
                .unwrap()
                .total,
        );
    }
    assert_close(scalar(&batch.total), sum / 4.0, 1e-12, "batch mean");
    let _: &Tensor = &batch.parts[0].per_sample;
    assert_eq!(batch.parts[0].per_sample.dims(), [4]);
}

/// The full-KL components of one axis for logits and target distributions.
fn full_kl_parts(logits: &Tensor, pmf: &Tensor, axis: &Axis) -> AxisParts {
    FullKl::default()
        .axis_parts(logits, &pmf_targets(pmf, axis), axis)
        .unwrap()
}
