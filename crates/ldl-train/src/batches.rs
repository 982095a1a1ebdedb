//! The batches of a run's three splits: feature vectors or images, behind one interface.

use candle_core::DType;
use ldl_core::LabelSpace;
use ldl_data::{
    BatchSource, FeatureLoader, FeatureNoise, ImageLoader, ImagePipeline, Sample, Shard, Splits,
};

use crate::config::Config;
use crate::error::Result;

/// The batches of each split, from feature vectors or from images.
pub(crate) struct Data<'a> {
    /// The training split: shuffled per epoch, augmented when it reads images.
    pub(crate) train: Box<dyn BatchSource + 'a>,
    /// The validation split, in file order (this rank's part of it in data-parallel
    /// training).
    pub(crate) validation: Box<dyn BatchSource + 'a>,
    /// The test split, in file order.
    pub(crate) test: Box<dyn BatchSource + 'a>,
}

impl<'a> Data<'a> {
    pub(crate) fn new(
        config: &Config,
        space: &LabelSpace,
        splits: &'a Splits,
        device: &candle_core::Device,
        shard: Shard,
    ) -> Result<Self> {
        let batch = config.optim.batch_size;
        let seed = config.run.seed;
        if !config.data.reads_images() {
            let loader = |samples: &'a [Sample]| -> Result<FeatureLoader<'a>> {
                Ok(FeatureLoader::new(samples, space, batch)?.on(device, DType::F32))
            };
            let lone_last = lone_last(splits.train.len(), batch, shard.world);
            let noise = FeatureNoise::new(config.data.feature_noise(), noise_seed(seed))?;
            let train = loader(&splits.train)?
                .sharded(shard)
                .shuffled(seed)
                .with_noise(noise);
            return Ok(Data {
                train: Box::new(train.drop_last(lone_last)),
                // Each rank evaluates its part; the figures are summed over the ranks.
                validation: Box::new(loader(&splits.validation)?.sharded(shard)),
                test: Box::new(loader(&splits.test)?),
            });
        }
        let pipeline = ImagePipeline::new(config.data.image_size);
        let threads = config.data.decoding_threads();
        let loader = |samples: &[Sample]| -> ldl_data::Result<ImageLoader> {
            Ok(
                ImageLoader::new(samples.to_vec(), space, pipeline.clone(), batch, threads)?
                    .on_bad_sample(config.data.on_bad_sample),
            )
        };
        // SyncBN divides the summed gradient sums by the whole batch: every rank needs an
        // equal part, so a last batch that splits unevenly is left out.
        let uneven_last = config.run.sync_batch_norm
            && shard.world > 1
            && !(splits.train.len() % (batch * shard.world)).is_multiple_of(shard.world);
        let train = loader(&splits.train)?
            .sharded(shard)
            .drop_last(uneven_last)
            .shuffled(seed)
            .augmented(
                config.data.augment.clone(),
                config.data.label_effects.clone(),
            )?;
        Ok(Data {
            train: Box::new(train),
            validation: Box::new(loader(&splits.validation)?.sharded(shard)),
            test: Box::new(loader(&splits.test)?),
        })
    }

    /// Samples left out while batching (`on_bad_sample = "skip"`), as `file:line: reason`.
    pub(crate) fn skipped(&self) -> Vec<String> {
        [&self.train, &self.validation, &self.test]
            .iter()
            .flat_map(|source| source.skipped())
            .map(|s| format!("{}: {}", s.location, s.reason))
            .collect()
    }
}

/// The seed of the training features' noise: the run's seed, mixed so that the noise is
/// not drawn from the stream that shuffles the samples.
pub(crate) fn noise_seed(seed: u64) -> u64 {
    ldl_data::mix_seed(seed, u64::from_le_bytes(*b"featnois"))
}

/// Whether to drop an epoch's last global batch of `samples` samples cut into batches of
/// `batch` per rank over `world` ranks: when a rank's part of it would hold a single
/// sample, whose BatchNorm variance is 0/0.
pub(crate) fn lone_last(samples: usize, batch: usize, world: usize) -> bool {
    let last = samples % (batch * world.max(1));
    last > 0
        && (0..world.max(1))
            .any(|rank| ldl_distributed::Shard { rank, world }.range(last).len() == 1)
}
