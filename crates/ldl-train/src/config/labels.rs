//! `[data.labels.AXIS]`: the label columns of each axis, read straight into
//! [`ldl_data::LabelColumns`], the table reader's own type.
//!
//! A config spells each axis's columns as a table with exactly one of `value` (with an
//! optional `std`), `distribution` or `class`:
//!
//! | keys | [`LabelColumns`] |
//! |---|---|
//! | `value = "age"`, `std = "age_std"` (optional) | `Value { value, std }` |
//! | `distribution = ["p0", "p1", …]` | `Distribution(columns)` |
//! | `class = "sex"` | `Class(column)` |

use std::collections::BTreeMap;

use ldl_data::LabelColumns;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One axis's columns as a file spells them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    std: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    distribution: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<String>,
}

impl LabelTable {
    /// The columns, or why the combination of keys is invalid.
    fn columns(self, axis: &str) -> Result<LabelColumns, String> {
        match (self.value, self.distribution, self.class, self.std) {
            (Some(value), None, None, std) => Ok(LabelColumns::Value { value, std }),
            (None, Some(columns), None, None) => Ok(LabelColumns::Distribution(columns)),
            (None, None, Some(column), None) => Ok(LabelColumns::Class(column)),
            _ => Err(format!(
                "`data.labels.{axis}`: give exactly one of `value` (with an optional `std`), \
                 `distribution` or `class`"
            )),
        }
    }
}

impl From<&LabelColumns> for LabelTable {
    fn from(columns: &LabelColumns) -> LabelTable {
        match columns.clone() {
            LabelColumns::Value { value, std } => LabelTable {
                value: Some(value),
                std,
                ..LabelTable::default()
            },
            LabelColumns::Distribution(columns) => LabelTable {
                distribution: Some(columns),
                ..LabelTable::default()
            },
            LabelColumns::Class(column) => LabelTable {
                class: Some(column),
                ..LabelTable::default()
            },
        }
    }
}

/// Reads `[data.labels]` (serde's `deserialize_with`).
pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, LabelColumns>, D::Error> {
    BTreeMap::<String, LabelTable>::deserialize(deserializer)?
        .into_iter()
        .map(|(axis, table)| {
            let columns = table.columns(&axis).map_err(D::Error::custom)?;
            Ok((axis, columns))
        })
        .collect()
}

/// Writes `[data.labels]` as it is read (serde's `serialize_with`).
pub(super) fn serialize<S: Serializer>(
    labels: &BTreeMap<String, LabelColumns>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let tables: BTreeMap<&String, LabelTable> = labels
        .iter()
        .map(|(axis, columns)| (axis, LabelTable::from(columns)))
        .collect();
    tables.serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Data {
        #[serde(with = "super")]
        labels: BTreeMap<String, LabelColumns>,
    }

    fn parse(text: &str) -> Result<Data, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn each_spelling_becomes_its_columns_and_is_written_back_alike() {
        let text = "[labels]\nage = { value = \"age\", std = \"age_std\" }\n\
                    rating = { distribution = [\"r1\", \"r2\"] }\nsex = { class = \"sex\" }\n";
        let data = parse(text).unwrap();
        assert_eq!(
            data.labels["age"],
            LabelColumns::Value {
                value: "age".into(),
                std: Some("age_std".into())
            }
        );
        assert_eq!(
            data.labels["rating"],
            LabelColumns::Distribution(vec!["r1".into(), "r2".into()])
        );
        assert_eq!(data.labels["sex"], LabelColumns::Class("sex".into()));
        let written = toml::to_string(&data).unwrap();
        assert_eq!(parse(&written).unwrap(), data);
    }

    #[test]
    fn a_bad_combination_names_the_axis() {
        for table in [
            "{ value = \"a\", class = \"b\" }",
            "{ std = \"s\" }",
            "{ class = \"c\", std = \"s\" }",
        ] {
            let err = parse(&format!("[labels]\nage = {table}\n")).unwrap_err();
            assert!(
                err.contains("`data.labels.age`: give exactly one of `value`"),
                "{table}: {err}"
            );
        }
    }
}
