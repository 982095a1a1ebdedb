//! Metrics against values computed by hand and with PyLDL's definitions.

mod common;

use candle_core::{DType, Device};
use common::*;
use ldl::metrics::{self, AxisMetrics, LdlMeasures, Metrics};
use ldl::{Axis, AxisTargets, Label, LabelSpace};

// Two fixed pairs (target u, prediction v) on bins 0, 1, 2, 3. Expected LDL measures
// computed in Python with PyLDL's definitions (clip to [2.22e-16, 1] for Clark, Canberra
// and KL; natural log; intersection as 1 − ½ Σ|u − v|):
//   pair 1: u = (0.1, 0.2, 0.3, 0.4), v = (0.25, 0.25, 0.25, 0.25)
//   pair 2: u = (0, 0.5, 0.5, 0),     v = (0.1, 0.2, 0.3, 0.4)
const U1: [f64; 4] = [0.1, 0.2, 0.3, 0.4];
const V1: [f64; 4] = [0.25, 0.25, 0.25, 0.25];
const U2: [f64; 4] = [0.0, 0.5, 0.5, 0.0];
const V2: [f64; 4] = [0.1, 0.2, 0.3, 0.4];
const PAIR1: [f64; 6] = [
    0.15000000000000002,
    0.5074820677421427,
    0.8613608613608614,
    0.10644013528622315,
    0.9128709291752768,
    0.8,
];
const PAIR2: [f64; 6] = [
    0.4,
    1.4987239470255167,
    2.678571428571423,
    0.7135581778200577,
    0.6454972243679027,
    0.5,
];

fn as_array(m: &LdlMeasures) -> [f64; 6] {
    [
        m.chebyshev,
        m.clark,
        m.canberra,
        m.kl_divergence,
        m.cosine,
        m.intersection,
    ]
}

#[test]
fn ldl_measures_follow_pyldl() {
    for (u, v, expected) in [(U1, V1, PAIR1), (U2, V2, PAIR2)] {
        let got = as_array(&LdlMeasures::between(&u, &v));
        for (name, (g, e)) in [
            "chebyshev",
            "clark",
            "canberra",
            "kl",
            "cosine",
            "intersection",
        ]
        .iter()
        .zip(got.iter().zip(expected))
        {
            assert_close(*g, e, 1e-12, name);
        }
    }
    // Identical distributions: distances 0, similarities 1.
    assert_eq!(metrics::chebyshev(&U1, &U1), 0.0);
    assert_eq!(metrics::kl_divergence(&U1, &U1), 0.0);
    assert_close(metrics::cosine(&U1, &U1), 1.0, 1e-15, "cosine");
    assert_close(metrics::intersection(&U1, &U1), 1.0, 1e-15, "intersection");
}

#[test]
fn axis_metrics_accumulate_mae_epsilon_cs_and_std() {
    let axis = Axis::linear("x", 0.0, 3.0, 1.0).unwrap().with_unit("years");
    let space = LabelSpace::new(vec![axis.clone()]).unwrap();
    let targets = vec![AxisTargets::from_pmf(&matrix(&[U1.to_vec(), U2.to_vec()]), &axis).unwrap()];
    let logits = matrix(&[
        V1.iter().map(|x| x.ln()).collect(),
        V2.iter().map(|x| x.ln()).collect(),
    ]);
    let mut metrics = Metrics::new(&space)
        .with_cs_thresholds("x", vec![0.49, 0.51, 1.0])
        .unwrap();
    metrics.update(&[logits], &targets).unwrap();
    let report = metrics.report();
    let x = report.axis("x").unwrap();
    assert_eq!((x.samples, x.unit.as_str()), (2, "years"));
    // Targets: u1 has mean 2, std 1; u2 has mean 1.5, std 0.5.
    // Predictions: v1 has mean 1.5, std √1.25; v2 has mean 2, std 1. Both 0.5 off.
    assert_close(x.mae.unwrap(), 0.5, 1e-12, "mae");
    let epsilon = ((1.0 - (-0.125f64).exp()) + (1.0 - (-0.5f64).exp())) / 2.0;
    assert_close(x.epsilon_error.unwrap(), epsilon, 1e-12, "epsilon error");
    let shares: Vec<f64> = x.cumulative_scores.iter().map(|c| c.share).collect();
    assert_eq!(shares, [0.0, 1.0, 1.0]);
    assert_close(
        x.mean_predicted_std.unwrap(),
        (1.25f64.sqrt() + 1.0) / 2.0,
        1e-12,
        "std",
    );
    assert_eq!(x.accuracy, None);
    let mean: Vec<f64> = PAIR1
        .iter()
        .zip(PAIR2)
        .map(|(a, b)| (a + b) / 2.0)
        .collect();
    for (g, e) in as_array(&x.ldl).iter().zip(mean) {
        assert_close(*g, e, 1e-9, "mean of ldl measures");
    }
}

