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

/// `builtin:faces` serves the generator's faces by index, with the labels `render` draws,
/// and keeps each identity in one split.
#[test]
fn the_in_memory_face_source_matches_the_generator() {
    use ldl::data::{
        face_labels, read_synthetic_faces, split_by_fractions, Input, InputColumns, LabelColumns,
        OnBadSample, TableSpec,
    };
    use ldl::{Axis, Label, LabelSpace};
    let config = SynthConfig {
        size: 24,
        seed: 11,
        identities: 12,
        ..SynthConfig::default()
    };
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::circular("yaw", -180.0, 360.0, 3.0).unwrap(),
    ])
    .unwrap();
    let spec = TableSpec::new(InputColumns::AllOtherColumns)
        .with_label(
            "age",
            LabelColumns::Value {
                value: "apparent_age".into(),
                std: Some("apparent_age_std".into()),
            },
        )
        .with_label(
            "yaw",
            LabelColumns::Value {
                value: "yaw".into(),
                std: None,
            },
        )
        .with_group("identity");
    let table = read_synthetic_faces(&config, 60, &spec, &space, OnBadSample::Error).unwrap();
    assert_eq!(table.samples.len(), 60);
    for (i, sample) in table.samples.iter().enumerate() {
        let Input::Synthetic { generator, index } = &sample.input else {
            panic!("sample {i}: {:?}", sample.input);
        };
        assert_eq!((**generator).clone(), config);
        assert_eq!(*index, i as u64);
        let face = render(&config, *index);
        assert_eq!(face_labels(&config, *index).age, face.age);
        // The table stores 3 decimals.
        let Label::Value { value, std } = &sample.labels[0] else {
            panic!()
        };
        assert!((value - face.apparent_age).abs() <= 5e-4, "sample {i}");
        assert!((std.unwrap() - face.apparent_age_std).abs() <= 5e-4);
        let Label::Value { value: yaw, .. } = &sample.labels[1] else {
            panic!()
        };
        assert!((yaw - face.yaw).abs() <= 5e-4);
        assert_eq!(
            sample.group.as_deref(),
            Some(face.identity.to_string().as_str())
        );
    }
    let splits = split_by_fractions(table.samples, 0.3, 0.2, 4).unwrap();
    let ids = |s: &[ldl::data::Sample]| -> std::collections::BTreeSet<String> {
        s.iter().map(|s| s.group.clone().unwrap()).collect()
    };
    let (train, validation, test) = (
        ids(&splits.train),
        ids(&splits.validation),
        ids(&splits.test),
    );
    assert!(train.is_disjoint(&validation) && train.is_disjoint(&test));
    assert!(validation.is_disjoint(&test));

    let err = read_synthetic_faces(&config, 0, &spec, &space, OnBadSample::Error)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("builtin:faces") && err.contains("count"),
        "{err}"
    );
}

/// `write_synthetic_set` writes one manifest row per image, leaves no temporary file, and
/// refuses a count outside `1..=MAX_FACES` before writing anything.
#[test]
fn a_written_set_lists_every_image_and_a_bad_count_writes_nothing() {
    let config = SynthConfig {
        size: 16,
        ..SynthConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("faces");
    for count in [0, ldl::data::MAX_FACES + 1] {
        let err = ldl::data::write_synthetic_set(&config, count, &folder)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("must be in 1..=16777216, got {count}")),
            "{err}"
        );
        assert!(!folder.exists());
    }
    ldl::data::write_synthetic_set(&config, 3, &folder).unwrap();
    let manifest = std::fs::read_to_string(folder.join("manifest.csv")).unwrap();
    let rows: Vec<&str> = manifest.lines().skip(1).collect();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        let image = row.split(',').next().unwrap();
        assert_eq!(image, format!("images/{i:06}.png"));
        assert!(folder.join(image).is_file());
    }
    let chalearn = std::fs::read_to_string(folder.join("chalearn.csv")).unwrap();
    assert_eq!(chalearn.lines().count(), 4);
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["chalearn.csv", "images", "manifest.csv"]);
}
