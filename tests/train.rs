//! Training from a TOML config: config errors, overrides, the run folder, determinism,
//! and Adam against its closed form.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use ldl::train::{train, Adam, Config, IfExists, LossKind, Progress, Trunk};

const BDIMS: &str = include_str!("../configs/bdims.toml");

fn config_error(text: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Config::parse(Path::new("task.toml"), text, &overrides)
        .unwrap_err()
        .to_string()
}

#[test]
fn the_bdims_config_parses_with_its_defaults() {
    let config = Config::parse(Path::new("configs/bdims.toml"), BDIMS, &[]).unwrap();
    assert_eq!(config.task.axes.len(), 3);
    assert_eq!(config.loss.kind(), LossKind::FullKl);
    assert_eq!(config.run.device, "cpu");
    assert_eq!(
        config.label_space().unwrap().axis("weight").unwrap().len(),
        81
    );
}

/// Every ready config in configs/ parses and validates.
#[test]
fn every_ready_config_parses() {
    let mut checked = 0;
    for entry in std::fs::read_dir("configs").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Config::parse(&path, &text, &[]) {
            panic!("{}: {e}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} configs");
}

#[test]
fn unknown_keys_are_refused_with_the_line_and_the_nearest_key() {
    let text = BDIMS.replace("lr = 0.03", "lrr = 0.003");
    let err = config_error(&text, &[]);
    let line = BDIMS.lines().position(|l| l.starts_with("lr = ")).unwrap() + 1;
    assert!(err.contains("task.toml"), "{err}");
    assert!(err.contains(&format!("line {line}")), "{err}");
    assert!(
        err.contains("unknown field `lrr`") && err.contains("did you mean `lr`?"),
        "{err}"
    );
}

#[test]
fn bad_values_name_their_key() {
    for (from, to, expected) in [
        (
            "lr = 0.03",
            "lr = -1",
            "`optim.lr`: must be finite and > 0, got -1",
        ),
        (
            "kind = \"full-kl\"",
            "kind = \"full-k\"",
            "unknown loss `full-k` (did you mean `full-kl`?)",
        ),
        (
            "backbone = \"mlp\"",
            "backbone = \"resnet\"",
            "`model.backbone`: unknown backbone `resnet`",
        ),
        (
            "step = 1\ndefault_std = 3",
            "step = 0\ndefault_std = 3",
            "`task.axes[0]`: axis `age`: step must be > 0",
        ),
        (
            "height = { value = \"height_cm\" }",
            "",
            "axis `height` has no label columns",
        ),
        ("epochs = 150", "epochs = \"many\"", "invalid type"),
        (
            "source = \"builtin:bdims\"",
            "source = \"builtin:bdim\"",
            "no built-in dataset `builtin:bdim` (did you mean `builtin:bdims`?)",
        ),
        (
            "source = \"builtin:bdims\"",
            "source = \"bdims.txt\"",
            "bdims.txt` is neither `builtin:NAME` nor a .csv or .jsonl file",
        ),
        (
            "name = \"bdims\"",
            "name = \"../../escape\"",
            "`task.name`: \"../../escape\" holds '/'; it names the run folder",
        ),
        (
            "name = \"bdims\"",
            "name = \"/tmp/x\"",
            "`task.name`: \"/tmp/x\" holds '/'",
        ),
        (
            "name = \"bdims\"",
            "name = \"\"",
            "`task.name`: \"\" is empty",
        ),
    ] {
        let text = BDIMS.replacen(from, to, 1);
        assert_ne!(text, BDIMS, "{from}");
        let err = config_error(&text, &[]);
        assert!(err.contains(expected), "{from} → {to}: {err}");
    }
}

#[test]
fn overrides_set_any_key_and_are_checked() {
    let overrides: Vec<String> = ["optim.epochs=3", "model.hidden=[8, 4]", "loss.kind=dldl-v2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let config = Config::parse(Path::new("q.toml"), BDIMS, &overrides).unwrap();
    assert_eq!(config.optim.epochs, 3);
    assert_eq!(config.model.hidden, [8, 4]);
    assert_eq!(config.loss.kind(), LossKind::DldlV2);
    let err = config_error(BDIMS, &["optim.epochz=3"]);
    assert!(
        err.contains("--set") && err.contains("did you mean `epochs`?"),
        "{err}"
    );
    let err = config_error(BDIMS, &["optim.epochs"]);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    // Content after the value is refused, not silently dropped.
    let err = config_error(BDIMS, &["optim.epochs=3\n[run]\nseed = 9"]);
    assert!(
        err.contains("--set `optim.epochs`: the value holds more than one TOML value"),
        "{err}"
    );
    let err = config_error(BDIMS, &["task.name=a\nb"]);
    assert!(
        err.contains("--set `task.name`: the value holds a line break"),
        "{err}"
    );
    // An integer TOML cannot hold is named as such, not as "invalid type: string".
    let err = config_error(BDIMS, &["optim.epochs=99999999999999999999"]);
    assert!(
        err.contains("`99999999999999999999` is an integer too large for TOML"),
        "{err}"
    );
}

/// A config line of a megabyte is quoted in an error cut to a readable length.
#[test]
fn an_error_on_a_huge_line_quotes_only_its_start() {
    let huge = BDIMS.replacen(
        "lr = 0.03",
        &format!("lr = 0.03 {}", "x".repeat(1 << 20)),
        1,
    );
    let err = config_error(&huge, &[]);
    assert!(err.len() < 2_000, "{} bytes", err.len());
    assert!(err.contains("more characters)"), "{err}");
}

#[test]
fn a_saved_config_drops_loss_parameters_its_kind_does_not_read() {
    // Earlier versions saved every loss parameter, with whatever value `--set` gave it,
    // whichever loss kind read it: a run folder or checkpoint must still load.
    let saved = BDIMS.replace(
        "kind = \"full-kl\"",
        "kind = \"kl\"\nlambda = 0.5\nlambda_mean = 0.5\ntarget_moments = \"nominal\"",
    );
    let err = config_error(&saved, &[]);
    assert!(
        err.contains("`loss.lambda` is read only by dldl-v2, not by loss.kind = \"kl\""),
        "{err}"
    );
    let config = Config::parse_saved(Path::new("checkpoint.safetensors"), &saved).unwrap();
    assert_eq!(config.loss, ldl::train::LossConfig::Kl);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), &saved).unwrap();
    let folder = ldl::train::RunFolder::new(dir.path());
    assert_eq!(folder.config(&[]).unwrap().loss, ldl::train::LossConfig::Kl);
    // What a user sets when resuming is checked as a user's.
    let err = folder
        .config(&["loss.lambda_variance=0.1".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`loss.lambda_variance` is read only by mean-variance"),
        "{err}"
    );
    // Parameters of the saved kind are kept.
    let saved = BDIMS.replace("kind = \"full-kl\"", "kind = \"dldl-v2\"\nlambda = 0.5");
    let config = Config::parse_saved(Path::new("checkpoint.safetensors"), &saved).unwrap();
    assert!(
        matches!(config.loss, ldl::train::LossConfig::DldlV2 { lambda, .. } if lambda == 0.5),
        "{:?}",
        config.loss
    );
}

/// `model.trunk`: one MLP per axis unless said otherwise; a config saved by an earlier
/// ldl, which has no such key, trained one shared MLP and must load as one; the image
/// networks cannot have one per axis.
#[test]
fn the_mlp_trunk_is_per_axis_by_default_and_saved_configs_keep_theirs() {
    let path = Path::new("configs/bdims.toml");
    let config = Config::parse(path, BDIMS, &[]).unwrap();
    assert_eq!(config.model.trunk, Some(Trunk::PerAxis));
    match config.model.backbone_config(21).unwrap() {
        ldl::models::BackboneConfig::Mlp(mlp) => assert!(mlp.separate_trunks),
        other => panic!("{other:?}"),
    }
    let shared = Config::parse(path, BDIMS, &["model.trunk=shared".to_string()]).unwrap();
    assert_eq!(shared.model.trunk, Some(Trunk::Shared));

    // The resolved value is what a run folder saves, and reads back unchanged.
    let written = toml::to_string(&*config).unwrap();
    assert!(written.contains("trunk = \"per-axis\""), "{written}");
    let saved = Config::parse_saved(Path::new("config.toml"), &written).unwrap();
    assert_eq!(saved.model.trunk, Some(Trunk::PerAxis));
    // Saved without the key: the shared MLP it was trained with.
    assert!(!BDIMS.contains("trunk"));
    let old = Config::parse_saved(Path::new("checkpoint.safetensors"), BDIMS).unwrap();
    assert_eq!(old.model.trunk, Some(Trunk::Shared));

    let quickstart = include_str!("../configs/quickstart.toml");
    let image = Config::parse(Path::new("quickstart.toml"), quickstart, &[]).unwrap();
    assert_eq!(image.model.trunk, Some(Trunk::Shared));
    let err = config_error(quickstart, &["model.trunk=per-axis"]);
    assert!(
        err.contains("`model.trunk`: `per-axis` is for the MLP") && err.contains("tiny-age-net"),
        "{err}"
    );
    let err = config_error(BDIMS, &["model.trunk=separate"]);
    assert!(
        err.contains("model.trunk") && err.contains("per-axis"),
        "{err}"
    );
}

fn run(output: &Path, seed: u64) -> ldl::train::RunSummary {
    let overrides = vec![
        "optim.epochs=3".to_string(),
        format!("run.output_dir={:?}", output.display().to_string()),
        format!("run.seed={seed}"),
    ];
    let config = Config::parse(Path::new("configs/bdims.toml"), BDIMS, &overrides).unwrap();
    // Every batch, then validation, then the epoch's record, in order.
    let mut events = Vec::new();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |progress| {
        events.push(match progress {
            Progress::Batch {
                epoch,
                done,
                batches,
                ..
            } => format!("{epoch}:{done}/{batches}"),
            Progress::Validating { epoch } => format!("{epoch}:validating"),
            Progress::Epoch(record) => format!("{}:done", record.epoch),
            Progress::Warning(warning) => format!("warning: {warning}"),
            Progress::Features(features) => format!("features: {}", features.join(" ")),
        })
    })
    .unwrap();
    // The features first, once; then 305 training samples in batches of 32: 9 full
    // batches and one of 17.
    let mut expected = vec![format!("features: {}", bdims_features().join(" "))];
    for epoch in 1..=3 {
        expected.extend((1..=10).map(|b| format!("{epoch}:{b}/10")));
        expected.push(format!("{epoch}:validating"));
        expected.push(format!("{epoch}:done"));
    }
    assert_eq!(events, expected);
    assert_eq!(summary.features, bdims_features());
    summary
}

