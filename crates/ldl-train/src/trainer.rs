//! The training loop: data, model, loss and Adam from a [`Config`]; epochs of shuffled
//! batches; evaluation on the validation split; a run folder with the resolved config,
//! `metrics.jsonl`, checkpoints and `summary.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ldl_core::files::{read_text, FileKind, FileProblem};
use ldl_core::loss::Loss;
use ldl_core::LabelSpace;
use ldl_models::{load_into, read_checkpoint, Model};
use serde::{Deserialize, Serialize};

use crate::adam::Adam;
use crate::baselines::{majority_class, mean_distribution, mean_predictor};
use crate::batches::Data;
use crate::best_epoch::{BestEpoch, Improvement, Scoring};
use crate::commit::RunFiles;
use crate::config::{CheckedConfig, Config};
use crate::epoch::{train_epoch, EpochContext, EpochOutcome};
use crate::error::{Error, Result};
use crate::evaluation::{evaluate, evaluate_across};
use crate::inputs::Inputs;
use crate::numeric;
use crate::output::write_atomically;
use crate::records::{EpochRecord, Evaluation, Progress, RunSummary};
use crate::run_lock::RunLock;
use crate::schedule::StepSchedule;
use crate::stop::StopToken;
use crate::target_shape;
use std::sync::Arc;

use ldl_distributed::Collective;

/// Where a run stands after an epoch (`state.json`, the commit record of `commit.rs`),
/// with `checkpoints/last.safetensors` and `checkpoints/optimizer.safetensors` enough to
/// resume it exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    /// The last committed epoch (0: the initial weights).
    epoch: usize,
    adam_steps: u64,
    /// The best epoch and the evaluations since it (`best`, `since_improvement`).
    #[serde(flatten)]
    best: BestEpoch,
    /// What `model.init_from` loaded when the run started.
    #[serde(default)]
    init: Option<ldl_models::InitReport>,
    /// Batches skipped so far (`optim.on_nonfinite = "skip"`).
    #[serde(default)]
    skipped_batches: usize,
}

impl RunState {
    /// Before the first epoch.
    fn start(init: Option<ldl_models::InitReport>) -> RunState {
        RunState {
            epoch: 0,
            adam_steps: 0,
            best: BestEpoch::default(),
            init,
            skipped_batches: 0,
        }
    }
}

