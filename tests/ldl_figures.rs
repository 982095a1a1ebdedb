//! The six LDL measures where people look: in the summary `ldl train` prints and in
//! `ldl compare`'s tables, beside the training-mean distribution's, whose values are
//! checked here against the measures' formulas.

use std::path::Path;

use ldl::train::{compare, train, AxisTable, CompareColumns, Config, StopToken};

/// Twelve rows of a three-bin distribution: eight for training, four for validation.
const ROWS: [(f64, [f64; 3], &str); 12] = [
    (0.0, [0.6, 0.3, 0.1], "train"),
    (1.0, [0.5, 0.3, 0.2], "train"),
    (2.0, [0.4, 0.4, 0.2], "train"),
    (3.0, [0.3, 0.4, 0.3], "train"),
    (4.0, [0.2, 0.4, 0.4], "train"),
    (5.0, [0.2, 0.3, 0.5], "train"),
    (6.0, [0.1, 0.3, 0.6], "train"),
    (7.0, [0.1, 0.2, 0.7], "train"),
    (0.5, [0.7, 0.2, 0.1], "val"),
    (2.5, [0.3, 0.5, 0.2], "val"),
    (4.5, [0.2, 0.2, 0.6], "val"),
    (6.5, [0.1, 0.1, 0.8], "val"),
];

fn task(dir: &Path) -> String {
    let mut csv = String::from("x,p0,p1,p2,part\n");
    for (x, p, part) in ROWS {
        csv.push_str(&format!("{x},{},{},{},{part}\n", p[0], p[1], p[2]));
    }
    let data = dir.join("shares.csv");
    std::fs::write(&data, csv).unwrap();
    format!(
        r#"
[task]
name = "shares"

[[task.axes]]
name = "share"
min = 0
max = 2
step = 1

[data]
source = {source:?}
features = ["x"]
split = {{ column = "part" }}

[data.labels]
share = {{ distribution = ["p0", "p1", "p2"] }}

[model]
backbone = "mlp"
hidden = [8]

[loss]
kind = "kl"

[optim]
lr = 0.01
batch_size = 4
epochs = 1

[run]
seed = 5
output_dir = {output:?}
"#,
        source = data.display().to_string(),
        output = dir.join("runs").display().to_string(),
    )
}

/// The six measures of `v` against `u`, by their formulas (PyLDL's clipping at f64's
/// epsilon does not change distributions without zeros): Chebyshev, Clark, Canberra, KL,
/// cosine, intersection.
fn measures(u: &[f64], v: &[f64]) -> [f64; 6] {
    let pairs = || u.iter().zip(v).map(|(a, b)| (*a, *b));
    let norm = |w: &[f64]| w.iter().map(|x| x * x).sum::<f64>().sqrt();
    [
        pairs().map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
        pairs()
            .map(|(a, b)| ((a - b) / (a + b)).powi(2))
            .sum::<f64>()
            .sqrt(),
        pairs().map(|(a, b)| (a - b).abs() / (a + b)).sum(),
        pairs().map(|(a, b)| a * (a / b).ln()).sum(),
        pairs().map(|(a, b)| a * b).sum::<f64>() / (norm(u) * norm(v)),
        pairs().map(|(a, b)| a.min(b)).sum(),
    ]
}

/// The training rows' mean distribution, and its six measures averaged over the
/// validation rows.
fn expected_baseline() -> (Vec<f64>, [f64; 6]) {
    let train: Vec<[f64; 3]> = ROWS
        .iter()
        .filter(|r| r.2 == "train")
        .map(|r| r.1)
        .collect();
    let mean: Vec<f64> = (0..3)
        .map(|k| train.iter().map(|p| p[k]).sum::<f64>() / train.len() as f64)
        .collect();
    let validation: Vec<[f64; 6]> = ROWS
        .iter()
        .filter(|r| r.2 == "val")
        .map(|r| measures(&r.1, &mean))
        .collect();
    let averaged = std::array::from_fn(|i| validation.iter().map(|m| m[i]).sum::<f64>() / 4.0);
    (mean, averaged)
}

