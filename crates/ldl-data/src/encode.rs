//! Feature columns as users have them, made the numbers a model reads: a column whose
//! training values are not all numbers is categorical and one-hot encoded over the
//! categories of the training split, and a missing value is an error or the training mean.
//! The encoder is fitted on the training split only and stored with the model, so that
//! prediction encodes new rows exactly as training did.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::missing::Missing;
use crate::sample::{FeatureValue, Input, Sample};

/// What a category the training split did not hold becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnseenCategory {
    /// An error naming the row, the column and the value (the default).
    #[default]
    Error,
    /// All zeros in the column's one-hot features: no known category.
    Zeros,
}

/// How one feature column of the table becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EncodedColumn {
    /// A number, as it is: one feature named as the column.
    Numeric {
        /// The column.
        name: String,
        /// What a missing value becomes: the training mean (with [`Missing::Mean`]), or
        /// nothing (a missing value is an error).
        fill: Option<f64>,
    },
    /// A category, one-hot: one feature `column=category` per category.
    Categorical {
        /// The column.
        name: String,
        /// The training split's categories, sorted by their bytes. A number in a
        /// categorical column is the category of its value (`1` and `1.0` are one).
        categories: Vec<String>,
        /// What a missing value becomes: each category's share of the training rows
        /// (with [`Missing::Mean`]), or nothing (a missing value is an error).
        fill: Option<Vec<f64>>,
    },
}

impl EncodedColumn {
    /// The column's name in the table.
    pub fn name(&self) -> &str {
        match self {
            EncodedColumn::Numeric { name, .. } | EncodedColumn::Categorical { name, .. } => name,
        }
    }
}

/// Feature cells to feature vectors: per column, a number or a one-hot category, with
/// missing values filled as fitted ([`FeatureEncoder::fit`] on the training split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureEncoder {
    /// The table's feature columns, in order, and how each is encoded.
    pub columns: Vec<EncodedColumn>,
    /// What a category the training split did not hold becomes.
    pub unseen: UnseenCategory,
}

/// The category a present cell stands for.
fn category_of(value: &FeatureValue) -> Option<Cow<'_, str>> {
    match value {
        FeatureValue::Number(x) => Some(Cow::Owned(x.to_string())),
        FeatureValue::Text(text) => Some(Cow::Borrowed(text)),
        FeatureValue::Missing => None,
    }
}

/// A sample's feature cells, `width` of them.
fn cells_of(sample: &Sample, width: usize) -> Result<Cow<'_, [FeatureValue]>> {
    let cells: Cow<'_, [FeatureValue]> = match &sample.input {
        Input::Features(features) => {
            Cow::Owned(features.iter().map(|x| FeatureValue::Number(*x)).collect())
        }
        Input::Unencoded(values) => Cow::Borrowed(values),
        Input::ImagePath(_) | Input::ImageBytes(_) | Input::Synthetic { .. } => {
            return Err(Error::Spec(format!(
                "{}: encoding features needs feature columns, not images",
                sample.origin
            )))
        }
    };
    if cells.len() != width {
        return Err(Error::Spec(format!(
            "{}: {} feature cells, expected {width}",
            sample.origin,
            cells.len()
        )));
    }
    Ok(cells)
}

