//! A trained run through a (fake) Hub: export it, serve the folder, load `hf://owner/name`
//! and predict exactly as the local checkpoint does. No real network is used.

#[path = "../crates/ldl-hub/tests/support/fake_hub.rs"]
mod fake_hub;

use std::path::Path;

use candle_core::Device;
use ldl::hub::{Hub, HubRef};
use ldl::train::{export_run, train, Config, IfExists, Prediction, TrainedModel};

const BDIMS: &str = include_str!("../configs/bdims.toml");

fn tiny_run(output: &Path) -> std::path::PathBuf {
    let overrides = vec![
        "optim.epochs=2".to_string(),
        format!("run.output_dir={:?}", output.display().to_string()),
    ];
    let config = Config::parse(Path::new("configs/bdims.toml"), BDIMS, &overrides).unwrap();
    train(&config, &ldl::train::StopToken::new(), &mut |_| {})
        .unwrap()
        .run_dir
}

fn people(dir: &Path) -> std::path::PathBuf {
    let csv: String = ldl::data::builtin_csv("bdims")
        .unwrap()
        .lines()
        .take(31)
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("people.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Every number of the predictions, as bits.
fn bits(predictions: &[Prediction]) -> Vec<u64> {
    let mut out = Vec::new();
    for p in predictions {
        for a in &p.axes {
            if let Some(v) = a.as_value() {
                out.extend([v.mean, v.std, v.mode].map(f64::to_bits));
            }
            out.extend([a.mode_probability().to_bits(), a.mode_index() as u64]);
        }
        for d in &p.distributions {
            out.extend(d.iter().map(|q| q.to_bits()));
        }
    }
    out
}

#[test]
fn an_exported_run_served_by_the_hub_predicts_bit_for_bit() {
    let output = tempfile::tempdir().unwrap();
    let run_dir = tiny_run(output.path());
    let folder = output.path().join("model");
    export_run(&run_dir, &folder, IfExists::Refuse).unwrap();

    let fake = fake_hub::FakeHub::start();
    fake.add_folder("ldl-rs/bdims", &folder);
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::default()
        .endpoint(fake.endpoint())
        .cache_dir(cache.path())
        .retries(0);
    let hub_ref: HubRef = "hf://ldl-rs/bdims".parse().unwrap();
    let downloaded = hub.resolve(&hub_ref).unwrap();
    assert!(downloaded.starts_with(cache.path()));

    let input = people(output.path());
    let local = TrainedModel::load(&run_dir.join("checkpoints/best.safetensors"), &Device::Cpu)
        .unwrap()
        .predict_file(&input)
        .unwrap();
    let from_hub = TrainedModel::load(&downloaded, &Device::Cpu)
        .unwrap()
        .predict_file(&input)
        .unwrap();
    assert_eq!(local.len(), 30);
    assert_eq!(bits(&from_hub), bits(&local));

    // The fetched folder is the exported one, file for file.
    let fetched = hub.fetch(&"ldl-rs/bdims".parse().unwrap()).unwrap();
    for file in ldl::train::MODEL_FILES {
        assert_eq!(
            std::fs::read(fetched.join(file)).unwrap(),
            std::fs::read(folder.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn hub_paths_are_not_made_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("task.toml");
    let text = BDIMS.replace(
        "[model]\n",
        "[model]\ninit_from = \"hf://ldl-rs/bdims@v1\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path, &[]).unwrap();
    assert_eq!(
        config.model.init_from.as_deref(),
        Some(Path::new("hf://ldl-rs/bdims@v1"))
    );
    // A local path still is.
    let config = Config::load(&path, &["model.init_from=\"init.safetensors\"".into()]).unwrap();
    assert_eq!(
        config.model.init_from.clone().unwrap(),
        std::path::absolute(dir.path().join("init.safetensors")).unwrap()
    );
}

#[test]
fn a_bad_hub_path_names_itself_and_the_expected_form() {
    let err = TrainedModel::load(Path::new("hf://ldl-rs"), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`hf://ldl-rs`"), "{err}");
    assert!(
        err.contains("hf://owner/name[@revision][/path/in/repo]"),
        "{err}"
    );
}
