//! `[data] source = "hub"` through the library: a parquet file written here, served by a
//! fake hub on 127.0.0.1, becomes samples (labels from its columns, images as encoded
//! bytes that decode to the source pixels); wrong columns, types and splits are named.
//! No real network is used.

#[path = "../crates/ldl-hub/tests/support/fake_hub.rs"]
mod fake_hub;
#[path = "../crates/ldl-hub/tests/support/parquet_file.rs"]
mod parquet_file;

use std::path::Path;

use ldl::data::{decode_bytes, Input};
use ldl::hub::Hub;
use ldl::train::{read_hub_split, CheckedConfig, Config};
use ldl::Label;
use parquet_file::{parquet_bytes, png, Column};

/// Rows `from..to`: an image struct, an age (float), a gender (int), a race (string).
fn faces(from: u32, to: u32) -> Vec<u8> {
    parquet_bytes(&[
        (
            "image",
            Column::Image((from..to).map(|i| Some(png(9, i).0)).collect()),
        ),
        (
            "age",
            Column::Float((from..to).map(|i| 18.0 + 1.5 * i as f32).collect()),
        ),
        (
            "gender",
            Column::Int((from..to).map(|i| (i % 2) as i64).collect()),
        ),
        (
            "race",
            Column::Text((from..to).map(|i| format!("r{}", i % 3)).collect()),
        ),
    ])
}

fn config(dir: &Path, data: &str) -> Result<CheckedConfig, String> {
    let text = format!(
        r#"
[task]
name = "faces"
[[task.axes]]
name = "age"
min = 0
max = 100
step = 1
[[task.axes]]
name = "gender"
kind = "categorical"
classes = ["male", "female"]

[data]
source = "hub"
image_size = 32
{data}

[model]
backbone = "tiny-age-net"
"#
    );
    Config::parse(&dir.join("faces.toml"), &text, &[]).map_err(|e| e.to_string())
}

const MAPPING: &str = r#"
image_column = "image"
[data.hub]
dataset = "ldl-rs/faces"
[data.labels]
age = { value = "age" }
gender = { class = "gender" }
"#;

