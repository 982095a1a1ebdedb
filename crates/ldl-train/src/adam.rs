//! Adam with PyTorch's semantics (L2 weight decay added to the gradient), whose moment
//! buffers are public so that they can be checkpointed.

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::Result;

/// The Adam optimiser (Kingma and Ba, 2015) as `torch.optim.Adam`:
/// `g ← ∇ + wd·θ; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
/// θ ← θ − lr · (m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + ε)`.
pub struct Adam {
    vars: Vec<Var>,
    /// First moments, one per variable.
    pub first_moments: Vec<Tensor>,
    /// Second moments, one per variable.
    pub second_moments: Vec<Tensor>,
    /// Steps taken.
    pub steps: u64,
    /// The learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    /// Adam over `vars` with β1 = 0.9, β2 = 0.999, ε = 1e-8.
    pub fn new(vars: Vec<Var>, lr: f64, weight_decay: f64) -> Result<Adam> {
        let zeros = |v: &Var| v.zeros_like();
        Ok(Adam {
            first_moments: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            second_moments: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            vars,
            steps: 0,
            lr,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        })
    }

    /// Saves the moments as `first.NAME` / `second.NAME` tensors (`names` in variable
    /// order), atomically.
    pub fn save_moments(&self, names: &[String], path: &std::path::Path) -> Result<()> {
        let mut tensors = std::collections::HashMap::new();
        for (i, name) in names.iter().enumerate() {
            tensors.insert(format!("first.{name}"), self.first_moments[i].clone());
            tensors.insert(format!("second.{name}"), self.second_moments[i].clone());
        }
        Ok(ldl_models::durable::save_tensors(path, &tensors)?)
    }

    /// Loads moments saved by [`Adam::save_moments`], checking names and shapes.
    pub fn load_moments(
        &mut self,
        names: &[String],
        path: &std::path::Path,
        device: &candle_core::Device,
    ) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| crate::Error::Config(format!("{}: cannot resume: {e}", path.display())))?;
        for (i, name) in names.iter().enumerate() {
            for (kind, slot) in [
                ("first", &mut self.first_moments[i]),
                ("second", &mut self.second_moments[i]),
            ] {
                let key = format!("{kind}.{name}");
                let tensor = tensors.get(&key).ok_or_else(|| {
                    crate::Error::Config(format!(
                        "{}: `{key}` is missing; cannot resume",
                        path.display()
                    ))
                })?;
                if tensor.dims() != slot.dims() {
                    return Err(crate::Error::Config(format!(
                        "{}: `{key}` has shape {:?}, the model {:?}",
                        path.display(),
                        tensor.dims(),
                        slot.dims()
                    )));
                }
                *slot = tensor.clone();
            }
        }
        Ok(())
    }

    /// One update from the gradients of a backward pass. Variables without a gradient
    /// are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2 = 1.0 - self.beta2.powi(t);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let grad = if self.weight_decay > 0.0 {
                (grad + var.as_tensor().affine(self.weight_decay, 0.0)?)?
            } else {
                grad.clone()
            };
            let m = ((&self.first_moments[i] * self.beta1)? + (&grad * (1.0 - self.beta1))?)?;
            let v =
                ((&self.second_moments[i] * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bias1)? / ((&v / bias2)?.sqrt()? + self.eps)?)?;
            var.set(&(var.as_tensor() - (update * self.lr)?)?)?;
            self.first_moments[i] = m;
            self.second_moments[i] = v;
        }
        Ok(())
    }
}
