//! Autograd gradients of every loss term against central finite differences (f64).
//! The error is measured relative to the largest gradient entry; the bound is 1e-6.

mod common;

use candle_core::Tensor;
use common::*;
use ldl::loss::{DldlV2, FullKl, FullKlRelative, Loss, MeanVariance, TargetMoments};
use ldl::{Axis, AxisTargets, Label, LabelSpace};

const STEP: f64 = 1e-5;
const BOUND: f64 = 1e-6;

fn check_terms(axis: &Axis, p_rows: &[Vec<f64>], z_rows: &[Vec<f64>], label: &str) {
    let targets = AxisTargets::from_pmf(&matrix(p_rows), axis).unwrap();
    let loss = FullKl::default();
    let term = |name: &'static str| {
        let targets = targets.clone();
        let loss = loss.clone();
        move |z: &Tensor| {
            loss.axis_parts(z, &targets, axis).unwrap()[name]
                .sum_all()
                .unwrap()
        }
    };
    for name in ["ld", "exp", "smooth"] {
        let error = gradient_check(z_rows, term(name), STEP);
        assert!(error <= BOUND, "{label}: {name} gradient off by {error:e}");
    }
    let v2 = DldlV2::new(1.0).unwrap();
    let error = gradient_check(
        z_rows,
        |z| {
            v2.axis_parts(z, &targets, axis)
                .unwrap()
                .total()
                .unwrap()
                .sum_all()
                .unwrap()
        },
        STEP,
    );
    assert!(error <= BOUND, "{label}: dldl-v2 gradient off by {error:e}");
}

#[test]
fn full_kl_gradients_match_finite_differences_on_random_logits() {
    let mut r = rng(1);
    let axis = Axis::linear("age", 0.0, 20.0, 1.0).unwrap();
    let p: Vec<Vec<f64>> = (0..3).map(|_| random_pmf(&mut r, 21)).collect();
    let z: Vec<Vec<f64>> = (0..3).map(|_| random_logits(&mut r, 21, 3.0)).collect();
    check_terms(&axis, &p, &z, "linear");
}

#[test]
fn full_kl_gradients_match_near_the_grid_ends() {
    let axis = Axis::linear("age", 0.0, 30.0, 1.0).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let samples = vec![
        vec![Label::value_with_std(0.0, 2.0)],
        vec![Label::value_with_std(30.0, 1.0)],
        vec![Label::value_with_std(1.0, 3.0)],
    ];
    let targets = space
        .targets(&samples, candle_core::DType::F64, &candle_core::Device::Cpu)
        .unwrap();
    let p = targets[0].pmf.to_vec2::<f64>().unwrap();
    // Predictions piled up at the ends too.
    let z: Vec<Vec<f64>> = vec![
        (0..31).map(|k| -0.5 * k as f64).collect(),
        (0..31).map(|k| 0.4 * k as f64).collect(),
        (0..31).map(|k| -((k as f64 - 2.0).powi(2)) / 8.0).collect(),
    ];
    check_terms(&axis, &p, &z, "grid ends");
}

#[test]
fn full_kl_gradients_match_on_a_circular_axis() {
    let mut r = rng(2);
    let axis = Axis::circular("yaw", -180.0, 360.0, 15.0).unwrap();
    let p: Vec<Vec<f64>> = (0..3).map(|_| random_pmf(&mut r, 24)).collect();
    let mut z: Vec<Vec<f64>> = (0..3).map(|_| random_logits(&mut r, 24, 3.0)).collect();
    // A prediction straddling the wrap point.
    z[0] = (0..24)
        .map(|k| if !(3..=21).contains(&k) { 2.0 } else { -1.0 })
        .collect();
    check_terms(&axis, &p, &z, "circular");
}

#[test]
fn gradient_of_the_distribution_term_is_q_minus_p() {
    let mut r = rng(4);
    let axis = Axis::linear("x", 0.0, 6.0, 1.0).unwrap();
    let p = vec![random_pmf(&mut r, 7)];
    let z = vec![random_logits(&mut r, 7, 2.0)];
    let var = candle_core::Var::from_tensor(&matrix(&z)).unwrap();
    let targets = AxisTargets::from_pmf(&matrix(&p), &axis).unwrap();
    let parts = FullKl::default()
        .axis_parts(var.as_tensor(), &targets, &axis)
        .unwrap();
    let grads = parts["ld"].sum_all().unwrap().backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let q = softmax(&z[0]);
    for k in 0..7 {
        assert!((g[0][k] - (q[k] - p[0][k])).abs() < 1e-14);
    }
}

#[test]
fn expectation_gradient_matches_the_closed_form_of_loss_md() {
    // ∂L_exp/∂z_i = (μ_q − μ_p)/v_q · q_i (l_i − μ_q)
    //             + [1/(2 v_q) − (v_p + (μ_p − μ_q)²)/(2 v_q²)] · q_i ((l_i − μ_q)² − v_q)
    let mut r = rng(5);
    let axis = Axis::linear("x", 0.0, 9.0, 1.0).unwrap();
    let p = random_pmf(&mut r, 10);
    let z = random_logits(&mut r, 10, 2.0);
    let var = candle_core::Var::from_tensor(&matrix(std::slice::from_ref(&z))).unwrap();
    let targets = AxisTargets::from_pmf(&matrix(std::slice::from_ref(&p)), &axis).unwrap();
    let parts = FullKl::default()
        .axis_parts(var.as_tensor(), &targets, &axis)
        .unwrap();
    let grads = parts["exp"].sum_all().unwrap().backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let l = axis.centers();
    let q = softmax(&z);
    let (mp, vp) = mean_var(&p, l);
    let (mq, vq) = mean_var(&q, l);
    for i in 0..10 {
        let expected = (mq - mp) / vq * q[i] * (l[i] - mq)
            + (1.0 / (2.0 * vq) - (vp + (mp - mq).powi(2)) / (2.0 * vq * vq))
                * q[i]
                * ((l[i] - mq).powi(2) - vq);
        assert!(
            (g[0][i] - expected).abs() < 1e-13,
            "bin {i}: {} vs {expected}",
            g[0][i]
        );
    }
}

