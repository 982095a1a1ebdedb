//! One epoch of training: the shuffled batches of the training split, each a step of
//! forward, loss, backward and Adam, with non-finite losses and gradients stopped or
//! skipped (`optim.on_nonfinite`).

use std::time::Instant;

use candle_core::Var;
use ldl_core::loss::Loss;
use ldl_core::LabelSpace;
use ldl_data::Batch;
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
    for (index, batch) in context.data.train.epoch(epoch as u64).enumerate() {
        if stop.is_stopped() {
            return Ok(EpochOutcome::Stopped);
        }
        let batch = on_device(batch?, context.device)?;
        seen += 1;
        let before = match context.on_nonfinite {
            OnNonFinite::Skip => Some(RunningStats::save(context.statistics)?),
            OnNonFinite::Stop => None,
        };
        match train_step(context, &batch, adam)? {
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
    Ok(EpochOutcome::Trained(TrainedEpoch {
        totals,
        samples,
        skipped_batches,
        seconds: start.elapsed().as_secs_f64(),
    }))
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
fn train_step(context: &EpochContext<'_>, batch: &Batch, adam: &mut Adam) -> Result<Step> {
    let logits = context.model.forward_t(&batch.inputs, true)?;
    let out = context
        .loss
        .compute(context.space, &logits, &batch.targets)?;
    let parts = out.part_values()?;
    let total = out.total_value()?;
    if let Some(problem) = numeric::loss_problem(total, &parts) {
        return Ok(Step::NonFinite(problem));
    }
    let grads = out.total.backward()?;
    if let Some(problem) = numeric::step_problem(&grads, context.trainable, context.statistics)? {
        return Ok(Step::NonFinite(format!(
            "{problem} (the loss, {total}, is finite)"
        )));
    }
    adam.step(&grads)?;
    Ok(Step::Done { total, parts })
}