impl FeatureEncoder {
    /// Fits the encoding of `columns` on the training samples: a column with a value that
    /// is not a number is categorical, its categories those of the training split; with
    /// [`Missing::Mean`] the means that fill missing values are the training split's.
    pub fn fit(
        columns: &[String],
        samples: &[Sample],
        missing: Missing,
        unseen: UnseenCategory,
    ) -> Result<FeatureEncoder> {
        if samples.is_empty() {
            return Err(Error::EmptySplit(
                "train (nothing to fit the feature encoding on)".into(),
            ));
        }
        let width = columns.len();
        // First pass: which columns hold text. Second: their statistics.
        let mut categorical = vec![false; width];
        for sample in samples {
            for (j, value) in cells_of(sample, width)?.iter().enumerate() {
                categorical[j] |= matches!(value, FeatureValue::Text(_));
            }
        }
        let mut sums = vec![0.0f64; width];
        let mut present = vec![0usize; width];
        let mut counts: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); width];
        for sample in samples {
            for (j, value) in cells_of(sample, width)?.iter().enumerate() {
                match value {
                    FeatureValue::Missing => continue,
                    FeatureValue::Number(x) if !categorical[j] => sums[j] += f64::from(*x),
                    other => {
                        let key = category_of(other).unwrap_or_default().into_owned();
                        *counts[j].entry(key).or_default() += 1;
                    }
                }
                present[j] += 1;
            }
        }
        let mut encoded = Vec::with_capacity(width);
        for (j, name) in columns.iter().enumerate() {
            if missing == Missing::Mean && present[j] == 0 {
                return Err(Error::Spec(format!(
                    "feature column `{name}` has no value in the training split, so there is no \
                     mean to fill it with; remove it from the features"
                )));
            }
            let n = present[j] as f64;
            let mean = |total: f64| (missing == Missing::Mean).then(|| total / n);
            encoded.push(if categorical[j] {
                // BTreeMap keys come sorted by their bytes: the order never depends on the rows'.
                let (categories, shares): (Vec<String>, Vec<f64>) = std::mem::take(&mut counts[j])
                    .into_iter()
                    .map(|(category, count)| (category, count as f64))
                    .unzip();
                EncodedColumn::Categorical {
                    name: name.clone(),
                    categories,
                    fill: (missing == Missing::Mean)
                        .then(|| shares.iter().map(|c| c / n).collect()),
                }
            } else {
                EncodedColumn::Numeric {
                    name: name.clone(),
                    fill: mean(sums[j]),
                }
            });
        }
        Ok(FeatureEncoder {
            columns: encoded,
            unseen,
        })
    }

    /// The table columns the encoder reads, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name().to_string()).collect()
    }

    /// The features it gives, in order: a numeric column's name, or `column=category`
    /// for each category of a categorical one.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for column in &self.columns {
            match column {
                EncodedColumn::Numeric { name, .. } => names.push(name.clone()),
                EncodedColumn::Categorical {
                    name, categories, ..
                } => names.extend(categories.iter().map(|c| format!("{name}={c}"))),
            }
        }
        names
    }

    /// What a missing cell is to this encoder: [`Missing::Mean`] when it fills them.
    pub fn missing(&self) -> Missing {
        let fills = self.columns.iter().any(|c| match c {
            EncodedColumn::Numeric { fill, .. } => fill.is_some(),
            EncodedColumn::Categorical { fill, .. } => fill.is_some(),
        });
        if fills {
            Missing::Mean
        } else {
            Missing::Error
        }
    }

    /// Whether it changes nothing: every column numeric and nothing to fill, so the
    /// features are the columns as read (what models trained before encoders read).
    pub fn is_identity(&self) -> bool {
        self.columns
            .iter()
            .all(|c| matches!(c, EncodedColumn::Numeric { fill: None, .. }))
    }

    /// Whether a categorical column is among its columns (text is then a category).
    pub fn reads_text(&self) -> bool {
        self.columns
            .iter()
            .any(|c| matches!(c, EncodedColumn::Categorical { .. }))
    }

    /// One row's features; the error names the column and the value.
    pub fn encode(&self, cells: &[FeatureValue]) -> std::result::Result<Vec<f32>, String> {
        let mut features = Vec::with_capacity(self.columns.len());
        for (column, value) in self.columns.iter().zip(cells) {
            match column {
                EncodedColumn::Numeric { name, fill } => features.push(match value {
                    FeatureValue::Number(x) => *x,
                    FeatureValue::Missing => match fill {
                        Some(mean) => *mean as f32,
                        None => return Err(format!("column `{name}` has no value")),
                    },
                    FeatureValue::Text(text) => {
                        return Err(format!(
                            "column `{name}`: `{text}` is not a number (the column held only \
                             numbers in the training split)"
                        ))
                    }
                }),
                EncodedColumn::Categorical {
                    name,
                    categories,
                    fill,
                } => self.one_hot(name, categories, fill.as_deref(), value, &mut features)?,
            }
        }
        Ok(features)
    }

    /// Appends the one-hot features of `value` in a categorical column.
    fn one_hot(
        &self,
        name: &str,
        categories: &[String],
        fill: Option<&[f64]>,
        value: &FeatureValue,
        features: &mut Vec<f32>,
    ) -> std::result::Result<(), String> {
        let Some(category) = category_of(value) else {
            return match fill {
                Some(shares) => {
                    features.extend(shares.iter().map(|s| *s as f32));
                    Ok(())
                }
                None => Err(format!("column `{name}` has no value")),
            };
        };
        let start = features.len();
        features.resize(start + categories.len(), 0.0);
        match categories.iter().position(|c| *c == category) {
            Some(i) => features[start + i] = 1.0,
            None if self.unseen == UnseenCategory::Zeros => {}
            None => {
                return Err(format!(
                    "column `{name}`: `{category}` is a category the training split did not \
                     hold (it held {}); train with unseen_category = \"zeros\" in [data] to \
                     encode such a value as no category",
                    categories.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// Encodes the features of every sample in place; an error names the sample's row.
    pub fn apply_to(&self, samples: &mut [Sample]) -> Result<()> {
        for sample in samples {
            let cells = cells_of(sample, self.columns.len())?;
            let features = self
                .encode(&cells)
                .map_err(|message| Error::Spec(format!("{}: {message}", sample.origin)))?;
            sample.input = Input::Features(features);
        }
        Ok(())
    }

    /// What makes a stored encoder unusable, if anything: a categorical column without
    /// categories or with one twice, or a fill that is not finite or not one value per
    /// category.
    pub fn problem(&self) -> Option<String> {
        for column in &self.columns {
            let name = column.name();
            match column {
                EncodedColumn::Numeric { fill: Some(f), .. } if !f.is_finite() => {
                    return Some(format!("fills `{name}` with {f}"))
                }
                EncodedColumn::Categorical {
                    categories, fill, ..
                } => {
                    let sorted = categories.windows(2).all(|w| w[0] < w[1]);
                    if categories.is_empty() || !sorted {
                        return Some(format!(
                            "does not list the categories of `{name}` once each, sorted"
                        ));
                    }
                    if let Some(fill) = fill {
                        if fill.len() != categories.len() || fill.iter().any(|f| !f.is_finite()) {
                            return Some(format!(
                                "does not fill `{name}` with one share per category"
                            ));
                        }
                    }
                }
                EncodedColumn::Numeric { .. } => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ldl_core::{Axis, LabelSpace};

    use super::*;
    use crate::table::{parse_csv, InputColumns, LabelColumns, OnBadSample, TableSpec};

    fn space() -> LabelSpace {
        LabelSpace::new(vec![Axis::linear("y", 0.0, 10.0, 1.0).unwrap()]).unwrap()
    }

    /// The samples of `text`, features `x` and `colour`, label `y`.
    fn read(text: &str, missing: Missing) -> std::result::Result<Vec<Sample>, String> {
        let features = vec!["x".to_string(), "colour".to_string()];
        let mut spec = TableSpec::new(InputColumns::Features(features)).with_label(
            "y",
            LabelColumns::Value {
                value: "y".into(),
                std: None,
            },
        );
        spec.missing = missing;
        spec.text_features = true;
        parse_csv(
            Path::new("t.csv"),
            text,
            &spec,
            &space(),
            OnBadSample::Error,
        )
        .map(|t| t.samples)
        .map_err(|e| e.to_string())
    }

    fn columns() -> Vec<String> {
        vec!["x".into(), "colour".into()]
    }

    #[test]
    fn text_columns_are_one_hot_over_the_sorted_training_categories() {
        let train = read(
            "x,colour,y\n1,red,1\n2,blue,2\n3,red,3\n4,7,4\n",
            Missing::Error,
        )
        .unwrap();
        // A row of numbers only is read as features; one with text as cells.
        assert_eq!(train[3].input, Input::Features(vec![4.0, 7.0]));
        assert!(matches!(train[0].input, Input::Unencoded(_)));
        let encoder =
            FeatureEncoder::fit(&columns(), &train, Missing::Error, UnseenCategory::Error).unwrap();
        // Sorted by bytes: digits before letters.
        assert_eq!(
            encoder.feature_names(),
            ["x", "colour=7", "colour=blue", "colour=red"]
        );
        assert!(!encoder.is_identity());
        let mut samples = train.clone();
        encoder.apply_to(&mut samples).unwrap();
        let rows: Vec<Input> = samples.into_iter().map(|s| s.input).collect();
        assert_eq!(
            rows,
            [
                Input::Features(vec![1.0, 0.0, 0.0, 1.0]),
                Input::Features(vec![2.0, 0.0, 1.0, 0.0]),
                Input::Features(vec![3.0, 0.0, 0.0, 1.0]),
                Input::Features(vec![4.0, 1.0, 0.0, 0.0]),
            ]
        );
        // `7.0` is the category of the number 7.
        let seven = [FeatureValue::Number(1.0), FeatureValue::Text("7.0".into())];
        let seven_number = [FeatureValue::Number(1.0), FeatureValue::Number(7.0)];
        assert_eq!(encoder.encode(&seven_number), Ok(vec![1.0, 1.0, 0.0, 0.0]));
        assert!(
            encoder.encode(&seven).is_err(),
            "text `7.0` is not the number"
        );
    }

    #[test]
    fn an_unseen_category_is_an_error_naming_row_column_and_value_or_zeros() {
        let train = read("x,colour,y\n1,red,1\n2,blue,2\n", Missing::Error).unwrap();
        let mut other = read("x,colour,y\n5,green,1\n", Missing::Error).unwrap();
        let encoder =
            FeatureEncoder::fit(&columns(), &train, Missing::Error, UnseenCategory::Error).unwrap();
        let err = encoder
            .apply_to(&mut other.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.csv:2: column `colour`: `green` is a category the training split did not hold (it held blue, red)"),
            "{err}"
        );
        let zeros = FeatureEncoder {
            unseen: UnseenCategory::Zeros,
            ..encoder
        };
        zeros.apply_to(&mut other).unwrap();
        assert_eq!(other[0].input, Input::Features(vec![5.0, 0.0, 0.0]));
    }

    #[test]
    fn missing_values_are_an_error_or_the_training_mean() {
        let text = "x,colour,y\n1,red,1\nNA,blue,2\n5,,3\n,red,4\n";
        let err = read(text, Missing::Error).unwrap_err();
        assert!(err.contains("t.csv:3: column `x` has no value"), "{err}");
        let train = read(text, Missing::Mean).unwrap();
        let encoder =
            FeatureEncoder::fit(&columns(), &train, Missing::Mean, UnseenCategory::Error).unwrap();
        // x: the mean of 1 and 5. colour: blue 1 of 3 rows with a colour, red 2 of 3.
        let (mean_x, blue, red) = ((1.0 + 5.0) / 2.0, 1.0 / 3.0, 2.0 / 3.0);
        assert_eq!(
            encoder.columns,
            [
                EncodedColumn::Numeric {
                    name: "x".into(),
                    fill: Some(mean_x)
                },
                EncodedColumn::Categorical {
                    name: "colour".into(),
                    categories: vec!["blue".into(), "red".into()],
                    fill: Some(vec![blue, red]),
                },
            ]
        );
        let mut samples = train;
        encoder.apply_to(&mut samples).unwrap();
        assert_eq!(samples[1].input, Input::Features(vec![3.0, 1.0, 0.0]));
        assert_eq!(
            samples[2].input,
            Input::Features(vec![5.0, blue as f32, red as f32])
        );
        assert_eq!(samples[3].input, Input::Features(vec![3.0, 0.0, 1.0]));
        assert_eq!(encoder.missing(), Missing::Mean);
    }

    #[test]
    fn a_column_without_any_training_value_cannot_be_imputed() {
        let train = read("x,colour,y\nNA,red,1\n,blue,2\n", Missing::Mean).unwrap();
        let err = FeatureEncoder::fit(&columns(), &train, Missing::Mean, UnseenCategory::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("feature column `x` has no value in the training split"),
            "{err}"
        );
    }

    #[test]
    fn numbers_only_encode_as_they_are() {
        let train = read("x,colour,y\n1,2,1\n3,4,2\n", Missing::Error).unwrap();
        let encoder =
            FeatureEncoder::fit(&columns(), &train, Missing::Error, UnseenCategory::Error).unwrap();
        assert!(encoder.is_identity());
        assert_eq!(encoder.feature_names(), columns());
        // Text where training held only numbers is named, not guessed at.
        let cells = [FeatureValue::Text("many".into()), FeatureValue::Number(1.0)];
        let err = encoder.encode(&cells).unwrap_err();
        assert!(err.contains("column `x`: `many` is not a number"), "{err}");
    }
}
