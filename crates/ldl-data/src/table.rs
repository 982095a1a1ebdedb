//! Reading samples from tables: CSV files with a header row, and JSONL files (one JSON
//! object per line). Column names come from a [`TableSpec`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldl_core::files::{check_regular, read_text, FileKind, FileProblem};
use ldl_core::{Axis, Label, LabelSpace};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::missing::{is_missing_text, Missing};
use crate::sample::{FeatureValue, Input, Sample, SampleOrigin};

/// Where a sample's input comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputColumns {
    /// These numeric columns, in this order, form the feature vector.
    Features(Vec<String>),
    /// Every column not used for labels, groups or splits is a numeric feature.
    AllOtherColumns,
    /// This column holds an image path, relative to the table's folder.
    Image(String),
}

/// How one axis's label is read from a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelColumns {
    /// A value column and, optionally, a per-sample std column (the axis default
    /// otherwise).
    Value {
        /// The value column.
        value: String,
        /// The std column.
        std: Option<String>,
    },
    /// One column per bin holding an explicit distribution.
    Distribution(Vec<String>),
    /// A class name or class index (categorical axes).
    Class(String),
}

/// The label columns of one axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AxisColumns {
    /// The axis name, as in the label space.
    pub axis: String,
    /// Where its label comes from.
    pub columns: LabelColumns,
}

/// Which columns of a table mean what.
///
/// ```
/// use ldl_data::{AxisColumns, InputColumns, LabelColumns, TableSpec};
/// let spec = TableSpec::new(InputColumns::AllOtherColumns).with_label(
///     "age",
///     LabelColumns::Value { value: "age_years".into(), std: None },
/// );
/// assert_eq!(spec.labels[0].axis, "age");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSpec {
    /// The input.
    pub input: InputColumns,
    /// One entry per axis of the label space (any order).
    pub labels: Vec<AxisColumns>,
    /// A column identifying the subject, so that splits keep a subject's samples together.
    pub group: Option<String>,
    /// A column naming each sample's split (e.g. `train`, `val`, `test`).
    pub split: Option<String>,
    /// What a feature cell without a value (empty, `NA`, `NaN`, a null) is: a bad row
    /// (the default), or [`FeatureValue::Missing`] for a [`crate::FeatureEncoder`] to fill.
    #[serde(default)]
    pub missing: Missing,
    /// Whether text in the listed feature columns ([`InputColumns::Features`]) is kept as
    /// [`FeatureValue::Text`], a category for a [`crate::FeatureEncoder`] to one-hot
    /// encode; when false (the default), text in a feature column is a bad row.
    #[serde(default)]
    pub text_features: bool,
}

impl TableSpec {
    /// A spec with this input and no labels yet.
    pub fn new(input: InputColumns) -> TableSpec {
        TableSpec {
            input,
            labels: Vec::new(),
            group: None,
            split: None,
            missing: Missing::default(),
            text_features: false,
        }
    }

    /// Adds the label columns of one axis.
    pub fn with_label(mut self, axis: impl Into<String>, columns: LabelColumns) -> TableSpec {
        self.labels.push(AxisColumns {
            axis: axis.into(),
            columns,
        });
        self
    }

    /// Sets the group (subject id) column.
    pub fn with_group(mut self, column: impl Into<String>) -> TableSpec {
        self.group = Some(column.into());
        self
    }

    /// Sets the split column.
    pub fn with_split(mut self, column: impl Into<String>) -> TableSpec {
        self.split = Some(column.into());
        self
    }

    /// Every column this spec reads besides the inputs.
    fn label_and_meta_columns(&self) -> Vec<&str> {
        let mut used: Vec<&str> = Vec::new();
        for axis in &self.labels {
            match &axis.columns {
                LabelColumns::Value { value, std } => {
                    used.push(value);
                    if let Some(std) = std {
                        used.push(std);
                    }
                }
                LabelColumns::Distribution(columns) => {
                    used.extend(columns.iter().map(String::as_str))
                }
                LabelColumns::Class(column) => used.push(column),
            }
        }
        used.extend(self.group.as_deref());
        used.extend(self.split.as_deref());
        used
    }
}