/// Trains as `config` says, in a new run folder, until the last epoch, early stopping or
/// `stop`. `observe` sees every batch and epoch (for progress output; `&mut |_| {}`
/// ignores them).
pub fn train(
    config: &CheckedConfig,
    stop: &StopToken,
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<RunSummary> {
    // First, so that a launch that cannot train together fails before any work.
    let collective = connect(config)?;
    if collective.rank() > 0 {
        return follow(config, &collective, stop);
    }
    run(config, None, &collective, stop, observe)
}

/// Continues the run in `run_dir` from its last completed epoch, with its saved config
/// (and `overrides`, e.g. `optim.epochs=90` to train longer). With the same seed on the
/// same device, the result equals an uninterrupted run's, also after the run was killed
/// at any moment (see the commit protocol of the run folder in `commit.rs`).
pub fn resume(
    run_dir: &Path,
    overrides: &[String],
    stop: &StopToken,
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<RunSummary> {
    // Refuse a folder that is no run before creating its lock file.
    read_state(run_dir)?;
    let config = Config::load_saved(&run_dir.join("config.toml"), overrides)?;
    let collective = connect(&config)?;
    if collective.rank() > 0 {
        // Rank 0 reads the committed epoch and sends it, with the weights and moments.
        return follow(&config, &collective, stop);
    }
    let lock = RunLock::acquire(run_dir)?;
    // Read again under the lock: a process that held it may have committed since.
    let state = read_state(run_dir)?;
    let config = Config::load_saved(&run_dir.join("config.toml"), overrides)?;
    run(
        &config,
        Some((run_dir, state, lock)),
        &collective,
        stop,
        observe,
    )
}

/// Checks that `run_dir` can be resumed (a run folder with its `config.toml` and a valid
/// `state.json`), so that a caller can refuse clearly before anything else. [`resume`]
/// checks the same.
pub fn check_resumable(run_dir: &Path) -> Result<()> {
    read_state(run_dir).map(|_| ())
}

/// The committed state of a run folder, or why it cannot be resumed.
fn read_state(run_dir: &Path) -> Result<RunState> {
    let refuse = |why: &str| Error::Usage(format!("{}: cannot resume: {why}", run_dir.display()));
    let start_again = "start the run again with `ldl train CONFIG`";
    if !run_dir.is_dir() {
        return Err(refuse(
            "no such folder; give a run folder written by `ldl train`",
        ));
    }
    if !run_dir.join("config.toml").is_file() {
        return Err(refuse(
            "it has no config.toml, so it is not a run folder written by `ldl train`",
        ));
    }
    let path = run_dir.join("state.json");
    let text = match read_text(&path, FileKind::RunRecord) {
        Ok(text) => text,
        Err(e) if matches!(e.problem, FileProblem::NotFound) => {
            return Err(refuse(&format!(
                "it has no state.json: the run stopped before its first checkpoint was saved; \
                 {start_again}"
            )))
        }
        Err(e) => return Err(refuse(&format!("state.json {}", e.problem))),
    };
    let state: RunState = serde_json::from_str(&text).map_err(|e| {
        refuse(&format!(
            "state.json is not a valid run state ({e}); it was changed or damaged outside ldl: \
             {start_again}"
        ))
    })?;
    // Every committed epoch after 0 has its metrics.jsonl line (appended before the
    // commit, and never cut back once committed).
    if state.epoch > 0 && !crate::commit::holds_epoch(&run_dir.join("metrics.jsonl"), state.epoch) {
        return Err(refuse(&format!(
            "state.json names epoch {}, which metrics.jsonl does not hold; the folder was \
             changed or damaged outside ldl: {start_again}",
            state.epoch
        )));
    }
    Ok(state)
}

/// What the saved checkpoints are, for messages that stop a run.
fn kept(run_dir: &Path, epoch: usize) -> String {
    format!(
        "the last good checkpoint (epoch {epoch}) in {} is intact",
        run_dir.join("checkpoints").display()
    )
}

/// A failed save of epoch `epoch + 1` (or of the outputs after the last epoch) as the
/// error that names the file, the cause and how to go on from epoch `epoch`.
fn save_failed(error: Error, run_dir: &Path, epoch: usize) -> Error {
    Error::Save {
        cause: error.to_string(),
        run_dir: run_dir.display().to_string(),
        epoch,
    }
}

/// What the checkpoints of an epoch are written from.
struct Saver<'a> {
    model: &'a Model,
    header: &'a BTreeMap<String, String>,
    names: &'a [String],
}

impl Saver<'_> {
    /// Writes the epoch's checkpoints into the staging folder `dir`: `last`, the
    /// optimizer's moments and, when the epoch improved on the best, `best` (whole, or
    /// with the heads that did not improve taken from the installed `best`).
    fn stage(
        &self,
        dir: &Path,
        adam: &Adam,
        improvement: &Improvement,
        files: &RunFiles,
    ) -> Result<()> {
        self.model
            .save_with(dir.join("last.safetensors"), self.header)?;
        let best = dir.join("best.safetensors");
        match improvement {
            Improvement::None => {}
            Improvement::Whole => self.model.save_with(&best, self.header)?,
            Improvement::Heads(improved) => {
                let earlier = self.earlier_heads(improved, files)?;
                self.model.save_with_earlier(&best, self.header, &earlier)?;
            }
        }
        adam.save_moments(self.names, &dir.join("optimizer.safetensors"))
    }

    /// The variables of every head not in `improved`, from the installed `best`
    /// checkpoint (the last committed one).
    fn earlier_heads(
        &self,
        improved: &[usize],
        files: &RunFiles,
    ) -> Result<HashMap<String, candle_core::Tensor>> {
        let by_head = self.model.variables_by_head().ok_or_else(|| {
            Error::Usage("a best epoch per axis needs heads that share no weights".into())
        })?;
        let installed = files.checkpoints.join("best.safetensors");
        let (mut tensors, _) = read_checkpoint(&installed, self.model.device())?;
        let mut earlier = HashMap::new();
        for (head, names) in by_head.iter().enumerate() {
            if improved.contains(&head) {
                continue;
            }
            for name in names {
                let tensor = tensors.remove(name).ok_or_else(|| {
                    Error::output(&installed, format!("the best checkpoint lacks `{name}`"))
                })?;
                earlier.insert(name.clone(), tensor);
            }
        }
        Ok(earlier)
    }

    /// Saves `state`'s epoch as one step (see `commit.rs`).
    fn commit(
        &self,
        files: &RunFiles,
        adam: &Adam,
        state: &RunState,
        record: Option<&EpochRecord>,
        improvement: &Improvement,
    ) -> Result<()> {
        let json = serde_json::to_string(state).map_err(|e| Error::output(&files.state, e))?;
        files.commit_epoch(
            state.epoch,
            record,
            &mut |dir| self.stage(dir, adam, improvement, files),
            json.as_bytes(),
        )
    }
}