fn as_array(m: &ldl::metrics::LdlMeasures) -> [f64; 6] {
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
fn the_run_summary_shows_the_six_measures_beside_the_mean_distributions() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(Path::new("task.toml"), &task(dir.path()), &[]).unwrap();
    let summary = train(&config, &StopToken::new(), &mut |_| {}).unwrap();
    let (mean, averaged) = expected_baseline();
    let baseline = &summary.mean_distribution[0];
    assert_eq!(baseline.axis, "share");
    for (got, want) in baseline.distribution.iter().zip(&mean) {
        assert!(
            (got - want).abs() < 1e-9,
            "{:?} vs {mean:?}",
            baseline.distribution
        );
    }
    for (got, want) in as_array(&baseline.validation).iter().zip(averaged) {
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
    assert_eq!(baseline.test, None);
    // Kept in summary.json.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(summary.run_dir.join("summary.json")).unwrap(),
    )
    .unwrap();
    let kl = json["mean_distribution"][0]["validation"]["kl_divergence"]
        .as_f64()
        .unwrap();
    assert!((kl - averaged[3]).abs() < 1e-9);
    // The lines `ldl train` ends with: the model's measures, then the baseline's.
    let lines = AxisTable::of_run(&summary).lines();
    let model = &summary.best_validation.metrics.axis("share").unwrap().ldl;
    let model_line = format!(
        "LDL Chebyshev {:.4}, Clark {:.4}, Canberra {:.4}, KL {:.4}, cosine {:.4}, intersection {:.4}",
        model.chebyshev, model.clark, model.canberra, model.kl_divergence, model.cosine,
        model.intersection
    );
    // The stored values, checked above (formatted from them: 0.30625 sits on a rounding
    // edge at four places).
    let [c, cl, ca, k, co, i] = as_array(&baseline.validation);
    let baseline_line = format!(
        "(training-mean distribution: Chebyshev {c:.4}, Clark {cl:.4}, Canberra {ca:.4}, KL \
         {k:.4}, cosine {co:.4}, intersection {i:.4})"
    );
    assert!(lines.contains(&model_line), "{lines}");
    assert!(lines.contains(&baseline_line), "{lines}");
}

#[test]
fn compare_tables_the_six_measures_as_a_column_choice() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(Path::new("task.toml"), &task(dir.path()), &[]).unwrap();
    let config = config.into_config();
    let out = dir.path().join("compare");
    let losses = ["kl".to_string()];
    let comparison = compare(&config, &losses, 2, &out, &StopToken::new(), &mut |_, _| {}).unwrap();
    let ldl = comparison.results[0].axes[0].ldl.as_ref().unwrap();
    // The split column fixes the splits: the baseline is the same for both seeds.
    let (_, averaged) = expected_baseline();
    assert!((ldl.mean_distribution.kl_divergence.mean - averaged[3]).abs() < 1e-9);
    assert_eq!(ldl.mean_distribution.kl_divergence.std, 0.0);
    // The model's: mean and sample std of the two runs' best validation measures.
    let runs: Vec<f64> = comparison.results[0]
        .runs
        .iter()
        .map(|run| {
            let text = std::fs::read_to_string(run.join("summary.json")).unwrap();
            let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
            summary["best_validation"]["metrics"]["axes"][0]["ldl"]["chebyshev"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let mean = (runs[0] + runs[1]) / 2.0;
    let std = ((runs[0] - mean).powi(2) + (runs[1] - mean).powi(2)).sqrt();
    assert!((ldl.best.chebyshev.mean - mean).abs() < 1e-12);
    assert!((ldl.best.chebyshev.std - std).abs() < 1e-12);

    let all = std::fs::read_to_string(out.join("results.md")).unwrap();
    let header =
        "| loss | axis | split | Chebyshev | Clark | Canberra | KL | cosine | intersection |";
    let baseline_row = format!(
        "| training-mean distribution | share | validation | {:.4} ± 0.0000 |",
        averaged[0]
    );
    assert!(all.contains(header), "{all}");
    assert!(all.contains(&baseline_row), "{all}");
    assert!(all.contains("| loss | axis | metric |"), "{all}");
    let only_ldl = comparison.markdown_of(&config, CompareColumns::Ldl);
    assert!(only_ldl.contains(header) && !only_ldl.contains("| loss | axis | metric |"));
    let only_metrics = comparison.markdown_of(&config, CompareColumns::Metrics);
    assert!(!only_metrics.contains(header) && only_metrics.contains("| loss | axis | metric |"));
}
