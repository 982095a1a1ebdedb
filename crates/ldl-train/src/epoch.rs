//! One epoch of training: the shuffled batches of the training split, each a step of
//! forward, loss, backward and Adam, with non-finite losses and gradients stopped or
//! skipped (`optim.on_nonfinite`).

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::Var;
use ldl_core::loss::Loss;
use ldl_core::LabelSpace;
use ldl_data::Batch;
use ldl_distributed::{average_gradients, reduce_step, Collective, LocalStep};
use ldl_models::Model;

use crate::adam::Adam;
use crate::batches::Data;
use crate::config::OnNonFinite;
use crate::error::{Error, Result};
use crate::evaluation::{on_device, Accumulator};
use crate::numeric::{self, RunningStats};
use crate::records::Progress;
use crate::stop::StopToken;

/// What an epoch trains with.
pub(crate) struct EpochContext<'a> {
    pub model: &'a Model,
    pub loss: &'a dyn Loss,
    pub space: &'a LabelSpace,
    pub data: &'a Data<'a>,
    pub device: &'a candle_core::Device,
    pub trainable: &'a [(String, Var)],
    /// BatchNorm's running statistics, restored after a skipped batch.
    pub statistics: &'a [(String, Var)],
    pub on_nonfinite: OnNonFinite,
    /// The ranks training together (one process: [`ldl_distributed::SingleProcess`]).
    pub collective: &'a dyn Collective,
}

/// How an epoch's training went.
pub(crate) enum EpochOutcome {
    /// Every batch ran (some may have been skipped).
    Trained(TrainedEpoch),
    /// The stop token was set; the epoch was abandoned between two batches.
    Stopped,
}

/// The training part of a finished epoch.
pub(crate) struct TrainedEpoch {
    /// Sample-weighted batch losses.
    pub totals: Accumulator,
    /// Samples of the batches that stepped.
    pub samples: usize,
    /// `epoch E, batch B of N: problem` for each batch left out.
    pub skipped_batches: Vec<String>,
    /// Wall time of the training part.
    pub seconds: f64,
    /// Of which in the collectives of the steps (the ranks' loss totals and the gradient
    /// average, waiting for the slowest rank included); `None` in one process.
    pub communication_seconds: Option<f64>,
}

