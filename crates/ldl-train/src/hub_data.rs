//! `source = "hub"`: the samples of a split of a Hugging Face dataset, from its parquet
//! files (listed and downloaded by `ldl-hub`), mapped to inputs and labels by the same
//! column spec as a local table.

use ldl_core::LabelSpace;
use ldl_data::{Cell, InputColumns, LabelColumns, Rows, Table, TableSpec};
use ldl_hub::{ColumnKind, DatasetSpec, Hub, ParquetFileReader, ReadBudget, Value};

use crate::config::Config;
use crate::error::{Error, Result};

/// What the config asks a column to hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Encoded images.
    Image,
    /// A number: a feature, a label value, std or distribution bin.
    Number,
    /// A class, a group or a split name: text or a number.
    Name,
}

impl Role {
    fn accepts(self, kind: &ColumnKind) -> bool {
        match self {
            Role::Image => matches!(kind, ColumnKind::Image | ColumnKind::Binary),
            Role::Number => matches!(kind, ColumnKind::Number),
            Role::Name => matches!(kind, ColumnKind::Number | ColumnKind::Text),
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Role::Image => {
                "an image column must hold encoded JPEG or PNG images: a binary column or a \
                 Hugging Face Image feature (struct {bytes, path})"
            }
            Role::Number => "this column must hold numbers (integers or floats)",
            Role::Name => "a class, group or split column must hold strings or integers",
        }
    }
}

/// Columns with their roles.
type Roles = Vec<(String, Role)>;

/// The columns of `spec` with their roles, in a fixed order (input first); `None` for the
/// input when it is every other column.
fn roles(spec: &TableSpec) -> (Option<Roles>, Roles) {
    let input = match &spec.input {
        InputColumns::Image(c) => Some(vec![(c.clone(), Role::Image)]),
        InputColumns::Features(cs) => Some(cs.iter().map(|c| (c.clone(), Role::Number)).collect()),
        InputColumns::AllOtherColumns => None,
    };
    let mut other = Vec::new();
    for axis in &spec.labels {
        match &axis.columns {
            LabelColumns::Value { value, std } => {
                other.push((value.clone(), Role::Number));
                other.extend(std.iter().map(|s| (s.clone(), Role::Number)));
            }
            LabelColumns::Distribution(cs) => {
                other.extend(cs.iter().map(|c| (c.clone(), Role::Number)))
            }
            LabelColumns::Class(c) => other.push((c.clone(), Role::Name)),
        }
    }
    other.extend(spec.group.iter().map(|c| (c.clone(), Role::Name)));
    other.extend(spec.split.iter().map(|c| (c.clone(), Role::Name)));
    (input, other)
}

/// Reads the split `split` of `[data.hub]`'s dataset through `hub`: its parquet files, in
/// path order, then row order. Columns are checked against what the config maps them to
/// before the rows are read; bad rows follow `data.on_bad_sample`.
pub fn read_hub_split(
    config: &Config,
    hub: &Hub,
    split: &str,
    space: &LabelSpace,
) -> Result<Table> {
    let h = config.data.hub.as_ref().ok_or_else(|| {
        Error::Config("`data.source`: `hub` needs [data.hub] with dataset = \"owner/name\"".into())
    })?;
    let dataset: DatasetSpec = h.dataset.parse()?;
    let mut spec = config.table_spec()?;
    let files = hub.dataset_files(&dataset, &h.config, split)?;
    let mut budget = ReadBudget::default();
    let mut table: Option<Table> = None;
    for file in files {
        let reader = ldl_hub::open_parquet(&file.local, &file.name)?;
        let (input, other) = roles(&spec);
        let input = match input {
            Some(input) => input,
            None => {
                // Every column not used otherwise is a feature, fixed by the first file.
                let used: Vec<&str> = other.iter().map(|(c, _)| c.as_str()).collect();
                let features: Vec<String> = reader
                    .schema()
                    .iter()
                    .map(|(c, _)| c.clone())
                    .filter(|c| !used.contains(&c.as_str()))
                    .collect();
                spec.input = InputColumns::Features(features.clone());
                features.into_iter().map(|c| (c, Role::Number)).collect()
            }
        };
        let mut columns: Vec<String> = Vec::new();
        for (column, role) in input.iter().chain(&other) {
            let kind = reader.kind(column)?;
            if !role.accepts(kind) {
                let hint = if spec_uses_all_columns(config) && *role == Role::Number {
                    "; every column not used for labels is a feature: list the feature columns \
                     in data.features, or set data.image_column for images"
                } else {
                    ""
                };
                return Err(Error::Usage(format!(
                    "{}: column `{column}` has type {kind}; {}{hint}",
                    file.name,
                    role.needs()
                )));
            }
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
        let part = read_file(&reader, &columns, &mut budget, &spec, space, config)?;
        match &mut table {
            None => table = Some(part),
            Some(t) => {
                t.samples.extend(part.samples);
                t.skipped.extend(part.skipped);
            }
        }
    }
    table.ok_or_else(|| Error::Usage(format!("dataset {dataset} has no parquet files")))
}

fn spec_uses_all_columns(config: &Config) -> bool {
    config.data.image_column.is_none() && config.data.features.is_none()
}

fn read_file(
    reader: &ParquetFileReader,
    columns: &[String],
    budget: &mut ReadBudget,
    spec: &TableSpec,
    space: &LabelSpace,
    config: &Config,
) -> Result<Table> {
    let read = reader.read(columns, budget)?;
    let rows = Rows {
        name: read.file,
        columns: read.columns,
        rows: read
            .rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| match v {
                        Value::Missing => Cell::Missing,
                        Value::Number(n) => Cell::Number(n),
                        Value::Text(t) => Cell::Text(t),
                        Value::Bytes(b) => Cell::Bytes(b),
                    })
                    .collect()
            })
            .collect(),
    };
    Ok(ldl_data::read_rows(
        &rows,
        spec,
        space,
        config.data.on_bad_sample,
    )?)
}