/// The device of `run.device`, or the engine's (NCCL's GPU of this rank), refused when it
/// cannot compute in `run.precision`.
fn training_device(config: &Config, collective: &dyn Collective) -> Result<candle_core::Device> {
    let device = match collective.device() {
        Some(device) => {
            // As `ldl_models::device` does for `cuda:N`.
            ldl_models::keep_freed_gpu_memory(&device)?;
            device
        }
        None => ldl_models::device(&config.run.device)?,
    };
    // Before the data is read: `run.device = "auto"` may have found no GPU.
    if let Some(refused) = crate::config::precision_refusal(config.run.precision, &device) {
        return Err(Error::Config(format!(
            "`run.precision`: {refused} (`run.device = \"{}\"` gave the CPU)",
            config.run.device
        )));
    }
    Ok(device)
}

/// The config as saved in the run folder, and the header of every checkpoint: the config,
/// the feature names, the feature encoding (when it changes the columns: categories or
/// missing values) and the standardiser, so that a checkpoint alone can reproduce the
/// inputs' preprocessing.
fn checkpoint_header(
    config: &Config,
    inputs: &Inputs,
    run_dir: &Path,
) -> Result<(String, BTreeMap<String, String>)> {
    let json_error = |e| Error::output(run_dir, e);
    let config_text = toml::to_string(config).map_err(|e| Error::output(run_dir, e))?;
    let mut header = BTreeMap::new();
    header.insert("train.config".to_string(), config_text.clone());
    let names = serde_json::to_string(&inputs.feature_names).map_err(json_error)?;
    header.insert("train.features".to_string(), names);
    // Left out when it changes nothing, so that such checkpoints stay as they were.
    if let Some(encoder) = inputs.encoder.as_ref().filter(|e| !e.is_identity()) {
        let json = serde_json::to_string(encoder).map_err(json_error)?;
        header.insert("train.encoder".to_string(), json);
    }
    if let Some(s) = &inputs.standardizer {
        let json = serde_json::to_string(s).map_err(json_error)?;
        header.insert("train.standardizer".to_string(), json);
    }
    Ok((config_text, header))
}

/// The state a run starts from: a resumed run's last committed epoch (its weights and
/// Adam's moments loaded), or epoch 0, whose initial weights are committed first so that a
/// run killed in its first epoch resumes too. The config is saved either way.
fn start_or_resume(
    (resumed, init, config_text): (Option<RunState>, Option<ldl_models::InitReport>, &str),
    saver: &Saver<'_>,
    files: &RunFiles,
    adam: &mut Adam,
    run_dir: &Path,
    device: &candle_core::Device,
) -> Result<RunState> {
    let config_path = run_dir.join("config.toml");
    let Some(state) = resumed else {
        write_atomically(&config_path, config_text.as_bytes())?;
        let state = RunState::start(init);
        saver
            .commit(files, adam, &state, None, &Improvement::None)
            .map_err(|e| Error::Output {
                path: run_dir.display().to_string(),
                message: format!(
                    "cannot save the initial checkpoint: {e}; fix the cause and start the run \
                     again"
                ),
            })?;
        return Ok(state);
    };
    let last = files.checkpoints.join("last.safetensors");
    let (tensors, _) = read_checkpoint(&last, device)?;
    load_into(saver.model.vars(), &tensors, &last)?;
    let optimizer = files.checkpoints.join("optimizer.safetensors");
    adam.load_moments(saver.names, &optimizer, device)?;
    adam.steps = state.adam_steps;
    // Only now that the checkpoints fit the config (with its overrides) is it saved: a
    // refused resume leaves the folder resumable as it was. The old summary goes first: a
    // summary.json means the run of config.toml finished, and is written again when it does.
    remove_durably(&run_dir.join("summary.json"))?;
    write_atomically(&config_path, config_text.as_bytes())?;
    Ok(state)
}

/// The validation split's results on evaluation epochs (every `run.eval_every` and the
/// last), refused when the loss is not finite.
fn validate_epoch(
    context: &EpochContext<'_>,
    config: &Config,
    epoch: usize,
    kept: &str,
) -> Result<Option<Evaluation>> {
    if !epoch.is_multiple_of(config.run.eval_every) && epoch != config.optim.epochs {
        return Ok(None);
    }
    // Each rank evaluates its part of the split; the figures are the whole split's.
    let evaluation = evaluate_across(
        context.model,
        context.loss,
        context.space,
        context.data.validation.epoch(0),
        context.device,
        context.collective,
    )?;
    if !evaluation.loss.total.is_finite() {
        return Err(Error::Numeric(format!(
            "epoch {epoch}: the validation loss is {}; {kept}",
            evaluation.loss.total
        )));
    }
    Ok(Some(evaluation))
}

