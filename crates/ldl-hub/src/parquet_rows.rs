//! Reading the columns ldl needs from a parquet file into memory: numbers, text, and
//! bytes (an image as a binary column, or a Hugging Face `Image` feature: a struct of
//! `bytes` and `path`). Malformed files give an error, never a panic, and sizes are
//! checked against a [`ReadBudget`] from the file's metadata before anything is read.

use std::fmt;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, ConvertedType, LogicalType, Repetition, Type as Physical};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::{Type, TypePtr};

use crate::error::{Error, Result};

/// One cell, as ldl reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A null.
    Missing,
    /// Any integer, float or boolean (`true` is 1).
    Number(f64),
    /// A string.
    Text(String),
    /// Binary data: a binary column, or the `bytes` of an image struct.
    Bytes(Arc<[u8]>),
}

/// What a top-level column holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// Integers, floats or booleans.
    Number,
    /// Strings.
    Text,
    /// Binary data.
    Binary,
    /// A struct with a binary `bytes` field (the Hugging Face `Image` feature).
    Image,
    /// Anything else (lists, maps, other structs, dates, decimals), described.
    Other(String),
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnKind::Number => write!(f, "number"),
            ColumnKind::Text => write!(f, "string"),
            ColumnKind::Binary => write!(f, "binary"),
            ColumnKind::Image => write!(f, "image struct {{bytes, path}}"),
            ColumnKind::Other(what) => write!(f, "{what}"),
        }
    }
}

/// Limits on what a dataset may take in memory, shared by the files read into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBudget {
    /// Rows left.
    pub rows: u64,
    /// Bytes left: checked against the columns' uncompressed size in the metadata before a
    /// file is read, and against the memory its values take as they are read.
    pub bytes: u64,
    /// The largest single value (an encoded image), in bytes.
    pub value_bytes: usize,
}

impl Default for ReadBudget {
    /// 20 million rows, 16 GiB, 64 MiB per value.
    fn default() -> Self {
        ReadBudget {
            rows: 20_000_000,
            bytes: 16 << 30,
            value_bytes: 64 << 20,
        }
    }
}

/// The chosen columns of a parquet file, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetRows {
    /// The file's name in messages (its Hub path).
    pub file: String,
    /// The names of the columns read, in the order of each row's values.
    pub columns: Vec<String>,
    /// The rows, in file order.
    pub rows: Vec<Vec<Value>>,
}

/// An open parquet file: its schema is known, nothing else is read yet.
pub struct ParquetFileReader {
    name: String,
    path: PathBuf,
    reader: SerializedFileReader<File>,
    schema: Vec<(String, ColumnKind)>,
}

/// Opens the parquet file `path`, named `name` in messages. A file that is not parquet, or
/// whose footer is damaged, is an error.
pub fn open_parquet(path: &Path, name: &str) -> Result<ParquetFileReader> {
    let bad = |detail: String| Error::Parquet {
        file: name.to_string(),
        detail,
    };
    // Only a regular file: opening a FIFO (say, in place of a cached file) would wait for a
    // writer for ever.
    let mut file = crate::local_file::open_regular(path)
        .map_err(|e| bad(format!("cannot open {}: it {e}", path.display())))?;
    // Before the parquet crate sees it: a deeply nested schema would overflow its stack.
    crate::parquet_footer::check_footer(&mut file).map_err(|e| bad(not_parquet(&e)))?;
    let opened = catch_unwind(AssertUnwindSafe(|| SerializedFileReader::new(file)))
        .map_err(|_| bad(not_parquet("the parquet reader failed on its footer")))?;
    let reader = opened.map_err(|e| bad(not_parquet(&e.to_string())))?;
    let schema = reader
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|t| (t.name().to_string(), kind_of(t)))
        .collect();
    Ok(ParquetFileReader {
        name: name.to_string(),
        path: path.to_path_buf(),
        reader,
        schema,
    })
}

