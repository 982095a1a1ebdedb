//! Where a fresh model's heads start (`model.head_init`, `Trainer::head_init`): one entry
//! for `ldl train` and the library's `Trainer::fit`, over the training-mean biases
//! (`head_prior.rs`) and the least-squares start of the linear paths (`path_start.rs`).

use ldl_data::Sample;
use ldl_models::Model;

use crate::config::HeadInit;
use crate::error::Result;

/// Starts a fresh model's heads as `init` says, from the training samples: `uniform`
/// leaves them as built; `training-mean` sets the biases; `least-squares` sets the biases,
/// the linear paths and zeroes the heads' weight matrices (`path_start.rs`; the
/// `training-mean` start for inputs wider than its limit). `least-squares` needs an MLP
/// with a linear path: the config check (`model.head_init`) and `Trainer::fit`'s
/// (`Trainer::head_init`) refuse it otherwise, before any work.
pub(crate) fn start_heads(model: &Model, init: HeadInit, train: &[Sample]) -> Result<()> {
    if init == HeadInit::Uniform {
        return Ok(());
    }
    let space = model.label_space();
    let mut log_priors = crate::head_prior::training_mean_log_priors(space, train)?;
    let inputs = least_squares_inputs(model);
    if let (HeadInit::LeastSquares, Some(inputs)) = (init, inputs) {
        if let Some(start) = crate::path_start::least_squares_start(space, train, inputs)? {
            for (log_prior, normal) in log_priors.iter_mut().zip(start.log_priors) {
                if let Some(normal) = normal {
                    *log_prior = normal;
                }
            }
            model.set_linear_path_weights(&start.weights)?;
            model.zero_head_weights()?;
        }
    }
    model.set_head_biases(&crate::head_prior::head_biases(space, &log_priors))?;
    Ok(())
}

/// The inputs of a model whose linear paths a least-squares start can set: an MLP with
/// a path.
pub(crate) fn least_squares_inputs(model: &Model) -> Option<usize> {
    match model.config() {
        ldl_models::BackboneConfig::Mlp(mlp) if mlp.linear_path => Some(mlp.inputs),
        _ => None,
    }
}