struct Served {
    fake: fake_hub::FakeHub,
    cache: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Served {
    fn new() -> Served {
        let fake = fake_hub::FakeHub::start();
        fake.add_dataset(
            "ldl-rs/faces",
            "refs/convert/parquet",
            &[
                ("default/train/0000.parquet", &faces(0, 3)),
                ("default/train/0001.parquet", &faces(3, 5)),
                ("default/test/0000.parquet", &faces(5, 7)),
            ],
        );
        Served {
            fake,
            cache: tempfile::tempdir().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn hub(&self) -> Hub {
        Hub::default()
            .endpoint(self.fake.endpoint())
            .cache_dir(self.cache.path())
            .retries(0)
    }

    fn read(&self, data: &str, split: &str) -> Result<ldl::data::Table, String> {
        let config = config(self.dir.path(), data)?;
        let space = config.label_space().unwrap();
        read_hub_split(&config, &self.hub(), split, &space).map_err(|e| e.to_string())
    }
}

#[test]
fn rows_become_samples_with_their_labels_and_pixels() {
    let served = Served::new();
    let table = served.read(MAPPING, "train").unwrap();
    assert_eq!(table.samples.len(), 5);
    assert!(table.skipped.is_empty());
    for (i, sample) in table.samples.iter().enumerate() {
        let age = 18.0 + 1.5 * i as f64;
        assert_eq!(
            sample.labels,
            [
                Label::Value {
                    value: age,
                    std: None
                },
                Label::Class(i % 2)
            ],
            "row {i}"
        );
        let Input::ImageBytes(bytes) = &sample.input else {
            panic!("sample {i}: {:?}", sample.input)
        };
        let (encoded, pixels) = png(9, i as u32);
        assert_eq!(bytes.as_ref(), encoded.as_slice());
        let decoded = decode_bytes(bytes).unwrap();
        assert_eq!((decoded.width, decoded.height), (9, 9));
        assert_eq!(decoded.pixels, pixels, "sample {i}");
    }
    assert_eq!(
        table.samples[3].origin.to_string(),
        "hf://datasets/ldl-rs/faces/default/train/0001.parquet row 0"
    );

    // Another split of the dataset.
    let test = served.read(MAPPING, "test").unwrap();
    assert_eq!(test.samples.len(), 2);
    assert_eq!(
        test.samples[1].labels[0],
        Label::Value {
            value: 18.0 + 1.5 * 6.0,
            std: None
        }
    );
}

#[test]
fn tabular_features_from_numeric_columns() {
    let served = Served::new();
    let data = r#"
features = ["gender"]
[data.hub]
dataset = "ldl-rs/faces"
[data.labels]
age = { value = "age" }
"#;
    // Features are read by an MLP (the default backbone). The gender column is an input
    // here, so it is no label (a label column cannot also be a feature).
    let full = format!(
        "[task]\nname = \"t\"\n[[task.axes]]\nname = \"age\"\nmin = 0\nmax = 100\nstep = 1\n\
         [data]\nsource = \"hub\"\n{data}"
    );
    let config = Config::parse(&served.dir.path().join("t.toml"), &full, &[]).unwrap();
    let space = config.label_space().unwrap();
    let table = read_hub_split(&config, &served.hub(), "train", &space).unwrap();
    assert_eq!(table.feature_names, ["gender"]);
    let features: Vec<Input> = table.samples.iter().map(|s| s.input.clone()).collect();
    let expected: Vec<Input> = (0..5)
        .map(|i| Input::Features(vec![(i % 2) as f32]))
        .collect();
    assert_eq!(features, expected);
}

#[test]
fn wrong_columns_types_and_splits_are_named() {
    let served = Served::new();
    let file = "hf://datasets/ldl-rs/faces/default/train/0000.parquet";

    let e = served
        .read(
            &MAPPING.replace("{ value = \"age\" }", "{ value = \"apparent_age\" }"),
            "train",
        )
        .unwrap_err();
    assert_eq!(
        e,
        format!(
            "{file}: no column `apparent_age`; the columns are: image (image struct {{bytes, \
             path}}), age (number), gender (number), race (string)"
        )
    );

    let e = served
        .read(
            &MAPPING.replace("{ value = \"age\" }", "{ value = \"race\" }"),
            "train",
        )
        .unwrap_err();
    assert_eq!(
        e,
        format!("{file}: column `race` has type string; this column must hold numbers (integers or floats)")
    );

    let e = served
        .read(
            &MAPPING.replace("image_column = \"image\"", "image_column = \"age\""),
            "train",
        )
        .unwrap_err();
    assert!(
        e.starts_with(&format!("{file}: column `age` has type number; an image column must hold encoded JPEG or PNG images")),
        "{e}"
    );

    let e = served.read(MAPPING, "validation").unwrap_err();
    assert!(
        e.contains("no parquet files for config `default`, split `validation`")
            && e.contains("it has: config `default` split `test`, config `default` split `train`"),
        "{e}"
    );

    // A class index out of range is a bad row, named by file and row.
    let e = served
        .read(
            &MAPPING.replace("{ class = \"gender\" }", "{ class = \"race\" }"),
            "train",
        )
        .unwrap_err();
    assert!(
        e.starts_with(&format!(
            "{file}: row 0: axis `gender`: `r0` is not one of its classes"
        )),
        "{e}"
    );
}

#[test]
fn hub_keys_are_checked_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let e = config(dir.path(), "image_column = \"image\"\n[data.labels]\nage = { value = \"age\" }\ngender = { class = \"g\" }").unwrap_err();
    assert!(
        e.contains("`data.source`: `hub` reads a Hub dataset: add [data.hub]"),
        "{e}"
    );
    let e = config(
        dir.path(),
        &MAPPING.replace("dataset = \"ldl-rs/faces\"", "dataset = \"faces\""),
    )
    .unwrap_err();
    assert!(
        e.contains("`data.hub.dataset`: `faces` is not a dataset"),
        "{e}"
    );
    let e = config(
        dir.path(),
        &MAPPING.replace(
            "dataset = \"ldl-rs/faces\"",
            "dataset = \"ldl-rs/faces\"\nvalidation_split = \"train\"",
        ),
    )
    .unwrap_err();
    assert!(
        e.contains("`data.hub.validation_split`: `train` is also the training split"),
        "{e}"
    );
    let e = config(
        dir.path(),
        &MAPPING.replace(
            "dataset = \"ldl-rs/faces\"",
            "dataset = \"ldl-rs/faces\"\nvalidation_split = \"test\"\ntest_split = \"test\"",
        ),
    )
    .unwrap_err();
    assert!(
        e.contains("`data.hub.test_split`: `test` is also the validation split"),
        "{e}"
    );
}