/// With `run.gradient_norms`, the loss parts' gradient norms on the first validation
/// batch (the same batch every epoch: the validation split is not shuffled).
fn epoch_gradient_norms(
    context: &EpochContext<'_>,
    config: &Config,
) -> Result<Option<BTreeMap<String, crate::records::GradientNorm>>> {
    if !config.run.gradient_norms {
        return Ok(None);
    }
    let batch = match context.data.validation.epoch(0).next() {
        Some(batch) => crate::evaluation::on_device(batch?, context.device)?,
        None => return Ok(None),
    };
    let norms =
        crate::gradient_norms::gradient_norms(context.model, context.loss, context.space, &batch)?;
    Ok(Some(norms))
}

/// The model of a run and what its training steps and checkpoints need of it.
struct Network {
    model: Model,
    /// The trainable variables by name (Adam's, in this order).
    trainable: Vec<(String, candle_core::Var)>,
    names: Vec<String>,
    /// BatchNorm's running statistics.
    statistics: Vec<(String, candle_core::Var)>,
}

impl Network {
    /// The configured model, seeded, with `model.init_from` loaded into a fresh run.
    fn build(
        config: &CheckedConfig,
        features: usize,
        device: &candle_core::Device,
        fresh: bool,
    ) -> Result<(Network, Option<ldl_models::InitReport>)> {
        let backbone = config.backbone(features);
        let mut model = Model::build(&backbone, config.space(), config.run.seed, device)?;
        model.set_precision(config.run.precision)?;
        let init = match &config.model.init_from {
            Some(path) if fresh => {
                let local = crate::trained::local_checkpoint(path)?;
                Some(ldl_models::load_pretrained(model.vars(), &local, device)?)
            }
            _ => None,
        };
        let trainable = model.trainable_vars();
        let names = trainable.iter().map(|(n, _)| n.clone()).collect();
        let statistics = numeric::running_statistics(model.vars())?;
        let network = Network {
            model,
            trainable,
            names,
            statistics,
        };
        Ok((network, init))
    }

    /// Starts a fresh model's heads where `model.head_init` says: as a ridge regression,
    /// at the training split's mean target distribution, or as built.
    fn start_heads(&self, config: &CheckedConfig, train: &[ldl_data::Sample]) -> Result<()> {
        crate::head_start::start_heads(&self.model, config.model.head_init(), train)
    }

    /// Synchronised BatchNorm when `run.sync_batch_norm` asks for it and several ranks
    /// train.
    fn sync_batch_norm(&mut self, config: &Config, shared: &Arc<dyn Collective>) -> Result<()> {
        if !config.run.sync_batch_norm || shared.world_size() == 1 {
            return Ok(());
        }
        let sums = crate::batch_norm_sync::batch_norm_sums(shared);
        Ok(self.model.set_batch_norm_sync(Some(sums))?)
    }

    /// Every rank takes rank 0's weights and BatchNorm statistics.
    fn share_weights(&self, collective: &dyn Collective) -> Result<()> {
        let vars: Vec<candle_core::Var> = self
            .trainable
            .iter()
            .chain(&self.statistics)
            .map(|(_, v)| v.clone())
            .collect();
        Ok(ldl_distributed::broadcast_variables(collective, &vars)?)
    }

    fn adam(&self, config: &Config) -> Result<Adam> {
        let vars = self.trainable.iter().map(|(_, v)| v.clone()).collect();
        Adam::new(vars, config.optim.lr, config.optim.weight_decay)
    }

    fn parameters(&self) -> usize {
        self.trainable.iter().map(|(_, v)| v.elem_count()).sum()
    }

    fn saver<'a>(&'a self, header: &'a BTreeMap<String, String>) -> Saver<'a> {
        Saver {
            model: &self.model,
            header,
            names: &self.names,
        }
    }
}

