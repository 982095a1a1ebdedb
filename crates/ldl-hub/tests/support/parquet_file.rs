//! Writes small parquet files for tests with the `parquet` crate: the column layouts of
//! Hugging Face exports (an `Image` feature is a struct of `bytes` and `path`).
#![allow(dead_code)]

use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// One column's values.
pub enum Column {
    /// A Hugging Face `Image`: `{bytes, path}`; `None` leaves the bytes null.
    Image(Vec<Option<Vec<u8>>>),
    /// A plain binary column.
    Binary(Vec<Vec<u8>>),
    /// Doubles.
    Double(Vec<f64>),
    /// Floats.
    Float(Vec<f32>),
    /// 64-bit integers.
    Int(Vec<i64>),
    /// Strings.
    Text(Vec<String>),
}

/// A parquet file (snappy-compressed, one row group) holding `columns`.
pub fn parquet_bytes(columns: &[(&str, Column)]) -> Vec<u8> {
    let mut fields = String::new();
    for (name, column) in columns {
        fields.push_str(&match column {
            Column::Image(_) => format!(
                "optional group {name} {{ optional binary bytes; optional binary path (STRING); }}\n"
            ),
            Column::Binary(_) => format!("optional binary {name};\n"),
            Column::Double(_) => format!("optional double {name};\n"),
            Column::Float(_) => format!("optional float {name};\n"),
            Column::Int(_) => format!("optional int64 {name};\n"),
            Column::Text(_) => format!("optional binary {name} (STRING);\n"),
        });
    }
    let schema = Arc::new(parse_message_type(&format!("message schema {{\n{fields}}}")).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for (_, column) in columns {
        match column {
            Column::Image(images) => {
                // image.bytes: 2 = present, 1 = struct present, bytes null.
                let mut col = group.next_column().unwrap().unwrap();
                let values: Vec<ByteArray> = images
                    .iter()
                    .flatten()
                    .map(|b| ByteArray::from(b.clone()))
                    .collect();
                let levels: Vec<i16> = images
                    .iter()
                    .map(|b| if b.is_some() { 2 } else { 1 })
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&levels), None)
                    .unwrap();
                col.close().unwrap();
                // image.path: always null here.
                let mut col = group.next_column().unwrap().unwrap();
                let levels = vec![1i16; images.len()];
                col.typed::<ByteArrayType>()
                    .write_batch(&[], Some(&levels), None)
                    .unwrap();
                col.close().unwrap();
            }
            Column::Binary(values) => {
                let mut col = group.next_column().unwrap().unwrap();
                let values: Vec<ByteArray> =
                    values.iter().map(|b| ByteArray::from(b.clone())).collect();
                let levels = vec![1i16; values.len()];
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&levels), None)
                    .unwrap();
                col.close().unwrap();
            }
            Column::Text(values) => {
                let mut col = group.next_column().unwrap().unwrap();
                let values: Vec<ByteArray> =
                    values.iter().map(|s| ByteArray::from(s.as_str())).collect();
                let levels = vec![1i16; values.len()];
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&levels), None)
                    .unwrap();
                col.close().unwrap();
            }
            Column::Double(values) => {
                let mut col = group.next_column().unwrap().unwrap();
                let levels = vec![1i16; values.len()];
                col.typed::<DoubleType>()
                    .write_batch(values, Some(&levels), None)
                    .unwrap();
                col.close().unwrap();
            }
            Column::Float(values) => {
                let mut col = group.next_column().unwrap().unwrap();
                let levels = vec![1i16; values.len()];
                col.typed::<FloatType>()
                    .write_batch(values, Some(&levels), None)
                    .unwrap();
                col.close().unwrap();
            }
            Column::Int(values) => {
                let mut col = group.next_column().unwrap().unwrap();
                let levels = vec![1i16; values.len()];
                col.typed::<Int64Type>()
                    .write_batch(values, Some(&levels), None)
                    .unwrap();
                col.close().unwrap();
            }
        }
    }
    group.close().unwrap();
    writer.close().unwrap();
    out
}

/// A `side`×`side` RGB PNG whose pixels depend on `seed`, and its raw RGB pixels.
pub fn png(side: u32, seed: u32) -> (Vec<u8>, Vec<u8>) {
    let image = image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([
            (x * 7 + seed * 13) as u8,
            (y * 11 + seed * 3) as u8,
            ((x + y) * 5 + seed) as u8,
        ])
    });
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    (bytes, image.into_raw())
}
