//! Batches of feature samples as tensors, shuffled per epoch from a seed.

use candle_core::{DType, Device, Tensor};
use ldl_core::{AxisTargets, LabelSpace};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use ldl_distributed::{BatchRows, Shard};

use crate::error::{Error, Result};
use crate::feature_noise::FeatureNoise;
use crate::sample::{Input, Sample};
use crate::seeds::mix;

/// A batch: inputs (`(B, F)` features or `(B, 3, H, W)` images) and per-axis targets.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The inputs.
    pub inputs: Tensor,
    /// One entry per axis of the label space.
    pub targets: Vec<AxisTargets>,
    /// The positions of the batch's samples in the loader's sample list.
    pub indices: Vec<usize>,
    /// Where the batch sits in its global batch: a rank's part in data-parallel training,
    /// or the whole of it (`BatchRows::whole`) in one process.
    pub rows: BatchRows,
    /// The inputs of the other networks of an ensemble, each with noise of its own
    /// ([`FeatureLoader::with_noise_per_network`]): network `k ≥ 1` reads
    /// `network_inputs[k − 1]`. Empty when every network reads `inputs`.
    pub network_inputs: Vec<Tensor>,
}

impl Batch {
    /// The inputs every network of a model reads: one tensor for all, or one per network.
    pub fn inputs_per_network(&self) -> Vec<Tensor> {
        std::iter::once(self.inputs.clone())
            .chain(self.network_inputs.iter().cloned())
            .collect()
    }
}

/// Cuts feature samples into batches.
///
/// The order of epoch `e` is a shuffle drawn from `(seed, e)` alone, so a run resumed at
/// epoch `e` sees the batches an uninterrupted run would.
///
/// ```
/// # use ldl_data::*;
/// # use ldl_core::{Axis, LabelSpace};
/// let space = LabelSpace::new(vec![Axis::linear("age_years", 18.0, 67.0, 1.0)?])?;
/// let spec = TableSpec::new(InputColumns::AllOtherColumns)
///     .with_label("age_years", LabelColumns::Value { value: "age_years".into(), std: None });
/// let spec = TableSpec { input: InputColumns::Features(vec!["hip_gi".into(), "wai_gi".into()]), ..spec };
/// let table = read_builtin("bdims", &spec, &space, OnBadSample::Error)?;
/// let loader = FeatureLoader::new(&table.samples, &space, 64)?.shuffled(7);
/// let batches: Vec<Batch> = loader.epoch(0).collect::<Result<_>>()?;
/// assert_eq!(batches.len(), 8); // 507 samples: 7 full batches and one of 59
/// assert_eq!(batches[0].inputs.dims(), [64, 2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FeatureLoader<'a> {
    samples: &'a [Sample],
    space: LabelSpace,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    drop_last: bool,
    shard: Shard,
    /// The noise of each network's inputs (one without an ensemble; none without noise).
    noise: Vec<FeatureNoise>,
    device: Device,
    dtype: DType,
}

