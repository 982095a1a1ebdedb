//! The fuzz targets' bodies: each hands arbitrary bytes to one of the parsers that read
//! files a user may have been given (task configs, CSV/JSONL manifests, images,
//! checkpoints, a Hub dataset's parquet files) or values a Hub sends (headers, dataset
//! listings) and then uses whatever the parser accepted, the way `ldl` would.
//!
//! A target passes when it returns: an `Err` is the expected answer to bad input, while
//! a panic, an abort or an unbounded allocation is a failure. Each returns the message a
//! user would see, so the replay test can check that refusals say something.
//!
//! `cargo fuzz run --fuzz-dir tests/fuzz NAME` runs them under libFuzzer;
//! `tests/untrusted_input.rs` replays `tests/fuzz/seeds/NAME/*` and
//! `tests/fuzz/regressions/NAME/*` on stable Rust.
#![allow(missing_docs)]

use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Tensor};
use ldl::data::{
    parse_csv, parse_jsonl, Augment, ImagePipeline, InputColumns, LabelColumns, OnBadSample,
    TableSpec,
};
use ldl::hub::checks::{check_listing, check_response, ResponseSummary};
use ldl::hub::{ColumnKind, ReadBudget, Value};
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

/// What a Hub, a mirror or a proxy sends that becomes a path in the cache, a bound on a
/// download or a request carrying the token. Two forms, by the first line:
///
/// - `STATUS URL`, then header lines `Name: value`: the answer to the metadata request of
///   the file at URL (ETag, X-Linked-Etag, X-Repo-Commit, Content-Length, X-Linked-Size,
///   Location);
/// - `LIST CONFIG SPLIT`, then a dataset listing's JSON: the files of that split.
///
/// What is accepted must be safe to use, or the target panics: a commit is 40 lowercase
/// hex digits, a blob id 40 or 64, a size at most the limit, a redirect on the host asked,
/// and a file name joined to a folder stays inside it.
pub fn hub_response(data: &[u8]) -> Outcome {
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    // ldl reads header values as text, bytes that are not UTF-8 replaced.
    let first = String::from_utf8_lossy(first);
    let words: Vec<&str> = first.split_whitespace().collect();
    if let ["LIST", config, split] = words.as_slice() {
        let files = check_listing(rest, config, split).map_err(|e| e.to_string())?;
        for file in &files {
            assert_stays_inside(file);
        }
        return Ok(format!("{} files", files.len()));
    }
    let [status, url] = words.as_slice() else {
        return Err("the first line is neither `STATUS URL` nor `LIST CONFIG SPLIT`".into());
    };
    let status: u16 = status
        .parse()
        .map_err(|_| format!("`{status}` is not a status"))?;
    let text = String::from_utf8_lossy(rest);
    // As an HTTP client reads them: the name up to the first `:`, the value without the
    // spaces around it; a line without `:` is no header.
    let headers: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name, value.trim_matches([' ', '\t', '\r'])))
        .collect();
    let limit = ldl::hub::DEFAULT_MAX_FILE_SIZE;
    match check_response(status, url, &headers, limit).map_err(|e| e.to_string())? {
        ResponseSummary::Redirect(next) => {
            // The root of the host asked, as ldl's own URL handling writes it.
            let root = match check_response(302, url, &[("Location", "/")], limit) {
                Ok(ResponseSummary::Redirect(root)) => root,
                other => panic!("`/` from {url} is not followed: {other:?}"),
            };
            assert!(
                next.starts_with(&root),
                "a redirect from {url} leads to {next}, off the host {root}"
            );
            Ok(format!("redirect to {next}"))
        }
        ResponseSummary::File(file) => {
            let hex = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            };
            assert!(
                file.commit.len() == 40 && hex(&file.commit),
                "accepted commit {:?}",
                file.commit
            );
            let expected_length = match file.hash {
                "SHA-256" => 64,
                "git SHA-1" => 40,
                other => panic!("an unknown hash {other}"),
            };
            assert!(
                file.blob_id.len() == expected_length && hex(&file.blob_id),
                "accepted blob id {:?} as a {}",
                file.blob_id,
                file.hash
            );
            assert!(
                file.size <= limit,
                "accepted size {} over {limit}",
                file.size
            );
            assert_stays_inside(&format!("blobs/{}", file.blob_id));
            assert_stays_inside(&format!("snapshots/{}", file.commit));
            Ok(format!(
                "{} bytes, {} {}",
                file.size, file.hash, file.blob_id
            ))
        }
    }
}

/// Panics unless `name`, joined to a folder, names a file inside it: plain parts only, no
/// `..`, `.`, root or prefix, no NUL and no backslash.
fn assert_stays_inside(name: &str) {
    let folder = Path::new("/cache/datasets--o--n/snapshots/0");
    let joined = folder.join(name);
    let inside = !name.is_empty()
        && !name.contains(['\0', '\\'])
        && joined.starts_with(folder)
        && joined.components().count() > folder.components().count()
        && joined
            .components()
            .skip(folder.components().count())
            .all(|c| matches!(c, Component::Normal(_)));
    assert!(inside, "the accepted name {name:?} leads out of the folder");
}

/// A parquet file as `ldl` reads a Hub dataset's split: opened (footer checked), then
/// every column ldl can read (numbers, text, binary, images) read within a budget that
/// fits in a fuzzer's memory. What is read must agree with the file's metadata and the
/// budget.
pub fn parquet(data: &[u8]) -> Outcome {
    let path = scratch_file("split.parquet", data)?;
    let outcome = read_parquet(&path);
    let _ = std::fs::remove_file(&path);
    outcome
}

fn read_parquet(path: &Path) -> Outcome {
    let reader = ldl::hub::open_parquet(path, "split.parquet").map_err(|e| e.to_string())?;
    let mut columns: Vec<String> = Vec::new();
    for (name, kind) in reader.schema() {
        if !matches!(kind, ColumnKind::Other(_)) && !columns.contains(name) {
            columns.push(name.clone());
        }
    }
    let before = ReadBudget {
        rows: 1 << 20,
        bytes: 256 << 20,
        value_bytes: 16 << 20,
    };
    let mut budget = before.clone();
    let read = reader
        .read(&columns, &mut budget)
        .map_err(|e| e.to_string())?;
    let rows = read.rows.len() as u64;
    assert!(
        rows <= reader.num_rows(),
        "{rows} rows read, {} in the metadata",
        reader.num_rows()
    );
    assert_eq!(
        budget.rows,
        before.rows - rows,
        "the rows taken from the budget"
    );
    assert!(budget.bytes <= before.bytes, "the byte budget grew");
    assert_eq!(read.columns, columns, "the columns read");
    for row in &read.rows {
        assert_eq!(row.len(), columns.len(), "a row's values");
        for value in row {
            if let Value::Bytes(b) = value {
                assert!(
                    b.len() <= before.value_bytes,
                    "a value of {} bytes",
                    b.len()
                );
            }
        }
    }
    Ok(format!("{rows} rows of {} columns", columns.len()))
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
