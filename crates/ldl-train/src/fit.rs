//! The training loop of the library route: a [`Trainer`] built from a model and a loss
//! that trains on any samples in memory ([`ldl_data::Dataset`], a split, a slice), reports
//! its progress to a callback that may stop it, keeps the best epoch's weights, and
//! evaluates with the baselines the model must beat.
//!
//! `ldl train` runs the same epoch ([`crate::epoch::train_epoch`]), evaluation, learning
//! rate schedule and best-epoch tracker, and adds around them what a run folder needs
//! (configs, checkpoints committed every epoch, resuming).
//!
//! | setting | default | the config key it mirrors |
//! |---|---|---|
//! | [`Trainer::epochs`] | 30 | `optim.epochs` |
//! | [`Trainer::batch_size`] | 64 | `optim.batch_size` |
//! | [`Trainer::learning_rate`] | 1e-3 | `optim.lr` |
//! | [`Trainer::weight_decay`] | 0 | `optim.weight_decay` |
//! | [`Trainer::lr_steps`] | none | `optim.lr_step_epochs`, `optim.lr_gamma` |
//! | [`Trainer::patience`] | none | `run.patience` |
//! | [`Trainer::monitor`] | validation loss | `run.monitor` |
//! | [`Trainer::seed`] | 0 | `run.seed` |
//! | [`Trainer::image_size`] | 64 | `data.image_size` |
//! | [`Trainer::head_init`] | the model's heads as given | `model.head_init` (`least-squares` for a fresh MLP with a linear path, `training-mean` without) |
//! | [`Trainer::feature_noise`] | 0 ([`DEFAULT_FEATURE_NOISE`](crate::DEFAULT_FEATURE_NOISE)) | `data.feature_noise` |
//! | [`Trainer::collective`] | one process | `run.distributed` |
//! | [`Trainer::sync_batch_norm`] | off | `run.sync_batch_norm` |

use candle_core::{DType, Tensor};
use ldl_core::loss::Loss;
use ldl_core::{AxisEstimate, LabelSpace};
use ldl_data::{BatchSource, FeatureLoader, ImageLoader, ImagePipeline, Input, Sample, Shard};
use ldl_models::Model;

use std::sync::Arc;

use ldl_distributed::{broadcast_variables, Collective, SingleProcess};

use crate::adam::Adam;
use crate::baselines::Baseline;
use crate::batches::{drop_last_batch, network_noises, Data, Inputs, Norm};
use crate::best_epoch::{BestEpoch, Improvement, Scoring};
use crate::config::{HeadInit, Monitor, OnNonFinite, DEFAULT_FEATURE_NOISE};
use crate::epoch::{train_epoch, EpochContext, EpochOutcome};
use crate::error::{Error, Result};
use crate::evaluation::{evaluate, evaluate_across};
use crate::records::{EpochRecord, Evaluation, Progress};
use crate::schedule::StepSchedule;
use crate::stop::StopToken;

/// What a callback tells [`Trainer::fit`] after each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on training.
    Continue,
    /// Stop after this epoch (the best epoch's weights are still restored).
    Stop,
}

/// What [`Trainer::fit`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Every epoch trained, in order, each with its validation results.
    pub epochs: Vec<EpochRecord>,
    /// The epoch with the best validation score by [`Trainer::monitor`], whose weights the
    /// model holds now; with [`Monitor::PerAxis`], the last of the heads' best epochs.
    pub best_epoch: usize,
    /// With [`Monitor::PerAxis`]: each axis's best epoch, whose weights its head holds
    /// now, by axis name (a joint group's axes share theirs); empty otherwise.
    pub best_epochs: std::collections::BTreeMap<String, usize>,
    /// That epoch's validation results.
    pub best_validation: Evaluation,
}

/// An evaluation ([`Trainer::evaluate`]) with the baselines fitted on the training
/// samples, scored on the same samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The model's loss and metrics.
    pub evaluation: Evaluation,
    /// Each baseline with its score: the MAE of a [`Baseline::Mean`], the accuracy of a
    /// [`Baseline::MajorityClass`].
    pub baselines: Vec<(Baseline, f64)>,
}