/// What to do with a sample whose input or label is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadSample {
    /// Stop with an error naming the file, the line and the problem (the default).
    #[default]
    Error,
    /// Leave the sample out, and list it in [`Table::skipped`].
    Skip,
}

/// A sample that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedSample {
    /// `file:line`.
    pub location: String,
    /// What was wrong.
    pub reason: String,
}

/// The samples read from a table.
#[derive(Debug, Clone)]
pub struct Table {
    /// The good samples, in file order.
    pub samples: Vec<Sample>,
    /// The samples left out under [`OnBadSample::Skip`].
    pub skipped: Vec<SkippedSample>,
    /// The names of the feature columns, in feature order (empty for image inputs).
    pub feature_names: Vec<String>,
}

/// Reads a CSV file with a header row.
pub fn read_csv(
    path: &Path,
    spec: &TableSpec,
    space: &LabelSpace,
    policy: OnBadSample,
) -> Result<Table> {
    let text = read_text(path, FileKind::Table)?;
    parse_csv(path, &text, spec, space, policy)
}

/// Reads CSV text; `path` names it in messages and anchors relative image paths.
pub fn parse_csv(
    path: &Path,
    text: &str,
    spec: &TableSpec,
    space: &LabelSpace,
    policy: OnBadSample,
) -> Result<Table> {
    let (mut reader, header) = csv_with_header(path, text.as_bytes())?;
    let mut lines = LineCounter::new(text);
    let plan = Plan::new(path, &header, spec, space)?;
    let mut table = plan.empty_table();
    let mut rows = 0;
    for (index, record) in reader.records().enumerate() {
        rows += 1;
        // Line numbers as an editor shows them; the header is line 1.
        let line = lines.line_of(&record, index);
        let record = match record {
            Ok(record) => record,
            Err(e) => return Err(Error::row(path, line, format!("cannot parse the row: {e}"))),
        };
        let cells: Vec<Cell> = record.iter().map(|c| Cell::Text(c.to_string())).collect();
        plan.add(&mut table, &cells, (line, index), policy)?;
    }
    if rows == 0 {
        return Err(Error::file(
            path,
            "has a header row but no rows of samples under it",
        ));
    }
    Ok(table)
}

/// Line numbers from byte offsets, counted forward as records are read. csv's own line
/// count includes skipped blank lines before a record; this one points at the record.
struct LineCounter<'t> {
    text: &'t [u8],
    byte: usize,
    line: usize,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t str) -> Self {
        LineCounter {
            text: text.as_bytes(),
            byte: 0,
            line: 1,
        }
    }

    /// The line of a record read by csv (the `index`-th after the header, as a fallback).
    fn line_of(&mut self, record: &csv::Result<csv::StringRecord>, index: usize) -> usize {
        match record.as_ref().ok().and_then(|r| r.position()) {
            Some(position) => self.line_at(position.byte() as usize),
            None => index + 2,
        }
    }

    /// The line of the first character at or after `byte` that is not a line break.
    fn line_at(&mut self, byte: usize) -> usize {
        let mut start = byte.min(self.text.len());
        while start < self.text.len() && matches!(self.text[start], b'\n' | b'\r') {
            start += 1;
        }
        if start >= self.byte {
            self.line += self.text[self.byte..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            self.byte = start;
        }
        self.line
    }
}

/// One entry of an explicit distribution: a number ≥ 0, named by its column when not.
fn probability(cell: &Cell, column: &str) -> std::result::Result<f64, String> {
    let value = cell.number(column)?;
    if value < 0.0 {
        return Err(format!(
            "column `{column}`: {value} is negative; a distribution's entries are ≥ 0"
        ));
    }
    Ok(value)
}