/// Trains epoch `epoch` (from 1). `kept` says what stays saved if the epoch fails (for
/// the messages).
pub(crate) fn train_epoch(
    context: &EpochContext<'_>,
    adam: &mut Adam,
    epoch: usize,
    kept: &str,
    stop: &StopToken,
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<EpochOutcome> {
    let start = Instant::now();
    let mut totals = Accumulator::default();
    let batches = context.data.train.batches();
    let (mut samples, mut seen) = (0, 0);
    let mut skipped_batches = Vec::new();
    let mut part_names = None;
    let mut communication = 0.0;
    // Every rank takes part in every global batch's step, in order; a rank whose part of
    // the last batch is empty has one batch fewer and joins that step with none.
    let mut shards = context.data.train.epoch(epoch as u64);
    for index in 0..batches {
        if stop.is_stopped() {
            return Ok(EpochOutcome::Stopped);
        }
        let batch = shards.next().transpose()?;
        let batch = batch.map(|b| on_device(b, context.device)).transpose()?;
        let before = match context.on_nonfinite {
            OnNonFinite::Skip => Some(RunningStats::save(context.statistics)?),
            OnNonFinite::Stop => None,
        };
        match train_step(
            context,
            batch.as_ref(),
            &mut part_names,
            adam,
            &mut communication,
        )? {
            Step::Done {
                total,
                parts,
                samples: stepped,
            } => {
                seen += 1;
                totals.add(total, &parts, stepped);
                samples += stepped;
            }
            Step::Empty => {}
            Step::NonFinite(problem) => {
                seen += 1;
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
            seconds: start.elapsed().as_secs_f64(),
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
    let several_ranks = context.collective.world_size() > 1;
    Ok(EpochOutcome::Trained(TrainedEpoch {
        totals,
        samples,
        skipped_batches,
        seconds: start.elapsed().as_secs_f64(),
        communication_seconds: several_ranks.then_some(communication),
    }))
}

/// The result of one training step.
enum Step {
    /// Adam stepped; the global batch's loss and samples.
    Done {
        total: f64,
        parts: Vec<(String, f64)>,
        samples: usize,
    },
    /// No rank had samples (every image of the batch was skipped): nothing to step.
    Empty,
    /// The loss or a gradient was not finite on some rank; nothing was changed but the
    /// BatchNorm statistics (the caller restores or stops).
    NonFinite(String),
}

/// This rank's part of a step: forward, loss and backward on its shard (none for an empty
/// shard), with the loss, its gradients and BatchNorm's statistics checked.
fn local_step(
    context: &EpochContext<'_>,
    batch: Option<&Batch>,
    part_names: &mut Option<Vec<String>>,
) -> Result<(LocalStep, GradStore, Option<String>)> {
    let Some(batch) = batch.filter(|b| !b.indices.is_empty()) else {
        // The other ranks need this rank's zeros in the same layout as their parts.
        let names = match part_names.as_ref() {
            Some(names) => names.clone(),
            None if context.collective.world_size() == 1 => Vec::new(),
            None => {
                return Err(Error::Usage(format!(
                    "rank {} has no samples in its first step of the epoch (a training split \
                     smaller than the ranks, or a first batch whose images were all skipped); \
                     train with fewer processes or fix the data",
                    context.collective.rank()
                )))
            }
        };
        let empty = LocalStep {
            samples: 0,
            total: 0.0,
            parts: vec![0.0; names.len()],
            non_finite: false,
        };
        return Ok((empty, GradStore::default(), None));
    };
    let logits = context.model.forward_rows(&batch.inputs, batch.rows)?;
    let out = context
        .loss
        .compute(context.space, &logits, &batch.targets)?;
    let named = out.part_values()?;
    let total = out.total_value()?;
    part_names.get_or_insert_with(|| named.iter().map(|(n, _)| n.clone()).collect());
    let mut local = LocalStep {
        samples: batch.indices.len(),
        total,
        parts: named.iter().map(|(_, v)| *v).collect(),
        non_finite: false,
    };
    if let Some(problem) = numeric::loss_problem(total, &named) {
        local.non_finite = true;
        return Ok((local, GradStore::default(), Some(problem)));
    }
    let grads = out.total.backward()?;
    if let Some(problem) = numeric::step_problem(&grads, context.trainable, context.statistics)? {
        local.non_finite = true;
        let problem = format!("{problem} (the loss, {total}, is finite)");
        return Ok((local, grads, Some(problem)));
    }
    Ok((local, grads, None))
}

/// One step of the global batch: this rank's shard forward and backward, the ranks'
/// losses and verdicts summed, the gradients averaged over every rank's samples, and an
/// Adam step, unless the loss, a gradient or a BatchNorm statistic was NaN or infinite on
/// any rank. One process is the world of one: its step is as it always was. The seconds
/// spent in the collectives are added to `communication`.
fn train_step(
    context: &EpochContext<'_>,
    batch: Option<&Batch>,
    part_names: &mut Option<Vec<String>>,
    adam: &mut Adam,
    communication: &mut f64,
) -> Result<Step> {
    let collective = context.collective;
    let (local, mut grads, problem) = local_step(context, batch, part_names)?;
    let started = Instant::now();
    let totals = reduce_step(collective, &local)?;
    *communication += started.elapsed().as_secs_f64();
    if totals.non_finite_ranks > 0 {
        return Ok(Step::NonFinite(problem.unwrap_or_else(|| {
            format!(
                "a non-finite loss or gradient on {} of {} ranks",
                totals.non_finite_ranks,
                collective.world_size()
            )
        })));
    }
    if totals.samples == 0 {
        return Ok(Step::Empty);
    }
    let vars: Vec<Var> = context.trainable.iter().map(|(_, v)| v.clone()).collect();
    let started = Instant::now();
    average_gradients(collective, &vars, &mut grads, local.samples, totals.samples)?;
    *communication += started.elapsed().as_secs_f64();
    adam.step(&grads)?;
    let names = part_names.clone().unwrap_or_default();
    Ok(Step::Done {
        total: totals.total,
        parts: names.into_iter().zip(totals.parts).collect(),
        samples: totals.samples,
    })
}
