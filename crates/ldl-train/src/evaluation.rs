//! Evaluating a model on a split: its loss parts (sample-weighted means of batch losses)
//! and every metric.

use std::collections::BTreeMap;

use candle_core::Tensor;
use ldl_core::loss::Loss;
use ldl_core::metrics::Metrics;
use ldl_core::{AxisTargets, LabelSpace};
use ldl_data::Batch;
use ldl_models::Model;

use ldl_distributed::Collective;

use crate::error::{Error, Result};
use crate::records::{Evaluation, LossSummary};

/// Loss and metrics of the model (in evaluation mode) over batches.
pub fn evaluate(
    model: &Model,
    loss: &dyn Loss,
    space: &LabelSpace,
    batches: impl Iterator<Item = ldl_data::Result<Batch>>,
    device: &candle_core::Device,
) -> Result<Evaluation> {
    let (totals, metrics) = accumulate(model, loss, space, batches, device)?;
    report(&totals, &metrics)
}

/// [`evaluate`] of a split whose parts the ranks of `collective` hold, one each: the
/// ranks' loss sums and metric accumulators are summed, so that every rank reports the
/// whole split's figures. Every rank must hold at least one sample.
pub(crate) fn evaluate_across(
    model: &Model,
    loss: &dyn Loss,
    space: &LabelSpace,
    batches: impl Iterator<Item = ldl_data::Result<Batch>>,
    device: &candle_core::Device,
    collective: &dyn Collective,
) -> Result<Evaluation> {
    let (mut totals, mut metrics) = accumulate(model, loss, space, batches, device)?;
    if collective.world_size() > 1 {
        let mut sums = totals.sums();
        let losses = sums.len();
        sums.extend(metrics.sums());
        collective.all_reduce_sum_f64(&mut sums)?;
        totals.set_sums(&sums[..losses]);
        metrics.set_sums(&sums[losses..])?;
    }
    report(&totals, &metrics)
}

/// The loss sums and metric accumulators of the model over batches.
fn accumulate(
    model: &Model,
    loss: &dyn Loss,
    space: &LabelSpace,
    batches: impl Iterator<Item = ldl_data::Result<Batch>>,
    device: &candle_core::Device,
) -> Result<(Accumulator, Metrics)> {
    let mut totals = Accumulator::default();
    let mut metrics = Metrics::new(space);
    let inference = model.inference()?;
    let heads = space.heads();
    for batch in batches {
        let batch = on_device(batch?, device)?;
        let logits: Vec<Tensor> = inference.forward(&batch.inputs)?;
        let out = loss.compute(space, &logits, &batch.targets)?;
        let samples = batch.indices.len();
        let values = out.part_values()?;
        if heads.len() > 1 {
            // Each head's weighted share, from the values already on the host.
            let mut shares: Vec<(String, f64)> =
                heads.iter().map(|h| (h.name().to_string(), 0.0)).collect();
            for (part, (_, value)) in out.parts.iter().zip(&values) {
                if let Some((_, share)) = shares.get_mut(part.head) {
                    *share += part.weight * value;
                }
            }
            totals.add_heads(&shares, samples);
        }
        totals.add(out.total_value()?, &values, samples);
        metrics.update(&logits, &batch.targets)?;
    }
    Ok((totals, metrics))
}

fn report(totals: &Accumulator, metrics: &Metrics) -> Result<Evaluation> {
    if totals.samples == 0 {
        return Err(Error::Usage(
            "nothing was evaluated: every sample of the split was left out (see the skipped \
             samples; with on_bad_sample = \"skip\" a split can end up empty)"
                .into(),
        ));
    }
    Ok(Evaluation {
        loss: totals.summary(),
        metrics: metrics.report(),
    })
}

pub(crate) fn on_device(batch: Batch, device: &candle_core::Device) -> Result<Batch> {
    let move_to = |t: &Tensor| t.to_device(device);
    Ok(Batch {
        inputs: move_to(&batch.inputs)?,
        targets: batch
            .targets
            .iter()
            .map(|t| {
                Ok(AxisTargets {
                    pmf: move_to(&t.pmf)?,
                    value: move_to(&t.value)?,
                    std: move_to(&t.std)?,
                })
            })
            .collect::<Result<_>>()?,
        indices: batch.indices,
        rows: batch.rows,
        network_inputs: batch
            .network_inputs
            .iter()
            .map(move_to)
            .collect::<std::result::Result<_, _>>()?,
    })
}

/// Sample-weighted means of batch losses.
#[derive(Default)]
pub(crate) struct Accumulator {
    samples: usize,
    total: f64,
    parts: BTreeMap<String, f64>,
    /// Each head's share of the total, when evaluating (see [`LossSummary::heads`]).
    heads: BTreeMap<String, f64>,
}

impl Accumulator {
    pub(crate) fn add(&mut self, total: f64, parts: &[(String, f64)], samples: usize) {
        let weight = samples as f64;
        self.samples += samples;
        self.total += total * weight;
        for (key, value) in parts {
            *self.parts.entry(key.clone()).or_default() += value * weight;
        }
    }

    /// Adds `samples` samples' mean head shares ([`Accumulator::add`] counts the samples).
    pub(crate) fn add_heads(&mut self, heads: &[(String, f64)], samples: usize) {
        let weight = samples as f64;
        for (key, value) in heads {
            *self.heads.entry(key.clone()).or_default() += value * weight;
        }
    }

    /// The sample count, the total's sum, the parts' sums and the heads' (each in key
    /// order), as numbers.
    fn sums(&self) -> Vec<f64> {
        let mut sums = vec![self.samples as f64, self.total];
        sums.extend(self.parts.values());
        sums.extend(self.heads.values());
        sums
    }

    /// Replaces the sums with `sums`, laid out as [`Accumulator::sums`] lays them out.
    fn set_sums(&mut self, sums: &[f64]) {
        self.samples = sums[0].round().max(0.0) as usize;
        self.total = sums[1];
        let values = self.parts.values_mut().chain(self.heads.values_mut());
        for (value, sum) in values.zip(&sums[2..]) {
            *value = *sum;
        }
    }

    pub(crate) fn mean_total(&self) -> f64 {
        self.total / self.samples.max(1) as f64
    }

    pub(crate) fn summary(&self) -> LossSummary {
        let n = self.samples.max(1) as f64;
        LossSummary {
            total: self.total / n,
            parts: self.parts.iter().map(|(k, v)| (k.clone(), v / n)).collect(),
            heads: self.heads.iter().map(|(k, v)| (k.clone(), v / n)).collect(),
        }
    }
}
