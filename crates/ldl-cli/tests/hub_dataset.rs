//! `ldl train` on a Hub dataset (`[data] source = "hub"`) end to end, against a fake hub on
//! 127.0.0.1 serving parquet files written here: a TinyAgeNet trains on a tiny budget, a
//! bad image is skipped and named by file and row, and a second run works from the cache
//! with the server stopped and HF_HUB_OFFLINE=1. The Hub settings reach the command through
//! its environment, set per child process.

#[path = "../../ldl-hub/tests/support/fake_hub.rs"]
mod fake_hub;
#[path = "../../ldl-hub/tests/support/parquet_file.rs"]
mod parquet_file;

use std::path::Path;
use std::process::{Command, Output};

use parquet_file::{parquet_bytes, Column};

/// A 40×40 PNG whose brightness grows with `age`.
fn face(age: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(40, 40, |x, y| {
        let v = (age * 3 + (x + y) % 7) as u8;
        image::Rgb([v, v, v])
    });
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// Rows `from..to`; the row `bad` (if any) holds bytes that are no image.
fn faces(from: u32, to: u32, bad: Option<u32>) -> Vec<u8> {
    let ages: Vec<u32> = (from..to).map(|i| 10 + 3 * i).collect();
    parquet_bytes(&[
        (
            "image",
            Column::Image(
                (from..to)
                    .zip(&ages)
                    .map(|(i, &age)| {
                        Some(if Some(i) == bad {
                            b"not an image".to_vec()
                        } else {
                            face(age)
                        })
                    })
                    .collect(),
            ),
        ),
        (
            "age",
            Column::Float(ages.iter().map(|&a| a as f32).collect()),
        ),
    ])
}

const CONFIG: &str = r#"
[task]
name = "hubfaces"
[[task.axes]]
name = "age"
unit = "years"
min = 0
max = 100
step = 1

[data]
source = "hub"
image_column = "image"
image_size = 32
on_bad_sample = "skip"
[data.hub]
dataset = "me/faces"
validation_split = "test"
[data.labels]
age = { value = "age" }

[model]
backbone = "tiny-age-net"

[optim]
batch_size = 8
epochs = 1

[run]
output_dir = "runs"
"#;

fn ldl(dir: &Path, endpoint: &str, extra: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ldl"));
    command
        .args(["train", "task.toml", "--quiet"])
        .current_dir(dir)
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env("HF_HOME", dir.join("hf-home"))
        .env("HF_HUB_CACHE", dir.join("hf-cache"))
        .env("HF_ENDPOINT", endpoint);
    for (k, v) in extra {
        command.env(k, v);
    }
    command.output().expect("run ldl")
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn ldl_trains_on_a_hub_dataset_and_again_from_the_cache_offline() {
    let mut fake = fake_hub::FakeHub::start();
    fake.add_dataset(
        "me/faces",
        "refs/convert/parquet",
        &[
            ("default/train/0000.parquet", &faces(0, 12, None)),
            ("default/train/0001.parquet", &faces(12, 20, Some(14))),
            ("default/test/0000.parquet", &faces(20, 24, None)),
        ],
    );
    let endpoint = fake.endpoint();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("task.toml"), CONFIG).unwrap();

    let out = ldl(dir.path(), &endpoint, &[]);
    assert!(
        out.status.success(),
        "ldl train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = summary(&dir.path().join("runs/hubfaces-1"));
    assert_eq!(first["samples"], serde_json::json!([20, 4, 0]), "{first}");
    let skipped = first["skipped"].to_string();
    assert!(
        skipped.contains("hf://datasets/me/faces/default/train/0001.parquet row 2"),
        "{skipped}"
    );
    assert!(skipped.contains("cannot decode the image"), "{skipped}");
    assert!(first["best_validation"]["metrics"]
        .to_string()
        .contains("mae"));

    // The server gone and offline: the cached files are used.
    fake.stop();
    let out = ldl(dir.path(), &endpoint, &[("HF_HUB_OFFLINE", "1")]);
    assert!(
        out.status.success(),
        "offline ldl train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = summary(&dir.path().join("runs/hubfaces-2"));
    assert_eq!(second["samples"], first["samples"]);

    // A dataset that was never fetched: offline says how to get it.
    std::fs::write(
        dir.path().join("task.toml"),
        CONFIG.replace("me/faces", "me/other"),
    )
    .unwrap();
    let out = ldl(dir.path(), &endpoint, &[("HF_HUB_OFFLINE", "1")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the parquet files of dataset me/other (revision refs/convert/parquet) are not in the cache")
            && err.contains("unset HF_HUB_OFFLINE"),
        "{err}"
    );
}
