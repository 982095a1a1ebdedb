//! Axes, label spaces, target encoding and decoding.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use ldl::{Axis, AxisKind, AxisTargets, Label, LabelSpace, OutOfRange, PositiveStd};

#[test]
fn linear_axes_have_the_centres_they_promise() {
    let age = Axis::linear("age", 0.0, 100.0, 1.0)
        .unwrap()
        .with_unit("years");
    assert_eq!(age.len(), 101);
    assert_eq!(age.centers()[0], 0.0);
    assert_eq!(age.centers()[100], 100.0);
    assert_eq!(age.step(), 1.0);
    assert_eq!(age.default_std(), Some(2.0));
    assert_eq!(age.unit(), "years");
    let pitch = Axis::linear("pitch", -60.0, 60.0, 3.0).unwrap();
    assert_eq!(pitch.len(), 41);
    assert_eq!(pitch.centers()[20], 0.0);
    let fine = Axis::linear("w", 0.0, 1.0, 0.1).unwrap();
    assert_eq!(fine.len(), 11);
    let explicit = Axis::from_centers("x", vec![0.0, 1.0, 3.0, 6.0]).unwrap();
    assert_eq!(explicit.step(), 2.0);
}

#[test]
fn invalid_axes_are_refused_with_the_axis_and_value_named() {
    let message = |r: Result<Axis, ldl::CoreError>| r.unwrap_err().to_string();
    let m = message(Axis::linear("age", 10.0, 10.0, 1.0));
    assert!(m.contains("age") && m.contains("min must be < max"), "{m}");
    let m = message(Axis::linear("age", 0.0, 10.0, 0.0));
    assert!(
        m.contains("age") && m.contains("step must be > 0, got 0"),
        "{m}"
    );
    let m = message(Axis::linear("age", 0.0, 10.0, -1.0));
    assert!(m.contains("got -1"), "{m}");
    let m = message(Axis::linear("age", 0.0, 10.0, 3.0));
    assert!(m.contains("not a whole number of steps"), "{m}");
    let m = message(Axis::linear("age", f64::NAN, 10.0, 1.0));
    assert!(m.contains("min must be finite"), "{m}");
    let m = message(Axis::from_centers("x", vec![0.0, 2.0, 1.0]));
    assert!(m.contains("strictly increasing"), "{m}");
    let m = message(Axis::circular("yaw", 0.0, 360.0, 7.0));
    assert!(m.contains("yaw") && m.contains("whole number"), "{m}");
    let m = message(Axis::categorical("emotion", ["a", "a"]));
    assert!(m.contains("appears twice"), "{m}");
    let m = PositiveStd::new(0.0).unwrap_err().to_string();
    assert!(m.contains("a std must be finite and > 0, got 0"), "{m}");
    let m = Axis::linear("age", 0.0, 1e9, 1e-3).unwrap_err().to_string();
    assert!(m.contains("too many"), "{m}");
}

