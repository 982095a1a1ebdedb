//! `ldl predict` on a model with a categorical axis: the class is printed by name with its
//! probability (a class has no mean or std), in CSV and in JSON, and agrees with the
//! model's distribution; the run's summary holds the axis's majority-class baseline.

use std::path::Path;
use std::process::Command;

const BDIMS: &str = include_str!("../../../configs/bdims.toml");

fn ldl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ldl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_categorical_axis_is_predicted_as_a_class_name_and_its_probability() {
    let dir = tempfile::tempdir().unwrap();
    let config = BDIMS
        .replace(
            "[[task.axes]]\nname = \"age\"",
            "[[task.axes]]\nname = \"sex\"\nkind = \"categorical\"\nclasses = [\"female\", \"male\"]\n\n[[task.axes]]\nname = \"age\"",
        )
        .replace(
            "age = { value = \"age_years\" }",
            "age = { value = \"age_years\" }\nsex = { class = \"sex\" }",
        );
    assert!(config.contains("sex = { class"));
    std::fs::write(dir.path().join("task.toml"), config).unwrap();
    ldl(
        dir.path(),
        &[
            "train",
            "task.toml",
            "--quiet",
            "--set",
            "optim.epochs=2",
            "--set",
            "run.output_dir=\"runs\"",
        ],
    );
    let rows: String = ldl_data::builtin_csv("bdims")
        .unwrap()
        .lines()
        .take(4)
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("rows.csv"), rows).unwrap();
    let checkpoint = "runs/bdims-1/checkpoints/best.safetensors";
    // The run's baseline for the categorical axis: the majority class and its accuracy.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("runs/bdims-1/summary.json")).unwrap(),
    )
    .unwrap();
    let majority = &summary["majority_class"][0];
    assert_eq!(majority["axis"], "sex");
    assert!(["female", "male"].contains(&majority["class"].as_str().unwrap()));
    let accuracy = majority["validation_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{accuracy}");

    let csv = ldl(dir.path(), &["predict", checkpoint, "rows.csv", "--pmf"]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        &header[..4],
        ["line", "sex_class", "sex_probability", "sex_p0"]
    );
    assert!(header.contains(&"age_mean") && !header.contains(&"sex_mean"));
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let p: Vec<f64> = cells[3..5].iter().map(|c| c.parse().unwrap()).collect();
        let (best, name) = if p[0] >= p[1] {
            (p[0], "female")
        } else {
            (p[1], "male")
        };
        assert_eq!(cells[1], name, "{line}");
        let probability: f64 = cells[2].parse().unwrap();
        assert!((probability - best).abs() < 1e-4, "{line}");
    }

    let json = ldl(dir.path(), &["predict", checkpoint, "rows.csv", "--json"]);
    for line in json.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let sex = &value["sex"];
        let class = sex["class"].as_str().unwrap();
        let index = sex["mode_index"].as_u64().unwrap() as usize;
        assert_eq!(class, ["female", "male"][index]);
        assert!(value["age"].get("class").is_none());
    }
}
