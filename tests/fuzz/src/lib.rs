//! The fuzz targets' bodies: each hands arbitrary bytes to one of the parsers that read
//! files a user may have been given (task configs, CSV/JSONL manifests, images,
//! checkpoints) and then uses whatever the parser accepted, the way `ldl` would.
//!
//! A target passes when it returns: an `Err` is the expected answer to bad input, while
//! a panic, an abort or an unbounded allocation is a failure. Each returns the message a
//! user would see, so the replay test can check that refusals say something.
//!
//! `cargo fuzz run --fuzz-dir tests/fuzz NAME` runs them under libFuzzer;
//! `tests/untrusted_input.rs` replays `tests/fuzz/seeds/NAME/*` and
//! `tests/fuzz/regressions/NAME/*` on stable Rust.
#![allow(missing_docs)]

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use ldl::data::{
    parse_csv, parse_jsonl, Augment, ImagePipeline, InputColumns, LabelColumns, OnBadSample,
    TableSpec,
};
use ldl::models::BackboneConfig;
use ldl::{Axis, LabelSpace};

/// What a target made of its input: `Ok` with a short description of what was accepted,
/// or the error message a user would see.
pub type Outcome = Result<String, String>;

/// A task config: parse (with the line-numbered errors and suggestions) and check, which
/// builds everything the trainer derives from it before reading data.
pub fn config(data: &[u8]) -> Outcome {
    // Through a file, as `ldl train` reads it: reading (UTF-8) is part of what is tested.
    let path = scratch_file("config.toml", data)?;
    let loaded = ldl::train::Config::load(&path, &[]);
    let _ = std::fs::remove_file(&path);
    let config = loaded.map_err(|e| e.to_string())?;
    let space = config.space();
    // What a model of this config would store, without building it.
    let elements = config.backbone(3).stored_elements(space);
    Ok(format!("{} heads, {elements} numbers", space.heads().len()))
}

/// A manifest: the first byte picks CSV or JSONL and features or an image column; the
/// rest is the file. The label space has a linear, a circular and a categorical axis, so
/// every kind of label column is parsed.
pub fn manifest(data: &[u8]) -> Outcome {
    let Some((&selector, rest)) = data.split_first() else {
        return Err("empty input".into());
    };
    let text = std::str::from_utf8(rest).map_err(|e| format!("not UTF-8: {e}"))?;
    let space = manifest_space();
    let input = if selector & 2 == 0 {
        InputColumns::Features(vec!["x".into(), "y".into()])
    } else {
        InputColumns::Image("image".into())
    };
    let spec = TableSpec::new(input)
        .with_label(
            "age",
            LabelColumns::Value {
                value: "age".into(),
                std: Some("age_std".into()),
            },
        )
        .with_label(
            "yaw",
            LabelColumns::Value {
                value: "yaw".into(),
                std: None,
            },
        )
        .with_label("sex", LabelColumns::Class("sex".into()))
        .with_group("subject");
    let policy = if selector & 4 == 0 {
        OnBadSample::Error
    } else {
        OnBadSample::Skip
    };
    // Image paths are checked against the manifest's folder: the seeds' images exist there.
    let folder = scratch_dir()?;
    for image in SEED_IMAGES {
        let path = folder.join(image);
        if !path.exists() {
            std::fs::create_dir_all(path.parent().unwrap_or(&folder))
                .and_then(|_| std::fs::write(&path, b""))
                .map_err(|e| format!("scratch image: {e}"))?;
        }
    }
    let path = folder.join("manifest");
    let path = path.as_path();
    let table = if selector & 1 == 0 {
        parse_csv(path, text, &spec, &space, policy)
    } else {
        parse_jsonl(path, text, &spec, &space, policy)
    }
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "{} samples, {} skipped",
        table.samples.len(),
        table.skipped.len()
    ))
}

fn manifest_space() -> LabelSpace {
    let axes = || -> ldl::Result<Vec<Axis>> {
        Ok(vec![
            Axis::linear("age", 0.0, 100.0, 1.0)?,
            Axis::circular("yaw", -180.0, 360.0, 10.0)?,
            Axis::categorical("sex", ["f", "m"])?,
        ])
    };
    LabelSpace::new(axes().expect("fixed axes are valid")).expect("fixed space is valid")
}

/// An image file: decode it as `ldl` does (JPEG or PNG, size limits), then resize, crop,
/// augment and normalise it at 32 px.
pub fn image(data: &[u8]) -> Outcome {
    let path = scratch_file("image", data)?;
    let decoded = ldl::data::decode(&path);
    let _ = std::fs::remove_file(&path);
    let image = decoded.map_err(|e| e.to_string())?;
    let pipeline = ImagePipeline::new(32);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let (pixels, _) = pipeline
        .process(&image, &Augment::dldl_v2(), Some(&mut rng))
        .map_err(|e| e.to_string())?;
    if pixels.iter().any(|v| !v.is_finite()) {
        // Not a parser error but silently wrong numbers: fail loudly.
        panic!("the pipeline produced a non-finite pixel");
    }
    Ok(format!("{}×{} image", image.width, image.height))
}

/// A checkpoint file: load it as `ldl predict` does (header, model rebuilt from it,
/// tensors checked against it) and run the model on one input.
pub fn checkpoint(data: &[u8]) -> Outcome {
    let path = scratch_file("checkpoint.safetensors", data)?;
    let device = candle_core::Device::Cpu;
    let loaded = ldl::train::TrainedModel::load(&path, &device);
    let _ = std::fs::remove_file(&path);
    let trained = loaded.map_err(|e| e.to_string())?;
    let shape = match &trained.info.model {
        BackboneConfig::Mlp(mlp) => vec![1, mlp.inputs],
        BackboneConfig::Vgg(vgg) => vec![1, vgg.input_channels, 32, 32],
    };
    let input = Tensor::zeros(shape, DType::F32, &device).map_err(|e| e.to_string())?;
    let logits = trained
        .model
        .forward_t(&input, false)
        .map_err(|e| e.to_string())?;
    let heads = trained.info.label_space.heads();
    if logits.len() != heads.len() {
        panic!("{} heads but {} logit tensors", heads.len(), logits.len());
    }
    Ok(format!("{} heads", heads.len()))
}

/// The image files the manifest seeds name, relative to the manifest.
const SEED_IMAGES: [&str; 3] = ["a.png", "img/1.jpg", "img/with,comma.png"];

/// The folder of this process and thread for the files the targets write (the replay
/// test runs targets on several threads at once).
fn scratch_path() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    std::env::temp_dir().join(format!("ldl-fuzz-{}-{thread}", std::process::id()))
}

fn scratch_dir() -> Result<PathBuf, String> {
    let dir = scratch_path();
    std::fs::create_dir_all(&dir).map_err(|e| format!("scratch folder: {e}"))?;
    Ok(dir)
}

/// Removes the calling thread's scratch folder.
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_path());
}

/// Writes `data` to a file in the scratch folder, so the parsers that take a path see
/// exactly these bytes.
fn scratch_file(name: &str, data: &[u8]) -> Result<PathBuf, String> {
    let path = scratch_dir()?.join(name);
    std::fs::write(&path, data).map_err(|e| format!("scratch file: {e}"))?;
    Ok(path)
}
