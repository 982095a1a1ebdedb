//! Batches of images, decoded and augmented in parallel on the loader's own thread pool
//! (not the global one the tensor math uses), a bounded number of batches ahead.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use ldl_core::{Axis, Label, LabelSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use ldl_distributed::{BatchRows, Shard};

use crate::error::{Error, Result};
use crate::image::{decode, Augment, Geometry, ImagePipeline};
use crate::loader::{batch_indices, epoch_order, targets_naming_samples, Batch};
use crate::sample::{Input, Sample};
use crate::seeds::mix;

/// How augmentation changes labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelEffects {
    /// Axes whose value changes sign when the image is mirrored (yaw, roll).
    #[serde(default)]
    pub negate_on_flip: Vec<String>,
    /// The axis a rotation of the image adds to (roll), in degrees counter-clockwise.
    #[serde(default)]
    pub rotation_adds_to: Option<String>,
}

impl LabelEffects {
    /// The head-pose convention: a mirror image negates yaw and roll; an in-plane
    /// rotation adds to roll.
    pub fn head_pose() -> LabelEffects {
        LabelEffects {
            negate_on_flip: vec!["yaw".into(), "roll".into()],
            rotation_adds_to: Some("roll".into()),
        }
    }

    /// One sample's labels after the augmentation's geometry. Values moved past a linear
    /// axis's end are clamped to it.
    pub fn apply(
        &self,
        space: &LabelSpace,
        labels: &[Label],
        geometry: Geometry,
    ) -> Result<Vec<Label>> {
        space
            .axes()
            .iter()
            .zip(labels)
            .map(|(axis, label)| {
                let negate =
                    geometry.flipped && self.negate_on_flip.iter().any(|n| n == axis.name());
                let add = if self.rotation_adds_to.as_deref() == Some(axis.name()) {
                    geometry.rotation as f64
                } else {
                    0.0
                };
                adjust(axis, label, negate, add)
            })
            .collect()
    }
}

fn adjust(axis: &Axis, label: &Label, negate: bool, add: f64) -> Result<Label> {
    if !negate && add == 0.0 {
        return Ok(label.clone());
    }
    match label {
        Label::Value { value, std } => {
            let moved = if negate { -value } else { *value } + add;
            let moved = if axis.is_circular() {
                moved
            } else {
                let centres = axis.centers();
                moved.clamp(centres[0], centres[centres.len() - 1])
            };
            Ok(Label::Value {
                value: moved,
                std: *std,
            })
        }
        Label::Distribution(pmf) if add == 0.0 => {
            // Mirroring a distribution reverses its bins, which is a negation only when the
            // centres are symmetric around 0.
            let c = axis.centers();
            let symmetric =
                (0..c.len()).all(|k| (c[k] + c[c.len() - 1 - k]).abs() <= 1e-9 * axis.step());
            if !symmetric {
                return Err(Error::Spec(format!(
                    "axis `{}`: flipping negates it, but its bins are not symmetric around 0",
                    axis.name()
                )));
            }
            Ok(Label::Distribution(pmf.iter().rev().copied().collect()))
        }
        _ => Err(Error::Spec(format!(
            "axis `{}`: rotation augmentation needs value labels, not distributions or classes",
            axis.name()
        ))),
    }
}

/// Cuts image samples into batches of `(B, 3, S, S)` tensors and targets.
///
/// Each sample's augmentation is drawn from `(seed, epoch, sample index)`, so batches
/// are the same whatever the number of threads.
pub struct ImageLoader {
    samples: Arc<Vec<Sample>>,
    space: LabelSpace,
    pipeline: ImagePipeline,
    augment: Option<(Augment, LabelEffects)>,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    shard: Shard,
    augment_seed: u64,
    drop_last: bool,
    pool: Arc<rayon::ThreadPool>,
    prefetch: usize,
    on_bad_sample: crate::OnBadSample,
    skipped: Arc<std::sync::Mutex<std::collections::BTreeMap<usize, crate::SkippedSample>>>,
}