impl Report {
    /// The model's MAE on an ordered axis, in the axis's unit; `None` for an axis that is
    /// not in the label space or is categorical.
    pub fn mae(&self, axis: &str) -> Option<f64> {
        self.evaluation.metrics.axis(axis)?.mae
    }

    /// The baseline's score on `axis` (the mean predictor's MAE, or the majority class's
    /// accuracy).
    pub fn baseline(&self, axis: &str) -> Option<f64> {
        self.baselines
            .iter()
            .find(|(baseline, _)| baseline.axis() == axis)
            .map(|(_, score)| *score)
    }
}

/// Trains a [`Model`] with a loss on samples in memory.
///
/// ```
/// use candle_core::Device;
/// use ldl_core::{loss::FullKl, Axis, Label, LabelSpace};
/// use ldl_data::Dataset;
/// use ldl_models::{BackboneConfig, Model};
/// use ldl_train::{Control, Trainer};
///
/// // y = 10·x on [0, 10], one feature.
/// let space = LabelSpace::new(vec![Axis::linear("y", 0.0, 10.0, 0.5)?])?;
/// let xs: Vec<f32> = (0..200).map(|i| i as f32 / 200.0).collect();
/// let data = Dataset::from_features(
///     &space,
///     xs.iter().map(|&x| vec![x]).collect(),
///     xs.iter().map(|&x| vec![Label::value(10.0 * x as f64)]).collect(),
/// )?;
/// let splits = data.split(0.25, 0.0, 1)?;
/// let model = Model::build(&BackboneConfig::mlp(1, [32]), &space, 1, &Device::Cpu)?;
/// let mut trainer = Trainer::new(model, FullKl::new()).epochs(40).learning_rate(0.01);
/// let fit = trainer.fit(&splits.train, &splits.validation, |_| Control::Continue)?;
/// assert_eq!(fit.epochs.len(), 40);
/// let report = trainer.evaluate(&splits.validation)?;
/// assert!(report.mae("y").unwrap() < 0.5 * report.baseline("y").unwrap());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Trainer {
    model: Model,
    loss: Box<dyn Loss>,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    weight_decay: f64,
    lr_steps: Option<(usize, f64)>,
    patience: Option<usize>,
    monitor: Monitor,
    seed: u64,
    image_size: u32,
    /// The std of the noise added to training features (`None`: the default).
    feature_noise: Option<f32>,
    /// Where `fit` starts the heads (`None`: as the model holds them).
    head_init: Option<HeadInit>,
    /// Fitted on the training samples by [`Trainer::fit`].
    baselines: Vec<Baseline>,
    /// The ranks training together; one process by default.
    collective: Arc<dyn Collective>,
    /// SyncBN over the ranks ([`Trainer::sync_batch_norm`]).
    sync_batch_norm: bool,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.model)
            .field("loss", &self.loss.name())
            .field("epochs", &self.epochs)
            .field("batch_size", &self.batch_size)
            .field("lr", &self.lr)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A trainer of `model` with `loss` and the defaults in the module's table.
    pub fn new(model: Model, loss: impl Loss + 'static) -> Trainer {
        Trainer {
            model,
            loss: Box::new(loss),
            epochs: 30,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 0.0,
            lr_steps: None,
            patience: None,
            monitor: Monitor::Loss,
            seed: 0,
            image_size: 64,
            feature_noise: None,
            head_init: None,
            baselines: Vec::new(),
            collective: Arc::new(SingleProcess),
            sync_batch_norm: false,
        }
    }

    /// Trains data-parallel with the ranks of `collective` (e.g. an MPI world started by
    /// `mpirun`, see `ldl_distributed::connect`): each rank reads its shard of every
    /// global batch of [`Trainer::batch_size`] × world size samples, and the gradients are
    /// averaged before every step, so every rank holds the same weights. Every rank calls
    /// [`Trainer::fit`] with the same samples; each validates its part of `validation`,
    /// and all report the whole split's figures. [`Trainer::evaluate`] and
    /// [`Trainer::predict`] run on the calling rank alone. The collective may be shared
    /// (an `Arc`) by several trainers of one process: MPI starts once per process.
    pub fn collective(mut self, collective: impl Into<Arc<dyn Collective>>) -> Self {
        self.collective = collective.into();
        self
    }

    /// With [`Trainer::collective`] of several ranks, BatchNorm (the image networks' and
    /// the MLP's) normalises with the whole global batch's statistics, summed over the
    /// ranks (SyncBN, as `run.sync_batch_norm`), during [`Trainer::fit`].
    pub fn sync_batch_norm(mut self, on: bool) -> Self {
        self.sync_batch_norm = on;
        self
    }

    /// SyncBN for `fit` when asked for and several ranks train (`None` otherwise).
    fn batch_norm_sums(&self) -> Option<ldl_models::SharedSum> {
        (self.sync_batch_norm && self.collective.world_size() > 1)
            .then(|| crate::batch_norm_sync::batch_norm_sums(&self.collective))
    }

    /// Trains for `epochs` epochs (at most: see [`Trainer::patience`]).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Samples per training step.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Adam's learning rate.
    pub fn learning_rate(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Adam's L2 weight decay (PyTorch's `weight_decay`).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Multiplies the learning rate by `gamma` every `every_epochs` epochs.
    pub fn lr_steps(mut self, every_epochs: usize, gamma: f64) -> Self {
        self.lr_steps = Some((every_epochs, gamma));
        self
    }

    /// Stops when `evaluations` validations in a row did not improve on the best.
    pub fn patience(mut self, evaluations: usize) -> Self {
        self.patience = Some(evaluations);
        self
    }

    /// What the best epoch is judged by (the validation loss by default).
    /// [`Monitor::PerAxis`] keeps each head's weights from the epoch of its own best
    /// figure, as `run.monitor = "per-axis"` (the default of `ldl train` for the MLP with
    /// one trunk per axis); it needs heads that share no weights
    /// ([`ldl_models::MlpConfig::with_separate_trunks`]).
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = monitor;
        self
    }

    /// Decides the shuffling, dropout and augmentation (the model's initial weights come
    /// from the seed given to [`Model::build`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The side images are resized to, for models of images.
    pub fn image_size(mut self, pixels: u32) -> Self {
        self.image_size = pixels;
        self
    }

    /// The std of Gaussian noise added to every training feature, drawn afresh each epoch
    /// from the seed (see [`ldl_data::FeatureNoise`]; 0 turns it off). Feature samples
    /// only: training on images with a non-zero value set here is an error.
    pub fn feature_noise(mut self, std: f32) -> Self {
        self.feature_noise = Some(std);
        self
    }

    /// Sets the heads when [`Trainer::fit`] starts: [`HeadInit::TrainingMean`] starts
    /// each head at the training samples' mean target distribution,
    /// [`HeadInit::LeastSquares`] starts each linear path at a ridge regression of the
    /// targets' locations on the features and each linear axis at that regression's
    /// normal distribution (the MLP with a linear path only; as `model.head_init` does
    /// for a fresh MLP run of `ldl train`), [`HeadInit::Uniform`]
    /// leaves the heads as the model holds them. Unset, the model is trained as given, so
    /// that a model loaded from a checkpoint keeps its heads.
    pub fn head_init(mut self, init: HeadInit) -> Self {
        self.head_init = Some(init);
        self
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, giving up the trainer.
    pub fn into_model(self) -> Model {
        self.model
    }

    /// The baselines fitted on the last [`Trainer::fit`]'s training samples.
    pub fn baselines(&self) -> &[Baseline] {
        &self.baselines
    }

    /// Trains on `train`, validating on `validation` after every epoch, and leaves the
    /// model with the weights of the best validated epoch. `callback` sees every event
    /// ([`Progress`]: batches, validation, finished epochs) and may stop the training
    /// after the current epoch; `|_| Control::Continue` ignores them.
    pub fn fit(
        &mut self,
        train: &[Sample],
        validation: &[Sample],
        mut callback: impl FnMut(&Progress<'_>) -> Control,
    ) -> Result<FitReport> {
        self.check(train, validation)?;
        let space = self.model.label_space().clone();
        if let Some(init) = self.head_init {
            crate::head_start::start_heads(&self.model, init, train)?;
        }
        let parts = Parts {
            data: Data {
                train: self.batches(train, &space, Split::Training)?,
                validation: self.batches(validation, &space, Split::Validation)?,
                test: self.batches(&[], &space, Split::Whole)?,
            },
            trainable: self.model.trainable_vars(),
            statistics: crate::numeric::running_statistics(self.model.vars())?,
            space,
        };
        self.baselines = Baseline::fit(&parts.space, train)?;
        // Every rank starts from rank 0's weights and statistics.
        let vars: Vec<candle_core::Var> = parts
            .trainable
            .iter()
            .chain(&parts.statistics)
            .map(|(_, v)| v.clone())
            .collect();
        broadcast_variables(self.collective.as_ref(), &vars)?;
        self.model.set_batch_norm_sync(self.batch_norm_sums())?;
        let mut adam = Adam::for_model(&self.model, self.lr, self.weight_decay)?;
        let (step_epochs, gamma) = self.lr_steps.unwrap_or((usize::MAX, 1.0));
        let schedule = StepSchedule::new(self.lr, gamma, step_epochs);
        let explicit = crate::best_epoch::explicit_axes(parts.space.len(), train);
        let scoring = Scoring::new(&self.monitor, &parts.space, &explicit);
        let head_of = variable_heads(&self.model, &parts);
        let mut best = BestEpoch::default();
        let mut best_weights = None;
        let mut epochs = Vec::new();
        for epoch in 1..=self.epochs {
            adam.lr = schedule.lr(epoch);
            let (record, stop) = self.epoch(&parts, &mut adam, epoch, &mut callback)?;
            if let Some(evaluation) = &record.validation {
                let improvement = best.evaluated(epoch, evaluation, &scoring);
                keep_best(&parts, &mut best_weights, &improvement, &head_of)?;
            }
            epochs.push(record);
            if stop || best.patience_ran_out(self.patience) {
                break;
            }
        }
        if let Some(weights) = best_weights {
            restore(&parts, weights)?;
        }
        // Later training or evaluation on one rank must not wait for the others.
        self.model.set_batch_norm_sync(None)?;
        let (best_epoch, best_validation) = best
            .best()
            .cloned()
            .ok_or_else(|| Error::Usage("no epoch was trained".into()))?;
        Ok(FitReport {
            epochs,
            best_epoch,
            best_epochs: best.axis_epochs().clone(),
            best_validation,
        })
    }

    /// Trains and validates epoch `epoch`; its record, and whether the callback asked to
    /// stop.
    fn epoch(
        &self,
        parts: &Parts<'_>,
        adam: &mut Adam,
        epoch: usize,
        callback: &mut impl FnMut(&Progress<'_>) -> Control,
    ) -> Result<(EpochRecord, bool)> {
        self.model
            .reseed_dropout(ldl_data::mix_seed(self.seed, epoch as u64));
        let context = EpochContext {
            model: &self.model,
            loss: self.loss.as_ref(),
            space: &parts.space,
            data: &parts.data,
            device: self.model.device(),
            trainable: &parts.trainable,
            statistics: &parts.statistics,
            on_nonfinite: OnNonFinite::Stop,
            collective: self.collective.as_ref(),
            synced_batch_norm: self.batch_norm_sums().is_some(),
        };
        let kept = "the model keeps the weights of the step before";
        let mut stop = false;
        let mut observe = |event: Progress<'_>| stop |= callback(&event) == Control::Stop;
        let trained = match train_epoch(&context, adam, epoch, kept, &NEVER, &mut observe)? {
            EpochOutcome::Trained(trained) => trained,
            // The token is never set: callbacks stop between epochs.
            EpochOutcome::Stopped => return Err(Error::Usage("training was stopped".into())),
        };
        observe(Progress::Validating { epoch });
        let validation = parts.data.validation.epoch(0);
        let evaluation = evaluate_across(
            &self.model,
            self.loss.as_ref(),
            &parts.space,
            validation,
            self.model.device(),
            self.collective.as_ref(),
        )?;
        let record = EpochRecord {
            epoch,
            lr: adam.lr,
            train: trained.totals.summary(),
            validation: Some(evaluation),
            train_seconds: trained.seconds,
            samples_per_second: trained.samples as f64 / trained.seconds.max(1e-9),
            communication_seconds: trained.communication_seconds,
            skipped_batches: 0,
            gradient_norms: None,
        };
        observe(Progress::Epoch(&record));
        Ok((record, stop))
    }

    /// The model's loss and metrics on `samples`, with the baselines of the last
    /// [`Trainer::fit`] scored on them (none before a fit).
    pub fn evaluate(&self, samples: &[Sample]) -> Result<Report> {
        let space = self.model.label_space();
        let batches = self.batches(samples, space, Split::Whole)?;
        let evaluation = evaluate(
            &self.model,
            self.loss.as_ref(),
            space,
            batches.epoch(0),
            self.model.device(),
        )?;
        let scores = Baseline::score(&self.baselines, space, samples)?;
        let baselines = self
            .baselines
            .iter()
            .cloned()
            .zip(scores)
            .filter_map(|(baseline, score)| Some((baseline, score?)))
            .collect();
        Ok(Report {
            evaluation,
            baselines,
        })
    }

    /// What the model predicts for `samples`, sample by sample: `[sample][axis]`.
    pub fn predict(&self, samples: &[Sample]) -> Result<Vec<Vec<AxisEstimate>>> {
        let batches = self.batches(samples, self.model.label_space(), Split::Whole)?;
        let mut out = Vec::with_capacity(samples.len());
        for batch in batches.epoch(0) {
            out.extend(self.model.predict(&batch?.inputs)?);
        }
        Ok(out)
    }

    /// Refuses settings and data that cannot train, naming the setting.
    fn check(&self, train: &[Sample], validation: &[Sample]) -> Result<()> {
        let refuse = |setting: &str, problem: String| {
            Err(Error::Usage(format!("Trainer::{setting}: {problem}")))
        };
        if self.epochs == 0 {
            return refuse("epochs", "0; train at least one epoch".into());
        }
        if self.batch_size == 0 {
            return refuse("batch_size", "0; give at least 1".into());
        }
        let least_squares = self.head_init == Some(HeadInit::LeastSquares);
        if least_squares && crate::head_start::least_squares_inputs(&self.model).is_none() {
            let problem = "`LeastSquares` starts the linear paths of an MLP, and this model \
                           has none: build it with `MlpConfig::with_linear_path`, or use \
                           `HeadInit::TrainingMean`";
            return refuse("head_init", problem.into());
        }
        if self.monitor == Monitor::PerAxis && self.model.variables_by_head().is_none() {
            let problem = "`PerAxis` takes each head's weights from its own best epoch, and \
                           this model's heads share weights: build an MLP with \
                           `MlpConfig::with_separate_trunks`, or monitor the loss";
            return refuse("monitor", problem.into());
        }
        let ranks = self.collective.world_size();
        if ranks > 1 && (train.len() < ranks || validation.len() < ranks) {
            let problem = format!(
                "{ranks} ranks need at least as many training and validation samples, got {} \
                 and {}",
                train.len(),
                validation.len()
            );
            return refuse("collective", problem);
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return refuse(
                "learning_rate",
                format!("{}; give a positive number", self.lr),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            let problem = format!("{}; give 0 or a positive number", self.weight_decay);
            return refuse("weight_decay", problem);
        }
        if let Some((every, gamma)) = self.lr_steps {
            if every == 0 || !(gamma.is_finite() && gamma > 0.0) {
                let problem = format!("({every}, {gamma}); give ≥ 1 epochs and a gamma > 0");
                return refuse("lr_steps", problem);
            }
        }
        if train.is_empty() || validation.is_empty() {
            return Err(Error::Usage(format!(
                "Trainer::fit: {} training and {} validation samples; both need some",
                train.len(),
                validation.len()
            )));
        }
        Ok(())
    }

    /// The batches of `samples`: feature vectors or images (by the first sample's input),
    /// shuffled by the seed for training.
    fn batches<'a>(
        &self,
        samples: &'a [Sample],
        space: &LabelSpace,
        split: Split,
    ) -> Result<Box<dyn BatchSource + 'a>> {
        let device = self.model.device();
        let shard = match split {
            Split::Whole => Shard::WHOLE,
            Split::Training | Split::Validation => self.collective.shard(),
        };
        let features = samples
            .first()
            .is_none_or(|s| matches!(s.input, Input::Features(_)));
        if features {
            let loader = FeatureLoader::new(samples, space, self.batch_size)?
                .on(device, DType::F32)
                .sharded(shard);
            if split != Split::Training {
                return Ok(Box::new(loader));
            }
            let norm = Norm::of(self.model.config(), self.batch_norm_sums().is_some());
            let drop_last = drop_last_batch(
                samples.len(),
                self.batch_size,
                shard.world,
                Inputs::Features,
                norm,
            );
            let std = self.feature_noise.unwrap_or(DEFAULT_FEATURE_NOISE);
            let loader = loader
                .shuffled(self.seed)
                .drop_last(drop_last)
                .with_noise_per_network(network_noises(std, self.seed, self.model.networks())?);
            return Ok(Box::new(loader));
        }
        if self.feature_noise.is_some_and(|std| std != 0.0) {
            return Err(Error::Config(
                "Trainer::feature_noise adds noise to feature samples, and these are images; \
                 leave it unset (images are augmented by their loader)"
                    .into(),
            ));
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pipeline = ImagePipeline::new(self.image_size);
        let loader = ImageLoader::new(samples.to_vec(), space, pipeline, self.batch_size, threads)?
            .sharded(shard);
        let drop_last = drop_last_batch(
            samples.len(),
            self.batch_size,
            shard.world,
            Inputs::Images,
            Norm::of(self.model.config(), self.batch_norm_sums().is_some()),
        );
        Ok(if split == Split::Training {
            Box::new(loader.shuffled(self.seed).drop_last(drop_last))
        } else {
            Box::new(loader)
        })
    }
}

/// The fit loop never stops from outside: callbacks stop it between epochs.
static NEVER: std::sync::LazyLock<StopToken> = std::sync::LazyLock::new(StopToken::new);

/// What the epochs of one [`Trainer::fit`] share.
struct Parts<'a> {
    space: LabelSpace,
    data: Data<'a>,
    /// The trainable variables by name (Adam's, in this order).
    trainable: Vec<(String, candle_core::Var)>,
    /// BatchNorm's running statistics.
    statistics: Vec<(String, candle_core::Var)>,
}

/// What a split's batches are for: training (shuffled, this rank's part of each batch),
/// validation during `fit` (this rank's part, the figures summed over the ranks), or an
/// evaluation of the whole split on this rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Training,
    Validation,
    Whole,
}

