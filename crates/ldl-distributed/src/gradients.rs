//! One training step across ranks: the batch's loss totals and whether any rank found a
//! non-finite value (one small f64 all-reduce), then the gradients averaged over the
//! global batch (one fused f32 all-reduce of every gradient, not one call per tensor).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};
use crate::Collective;

/// What one rank's shard of a batch gave.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalStep {
    /// Samples in this rank's shard (0 when the global batch had too few for it).
    pub samples: usize,
    /// The shard's mean total loss (ignored when `samples` is 0).
    pub total: f64,
    /// The shard's mean loss parts, in the same order on every rank.
    pub parts: Vec<f64>,
    /// Whether the shard's loss or gradients were not finite.
    pub non_finite: bool,
}

/// The global batch's figures, the same on every rank.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTotals {
    /// Samples in the global batch.
    pub samples: usize,
    /// Its mean total loss, each rank's weighted by its samples.
    pub total: f64,
    /// Its mean loss parts.
    pub parts: Vec<f64>,
    /// How many ranks found a non-finite loss or gradient: any, and every rank skips the
    /// step (as one process would skip the whole batch).
    pub non_finite_ranks: usize,
}

/// Sums the ranks' sample counts and sample-weighted losses.
pub fn reduce_step(collective: &dyn Collective, local: &LocalStep) -> Result<StepTotals> {
    if collective.world_size() == 1 {
        // One process: its figures as they are (a product and quotient would round them).
        return Ok(StepTotals {
            samples: local.samples,
            total: local.total,
            parts: local.parts.clone(),
            non_finite_ranks: usize::from(local.non_finite),
        });
    }
    let weight = local.samples as f64;
    let finite = !local.non_finite && local.samples > 0;
    let mut buffer = Vec::with_capacity(local.parts.len() + 3);
    buffer.push(weight);
    buffer.push(if finite { local.total * weight } else { 0.0 });
    buffer.extend(
        local
            .parts
            .iter()
            .map(|p| if finite { p * weight } else { 0.0 }),
    );
    buffer.push(if local.non_finite { 1.0 } else { 0.0 });
    collective.all_reduce_sum_f64(&mut buffer)?;
    let samples = buffer[0];
    let per_sample = |sum: f64| if samples > 0.0 { sum / samples } else { 0.0 };
    let parts_end = buffer.len() - 1;
    Ok(StepTotals {
        samples: samples.round() as usize,
        total: per_sample(buffer[1]),
        parts: buffer[2..parts_end]
            .iter()
            .map(|p| per_sample(*p))
            .collect(),
        non_finite_ranks: buffer[parts_end].round() as usize,
    })
}

/// Replaces the gradient of each of `vars` in `grads` with its average over the global
/// batch: `Σ_r n_r·g_r / Σ_r n_r`, where rank `r` trained on `n_r` samples
/// (`local_samples` here, `global_samples` in all, from [`reduce_step`]). A variable
/// without a gradient on this rank (an empty shard) counts as zeros. The gradients travel
/// as one f32 buffer in the order of `vars`, which must be the same on every rank.
pub fn average_gradients(
    collective: &dyn Collective,
    vars: &[Var],
    grads: &mut GradStore,
    local_samples: usize,
    global_samples: usize,
) -> Result<()> {
    let engine_device = collective.device();
    let on_device = match (&engine_device, vars.first()) {
        (Some(engine), Some(var)) => var.device().same_device(engine),
        _ => false,
    };
    if collective.world_size() == 1 && !on_device {
        return Ok(());
    }
    if global_samples == 0 {
        return Err(Error::Mismatch {
            rank: collective.rank(),
            message: "a step with no samples on any rank".into(),
        });
    }
    if on_device {
        return average_on_device(collective, vars, grads, local_samples, global_samples);
    }
    let total: usize = vars.iter().map(|v| v.elem_count()).sum();
    let mut buffer = Vec::with_capacity(total);
    let weight = local_samples as f64;
    for var in vars {
        match grads.get(var.as_tensor()) {
            Some(grad) if local_samples > 0 => {
                let values = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                buffer.extend(values.iter().map(|g| (*g as f64 * weight) as f32));
            }
            _ => buffer.extend(std::iter::repeat_n(0.0f32, var.elem_count())),
        }
    }
    collective.all_reduce_sum(&mut buffer)?;
    let scale = 1.0 / global_samples as f64;
    let mut offset = 0;
    for var in vars {
        let count = var.elem_count();
        let values: Vec<f32> = buffer[offset..offset + count]
            .iter()
            .map(|g| (*g as f64 * scale) as f32)
            .collect();
        offset += count;
        let tensor = var.as_tensor();
        let averaged =
            Tensor::from_vec(values, tensor.shape(), tensor.device())?.to_dtype(tensor.dtype())?;
        grads.insert(tensor, averaged);
    }
    Ok(())
}

/// [`average_gradients`] for an engine that sums tensors on their device (NCCL), with
/// `global_samples` > 0: each
/// gradient scaled by this rank's share of the global batch, all of them in one f32
/// buffer on the device, summed over the ranks there. With one rank the share is 1 and the
/// sum a copy, so the gradients stay as they were, bit for bit.
fn average_on_device(
    collective: &dyn Collective,
    vars: &[Var],
    grads: &mut GradStore,
    local_samples: usize,
    global_samples: usize,
) -> Result<()> {
    let share = local_samples as f64 / global_samples as f64;
    let mut pieces = Vec::with_capacity(vars.len());
    for var in vars {
        pieces.push(match grads.get(var.as_tensor()) {
            Some(grad) if local_samples > 0 => (grad.to_dtype(DType::F32)?.flatten_all()? * share)?,
            _ => Tensor::zeros(var.elem_count(), DType::F32, var.device())?,
        });
    }
    let summed = collective.all_reduce_sum_tensor(&Tensor::cat(&pieces, 0)?)?;
    let mut offset = 0;
    for var in vars {
        let tensor = var.as_tensor();
        let count = tensor.elem_count();
        let averaged = summed
            .narrow(0, offset, count)?
            .reshape(tensor.shape())?
            .to_dtype(tensor.dtype())?;
        grads.insert(tensor, averaged);
        offset += count;
    }
    Ok(())
}