/// The 22 feature columns of bdims: every column but the labels, in table order.
fn bdims_features() -> Vec<String> {
    let csv = ldl::data::builtin_csv("bdims").unwrap();
    let header = csv.lines().next().unwrap();
    let labels = ["age_years", "weight_kg", "height_cm"];
    header
        .split(',')
        .filter(|c| !labels.contains(c))
        .map(str::to_string)
        .collect()
}

/// metrics.jsonl without its wall-clock fields.
fn metrics_without_times(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = value.as_object_mut().unwrap();
            object.remove("train_seconds");
            object.remove("samples_per_second");
            value
        })
        .collect()
}

#[test]
fn training_writes_a_complete_run_folder_and_is_deterministic() {
    let output = tempfile::tempdir().unwrap();
    let first = run(output.path(), 4);
    let second = run(output.path(), 4);
    let other = run(output.path(), 5);
    assert_eq!(first.run_dir, output.path().join("bdims-1"));
    assert_eq!(second.run_dir, output.path().join("bdims-2"));
    for file in [
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
    ] {
        assert!(first.run_dir.join(file).is_file(), "{file} missing");
    }
    let lines = metrics_without_times(&first.run_dir);
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["train"]["parts"]["age/smooth"].is_number());
    assert!(lines[2]["validation"]["metrics"]["axes"][1]["mae"].is_number());
    assert_eq!(
        lines,
        metrics_without_times(&second.run_dir),
        "same seed, same numbers"
    );
    assert_ne!(
        lines,
        metrics_without_times(&other.run_dir),
        "another seed, other numbers"
    );
    assert_eq!(first.samples, [305, 101, 101]);
    assert!(first.test.is_some());
    // The checkpoint alone rebuilds the model, with the training config and standardisation.
    let (model, info) = ldl::models::Model::from_checkpoint(
        &first.run_dir.join("checkpoints/best.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(model.label_space().len(), 3);
    assert!(
        info.extra.contains_key("train.config") && info.extra.contains_key("train.standardizer")
    );
    // The resolved config in the folder parses back to the same config.
    let saved = std::fs::read_to_string(first.run_dir.join("config.toml")).unwrap();
    let reparsed = Config::parse(&first.run_dir.join("config.toml"), &saved, &[]).unwrap();
    assert_eq!(reparsed.optim.epochs, 3);

    // Plots: valid PNGs of the right size, SVGs naming every panel.
    let plots = first.run_dir.join("plots");
    for (stem, panels) in [("losses", 9u32), ("mae", 3)] {
        let png = image::open(plots.join(format!("{stem}.png"))).unwrap();
        let (rows, columns) = (panels.div_ceil(3), panels.min(3));
        assert_eq!(
            (png.width(), png.height()),
            (420 * columns, 300 * rows),
            "{stem}"
        );
        let svg = std::fs::read_to_string(plots.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let titles: &[&str] = if stem == "mae" {
            &["age", "weight", "height"]
        } else {
            &[
                "age/ld",
                "age/exp",
                "age/smooth",
                "height/smooth",
                "weight/ld",
            ]
        };
        for title in titles {
            assert!(
                svg.contains(&format!(">\n{title}\n<")),
                "{stem}.svg lacks {title}"
            );
        }
    }
    // Two runs overlay, named in the legend; a folder without metrics is a clear error.
    let curves = [
        ldl::train::RunCurves::read(&first.run_dir).unwrap(),
        ldl::train::RunCurves::read(&other.run_dir).unwrap(),
    ];
    let overlay = output.path().join("overlay");
    let files = ldl::train::plot_runs(&curves, &overlay).unwrap();
    assert_eq!(files.len(), 4);
    let svg = std::fs::read_to_string(overlay.join("mae.svg")).unwrap();
    assert!(svg.contains("bdims-1 validation") && svg.contains("bdims-3 validation"));
    let err = ldl::train::RunCurves::read(output.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics.jsonl") && err.contains("ldl train"),
        "{err}"
    );
}

#[test]
fn adam_follows_its_closed_form() {
    // f(θ) = Σ θ², gradient 2θ; three steps of Adam by hand.
    let start = [1.0f64, -2.0, 0.5];
    let var = Var::from_tensor(&Tensor::new(&start, &Device::Cpu).unwrap()).unwrap();
    let mut adam = Adam::new(vec![var.clone()], 0.1, 0.01).unwrap();
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut theta = start.to_vec();
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    for t in 1..=3 {
        let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
        adam.step(&loss.backward().unwrap()).unwrap();
        for i in 0..3 {
            let g = 2.0 * theta[i] + 0.01 * theta[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let m_hat = m[i] / (1.0 - b1.powi(t));
            let v_hat = v[i] / (1.0 - b2.powi(t));
            theta[i] -= 0.1 * m_hat / (v_hat.sqrt() + eps);
        }
    }
    let got = var.as_tensor().to_vec1::<f64>().unwrap();
    for (a, b) in got.iter().zip(&theta) {
        assert!((a - b).abs() < 1e-12, "{got:?} vs {theta:?}");
    }
    assert_eq!(adam.steps, 3);
}

#[test]
fn a_trained_checkpoint_evaluates_and_predicts_consistently() {
    let output = tempfile::tempdir().unwrap();
    let summary = run(output.path(), 2);
    let checkpoint = summary.run_dir.join("checkpoints/best.safetensors");
    let trained = ldl::train::TrainedModel::load(&checkpoint, &Device::Cpu).unwrap();
    assert_eq!(trained.features.len(), 22);
    // Twenty people from the built-in table, written as a user's CSV file.
    let csv: String = ldl::data::builtin_csv("bdims")
        .unwrap()
        .lines()
        .take(21)
        .collect::<Vec<_>>()
        .join("\n");
    let path = output.path().join("people.csv");
    std::fs::write(&path, &csv).unwrap();
    let evaluation = trained.evaluate_file(&path).unwrap();
    let predictions = trained.predict_file(&path).unwrap();
    assert_eq!(predictions.len(), 20);
    assert_eq!(predictions[0].input, ldl::train::PredictionInput::Line(2));
    // The MAE recomputed from the predictions equals the evaluation's.
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|h| *h == "weight_kg").unwrap();
    let weights: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(column).unwrap().parse().unwrap())
        .collect();
    let mae = predictions
        .iter()
        .zip(&weights)
        .map(|(p, w)| (p.axes[1].as_value().unwrap().mean - w).abs())
        .sum::<f64>()
        / 20.0;
    let reported = evaluation.metrics.axis("weight").unwrap().mae.unwrap();
    assert!((mae - reported).abs() < 1e-4, "{mae} vs {reported}");
    // Distributions are distributions.
    for p in &predictions {
        for d in &p.distributions {
            assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }
    // A file without the model's features is refused with the column named.
    let bad = output.path().join("bad.csv");
    std::fs::write(&bad, "a,b\n1,2\n").unwrap();
    let err = trained.predict_file(&bad).err().unwrap().to_string();
    assert!(err.contains("no column `bia_di`"), "{err}");

    // A forged feature standardisation (a negative std, a mean for another feature count)
    // is refused when loading, not used to predict.
    let (model, info) = ldl::models::Model::from_checkpoint(&checkpoint, &Device::Cpu).unwrap();
    let standardizer: serde_json::Value =
        serde_json::from_str(&info.extra["train.standardizer"]).unwrap();
    for (forge, expected) in [
        (
            &(|s: &mut serde_json::Value| s["std"][3] = (-1.0).into()) as &dyn Fn(&mut _),
            "`train.standardizer` holds the std -1 for `",
        ),
        (
            &|s: &mut serde_json::Value| {
                s["mean"].as_array_mut().unwrap().pop();
            },
            "does not hold one mean and one std for each of the 22 features",
        ),
    ] {
        let mut forged = standardizer.clone();
        forge(&mut forged);
        let mut extra = info.extra.clone();
        extra.insert("train.standardizer".into(), forged.to_string());
        let path = output.path().join("forged.safetensors");
        model.save_with(&path, &extra).unwrap();
        let err = ldl::train::TrainedModel::load(&path, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn an_image_task_trains_tiny_age_net_from_a_manifest() {
    // 24 images whose brightness grows with the label, listed in a CSV manifest.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("images")).unwrap();
    let mut manifest = String::from("path,age,age_std\n");
    for i in 0..24u32 {
        let age = 10 + 3 * i;
        let image = image::RgbImage::from_fn(40, 40, |x, y| {
            let v = (age * 3 + (x + y) % 7) as u8;
            image::Rgb([v, v, v])
        });
        image
            .save(dir.path().join(format!("images/{i}.png")))
            .unwrap();
        manifest.push_str(&format!("images/{i}.png,{age},2.5\n"));
    }
    std::fs::write(dir.path().join("faces.csv"), manifest).unwrap();
    let text = format!(
        r#"
[task]
name = "faces"
[[task.axes]]
name = "age"
unit = "years"
min = 0
max = 100
step = 1

[data]
source = "faces.csv"
image_column = "path"
image_size = 32
augment = {{ flip = true, scale = [0.9, 1.0] }}
split = {{ validation = 0.25 }}
[data.labels]
age = {{ value = "age", std = "age_std" }}

[model]
backbone = "tiny-age-net"

[optim]
batch_size = 8
epochs = 2

[run]
output_dir = {output:?}
"#,
        output = dir.path().join("runs").display().to_string()
    );
    let config_path = dir.path().join("faces.toml");
    let config = Config::parse(&config_path, &text, &[]).unwrap();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap();
    assert_eq!(summary.samples, [18, 6, 0]);
    assert_eq!(summary.parameters, 934_869);
    let mae = summary
        .best_validation
        .metrics
        .axis("age")
        .unwrap()
        .mae
        .unwrap();
    assert!(mae.is_finite());
    assert!(summary
        .run_dir
        .join("checkpoints/best.safetensors")
        .is_file());
    // Image and feature inputs are exclusive.
    let both = text.replace(
        "image_column = \"path\"",
        "image_column = \"path\"\nfeatures = [\"age\"]",
    );
    let err = Config::parse(&config_path, &both, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not both"), "{err}");

    // An image that cannot be decoded, met in the first epoch: the error names it, and no
    // run folder of nothing but the initial weights is left behind.
    std::fs::write(dir.path().join("images/7.png"), b"not a png").unwrap();
    let fresh_output = dir.path().join("runs-with-a-bad-image");
    let bad = text.replace(
        &dir.path().join("runs").display().to_string(),
        &fresh_output.display().to_string(),
    );
    let config = Config::parse(&config_path, &bad, &[]).unwrap();
    let err = train(&config, &ldl::train::StopToken::new(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("7.png"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&fresh_output).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The quickstart's source, `builtin:faces`, end to end at a tiny scale: the faces are
/// rendered in memory, identities stay in one split, the summary reports the
/// training-mean predictor, and a bad face count names its key.
#[test]
fn a_task_trains_on_the_built_in_faces() {
    const QUICKSTART: &str = include_str!("../configs/quickstart.toml");
    let dir = tempfile::tempdir().unwrap();
    let overrides: Vec<String> = [
        "data.faces.count=96",
        "optim.epochs=2",
        "optim.batch_size=16",
        "model.width=0.25",
        &format!("run.output_dir={:?}", dir.path().display().to_string()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config =
        Config::parse(Path::new("configs/quickstart.toml"), QUICKSTART, &overrides).unwrap();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap();
    assert_eq!(summary.samples.iter().sum::<usize>(), 96);
    let err = Config::parse(
        Path::new("configs/quickstart.toml"),
        QUICKSTART,
        &["data.faces.identities=0".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`data.faces.identities`: must be ≥ 1, got 0"),
        "{err}"
    );
    assert!(
        summary.samples.iter().all(|&n| n > 0),
        "{:?}",
        summary.samples
    );
    let baseline = &summary.mean_predictor[0];
    assert_eq!(baseline.axis, "age");
    // Apparent ages spread over 0..100: the mean is mid-range and its MAE about a quarter
    // of the range.
    assert!((25.0..75.0).contains(&baseline.value), "{baseline:?}");
    assert!(
        (10.0..40.0).contains(&baseline.validation_mae),
        "{baseline:?}"
    );
    let checkpoint = summary.run_dir.join("checkpoints/best.safetensors");
    assert!(checkpoint.is_file());

    // Prediction from image files: the faces written by the generator at the training
    // size go through the same preparation as validation images, so predicting them one
    // by one or in a batch gives the same numbers, and a bad file is named.
    let faces = dir.path().join("faces");
    let generator = config
        .data
        .faces
        .generator(config.data.image_size, config.run.seed);
    ldl::data::write_synthetic_set(&generator, 5, &faces).unwrap();
    let trained = ldl::train::TrainedModel::load(&checkpoint, &Device::Cpu).unwrap();
    let paths: Vec<std::path::PathBuf> = (0..5)
        .map(|i| faces.join(format!("images/{i:06}.png")))
        .collect();
    let batch = trained.predict_images(&paths).unwrap();
    assert_eq!(batch.len(), 5);
    for (path, prediction) in paths.iter().zip(&batch) {
        let single = trained.predict_images(std::slice::from_ref(path)).unwrap();
        assert_eq!(
            single[0].input,
            ldl::train::PredictionInput::Image(path.clone())
        );
        let (a, b) = (&single[0].axes[0], &prediction.axes[0]);
        assert!(
            (a.as_value().unwrap().mean - b.as_value().unwrap().mean).abs() < 1e-3,
            "{a:?} vs {b:?}"
        );
        assert!((0.0..=100.0).contains(&b.as_value().unwrap().mean));
        let total: f64 = prediction.distributions[0].iter().sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
    // Evaluating the manifest of those faces: the MAE equals the one recomputed from the
    // predictions against the manifest's apparent ages.
    let evaluation = trained.evaluate_file(&faces.join("manifest.csv")).unwrap();
    let manifest = std::fs::read_to_string(faces.join("manifest.csv")).unwrap();
    let apparent: Vec<f64> = manifest
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    let mae = batch
        .iter()
        .zip(&apparent)
        .map(|(p, y)| (p.axes[0].as_value().unwrap().mean - y).abs())
        .sum::<f64>()
        / 5.0;
    let reported = evaluation.metrics.axis("age").unwrap().mae.unwrap();
    assert!((reported - mae).abs() < 1e-3, "{reported} vs {mae}");
    let broken = faces.join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let err = trained.predict_images(&[broken]).err().unwrap().to_string();
    assert!(err.contains("broken.png"), "{err}");
    let err = trained
        .predict_file(&faces.join("manifest.csv"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("reads images"), "{err}");

    let err = Config::parse(
        Path::new("configs/quickstart.toml"),
        QUICKSTART,
        &["data.faces.count=0".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`data.faces.count`"), "{err}");
    let err = Config::parse(
        Path::new("configs/quickstart.toml"),
        QUICKSTART,
        &["data.image_column=\"x\"".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("builtin:faces"), "{err}");
}

#[test]
fn image_list_formats_need_no_label_columns() {
    let text = r#"
[task]
name = "chalearn"
[[task.axes]]
name = "age"
min = 0
max = 100
step = 1
[data]
source = "gt/train.csv"
format = "chalearn"
images = "train"
[model]
backbone = "thin-age-net"
"#;
    let config = Config::parse(Path::new("tasks/chalearn.toml"), text, &[]).unwrap();
    assert!(config.data.reads_images());
    let images = config.data.images.clone().unwrap();
    assert!(
        images.is_absolute() && images.ends_with("tasks/train"),
        "{images:?}"
    );
    let err = config_error(
        &text.replace("\"chalearn\"\nimages", "\"chalern\"\nimages"),
        &[],
    );
    assert!(
        err.contains("unknown format `chalern` (did you mean `chalearn`?)"),
        "{err}"
    );
}

#[test]
fn training_four_epochs_equals_two_then_resuming_for_two() {
    let output = tempfile::tempdir().unwrap();
    let at = |dir: &str| output.path().join(dir).display().to_string();
    let parse = |epochs: usize, dir: &str| {
        let overrides = vec![
            format!("optim.epochs={epochs}"),
            format!("run.output_dir={:?}", at(dir)),
        ];
        Config::parse(Path::new("configs/bdims.toml"), BDIMS, &overrides).unwrap()
    };
    let straight = train(
        &parse(4, "straight"),
        &ldl::train::StopToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let first = train(
        &parse(2, "resumed"),
        &ldl::train::StopToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let mut resumed_epochs = Vec::new();
    let resumed = ldl::train::resume(
        &first.run_dir,
        &["optim.epochs=4".to_string()],
        &ldl::train::StopToken::new(),
        &mut |progress| {
            if let Progress::Epoch(record) = progress {
                resumed_epochs.push(record.epoch)
            }
        },
    )
    .unwrap();
    assert_eq!(resumed_epochs, [3, 4]);
    assert_eq!(resumed.run_dir, first.run_dir);
    let tensors = |run: &ldl::train::RunSummary| {
        let (vars, _) = ldl::models::Model::from_checkpoint(
            &run.run_dir.join("checkpoints/last.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let vars = vars.vars().clone();
        common::values_of(&vars)
    };
    assert_eq!(
        tensors(&straight),
        tensors(&resumed),
        "weights and BatchNorm statistics"
    );
    assert_eq!(
        metrics_without_times(&straight.run_dir),
        metrics_without_times(&resumed.run_dir)
    );
    assert_eq!(straight.best_epoch, resumed.best_epoch);
}

#[test]
fn early_stopping_ends_the_run_after_the_patience_runs_out() {
    let output = tempfile::tempdir().unwrap();
    let overrides = vec![
        "run.patience=2".to_string(),
        format!("run.output_dir={:?}", output.path().display().to_string()),
    ];
    let config = Config::parse(Path::new("configs/bdims.toml"), BDIMS, &overrides).unwrap();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap();
    assert!(summary.epochs < 60, "stopped at {}", summary.epochs);
    assert_eq!(summary.epochs, summary.best_epoch + 2);
    assert_eq!(
        metrics_without_times(&summary.run_dir).len(),
        summary.epochs
    );
    let err = config_error(BDIMS, &["run.patience=0"]);
    assert!(err.contains("`run.patience`"), "{err}");
}

/// `compare` trains every loss with every seed and summarises them: the table's means and
/// stds equal those recomputed from each run's own summary.json.
#[test]
fn compare_trains_each_loss_with_each_seed() {
    let output = tempfile::tempdir().unwrap();
    let overrides = vec!["optim.epochs=3".to_string()];
    let config = Config::parse(Path::new("configs/bdims.toml"), BDIMS, &overrides).unwrap();
    let losses = ["full-kl".to_string(), "dldl-v2:0.5".to_string()];
    let out = output.path().join("comparison");
    let comparison = ldl::train::compare(
        &config,
        &losses,
        2,
        &out,
        &ldl::train::StopToken::new(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(comparison.seeds, [1, 2]);
    assert_eq!(comparison.results.len(), 2);
    for result in &comparison.results {
        assert_eq!(result.runs.len(), 2);
        let maes: Vec<f64> = result
            .runs
            .iter()
            .map(|run| {
                let text = std::fs::read_to_string(run.join("summary.json")).unwrap();
                let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
                summary["best_validation"]["metrics"]["axes"][0]["mae"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        let mean = (maes[0] + maes[1]) / 2.0;
        let std = (maes[0] - maes[1]).abs() / 2f64.sqrt();
        let age = &result.axes[0];
        assert_eq!(age.axis, "age");
        assert_eq!(age.metric, "MAE (years)");
        assert!((age.best_value.mean - mean).abs() < 1e-12, "{result:?}");
        assert!((age.best_value.std - std).abs() < 1e-12, "{result:?}");
    }
    // Different losses trained different models.
    assert_ne!(
        comparison.results[0].axes[0].best_value,
        comparison.results[1].axes[0].best_value
    );
    for file in ["results.md", "results.json", "losses.png", "mae.svg"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    // `dldl-v2:0.5` trained DLDL-v2 with λ = 0.5 on every axis.
    let run = &comparison.results[1].runs[0];
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains("kind = \"dldl-v2\"") && saved.contains("lambda = 0.5"),
        "{saved}"
    );
    // The component scales are the last epoch's validation parts, averaged over seeds.
    let last_parts = |run: &std::path::Path| -> serde_json::Value {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let line = text.lines().last().unwrap();
        serde_json::from_str::<serde_json::Value>(line).unwrap()["validation"]["loss"]["parts"]
            .clone()
    };
    for result in &comparison.results {
        let keys: Vec<&str> = result.components.iter().map(|c| c.key.as_str()).collect();
        let expected: &[&str] = if result.loss == "full-kl" {
            &[
                "age/exp",
                "age/ld",
                "age/smooth",
                "height/exp",
                "height/ld",
                "height/smooth",
                "weight/exp",
                "weight/ld",
                "weight/smooth",
            ]
        } else {
            &[
                "age/l1",
                "age/ld",
                "height/l1",
                "height/ld",
                "weight/l1",
                "weight/ld",
            ]
        };
        assert_eq!(keys, expected);
        for component in &result.components {
            let values: Vec<f64> = result
                .runs
                .iter()
                .map(|run| last_parts(run)[&component.key].as_f64().unwrap())
                .collect();
            let mean = (values[0] + values[1]) / 2.0;
            assert!(
                (component.final_value.mean - mean).abs() < 1e-12,
                "{component:?}"
            );
        }
    }
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        table.contains("| dldl-v2:0.5 | weight | MAE (kg) |"),
        "{table}"
    );
    assert!(table.contains("| dldl-v2:0.5 | weight/l1 |"), "{table}");
    assert!(
        table.contains("each axis's own best validation MAE, accuracy or loss"),
        "{table}"
    );
    // A bad loss name stops before anything trains.
    let err = ldl::train::compare(
        &config,
        &["full-k".to_string()],
        1,
        &out,
        &ldl::train::StopToken::new(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("full-k"), "{err}");
    // Run again: the finished runs are reused, nothing trains twice, same results.
    let again = ldl::train::compare(
        &config,
        &losses,
        2,
        &out,
        &ldl::train::StopToken::new(),
        &mut |_, _| panic!("nothing should train again"),
    )
    .unwrap();
    assert_eq!(again.results, comparison.results);
    for spec in ["dldl-v2:x", "full-kl:1"] {
        let err = ldl::train::compare(
            &config,
            &[spec.to_string()],
            1,
            &out,
            &ldl::train::StopToken::new(),
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(spec), "{err}");
    }
}

/// Splits from separate files: each file becomes its split; a split without a file is
/// drawn from the source by its fraction; files and a split column exclude each other.
#[test]
fn splits_can_come_from_separate_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = ldl::data::builtin_csv("bdims").unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let write = |name: &str, rows: &[&str]| {
        let mut file = String::from(header);
        for row in rows {
            file.push('\n');
            file.push_str(row);
        }
        std::fs::write(dir.path().join(name), file + "\n").unwrap();
    };
    write("train.csv", &rows[..300]);
    write("val.csv", &rows[300..400]);
    write("test.csv", &rows[400..]);
    let config_text = BDIMS
        .replace("source = \"builtin:bdims\"", "source = \"train.csv\"")
        .replace(
            "split = { validation = 0.2, test = 0.2 }",
            "split = { validation_source = \"val.csv\", test_source = \"test.csv\" }",
        );
    assert_ne!(config_text, BDIMS);
    let path = dir.path().join("task.toml");
    let overrides = |extra: &[&str]| -> Vec<String> {
        let mut all = vec![
            "optim.epochs=2".to_string(),
            format!(
                "run.output_dir={:?}",
                dir.path().join("runs").display().to_string()
            ),
        ];
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    let config = Config::parse(&path, &config_text, &overrides(&[])).unwrap();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap();
    assert_eq!(summary.samples, [300, 100, rows.len() - 400]);

    // Only a validation file: the test split is drawn from the source.
    let only_validation = config_text.replace(", test_source = \"test.csv\"", ", test = 0.1");
    let config = Config::parse(&path, &only_validation, &overrides(&[])).unwrap();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap();
    assert_eq!(summary.samples, [270, 100, 30]);

    let err = Config::parse(
        &path,
        &config_text,
        &overrides(&["data.split.column=\"fold\""]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("data.split.validation_source") && err.contains("not both"),
        "{err}"
    );
    // run.monitor: the best checkpoint is the epoch of the lowest validation weight MAE,
    // and that checkpoint alone re-evaluates the validation file to the summary's numbers.
    let config = Config::parse(
        &path,
        &config_text,
        &overrides(&["optim.epochs=8", "run.monitor=\"weight/mae\""]),
    )
    .unwrap();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap();
    let lines = std::fs::read_to_string(summary.run_dir.join("metrics.jsonl")).unwrap();
    let maes: Vec<f64> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["validation"]["metrics"]["axes"][1]["mae"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let lowest = maes.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(maes[summary.best_epoch - 1], lowest, "{maes:?}");
    let weight = |e: &ldl::train::Evaluation| e.metrics.axis("weight").unwrap().mae.unwrap();
    assert_eq!(weight(&summary.best_validation), lowest);
    let trained = ldl::train::TrainedModel::load(
        &summary.run_dir.join("checkpoints/best.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let again = trained.evaluate_file(&dir.path().join("val.csv")).unwrap();
    assert!(
        (weight(&again) - lowest).abs() < 1e-9,
        "{} vs {lowest}",
        weight(&again)
    );
    for (monitor, expected) in [
        ("hight/mae", "`hight` is not an axis"),
        ("weight/accuracy", "use `weight/mae`"),
        ("weight", "use `loss`"),
    ] {
        let err = Config::parse(
            &path,
            &config_text,
            &overrides(&[&format!("run.monitor=\"{monitor}\"")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`run.monitor`") && err.contains(expected),
            "{err}"
        );
    }

    let missing = config_text.replace("val.csv", "nowhere.csv");
    let config = Config::parse(&path, &missing, &overrides(&[])).unwrap();
    let err = train(&config, &ldl::train::StopToken::new(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("nowhere.csv"), "{err}");
}

/// Fine-tuning with `model.init_from`: matching tensors load, a head with another number
/// of bins starts fresh, tensors of axes the task lacks are skipped, and a backbone of
/// another shape is an error naming the tensor.
#[test]
fn init_from_loads_matching_tensors_and_reports_the_rest() {
    let output = tempfile::tempdir().unwrap();
    let out = format!("run.output_dir={:?}", output.path().display().to_string());
    let parse = |text: &str, extra: &[&str]| {
        let mut overrides = vec!["optim.epochs=2".to_string(), out.clone()];
        overrides.extend(extra.iter().map(|s| s.to_string()));
        Config::parse(Path::new("configs/bdims.toml"), text, &overrides).unwrap()
    };
    let pretrained = train(
        &parse(BDIMS, &[]),
        &ldl::train::StopToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let checkpoint = pretrained.run_dir.join("checkpoints/best.safetensors");
    // The new task: height renamed (a new head; the old one is skipped), weight on a
    // coarser grid (41 bins instead of 81: a new head), age unchanged (loaded).
    let task = BDIMS
        .replace("name = \"height\"", "name = \"stature\"")
        .replace("height = { value", "stature = { value")
        .replacen("max = 120\nstep = 1", "max = 120\nstep = 2", 1);
    assert!(task.contains("stature = { value") && task.contains("step = 2"));
    let init = format!("model.init_from={:?}", checkpoint.display().to_string());
    let summary = train(
        &parse(&task, &[&init]),
        &ldl::train::StopToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let report = summary.init.clone().expect("an init report");
    // Each axis has an MLP of its own (`model.trunk = "per-axis"`), so stature's is new
    // and height's is skipped with its head.
    let trunk = |axis: &str| {
        let leaves = [
            "bias",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "weight",
        ];
        // bdims.toml's two hidden layers.
        (0..2)
            .flat_map(|layer| leaves.map(|leaf| format!("backbone.{axis}.layers.{layer}.{leaf}")))
            .collect::<Vec<_>>()
    };
    // A head's linear path is new with its head, though its shape (a weight per feature)
    // is the same for weight's 41 bins as for its 81.
    let head = |axis: &str| {
        ["bias", "linear_path.weight", "weight"].map(|leaf| format!("heads.{axis}.{leaf}"))
    };
    let mut new = trunk("stature").to_vec();
    new.extend(head("stature"));
    new.extend(head("weight"));
    assert_eq!(report.new, new);
    let mut skipped = trunk("height").to_vec();
    skipped.extend(head("height"));
    assert_eq!(report.skipped, skipped);
    assert!(report
        .loaded
        .contains(&"heads.age.linear_path.weight".to_string()));
    assert!(report.loaded.iter().any(|n| n.starts_with("backbone.")));
    assert!(report.loaded.contains(&"heads.age.weight".to_string()));
    assert!(report.loaded.iter().all(|n| !n.starts_with("heads.weight")));

    // Resuming keeps the report.
    let resumed = ldl::train::resume(
        &summary.run_dir,
        &["optim.epochs=3".to_string()],
        &ldl::train::StopToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resumed.init.as_ref(), Some(&report));

    let wider = train(
        &parse(&task, &[&init, "model.hidden=[48]"]),
        &ldl::train::StopToken::new(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        wider.contains("backbone.") && wider.contains("shape"),
        "{wider}"
    );
}

/// `export_run` writes the model folder: the best checkpoint as it is, ldl.toml with the
/// task and model, a model card with the results, and no local data paths.
#[test]
fn a_finished_run_exports_as_a_model_folder() {
    let output = tempfile::tempdir().unwrap();
    let overrides = vec![
        "optim.epochs=2".to_string(),
        format!("run.output_dir={:?}", output.path().display().to_string()),
    ];
    let config = Config::parse(Path::new("configs/bdims.toml"), BDIMS, &overrides).unwrap();
    let summary = train(&config, &ldl::train::StopToken::new(), &mut |_| {}).unwrap();
    let folder = output.path().join("model");
    let files = ldl::train::export_run(&summary.run_dir, &folder, IfExists::Refuse).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ldl::train::MODEL_FILES);
    // The exported checkpoint holds the same tensors and loads on its own, and no file of
    // the folder names this machine's folders (the run's output folder was absolute).
    let local = output.path().display().to_string();
    let best = summary.run_dir.join("checkpoints/best.safetensors");
    assert!(std::fs::read_to_string(summary.run_dir.join("config.toml"))
        .unwrap()
        .contains(&local));
    let (original, _) = ldl::models::read_checkpoint(&best, &Device::Cpu).unwrap();
    let (exported, _) =
        ldl::models::read_checkpoint(&folder.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(original.len(), exported.len());
    for (name, tensor) in &original {
        assert_eq!(
            common::to_vec(tensor),
            common::to_vec(&exported[name]),
            "{name}"
        );
    }
    let trained =
        ldl::train::TrainedModel::load(&folder.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(trained.config.run.output_dir, Path::new("runs"));
    for file in ldl::train::MODEL_FILES {
        let bytes = std::fs::read(folder.join(file)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&local), "{file} names a local folder");
    }
    let description: toml::Value =
        toml::from_str(&std::fs::read_to_string(folder.join("ldl.toml")).unwrap()).unwrap();
    assert_eq!(description["task"]["axes"].as_array().unwrap().len(), 3);
    assert_eq!(description["model"]["backbone"].as_str(), Some("mlp"));
    let card = std::fs::read_to_string(folder.join("README.md")).unwrap();
    assert!(
        card.contains("| weight | linear | kg | 40 to 120, step 1 |"),
        "{card}"
    );
    let validation_mae = summary
        .best_validation
        .metrics
        .axis("height")
        .unwrap()
        .mae
        .unwrap();
    assert!(
        card.contains(&format!("| validation | height | {validation_mae:.3} cm |")),
        "{card}"
    );
    assert!(card.contains("`builtin:bdims`"));
    // A file with no rows evaluates to an error, not to a loss of 0.
    let header_only = output.path().join("empty.csv");
    std::fs::write(
        &header_only,
        ldl::data::builtin_csv("bdims")
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let err = trained
        .evaluate_file(&header_only)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("empty.csv: has a header row but no rows of samples under it"),
        "{err}"
    );
    let err = ldl::train::export_run(output.path(), &folder, IfExists::Replace)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ldl train"), "{err}");

    // A second export into the folder replaces nothing unless asked to.
    let card_before = std::fs::read(folder.join("README.md")).unwrap();
    std::fs::write(folder.join("README.md"), "the user's own card").unwrap();
    let err = ldl::train::export_run(&summary.run_dir, &folder, IfExists::Refuse)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already holds model.safetensors, ldl.toml, README.md; give --force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("README.md")).unwrap(),
        "the user's own card"
    );
    ldl::train::export_run(&summary.run_dir, &folder, IfExists::Replace).unwrap();
    assert_eq!(
        std::fs::read(folder.join("README.md")).unwrap(),
        card_before
    );
}

/// `compare` on a label space with a categorical axis reports its accuracy.
#[test]
fn compare_reports_accuracy_on_categorical_axes() {
    let output = tempfile::tempdir().unwrap();
    let text = BDIMS
        .replace(
            "[[task.axes]]\nname = \"age\"",
            "[[task.axes]]\nname = \"sex\"\nkind = \"categorical\"\nclasses = [\"female\", \"male\"]\n\n[[task.axes]]\nname = \"age\"",
        )
        .replace(
            "age = { value = \"age_years\" }",
            "age = { value = \"age_years\" }\nsex = { class = \"sex\" }",
        );
    let config = Config::parse(
        Path::new("configs/bdims.toml"),
        &text,
        &["optim.epochs=2".to_string()],
    )
    .unwrap();
    assert_eq!(config.task.axes[0].name, "sex");
    let out = output.path().join("comparison");
    let comparison = ldl::train::compare(
        &config,
        &["full-kl".to_string()],
        1,
        &out,
        &ldl::train::StopToken::new(),
        &mut |_, _| {},
    )
    .unwrap();
    let sex = &comparison.results[0].axes[0];
    assert_eq!(
        (sex.axis.as_str(), sex.metric.as_str()),
        ("sex", "accuracy")
    );
    assert!((0.0..=1.0).contains(&sex.best_value.mean));
    assert!(sex.best_epsilon_error.is_none());
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("| full-kl | sex | accuracy |"), "{table}");
}

#[test]
fn bf16_is_refused_on_the_cpu_and_unknown_precisions_by_name() {
    let err = config_error(BDIMS, &["run.precision=\"bf16\""]);
    assert!(
        err.contains("`run.precision`") && err.contains("needs a CUDA device"),
        "{err}"
    );
    let err = config_error(BDIMS, &["run.precision=\"fp16\""]);
    assert!(err.contains("fp16") && err.contains("bf16"), "{err}");
    // With `auto` the config cannot tell; training refuses once `auto` gave the CPU, before
    // reading any data or writing a run folder.
    let output = tempfile::tempdir().unwrap();
    let overrides = vec![
        "run.precision=\"bf16\"".to_string(),
        "run.device=\"auto\"".to_string(),
        format!("run.output_dir={:?}", output.path().display().to_string()),
    ];
    let config = Config::parse(Path::new("configs/bdims.toml"), BDIMS, &overrides).unwrap();
    assert_eq!(config.run.precision, ldl::models::Precision::Bf16);
    if ldl::models::device("auto").unwrap().is_cpu() {
        let err = train(&config, &ldl::train::StopToken::new(), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs a CUDA device") && err.contains("auto"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(output.path()).unwrap().count(), 0);
    }
}

const QUICKSTART: &str = include_str!("../configs/quickstart.toml");

/// The memory an 8 GiB machine allows by default (three quarters of it), set explicitly
/// so that the tests do not depend on the machine running them.
const EIGHT_GIB_MACHINE: &str = "run.memory_limit=\"6GiB\"";

/// Sizes each inside its key's range whose product cannot fit: an MLP of 64 layers
/// 65,536 wide, an axis of 10⁷ bins, 2²⁴ synthetic faces. Each is refused by the check,
/// before anything in proportion to it is allocated, with the estimate, the limit and
/// what to change; raising the limit lets the check pass.
#[test]
fn configs_that_cannot_fit_in_memory_are_refused_with_their_estimate() {
    let hidden = format!("model.hidden=[{}]", vec!["65536"; 64].join(", "));
    let bins = BDIMS.replace("max = 120", "max = 10000040");
    let cases: [(&str, &str, &[&str]); 3] = [
        (BDIMS, "the model's", &[&hidden]),
        (
            &bins,
            "targets and outputs of one batch over",
            &[EIGHT_GIB_MACHINE],
        ),
        (
            QUICKSTART,
            "16777216 synthetic faces",
            &["data.faces.count=16777216", EIGHT_GIB_MACHINE],
        ),
    ];
    for (text, largest, overrides) in cases {
        let err = config_error(text, overrides);
        assert!(
            err.contains("`run.memory_limit`: this run would take about"),
            "{err}"
        );
        assert!(err.contains(largest), "{err}");
        assert!(err.contains("more than the limit of"), "{err}");
        assert!(err.contains("LDL_MEMORY_LIMIT"), "{err}");
        let raised: Vec<String> = overrides
            .iter()
            .map(|o| o.to_string())
            .filter(|o| !o.starts_with("run.memory_limit"))
            .chain(["run.memory_limit=\"64TiB\"".to_string()])
            .collect();
        if let Err(e) = Config::parse(Path::new("task.toml"), text, &raised) {
            panic!("{largest}, with the limit raised: {e}");
        }
    }
    let err = config_error(
        QUICKSTART,
        &["data.faces.count=16777216", EIGHT_GIB_MACHINE],
    );
    assert!(
        err.contains("the limit of 6.0 GiB (run.memory_limit)"),
        "{err}"
    );
    let bad = config_error(BDIMS, &["run.memory_limit=\"lots\""]);
    assert!(
        bad.contains("memory_limit") && bad.contains("24GiB"),
        "{bad}"
    );
}

/// Every ready config fits the memory of an 8 GiB machine.
#[test]
fn every_ready_config_fits_an_eight_gib_machine() {
    for entry in std::fs::read_dir("configs").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Config::parse(&path, &text, &[EIGHT_GIB_MACHINE.to_string()]) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// `data.loader_threads` beyond any machine's need is refused, naming the key; within
/// the bound it is accepted (and lowered to four per core when the run starts).
#[test]
fn loader_threads_beyond_the_bound_are_refused() {
    let err = config_error(QUICKSTART, &["data.loader_threads=100000"]);
    assert!(
        err.contains("`data.loader_threads`: must be at most 256, got 100000"),
        "{err}"
    );
    let config = Config::parse(
        Path::new("q.toml"),
        QUICKSTART,
        &["data.loader_threads=256".into()],
    )
    .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(config.data.decoding_threads(), 256.min((4 * cores).max(4)));
}

/// `ldl export` on something that is not a finished run folder says what it is instead:
/// missing, a file, or a folder without a checkpoint.
#[test]
fn export_names_what_the_path_is_when_it_is_not_a_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("best.safetensors");
    std::fs::write(&file, b"not a checkpoint").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("out");
    for (path, expected) in [
        (dir.path().join("nowhere"), "does not exist"),
        (file, "is a file, not a run folder"),
        (empty, "has no checkpoints/best.safetensors"),
    ] {
        let err = ldl::train::export_run(&path, &out, ldl::train::IfExists::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(expected),
            "{err}"
        );
        assert!(!out.exists(), "nothing is written");
    }
}
