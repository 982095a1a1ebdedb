//! The batches of a run's three splits: feature vectors or images, behind one interface.

use candle_core::DType;
use ldl_core::LabelSpace;
use ldl_data::{Batch, FeatureLoader, ImageLoader, ImagePipeline, Sample, Splits};

use crate::config::Config;
use crate::error::Result;

/// The batches of each split, from feature vectors or from images.
// One value per run: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Data<'a> {
    Features {
        train: FeatureLoader<'a>,
        validation: FeatureLoader<'a>,
        test: FeatureLoader<'a>,
    },
    Images {
        train: ImageLoader,
        validation: ImageLoader,
        test: ImageLoader,
    },
}

pub(crate) type Batches<'b> = Box<dyn Iterator<Item = ldl_data::Result<Batch>> + 'b>;

impl<'a> Data<'a> {
    pub(crate) fn new(
        config: &Config,
        space: &LabelSpace,
        splits: &'a Splits,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let batch = config.optim.batch_size;
        let seed = config.run.seed;
        if !config.data.reads_images() {
            let loader = |samples: &'a [Sample]| -> Result<FeatureLoader<'a>> {
                Ok(FeatureLoader::new(samples, space, batch)?.on(device, DType::F32))
            };
            // A last training batch of one sample would give BatchNorm a variance of 0/0.
            let lone_last = splits.train.len() % batch == 1;
            return Ok(Data::Features {
                train: loader(&splits.train)?.shuffled(seed).drop_last(lone_last),
                validation: loader(&splits.validation)?,
                test: loader(&splits.test)?,
            });
        }
        let pipeline = ImagePipeline::new(config.data.image_size);
        let threads = config.data.loader_threads;
        let loader = |samples: &[Sample]| -> ldl_data::Result<ImageLoader> {
            Ok(
                ImageLoader::new(samples.to_vec(), space, pipeline.clone(), batch, threads)?
                    .on_bad_sample(config.data.on_bad_sample),
            )
        };
        Ok(Data::Images {
            train: loader(&splits.train)?.shuffled(seed).augmented(
                config.data.augment.clone(),
                config.data.label_effects.clone(),
            )?,
            validation: loader(&splits.validation)?,
            test: loader(&splits.test)?,
        })
    }

    /// Images left out while batching (`on_bad_sample = "skip"`), as `file:line: reason`.
    pub(crate) fn skipped_images(&self) -> Vec<String> {
        match self {
            Data::Features { .. } => Vec::new(),
            Data::Images {
                train,
                validation,
                test,
            } => [train, validation, test]
                .iter()
                .flat_map(|loader| loader.skipped())
                .map(|s| format!("{}: {}", s.location, s.reason))
                .collect(),
        }
    }

    pub(crate) fn train_batches(&self) -> usize {
        match self {
            Data::Features { train, .. } => train.batches(),
            Data::Images { train, .. } => train.batches(),
        }
    }

    pub(crate) fn train(&self, epoch: u64) -> Result<Batches<'_>> {
        Ok(match self {
            Data::Features { train, .. } => Box::new(train.epoch(epoch)),
            Data::Images { train, .. } => Box::new(train.epoch(epoch)),
        })
    }

    pub(crate) fn validation(&self) -> Result<Batches<'_>> {
        Ok(match self {
            Data::Features { validation, .. } => Box::new(validation.epoch(0)),
            Data::Images { validation, .. } => Box::new(validation.epoch(0)),
        })
    }

    pub(crate) fn test(&self) -> Result<Batches<'_>> {
        Ok(match self {
            Data::Features { test, .. } => Box::new(test.epoch(0)),
            Data::Images { test, .. } => Box::new(test.epoch(0)),
        })
    }
}
