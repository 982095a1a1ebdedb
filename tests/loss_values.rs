//! Loss values against closed forms on small axes (K = 3..5) and against an independent
//! scalar reference on random inputs.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use ldl::loss::{DldlV2, FullKl, FullKlRelative, Kl, Loss, MeanVariance, TargetMoments};
use ldl::{Axis, AxisTargets, Label, LabelSpace};

// Case A: axis 0, 1, 2; p = (0.2, 0.5, 0.3); logits (0.1, 0.7, −0.4). Expected values
// computed independently in Python with plain floats:
//   q = softmax(z); ld = Σ p ln(p/q); μ_p = 1.1, v_p = 0.49;
//   μ_q = Σ q l, v_q = Σ q (l − μ_q)²; exp = ½ ln(v_q/v_p) + (v_p + (μ_p − μ_q)²)/(2 v_q) − ½;
//   a = q[1:]/Σq[1:], b = q[:-1]/Σq[:-1]; smooth = ½ Σ (a − b)(ln a − ln b).
const A_LD: f64 = 0.052513426165822066;
const A_EXP: f64 = 0.05201419996979828;
const A_SMOOTH: f64 = 0.33652895004777605;
const A_L1: f64 = 0.21475927908813697; // |μ_p − μ_q| with μ_q = 0.8852407209118631
const A_MV_SOFTMAX: f64 = 0.6321664402303956; // −ln q_1 (the bin nearest y = μ_p = 1.1)
const A_MV_MEAN: f64 = 0.023060773977228152; // ½ (μ_q − 1.1)²
const A_MV_VARIANCE: f64 = 0.4553910862124121; // v_q

fn case_a() -> (Axis, Tensor, Tensor) {
    let axis = Axis::linear("x", 0.0, 2.0, 1.0).unwrap();
    let p = matrix(&[vec![0.2, 0.5, 0.3]]);
    let z = matrix(&[vec![0.1, 0.7, -0.4]]);
    (axis, z, p)
}

#[test]
fn full_kl_terms_match_the_closed_form_on_three_bins() {
    let (axis, z, p) = case_a();
    let parts = FullKl::default()
        .axis_parts(&z, &pmf_targets(&p, &axis), &axis)
        .unwrap();
    assert_close(to_vec(&parts["ld"])[0], A_LD, 1e-12, "ld");
    assert_close(to_vec(&parts["exp"])[0], A_EXP, 1e-12, "exp");
    assert_close(to_vec(&parts["smooth"])[0], A_SMOOTH, 1e-12, "smooth");
    assert_close(
        to_vec(&parts.total().unwrap())[0],
        A_LD + A_EXP + A_SMOOTH,
        1e-12,
        "sum",
    );
}

#[test]
fn dldl_v2_terms_match_the_closed_form_on_three_bins() {
    let (axis, z, p) = case_a();
    let parts = DldlV2::new(0.7)
        .unwrap()
        .axis_parts(&z, &pmf_targets(&p, &axis), &axis)
        .unwrap();
    assert_close(to_vec(&parts["ld"])[0], A_LD, 1e-12, "ld");
    assert_close(to_vec(&parts["l1"])[0], A_L1, 1e-12, "l1");
    assert_close(
        to_vec(&parts.total().unwrap())[0],
        A_LD + 0.7 * A_L1,
        1e-12,
        "total",
    );
    assert!(DldlV2::new(-1.0).is_err());
    assert!(DldlV2::new(f64::NAN).is_err());
}

