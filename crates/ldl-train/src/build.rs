//! Turning config sections into losses.

use ldl_core::loss::{DldlV2, FullKl, Kl, Loss, MeanVariance, TargetMoments};
use ldl_core::LabelSpace;

use crate::config::{suggestion, LossConfig};
use crate::error::{Error, Result};

/// The loss of `[loss]`.
pub fn loss(config: &LossConfig, space: &LabelSpace) -> Result<Box<dyn Loss>> {
    let moments = match config.target_moments.as_str() {
        "pmf" => TargetMoments::Pmf,
        "nominal" => TargetMoments::Nominal,
        other => {
            return Err(Error::Config(format!(
                "`loss.target_moments`: `{other}` is neither `pmf` nor `nominal`"
            )))
        }
    };
    let bad = |key: &str, e: ldl_core::Error| Error::Config(format!("`loss.{key}`: {e}"));
    Ok(match config.kind.as_str() {
        "full-kl" => Box::new(FullKl::default().with_target_moments(moments)),
        "kl" => Box::new(Kl),
        "dldl-v2" => {
            let mut loss = DldlV2::new(config.lambda)
                .map_err(|e| bad("lambda", e))?
                .with_target_moments(moments);
            for (axis, lambda) in &config.axis_lambda {
                if space.axis(axis).is_none() {
                    return Err(Error::Config(format!(
                        "`loss.axis_lambda.{axis}`: `{axis}` is not an axis of [task]"
                    )));
                }
                loss = loss
                    .with_axis_lambda(axis.clone(), *lambda)
                    .map_err(|e| bad("axis_lambda", e))?;
            }
            Box::new(loss)
        }
        "mean-variance" => Box::new(
            MeanVariance::new(config.lambda_mean, config.lambda_variance)
                .map_err(|e| bad("lambda_mean", e))?,
        ),
        other => {
            let kinds = ["full-kl", "kl", "dldl-v2", "mean-variance"];
            return Err(Error::Config(format!(
                "`loss.kind`: unknown loss `{other}`{}; use one of {}",
                suggestion(other, &kinds),
                kinds.join(", ")
            )));
        }
    })
}
