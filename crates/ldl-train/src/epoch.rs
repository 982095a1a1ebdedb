//! One epoch of training: the shuffled batches of the training split, each a step of
//! forward, loss, backward and Adam, with non-finite losses and gradients stopped or
//! skipped (`optim.on_nonfinite`).

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use ldl_core::loss::{Loss, LossOutput};
use ldl_core::LabelSpace;
use ldl_data::Batch;
use ldl_distributed::{average_gradients, reduce_step, Collective, LocalStep};
use ldl_models::{on_worker_thread, Model};

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
    /// Whether BatchNorm sums its statistics over the ranks (SyncBN), so that every rank
    /// must run every step's forward and backward passes.
    pub synced_batch_norm: bool,
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
    let mut carry = StepCarry::default();
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
        match train_step(context, batch.as_ref(), &mut carry, adam)? {
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
    refuse_all_skipped(epoch, seen, &skipped_batches, kept)?;
    let several_ranks = context.collective.world_size() > 1;
    Ok(EpochOutcome::Trained(TrainedEpoch {
        totals,
        samples,
        skipped_batches,
        seconds: start.elapsed().as_secs_f64(),
        communication_seconds: several_ranks.then_some(carry.communication),
    }))
}

/// Stops the run when every one of the `seen` batches of the epoch was skipped.
fn refuse_all_skipped(epoch: usize, seen: usize, skipped: &[String], kept: &str) -> Result<()> {
    if seen == 0 || skipped.len() < seen {
        return Ok(());
    }
    Err(Error::Numeric(format!(
        "epoch {epoch}: all {seen} batches had a non-finite loss or gradient and were \
         skipped (the last: {}); nothing can be learnt, so the run stopped and {kept}; \
         lower optim.lr or check the data",
        skipped.last().map(String::as_str).unwrap_or_default()
    )))
}

/// What the steps of an epoch carry from one to the next.
#[derive(Default)]
struct StepCarry {
    /// The loss parts' names, from the first step with samples (a rank with no samples in
    /// a later step joins it with zeros under the same names).
    part_names: Option<Vec<String>>,
    /// Seconds spent in the steps' collectives.
    communication: f64,
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
        if context.synced_batch_norm {
            // The other ranks' BatchNorm waits for this rank's sums, which it cannot give.
            return Err(Error::Usage(format!(
                "rank {} has no samples in a step (every image of its part of the batch was \
                 skipped as unreadable); with run.sync_batch_norm every rank needs samples \
                 in every step: fix or remove the images the log names, or train without \
                 run.sync_batch_norm",
                context.collective.rank()
            )));
        }
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
    let (model, loss, space) = (context.model, context.loss, context.space);
    let passes = || forward_backward(model, loss, space, batch);
    let Passes {
        named,
        total,
        grads,
    } = if context.synced_batch_norm {
        // Its passes wait for the other ranks' sums, which may be threads of this
        // process (see `on_worker_thread`).
        passes()?
    } else {
        on_worker_thread(context.device, passes)?
    };
    part_names.get_or_insert_with(|| named.iter().map(|(n, _)| n.clone()).collect());
    let mut local = LocalStep {
        samples: batch.indices.len(),
        total,
        parts: named.iter().map(|(_, v)| *v).collect(),
        non_finite: false,
    };
    let loss_problem = numeric::loss_problem(total, &named);
    if let Some(problem) = loss_problem {
        local.non_finite = true;
        return Ok((local, grads, Some(problem)));
    }
    if let Some(problem) = numeric::step_problem(&grads, context.trainable, context.statistics)? {
        local.non_finite = true;
        let problem = format!("{problem} (the loss, {total}, is finite)");
        return Ok((local, grads, Some(problem)));
    }
    Ok((local, grads, None))
}

/// What the passes over one batch give: the loss's named parts and total, and the
/// gradients.
struct Passes {
    named: Vec<(String, f64)>,
    total: f64,
    grads: GradStore,
}