#[test]
fn every_loss_matches_the_closed_form_through_the_loss_trait() {
    let (axis, z, p) = case_a();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let targets = vec![AxisTargets::from_pmf(&p, &axis).unwrap()];
    let logits = [z];

    let full = FullKl::default()
        .compute(&space, &logits, &targets)
        .unwrap();
    assert_close(
        scalar(&full.total),
        A_LD + A_EXP + A_SMOOTH,
        1e-12,
        "full-kl",
    );
    let keys: Vec<String> = full.parts.iter().map(|p| p.key()).collect();
    assert_eq!(keys, ["x/ld", "x/exp", "x/smooth"]);

    let kl = Kl.compute(&space, &logits, &targets).unwrap();
    assert_close(scalar(&kl.total), A_LD, 1e-12, "kl");

    let v2 = DldlV2::new(2.0)
        .unwrap()
        .compute(&space, &logits, &targets)
        .unwrap();
    assert_close(scalar(&v2.total), A_LD + 2.0 * A_L1, 1e-12, "dldl-v2");
    assert_eq!(v2.parts[1].weight, 2.0);
    assert_close(
        scalar(&v2.parts[1].value),
        A_L1,
        1e-12,
        "dldl-v2 l1 part is unweighted",
    );

    let mv = MeanVariance::default()
        .compute(&space, &logits, &targets)
        .unwrap();
    let expected = A_MV_SOFTMAX + 0.2 * A_MV_MEAN + 0.05 * A_MV_VARIANCE;
    assert_close(scalar(&mv.total), expected, 1e-12, "mean-variance");
    let values = mv.part_values().unwrap();
    assert_eq!(values[0].0, "x/softmax");
    assert_close(values[1].1, A_MV_MEAN, 1e-12, "mean part");
    assert_close(values[2].1, A_MV_VARIANCE, 1e-12, "variance part");
}

// Case B: a circular axis of four bins at 0°, 90°, 180°, 270°; p = (0.1, 0.2, 0.3, 0.4),
// logits (0.3, −0.2, 0.5, 0.1). The target's circular mean is 225° (atan2(−0.2, −0.2));
// offsets wrapped around it are (135, −135, −45, 45)° = (1.5, −1.5, −0.5, 0.5) bins, and
// the shift is a rotation. Expected values from the same Python script.
#[test]
fn full_kl_terms_match_the_closed_form_on_a_circular_axis() {
    let axis = Axis::circular("angle", 0.0, 360.0, 90.0).unwrap();
    let p = matrix(&[vec![0.1, 0.2, 0.3, 0.4]]);
    let z = matrix(&[vec![0.3, -0.2, 0.5, 0.1]]);
    let targets = pmf_targets(&p, &axis);
    let parts = FullKl::default().axis_parts(&z, &targets, &axis).unwrap();
    assert_close(to_vec(&parts["ld"])[0], 0.13395859810904093, 1e-12, "ld");
    assert_close(to_vec(&parts["exp"])[0], 0.03787692059044412, 1e-12, "exp");
    assert_close(
        to_vec(&parts["smooth"])[0],
        0.11304410713795948,
        1e-12,
        "smooth",
    );
    let v2 = DldlV2::new(1.0)
        .unwrap()
        .axis_parts(&z, &targets, &axis)
        .unwrap();
    assert_close(
        to_vec(&v2["l1"])[0],
        18.59729743936663,
        1e-11,
        "l1 in degrees",
    );
}

