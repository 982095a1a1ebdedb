//! Train / validation / test splits: by a split column, or by seeded fractions that keep
//! every group (subject) within one split.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sample::Sample;

/// The three splits.
#[derive(Debug, Clone, Default)]
pub struct Splits {
    /// Training samples.
    pub train: Vec<Sample>,
    /// Validation samples.
    pub validation: Vec<Sample>,
    /// Test samples (may be empty).
    pub test: Vec<Sample>,
}

/// The values of a split column that mean each split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitNames {
    /// Values meaning "train".
    pub train: Vec<String>,
    /// Values meaning "validation".
    pub validation: Vec<String>,
    /// Values meaning "test".
    pub test: Vec<String>,
}

impl Default for SplitNames {
    fn default() -> Self {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        SplitNames {
            train: names(&["train", "training"]),
            validation: names(&["val", "valid", "validation"]),
            test: names(&["test"]),
        }
    }
}

/// Splits samples by their split column value. A value that names no split is an error
/// naming the sample's line; an empty train or validation split is an error.
pub fn split_by_column(samples: Vec<Sample>, names: &SplitNames) -> Result<Splits> {
    let mut splits = Splits::default();
    for sample in samples {
        let Some(value) = sample.split.clone() else {
            return Err(Error::Spec(format!(
                "{}: the sample has no split value",
                sample.origin
            )));
        };
        if names.train.contains(&value) {
            splits.train.push(sample);
        } else if names.validation.contains(&value) {
            splits.validation.push(sample);
        } else if names.test.contains(&value) {
            splits.test.push(sample);
        } else {
            return Err(Error::Spec(format!(
                "{}: split `{value}` is none of train {:?}, validation {:?}, test {:?}",
                sample.origin, names.train, names.validation, names.test
            )));
        }
    }
    check_not_empty(&splits)?;
    check_groups_apart(&splits)?;
    Ok(splits)
}

/// A subject (group) listed in two splits would leak between them.
fn check_groups_apart(splits: &Splits) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (name, samples) in [
        ("train", &splits.train),
        ("validation", &splits.validation),
        ("test", &splits.test),
    ] {
        for sample in samples.iter() {
            let Some(group) = sample.group.as_deref() else {
                continue;
            };
            match seen.insert(group, name) {
                Some(other) if other != name => {
                    return Err(Error::Spec(format!(
                    "{}: subject `{group}` is in the {name} split and also in the {other} split; \
                         a subject's samples must share one split",
                    sample.origin
                )))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Splits samples at random into fractions `validation` and `test` (the rest is train),
/// drawn from `seed`. Samples with a group are assigned group by group, so a subject
/// never appears in two splits; the fractions then hold approximately.
pub fn split_by_fractions(
    samples: Vec<Sample>,
    validation: f64,
    test: f64,
    seed: u64,
) -> Result<Splits> {
    for (what, f) in [("validation", validation), ("test", test)] {
        if !(0.0..1.0).contains(&f) {
            return Err(Error::Spec(format!(
                "the {what} fraction must be in [0, 1), got {f}"
            )));
        }
    }
    if validation + test >= 1.0 {
        return Err(Error::Spec(format!(
            "validation + test fractions must leave some training data, got {validation} + {test}"
        )));
    }
    // Units of assignment: a group's samples together, or a lone sample.
    let mut units: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for (i, sample) in samples.into_iter().enumerate() {
        let key = match &sample.group {
            Some(group) => format!("g:{group}"),
            None => format!("s:{i:012}"),
        };
        units.entry(key).or_default().push(sample);
    }
    let total: usize = units.values().map(Vec::len).sum();
    let mut units: Vec<Vec<Sample>> = units.into_values().collect();
    units.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let validation_target = (validation * total as f64).round() as usize;
    let test_target = (test * total as f64).round() as usize;
    let mut splits = Splits::default();
    for unit in units {
        let destination = if splits.validation.len() < validation_target {
            &mut splits.validation
        } else if splits.test.len() < test_target {
            &mut splits.test
        } else {
            &mut splits.train
        };
        destination.extend(unit);
    }
    check_not_empty(&splits)?;
    Ok(splits)
}

fn check_not_empty(splits: &Splits) -> Result<()> {
    if splits.train.is_empty() {
        return Err(Error::EmptySplit("train".into()));
    }
    if splits.validation.is_empty() {
        return Err(Error::EmptySplit("validation".into()));
    }
    Ok(())
}
