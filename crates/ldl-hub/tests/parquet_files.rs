//! Parquet files as other tools write them, and files built to break readers: a schema
//! root not named `schema`, `push_to_hub` shards with a fingerprint, a dictionary that
//! repeats a large value, a schema nested tens of thousands deep.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldl_hub::{open_parquet, DatasetSpec, ReadBudget, Value};
use parquet::basic::{Compression, Repetition, Type as Physical};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;
use support::fake_hub::FakeHub;

/// A file of one optional double column `age`, with the schema root named `root`.
fn ages(root: &str, values: &[f64]) -> Vec<u8> {
    let message = format!("message {root} {{ optional double age; }}");
    let schema = Arc::new(parse_message_type(&message).unwrap());
    let mut out = Vec::new();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    let levels = vec![1i16; values.len()];
    column
        .typed::<DoubleType>()
        .write_batch(values, Some(&levels), None)
        .unwrap();
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn numbers(rows: &[Vec<Value>]) -> Vec<f64> {
    rows.iter()
        .map(|r| match r[0] {
            Value::Number(v) => v,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn files_whose_schema_root_has_another_name_are_read() {
    // pyarrow, Spark, DuckDB and Polars name the root differently.
    let dir = tempfile::tempdir().unwrap();
    for root in ["schema", "spark_schema", "duckdb_schema", "root"] {
        let path = write(dir.path(), "f.parquet", &ages(root, &[20.0, 31.5]));
        let reader = open_parquet(&path, "f.parquet").unwrap();
        let rows = reader
            .read(&["age".to_string()], &mut ReadBudget::default())
            .unwrap_or_else(|e| panic!("root `{root}`: {e}"));
        assert_eq!(numbers(&rows.rows), [20.0, 31.5], "root `{root}`");
    }
}

#[test]
fn push_to_hub_shards_with_a_fingerprint_belong_to_their_split() {
    let fake = FakeHub::start();
    let (train, test) = (ages("schema", &[1.0, 2.0]), ages("schema", &[3.0]));
    fake.add_dataset(
        "o/pushed",
        "main",
        &[
            ("data/train-00000-of-00001-5f1c7e2a9b3d4c6e.parquet", &train),
            ("data/test-00000-of-00001-0a1b2c3d4e5f6071.parquet", &test),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let spec: DatasetSpec = "o/pushed@main".parse().unwrap();
    let hub = support::hub(&fake, cache.path());
    for (split, expected) in [("train", vec![1.0, 2.0]), ("test", vec![3.0])] {
        let files = hub.dataset_files(&spec, "default", split).unwrap();
        assert_eq!(files.len(), 1, "{split}");
        let reader = open_parquet(&files[0].local, split).unwrap();
        let rows = reader
            .read(&["age".to_string()], &mut ReadBudget::default())
            .unwrap();
        assert_eq!(numbers(&rows.rows), expected, "{split}");
    }
}

#[test]
fn a_file_over_the_byte_budget_by_its_metadata_is_refused_before_it_is_read() {
    // 1,000 doubles: at least 8,000 bytes uncompressed by the metadata.
    let values: Vec<f64> = (0..1000).map(f64::from).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "f.parquet", &ages("schema", &values));
    let reader = open_parquet(&path, "f.parquet").unwrap();
    let mut budget = ReadBudget {
        rows: 1000,
        bytes: 4000,
        value_bytes: 64 << 20,
    };
    let e = reader
        .read(&["age".to_string()], &mut budget)
        .unwrap_err()
        .to_string();
    assert!(e.contains("f.parquet"), "{e}");
    assert!(
        e.contains("bytes uncompressed, more than the 4000 left"),
        "{e}"
    );
    // Nothing was taken from the budget; with room, the same file reads whole.
    assert_eq!((budget.rows, budget.bytes), (1000, 4000));
    budget.bytes = 1 << 20;
    let rows = reader.read(&["age".to_string()], &mut budget).unwrap();
    assert_eq!(numbers(&rows.rows), values);
    assert_eq!(budget.rows, 0);
}

#[test]
fn the_byte_budget_bounds_what_is_loaded_not_only_what_is_stored() {
    // 64 rows of one 256 KiB value, stored once in the dictionary: 12 KB on disk, 16 MiB
    // once read.
    let schema = Arc::new(parse_message_type("message schema { optional binary image; }").unwrap());
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_page_size_limit(8 << 20)
        .build();
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, Arc::new(props)).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    let values = vec![ByteArray::from(vec![7u8; 256 << 10]); 64];
    column
        .typed::<ByteArrayType>()
        .write_batch(&values, Some(&[1i16; 64]), None)
        .unwrap();
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
    assert!(out.len() < 1 << 20, "{} bytes", out.len());

    let dir = tempfile::tempdir().unwrap();
    let reader = open_parquet(&write(dir.path(), "f.parquet", &out), "f.parquet").unwrap();
    let mut budget = ReadBudget {
        rows: 1000,
        bytes: 1 << 20,
        value_bytes: 64 << 20,
    };
    let e = reader
        .read(&["image".to_string()], &mut budget)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than the 1048576 bytes left"), "{e}");

    // With room for all of it, the budget is charged with what was loaded.
    let mut budget = ReadBudget {
        rows: 1000,
        bytes: 64 << 20,
        value_bytes: 64 << 20,
    };
    let rows = reader.read(&["image".to_string()], &mut budget).unwrap();
    assert_eq!(rows.rows.len(), 64);
    assert!(
        budget.bytes <= (64 << 20) - 64 * (256 << 10),
        "{}",
        budget.bytes
    );
}

#[test]
fn a_schema_nested_thousands_deep_is_refused_before_it_is_parsed() {
    // 30,000 nested required groups: a 240 KB footer that overflowed the reader's stack.
    let bytes = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(|| {
            let mut t = Type::primitive_type_builder("x", Physical::DOUBLE)
                .with_repetition(Repetition::REQUIRED)
                .build()
                .unwrap();
            for _ in 0..30_000 {
                t = Type::group_type_builder("g")
                    .with_repetition(Repetition::REQUIRED)
                    .with_fields(vec![Arc::new(t)])
                    .build()
                    .unwrap();
            }
            let schema = Type::group_type_builder("schema")
                .with_fields(vec![Arc::new(t)])
                .build()
                .unwrap();
            let mut out = Vec::new();
            let props = Arc::new(WriterProperties::builder().build());
            let writer = SerializedFileWriter::new(&mut out, Arc::new(schema), props).unwrap();
            writer.close().unwrap();
            out
        })
        .unwrap()
        .join()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "deep.parquet", &bytes);
    // On a small stack, as a loader thread has.
    let opened = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            open_parquet(&path, "deep.parquet")
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .unwrap()
        .join()
        .unwrap();
    let e = opened.unwrap_err();
    assert!(
        e.starts_with(
            "deep.parquet: not a readable parquet file (its schema nests groups more than 64 deep)"
        ),
        "{e}"
    );

    // A real file's footer passes the same check, and a file cut inside its footer fails it.
    let good = ages("schema", &[1.0]);
    assert!(open_parquet(&write(dir.path(), "good.parquet", &good), "good").is_ok());
    let mut cut = good.clone();
    let len = cut.len();
    cut.drain(len - 20..len - 8);
    let e = open_parquet(&write(dir.path(), "cut.parquet", &cut), "cut")
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("cut: not a readable parquet file"), "{e}");
}

#[test]
fn a_footer_with_fields_of_other_types_is_refused_before_it_is_parsed() {
    // A 181-byte file from a fuzzing run (tests/fuzz/regressions/parquet): its footer holds
    // known fields of other types and lists of booleans, on which the parquet crate's
    // footer parser loops for seconds.
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../tests/fuzz/regressions/parquet/footer_fields_of_other_types_and_lists_of_booleans",
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "looping.parquet", &bytes);
    let started = std::time::Instant::now();
    let e = open_parquet(&path, "looping.parquet")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("looping.parquet: not a readable parquet file (field "),
        "{e}"
    );
    assert!(e.contains("where the format has"), "{e}");
    assert!(
        started.elapsed().as_secs_f64() < 0.5,
        "{:?}",
        started.elapsed()
    );
}
