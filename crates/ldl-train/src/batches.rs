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
            let synced = config.run.sync_batch_norm && shard.world > 1;
            // Feature inputs train the MLP (the config check refuses anything else).
            let norm = Norm::with(config.model.batch_norm, synced);
            let drop_last = drop_last_batch(
                splits.train.len(),
                batch,
                shard.world,
                Inputs::Features,
                norm,
            );
            let noise = network_noises(config.data.feature_noise(), seed, config.model.ensemble)?;
            let train = loader(&splits.train)?
                .sharded(shard)
                .shuffled(seed)
                .with_noise_per_network(noise);
            return Ok(Data {
                train: Box::new(train.drop_last(drop_last)),
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
        let synced = config.run.sync_batch_norm && shard.world > 1;
        let norm = Norm::with(true, synced);
        let drop_last =
            drop_last_batch(splits.train.len(), batch, shard.world, Inputs::Images, norm);
        let train = loader(&splits.train)?
            .sharded(shard)
            .drop_last(drop_last)
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

/// The training features' noise of std `std` for each of a model's `networks` networks:
/// the first drawn from [`noise_seed`] (as without an ensemble), each other from a stream
/// of its own.
pub(crate) fn network_noises(std: f32, seed: u64, networks: usize) -> Result<Vec<FeatureNoise>> {
    (0..networks)
        .map(|network| {
            let seed = match network {
                0 => noise_seed(seed),
                n => ldl_data::mix_seed(noise_seed(seed), n as u64),
            };
            Ok(FeatureNoise::new(std, seed)?)
        })
        .collect()
}

/// Whether to drop an epoch's last global batch of `samples` samples cut into batches of
/// `batch` per rank over `world` ranks, for a training loader of `inputs` and a model whose
/// BatchNorm is `norm`; as one process with the global batch would, where that is possible.
///
/// - Features: when the whole batch holds a single sample (one process's rule: its
///   BatchNorm variance would be 0/0); with per-rank BatchNorm also when a rank's part
///   would hold a single sample; with SyncBN also when a rank's part would be empty (a
///   rank with no samples cannot join the sums).
/// - Images: never, but with SyncBN when a rank's part would be empty (the image networks'
///   fused BatchNorm takes a single sample).
pub(crate) fn drop_last_batch(
    samples: usize,
    batch: usize,
    world: usize,
    inputs: Inputs,
    norm: Norm,
) -> bool {
    let world = world.max(1);
    let last = samples % (batch * world);
    let part_sizes = || (0..world).map(move |rank| Shard { rank, world }.range(last).len());
    let empty_part = last > 0 && part_sizes().any(|n| n == 0);
    let lone_part = last > 0 && part_sizes().any(|n| n == 1);
    match (inputs, norm) {
        (Inputs::Features, Norm::None) => last == 1,
        (Inputs::Features, Norm::PerRank) => last == 1 || lone_part,
        (Inputs::Features, Norm::Synced) => last == 1 || empty_part,
        (Inputs::Images, Norm::Synced) => empty_part,
        (Inputs::Images, _) => false,
    }
}

/// What a training loader reads, for [`drop_last_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inputs {
    Features,
    Images,
}

/// The model's BatchNorm, for [`drop_last_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Norm {
    /// No BatchNorm.
    None,
    /// Each rank normalises its part by its own statistics.
    PerRank,
    /// SyncBN: the whole batch's statistics.
    Synced,
}

impl Norm {
    /// The BatchNorm of a model built from `backbone`, synchronised or not.
    pub(crate) fn of(backbone: &ldl_models::BackboneConfig, synced: bool) -> Norm {
        let has_batch_norm = match backbone {
            ldl_models::BackboneConfig::Mlp(mlp) => mlp.batch_norm,
            ldl_models::BackboneConfig::Vgg(_) => true,
        };
        Norm::with(has_batch_norm, synced)
    }

    /// A model with BatchNorm or without, synchronised or not.
    pub(crate) fn with(has_batch_norm: bool, synced: bool) -> Norm {
        match (has_batch_norm, synced) {
            (false, _) => Norm::None,
            (true, false) => Norm::PerRank,
            (true, true) => Norm::Synced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_batch_is_dropped_only_when_a_part_cannot_normalise() {
        use Inputs::{Features, Images};
        // 305 rows, 16 per rank, 2 ranks: a last batch of 17, parts of 8 and 9.
        for inputs in [Features, Images] {
            for norm in [Norm::None, Norm::PerRank, Norm::Synced] {
                assert!(!drop_last_batch(305, 16, 2, inputs, norm));
            }
        }
        // A last batch of 3 over 2 ranks: parts of 1 and 2. Per-rank BatchNorm cannot
        // take the part of 1; SyncBN normalises it with the whole batch's statistics, and
        // without BatchNorm it is kept, as one process keeps its last batch of 3.
        assert!(drop_last_batch(35, 16, 2, Features, Norm::PerRank));
        assert!(!drop_last_batch(35, 16, 2, Features, Norm::Synced));
        assert!(!drop_last_batch(35, 16, 2, Features, Norm::None));
        assert!(!drop_last_batch(35, 32, 1, Features, Norm::PerRank));
        // A last batch of 1: dropped as one process drops it (its variance would be 0/0).
        assert!(drop_last_batch(33, 32, 1, Features, Norm::PerRank));
        for norm in [Norm::None, Norm::PerRank, Norm::Synced] {
            assert!(drop_last_batch(33, 16, 2, Features, norm));
        }
        // A last batch of 2 over 4 ranks leaves two ranks with nothing to add to SyncBN's
        // sums; without SyncBN they join the step with zeros.
        assert!(drop_last_batch(66, 16, 4, Features, Norm::Synced));
        assert!(drop_last_batch(66, 16, 4, Images, Norm::Synced));
        assert!(!drop_last_batch(66, 16, 4, Images, Norm::PerRank));
        assert!(!drop_last_batch(66, 16, 4, Features, Norm::None));
        // Whole batches only: nothing to drop.
        assert!(!drop_last_batch(64, 16, 2, Features, Norm::PerRank));
        assert!(!drop_last_batch(64, 16, 4, Images, Norm::Synced));
    }
}
