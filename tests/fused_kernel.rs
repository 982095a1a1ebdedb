//! The fused CPU kernel of the full-KL loss against the composed tensor-op version that
//! other devices use: same values, same gradients, in f64 and f32, for every option.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use ldl::loss::{FullKl, Loss, TargetMoments};
use ldl::{Axis, Label, LabelSpace};

fn space() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::circular("yaw", -180.0, 360.0, 6.0).unwrap(),
        Axis::linear("pitch", -60.0, 60.0, 3.0).unwrap(),
        Axis::categorical("emotion", ["a", "b", "c"]).unwrap(),
    ])
    .unwrap()
}

fn samples(batch: usize) -> Vec<Vec<Label>> {
    (0..batch)
        .map(|i| {
            let t = i as f64;
            vec![
                Label::value_with_std((t * 13.7) % 100.0, 1.0 + (t % 4.0)),
                Label::value_with_std(-180.0 + (t * 47.0) % 360.0, 10.0),
                Label::value_with_std(-60.0 + (t * 17.0) % 120.0, 0.01 + t % 3.0),
                Label::Class(i % 3),
            ]
        })
        .collect()
}

/// Loss value and gradients (one vector per axis) of a FullKl configuration.
fn run(loss: &FullKl, dtype: DType, logits: &[Vec<Vec<f64>>]) -> (f64, Vec<Vec<f64>>) {
    let space = space();
    let targets = space
        .targets(&samples(logits[0].len()), dtype, &Device::Cpu)
        .unwrap();
    let vars: Vec<Var> = logits
        .iter()
        .map(|rows| Var::from_tensor(&matrix(rows).to_dtype(dtype).unwrap()).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = loss.compute(&space, &tensors, &targets).unwrap();
    let grads = out.total.backward().unwrap();
    let gradients = vars
        .iter()
        .map(|v| to_vec(&grads.get(v.as_tensor()).unwrap().flatten_all().unwrap()))
        .collect();
    (scalar(&out.total), gradients)
}

#[test]
fn fused_and_composed_versions_agree() {
    let mut r = rng(31);
    let space = space();
    let batch = 9;
    let mut logits: Vec<Vec<Vec<f64>>> = space
        .axes()
        .iter()
        .map(|a| {
            (0..batch)
                .map(|_| random_logits(&mut r, a.len(), 4.0))
                .collect()
        })
        .collect();
    // Extremes: a collapsed prediction (v_q under the floor) and huge logits.
    logits[0][0] = (0..101).map(|k| if k == 7 { 1e4 } else { -1e4 }).collect();
    logits[2][1] = (0..41).map(|k| if k == 40 { 50.0 } else { 0.0 }).collect();
    for moments in [TargetMoments::Pmf, TargetMoments::Nominal] {
        let fused = FullKl::default().with_target_moments(moments);
        let composed = fused.clone().with_fused_cpu_kernel(false);
        let (truth_value, truth) = run(&composed, DType::F64, &logits);
        // The kernel accumulates in f64 whatever the input dtype, so even its f32 results
        // are held to the f64 composed version (the composed f32 version itself is off by
        // up to ~1e-2 on the extreme rows above).
        for (dtype, tolerance) in [(DType::F64, 1e-11), (DType::F32, 1e-6)] {
            let (value, gradients) = run(&fused, dtype, &logits);
            assert_close(
                value,
                truth_value,
                tolerance,
                &format!("{moments:?} {dtype:?} value"),
            );
            for (axis, (g, t)) in space.axes().iter().zip(gradients.iter().zip(&truth)) {
                let scale = t.iter().fold(1e-12f64, |m, x| m.max(x.abs()));
                let worst = g
                    .iter()
                    .zip(t)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() / scale));
                assert!(
                    worst <= tolerance,
                    "{moments:?} {dtype:?} {}: gradients differ by {worst:e}",
                    axis.name()
                );
            }
        }
    }
}