/// A CSV reader (trimmed fields) and its header row.
fn csv_with_header<'t>(
    path: &Path,
    bytes: &'t [u8],
) -> Result<(csv::Reader<&'t [u8]>, Vec<String>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Error::file(path, format!("cannot read the header row: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(Error::file(
            path,
            "is empty: a table starts with a header row naming its columns, then one row per \
             sample",
        ));
    }
    check_unique_columns(path, &header)?;
    Ok((reader, header))
}

/// Two columns of one name would leave one of them unread without a word.
fn check_unique_columns(path: &Path, header: &[String]) -> Result<()> {
    for (i, name) in header.iter().enumerate() {
        if let Some(j) = header[i + 1..].iter().position(|other| other == name) {
            return Err(Error::file(
                path,
                format!(
                    "columns {} and {} are both named `{name}`; rename one so that each \
                     column has its own name",
                    i + 1,
                    i + j + 2
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a JSONL file: one JSON object per line, with the spec's column names as keys.
/// Blank lines are ignored.
pub fn read_jsonl(
    path: &Path,
    spec: &TableSpec,
    space: &LabelSpace,
    policy: OnBadSample,
) -> Result<Table> {
    let text = read_text(path, FileKind::Table)?;
    parse_jsonl(path, &text, spec, space, policy)
}

/// Reads JSONL text; `path` names it in messages and anchors relative image paths.
pub fn parse_jsonl(
    path: &Path,
    text: &str,
    spec: &TableSpec,
    space: &LabelSpace,
    policy: OnBadSample,
) -> Result<Table> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::row(path, index + 1, format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(object) = value else {
            return Err(Error::row(path, index + 1, "expected a JSON object"));
        };
        rows.push((index + 1, object));
    }
    let Some((_, first)) = rows.first() else {
        return Err(Error::file(path, "the file has no rows"));
    };
    // The first object's keys define the columns; later rows may order them freely.
    let header: Vec<String> = first.keys().cloned().collect();
    let plan = Plan::new(path, &header, spec, space)?;
    let mut table = plan.empty_table();
    for (record, (line, object)) in rows.into_iter().enumerate() {
        let cells: Vec<Cell> = header
            .iter()
            .map(|key| match object.get(key) {
                None | Some(serde_json::Value::Null) => Cell::Missing,
                Some(serde_json::Value::Number(n)) => Cell::Number(n.as_f64().unwrap_or(f64::NAN)),
                Some(serde_json::Value::String(s)) => Cell::Text(s.clone()),
                Some(other) => Cell::Text(other.to_string()),
            })
            .collect();
        plan.add(&mut table, &cells, (line, record), policy)?;
    }
    Ok(table)
}

/// One cell of a row of an in-memory table ([`read_rows`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text (parsed as a number where a number is needed, as in a CSV file).
    Text(String),
    /// A number.
    Number(f64),
    /// Binary data: an encoded image (JPEG or PNG).
    Bytes(Arc<[u8]>),
    /// No value (a null).
    Missing,
}

/// Rows of named columns held in memory (as read from a parquet file), for [`read_rows`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// The name of the rows' file in messages (e.g. its Hub path); samples are named
    /// `NAME row N`, N counted from 0.
    pub name: String,
    /// The column names.
    pub columns: Vec<String>,
    /// The rows, each with one cell per column.
    pub rows: Vec<Vec<Cell>>,
}

/// Reads samples from rows held in memory, with the columns of `spec`. An image column
/// holds encoded images ([`Cell::Bytes`]), which become [`Input::ImageBytes`]. Errors and
/// skipped samples name `rows.name` and the row.
pub fn read_rows(
    rows: &Rows,
    spec: &TableSpec,
    space: &LabelSpace,
    policy: OnBadSample,
) -> Result<Table> {
    let path = Path::new(&rows.name);
    let mut plan = Plan::new(path, &rows.columns, spec, space)?;
    plan.rows = true;
    let mut table = plan.empty_table();
    for (index, cells) in rows.rows.iter().enumerate() {
        plan.add(&mut table, cells, (index, index), policy)?;
    }
    Ok(table)
}

impl Cell {
    fn number(&self, column: &str) -> std::result::Result<f64, String> {
        let value = match self {
            Cell::Number(n) => *n,
            Cell::Text(text) => text
                .parse::<f64>()
                .map_err(|_| format!("column `{column}`: `{text}` is not a number"))?,
            Cell::Missing => return Err(format!("column `{column}` is missing")),
            Cell::Bytes(_) => return Err(format!("column `{column}` holds bytes, not a number")),
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(format!("column `{column}`: {value} is not a finite number"))
        }
    }

    /// A number that is finite as an `f32` too (features are stored as f32).
    fn feature(&self, column: &str) -> std::result::Result<f32, String> {
        let value = self.number(column)?;
        let narrow = value as f32;
        if narrow.is_finite() {
            Ok(narrow)
        } else {
            Err(format!(
                "column `{column}`: {value:e} is too large for a feature (f32)"
            ))
        }
    }

    /// A feature cell as read: a number; no value, when `missing` allows it; text, when
    /// `text` allows it (a category). Anything else is the row's problem.
    fn feature_value(
        &self,
        column: &str,
        missing: Missing,
        text: bool,
    ) -> std::result::Result<FeatureValue, String> {
        let absent = match self {
            Cell::Missing => true,
            Cell::Text(t) => is_missing_text(t),
            Cell::Number(n) => n.is_nan(),
            Cell::Bytes(_) => false,
        };
        if absent {
            return match missing {
                Missing::Mean => Ok(FeatureValue::Missing),
                Missing::Error => Err(format!(
                    "column `{column}` has no value (an empty cell or NA); fill it in, or \
                     train with missing = \"mean\" in [data] to impute the training mean"
                )),
            };
        }
        match (self.feature(column), self) {
            (Ok(value), _) => Ok(FeatureValue::Number(value)),
            // Text that does not parse as a number is a category, where text is allowed.
            (Err(_), Cell::Text(t)) if text && t.parse::<f64>().is_err() => {
                Ok(FeatureValue::Text(t.clone()))
            }
            (Err(message), _) => Err(message),
        }
    }

    fn text(&self, column: &str) -> std::result::Result<String, String> {
        match self {
            Cell::Text(text) if !text.is_empty() => Ok(text.clone()),
            Cell::Number(n) => Ok(n.to_string()),
            Cell::Bytes(_) => Err(format!("column `{column}` holds bytes, not text")),
            _ => Err(format!("column `{column}` is empty")),
        }
    }
}

/// Column positions resolved once per file.
struct Plan {
    path: Arc<PathBuf>,
    folder: PathBuf,
    space: LabelSpace,
    input: PlannedInput,
    /// Per axis of the label space, in its order.
    labels: Vec<PlannedLabel>,
    group: Option<(String, usize)>,
    split: Option<(String, usize)>,
    feature_names: Vec<String>,
    /// Rows of an in-memory table: `line` is a 0-based row index.
    rows: bool,
    /// What a feature cell without a value is ([`TableSpec::missing`]).
    missing: Missing,
    /// Whether feature cells may hold text ([`TableSpec::text_features`], for listed
    /// features only).
    text_features: bool,
}

enum PlannedInput {
    Features(Vec<(String, usize)>),
    Image(String, usize),
}

enum PlannedLabel {
    Value {
        value: (String, usize),
        std: Option<(String, usize)>,
    },
    Distribution(Vec<(String, usize)>),
    Class((String, usize)),
}

/// The header of a table, to find its columns by name.
struct Columns<'a> {
    path: &'a Path,
    header: &'a [String],
    index: HashMap<&'a str, usize>,
}

impl<'a> Columns<'a> {
    fn new(path: &'a Path, header: &'a [String]) -> Columns<'a> {
        let index = header
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect();
        Columns {
            path,
            header,
            index,
        }
    }

    /// The column `name` and its position, or an error listing the columns there are.
    fn find(&self, name: &str) -> Result<(String, usize)> {
        self.index
            .get(name)
            .map(|i| (name.to_string(), *i))
            .ok_or_else(|| {
                Error::file(
                    self.path,
                    format!(
                        "no column `{name}`; the columns are: {}",
                        self.header.join(", ")
                    ),
                )
            })
    }

    /// The columns of the inputs.
    fn input(&self, spec: &TableSpec) -> Result<PlannedInput> {
        let input = match &spec.input {
            InputColumns::Image(name) => PlannedInput::Image(name.clone(), self.find(name)?.1),
            InputColumns::Features(names) => PlannedInput::Features(
                names
                    .iter()
                    .map(|n| self.find(n))
                    .collect::<Result<Vec<_>>>()?,
            ),
            InputColumns::AllOtherColumns => {
                let used = spec.label_and_meta_columns();
                PlannedInput::Features(
                    self.header
                        .iter()
                        .enumerate()
                        .filter(|(_, name)| !used.contains(&name.as_str()))
                        .map(|(i, name)| (name.clone(), i))
                        .collect(),
                )
            }
        };
        if matches!(&input, PlannedInput::Features(columns) if columns.is_empty()) {
            return Err(Error::file(self.path, "no feature columns are left"));
        }
        Ok(input)
    }

    /// The label columns of each axis of `space`, in its order; label columns for an axis
    /// it does not have are refused.
    fn labels(&self, spec: &TableSpec, space: &LabelSpace) -> Result<Vec<PlannedLabel>> {
        let mut labels = Vec::new();
        for axis in space.axes() {
            let entry = spec
                .labels
                .iter()
                .find(|l| l.axis == axis.name())
                .ok_or_else(|| {
                    Error::Spec(format!(
                        "no label columns given for axis `{}` of the label space",
                        axis.name()
                    ))
                })?;
            labels.push(self.label(&entry.columns, axis)?);
        }
        if let Some(unknown) = spec.labels.iter().find(|l| space.axis(&l.axis).is_none()) {
            return Err(Error::Spec(format!(
                "label columns given for axis `{}`, which is not in the label space",
                unknown.axis
            )));
        }
        Ok(labels)
    }

    fn label(&self, columns: &LabelColumns, axis: &ldl_core::Axis) -> Result<PlannedLabel> {
        Ok(match columns {
            LabelColumns::Value { value, std } => PlannedLabel::Value {
                value: self.find(value)?,
                std: std.as_deref().map(|n| self.find(n)).transpose()?,
            },
            LabelColumns::Distribution(names) => {
                if names.len() != axis.len() {
                    return Err(Error::Spec(format!(
                        "axis `{}` has {} bins but {} distribution columns were given",
                        axis.name(),
                        axis.len(),
                        names.len()
                    )));
                }
                PlannedLabel::Distribution(
                    names.iter().map(|n| self.find(n)).collect::<Result<_>>()?,
                )
            }
            LabelColumns::Class(name) => PlannedLabel::Class(self.find(name)?),
        })
    }
}

impl Plan {
    fn new(path: &Path, header: &[String], spec: &TableSpec, space: &LabelSpace) -> Result<Plan> {
        let columns = Columns::new(path, header);
        let input = columns.input(spec)?;
        let labels = columns.labels(spec, space)?;
        let feature_names = match &input {
            PlannedInput::Features(columns) => columns.iter().map(|(n, _)| n.clone()).collect(),
            PlannedInput::Image(..) => Vec::new(),
        };
        let optional = |name: &Option<String>| name.as_deref().map(|n| columns.find(n)).transpose();
        Ok(Plan {
            path: Arc::new(path.to_path_buf()),
            folder: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            space: space.clone(),
            input,
            labels,
            group: optional(&spec.group)?,
            split: optional(&spec.split)?,
            feature_names,
            rows: false,
            missing: spec.missing,
            text_features: spec.text_features && matches!(spec.input, InputColumns::Features(_)),
        })
    }

    fn empty_table(&self) -> Table {
        Table {
            samples: Vec::new(),
            skipped: Vec::new(),
            feature_names: self.feature_names.clone(),
        }
    }

    /// Adds the row at `line` (its row index for in-memory rows), the `record`-th data
    /// row of its table (0-based), or reports it by `policy`.
    fn add(
        &self,
        table: &mut Table,
        cells: &[Cell],
        (line, record): (usize, usize),
        policy: OnBadSample,
    ) -> Result<()> {
        match self.sample(cells, line, record) {
            Ok(sample) => table.samples.push(sample),
            Err(reason) => match policy {
                OnBadSample::Error if self.rows => {
                    return Err(Error::file(&self.path, format!("row {line}: {reason}")))
                }
                OnBadSample::Error => return Err(Error::row(&self.path, line, reason)),
                OnBadSample::Skip => table.skipped.push(SkippedSample {
                    location: if self.rows {
                        format!("{} row {line}", self.path.display())
                    } else {
                        format!("{}:{line}", self.path.display())
                    },
                    reason,
                }),
            },
        }
        Ok(())
    }

    fn sample(
        &self,
        cells: &[Cell],
        line: usize,
        record: usize,
    ) -> std::result::Result<Sample, String> {
        let cells = RowCells(cells);
        let text_of =
            |column: &Option<(String, usize)>| -> std::result::Result<Option<String>, String> {
                column
                    .as_ref()
                    .map(|c| cells.get(c)?.text(&c.0))
                    .transpose()
            };
        Ok(Sample {
            input: self.input_of(&cells)?,
            labels: self.labels_of(&cells)?,
            group: text_of(&self.group)?,
            split: text_of(&self.split)?,
            origin: if self.rows {
                SampleOrigin {
                    file: Arc::clone(&self.path),
                    line: 0,
                    row: Some(line as u64),
                    record: Some(record as u64),
                }
            } else {
                SampleOrigin::record(Arc::clone(&self.path), line, record)
            },
        })
    }

    /// The input of a row: its features, image bytes, or an image path that exists.
    fn input_of(&self, cells: &RowCells<'_>) -> std::result::Result<Input, String> {
        Ok(match &self.input {
            PlannedInput::Features(columns) => {
                let values = columns
                    .iter()
                    .map(|c| {
                        cells
                            .get(c)?
                            .feature_value(&c.0, self.missing, self.text_features)
                    })
                    .collect::<std::result::Result<Vec<FeatureValue>, String>>()?;
                features_input(values)
            }
            PlannedInput::Image(name, i) if self.rows => match cells.get(&(name.clone(), *i))? {
                Cell::Bytes(bytes) => Input::ImageBytes(Arc::clone(bytes)),
                Cell::Missing => {
                    return Err(format!(
                        "column `{name}` has no image bytes (a null, or an image given only \
                         by a path)"
                    ))
                }
                _ => return Err(format!("column `{name}` holds no image bytes")),
            },
            PlannedInput::Image(name, i) => {
                let relative = cells.get(&(name.clone(), *i))?.text(name)?;
                let path = self.folder.join(&relative);
                match check_regular(&path) {
                    Ok(()) => {}
                    Err(FileProblem::NotFound) => {
                        return Err(format!(
                            "image `{relative}` not found (looked for {})",
                            path.display()
                        ))
                    }
                    Err(problem) => return Err(format!("image {}: {problem}", path.display())),
                }
                Input::ImagePath(path)
            }
        })
    }

    /// The labels of a row, one per axis, each encoded once so that a bad label is
    /// reported with its row.
    fn labels_of(&self, cells: &RowCells<'_>) -> std::result::Result<Vec<Label>, String> {
        let mut labels = Vec::with_capacity(self.labels.len());
        for (axis, planned) in self.space.axes().iter().zip(&self.labels) {
            let label = match planned {
                PlannedLabel::Value { value, std } => Label::Value {
                    value: cells.get(value)?.number(&value.0)?,
                    std: match std {
                        Some(column) => Some(cells.get(column)?.number(&column.0)?),
                        None => None,
                    },
                },
                PlannedLabel::Distribution(columns) => Label::Distribution(
                    columns
                        .iter()
                        .map(|c| probability(cells.get(c)?, &c.0))
                        .collect::<std::result::Result<Vec<f64>, String>>()?,
                ),
                PlannedLabel::Class(column) => {
                    class_label(axis, &cells.get(column)?.text(&column.0)?)?
                }
            };
            axis.encode(&label).map_err(|e| e.to_string())?;
            labels.push(label);
        }
        Ok(labels)
    }
}

/// The cells of one row, found by a planned column.
struct RowCells<'a>(&'a [Cell]);