impl ImageLoader {
    /// A loader over `samples` in order, without augmentation, on `threads` decoding
    /// threads with two batches prefetched.
    pub fn new(
        samples: Vec<Sample>,
        space: &LabelSpace,
        pipeline: ImagePipeline,
        batch_size: usize,
        threads: usize,
    ) -> Result<ImageLoader> {
        if batch_size == 0 {
            return Err(Error::Spec("the batch size must be ≥ 1".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("ldl-loader-{i}"))
            .build()
            .map_err(|e| Error::Spec(format!("cannot start the loader's threads: {e}")))?;
        Ok(ImageLoader {
            samples: Arc::new(samples),
            space: space.clone(),
            pipeline,
            augment: None,
            batch_size,
            shuffle_seed: None,
            shard: Shard::WHOLE,
            augment_seed: 0,
            drop_last: false,
            pool: Arc::new(pool),
            prefetch: 2,
            on_bad_sample: crate::OnBadSample::Error,
            skipped: Arc::default(),
        })
    }

    /// What to do with an image that cannot be decoded or prepared: stop with an error
    /// naming it (the default), or leave it out of its batch and list it in
    /// [`ImageLoader::skipped`]. Files are only decoded when batched, so such images are
    /// found during the first epoch.
    pub fn on_bad_sample(mut self, policy: crate::OnBadSample) -> Self {
        self.on_bad_sample = policy;
        self
    }

    /// The images left out so far under [`crate::OnBadSample::Skip`], each once, in sample
    /// order.
    pub fn skipped(&self) -> Vec<crate::SkippedSample> {
        match self.skipped.lock() {
            Ok(skipped) => skipped.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        }
    }

    /// Shuffles every epoch and seeds the augmentation, from `seed`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self.augment_seed = seed;
        self
    }

    /// Augments training images, with the label changes that go with it.
    pub fn augmented(mut self, augment: Augment, effects: LabelEffects) -> Result<Self> {
        augment.validate()?;
        for name in effects
            .negate_on_flip
            .iter()
            .chain(&effects.rotation_adds_to)
        {
            if self.space.axis(name).is_none() {
                return Err(Error::Spec(format!(
                    "label effects name axis `{name}`, which is not in the label space"
                )));
            }
        }
        self.augment = Some((augment, effects));
        Ok(self)
    }

    /// How many batches an epoch has (global batches, when sharded).
    pub fn batches(&self) -> usize {
        crate::loader::batch_count(self.samples.len(), self.global_batch(), self.drop_last)
    }

    /// Reads only `shard`'s part of each global batch, as [`crate::FeatureLoader::sharded`].
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

    /// How many batches are prepared ahead (at least 1).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches.max(1);
        self
    }

    /// The batches of an epoch, prepared on the loader's threads while the caller works.
    pub fn epoch(&self, epoch: u64) -> ImageBatches {
        let order = epoch_order(self.samples.len(), self.shuffle_seed, epoch);
        let chunks = batch_indices(&order, self.global_batch(), self.drop_last, self.shard);
        let (sender, receiver) = sync_channel(self.prefetch);
        let job = BatchJob {
            samples: Arc::clone(&self.samples),
            space: self.space.clone(),
            pipeline: self.pipeline.clone(),
            augment: self.augment.clone(),
            seed: mix(self.augment_seed, epoch),
            on_bad_sample: self.on_bad_sample,
            skipped: Arc::clone(&self.skipped),
        };
        let pool = Arc::clone(&self.pool);
        let handle = std::thread::spawn(move || {
            for (indices, rows) in chunks {
                let batch = match pool.install(|| job.batch(indices, rows)) {
                    // Every image of the batch was skipped: nothing to train on.
                    Ok(None) => continue,
                    Ok(Some(batch)) => Ok(batch),
                    Err(e) => Err(e),
                };
                // The receiver is gone when the caller stopped early: stop too.
                if sender.send(batch).is_err() {
                    break;
                }
            }
        });
        ImageBatches {
            receiver,
            handle: Some(handle),
        }
    }
}