/// Rank 0's run (the only one with one process): trains, writes the run folder, and
/// keeps the other ranks of `collective` in step.
fn run(
    config: &CheckedConfig,
    resume_from: Option<(&Path, RunState, RunLock)>,
    shared: &Arc<dyn Collective>,
    stop: &StopToken,
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<RunSummary> {
    let collective = shared.as_ref();
    let started = Instant::now();
    let space = config.space();
    let device = training_device(config, collective)?;
    // A resumed run's saved config was not budgeted when read; a new run's was, and
    // checking again costs nothing.
    crate::config::budget::check(config, crate::config::budget::declared_features(config))?;
    let inputs = Inputs::load(config)?;
    if !inputs.feature_names.is_empty() {
        observe(Progress::Features(&inputs.feature_names));
    }
    let warnings = target_shape::warnings(config, &inputs.splits.train)?;
    for warning in &warnings {
        observe(Progress::Warning(warning));
    }
    check_parts(&inputs, collective)?;
    let features = inputs.feature_names.len();
    // Again with the MLP's inputs as read, before the model is built.
    crate::config::budget::check(config, features)?;
    let fresh = resume_from.is_none();
    let (mut network, init) = Network::build(config, features, &device, fresh)?;
    if fresh && init.is_none() {
        network.start_heads(config, &inputs.splits.train)?;
    }
    network.sync_batch_norm(config, shared)?;
    let mut adam = network.adam(config)?;

    // The lock is held until the run returns.
    let (run_dir, resumed, _lock, files) = open_run_folder(config, resume_from)?;
    let (config_text, header) = checkpoint_header(config, &inputs, &run_dir)?;
    let data = Data::new(config, space, &inputs.splits, &device, collective.shard())?;
    let saver = network.saver(&header);
    let start = (resumed, init, config_text.as_str());
    let mut state = start_or_resume(start, &saver, &files, &mut adam, &run_dir, &device)?;
    share_start(collective, &network, &mut adam, &mut state)?;
    write_split_rows(&inputs, &run_dir)?;

    let epochs = Epochs {
        config,
        space,
        data: &data,
        device: &device,
        loss: config.loss(),
        scoring: scoring(config, &inputs),
        output: Some(RunOutput {
            files: &files,
            header: &header,
            run_dir: &run_dir,
        }),
        collective,
    };
    let trained = epochs.train(&mut network, &mut adam, &mut state, stop, observe);
    if let Err(Error::Data(_)) = &trained {
        if fresh && state.epoch == 0 {
            // Bad data found while reading the first epoch's samples: the folder holds
            // nothing but the initial weights, and resuming it would meet the same data.
            let _ = std::fs::remove_dir_all(&run_dir);
        }
    }
    trained?;

    let finished = Finished {
        space,
        warnings,
        inputs: &inputs,
        data: &data,
        loss: config.loss(),
        parameters: network.parameters(),
        started,
    };
    let summary = finished.summarise(&network, &files, &state, &run_dir, &device);
    share_summary(collective, summary)
}

/// A new run's folder (created and locked), or the resumed one's (locked by [`resume`])
/// with its files back at the committed epoch; its state when resumed; the lock; the files.
fn open_run_folder(
    config: &Config,
    resume_from: Option<(&Path, RunState, RunLock)>,
) -> Result<(PathBuf, Option<RunState>, RunLock, RunFiles)> {
    let (run_dir, resumed, lock) = match resume_from {
        Some((dir, state, lock)) => (dir.to_path_buf(), Some(state), lock),
        None => {
            let dir = new_run_dir(&config.run.output_dir, &config.task.name)?;
            let lock = RunLock::acquire(&dir)?;
            (dir, None, lock)
        }
    };
    let files = RunFiles::new(&run_dir)?;
    if let Some(state) = &resumed {
        // Before anything is read or written: back to the committed epoch.
        files.recover(state.epoch)?;
    }
    Ok((run_dir, resumed, lock, files))
}

/// Rank 0's summary, sent to the other ranks, which report it too (an empty record when
/// rank 0 failed, which they report as such).
fn share_summary(collective: &dyn Collective, summary: Result<RunSummary>) -> Result<RunSummary> {
    let mut json = match &summary {
        Ok(summary) => serde_json::to_vec(summary).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    collective.broadcast_bytes(&mut json, 0)?;
    summary
}

/// Every rank starts where rank 0 does: its weights and BatchNorm statistics (initial, or
/// those of the committed epoch it resumes), Adam's moments and steps, and the run state
/// (the epoch, the best so far). Nothing to do in one process.
fn share_start(
    collective: &dyn Collective,
    network: &Network,
    adam: &mut Adam,
    state: &mut RunState,
) -> Result<()> {
    if collective.world_size() == 1 {
        return Ok(());
    }
    network.share_weights(collective)?;
    let moments: Vec<candle_core::Tensor> = adam
        .first_moments
        .iter()
        .chain(&adam.second_moments)
        .cloned()
        .collect();
    let mut shared = ldl_distributed::broadcast_tensors(collective, &moments)?;
    adam.second_moments = shared.split_off(adam.first_moments.len());
    adam.first_moments = shared;
    let mut json = serde_json::to_vec(state)
        .map_err(|e| Error::Usage(format!("cannot share the run state: {e}")))?;
    collective.broadcast_bytes(&mut json, 0)?;
    *state = serde_json::from_slice(&json)
        .map_err(|e| Error::Usage(format!("rank 0's run state does not read back: {e}")))?;
    adam.steps = state.adam_steps;
    Ok(())
}

/// Refuses splits too small for every rank to hold part of them (each rank validates its
/// part of the validation split, and trains on its part of every batch).
fn check_parts(inputs: &Inputs, collective: &dyn Collective) -> Result<()> {
    let ranks = collective.world_size();
    let splits = &inputs.splits;
    for (name, samples) in [
        ("training", splits.train.len()),
        ("validation", splits.validation.len()),
    ] {
        if ranks > 1 && samples < ranks {
            return Err(Error::Usage(format!(
                "the {name} split has {samples} samples, fewer than the {ranks} ranks; train \
                 with fewer processes or larger splits"
            )));
        }
    }
    Ok(())
}

/// The collective of `run.distributed`, refusing a timeout of zero.
fn connect(config: &Config) -> Result<Arc<dyn Collective>> {
    let seconds = config.run.distributed_timeout_s;
    if seconds == 0 {
        return Err(Error::Config(
            "`run.distributed_timeout_s` must be at least 1".into(),
        ));
    }
    let engine = config.run.distributed.engine();
    let timeout = std::time::Duration::from_secs(seconds);
    Ok(Arc::from(ldl_distributed::connect(engine, timeout)?))
}

/// A rank other than 0, starting or resuming: the same inputs, model and epochs as rank
/// 0, from rank 0's weights and state, in step with it, writing nothing (rank 0 writes the
/// run folder); returns rank 0's summary.
fn follow(
    config: &CheckedConfig,
    shared: &Arc<dyn Collective>,
    stop: &StopToken,
) -> Result<RunSummary> {
    let collective = shared.as_ref();
    let space = config.space();
    let device = training_device(config, collective)?;
    let inputs = Inputs::load(config)?;
    check_parts(&inputs, collective)?;
    let features = inputs.feature_names.len();
    // Not fresh: `model.init_from` is rank 0's to read; its weights come from rank 0.
    let (mut network, _) = Network::build(config, features, &device, false)?;
    network.sync_batch_norm(config, shared)?;
    let mut adam = network.adam(config)?;
    let mut state = RunState::start(None);
    share_start(collective, &network, &mut adam, &mut state)?;
    let data = Data::new(config, space, &inputs.splits, &device, collective.shard())?;
    let epochs = Epochs {
        config,
        space,
        data: &data,
        device: &device,
        loss: config.loss(),
        scoring: scoring(config, &inputs),
        output: None,
        collective,
    };
    epochs.train(&mut network, &mut adam, &mut state, stop, &mut |_| {})?;
    let mut json = Vec::new();
    collective.broadcast_bytes(&mut json, 0)?;
    serde_json::from_slice(&json).map_err(|_| {
        Error::Usage(format!(
            "rank {}: rank 0 did not finish the run; its error says why",
            collective.rank()
        ))
    })
}

/// What the epochs of a run share.
struct Epochs<'a> {
    config: &'a Config,
    space: &'a LabelSpace,
    data: &'a Data<'a>,
    device: &'a candle_core::Device,
    loss: &'a dyn Loss,
    /// How validation results pick the best checkpoint (`run.best_epoch`, `run.monitor`).
    scoring: Scoring,
    /// The run folder rank 0 writes; `None` on the other ranks.
    output: Option<RunOutput<'a>>,
    /// The ranks training together.
    collective: &'a dyn Collective,
}

/// Where a run's epochs are committed.
#[derive(Clone, Copy)]
struct RunOutput<'a> {
    files: &'a RunFiles,
    header: &'a BTreeMap<String, String>,
    run_dir: &'a Path,
}