fn not_parquet(detail: &str) -> String {
    format!(
        "not a readable parquet file ({detail}); the file may be damaged or another format: \
         the dataset's files must be parquet"
    )
}

/// The kind of a top-level column.
fn kind_of(t: &Type) -> ColumnKind {
    let info = t.get_basic_info();
    if info.has_repetition() && info.repetition() == Repetition::REPEATED {
        return ColumnKind::Other("repeated field".into());
    }
    if t.is_group() {
        if matches!(
            info.logical_type_ref(),
            Some(LogicalType::List | LogicalType::Map)
        ) || matches!(
            info.converted_type(),
            ConvertedType::LIST | ConvertedType::MAP | ConvertedType::MAP_KEY_VALUE
        ) {
            return ColumnKind::Other("list or map".into());
        }
        let fields = t.get_fields();
        let has_bytes = fields
            .iter()
            .any(|f| f.name() == "bytes" && kind_of(f) == ColumnKind::Binary);
        if has_bytes {
            return ColumnKind::Image;
        }
        let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        return ColumnKind::Other(format!("struct {{{}}}", names.join(", ")));
    }
    let text = matches!(
        info.logical_type_ref(),
        Some(LogicalType::String | LogicalType::Enum | LogicalType::Json)
    ) || matches!(
        info.converted_type(),
        ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON
    );
    let decimal = matches!(info.logical_type_ref(), Some(LogicalType::Decimal { .. }))
        || info.converted_type() == ConvertedType::DECIMAL;
    let temporal = matches!(
        info.logical_type_ref(),
        Some(LogicalType::Date | LogicalType::Time { .. } | LogicalType::Timestamp { .. })
    ) || matches!(
        info.converted_type(),
        ConvertedType::DATE
            | ConvertedType::TIME_MILLIS
            | ConvertedType::TIME_MICROS
            | ConvertedType::TIMESTAMP_MILLIS
            | ConvertedType::TIMESTAMP_MICROS
    );
    if matches!(info.logical_type_ref(), Some(LogicalType::Float16)) {
        return ColumnKind::Number;
    }
    if decimal {
        return ColumnKind::Other("decimal".into());
    }
    if temporal {
        return ColumnKind::Other("date or time".into());
    }
    match t.get_physical_type() {
        Physical::BOOLEAN
        | Physical::INT32
        | Physical::INT64
        | Physical::FLOAT
        | Physical::DOUBLE => ColumnKind::Number,
        Physical::BYTE_ARRAY | Physical::FIXED_LEN_BYTE_ARRAY if text => ColumnKind::Text,
        Physical::BYTE_ARRAY | Physical::FIXED_LEN_BYTE_ARRAY => ColumnKind::Binary,
        Physical::INT96 => ColumnKind::Other("timestamp (int96)".into()),
    }
}

impl ParquetFileReader {
    /// The top-level columns and what they hold, in file order.
    pub fn schema(&self) -> &[(String, ColumnKind)] {
        &self.schema
    }