struct BatchJob {
    samples: Arc<Vec<Sample>>,
    space: LabelSpace,
    pipeline: ImagePipeline,
    augment: Option<(Augment, LabelEffects)>,
    seed: u64,
    on_bad_sample: crate::OnBadSample,
    skipped: Arc<std::sync::Mutex<std::collections::BTreeMap<usize, crate::SkippedSample>>>,
}

impl BatchJob {
    /// The batch of these samples, which sit at `rows` in their global batch; `None` when
    /// every one was skipped.
    fn batch(&self, indices: Vec<usize>, rows: BatchRows) -> Result<Option<Batch>> {
        let results: Vec<Result<(Vec<f32>, Vec<Label>)>> =
            indices.par_iter().map(|&i| self.sample(i)).collect();
        let mut prepared = Vec::with_capacity(indices.len());
        let mut kept = Vec::with_capacity(indices.len());
        for (&index, result) in indices.iter().zip(results) {
            match (result, self.on_bad_sample) {
                (Ok(sample), _) => {
                    prepared.push(sample);
                    kept.push(index);
                }
                (Err(e), crate::OnBadSample::Error) => {
                    let origin = &self.samples[index].origin;
                    return Err(Error::Spec(format!("{e} (listed at {origin})")));
                }
                (Err(e), crate::OnBadSample::Skip) => {
                    let skipped = crate::SkippedSample {
                        location: self.samples[index].origin.to_string(),
                        reason: e.to_string(),
                    };
                    let mut list = match self.skipped.lock() {
                        Ok(list) => list,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    list.insert(index, skipped);
                }
            }
        }
        if kept.is_empty() {
            return Ok(None);
        }
        let indices = kept;
        let side = self.pipeline.size as usize;
        let mut pixels = Vec::with_capacity(indices.len() * 3 * side * side);
        let mut labels = Vec::with_capacity(indices.len());
        for (image, sample_labels) in prepared {
            pixels.extend_from_slice(&image);
            labels.push(sample_labels);
        }
        let inputs = Tensor::from_vec(pixels, (indices.len(), 3, side, side), &Device::Cpu)?;
        let targets = targets_naming_samples(
            &self.space,
            &labels,
            &self.samples,
            &indices,
            candle_core::DType::F32,
            &Device::Cpu,
        )?;
        Ok(Some(Batch {
            inputs,
            targets,
            indices,
            rows,
            network_inputs: Vec::new(),
        }))
    }

    fn sample(&self, index: usize) -> Result<(Vec<f32>, Vec<Label>)> {
        let sample = &self.samples[index];
        let image = match &sample.input {
            Input::ImagePath(path) => decode(path)?,
            Input::ImageBytes(bytes) => crate::image::decode_bytes(bytes)?,
            Input::Synthetic { generator, index } => crate::render(generator, *index).image,
            Input::Features(_) | Input::Unencoded(_) => {
                return Err(Error::Spec(format!(
                    "{}: the image loader needs image inputs",
                    sample.origin
                )))
            }
        };
        match &self.augment {
            None => {
                let (pixels, _) = self.pipeline.process(&image, &Augment::default(), None)?;
                Ok((pixels, sample.labels.clone()))
            }
            Some((augment, effects)) => {
                let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, index as u64));
                let (pixels, geometry) = self.pipeline.process(&image, augment, Some(&mut rng))?;
                let labels = effects.apply(&self.space, &sample.labels, geometry)?;
                Ok((pixels, labels))
            }
        }
    }
}

/// The batches of one epoch, in order; dropping it stops the preparation.
pub struct ImageBatches {
    receiver: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for ImageBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        match self.receiver.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                if let Some(handle) = self.handle.take() {
                    if handle.join().is_err() {
                        return Some(Err(Error::Spec(
                            "the image loader's thread panicked".into(),
                        )));
                    }
                }
                None
            }
        }
    }
}