#[test]
fn mae_is_wrap_aware_on_circular_axes() {
    let yaw = Axis::circular("yaw", -180.0, 360.0, 1.0).unwrap();
    let mut metrics = AxisMetrics::new(&yaw);
    let mut predicted = vec![0.0; 360];
    predicted[359] = 1.0; // all mass on 179°
    let target = yaw.encode(&Label::value_with_std(-179.0, 2.0)).unwrap();
    metrics
        .update(&predicted, &target.pmf, target.value, target.std)
        .unwrap();
    assert_close(metrics.report().mae.unwrap(), 2.0, 1e-9, "179° vs −179°");
}

#[test]
fn categorical_axes_report_accuracy() {
    let axis = Axis::categorical("emotion", ["happy", "sad", "calm"]).unwrap();
    let space = LabelSpace::new(vec![axis]).unwrap();
    let targets = space
        .targets(
            &[
                vec![Label::Class(0)],
                vec![Label::Class(2)],
                vec![Label::Class(1)],
            ],
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
    let logits = matrix(&[
        vec![2.0, 0.0, 0.0],
        vec![0.0, 0.0, 1.0],
        vec![0.0, 0.0, 3.0],
    ]);
    let mut metrics = Metrics::new(&space);
    metrics.update(&[logits], &targets).unwrap();
    let report = metrics.report();
    let e = report.axis("emotion").unwrap();
    assert_close(e.accuracy.unwrap(), 2.0 / 3.0, 1e-12, "accuracy");
    assert_eq!((e.mae, e.epsilon_error), (None, None));
    assert!(e.cumulative_scores.is_empty());
}

#[test]
fn default_cs_thresholds_are_three_five_and_eight_bins() {
    let axis = Axis::linear("yaw", -90.0, 90.0, 3.0).unwrap();
    let report = AxisMetrics::new(&axis).report();
    let thresholds: Vec<f64> = report
        .cumulative_scores
        .iter()
        .map(|c| c.threshold)
        .collect();
    assert_eq!(thresholds, [9.0, 15.0, 24.0]);
    assert_eq!(report.mae, None); // nothing seen yet
}

#[test]
fn bad_predictions_and_options_are_refused() {
    let axis = Axis::linear("x", 0.0, 3.0, 1.0).unwrap();
    let mut metrics = AxisMetrics::new(&axis);
    let err = metrics
        .update(&[0.5, 0.5], &U1, 2.0, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prediction of 2 bins"), "{err}");
    let err = metrics
        .update(&[f64::NAN, 0.5, 0.25, 0.25], &U1, 2.0, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-finite entry at bin 0"), "{err}");
    assert!(AxisMetrics::new(&axis)
        .with_cs_thresholds(vec![-1.0])
        .is_err());
    let space = LabelSpace::new(vec![axis]).unwrap();
    assert!(Metrics::new(&space)
        .with_cs_thresholds("nope", vec![1.0])
        .is_err());
}
