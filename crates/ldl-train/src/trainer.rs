//! The training loop: data, model, loss and Adam from a [`Config`]; epochs of shuffled
//! batches; evaluation on the validation split; a run folder with the resolved config,
//! `metrics.jsonl`, checkpoints and `summary.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::DType;
use ldl_core::loss::Loss;
use ldl_core::LabelSpace;
use ldl_data::{
    read_builtin, read_chalearn, read_csv, read_dldl_list, read_jsonl, read_synthetic_faces,
    read_utkface, split_by_column, split_by_fractions, Batch, FeatureLoader, ImageLoader,
    ImagePipeline, Sample, SplitNames, Splits, Standardizer,
};
use ldl_models::{load_into, read_checkpoint, save_checkpoint_with, trainable_vars, Model};
use serde::{Deserialize, Serialize};

use crate::adam::Adam;
use crate::commit::RunFiles;
use crate::config::{Config, OnNonFinite, Source};
use crate::error::{Error, Result};
use crate::evaluation::{evaluate, on_device, Accumulator};
use crate::numeric::{self, RunningStats};
use crate::output::write_atomically;
use crate::records::{EpochRecord, Evaluation, MeanPredictor, RunSummary};

/// [`MeanPredictor`] for every linear and circular axis.
fn mean_predictor(space: &LabelSpace, splits: &Splits) -> Result<Vec<MeanPredictor>> {
    let values = |samples: &[Sample]| -> Result<Vec<Vec<f64>>> {
        if samples.is_empty() {
            return Ok(vec![Vec::new(); space.axes().len()]);
        }
        let labels: Vec<Vec<ldl_core::Label>> = samples.iter().map(|s| s.labels.clone()).collect();
        let targets = space.targets(&labels, DType::F64, &candle_core::Device::Cpu)?;
        targets
            .iter()
            .map(|t| Ok(t.value.to_vec1::<f64>()?))
            .collect()
    };
    let (train, validation, test) = (
        values(&splits.train)?,
        values(&splits.validation)?,
        values(&splits.test)?,
    );
    let mut out = Vec::new();
    for (a, axis) in space.axes().iter().enumerate() {
        if axis.is_categorical() || train[a].is_empty() {
            continue;
        }
        let n = train[a].len() as f64;
        let value = match axis.period() {
            Some(period) => {
                let start = axis.centers()[0];
                let angle = |v: f64| (v - start) / period * std::f64::consts::TAU;
                let (sin, cos) = train[a].iter().fold((0.0, 0.0), |(s, c), &v| {
                    (s + angle(v).sin(), c + angle(v).cos())
                });
                axis.canonical_value(start + sin.atan2(cos) / std::f64::consts::TAU * period)
            }
            None => train[a].iter().sum::<f64>() / n,
        };
        let mae = |values: &[f64]| {
            (!values.is_empty()).then(|| {
                values
                    .iter()
                    .map(|&v| axis.difference(v, value).abs())
                    .sum::<f64>()
                    / values.len() as f64
            })
        };
        out.push(MeanPredictor {
            axis: axis.name().to_string(),
            value,
            validation_mae: mae(&validation[a]).unwrap_or(f64::NAN),
            test_mae: mae(&test[a]),
        });
    }
    Ok(out)
}