#[test]
fn gaussian_targets_are_normalised_discretised_gaussians() {
    let axis = Axis::linear("x", 0.0, 4.0, 1.0).unwrap();
    let target = axis.encode(&Label::value_with_std(1.5, 0.8)).unwrap();
    let w: Vec<f64> = (0..5)
        .map(|k| (-(k as f64 - 1.5).powi(2) / (2.0 * 0.64)).exp())
        .collect();
    let s: f64 = w.iter().sum();
    for (a, b) in target.pmf.iter().zip(&w) {
        assert_close(*a, b / s, 1e-14, "pmf");
    }
    assert_eq!((target.value, target.std), (1.5, 0.8));
    // No std: the axis default (2 bins), or the one set.
    let default = axis.encode(&Label::value(2.0)).unwrap();
    assert_eq!(default.std, 2.0);
    let axis = axis.with_default_std(PositiveStd::new(0.5).unwrap());
    assert_eq!(axis.encode(&Label::value(2.0)).unwrap().std, 0.5);
    // A std far below the bin width gives the nearest bin, not 0/0.
    let sharp = axis.encode(&Label::value_with_std(2.2, 1e-9)).unwrap();
    assert_eq!(sharp.pmf, vec![0.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn circular_targets_wrap_around() {
    let yaw = Axis::circular("yaw", -180.0, 360.0, 10.0).unwrap();
    assert_eq!(yaw.len(), 36);
    let target = yaw.encode(&Label::value_with_std(175.0, 10.0)).unwrap();
    // 175° is 5° from both 170° (bin 35) and −180° (bin 0): equal mass, wrapped.
    assert_close(target.pmf[0], target.pmf[35], 1e-12, "wrap symmetry");
    assert_close(target.pmf[1], target.pmf[34], 1e-12, "wrap symmetry");
    // Values outside one period wrap into it.
    let again = yaw
        .encode(&Label::value_with_std(175.0 - 720.0, 10.0))
        .unwrap();
    assert_eq!(again.value, 175.0);
    for (a, b) in target.pmf.iter().zip(&again.pmf) {
        assert_close(*a, *b, 1e-12, "one period later");
    }
    assert_eq!(yaw.difference(179.0, -179.0), -2.0);
    assert_eq!(yaw.difference(-179.0, 179.0), 2.0);
}

#[test]
fn out_of_range_values_follow_the_axis_policy() {
    let age = Axis::linear("age", 0.0, 100.0, 1.0)
        .unwrap()
        .with_unit("years");
    let err = age.encode(&Label::value(104.0)).unwrap_err().to_string();
    assert!(
        err.contains("age") && err.contains("104") && err.contains("clamp"),
        "{err}"
    );
    let clamped = age.clone().with_out_of_range(OutOfRange::Clamp);
    let target = clamped.encode(&Label::value(104.0)).unwrap();
    assert_eq!(target.value, 100.0);
    assert_eq!(
        target.pmf,
        clamped.encode(&Label::value(100.0)).unwrap().pmf
    );
    for bad in [f64::NAN, f64::INFINITY] {
        let err = age.encode(&Label::value(bad)).unwrap_err().to_string();
        assert!(err.contains("not finite"), "{err}");
    }
    for bad_std in [0.0, -1.0, f64::NAN] {
        let err = age
            .encode(&Label::value_with_std(30.0, bad_std))
            .unwrap_err()
            .to_string();
        assert!(err.contains("std must be finite and > 0"), "{err}");
    }
}

#[test]
fn explicit_distributions_are_validated() {
    let axis = Axis::linear("x", 0.0, 3.0, 1.0).unwrap();
    let ok = axis
        .encode(&Label::Distribution(vec![0.1, 0.2, 0.3, 0.4]))
        .unwrap();
    assert_close(ok.value, 2.0, 1e-12, "mean");
    assert_close(ok.std, 1.0, 1e-12, "std");
    let err = |pmf: Vec<f64>| {
        axis.encode(&Label::Distribution(pmf))
            .unwrap_err()
            .to_string()
    };
    assert!(err(vec![0.5, 0.5]).contains("2 entries, but the axis has 4 bins"));
    assert!(err(vec![0.5, 0.5, 0.5, 0.5]).contains("sums to 2"));
    assert!(err(vec![-0.1, 0.5, 0.3, 0.3]).contains("entry 0 is -0.1"));
    assert!(err(vec![f64::NAN, 0.5, 0.3, 0.2]).contains("entry 0 is NaN"));
    // Within 1e-4 of 1 is accepted (and renormalised).
    let near = axis
        .encode(&Label::Distribution(vec![0.25, 0.25, 0.25, 0.25005]))
        .unwrap();
    assert_close(near.pmf.iter().sum::<f64>(), 1.0, 1e-15, "renormalised");
}

#[test]
fn categorical_axes_take_classes() {
    let emotion = Axis::categorical("emotion", ["happy", "sad", "angry"]).unwrap();
    assert!(matches!(emotion.kind(), AxisKind::Categorical { .. }));
    assert_eq!(
        emotion.encode(&Label::Class(1)).unwrap().pmf,
        vec![0.0, 1.0, 0.0]
    );
    assert!(emotion
        .encode(&Label::Class(3))
        .unwrap_err()
        .to_string()
        .contains("3 classes"));
    assert!(emotion.encode(&Label::value(1.0)).is_err());
    let age = Axis::linear("age", 0.0, 10.0, 1.0).unwrap();
    assert!(age.encode(&Label::Class(1)).is_err());
    let estimate = emotion.estimate(&[0.2, 0.5, 0.3]).unwrap();
    let class = estimate.as_class().unwrap();
    assert_eq!(
        (class.index, class.name.as_str(), class.probability),
        (1, "sad", 0.5)
    );
    assert!(estimate.as_value().is_none());
}

#[test]
fn estimates_give_mean_std_and_mode_in_the_axis_unit() {
    let axis = Axis::linear("weight", 40.0, 48.0, 2.0).unwrap();
    let estimate = axis.estimate(&[0.0, 0.25, 0.5, 0.25, 0.0]).unwrap();
    let value = estimate.as_value().unwrap();
    assert_close(value.mean, 44.0, 1e-12, "mean");
    // Variance = 0.25·4 + 0.25·4 = 2 kg².
    assert_close(value.std, 2f64.sqrt(), 1e-12, "std");
    assert_eq!(
        (value.mode, value.mode_index, value.mode_probability),
        (44.0, 2, 0.5)
    );
    assert_eq!(
        (estimate.mode_index(), estimate.mode_probability()),
        (2, 0.5)
    );
    // Circular: mass on 350° and 10° has its mean at 0°, not 180°.
    let angle = Axis::circular("angle", 0.0, 360.0, 10.0).unwrap();
    let mut pmf = vec![0.0; 36];
    pmf[35] = 0.5;
    pmf[1] = 0.5;
    let estimate = angle.estimate(&pmf).unwrap();
    let value = estimate.as_value().unwrap();
    assert!(value.mean.abs() < 1e-9 || (value.mean - 360.0).abs() < 1e-9);
    assert_close(value.std, 10.0, 1e-9, "circular std");
}

#[test]
fn label_spaces_encode_batches_and_decode_logits() {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0)
            .unwrap()
            .with_unit("years"),
        Axis::circular("yaw", -180.0, 360.0, 3.0)
            .unwrap()
            .with_unit("degrees"),
    ])
    .unwrap();
    assert_eq!(space.index_of("yaw"), Some(1));
    assert!(space.axis("pitch").is_none());
    let samples = vec![
        vec![Label::value_with_std(30.0, 3.0), Label::value(45.0)],
        vec![Label::value_with_std(70.0, 5.0), Label::value(-170.0)],
    ];
    let targets = space.targets(&samples, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(targets[0].pmf.dims(), [2, 101]);
    assert_eq!(targets[1].pmf.dims(), [2, 120]);
    assert_eq!(targets[1].batch_size(), 2);
    // Decoding the targets' own logs gives back the label values.
    let logits: Vec<Tensor> = targets.iter().map(|t| t.pmf.log().unwrap()).collect();
    // `[sample][axis]`, like the labels.
    let decoded = space.decode_logits(&logits).unwrap();
    let mean = |sample: usize, axis: usize| decoded[sample][axis].as_value().unwrap().mean;
    assert!((mean(0, 0) - 30.0).abs() < 1e-3);
    assert!((mean(1, 0) - 70.0).abs() < 1e-3);
    assert!((mean(0, 1) - 45.0).abs() < 1e-3);
    assert!((mean(1, 1) + 170.0).abs() < 1e-3); // canonical period [−180, 180)
    assert!((decoded[1][0].as_value().unwrap().std - 5.0).abs() < 1e-3);
    // A bad sample is named.
    let bad = vec![
        samples[0].clone(),
        vec![Label::value(130.0), Label::value(0.0)],
    ];
    let err = space
        .targets(&bad, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("sample 1: axis `age`"), "{err}");
    let err = space.encode(&[Label::value(3.0)]).unwrap_err().to_string();
    assert!(
        err.contains("1 labels for a label space of 2 axes (age, yaw)"),
        "{err}"
    );
}

#[test]
fn label_spaces_refuse_duplicates_and_emptiness() {
    let a = Axis::linear("a", 0.0, 1.0, 1.0).unwrap();
    assert!(LabelSpace::new(vec![]).is_err());
    let err = LabelSpace::new(vec![a.clone(), a]).unwrap_err().to_string();
    assert!(err.contains("two axes are named `a`"), "{err}");
}

#[test]
fn axes_and_label_spaces_round_trip_through_json() {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0)
            .unwrap()
            .with_unit("years")
            .with_default_std(PositiveStd::new(3.0).unwrap()),
        Axis::circular("yaw", -180.0, 360.0, 3.0)
            .unwrap()
            .with_out_of_range(OutOfRange::Clamp),
        Axis::categorical("emotion", ["a", "b", "c"]).unwrap(),
        Axis::from_centers("dose", vec![0.0, 0.5, 2.0]).unwrap(),
    ])
    .unwrap();
    let json = serde_json::to_string(&space).unwrap();
    let back: LabelSpace = serde_json::from_str(&json).unwrap();
    assert_eq!(back, space);
    // A tampered record is validated on the way in.
    let tampered = json.replace("\"default_std\":3.0", "\"default_std\":-3.0");
    let err = serde_json::from_str::<LabelSpace>(&tampered)
        .unwrap_err()
        .to_string();
    assert!(err.contains("default std must be finite and > 0"), "{err}");
    // Categorical axes were once written with a default std, which they never used.
    let old = r#"{"name":"c","kind":"categorical","classes":["a","b"],"centers":[0.0,1.0],"default_std":2.0}"#;
    let back: Axis = serde_json::from_str(old).unwrap();
    assert_eq!(back, Axis::categorical("c", ["a", "b"]).unwrap());
    // Uneven centres without a std set keep the default that follows the bin width.
    let dose: Axis =
        serde_json::from_str(&serde_json::to_string(&space.axes()[3]).unwrap()).unwrap();
    assert_eq!(
        (dose.default_std(), dose.default_std_at(1.5)),
        (None, Some(3.0))
    );
}

