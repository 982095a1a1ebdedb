//! Datasets compiled into the crate (see `datasets/README.md` for sources and licences).

use std::path::Path;

use ldl_core::LabelSpace;

use crate::error::{Error, Result};
use crate::table::{parse_csv, OnBadSample, Table, TableSpec};

/// The names of the built-in datasets.
pub const BUILTIN_DATASETS: [&str; 3] = ["bdims", "abalone", "linnerud"];

/// The CSV text of a built-in dataset.
pub fn builtin_csv(name: &str) -> Option<&'static str> {
    match name {
        "bdims" => Some(include_str!("../datasets/bdims.csv")),
        "abalone" => Some(include_str!("../datasets/abalone.csv")),
        "linnerud" => Some(include_str!("../datasets/linnerud.csv")),
        _ => None,
    }
}

/// Reads a built-in dataset as a table (`builtin:NAME` in messages).
pub fn read_builtin(
    name: &str,
    spec: &TableSpec,
    space: &LabelSpace,
    policy: OnBadSample,
) -> Result<Table> {
    let text = builtin_csv(name).ok_or_else(|| {
        Error::Spec(format!(
            "no built-in dataset `{name}`; the built-in datasets are: {}",
            BUILTIN_DATASETS.join(", ")
        ))
    })?;
    parse_csv(
        Path::new(&format!("builtin:{name}")),
        text,
        spec,
        space,
        policy,
    )
}