// Case C: five bins 10, 12, …, 18 and a Gaussian label y = 13, s = 1.5, with nominal
// moments: then μ_p = y and v_p = s², and L_exp has the closed form with those.
#[test]
fn nominal_target_moments_use_the_label_value_and_std() {
    let axis = Axis::linear("x", 10.0, 18.0, 2.0).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let targets = space
        .targets(
            &[vec![Label::value_with_std(13.0, 1.5)]],
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
    let z_row = vec![0.2, 1.1, 0.9, -0.3, -1.0];
    let z = matrix(std::slice::from_ref(&z_row));
    // Closed form of the target: p_k ∝ exp(−(l_k − 13)² / (2 · 1.5²)).
    let weights: Vec<f64> = axis
        .centers()
        .iter()
        .map(|l| (-(l - 13.0f64).powi(2) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let p: Vec<f64> = weights.iter().map(|w| w / total).collect();
    let target_pmf = targets[0].pmf.to_vec2::<f64>().unwrap()[0].clone();
    for (a, b) in target_pmf.iter().zip(&p) {
        assert_close(*a, *b, 1e-14, "gaussian target");
    }
    let q = softmax(&z_row);
    let mu_q: f64 = q.iter().zip(axis.centers()).map(|(a, l)| a * l).sum();
    let v_q: f64 = q
        .iter()
        .zip(axis.centers())
        .map(|(a, l)| a * (l - mu_q).powi(2))
        .sum();
    let (mu_p, v_p) = (13.0, 1.5 * 1.5);
    let expected = 0.5 * (v_q / v_p).ln() + (v_p + (mu_p - mu_q).powi(2)) / (2.0 * v_q) - 0.5;
    let loss = FullKl::default().with_target_moments(TargetMoments::Nominal);
    let parts = loss.axis_parts(&z, &targets[0], &axis).unwrap();
    assert_close(to_vec(&parts["exp"])[0], expected, 1e-12, "nominal exp");

    let v2 = DldlV2::new(1.0)
        .unwrap()
        .with_target_moments(TargetMoments::Nominal)
        .axis_parts(&z, &targets[0], &axis)
        .unwrap();
    assert_close(
        to_vec(&v2["l1"])[0],
        (mu_q - 13.0).abs(),
        1e-12,
        "nominal l1",
    );
}

#[test]
fn nominal_moments_leave_a_floor_at_the_axis_end_and_pmf_moments_do_not() {
    // LOSS.md: with y = 0, s = 2 on 0..100 the truncated target's moments differ from
    // (y, s²), so the nominal L_exp at q = p is about 0.79; with pmf moments it is 0.
    let axis = Axis::linear("age", 0.0, 100.0, 1.0).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let targets = space
        .targets(
            &[vec![Label::value_with_std(0.0, 2.0)]],
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
    let z = targets[0].pmf.log().unwrap();
    let pmf = FullKl::default()
        .axis_parts(&z, &targets[0], &axis)
        .unwrap();
    assert!(to_vec(&pmf["exp"])[0].abs() < 1e-12);
    let nominal = FullKl::default()
        .with_target_moments(TargetMoments::Nominal)
        .axis_parts(&z, &targets[0], &axis)
        .unwrap();
    let floor = to_vec(&nominal["exp"])[0];
    assert!((floor - 0.79).abs() < 0.01, "nominal floor {floor}");
}

#[test]
fn categorical_axes_get_the_distribution_term_alone() {
    let axis = Axis::categorical("emotion", ["happy", "sad", "angry", "calm"]).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let p_row = vec![0.1, 0.6, 0.2, 0.1];
    let z_row = vec![0.5, 1.5, -0.5, 0.0];
    let targets = space
        .targets(
            &[vec![Label::Distribution(p_row.clone())]],
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
    let z = matrix(std::slice::from_ref(&z_row));
    let q = softmax(&z_row);
    let ld: f64 = p_row.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
    let cross_entropy: f64 = -p_row.iter().zip(&q).map(|(p, q)| p * q.ln()).sum::<f64>();
    for loss in [
        Box::new(FullKl::default()) as Box<dyn Loss>,
        Box::new(Kl),
        Box::new(DldlV2::new(5.0).unwrap()),
    ] {
        let out = loss
            .compute(&space, std::slice::from_ref(&z), &targets)
            .unwrap();
        assert_eq!(out.parts.len(), 1, "{}", loss.name());
        assert_eq!(out.parts[0].key(), "emotion/ld");
        assert_close(scalar(&out.total), ld, 1e-12, loss.name());
    }
    let mv = MeanVariance::default()
        .compute(&space, &[z], &targets)
        .unwrap();
    assert_eq!(mv.parts.len(), 1);
    assert_close(
        scalar(&mv.total),
        cross_entropy,
        1e-12,
        "mean-variance on classes",
    );
}

#[test]
fn losses_sum_over_axes_without_weights_and_average_over_the_batch() {
    let mut r = rng(7);
    let age = Axis::linear("age", 0.0, 10.0, 1.0).unwrap();
    let yaw = Axis::circular("yaw", -180.0, 360.0, 30.0).unwrap();
    let space = LabelSpace::new(vec![age.clone(), yaw.clone()]).unwrap();
    let samples = vec![
        vec![
            Label::value_with_std(3.0, 1.0),
            Label::value_with_std(170.0, 20.0),
        ],
        vec![
            Label::value_with_std(7.5, 1.5),
            Label::value_with_std(-100.0, 25.0),
        ],
        vec![
            Label::value_with_std(0.0, 0.7),
            Label::value_with_std(0.0, 40.0),
        ],
    ];
    let targets = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
    let logits: Vec<Vec<Vec<f64>>> = space
        .axes()
        .iter()
        .map(|a| {
            (0..3)
                .map(|_| random_logits(&mut r, a.len(), 3.0))
                .collect()
        })
        .collect();
    let tensors: Vec<Tensor> = logits.iter().map(|rows| matrix(rows)).collect();
    let out = FullKl::default()
        .compute(&space, &tensors, &targets)
        .unwrap();
    let mut expected = 0.0;
    for (a, axis) in space.axes().iter().enumerate() {
        let pmfs = targets[a].pmf.to_vec2::<f64>().unwrap();
        let values = to_vec(&targets[a].value);
        for s in 0..3 {
            let (ld, exp, smooth) = reference_full_kl(
                &pmfs[s],
                &logits[a][s],
                axis.centers(),
                axis.step(),
                axis.period(),
                values[s],
                1e-3,
            );
            expected += (ld + exp + smooth) / 3.0;
        }
    }
    assert_close(scalar(&out.total), expected, 1e-12, "total over two axes");
    let keys: Vec<String> = out.parts.iter().map(|p| p.key()).collect();
    assert_eq!(
        keys,
        [
            "age/ld",
            "age/exp",
            "age/smooth",
            "yaw/ld",
            "yaw/exp",
            "yaw/smooth"
        ]
    );
}

#[test]
fn full_kl_matches_the_scalar_reference_on_random_inputs() {
    let mut r = rng(11);
    for &(k, period) in &[
        (3, None),
        (4, None),
        (5, None),
        (37, None),
        (5, Some(5.0)),
        (24, Some(24.0)),
    ] {
        let axis = match period {
            None => Axis::linear("x", 0.0, (k - 1) as f64, 1.0).unwrap(),
            Some(p) => Axis::circular("x", 0.0, p, 1.0).unwrap(),
        };
        let p_rows: Vec<Vec<f64>> = (0..6).map(|_| random_pmf(&mut r, k)).collect();
        let z_rows: Vec<Vec<f64>> = (0..6).map(|_| random_logits(&mut r, k, 4.0)).collect();
        let targets = AxisTargets::from_pmf(&matrix(&p_rows), &axis).unwrap();
        let parts = FullKl::default()
            .axis_parts(&matrix(&z_rows), &targets, &axis)
            .unwrap();
        let centres = to_vec(&targets.value);
        let (ld, exp, smooth) = (
            to_vec(&parts["ld"]),
            to_vec(&parts["exp"]),
            to_vec(&parts["smooth"]),
        );
        for s in 0..6 {
            let reference = reference_full_kl(
                &p_rows[s],
                &z_rows[s],
                axis.centers(),
                1.0,
                period,
                centres[s],
                1e-3,
            );
            assert_close(ld[s], reference.0, 1e-10, &format!("ld K={k} {period:?}"));
            assert_close(exp[s], reference.1, 1e-10, &format!("exp K={k} {period:?}"));
            assert_close(
                smooth[s],
                reference.2,
                1e-10,
                &format!("smooth K={k} {period:?}"),
            );
        }
        let kl = Kl.axis_parts(&matrix(&z_rows), &targets, &axis).unwrap();
        for (a, b) in to_vec(&kl["ld"]).iter().zip(&ld) {
            assert_close(*a, *b, 1e-12, "Kl's ld part equals the full-KL ld part");
        }
    }
}

/// `full-kl-rel`'s parts of `p_rows`, `z_rows` against the scalar reference, through the
/// fused kernel and the composed ops alike.
fn check_full_kl_rel(axis: &Axis, p_rows: &[Vec<f64>], z_rows: &[Vec<f64>], what: &str) {
    let period = axis.period();
    let targets = AxisTargets::from_pmf(&matrix(p_rows), axis).unwrap();
    let centres = to_vec(&targets.value);
    for fused in [true, false] {
        let parts = FullKlRelative::default()
            .with_fused_cpu_kernel(fused)
            .axis_parts(&matrix(z_rows), &targets, axis)
            .unwrap();
        let got = [
            to_vec(&parts["ld"]),
            to_vec(&parts["exp"]),
            to_vec(&parts["smooth_rel"]),
        ];
        for s in 0..p_rows.len() {
            let r = reference_full_kl_relative(
                &p_rows[s],
                &z_rows[s],
                axis.centers(),
                axis.step(),
                period,
                centres[s],
                1e-3,
                1e-6,
            );
            for (name, value, expected) in [
                ("ld", got[0][s], r.0),
                ("exp", got[1][s], r.1),
                ("smooth_rel", got[2][s], r.2),
            ] {
                let label = format!("{what} {name} row {s} fused={fused}");
                assert!(
                    (value - expected).abs() <= 1e-12 * expected.abs().max(1.0),
                    "{label}: got {value:e}, expected {expected:e}"
                );
            }
        }
    }
}

#[test]
fn full_kl_rel_matches_the_scalar_reference() {
    let mut r = rng(31);
    for &(k, period) in &[
        (3, None),
        (5, None),
        (37, None),
        (5, Some(5.0)),
        (24, Some(24.0)),
    ] {
        let axis = match period {
            None => Axis::linear("x", 0.0, (k - 1) as f64, 1.0).unwrap(),
            Some(p) => Axis::circular("x", 0.0, p, 1.0).unwrap(),
        };
        let p: Vec<Vec<f64>> = (0..6).map(|_| random_pmf(&mut r, k)).collect();
        let z: Vec<Vec<f64>> = (0..6).map(|_| random_logits(&mut r, k, 4.0)).collect();
        check_full_kl_rel(&axis, &p, &z, &format!("K={k} {period:?}"));
    }
    // Gaussian targets whose tails underflowed to exact zeros (σ = 1 bin on 121 bins), one
    // at an end of the axis, and a one-hot target; near-Gaussian predictions.
    let axis = Axis::linear("x", 0.0, 120.0, 1.0).unwrap();
    let p: Vec<Vec<f64>> = [(60.0, 1.0), (0.0, 2.0), (90.0, 5.0)]
        .iter()
        .map(|&(y, s)| axis.encode(&Label::value_with_std(y, s)).unwrap().pmf)
        .chain(std::iter::once(
            (0..121).map(|k| f64::from(k == 30)).collect(),
        ))
        .collect();
    assert!(
        p[0].contains(&0.0),
        "the σ = 1 target has underflowed tails"
    );
    let z: Vec<Vec<f64>> = [60.3, 1.0, 88.0, 30.0]
        .iter()
        .map(|y| {
            (0..121)
                .map(|k| -((k as f64 - y) / 2.5).powi(2) / 2.0)
                .collect()
        })
        .collect();
    check_full_kl_rel(&axis, &p, &z, "Gaussian targets");
}

#[test]
fn full_kl_rel_differs_from_full_kl_in_its_smoothness_term_alone() {
    let mut r = rng(32);
    let axis = Axis::linear("x", 0.0, 20.0, 1.0).unwrap();
    let p: Vec<Vec<f64>> = (0..4).map(|_| random_pmf(&mut r, 21)).collect();
    let z: Vec<Vec<f64>> = (0..4).map(|_| random_logits(&mut r, 21, 3.0)).collect();
    let targets = AxisTargets::from_pmf(&matrix(&p), &axis).unwrap();
    let full = FullKl::default()
        .axis_parts(&matrix(&z), &targets, &axis)
        .unwrap();
    let relative = FullKlRelative::default()
        .axis_parts(&matrix(&z), &targets, &axis)
        .unwrap();
    assert_eq!(relative.keys(), ["ld", "exp", "smooth_rel"]);
    for name in ["ld", "exp"] {
        assert_eq!(to_vec(&full[name]), to_vec(&relative[name]), "{name}");
    }
    // ½ (ρ − ln ρ − 1) with ρ = S(q)/S(p), S(q) being the full-KL loss's own term.
    for (s, row) in p.iter().enumerate() {
        let ratio = to_vec(&full["smooth"])[s] / reference_roughness(row, false);
        let expected = 0.5 * (ratio - ratio.ln() - 1.0);
        assert_close(
            to_vec(&relative["smooth_rel"])[s],
            expected,
            1e-12,
            "smooth_rel",
        );
    }
}

#[test]
fn f32_and_f64_give_the_same_losses() {
    let mut r = rng(3);
    let axis = Axis::linear("age", 0.0, 100.0, 1.0).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let samples: Vec<Vec<Label>> = (0..8)
        .map(|i| vec![Label::value_with_std(5.0 + 11.0 * i as f64, 3.0)])
        .collect();
    let z: Vec<Vec<f64>> = (0..8).map(|_| random_logits(&mut r, 101, 3.0)).collect();
    let t64 = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
    let t32 = space.targets(&samples, DType::F32, &Device::Cpu).unwrap();
    let z64 = matrix(&z);
    let z32 = z64.to_dtype(DType::F32).unwrap();
    for loss in [
        Box::new(FullKl::default()) as Box<dyn Loss>,
        Box::new(Kl),
        Box::new(DldlV2::new(1.0).unwrap()),
        Box::new(MeanVariance::default()),
    ] {
        let a = loss
            .compute(&space, std::slice::from_ref(&z64), &t64)
            .unwrap();
        let b = loss
            .compute(&space, std::slice::from_ref(&z32), &t32)
            .unwrap();
        assert_eq!(b.total.dtype(), DType::F32);
        assert_close(scalar(&b.total), scalar(&a.total), 1e-5, loss.name());
    }
}

#[test]
fn mismatched_shapes_are_refused_with_the_axis_named() {
    let axis = Axis::linear("age", 0.0, 10.0, 1.0).unwrap();
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let targets = space
        .targets(&[vec![Label::value(3.0)]], DType::F32, &Device::Cpu)
        .unwrap();
    let wrong = Tensor::zeros((1, 7), DType::F32, &Device::Cpu).unwrap();
    let err = FullKl::default()
        .compute(&space, &[wrong], &targets)
        .unwrap_err()
        .to_string();
    assert!(err.contains("age") && err.contains("11"), "{err}");
    let err = FullKl::default()
        .compute(&space, &[], &targets)
        .unwrap_err()
        .to_string();
    assert!(err.contains("0 logits"), "{err}");
    // An empty batch has no mean.
    let empty = space.targets(&[], DType::F32, &Device::Cpu).unwrap();
    let none = Tensor::zeros((0, 11), DType::F32, &Device::Cpu).unwrap();
    let err = FullKl::default()
        .compute(&space, &[none], &empty)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the batch is empty"), "{err}");
    // A target row that is not a distribution is refused when its targets are built.
    let bad = matrix(&[vec![0.5; 11]]);
    let err = AxisTargets::from_pmf(&bad, &axis)
        .and_then(|targets| {
            FullKl::default().axis_parts(&matrix(&[vec![0.0; 11]]), &targets, &axis)
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("sums to 5.5"), "{err}");
}