/// The forward pass, the loss (its parts and total) and the backward pass of one batch.
fn forward_backward(
    model: &Model,
    loss: &dyn Loss,
    space: &LabelSpace,
    batch: &Batch,
) -> Result<Passes> {
    let networks = model.forward_networks_rows(&batch.inputs_per_network(), batch.rows)?;
    let outputs = networks
        .iter()
        .map(|logits| loss.compute(space, logits, &batch.targets))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let StepLoss {
        named,
        total,
        differentiated,
    } = ensemble_loss(&outputs)?;
    // Backward even for a non-finite loss: with SyncBN every rank's backward pass sums
    // over the ranks, so all ranks run it; the step is then skipped or stopped on all.
    let grads = differentiated.backward()?;
    Ok(Passes {
        named,
        total,
        grads,
    })
}

/// The loss of a step from each network's (one without an ensemble): the parts and the
/// total reported are the networks' means, so that they read as one network's; the
/// tensor differentiated is their sum, so that each network gets the gradient it would
/// get trained alone, and weight decay weighs on it as it would.
fn ensemble_loss(outputs: &[LossOutput]) -> Result<StepLoss> {
    let Some(first) = outputs.first() else {
        return Err(Error::Usage("a model of no networks".into()));
    };
    let count = outputs.len() as f64;
    let mut named = first.part_values()?;
    let mut total = first.total_value()?;
    let mut differentiated = first.total.clone();
    for out in &outputs[1..] {
        for ((_, sum), (_, value)) in named.iter_mut().zip(out.part_values()?) {
            *sum += value;
        }
        total += out.total_value()?;
        differentiated = (differentiated + &out.total)?;
    }
    named.iter_mut().for_each(|(_, value)| *value /= count);
    Ok(StepLoss {
        named,
        total: total / count,
        differentiated,
    })
}

/// A step's loss: the parts and total as reported, and the tensor to differentiate.
struct StepLoss {
    named: Vec<(String, f64)>,
    total: f64,
    differentiated: Tensor,
}

