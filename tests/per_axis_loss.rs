//! A loss per axis (`[[task.axes]] loss = "kl"`) and the warning for axes whose explicit
//! target distributions have several peaks under the full-KL loss.

use std::path::Path;

use ldl::train::{train, Config, StopToken};

const BDIMS: &str = include_str!("../configs/bdims.toml");

fn parse(text: &str, output: &Path, extra: &[&str]) -> ldl::Result<ldl::train::CheckedConfig> {
    let mut overrides = vec![
        "optim.epochs=1".to_string(),
        format!("run.output_dir={:?}", output.display().to_string()),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Ok(Config::parse(Path::new("task.toml"), text, &overrides)?)
}

/// The keys of the validation loss parts of the first epoch in `metrics.jsonl`.
fn part_keys(run_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut keys: Vec<String> = first["validation"]["loss"]["parts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[test]
fn an_axis_with_its_own_loss_trains_with_it_and_the_rest_with_the_default() {
    let output = tempfile::tempdir().unwrap();
    let text = BDIMS.replacen("name = \"weight\"", "name = \"weight\"\nloss = \"kl\"", 1);
    let config = parse(&text, output.path(), &[]).unwrap();
    assert_eq!(config.loss_description(), "full-kl, kl on weight");
    let summary = train(&config, &StopToken::new(), &mut |_| {}).unwrap();
    assert_eq!(
        part_keys(&summary.run_dir),
        [
            "age/exp",
            "age/ld",
            "age/smooth",
            "height/exp",
            "height/ld",
            "height/smooth",
            "weight/ld"
        ]
    );
    // The saved config keeps the axis's loss, so the checkpoint evaluates with it.
    let saved = std::fs::read_to_string(summary.run_dir.join("config.toml")).unwrap();
    assert!(saved.contains("loss = \"kl\""), "{saved}");

    let misspelt = BDIMS.replacen("name = \"weight\"", "name = \"weight\"\nloss = \"kll\"", 1);
    let err = parse(&misspelt, output.path(), &[])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("axis `weight`: `loss`: unknown loss `kll` (did you mean `kl`?)"),
        "{err}"
    );
}

#[test]
fn an_axis_of_a_joint_group_cannot_have_its_own_loss() {
    let output = tempfile::tempdir().unwrap();
    let text = BDIMS
        .replacen("name = \"weight\"", "name = \"weight\"\nloss = \"kl\"", 1)
        .replacen(
            "\n[data]",
            "\n[[task.joint]]\naxes = [\"weight\", \"height\"]\n\n[data]",
            1,
        );
    let err = parse(&text, output.path(), &[]).err().unwrap().to_string();
    assert!(
        err.contains("axis `weight` is in a joint group, whose axes share one head and one loss"),
        "{err}"
    );
}

/// A table of 60 rows: two features and an explicit distribution over 6 rating bins,
/// `bimodal` of them with two peaks (at bins 1 and 4), the rest one smooth peak.
fn ratings(dir: &Path, bimodal: usize) -> std::path::PathBuf {
    let mut csv = String::from("x1,x2,p0,p1,p2,p3,p4,p5\n");
    for i in 0..60 {
        let x = i as f64 / 60.0;
        let p: [f64; 6] = if i < bimodal {
            [0.05, 0.35, 0.1, 0.1, 0.35, 0.05]
        } else {
            [0.05, 0.15, 0.3, 0.3, 0.15, 0.05]
        };
        let cells: Vec<String> = p.iter().map(|v| v.to_string()).collect();
        csv.push_str(&format!("{x},{},{}\n", 1.0 - x, cells.join(",")));
    }
    let path = dir.join("ratings.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn ratings_config(data: &Path, axis_loss: &str) -> String {
    format!(
        r#"
[task]
name = "ratings"
[[task.axes]]
name = "rating"
min = 0
max = 5
step = 1
{axis_loss}

[data]
source = {data:?}
features = ["x1", "x2"]
[data.labels]
rating = {{ distribution = ["p0", "p1", "p2", "p3", "p4", "p5"] }}

[model]
backbone = "mlp"
hidden = [8]
"#,
        data = data.display().to_string()
    )
}

#[test]
fn multimodal_targets_under_the_full_kl_loss_are_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let warnings_of = |bimodal: usize, axis_loss: &str| {
        let data = ratings(dir.path(), bimodal);
        let config = parse(&ratings_config(&data, axis_loss), &runs, &[]).unwrap();
        let mut seen = Vec::new();
        let summary = train(&config, &StopToken::new(), &mut |p| {
            if let ldl::train::Progress::Warning(w) = p {
                seen.push(w.to_string());
            }
        })
        .unwrap();
        assert_eq!(seen, summary.warnings);
        seen
    };
    // 30 of 60 bimodal: about half of the training split.
    let warned = warnings_of(30, "");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].starts_with("axis `rating`: ")
            && warned[0].contains("% of its training distributions have more than one peak")
            && warned[0].contains("consider `loss = \"kl\"` for this axis"),
        "{}",
        warned[0]
    );
    // One smooth peak each: nothing to say; the KL loss on the axis: nothing either.
    assert!(warnings_of(0, "").is_empty());
    assert!(warnings_of(30, "loss = \"kl\"").is_empty());
}