#[test]
fn targets_from_pmf_keep_the_tensor_and_derive_the_moments() {
    let axis = Axis::linear("x", 0.0, 2.0, 1.0).unwrap();
    let p = matrix(&[vec![0.2, 0.5, 0.3]]);
    let t = AxisTargets::from_pmf(&p, &axis).unwrap();
    assert_close(to_vec(&t.value)[0], 1.1, 1e-12, "value");
    assert_close(to_vec(&t.std)[0], 0.7, 1e-12, "std");
}

#[test]
fn named_bins_make_the_axes_of_the_positional_constructors() {
    use ldl::{CircularBins, LinearBins};
    let bins = LinearBins {
        min: 0.0,
        max: 360.0,
        step: 10.0,
    };
    let linear = Axis::linear_bins("a", bins).unwrap();
    assert_eq!(linear, Axis::linear("a", 0.0, 360.0, 10.0).unwrap());
    let bins = CircularBins {
        start: 0.0,
        period: 360.0,
        step: 10.0,
    };
    let circular = Axis::circular_bins("a", bins).unwrap();
    assert_eq!(circular, Axis::circular("a", 0.0, 360.0, 10.0).unwrap());
    // The same three numbers: both ends are centres on a line, one turn on a circle.
    assert_eq!((linear.len(), circular.len()), (37, 36));
    let bins = LinearBins {
        min: 0.0,
        max: 10.0,
        step: 3.0,
    };
    let m = Axis::linear_bins("age", bins).unwrap_err().to_string();
    assert!(m.contains("age") && m.contains("not a whole number"), "{m}");
}