impl Epochs<'_> {
    /// Trains from the epoch after `state`'s to the last (or to early stopping, or
    /// `stop`), committing each.
    fn train(
        &self,
        network: &mut Network,
        adam: &mut Adam,
        state: &mut RunState,
        stop: &StopToken,
        observe: &mut dyn FnMut(Progress<'_>),
    ) -> Result<()> {
        let config = self.config;
        let schedule = StepSchedule::of(&config.optim);
        let patience = config.run.patience;
        // A run that early stopping ended, killed before its summary.json, trains no further.
        let first_epoch = if state.best.patience_ran_out(patience) {
            config.optim.epochs.max(state.epoch).saturating_add(1)
        } else {
            state.epoch.saturating_add(1)
        };
        for epoch in first_epoch..=config.optim.epochs {
            // Dropout masks restart from (seed, epoch), like the shuffling and augmentation.
            let dropout_seed = ldl_data::mix_seed(config.run.seed, epoch as u64);
            network.model.reseed_dropout(dropout_seed);
            adam.lr = schedule.lr(epoch);
            let record = self.epoch(network, adam, state, epoch, stop, observe)?;
            observe(Progress::Epoch(&record));
            if state.best.patience_ran_out(patience) {
                break;
            }
        }
        Ok(())
    }

    /// Trains, validates and commits epoch `epoch`; its record.
    fn epoch(
        &self,
        network: &Network,
        adam: &mut Adam,
        state: &mut RunState,
        epoch: usize,
        stop: &StopToken,
        observe: &mut dyn FnMut(Progress<'_>),
    ) -> Result<EpochRecord> {
        let kept = match &self.output {
            Some(output) => kept(output.run_dir, state.epoch),
            None => "rank 0 keeps the run folder".to_string(),
        };
        let context = EpochContext {
            model: &network.model,
            loss: self.loss,
            space: self.space,
            data: self.data,
            device: self.device,
            trainable: &network.trainable,
            statistics: &network.statistics,
            on_nonfinite: self.config.optim.on_nonfinite,
            collective: self.collective,
            synced_batch_norm: self.config.run.sync_batch_norm && self.collective.world_size() > 1,
        };
        let trained = match train_epoch(&context, adam, epoch, &kept, stop, observe)? {
            EpochOutcome::Trained(trained) => trained,
            EpochOutcome::Stopped => {
                let run_dir = self.output.map_or(Path::new(""), |o| o.run_dir);
                if state.epoch > 0 && self.output.is_some() {
                    // Best effort: a plotting failure must not hide how to resume.
                    let _ = write_plots(run_dir);
                }
                return Err(Error::Interrupted {
                    run_dir: run_dir.display().to_string(),
                    epoch: state.epoch,
                });
            }
        };
        observe(Progress::Validating { epoch });
        // Every rank validates its part of the split and gets the whole split's figures,
        // which decide the best epoch and early stopping alike on every rank.
        let validation = validate_epoch(&context, self.config, epoch, &kept)?;
        let gradient_norms = match self.output {
            Some(_) => epoch_gradient_norms(&context, self.config)?,
            None => None,
        };
        numeric::check_state(network.model.vars(), epoch, &kept)?;
        numeric::check_moments(adam, &network.names, epoch, &kept)?;
        let record = EpochRecord {
            epoch,
            lr: adam.lr,
            train: trained.totals.summary(),
            validation,
            train_seconds: trained.seconds,
            samples_per_second: trained.samples as f64 / trained.seconds.max(1e-9),
            communication_seconds: trained.communication_seconds,
            skipped_batches: trained.skipped_batches.len(),
            gradient_norms,
        };
        let Some(output) = self.output else {
            take_epoch(adam, state, &record, &self.scoring);
            return Ok(record);
        };
        let saver = network.saver(output.header);
        commit_epoch(
            &saver,
            output.files,
            adam,
            state,
            &record,
            &self.scoring,
            output.run_dir,
        )?;
        Ok(record)
    }
}

/// Takes epoch `record.epoch` into `state` (its validation against the best so far) and
/// commits it: checkpoints, `metrics.jsonl` and `state.json` as one step.
fn commit_epoch(
    saver: &Saver<'_>,
    files: &RunFiles,
    adam: &Adam,
    state: &mut RunState,
    record: &EpochRecord,
    scoring: &Scoring,
    run_dir: &Path,
) -> Result<()> {
    let previous = state.epoch;
    let improvement = take_epoch(adam, state, record, scoring);
    saver
        .commit(files, adam, state, Some(record), &improvement)
        .map_err(|e| {
            // A failure after the commit (installing the files) keeps the new epoch.
            let kept = files.committed_epoch().unwrap_or(previous);
            save_failed(e, run_dir, kept)
        })
}

/// Takes epoch `record.epoch` into `state`: its validation against the best so far, the
/// steps and skipped batches. What it improved on.
fn take_epoch(
    adam: &Adam,
    state: &mut RunState,
    record: &EpochRecord,
    scoring: &Scoring,
) -> Improvement {
    let improvement = match &record.validation {
        Some(evaluation) => state.best.evaluated(record.epoch, evaluation, scoring),
        None => Improvement::None,
    };
    state.epoch = record.epoch;
    state.adam_steps = adam.steps;
    state.skipped_batches += record.skipped_batches;
    improvement
}

/// How a run's validation results pick its best checkpoint.
fn scoring(config: &CheckedConfig, inputs: &Inputs) -> Scoring {
    let space = config.space();
    let explicit = crate::best_epoch::explicit_axes(space.len(), &inputs.splits.train);
    Scoring::new(&config.run.monitor(), space, &explicit)
}

/// What the end of a run reports from.
struct Finished<'a> {
    space: &'a LabelSpace,
    warnings: Vec<String>,
    inputs: &'a Inputs,
    data: &'a Data<'a>,
    loss: &'a dyn Loss,
    parameters: usize,
    started: Instant,
}

