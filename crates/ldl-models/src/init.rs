//! Seeded weight initialisation.
//!
//! candle draws its default initial weights from the device's RNG, which cannot be
//! seeded on the CPU. After a model is built, [`seeded_init`] overwrites every variable
//! from a ChaCha RNG seeded by the run's seed, visiting variables in name order, so the
//! same seed gives bit-identical weights on every run.
//!
//! The rule follows PyTorch's defaults, read off each variable's name (the layer builders
//! of this crate name them accordingly):
//!
//! | variable | initial value |
//! |---|---|
//! | `*.bn.weight`, `*.bn.running_var` | 1 |
//! | `*.bn.bias`, `*.bn.running_mean` | 0 |
//! | any other `*.weight` (conv, linear) | `U(−1/√fan_in, 1/√fan_in)` (PyTorch's `kaiming_uniform_(a = √5)`) |
//! | any other `*.bias` | `U(−1/√fan_in, 1/√fan_in)`, `fan_in` of its layer's weight |

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Overwrites every variable of `vars` with seeded initial values (see the module docs).
pub fn seeded_init(vars: &VarMap, seed: u64) -> Result<()> {
    let data = vars.data().lock().map_err(|_| {
        Error::Config("the variable map's lock is poisoned by an earlier panic".into())
    })?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let values = initial_values(name, var, &data, &mut rng)?;
        let tensor = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&tensor)?;
    }
    Ok(())
}

fn initial_values(
    name: &str,
    var: &Var,
    all: &std::collections::HashMap<String, Var>,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>> {
    let count = var.elem_count();
    // BatchNorm layers are named `bn` and only the backbone has them. A head, or a
    // per-axis MLP trunk (`backbone.<axis>.layers.…`), of an axis named `bn` is linear.
    let mut segments = name.rsplit('.');
    let leaf = segments.next().unwrap_or(name);
    let local = crate::ensemble::network_local_name(name);
    let is_norm = local.starts_with("backbone.") && segments.next() == Some("bn");
    let constant = |value: f32| Ok(vec![value; count]);
    // A linear path starts at zero, so that the untrained model predicts what its heads
    // predict (see `linear_path.rs`).
    if crate::linear_path::is_weight_name(local) {
        return constant(0.0);
    }
    match (is_norm, leaf) {
        (true, "weight") | (_, "running_var") => constant(1.0),
        (true, "bias") | (_, "running_mean") => constant(0.0),
        (false, "weight") => Ok(uniform(rng, count, fan_in(var.dims()))),
        (false, "bias") => {
            let weight_name = format!("{}.weight", &name[..name.len() - "bias".len() - 1]);
            let fan_in = all
                .get(&weight_name)
                .map(|w| fan_in(w.dims()))
                .unwrap_or(count);
            Ok(uniform(rng, count, fan_in))
        }
        _ => Err(Error::Config(format!(
            "no initialisation rule for variable `{name}`: names must end in weight, bias, \
             running_mean or running_var"
        ))),
    }
}

/// Inputs per output unit: all dimensions but the first (out channels / out features).
fn fan_in(dims: &[usize]) -> usize {
    dims.iter().skip(1).product::<usize>().max(1)
}

fn uniform(rng: &mut ChaCha8Rng, count: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    (0..count).map(|_| rng.gen_range(-bound..bound)).collect()
}
