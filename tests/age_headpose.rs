//! The age-plus-head-pose example: its task built in code equals the ready configs (so
//! the example and `ldl train` give the same numbers), and on a tiny budget all three
//! heads learn, with independent heads and with a joint yaw × pitch head.

#[allow(dead_code)]
#[path = "../examples/age_headpose.rs"]
mod example;

use std::path::Path;

use ldl::train::{train, CheckedConfig, Config, Progress};

fn from_file(path: &str) -> CheckedConfig {
    let text = std::fs::read_to_string(path).unwrap();
    Config::parse(Path::new(path), &text, &[]).unwrap()
}

#[test]
fn the_example_builds_the_tasks_of_the_ready_configs() {
    for (joint, path) in [
        (false, "configs/age_headpose.toml"),
        (true, "configs/age_headpose_joint.toml"),
    ] {
        // Checked as the file is, so that defaults resolved by the check compare alike.
        let built = example::config(joint, 8000, 25).unwrap().check().unwrap();
        let file = from_file(path);
        // Axes are written out in full in code (the default std included), so compare the
        // label spaces they define; every other section must be equal as it stands.
        assert_eq!(
            built.label_space().unwrap(),
            file.label_space().unwrap(),
            "{path}"
        );
        assert_eq!(built.task.name, file.task.name);
        assert_eq!(built.data, file.data, "{path}: [data]");
        assert_eq!(built.model, file.model, "{path}: [model]");
        assert_eq!(built.loss, file.loss, "{path}: [loss]");
        assert_eq!(built.optim, file.optim, "{path}: [optim]");
        assert_eq!(built.run, file.run, "{path}: [run]");
    }
}

/// Trains on a tiny budget and returns, per loss part key, the training loss of the
/// first and the last epoch.
fn first_and_last_epoch(joint: bool) -> Vec<(String, f64, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = example::config(joint, 320, 4).unwrap();
    config.model.width = 0.25;
    config.optim.batch_size = 16;
    config.run.output_dir = dir.path().to_path_buf();
    let config = config.check().unwrap();
    let mut epochs = Vec::new();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |progress| {
        if let Progress::Epoch(record) = progress {
            epochs.push(record.train.parts.clone());
        }
    })
    .unwrap();
    // Every axis is evaluated, also those inside the joint head.
    let axes: Vec<&str> = summary
        .best_validation
        .metrics
        .axes
        .iter()
        .map(|a| a.axis.as_str())
        .collect();
    assert_eq!(axes, ["age", "yaw", "pitch"]);
    let (first, last) = (&epochs[0], &epochs[epochs.len() - 1]);
    first
        .iter()
        .map(|(key, value)| (key.clone(), *value, last[key]))
        .collect()
}

/// The summed training loss of every head falls.
fn assert_heads_learn(parts: &[(String, f64, f64)], heads: &[&str]) {
    for head in heads {
        let (first, last) = parts
            .iter()
            .filter(|(key, _, _)| key.split('/').next() == Some(*head))
            .fold((0.0, 0.0), |(a, b), (_, f, l)| (a + f, b + l));
        assert!(first > 0.0, "no loss parts for head `{head}`: {parts:?}");
        assert!(
            last < first,
            "head `{head}`: training loss {first} → {last}"
        );
    }
}

#[test]
fn three_independent_heads_learn_on_a_tiny_budget() {
    let parts = first_and_last_epoch(false);
    let keys: Vec<&str> = parts.iter().map(|(k, _, _)| k.as_str()).collect();
    for axis in ["age", "yaw", "pitch"] {
        for component in ["ld", "exp", "smooth"] {
            assert!(
                keys.contains(&format!("{axis}/{component}").as_str()),
                "{keys:?}"
            );
        }
    }
    assert_heads_learn(&parts, &["age", "yaw", "pitch"]);
}

#[test]
fn a_joint_pose_head_learns_on_a_tiny_budget() {
    let parts = first_and_last_epoch(true);
    let keys: Vec<&str> = parts.iter().map(|(k, _, _)| k.as_str()).collect();
    assert!(keys.contains(&"yaw+pitch/exp"), "{keys:?}");
    assert!(!keys.contains(&"yaw/ld"), "{keys:?}");
    assert_heads_learn(&parts, &["age", "yaw+pitch"]);
}

#[test]
fn evenly_spaced_axes_have_a_config_form_and_uneven_ones_are_refused() {
    use ldl::train::AxisConfig;
    // Steps whose recomputation from the centres is an ulp off the given one.
    for axis in [
        ldl::Axis::linear("x", 0.0, 0.3, 0.1).unwrap(),
        ldl::Axis::linear("x", 1.5, 2.7, 0.3).unwrap(),
        ldl::Axis::circular("x", 0.0, 0.3, 0.1).unwrap(),
        ldl::Axis::circular("hour", 0.0, 24.0, 0.1).unwrap(),
        ldl::Axis::categorical("c", ["p", "q"]).unwrap(),
    ] {
        let config = AxisConfig::from_axis(&axis).unwrap();
        let text = toml::to_string(&config).unwrap();
        let back: AxisConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
    let uneven = ldl::Axis::from_centers("dose", vec![0.0, 0.5, 2.0]).unwrap();
    let err = AxisConfig::from_axis(&uneven).unwrap_err().to_string();
    assert!(
        err.contains("`dose`") && err.contains("not evenly spaced"),
        "{err}"
    );
}

#[test]
fn a_bad_joint_group_names_its_key() {
    let path = "configs/age_headpose_joint.toml";
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace(r#"axes = ["yaw", "pitch"]"#, r#"axes = ["yaw", "roll"]"#);
    let err = Config::parse(Path::new(path), &text, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`task.joint[0].axes`") && err.contains("no axis `roll`"),
        "{err}"
    );
}