impl Finished<'_> {
    /// Tests the best checkpoint, then writes the plots and, last, `summary.json`.
    fn summarise(
        self,
        network: &Network,
        files: &RunFiles,
        state: &RunState,
        run_dir: &Path,
        device: &candle_core::Device,
    ) -> Result<RunSummary> {
        let (best_epoch, best_validation) = state
            .best
            .best()
            .cloned()
            .ok_or_else(|| Error::Numeric("no validation result was recorded".into()))?;
        let splits = &self.inputs.splits;
        let test = if splits.test.is_empty() {
            None
        } else {
            let best_path = files.checkpoints.join("best.safetensors");
            let (tensors, _) = read_checkpoint(&best_path, device)?;
            load_into(network.model.vars(), &tensors, &best_path)?;
            let batches = self.data.test.epoch(0);
            Some(evaluate(
                &network.model,
                self.loss,
                self.space,
                batches,
                device,
            )?)
        };
        let summary = RunSummary {
            run_dir: run_dir.to_path_buf(),
            epochs: state.epoch,
            best_epoch,
            best_epochs: state.best.axis_epochs().clone(),
            best_validation,
            test,
            samples: [
                splits.train.len(),
                splits.validation.len(),
                splits.test.len(),
            ],
            features: self.inputs.feature_names.clone(),
            skipped: self
                .inputs
                .skipped
                .iter()
                .cloned()
                .chain(self.data.skipped())
                .collect(),
            skipped_batches: state.skipped_batches,
            parameters: self.parameters,
            seconds: self.started.elapsed().as_secs_f64(),
            mean_predictor: mean_predictor(self.space, splits)?,
            majority_class: majority_class(self.space, splits)?,
            mean_distribution: mean_distribution(self.space, splits)?,
            init: state.init.clone(),
            warnings: self.warnings,
        };
        let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::output(run_dir, e))?;
        let finish = || -> Result<()> {
            write_plots(run_dir)?;
            // Last, and whole or not at all: a summary.json means the run finished.
            write_atomically(&run_dir.join("summary.json"), json.as_bytes())
        };
        finish().map_err(|e| save_failed(e, run_dir, state.epoch))?;
        Ok(summary)
    }
}

