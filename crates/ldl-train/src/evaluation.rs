//! Evaluating a model on a split: its loss parts (sample-weighted means of batch losses)
//! and every metric.

use std::collections::BTreeMap;

use candle_core::Tensor;
use ldl_core::loss::Loss;
use ldl_core::metrics::Metrics;
use ldl_core::{AxisTargets, LabelSpace};
use ldl_data::Batch;
use ldl_models::Model;

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
    let mut totals = Accumulator::default();
    let mut metrics = Metrics::new(space);
    for batch in batches {
        let batch = on_device(batch?, device)?;
        let logits: Vec<Tensor> = model.forward_t(&batch.inputs, false)?;
        let out = loss.compute(space, &logits, &batch.targets)?;
        totals.add(out.total_value()?, &out.part_values()?, batch.indices.len());
        metrics.update(&logits, &batch.targets)?;
    }
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

/// Moves a batch to the training device (a no-op where it already is).
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
    })
}

/// Sample-weighted means of batch losses.
#[derive(Default)]
pub(crate) struct Accumulator {
    samples: usize,
    total: f64,
    parts: BTreeMap<String, f64>,
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

    pub(crate) fn mean_total(&self) -> f64 {
        self.total / self.samples.max(1) as f64
    }

    pub(crate) fn summary(&self) -> LossSummary {
        let n = self.samples.max(1) as f64;
        LossSummary {
            total: self.total / n,
            parts: self.parts.iter().map(|(k, v)| (k.clone(), v / n)).collect(),
        }
    }
}