impl RowCells<'_> {
    fn get(&self, (name, i): &(String, usize)) -> std::result::Result<&Cell, String> {
        self.0
            .get(*i)
            .ok_or_else(|| format!("the row has no value for column `{name}`"))
    }
}

/// A feature vector when every cell is a number, else the cells for an encoder.
fn features_input(values: Vec<FeatureValue>) -> Input {
    let numbers: Option<Vec<f32>> = values
        .iter()
        .map(|v| match v {
            FeatureValue::Number(x) => Some(*x),
            _ => None,
        })
        .collect();
    match numbers {
        Some(numbers) => Input::Features(numbers),
        None => Input::Unencoded(values),
    }
}

/// A class given by name, or by index when no class has that name.
fn class_label(axis: &Axis, text: &str) -> std::result::Result<Label, String> {
    let classes = axis.classes().ok_or_else(|| {
        format!(
            "axis `{}` is not categorical but has a class column",
            axis.name()
        )
    })?;
    if let Some(index) = classes.iter().position(|c| c == text) {
        return Ok(Label::Class(index));
    }
    match text.parse::<usize>() {
        Ok(index) => Ok(Label::Class(index)),
        Err(_) => Err(format!(
            "axis `{}`: `{text}` is not one of its classes ({})",
            axis.name(),
            classes.join(", ")
        )),
    }
}