    /// The columns as `name (kind)`, comma-separated, for messages.
    pub fn describe_columns(&self) -> String {
        self.schema
            .iter()
            .map(|(n, k)| format!("{n} ({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The kind of the column `name`; an error listing the columns when there is none.
    pub fn kind(&self, name: &str) -> Result<&ColumnKind> {
        self.schema
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
            .ok_or_else(|| Error::MissingColumn {
                file: self.name.clone(),
                column: name.to_string(),
                available: self.describe_columns(),
            })
    }

    /// The number of rows, from the metadata.
    pub fn num_rows(&self) -> u64 {
        self.reader.metadata().file_metadata().num_rows().max(0) as u64
    }

    /// Reads `columns` (each must exist) of every row, taking the rows and the columns'
    /// uncompressed size from `budget` first: a file over the budget is refused before it
    /// is read.
    pub fn read(&self, columns: &[String], budget: &mut ReadBudget) -> Result<ParquetRows> {
        let projection = self.projection(columns)?;
        let rows = self.num_rows();
        if rows > budget.rows {
            return Err(self.error(format!(
                "{rows} rows is more than the {} left to read; use a smaller split",
                budget.rows
            )));
        }
        let (bytes, chunks) = self.column_chunks(columns)?;
        if bytes > budget.bytes {
            return Err(self.error(format!(
                "its columns take {bytes} bytes uncompressed, more than the {} left to read \
                 into memory; use a smaller split",
                budget.bytes
            )));
        }
        self.check_pages(&chunks)?;
        let (out, loaded) = self.read_rows(projection, columns, rows, budget)?;
        budget.rows -= out.len() as u64;
        budget.bytes -= bytes.max(loaded).min(budget.bytes);
        Ok(ParquetRows {
            file: self.name.clone(),
            columns: columns.to_vec(),
            rows: out,
        })
    }

    /// An error about this file.
    fn error(&self, detail: String) -> Error {
        Error::Parquet {
            file: self.name.clone(),
            detail,
        }
    }

    /// The schema that reads `columns` (each must exist) and nothing else.
    fn projection(&self, columns: &[String]) -> Result<Type> {
        let schema = self.reader.metadata().file_metadata().schema();
        let fields = schema.get_fields();
        let mut chosen: Vec<TypePtr> = Vec::new();
        for name in columns {
            self.kind(name)?;
            if let Some(f) = fields.iter().find(|f| f.name() == name) {
                chosen.push(f.clone());
            }
        }
        // The projection's root must carry the file's own root name (pyarrow's `schema`,
        // Spark's `spark_schema`, DuckDB's `duckdb_schema`, …), or the reader refuses it.
        Type::group_type_builder(schema.name())
            .with_fields(chosen)
            .build()
            .map_err(|e| self.error(e.to_string()))
    }

    /// The uncompressed bytes of `columns` by the metadata, and where each of their column
    /// chunks lies (start, compressed length); a compression ldl does not read is an error.
    fn column_chunks(&self, columns: &[String]) -> Result<(u64, Vec<(i64, i64)>)> {
        let mut bytes: u64 = 0;
        let mut chunks: Vec<(i64, i64)> = Vec::new();
        for group in self.reader.metadata().row_groups() {
            for chunk in group.columns() {
                let top = chunk
                    .column_path()
                    .parts()
                    .first()
                    .cloned()
                    .unwrap_or_default();
                if !columns.contains(&top) {
                    continue;
                }
                match chunk.compression() {
                    Compression::UNCOMPRESSED | Compression::SNAPPY | Compression::GZIP(_) => {}
                    other => {
                        return Err(self.error(format!(
                            "column `{top}` is compressed with {other:?}, which ldl does not \
                             read; it reads snappy (pyarrow's and the Hub's default), gzip \
                             and uncompressed parquet: re-save the file with one of these"
                        )))
                    }
                }
                bytes = bytes.saturating_add(chunk.uncompressed_size().max(0) as u64);
                let start = chunk
                    .dictionary_page_offset()
                    .unwrap_or(chunk.data_page_offset());
                chunks.push((start, chunk.compressed_size()));
            }
        }
        Ok((bytes, chunks))
    }

    /// Checks the page headers of `chunks` before the parquet crate reads them: a page
    /// header can keep it busy for minutes.
    fn check_pages(&self, chunks: &[(i64, i64)]) -> Result<()> {
        let mut file = crate::local_file::open_regular(&self.path)
            .map_err(|e| self.error(format!("cannot open {}: it {e}", self.path.display())))?;
        for &(start, length) in chunks {
            let (Ok(start), Ok(length)) = (u64::try_from(start), u64::try_from(length)) else {
                return Err(self.error(not_parquet(&format!(
                    "a column chunk starts at byte {start} and takes {length} bytes"
                ))));
            };
            crate::parquet_footer::check_pages(&mut file, start, length)
                .map_err(|e| self.error(not_parquet(&e)))?;
        }
        Ok(())
    }

    /// The values of `columns` in every row (at most `rows`, the metadata's count), and
    /// the memory they take, stopping at `budget`'s limits.
    fn read_rows(
        &self,
        projection: Type,
        columns: &[String],
        rows: u64,
        budget: &ReadBudget,
    ) -> Result<(Vec<Vec<Value>>, u64)> {
        let value_limit = budget.value_bytes;
        // The metadata's sizes are what is stored: a dictionary-encoded value repeated in
        // many rows is stored once but copied into each, so what is loaded is counted too.
        let byte_limit = budget.bytes;
        let mut loaded: u64 = 0;
        let read = catch_unwind(AssertUnwindSafe(|| -> std::result::Result<_, String> {
            let iter = self
                .reader
                .get_row_iter(Some(projection))
                .map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(rows.min(1 << 20) as usize);
            for (index, row) in iter.enumerate() {
                let row = row.map_err(|e| format!("row {index}: {e}"))?;
                let mut values = vec![Value::Missing; columns.len()];
                for (name, field) in row.get_column_iter() {
                    if let Some(i) = columns.iter().position(|c| c == name) {
                        values[i] = value_of(field, name, value_limit)
                            .map_err(|e| format!("row {index}: {e}"))?;
                    }
                }
                loaded = loaded.saturating_add(values.iter().map(memory_of).sum::<u64>());
                if loaded > byte_limit {
                    return Err(format!(
                        "its values take more than the {byte_limit} bytes left to read into \
                         memory (from row {index} on); use a smaller split"
                    ));
                }
                out.push(values);
                if out.len() as u64 > rows {
                    return Err("more rows than its metadata announces".to_string());
                }
            }
            Ok(out)
        }));
        match read {
            Ok(Ok(out)) => Ok((out, loaded)),
            Ok(Err(detail)) => Err(self.error(format!("cannot read the file: {detail}"))),
            Err(_) => Err(self.error(not_parquet("the parquet reader failed on its data pages"))),
        }
    }
}

/// The memory a value takes once read: the cell itself and what it owns.
fn memory_of(value: &Value) -> u64 {
    let owned = match value {
        Value::Bytes(b) => b.len(),
        Value::Text(t) => t.len(),
        Value::Missing | Value::Number(_) => 0,
    };
    (std::mem::size_of::<Value>() + owned) as u64
}

/// A cell's value; an image struct gives its `bytes`.
fn value_of(field: &Field, column: &str, limit: usize) -> std::result::Result<Value, String> {
    let bytes = |b: &[u8]| -> std::result::Result<Value, String> {
        if b.len() > limit {
            Err(format!(
                "column `{column}` holds {} bytes, more than the {limit} a value may have",
                b.len()
            ))
        } else {
            Ok(Value::Bytes(Arc::from(b)))
        }
    };
    Ok(match field {
        Field::Null => Value::Missing,
        Field::Bool(b) => Value::Number(f64::from(u8::from(*b))),
        Field::Byte(v) => Value::Number(f64::from(*v)),
        Field::Short(v) => Value::Number(f64::from(*v)),
        Field::Int(v) => Value::Number(f64::from(*v)),
        Field::Long(v) => Value::Number(*v as f64),
        Field::UByte(v) => Value::Number(f64::from(*v)),
        Field::UShort(v) => Value::Number(f64::from(*v)),
        Field::UInt(v) => Value::Number(f64::from(*v)),
        Field::ULong(v) => Value::Number(*v as f64),
        Field::Float16(v) => Value::Number(f64::from(*v)),
        Field::Float(v) => Value::Number(f64::from(*v)),
        Field::Double(v) => Value::Number(*v),
        Field::Str(s) => Value::Text(s.clone()),
        Field::Bytes(b) => bytes(b.data())?,
        Field::Group(row) => {
            match row
                .get_column_iter()
                .find(|(name, _)| name.as_str() == "bytes")
            {
                Some((_, Field::Bytes(b))) => bytes(b.data())?,
                _ => Value::Missing,
            }
        }
        other => Value::Text(other.to_string()),
    })
}
