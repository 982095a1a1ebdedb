//! `ldl compare --columns`: the command prints the tables asked for, and the six LDL
//! measures it prints are the runs' own (from their `summary.json`).

use std::path::Path;
use std::process::Command;

/// Rows of one feature and a three-bin target distribution; the split column fixes which
/// rows train and which validate.
const ROWS: &str = "x,p0,p1,p2,part
0.5,0.7,0.2,0.1,train
1.5,0.6,0.3,0.1,train
3.5,0.2,0.6,0.2,train
5.5,0.1,0.3,0.6,train
7.5,0.1,0.2,0.7,train
2.5,0.3,0.5,0.2,val
6.5,0.1,0.1,0.8,val
";

const TASK: &str = r#"
[task]
name = "shares"

[[task.axes]]
name = "share"
min = 0
max = 2
step = 1

[data]
source = "shares.csv"
features = ["x"]
split = { column = "part" }

[data.labels]
share = { distribution = ["p0", "p1", "p2"] }

[model]
backbone = "mlp"
hidden = [8]

[loss]
kind = "kl"

[optim]
lr = 0.01
batch_size = 4
epochs = 2

[run]
seed = 3
output_dir = "runs"
"#;

const LDL_HEADER: &str =
    "| loss | axis | split | Chebyshev | Clark | Canberra | KL | cosine | intersection |";
const METRICS_HEADER: &str = "| loss | axis | metric |";

fn compare(dir: &Path, columns: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ldl"))
        .current_dir(dir)
        .args(["compare", "task.toml", "--losses", "kl", "--seeds", "1"])
        .args(["--out", "cmp", "--columns", columns])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--columns {columns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn columns_choose_the_tables_and_the_measures_are_the_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shares.csv"), ROWS).unwrap();
    std::fs::write(dir.path().join("task.toml"), TASK).unwrap();

    let ldl = compare(dir.path(), "ldl");
    assert!(ldl.contains(LDL_HEADER), "{ldl}");
    assert!(!ldl.contains(METRICS_HEADER), "{ldl}");
    // The one run's best validation Chebyshev distance, as the table prints it (one seed:
    // its std is 0).
    let run = std::fs::read_dir(dir.path().join("cmp/runs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.join("summary.json").is_file())
        .expect("a run folder under cmp/runs/");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let chebyshev = summary["best_validation"]["metrics"]["axes"][0]["ldl"]["chebyshev"]
        .as_f64()
        .unwrap();
    let row = format!("| kl | share | validation (best) | {chebyshev:.4} ± 0.0000 |");
    assert!(ldl.contains(&row), "{row} not in\n{ldl}");

    // The second call reuses the finished run and prints the other table only.
    let metrics = compare(dir.path(), "metrics");
    assert!(metrics.contains(METRICS_HEADER), "{metrics}");
    assert!(!metrics.contains(LDL_HEADER), "{metrics}");

    let all = compare(dir.path(), "all");
    assert!(
        all.contains(METRICS_HEADER) && all.contains(LDL_HEADER),
        "{all}"
    );
}
