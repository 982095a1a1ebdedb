//! The synthetic face generator: deterministic, labelled within its ranges, and showing
//! what it claims (pose and age change the picture).

use ldl::data::{render, SynthConfig};

fn mean_abs_difference(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn sample_i_of_seed_s_is_always_the_same_face() {
    let config = SynthConfig::default();
    assert_eq!(render(&config, 17), render(&config, 17));
    assert_ne!(render(&config, 17).image, render(&config, 18).image);
    let other_seed = SynthConfig {
        seed: 1,
        ..SynthConfig::default()
    };
    assert_ne!(render(&config, 17).image, render(&other_seed, 17).image);
}

#[test]
fn labels_stay_in_their_ranges_and_spread_over_them() {
    let config = SynthConfig {
        size: 16,
        ..SynthConfig::default()
    };
    let faces: Vec<_> = (0..400).map(|i| render(&config, i)).collect();
    for f in &faces {
        assert!((0.0..=100.0).contains(&f.age) && (0.0..=100.0).contains(&f.apparent_age));
        assert!(f.yaw.abs() <= 90.0 && f.pitch.abs() <= 60.0 && f.roll.abs() <= 30.0);
        assert!((f.apparent_age_std - (1.0 + 0.07 * f.age)).abs() < 1e-12);
        assert_eq!(f.image.pixels.len(), 16 * 16 * 3);
    }
    let old = faces.iter().filter(|f| f.age > 75.0).count();
    let young = faces.iter().filter(|f| f.age < 25.0).count();
    assert!(
        old > 60 && young > 60,
        "ages spread: {young} young, {old} old"
    );
    let identities: std::collections::HashSet<u64> = faces.iter().map(|f| f.identity).collect();
    assert!(identities.len() > 200);
}

#[test]
fn the_picture_depends_on_pose() {
    // Same identity, age and scene: only the pose differs when the ranges are zero.
    let frontal = SynthConfig {
        max_yaw: 0.0,
        max_pitch: 0.0,
        max_roll: 0.0,
        ..SynthConfig::default()
    };
    let a = render(&frontal, 5);
    assert_eq!((a.yaw, a.pitch, a.roll), (0.0, 0.0, 0.0));
    let turned = SynthConfig {
        max_yaw: 90.0,
        ..frontal.clone()
    };
    let b = render(&turned, 5);
    assert!(b.yaw.abs() > 5.0, "yaw {}", b.yaw);
    assert!(mean_abs_difference(&a.image.pixels, &b.image.pixels) > 3.0);
}
