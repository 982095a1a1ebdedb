//! A run's inputs: `[data]`'s sources read, split into train, validation and test,
//! encoded (categories one-hot, missing values filled) and standardised.

use std::collections::BTreeMap;

use ldl_data::{
    read_builtin, read_chalearn, read_csv, read_dldl_list, read_jsonl, read_synthetic_faces,
    read_utkface, split_by_column, split_by_fractions, FeatureEncoder, Sample, SplitNames, Splits,
    Standardizer,
};

use crate::config::{CheckedConfig, DataSource, Source};
use crate::error::Result;
use crate::records::SplitRows;

/// The inputs of a run: its splits (encoded and standardised for feature data) and what
/// they hold.
pub(crate) struct Inputs {
    pub(crate) splits: Splits,
    /// The features the model reads (after encoding), in order.
    pub(crate) feature_names: Vec<String>,
    /// Samples left out as bad while reading, as `file:line: reason`.
    pub(crate) skipped: Vec<String>,
    /// The encoding fitted on the training split (feature data only).
    pub(crate) encoder: Option<FeatureEncoder>,
    /// The standardisation fitted on the training split (feature data only).
    pub(crate) standardizer: Option<Standardizer>,
    /// The rows of each split, when every sample is a row of a table.
    pub(crate) split_rows: Option<SplitRows>,
}

impl Inputs {
    /// Reads `[data]`'s sources, splits them, and encodes and standardises feature data.
    pub(crate) fn load(config: &CheckedConfig) -> Result<Inputs> {
        let (mut splits, columns, skipped) = load_splits(config)?;
        let split_rows = split_rows(&splits);
        let encoder = if config.data.reads_images() {
            None
        } else {
            let (missing, unseen) = (config.data.missing, config.data.unseen_category);
            let encoder = FeatureEncoder::fit(&columns, &splits.train, missing, unseen)?;
            for split in [&mut splits.train, &mut splits.validation, &mut splits.test] {
                encoder.apply_to(split)?;
            }
            Some(encoder)
        };
        let feature_names = encoder
            .as_ref()
            .map_or(columns, FeatureEncoder::feature_names);
        let standardizer = if config.data.standardize && !config.data.reads_images() {
            let standardizer = Standardizer::fit(&feature_names, &splits.train)?;
            for split in [&mut splits.train, &mut splits.validation, &mut splits.test] {
                standardizer.apply_to(split)?;
            }
            Some(standardizer)
        } else {
            None
        };
        Ok(Inputs {
            splits,
            feature_names,
            skipped,
            encoder,
            standardizer,
            split_rows,
        })
    }
}

/// The rows of each split ([`SplitRows`]), or `None` when some sample is not a row of a
/// table (an image of a folder) or a split draws on several files (the parquet files of a
/// Hub dataset), where a row number alone would not say which row.
fn split_rows(splits: &Splits) -> Option<SplitRows> {
    let mut files = BTreeMap::new();
    let mut rows = |name: &str, samples: &[Sample]| -> Option<Vec<u64>> {
        let first = samples.first()?;
        if samples.iter().any(|s| s.origin.file != first.origin.file) {
            return None;
        }
        files.insert(name.to_string(), first.origin.file.to_path_buf());
        let mut rows: Vec<u64> = samples
            .iter()
            .map(|s| s.origin.record)
            .collect::<Option<_>>()?;
        rows.sort_unstable();
        Some(rows)
    };
    let train = rows("train", &splits.train)?;
    let validation = rows("validation", &splits.validation)?;
    let test = match splits.test.is_empty() {
        true => Vec::new(),
        false => rows("test", &splits.test)?,
    };
    Some(SplitRows {
        train,
        validation,
        test,
        files,
    })
}

/// Reads the source, splits it, and returns the splits, the feature names and the
/// skipped samples.
fn load_splits(config: &CheckedConfig) -> Result<(Splits, Vec<String>, Vec<String>)> {
    let table = read_table(config, config.data.source()?)?;
    let mut skipped: Vec<String> = table
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.location, s.reason))
        .collect();
    let split = &config.data.split;
    let seed = config.run.seed;
    if split.column.is_some() {
        let splits = split_by_column(table.samples, &SplitNames::default())?;
        return Ok((splits, table.feature_names, skipped));
    }
    // Validation and test sources: files beside a local source, splits of a Hub dataset.
    let (validation_source, test_source) = match &config.data.hub {
        Some(hub) if config.data.source == DataSource::Hub => (
            hub.validation_split.as_deref().map(Source::Hub),
            hub.test_split.as_deref().map(Source::Hub),
        ),
        _ => (
            split
                .validation_source
                .as_ref()
                .map(|f| config.data.source_of("data.split.validation_source", f))
                .transpose()?,
            split
                .test_source
                .as_ref()
                .map(|f| config.data.source_of("data.split.test_source", f))
                .transpose()?,
        ),
    };
    let mut read_file = |source: Option<Source<'_>>| -> Result<Option<Vec<Sample>>> {
        let Some(source) = source else {
            return Ok(None);
        };
        let part = read_table(config, source)?;
        skipped.extend(
            part.skipped
                .iter()
                .map(|s| format!("{}: {}", s.location, s.reason)),
        );
        Ok(Some(part.samples))
    };
    let validation_file = read_file(validation_source)?;
    let test_file = read_file(test_source)?;
    // Splits without a file are drawn from the source by their fraction.
    let splits = match (validation_file, test_file) {
        (None, None) => split_by_fractions(table.samples, split.validation, split.test, seed)?,
        (None, Some(test)) => Splits {
            test,
            ..split_by_fractions(table.samples, split.validation, 0.0, seed)?
        },
        (Some(validation), test_file) => {
            let (train, test) = match test_file {
                Some(test) => (table.samples, test),
                None if split.test > 0.0 => {
                    // Drawn as if it were a validation fraction, then used as the test split.
                    let drawn = split_by_fractions(table.samples, split.test, 0.0, seed)?;
                    (drawn.train, drawn.validation)
                }
                None => (table.samples, Vec::new()),
            };
            Splits {
                train,
                validation,
                test,
            }
        }
    };
    for (name, samples) in [("train", &splits.train), ("validation", &splits.validation)] {
        if samples.is_empty() {
            return Err(ldl_data::Error::EmptySplit(name.into()).into());
        }
    }
    Ok((splits, table.feature_names, skipped))
}

/// Reads one table of the task's data.
fn read_table(config: &CheckedConfig, source: Source<'_>) -> Result<ldl_data::Table> {
    let (spec, space) = (config.table_spec(), config.space());
    let policy = config.data.on_bad_sample;
    let images = config.data.images.as_deref();
    Ok(match source {
        Source::Faces => {
            let faces = &config.data.faces;
            let generator = faces.generator(config.data.image_size, config.run.seed);
            read_synthetic_faces(&generator, faces.count, spec, space, policy)?
        }
        Source::Builtin(name) => read_builtin(name, spec, space, policy)?,
        Source::Csv(path) => read_csv(path, spec, space, policy)?,
        Source::Jsonl(path) => read_jsonl(path, spec, space, policy)?,
        Source::ChaLearn(path) => read_chalearn(path, images, space, policy)?,
        Source::DldlList(path) => read_dldl_list(path, images, space, policy)?,
        Source::UtkFace(path) => read_utkface(path, space, policy)?,
        Source::Hub(split) => {
            crate::hub_data::read_hub_split(config, &ldl_hub::Hub::from_env(), split, space)?
        }
    })
}
