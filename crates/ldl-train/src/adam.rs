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
    /// Whether CPU and CUDA variables take the fused in-place update (always, but in the
    /// tests that compare it with the tensor ops).
    fused: bool,
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
            fused: true,
        })
    }

    /// Adam over a model's trainable variables ([`ldl_models::Model::trainable_vars`]),
    /// for a loop of one's own.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use ldl_core::{loss::{FullKl, Loss}, Axis, Label, LabelSpace};
    /// use ldl_models::{BackboneConfig, Model};
    /// use ldl_train::Adam;
    /// let space = LabelSpace::new(vec![Axis::linear("y", 0.0, 10.0, 1.0)?])?;
    /// let model = Model::build(&BackboneConfig::mlp(2, [8]), &space, 1, &Device::Cpu)?;
    /// let mut adam = Adam::for_model(&model, 1e-3, 0.0)?;
    /// let x = Tensor::new(&[[0.5f32, 1.0], [0.1, 0.2]], &Device::Cpu)?;
    /// let labels = vec![vec![Label::value(7.0)], vec![Label::value(2.0)]];
    /// let targets = space.targets(&labels, candle_core::DType::F32, &Device::Cpu)?;
    /// let loss = FullKl::new().compute(&space, &model.forward_t(&x, true)?, &targets)?;
    /// adam.step(&loss.total.backward()?)?;
    /// assert_eq!(adam.steps, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_model(model: &ldl_models::Model, lr: f64, weight_decay: f64) -> Result<Adam> {
        let vars = model.trainable_vars().into_iter().map(|(_, var)| var);
        Adam::new(vars.collect(), lr, weight_decay)
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
        let cannot = |why: &dyn std::fmt::Display| {
            crate::Error::Config(format!("{}: cannot resume: {why}", path.display()))
        };
        let bytes = ldl_core::files::read_bounded(path, ldl_core::files::FileKind::Checkpoint)
            .map_err(|e| cannot(&e.problem))?;
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| cannot(&e))?;
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
    /// are left alone. On the CPU (f32/f64) the variables and moments are updated in
    /// place by fused passes (see `adam_cpu`), with the same numbers as the tensor ops
    /// used elsewhere.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2 = 1.0 - self.beta2.powi(t);
        let constants = crate::adam_cpu::StepConstants {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            lr: self.lr,
            weight_decay: self.weight_decay,
            bias1,
            bias2,
        };
        for (i, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let (first, second) = (&self.first_moments[i], &self.second_moments[i]);
            let tensors = [var.as_tensor(), grad, first, second];
            if self.fused && crate::adam_cpu::applies(&tensors) {
                crate::adam_cpu::step(var.as_tensor(), grad, first, second, constants)?;
                continue;
            }
            #[cfg(feature = "cuda")]
            if self.fused && crate::adam_cuda::applies(&tensors) {
                crate::adam_cuda::step(var.as_tensor(), grad, first, second, constants)?;
                continue;
            }
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use rand::{Rng, SeedableRng};

    use super::Adam;

    /// Five steps of the fused update and of the tensor ops, from the same start and
    /// gradients: parameters and moments agree bit for bit, f32 and f64, with and without
    /// weight decay.
    #[test]
    fn the_fused_update_equals_the_tensor_ops_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for dtype in [DType::F32, DType::F64] {
            for weight_decay in [0.0, 0.01] {
                let shapes: [&[usize]; 3] = [&[3, 5], &[17], &[70_000]];
                let start: Vec<Tensor> = shapes
                    .iter()
                    .map(|shape| {
                        let n = shape.iter().product::<usize>();
                        let values: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                        Tensor::from_vec(values, *shape, &Device::Cpu)
                            .and_then(|t| t.to_dtype(dtype))
                            .unwrap()
                    })
                    .collect();
                let run = |fused: bool| {
                    let vars: Vec<Var> =
                        start.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
                    let mut adam = Adam::new(vars.clone(), 0.01, weight_decay).unwrap();
                    adam.fused = fused;
                    for step in 0..5 {
                        // A loss whose gradient changes with the parameters: Σ θ³·(step + 1).
                        let loss = vars
                            .iter()
                            .map(|v| v.as_tensor().powf(3.0).unwrap().sum_all().unwrap())
                            .reduce(|a, b| (a + b).unwrap())
                            .unwrap();
                        let grads = (loss * (step + 1) as f64).unwrap().backward().unwrap();
                        adam.step(&grads).unwrap();
                    }
                    let bits = |t: &Tensor| {
                        t.to_dtype(DType::F64)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f64>()
                            .unwrap()
                    };
                    let mut all: Vec<Vec<f64>> = vars.iter().map(|v| bits(v.as_tensor())).collect();
                    all.extend(adam.first_moments.iter().map(bits));
                    all.extend(adam.second_moments.iter().map(bits));
                    all
                };
                let (fused, composed) = (run(true), run(false));
                assert_eq!(fused, composed, "{dtype:?}, weight decay {weight_decay}");
                // The update moved the parameters.
                let before: Vec<f64> = start[0]
                    .to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_ne!(fused[0], before);
            }
        }
    }
}