/// Reads the named numeric columns of a CSV file (for prediction, where there are no
/// labels): one feature vector per row, with its line. Errors name the file and line.
pub fn read_feature_rows(path: &Path, columns: &[String]) -> Result<Vec<(usize, Vec<f32>)>> {
    read_feature_cells(path, columns, Missing::Error, false)?
        .into_iter()
        .map(|(line, values)| match features_input(values) {
            Input::Features(features) => Ok((line, features)),
            // Unreachable: without missing values or text every cell is a number.
            _ => Err(Error::row(path, line, "a feature is not a number")),
        })
        .collect()
}

/// Reads the named feature columns of a CSV file (for prediction, where there are no
/// labels): one row of cells per data row, with its line, for a
/// [`crate::FeatureEncoder`]. `missing` and `text` are as [`TableSpec::missing`] and
/// [`TableSpec::text_features`]. Errors name the file, the line and the column.
pub fn read_feature_cells(
    path: &Path,
    columns: &[String],
    missing: Missing,
    text: bool,
) -> Result<Vec<(usize, Vec<FeatureValue>)>> {
    let file_text = read_text(path, FileKind::Table)?;
    let (mut reader, header) = csv_with_header(path, file_text.as_bytes())?;
    let mut lines = LineCounter::new(&file_text);
    let positions = columns
        .iter()
        .map(|name| {
            header.iter().position(|h| h == name).ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "no column `{name}` (the model's features); the columns are: {}",
                        header.join(", ")
                    ),
                )
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = lines.line_of(&record, index);
        let record =
            record.map_err(|e| Error::row(path, line, format!("cannot parse the row: {e}")))?;
        let values = positions
            .iter()
            .zip(columns)
            .map(|(&i, name)| {
                Cell::Text(record.get(i).unwrap_or("").to_string())
                    .feature_value(name, missing, text)
                    .map_err(|message| Error::row(path, line, message))
            })
            .collect::<Result<Vec<FeatureValue>>>()?;
        rows.push((line, values));
    }
    if rows.is_empty() {
        return Err(Error::file(path, "the file has no rows"));
    }
    Ok(rows)
}