#[test]
fn default_stds_are_two_bins_two_local_bin_widths_or_none() {
    let std = |s: f64| PositiveStd::new(s).unwrap();
    let age = Axis::linear("age", 0.0, 100.0, 0.5).unwrap();
    assert_eq!(age.default_std(), Some(1.0));
    assert_eq!(age.default_std_at(37.3), Some(1.0));
    let yaw = Axis::circular("yaw", -180.0, 360.0, 3.0).unwrap();
    assert_eq!(yaw.default_std(), Some(6.0));
    let emotion = Axis::categorical("emotion", ["a", "b", "c"]).unwrap();
    assert_eq!(emotion.default_std(), None);
    assert_eq!(emotion.default_std_at(1.0), None);
    assert_eq!(emotion.clone().with_default_std(std(2.0)), emotion);
    // Uneven centres 0, 1, 3, 7: edges −0.5, 0.5, 2, 5, 9, bin widths 1, 1.5, 3, 4.
    let dose = Axis::from_centers("dose", vec![0.0, 1.0, 3.0, 7.0]).unwrap();
    assert!(!dose.is_evenly_spaced());
    assert_eq!(dose.default_std(), None);
    for (value, expected) in [(-5.0, 2.0), (0.2, 2.0), (1.0, 3.0), (2.0, 6.0), (6.0, 8.0)] {
        assert_eq!(dose.default_std_at(value), Some(expected), "at {value}");
    }
    assert_eq!(dose.encode(&Label::value(3.0)).unwrap().std, 6.0);
    let dose = dose.with_default_std(std(0.5));
    assert_eq!(dose.default_std_at(6.0), Some(0.5));
    assert_eq!(dose.encode(&Label::value(6.0)).unwrap().std, 0.5);
}

#[test]
fn evenly_spaced_explicit_centres_keep_the_linear_axis_targets() {
    let centres: Vec<f64> = (0..=100).map(|i| i as f64 * 0.1).collect();
    let explicit = Axis::from_centers("x", centres).unwrap();
    let linear = Axis::linear("x", 0.0, 10.0, 0.1).unwrap();
    assert!(explicit.is_evenly_spaced());
    assert_eq!(explicit, linear);
    let label = Label::value_with_std(3.37, 0.4);
    assert_eq!(
        explicit.encode(&label).unwrap(),
        linear.encode(&label).unwrap()
    );
}