/// One step of the global batch: this rank's shard forward and backward, the ranks'
/// losses and verdicts summed, the gradients averaged over every rank's samples, and an
/// Adam step, unless the loss, a gradient or a BatchNorm statistic was NaN or infinite on
/// any rank. One process is the world of one: its step is as it always was. The seconds
/// spent in the collectives are added to `carry`.
fn train_step(
    context: &EpochContext<'_>,
    batch: Option<&Batch>,
    carry: &mut StepCarry,
    adam: &mut Adam,
) -> Result<Step> {
    let collective = context.collective;
    let (local, mut grads, problem) = local_step(context, batch, &mut carry.part_names)?;
    let started = Instant::now();
    let totals = reduce_step(collective, &local)?;
    carry.communication += started.elapsed().as_secs_f64();
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
    carry.communication += started.elapsed().as_secs_f64();
    on_worker_thread(context.device, || adam.step(&grads))?;
    let names = carry.part_names.clone().unwrap_or_default();
    Ok(Step::Done {
        total: totals.total,
        parts: names.into_iter().zip(totals.parts).collect(),
        samples: totals.samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use ldl_core::loss::FullKl;
    use ldl_core::{Axis, Label};
    use ldl_models::{network_local_name, BackboneConfig, BatchRows, MlpConfig};

    /// Two axes, one MLP per axis, and a batch of four rows whose networks 1 and 2 read
    /// other rows than network 0, as with feature noise of their own.
    fn space_and_batch(device: &Device) -> Result<(LabelSpace, MlpConfig, Batch)> {
        let space = LabelSpace::new(vec![
            Axis::linear("age", 0.0, 10.0, 1.0)?,
            Axis::linear("size", -2.0, 2.0, 0.5)?,
        ])?;
        let inputs = Tensor::new(
            &[
                [0.5f32, -1.0, 2.0],
                [0.0, 0.3, -0.7],
                [1.5, 1.0, 0.2],
                [-2.0, 0.1, 0.9],
            ],
            device,
        )?;
        let labels = [[3.0, 0.5], [7.5, -1.0], [1.0, 1.5], [9.0, 0.0]];
        let samples: Vec<Vec<Label>> = labels
            .iter()
            .map(|l| {
                l.iter()
                    .map(|&value| Label::Value { value, std: None })
                    .collect()
            })
            .collect();
        let network_inputs = vec![(&inputs * 0.5)?, (&inputs + 1.0)?];
        let batch = Batch {
            targets: space.targets(&samples, DType::F32, device)?,
            indices: (0..4).collect(),
            rows: BatchRows::whole(4),
            inputs,
            network_inputs,
        };
        Ok((space, MlpConfig::new(3, [8]).with_separate_trunks(), batch))
    }

    /// A one-network model holding network `network` of `ensemble`, and the pairs of
    /// (ensemble variable, its copy).
    fn network_alone(
        ensemble: &Model,
        mlp: &MlpConfig,
        network: usize,
    ) -> Result<(Model, Vec<(Var, Var)>)> {
        let space = ensemble.label_space();
        let alone = Model::build(&BackboneConfig::from(mlp.clone()), space, 0, &Device::Cpu)?;
        let prefix = format!("ensemble.{network}.");
        let mut pairs = Vec::new();
        for (name, var) in ensemble.trainable_vars() {
            let Some(local) = name.strip_prefix(&prefix) else {
                continue;
            };
            let target = alone.trainable_vars().into_iter().find(|(n, _)| n == local);
            let (_, target) = target.expect("the same variables in one network");
            target.set(var.as_tensor())?;
            pairs.push((var, target));
        }
        assert_eq!(pairs.len(), alone.trainable_vars().len());
        assert!(ensemble
            .trainable_vars()
            .iter()
            .all(|(n, _)| network_local_name(n) != n.as_str()));
        Ok((alone, pairs))
    }

    /// Training an ensemble gives each network the gradient that network gets trained
    /// alone on its own rows of the batch (its noisy copy), and reports the networks' mean
    /// loss and parts: checked against a one-network model holding network `k`'s weights.
    #[test]
    fn each_network_of_an_ensemble_gets_the_gradient_it_gets_alone() -> Result<()> {
        let device = Device::Cpu;
        let (space, mlp, batch) = space_and_batch(&device)?;
        let ensemble = Model::build(&mlp.clone().with_ensemble(3).into(), &space, 5, &device)?;
        let loss = FullKl::new();
        let passes = forward_backward(&ensemble, &loss, &space, &batch)?;

        let mut alone_totals = Vec::new();
        let mut alone_parts: Vec<Vec<(String, f64)>> = Vec::new();
        for (network, inputs) in batch.inputs_per_network().iter().enumerate() {
            let (alone, pairs) = network_alone(&ensemble, &mlp, network)?;
            let logits = alone.forward_t(inputs, true)?;
            let out = loss.compute(&space, &logits, &batch.targets)?;
            alone_totals.push(out.total_value()?);
            alone_parts.push(out.part_values()?);
            let grads = out.total.backward()?;
            for (in_ensemble, in_alone) in pairs {
                let got = passes
                    .grads
                    .get(in_ensemble.as_tensor())
                    .expect("a gradient");
                let want = grads.get(in_alone.as_tensor()).expect("a gradient");
                let gap = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(gap < 1e-6, "network {network}: gradient gap {gap}");
            }
        }
        // The networks start from different weights; the total and parts reported are
        // their means.
        assert!(
            alone_totals.windows(2).all(|w| (w[0] - w[1]).abs() > 1e-6),
            "{alone_totals:?}"
        );
        let mean = alone_totals.iter().sum::<f64>() / 3.0;
        assert!(
            (passes.total - mean).abs() < 1e-5,
            "{} vs {mean}",
            passes.total
        );
        let names: Vec<&str> = passes.named.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"age/ld") && names.contains(&"size/ld"),
            "{names:?}"
        );
        for (index, (name, value)) in passes.named.iter().enumerate() {
            let mean = alone_parts.iter().map(|p| p[index].1).sum::<f64>() / 3.0;
            assert_eq!(&alone_parts[0][index].0, name);
            assert!((value - mean).abs() < 1e-5, "{name}: {value} vs {mean}");
        }
        Ok(())
    }
}