#[test]
fn loss_trait_gradients_match_for_every_loss_and_nominal_moments() {
    let mut r = rng(6);
    let axis = Axis::linear("age", 10.0, 40.0, 2.0).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let samples = vec![
        vec![Label::value_with_std(13.0, 2.5)],
        vec![Label::value_with_std(31.0, 4.0)],
    ];
    let targets = space
        .targets(&samples, candle_core::DType::F64, &candle_core::Device::Cpu)
        .unwrap();
    let z: Vec<Vec<f64>> = (0..2).map(|_| random_logits(&mut r, 16, 2.0)).collect();
    let losses: Vec<Box<dyn Loss>> = vec![
        Box::new(FullKl::default().with_target_moments(TargetMoments::Nominal)),
        Box::new(
            DldlV2::new(0.3)
                .unwrap()
                .with_target_moments(TargetMoments::Nominal),
        ),
        Box::new(MeanVariance::default()),
    ];
    for loss in losses {
        let error = gradient_check(
            &z,
            |t| {
                loss.compute(&space, std::slice::from_ref(t), &targets)
                    .unwrap()
                    .total
            },
            STEP,
        );
        assert!(error <= BOUND, "{}: gradient off by {error:e}", loss.name());
    }
}

/// Every term of `full-kl-rel` and its total, through the fused kernel and the composed
/// ops, against central differences.
fn check_relative_terms(axis: &Axis, p_rows: &[Vec<f64>], z_rows: &[Vec<f64>], label: &str) {
    let targets = AxisTargets::from_pmf(&matrix(p_rows), axis).unwrap();
    for fused in [true, false] {
        let loss = FullKlRelative::default().with_fused_cpu_kernel(fused);
        for name in ["ld", "exp", "smooth_rel"] {
            let error = gradient_check(
                z_rows,
                |z| {
                    loss.axis_parts(z, &targets, axis).unwrap()[name]
                        .sum_all()
                        .unwrap()
                },
                STEP,
            );
            assert!(
                error <= BOUND,
                "{label} fused={fused}: {name} gradient off by {error:e}"
            );
        }
    }
}

#[test]
fn full_kl_rel_gradients_match_finite_differences() {
    let mut r = rng(41);
    let linear = Axis::linear("age", 0.0, 20.0, 1.0).unwrap();
    let p: Vec<Vec<f64>> = (0..3).map(|_| random_pmf(&mut r, 21)).collect();
    let z: Vec<Vec<f64>> = (0..3).map(|_| random_logits(&mut r, 21, 3.0)).collect();
    check_relative_terms(&linear, &p, &z, "linear");

    let circular = Axis::circular("yaw", -180.0, 360.0, 15.0).unwrap();
    let p: Vec<Vec<f64>> = (0..3).map(|_| random_pmf(&mut r, 24)).collect();
    let z: Vec<Vec<f64>> = (0..3).map(|_| random_logits(&mut r, 24, 3.0)).collect();
    check_relative_terms(&circular, &p, &z, "circular");

    // Narrow Gaussian targets (tails underflowed to 0) near the ends, with predictions
    // rougher and smoother than the target, so that both sides of ρ = 1 are checked.
    let axis = Axis::linear("age", 0.0, 40.0, 1.0).unwrap();
    let p: Vec<Vec<f64>> = [(1.0, 1.0), (38.0, 2.0), (20.0, 0.3)]
        .iter()
        .map(|&(y, s)| axis.encode(&Label::value_with_std(y, s)).unwrap().pmf)
        .collect();
    let z: Vec<Vec<f64>> = [(2.0, 0.7), (36.0, 4.0), (20.5, 1.5)]
        .iter()
        .map(|&(y, s)| {
            (0..41)
                .map(|k| -((k as f64 - y) / s).powi(2) / 2.0)
                .collect()
        })
        .collect();
    check_relative_terms(&axis, &p, &z, "narrow targets");
}

#[test]
fn full_kl_rel_gradients_match_on_a_joint_group() {
    let mut r = rng(42);
    let yaw = Axis::circular("yaw", -180.0, 360.0, 60.0).unwrap();
    let pitch = Axis::linear("pitch", -20.0, 20.0, 10.0).unwrap();
    let space = LabelSpace::new(vec![yaw, pitch])
        .unwrap()
        .with_joint(&["yaw", "pitch"])
        .unwrap();
    let samples = vec![
        vec![
            Label::value_with_std(170.0, 50.0),
            Label::value_with_std(-15.0, 8.0),
        ],
        vec![
            Label::value_with_std(0.0, 70.0),
            Label::value_with_std(5.0, 12.0),
        ],
    ];
    let targets = space
        .targets(&samples, candle_core::DType::F64, &candle_core::Device::Cpu)
        .unwrap();
    let z: Vec<Vec<f64>> = (0..2).map(|_| random_logits(&mut r, 30, 2.0)).collect();
    let loss = FullKlRelative::default();
    for name in ["ld", "exp", "smooth_rel"] {
        let error = gradient_check(
            &z,
            |t| {
                let out = loss
                    .compute(&space, std::slice::from_ref(t), &targets)
                    .unwrap();
                let part = out.parts.iter().find(|p| p.component == name).unwrap();
                part.value.clone()
            },
            STEP,
        );
        assert!(error <= BOUND, "joint {name}: gradient off by {error:e}");
    }
}
