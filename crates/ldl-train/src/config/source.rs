//! `data.source` and the split files: where samples come from, parsed once from the
//! config's string (`builtin:bdims`, `hub`, `faces.csv`) into a [`DataSource`]; with
//! `data.format` it resolves into a [`Source`], how the trainer reads it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::suggest::suggestion;

/// Where samples come from: `data.source`, `data.split.validation_source` and
/// `data.split.test_source`. Written in a config as a string.
///
/// ```
/// use ldl_train::DataSource;
/// let source: DataSource = "builtin:bdims".parse()?;
/// assert_eq!(source, DataSource::Builtin("bdims".into()));
/// assert_eq!("hub".parse::<DataSource>()?, DataSource::Hub);
/// assert_eq!("faces.csv".parse::<DataSource>()?, DataSource::File("faces.csv".into()));
/// let err = "builtin:bdim".parse::<DataSource>().unwrap_err().to_string();
/// assert!(err.contains("did you mean `builtin:bdims`"), "{err}");
/// # Ok::<(), ldl_train::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DataSource {
    /// `builtin:faces`: synthetic faces rendered in memory (`[data.faces]`).
    Faces,
    /// `builtin:NAME`: a table shipped with ldl (`bdims`, `abalone`, `linnerud`).
    Builtin(String),
    /// `hub`: the parquet files of the Hugging Face dataset of `[data.hub]`.
    Hub,
    /// A file, relative to the config file: a `.csv` or `.jsonl` table, or a list in the
    /// layout of `data.format`.
    File(PathBuf),
}

const BUILTIN_PREFIX: &str = "builtin:";
const FACES: &str = "faces";
const HUB: &str = "hub";

impl DataSource {
    /// True for the sources read from a file.
    pub fn is_file(&self) -> bool {
        matches!(self, DataSource::File(_))
    }
}

impl std::str::FromStr for DataSource {
    type Err = Error;

    fn from_str(text: &str) -> Result<DataSource> {
        if text == HUB {
            return Ok(DataSource::Hub);
        }
        let Some(name) = text.strip_prefix(BUILTIN_PREFIX) else {
            if text.trim().is_empty() {
                return Err(Error::Config(
                    "`data.source` is empty: give `builtin:NAME`, `hub` or a file".into(),
                ));
            }
            return Ok(DataSource::File(PathBuf::from(text)));
        };
        if name == FACES {
            return Ok(DataSource::Faces);
        }
        if ldl_data::BUILTIN_DATASETS.contains(&name) {
            return Ok(DataSource::Builtin(name.to_string()));
        }
        let names: Vec<String> = std::iter::once(FACES)
            .chain(ldl_data::BUILTIN_DATASETS)
            .map(|n| format!("{BUILTIN_PREFIX}{n}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Err(Error::Config(format!(
            "no built-in dataset `{text}`{}; use one of {}",
            suggestion(text, &names),
            names.join(", ")
        )))
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Faces => write!(f, "{BUILTIN_PREFIX}{FACES}"),
            DataSource::Builtin(name) => write!(f, "{BUILTIN_PREFIX}{name}"),
            DataSource::Hub => f.write_str(HUB),
            DataSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl TryFrom<String> for DataSource {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<DataSource, String> {
        text.parse().map_err(|e: Error| e.to_string())
    }
}

impl From<DataSource> for String {
    fn from(source: DataSource) -> String {
        source.to_string()
    }
}

/// A source as the trainer reads it: [`DataSource`] resolved with `data.format` and the
/// file's extension.
pub(crate) enum Source<'a> {
    Faces,
    Builtin(&'a str),
    Csv(&'a Path),
    Jsonl(&'a Path),
    ChaLearn(&'a Path),
    DldlList(&'a Path),
    UtkFace(&'a Path),
    /// A split of `[data.hub]`'s dataset.
    Hub(&'a str),
}