impl<'a> FeatureLoader<'a> {
    /// A loader over `samples` in their order, keeping a last partial batch, on the CPU
    /// in f32.
    pub fn new(samples: &'a [Sample], space: &LabelSpace, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::Spec("the batch size must be ≥ 1".into()));
        }
        Ok(FeatureLoader {
            samples,
            space: space.clone(),
            batch_size,
            shuffle_seed: None,
            drop_last: false,
            shard: Shard::WHOLE,
            noise: Vec::new(),
            device: Device::Cpu,
            dtype: DType::F32,
        })
    }

    /// Shuffles every epoch, from this seed.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Adds Gaussian noise to every feature of every batch, drawn per epoch and sample
    /// (see [`FeatureNoise`]): for the training split.
    pub fn with_noise(self, noise: FeatureNoise) -> Self {
        self.with_noise_per_network(vec![noise])
    }

    /// Noise as [`FeatureLoader::with_noise`], drawn apart for each network of an
    /// ensemble: `noises[0]` makes [`Batch::inputs`], the others
    /// [`Batch::network_inputs`]. Networks that saw the same noisy rows would make the
    /// same errors; noise of their own is what makes their average better than each.
    pub fn with_noise_per_network(mut self, noises: Vec<FeatureNoise>) -> Self {
        // All or none, so that network `k` always reads `noises[k]`'s rows.
        let any = noises.iter().any(|n| n.std() > 0.0);
        self.noise = if any { noises } else { Vec::new() };
        self
    }

    /// How many batches an epoch has (global batches, when sharded).
    pub fn batches(&self) -> usize {
        batch_count(self.samples.len(), self.global_batch(), self.drop_last)
    }

    /// Reads only `shard`'s part of each global batch of `batch size × shard.world`
    /// samples, cut from the epoch's order as one process would cut it (data-parallel
    /// training: see [`Shard`]). A rank whose part of the last batch is empty gets one
    /// batch fewer.
    pub fn sharded(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    fn global_batch(&self) -> usize {
        self.batch_size * self.shard.world.max(1)
    }

    /// Drops a last batch smaller than the batch size.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// Puts the batches on this device with this dtype.
    pub fn on(mut self, device: &Device, dtype: DType) -> Self {
        self.device = device.clone();
        self.dtype = dtype;
        self
    }

    /// The sample order of an epoch.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if let Some(seed) = self.shuffle_seed {
            // Mix the epoch into the seed so that epochs differ but each is reproducible.
            let mixed = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mixed));
        }
        order
    }

    /// The batches of an epoch.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Result<Batch>> + '_ {
        let order = self.order(epoch);
        let chunks = batch_indices(&order, self.global_batch(), self.drop_last, self.shard);
        chunks
            .into_iter()
            .map(move |(indices, rows)| self.batch(indices, rows, epoch))
    }

    fn batch(&self, indices: Vec<usize>, rows: BatchRows, epoch: u64) -> Result<Batch> {
        let mut flat = Vec::new();
        // The rows of networks 1.. of an ensemble with noise of their own.
        let mut others = vec![Vec::new(); self.noise.len().saturating_sub(1)];
        let mut width = None;
        let mut labels = Vec::with_capacity(indices.len());
        for &i in &indices {
            let sample = &self.samples[i];
            let features = match &sample.input {
                Input::Features(features) => features,
                Input::Unencoded(_) => {
                    return Err(Error::Spec(format!(
                        "{}: the feature loader needs encoded features (this row holds text or \
                         missing values; a FeatureEncoder makes them numbers)",
                        sample.origin
                    )))
                }
                _ => {
                    return Err(Error::Spec(format!(
                        "{}: the feature loader cannot batch image inputs",
                        sample.origin
                    )))
                }
            };
            if *width.get_or_insert(features.len()) != features.len() {
                return Err(Error::Spec(format!(
                    "{}: {} features where other samples have {}",
                    sample.origin,
                    features.len(),
                    width.unwrap_or(0)
                )));
            }
            let start = flat.len();
            flat.extend_from_slice(features);
            if let Some((first, rest)) = self.noise.split_first() {
                for (other, noise) in others.iter_mut().zip(rest) {
                    other.extend_from_slice(features);
                    noise.add(&mut other[start..], epoch, i);
                }
                first.add(&mut flat[start..], epoch, i);
            }
            labels.push(sample.labels.clone());
        }
        let shape = (indices.len(), width.unwrap_or(0));
        let tensor = |rows: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(rows, shape, &self.device)?.to_dtype(self.dtype)?)
        };
        let inputs = tensor(flat)?;
        let network_inputs = others.into_iter().map(tensor).collect::<Result<_>>()?;
        let targets = targets_naming_samples(
            &self.space,
            &labels,
            self.samples,
            &indices,
            self.dtype,
            &self.device,
        )?;
        Ok(Batch {
            inputs,
            targets,
            indices,
            rows,
            network_inputs,
        })
    }
}

/// The sample order of an epoch: `0..n`, shuffled from `(seed, epoch)` when seeded.
pub(crate) fn epoch_order(n: usize, seed: Option<u64>, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(seed) = seed {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(seed, epoch)));
    }
    order
}

/// How many batches `samples` samples make.
pub(crate) fn batch_count(samples: usize, batch_size: usize, drop_last: bool) -> usize {
    if drop_last {
        samples / batch_size
    } else {
        samples.div_ceil(batch_size)
    }
}

/// Cuts an order into batches of `batch_size` (the global batch when sharded), keeping
/// `shard`'s part of each and where it sits; parts left empty are dropped.
pub(crate) fn batch_indices(
    order: &[usize],
    batch_size: usize,
    drop_last: bool,
    shard: Shard,
) -> Vec<(Vec<usize>, BatchRows)> {
    let mut chunks: Vec<&[usize]> = order.chunks(batch_size).collect();
    if drop_last && chunks.last().is_some_and(|c| c.len() < batch_size) {
        chunks.pop();
    }
    chunks
        .into_iter()
        .map(|chunk| {
            (
                chunk[shard.range(chunk.len())].to_vec(),
                shard.rows(chunk.len()),
            )
        })
        .filter(|(part, _)| !part.is_empty())
        .collect()
}

/// The targets of a batch; a bad label's error names its sample's file and line rather
/// than its position in the batch.
pub(crate) fn targets_naming_samples(
    space: &LabelSpace,
    labels: &[Vec<ldl_core::Label>],
    samples: &[Sample],
    indices: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Vec<AxisTargets>> {
    space.targets(labels, dtype, device).map_err(|e| match e {
        ldl_core::Error::InvalidLabel {
            sample: Some(k), ..
        } => Error::Spec(format!("{}: {e}", samples[indices[k]].origin)),
        other => Error::Core(other),
    })
}
