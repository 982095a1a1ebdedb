//! One sample: an input and one raw label per axis.

use std::path::PathBuf;
use std::sync::Arc;

use ldl_core::Label;

/// A sample's input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A feature vector.
    Features(Vec<f32>),
    /// A row of feature cells as read, before a [`crate::FeatureEncoder`] makes them a
    /// feature vector: some cell holds text (a category) or nothing (a missing value).
    /// Rows whose every cell is a number are read as [`Input::Features`] at once.
    Unencoded(Vec<FeatureValue>),
    /// An image file, decoded when batched.
    ImagePath(PathBuf),
    /// An encoded image (JPEG or PNG) held in memory, as read from a parquet file; decoded
    /// when batched, like a file.
    ImageBytes(Arc<[u8]>),
    /// Face `index` of the synthetic face generator, rendered when batched.
    Synthetic {
        /// The generator's settings (shared by every sample of the set).
        generator: Arc<crate::SynthConfig>,
        /// The face's index: face `i` of a setting is always the same image.
        index: u64,
    },
}

/// One feature cell as read from a table, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    /// A finite number.
    Number(f32),
    /// Text that is not a number: a category.
    Text(String),
    /// No value: an empty cell, `NA`, `NaN` or a null.
    Missing,
}

/// Where a sample came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleOrigin {
    /// The file it was read from.
    pub file: Arc<PathBuf>,
    /// Its line in that file (1-based); 0 when the file is the sample itself (an image
    /// of a folder-based dataset such as UTKFace), or when `row` is set.
    pub line: usize,
    /// Its row (0-based) in a file of rows rather than lines (a parquet file).
    pub row: Option<u64>,
    /// Its position (0-based) among the data rows of its table, after the header and
    /// counting rows left out as bad: the index a data-frame library gives the row. `None`
    /// for samples that are files rather than rows.
    pub record: Option<u64>,
}

impl SampleOrigin {
    /// Line `line` of `file` (0: the file itself).
    pub fn line(file: Arc<PathBuf>, line: usize) -> SampleOrigin {
        SampleOrigin {
            file,
            line,
            row: None,
            record: None,
        }
    }

    /// Line `line` of `file`, the data row `record` (0-based) of its table.
    pub fn record(file: Arc<PathBuf>, line: usize, record: usize) -> SampleOrigin {
        SampleOrigin {
            record: Some(record as u64),
            ..SampleOrigin::line(file, line)
        }
    }
}

impl std::fmt::Display for SampleOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(row) = self.row {
            write!(f, "{} row {row}", self.file.display())
        } else if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// An input with one raw label per axis of the label space (in its order), plus the
/// optional group (subject) and split it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The input.
    pub input: Input,
    /// One label per axis.
    pub labels: Vec<Label>,
    /// The subject, when the data has subject ids: splits never separate a subject.
    pub group: Option<String>,
    /// The split named in the data, if any.
    pub split: Option<String>,
    /// Where the sample came from.
    pub origin: SampleOrigin,
}