/// Sets every one of `vars` on every rank to rank 0's values, as one fused broadcast (the
/// start of data-parallel training: whatever each rank initialised, all start alike).
pub fn broadcast_variables(collective: &dyn Collective, vars: &[Var]) -> Result<()> {
    if collective.world_size() == 1 {
        return Ok(());
    }
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    for (var, shared) in vars.iter().zip(broadcast_tensors(collective, &tensors)?) {
        var.set(&shared)?;
    }
    Ok(())
}

/// Rank 0's values of `tensors` on every rank, as new tensors of the same shapes, dtypes
/// and devices, in one fused broadcast (Adam's moments when a run resumes).
pub fn broadcast_tensors(collective: &dyn Collective, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
    if collective.world_size() == 1 {
        return Ok(tensors.to_vec());
    }
    let mut buffer = Vec::new();
    for tensor in tensors {
        buffer.extend(
            tensor
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    collective.broadcast(&mut buffer, 0)?;
    let mut offset = 0;
    let mut shared = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        let count = tensor.elem_count();
        let values = &buffer[offset..offset + count];
        shared.push(
            Tensor::from_slice(values, tensor.shape(), tensor.device())?
                .to_dtype(tensor.dtype())?,
        );
        offset += count;
    }
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SingleProcess;

    /// An engine that sums tensors on their device, as NCCL does, here on the CPU: the
    /// other ranks' buffer is given.
    struct OnDevice {
        world: usize,
        others: Vec<f32>,
    }

    impl Collective for OnDevice {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            self.world
        }
        fn all_reduce_sum(&self, _: &mut [f32]) -> Result<()> {
            unreachable!("the gradients travel as a tensor")
        }
        fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
            Ok(())
        }
        fn broadcast(&self, _: &mut [f32], _: usize) -> Result<()> {
            Ok(())
        }
        fn broadcast_bytes(&self, _: &mut Vec<u8>, _: usize) -> Result<()> {
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn device(&self) -> Option<candle_core::Device> {
            Some(candle_core::Device::Cpu)
        }
        fn all_reduce_sum_tensor(&self, tensor: &Tensor) -> Result<Tensor> {
            if self.others.is_empty() {
                return Ok(tensor.clone());
            }
            let others = Tensor::from_slice(&self.others, tensor.shape(), tensor.device())?;
            Ok((tensor + others)?)
        }
    }

    /// Two variables, `a` (2×2) with a gradient and `b` (3) without one on this rank.
    fn two_vars() -> (Vec<Var>, GradStore) {
        let device = candle_core::Device::Cpu;
        let a = Var::from_slice(&[1.0f32, 2.0, 3.0, 4.0], (2, 2), &device).unwrap();
        let b = Var::from_slice(&[0.0f32; 3], 3, &device).unwrap();
        let loss = (a.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.3).unwrap();
        let grads = loss.backward().unwrap();
        (vec![a, b], grads)
    }

    #[test]
    fn gradients_summed_on_the_device_are_averaged_by_share() {
        // One rank through the device path: the gradients stay as they were, bit for bit.
        let (vars, mut grads) = two_vars();
        let before = grads
            .get(vars[0].as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap();
        let alone = OnDevice {
            world: 1,
            others: Vec::new(),
        };
        average_gradients(&alone, &vars, &mut grads, 5, 5).unwrap();
        let after = grads
            .get(vars[0].as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap();
        assert_eq!(
            before.to_vec1::<f32>().unwrap(),
            after.to_vec1::<f32>().unwrap()
        );
        // This rank: 1 sample of 4, gradient 0.6·a = [0.6, 1.2, 1.8, 2.4]; the other rank
        // sent its 3 samples' share already scaled: (3/4)·[1, 1, 1, 1, 2, 2, 2].
        let (vars, mut grads) = two_vars();
        let pair = OnDevice {
            world: 2,
            others: vec![0.75, 0.75, 0.75, 0.75, 1.5, 1.5, 1.5],
        };
        average_gradients(&pair, &vars, &mut grads, 1, 4).unwrap();
        let values = |i: usize| -> Vec<f32> {
            let grad = grads.get(vars[i].as_tensor()).unwrap();
            assert_eq!(grad.shape(), vars[i].shape());
            grad.flatten_all().unwrap().to_vec1().unwrap()
        };
        let expected_a = [0.6f32, 1.2, 1.8, 2.4].map(|g| g / 4.0 + 0.75);
        for (got, want) in values(0).iter().zip(expected_a) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert_eq!(values(1), vec![1.5f32; 3]);
    }

    #[test]
    fn one_process_keeps_its_gradients_and_its_totals() {
        let local = LocalStep {
            samples: 4,
            total: 2.5,
            parts: vec![1.0, 1.5],
            non_finite: false,
        };
        let totals = reduce_step(&SingleProcess, &local).unwrap();
        assert_eq!(totals.samples, 4);
        assert_eq!((totals.total, totals.parts.clone()), (2.5, vec![1.0, 1.5]));
        assert_eq!(totals.non_finite_ranks, 0);
    }
}