/// For each variable of [`snapshot`]'s order, the head it belongs to, when the heads
/// share no weights.
fn variable_heads(model: &Model, parts: &Parts<'_>) -> Vec<Option<usize>> {
    let owner: std::collections::HashMap<String, usize> = model
        .variables_by_head()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .flat_map(|(head, names)| names.into_iter().map(move |name| (name, head)))
        .collect();
    parts
        .trainable
        .iter()
        .chain(&parts.statistics)
        .map(|(name, _)| owner.get(name).copied())
        .collect()
}

/// Updates the best weights after an evaluation: all of them when the whole model
/// improved, those of the improved heads when some did (`head_of` from
/// [`variable_heads`]).
fn keep_best(
    parts: &Parts<'_>,
    best: &mut Option<Vec<Tensor>>,
    improvement: &Improvement,
    head_of: &[Option<usize>],
) -> Result<()> {
    match (improvement, best.as_mut()) {
        (Improvement::None, _) => {}
        (Improvement::Heads(improved), Some(weights)) => {
            let variables = parts.trainable.iter().chain(&parts.statistics);
            for ((weight, (_, var)), head) in weights.iter_mut().zip(variables).zip(head_of) {
                if head.is_some_and(|head| improved.contains(&head)) {
                    *weight = var.as_tensor().copy()?;
                }
            }
        }
        _ => *best = Some(snapshot(parts)?),
    }
    Ok(())
}

/// Copies of the variables' values, to restore the best epoch's weights.
fn snapshot(parts: &Parts<'_>) -> Result<Vec<Tensor>> {
    Ok(parts
        .trainable
        .iter()
        .chain(&parts.statistics)
        .map(|(_, var)| var.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?)
}

/// Sets the variables back to a [`snapshot`].
fn restore(parts: &Parts<'_>, weights: Vec<Tensor>) -> Result<()> {
    for ((_, var), value) in parts.trainable.iter().chain(&parts.statistics).zip(weights) {
        var.set(&value)?;
    }
    Ok(())
}