/// Where a run stands after an epoch (`state.json`, the commit record of `commit.rs`),
/// with `checkpoints/last.safetensors` and `checkpoints/optimizer.safetensors` enough to
/// resume it exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    /// The last committed epoch (0: the initial weights).
    epoch: usize,
    adam_steps: u64,
    best: Option<(usize, Evaluation)>,
    /// Evaluations since the best one (for early stopping).
    #[serde(default)]
    since_improvement: usize,
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
            best: None,
            since_improvement: 0,
            init,
            skipped_batches: 0,
        }
    }

    /// Takes in epoch `epoch`'s validation results; true when they are the best so far
    /// (by `monitor`, so the epoch becomes the `best` checkpoint).
    fn evaluated(
        &mut self,
        epoch: usize,
        evaluation: &Evaluation,
        monitor: &crate::config::Monitor,
    ) -> bool {
        let score = |e: &Evaluation| monitor.score(e).unwrap_or(f64::INFINITY);
        let improved = self
            .best
            .as_ref()
            .is_none_or(|(_, b)| score(evaluation) < score(b));
        self.since_improvement = if improved {
            0
        } else {
            self.since_improvement + 1
        };
        if improved {
            self.best = Some((epoch, evaluation.clone()));
        }
        improved
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks a running training loop to stop at the next batch boundary (e.g. from a Ctrl-C
/// handler). The epoch in progress is dropped; the last completed one stays saved and
/// `resume` continues from it.
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// What the trainer reports while it runs, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A training batch of `epoch` finished.
    Batch {
        /// The epoch (from 1).
        epoch: usize,
        /// Batches done in this epoch.
        done: usize,
        /// Batches in the epoch.
        batches: usize,
        /// Training samples seen in this epoch so far.
        samples: usize,
        /// The epoch's mean training loss so far.
        loss: f64,
        /// Seconds since the epoch started.
        seconds: f64,
    },
    /// The training batches of `epoch` are done; validation runs now.
    Validating {
        /// The epoch.
        epoch: usize,
    },
    /// An epoch finished and its record was written to `metrics.jsonl`.
    Epoch(&'a EpochRecord),
}

/// Trains as `config` says, in a new run folder. `observe` sees every batch and epoch
/// (for progress output; `&mut |_| {}` ignores them).
pub fn train(config: &Config, observe: &mut dyn FnMut(Progress<'_>)) -> Result<RunSummary> {
    run(config, None, observe)
}

/// Continues the run in `run_dir` from its last completed epoch, with its saved config
/// (and `overrides`, e.g. `optim.epochs=90` to train longer). With the same seed on the
/// same device, the result equals an uninterrupted run's, also after the run was killed
/// at any moment (see the commit protocol of the run folder in `commit.rs`).
pub fn resume(
    run_dir: &Path,
    overrides: &[String],
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<RunSummary> {
    let state = read_state(run_dir)?;
    let config = Config::load(&run_dir.join("config.toml"), overrides)?;
    run(&config, Some((run_dir, state)), observe)
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
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(&format!(
                "it has no state.json: the run stopped before its first checkpoint was saved; \
                 {start_again}"
            )))
        }
        Err(e) => return Err(refuse(&format!("cannot read state.json: {e}"))),
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
    vars: &'a candle_nn::VarMap,
    model: &'a Model,
    header: &'a BTreeMap<String, String>,
    names: &'a [String],
}

impl Saver<'_> {
    /// Writes the epoch's checkpoints into the staging folder `dir` (`best` only when the
    /// epoch improved on the best).
    fn stage(&self, dir: &Path, adam: &Adam, improved: bool) -> Result<()> {
        let save =
            |name: &str| save_checkpoint_with(&dir.join(name), self.vars, self.model, self.header);
        save("last.safetensors")?;
        if improved {
            save("best.safetensors")?;
        }
        adam.save_moments(self.names, &dir.join("optimizer.safetensors"))
    }

    /// Saves `state`'s epoch as one step (see `commit.rs`).
    fn commit(
        &self,
        files: &RunFiles,
        adam: &Adam,
        state: &RunState,
        record: Option<&EpochRecord>,
        improved: bool,
    ) -> Result<()> {
        let json = serde_json::to_string(state).map_err(|e| Error::output(&files.state, e))?;
        files.commit_epoch(
            state.epoch,
            record,
            &mut |dir| self.stage(dir, adam, improved),
            json.as_bytes(),
        )
    }
}

/// The result of one training step.
enum Step {
    /// Adam stepped; the batch's loss.
    Done {
        total: f64,
        parts: Vec<(String, f64)>,
    },
    /// The loss or a gradient was not finite; nothing was changed but the BatchNorm
    /// statistics (the caller restores or stops).
    NonFinite(String),
}

/// Forward, loss, backward and an Adam step on one batch, unless the loss, a gradient or
/// a BatchNorm statistic (`statistics`) is NaN or infinite.
fn train_step(
    model: &Model,
    loss: &dyn Loss,
    space: &LabelSpace,
    batch: &Batch,
    adam: &mut Adam,
    vars: &[(String, candle_core::Var)],
    statistics: &[(String, candle_core::Var)],
) -> Result<Step> {
    let logits = model.forward_t(&batch.inputs, true)?;
    let out = loss.compute(space, &logits, &batch.targets)?;
    let parts = out.part_values()?;
    let total = out.total_value()?;
    if let Some(problem) = numeric::loss_problem(total, &parts) {
        return Ok(Step::NonFinite(problem));
    }
    let grads = out.total.backward()?;
    if let Some(problem) = numeric::step_problem(&grads, vars, statistics)? {
        return Ok(Step::NonFinite(format!(
            "{problem} (the loss, {total}, is finite)"
        )));
    }
    adam.step(&grads)?;
    Ok(Step::Done { total, parts })
}

fn run(
    config: &Config,
    resume_from: Option<(&Path, RunState)>,
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<RunSummary> {
    // A stop asked for during an earlier run in this process does not carry over.
    STOP.store(false, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    config.validate()?;
    let space = config.label_space()?;
    let device = ldl_models::device(&config.run.device)?;
    // Before the data is read: `run.device = "auto"` may have found no GPU.
    if let Some(refused) = crate::config::precision_refusal(config.run.precision, &device) {
        return Err(Error::Config(format!(
            "`run.precision`: {refused} (`run.device = \"{}\"` gave the CPU)",
            config.run.device
        )));
    }
    let (mut splits, feature_names, skipped) = load_splits(config, &space)?;
    let images = config.data.reads_images();
    let standardizer = if config.data.standardize && !images {
        let standardizer = Standardizer::fit(&feature_names, &splits.train)?;
        for split in [&mut splits.train, &mut splits.validation, &mut splits.test] {
            standardizer.apply_to(split)?;
        }
        Some(standardizer)
    } else {
        None
    };

    let seed = config.run.seed;
    let backbone = config.backbone(feature_names.len())?;
    let (mut model, vars) = Model::build(&backbone, &space, seed, &device)?;
    model.set_precision(config.run.precision)?;
    let init = match (&config.model.init_from, &resume_from) {
        (Some(path), None) => {
            let local = crate::trained::local_checkpoint(path)?;
            Some(ldl_models::load_pretrained(&vars, &local, &device)?)
        }
        _ => None,
    };
    let loss = crate::build::loss(&config.loss, &space)?;
    let monitor = config.monitor()?;
    let trainable = trainable_vars(&vars);
    let parameters = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    let mut adam = Adam::new(
        trainable.iter().map(|(_, v)| v.clone()).collect(),
        config.optim.lr,
        config.optim.weight_decay,
    )?;
    let names: Vec<String> = trainable.iter().map(|(n, _)| n.clone()).collect();
    let statistics = numeric::running_statistics(&vars)?;

    let run_dir = match &resume_from {
        Some((dir, _)) => dir.to_path_buf(),
        None => new_run_dir(&config.run.output_dir, &config.task.name)?,
    };
    let files = RunFiles::new(&run_dir)?;
    if let Some((_, state)) = &resume_from {
        // Before anything is read or written: back to the committed epoch.
        files.recover(state.epoch)?;
    }
    let config_text = toml::to_string(config).map_err(|e| Error::output(&run_dir, e))?;
    let config_path = run_dir.join("config.toml");
    // Stored in every checkpoint, so that it alone can reproduce the inputs' preprocessing.
    let mut header = BTreeMap::new();
    header.insert("train.config".to_string(), config_text.clone());
    let names_json =
        serde_json::to_string(&feature_names).map_err(|e| Error::output(&run_dir, e))?;
    header.insert("train.features".to_string(), names_json);
    if let Some(s) = &standardizer {
        let json = serde_json::to_string(s).map_err(|e| Error::output(&run_dir, e))?;
        header.insert("train.standardizer".to_string(), json);
    }

    let data = Data::new(config, &space, &splits, &device)?;
    let saver = Saver {
        vars: &vars,
        model: &model,
        header: &header,
        names: &names,
    };
    let mut state = match resume_from {
        Some((_, state)) => {
            let last = files.checkpoints.join("last.safetensors");
            let (tensors, _) = read_checkpoint(&last, &device)?;
            load_into(&vars, &tensors, &last)?;
            let optimizer = files.checkpoints.join("optimizer.safetensors");
            adam.load_moments(&names, &optimizer, &device)?;
            adam.steps = state.adam_steps;
            // Only now that the checkpoints fit the config (with its overrides) is it
            // saved: a refused resume leaves the folder resumable as it was. The old
            // summary goes first: a summary.json means the run of config.toml finished,
            // and is written again when it does.
            remove_durably(&run_dir.join("summary.json"))?;
            write_atomically(&config_path, config_text.as_bytes())?;
            state
        }
        None => {
            write_atomically(&config_path, config_text.as_bytes())?;
            // Epoch 0, the initial weights: a run killed in its first epoch resumes too.
            let state = RunState::start(init);
            saver
                .commit(&files, &adam, &state, None, false)
                .map_err(|e| Error::Output {
                    path: run_dir.display().to_string(),
                    message: format!(
                        "cannot save the initial checkpoint: {e}; fix the cause and start the \
                         run again"
                    ),
                })?;
            state
        }
    };

    let on_nonfinite = config.optim.on_nonfinite;
    let patience_ran_out = |state: &RunState| {
        config
            .run
            .patience
            .is_some_and(|p| state.since_improvement >= p)
    };
    // A run that early stopping ended, killed before its summary.json, trains no further.
    let first_epoch = if patience_ran_out(&state) {
        config.optim.epochs.max(state.epoch).saturating_add(1)
    } else {
        state.epoch.saturating_add(1)
    };
    for epoch in first_epoch..=config.optim.epochs {
        // Dropout masks restart from (seed, epoch), like the shuffling and augmentation.
        model.reseed_dropout(ldl_data::mix_seed(seed, epoch as u64));
        let decays = ((epoch - 1) / config.optim.lr_step_epochs) as i32;
        adam.lr = config.optim.lr * config.optim.lr_gamma.powi(decays);
        let kept = kept(&run_dir, state.epoch);
        let epoch_start = Instant::now();
        let mut totals = Accumulator::default();
        let batches = data.train_batches();
        let mut samples = 0;
        let mut seen = 0;
        let mut skipped_batches = Vec::new();
        for (index, batch) in data.train(epoch as u64)?.enumerate() {
            if stop_requested() {
                if state.epoch > 0 {
                    // Best effort: a plotting failure must not hide how to resume.
                    let _ = write_plots(&run_dir);
                }
                return Err(Error::Interrupted {
                    run_dir: run_dir.display().to_string(),
                    epoch: state.epoch,
                });
            }
            let batch = on_device(batch?, &device)?;
            seen += 1;
            let before = match on_nonfinite {
                OnNonFinite::Skip => Some(RunningStats::save(&statistics)?),
                OnNonFinite::Stop => None,
            };
            let step = train_step(
                &model,
                loss.as_ref(),
                &space,
                &batch,
                &mut adam,
                &trainable,
                &statistics,
            )?;
            match step {
                Step::Done { total, parts } => {
                    totals.add(total, &parts, batch.indices.len());
                    samples += batch.indices.len();
                }
                Step::NonFinite(problem) => {
                    let place = format!("epoch {epoch}, batch {} of {batches}", index + 1);
                    let Some(before) = before else {
                        return Err(Error::Numeric(format!(
                            "{place}: {problem}; the run stopped and {kept}; lower optim.lr, \
                             check the data, or set optim.on_nonfinite = \"skip\""
                        )));
                    };
                    before.restore()?;
                    skipped_batches.push(format!("{place}: {problem}"));
                }
            }
            observe(Progress::Batch {
                epoch,
                done: index + 1,
                batches,
                samples,
                loss: totals.mean_total(),
                seconds: epoch_start.elapsed().as_secs_f64(),
            });
        }
        if seen > 0 && skipped_batches.len() == seen {
            return Err(Error::Numeric(format!(
                "epoch {epoch}: all {seen} batches had a non-finite loss or gradient and were \
                 skipped (the last: {}); nothing can be learnt, so the run stopped and {kept}; \
                 lower optim.lr or check the data",
                skipped_batches
                    .last()
                    .map(String::as_str)
                    .unwrap_or_default()
            )));
        }
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        observe(Progress::Validating { epoch });
        let validation = if epoch % config.run.eval_every == 0 || epoch == config.optim.epochs {
            Some(evaluate(
                &model,
                loss.as_ref(),
                &space,
                data.validation()?,
                &device,
            )?)
        } else {
            None
        };
        numeric::check_state(&vars, epoch, &kept)?;
        numeric::check_moments(&adam, &names, epoch, &kept)?;
        if let Some(evaluation) = &validation {
            if !evaluation.loss.total.is_finite() {
                return Err(Error::Numeric(format!(
                    "epoch {epoch}: the validation loss is {}; {kept}",
                    evaluation.loss.total
                )));
            }
        }
        let record = EpochRecord {
            epoch,
            lr: adam.lr,
            train: totals.summary(),
            validation,
            train_seconds,
            samples_per_second: samples as f64 / train_seconds.max(1e-9),
            skipped_batches: skipped_batches.len(),
        };
        let previous = state.epoch;
        let improved = match &record.validation {
            Some(evaluation) => state.evaluated(epoch, evaluation, &monitor),
            None => false,
        };
        state.epoch = epoch;
        state.adam_steps = adam.steps;
        state.skipped_batches += skipped_batches.len();
        saver
            .commit(&files, &adam, &state, Some(&record), improved)
            .map_err(|e| {
                // A failure after the commit (installing the files) keeps the new epoch.
                let kept = files.committed_epoch().unwrap_or(previous);
                save_failed(e, &run_dir, kept)
            })?;
        observe(Progress::Epoch(&record));
        if patience_ran_out(&state) {
            break;
        }
    }

    let (best_epoch, best_validation) = state
        .best
        .clone()
        .ok_or_else(|| Error::Numeric("no validation result was recorded".into()))?;
    let test = if splits.test.is_empty() {
        None
    } else {
        let best_path = files.checkpoints.join("best.safetensors");
        let (tensors, _) = read_checkpoint(&best_path, &device)?;
        load_into(&vars, &tensors, &best_path)?;
        Some(evaluate(
            &model,
            loss.as_ref(),
            &space,
            data.test()?,
            &device,
        )?)
    };
    let summary = RunSummary {
        run_dir: run_dir.clone(),
        epochs: state.epoch,
        best_epoch,
        best_validation,
        test,
        samples: [
            splits.train.len(),
            splits.validation.len(),
            splits.test.len(),
        ],
        skipped: skipped.into_iter().chain(data.skipped_images()).collect(),
        skipped_batches: state.skipped_batches,
        parameters,
        seconds: started.elapsed().as_secs_f64(),
        mean_predictor: mean_predictor(&space, &splits)?,
        init: state.init.clone(),
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::output(&run_dir, e))?;
    let finish = || -> Result<()> {
        write_plots(&run_dir)?;
        // Last, and whole or not at all: a summary.json means the run finished.
        write_atomically(&run_dir.join("summary.json"), json.as_bytes())
    };
    finish().map_err(|e| save_failed(e, &run_dir, state.epoch))?;
    Ok(summary)
}

/// The training curves of a run folder into `RUN_DIR/plots`.
fn write_plots(run_dir: &Path) -> Result<()> {
    let curves = crate::plot::RunCurves::read(run_dir)?;
    crate::plot::plot_runs(&[curves], &run_dir.join("plots"))?;
    Ok(())
}

/// Reads the source, splits it, and returns the splits, the feature names and the
/// skipped samples.
fn load_splits(config: &Config, space: &LabelSpace) -> Result<(Splits, Vec<String>, Vec<String>)> {
    let table = read_table(config, config.data.source()?, space)?;
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
        Some(hub) if config.data.source == crate::config::HUB_SOURCE => (
            hub.validation_split.as_deref().map(Source::Hub),
            hub.test_split.as_deref().map(Source::Hub),
        ),
        _ => (
            split
                .validation_source
                .as_deref()
                .map(|f| config.data.source_of(f))
                .transpose()?,
            split
                .test_source
                .as_deref()
                .map(|f| config.data.source_of(f))
                .transpose()?,
        ),
    };
    let mut read_file = |source: Option<Source<'_>>| -> Result<Option<Vec<Sample>>> {
        let Some(source) = source else {
            return Ok(None);
        };
        let part = read_table(config, source, space)?;
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
fn read_table(config: &Config, source: Source<'_>, space: &LabelSpace) -> Result<ldl_data::Table> {
    let spec = config.table_spec();
    let policy = config.data.on_bad_sample;
    let images = config.data.images.as_deref();
    Ok(match source {
        Source::Faces => {
            let faces = &config.data.faces;
            let generator = faces.generator(config.data.image_size, config.run.seed);
            read_synthetic_faces(&generator, faces.count, &spec?, space, policy)?
        }
        Source::Builtin(name) => read_builtin(name, &spec?, space, policy)?,
        Source::Csv(path) => read_csv(&path, &spec?, space, policy)?,
        Source::Jsonl(path) => read_jsonl(&path, &spec?, space, policy)?,
        Source::ChaLearn(path) => read_chalearn(&path, images, space, policy)?,
        Source::DldlList(path) => read_dldl_list(&path, images, space, policy)?,
        Source::UtkFace(path) => read_utkface(&path, space, policy)?,
        Source::Hub(split) => {
            crate::hub_data::read_hub_split(config, &ldl_hub::Hub::from_env(), split, space)?
        }
    })
}

/// The batches of each split, from feature vectors or from images.
// One value per run: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Data<'a> {
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

type Batches<'b> = Box<dyn Iterator<Item = ldl_data::Result<Batch>> + 'b>;

impl<'a> Data<'a> {
    fn new(
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
    fn skipped_images(&self) -> Vec<String> {
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

    fn train_batches(&self) -> usize {
        match self {
            Data::Features { train, .. } => train.batches(),
            Data::Images { train, .. } => train.batches(),
        }
    }

    fn train(&self, epoch: u64) -> Result<Batches<'_>> {
        Ok(match self {
            Data::Features { train, .. } => Box::new(train.epoch(epoch)),
            Data::Images { train, .. } => Box::new(train.epoch(epoch)),
        })
    }

    fn validation(&self) -> Result<Batches<'_>> {
        Ok(match self {
            Data::Features { validation, .. } => Box::new(validation.epoch(0)),
            Data::Images { validation, .. } => Box::new(validation.epoch(0)),
        })
    }

    fn test(&self) -> Result<Batches<'_>> {
        Ok(match self {
            Data::Features { test, .. } => Box::new(test.epoch(0)),
            Data::Images { test, .. } => Box::new(test.epoch(0)),
        })
    }
}

/// `OUTPUT/TASK-N` for the first `N` not taken.
fn new_run_dir(output: &Path, task: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(output).map_err(|e| Error::output(output, e))?;
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