/// The Gaussian `N(value, std²)`'s mass over `[a, b]`, by Simpson's rule on its density.
fn gaussian_mass(a: f64, b: f64, value: f64, std: f64) -> f64 {
    let n = 2000;
    let h = (b - a) / n as f64;
    let density = |x: f64| (-(x - value).powi(2) / (2.0 * std * std)).exp();
    let inner: f64 = (1..n)
        .map(|i| density(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
        .sum();
    (density(a) + inner + density(b)) * h / 3.0 / (std * (2.0 * std::f64::consts::PI).sqrt())
}

/// The bin-mass target written out: edges at the midpoints, the outer ones half a
/// spacing out, masses renormalised over the axis.
fn reference_bin_mass(centres: &[f64], value: f64, std: f64) -> Vec<f64> {
    let k = centres.len();
    let mut edges = vec![centres[0] - (centres[1] - centres[0]) / 2.0];
    edges.extend((1..k).map(|i| (centres[i - 1] + centres[i]) / 2.0));
    edges.push(centres[k - 1] + (centres[k - 1] - centres[k - 2]) / 2.0);
    let mass: Vec<f64> = (0..k)
        .map(|i| gaussian_mass(edges[i], edges[i + 1], value, std))
        .collect();
    let total: f64 = mass.iter().sum();
    mass.iter().map(|m| m / total).collect()
}

fn log_spaced(first: f64, last: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| first * (last / first).powf(i as f64 / (count - 1) as f64))
        .collect()
}

#[test]
fn uneven_targets_are_the_gaussian_mass_of_each_bin() {
    let centres = vec![0.0, 1.0, 3.0, 7.0, 8.0, 12.0];
    let axis = Axis::from_centers("x", centres.clone()).unwrap();
    for (value, std) in [(4.2, 2.5), (0.0, 1.0), (11.5, 0.7), (7.5, 30.0)] {
        let target = axis.encode(&Label::value_with_std(value, std)).unwrap();
        let expected = reference_bin_mass(&centres, value, std);
        for (k, (p, e)) in target.pmf.iter().zip(&expected).enumerate() {
            // Far-out bins hold masses near 1e-60, where Simpson's rule is only good to
            // about 1e-9 of the mass.
            let tolerance = 1e-13 + 1e-8 * e;
            assert!(
                (p - e).abs() <= tolerance,
                "bin {k} of {value} ± {std}: {p} vs {e}"
            );
        }
        assert_eq!((target.value, target.std), (value, std));
    }
    // A std far below the bin width gives the bin the value lies in.
    let sharp = axis.encode(&Label::value_with_std(5.2, 1e-9)).unwrap();
    assert_eq!(sharp.pmf, vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn uneven_targets_keep_their_mean_on_the_value() {
    let mean = |axis: &Axis, value: f64, std: f64| {
        let target = axis.encode(&Label::value_with_std(value, std)).unwrap();
        axis.moments(&target.pmf).unwrap().unwrap().0
    };
    // A fine log grid: a label well inside has its mean within 1e-3 std of the value (the
    // density at the centres would move it by about −std²/value = −0.1).
    let fine = Axis::from_centers("x", log_spaced(1.0, 100.0, 401)).unwrap();
    for value in [5.0, 10.0, 30.0] {
        assert_close(
            mean(&fine, value, 1.0),
            value,
            1e-3 / value,
            "fine log grid",
        );
    }
    // Income on 41 log-spaced centres from 5,000 to 500,000 USD: 40,000 ± 6,000 had a
    // target mean of 39,054 as the density at the centres.
    let centres = log_spaced(5_000.0, 500_000.0, 41);
    let density: Vec<f64> = centres
        .iter()
        .map(|c| (-(c - 40_000.0f64).powi(2) / (2.0 * 6_000.0f64.powi(2))).exp())
        .collect();
    let total: f64 = density.iter().sum();
    let density_mean: f64 = density
        .iter()
        .zip(&centres)
        .map(|(d, c)| d * c)
        .sum::<f64>()
        / total;
    assert!((density_mean - 39_054.0).abs() < 1.0, "{density_mean}");
    let income = Axis::from_centers("income", centres).unwrap();
    let income_mean = mean(&income, 40_000.0, 6_000.0);
    assert!((income_mean - 40_000.0).abs() < 100.0, "{income_mean}");
}