/// `splits.json`: which rows of the data each split holds, so that other methods can be
/// compared on the same rows. Written on every start, whole or not at all: a resumed run
/// may have changed its split keys.
fn write_split_rows(inputs: &Inputs, run_dir: &Path) -> Result<()> {
    let path = run_dir.join("splits.json");
    match &inputs.split_rows {
        Some(rows) => {
            let json = serde_json::to_string(rows).map_err(|e| Error::output(&path, e))?;
            write_atomically(&path, json.as_bytes())
        }
        None => remove_durably(&path),
    }
}

/// The training curves of a run folder into `RUN_DIR/plots`.
fn write_plots(run_dir: &Path) -> Result<()> {
    let curves = crate::plot::RunCurves::read(run_dir)?;
    crate::plot::plot_runs(&[curves], &run_dir.join("plots"))?;
    Ok(())
}

/// `OUTPUT/TASK-N` for the first `N` not taken.
fn new_run_dir(output: &Path, task: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(output).map_err(|e| {
        Error::output(
            output,
            format!(
                "cannot create the folder of run.output_dir ({e}); set run.output_dir to a \
                 folder you can write"
            ),
        )
    })?;
    for n in 1.. {
        let dir = output.join(format!("{task}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::output(&dir, e)),
        }
    }
    unreachable!("some run number is free")
}

/// Removes `path` if it is there, and flushes its folder so the removal survives a
/// power cut.
fn remove_durably(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => ldl_models::durable::sync_parent(path).map_err(|e| Error::output(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::output(path, e)),
    }
}
