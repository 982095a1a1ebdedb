//! The `[loss]` section of a config and the loss it builds.

use ldl_core::loss::{DldlV2, FullKl, Kl, Loss, MeanVariance, TargetMoments};
use ldl_core::LabelSpace;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::suggest::suggestion;

/// `[loss]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// `full-kl` (default), `kl`, `dldl-v2`, `mean-variance`.
    #[serde(default = "default_loss")]
    pub kind: String,
    /// DLDL-v2's λ for every axis (default 1).
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// DLDL-v2's λ per axis, overriding `lambda`.
    #[serde(default)]
    pub axis_lambda: BTreeMap<String, f64>,
    /// Mean-variance λ1 (default 0.2).
    #[serde(default = "default_lambda_mean")]
    pub lambda_mean: f64,
    /// Mean-variance λ2 (default 0.05).
    #[serde(default = "default_lambda_variance")]
    pub lambda_variance: f64,
    /// `pmf` (default) or `nominal`: where the target moments come from.
    #[serde(default = "default_moments")]
    pub target_moments: String,
}

fn default_lambda() -> f64 {
    1.0
}

fn default_loss() -> String {
    "full-kl".into()
}

fn default_lambda_mean() -> f64 {
    0.2
}

fn default_lambda_variance() -> f64 {
    0.05
}

fn default_moments() -> String {
    "pmf".into()
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            kind: default_loss(),
            lambda: 1.0,
            axis_lambda: BTreeMap::new(),
            lambda_mean: default_lambda_mean(),
            lambda_variance: default_lambda_variance(),
            target_moments: default_moments(),
        }
    }
}

/// Builds the loss that `[loss]` describes, for `space` (a per-axis λ must name one of
/// its axes).
pub fn build_loss(config: &LossConfig, space: &LabelSpace) -> Result<Box<dyn Loss>> {
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
