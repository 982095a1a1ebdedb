//! `[optim]`: Adam with a step schedule, as DLDL-v2 trains.

use serde::{Deserialize, Serialize};

/// `[optim]`. Every key has a default ([`OptimConfig::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// L2 weight decay added to the gradient, as PyTorch's Adam (default 0).
    pub weight_decay: f64,
    /// Batch size (default 32).
    pub batch_size: usize,
    /// Epochs (default 60).
    pub epochs: usize,
    /// Multiply the learning rate by `lr_gamma` every this many epochs (default 30).
    pub lr_step_epochs: usize,
    /// The factor (default 0.1).
    pub lr_gamma: f64,
    /// What a NaN or infinite loss or gradient does: stop the run (default) or skip the
    /// batch and count it.
    pub on_nonfinite: OnNonFinite,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            batch_size: 32,
            epochs: 60,
            lr_step_epochs: 30,
            lr_gamma: 0.1,
            on_nonfinite: OnNonFinite::Stop,
        }
    }
}

/// `optim.on_nonfinite`: what a batch with a NaN or infinite loss or gradient does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNonFinite {
    /// Stop the run with a message naming the epoch, the batch, and the loss part or the
    /// variable; the last committed epoch stays saved (the default).
    #[default]
    Stop,
    /// Leave the weights, the optimiser and the BatchNorm statistics as they were before
    /// the batch, count it (`skipped_batches` in `metrics.jsonl` and `summary.json`) and
    /// go on. An epoch whose every batch is skipped still stops the run.
    Skip,
}

impl OptimConfig {
    /// Checks the ranges serde cannot, naming the key.
    pub(crate) fn check(&self) -> crate::Result<()> {
        let fail = |key: &str, message: String| {
            Err(crate::Error::Config(format!("`optim.{key}`: {message}")))
        };
        let positive = |value: f64| value.is_finite() && value > 0.0;
        if !positive(self.lr) {
            return fail("lr", format!("must be finite and > 0, got {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            let got = self.weight_decay;
            return fail("weight_decay", format!("must be finite and ≥ 0, got {got}"));
        }
        for (key, value) in [
            ("batch_size", self.batch_size),
            ("epochs", self.epochs),
            ("lr_step_epochs", self.lr_step_epochs),
        ] {
            if value == 0 {
                return fail(key, "must be ≥ 1".into());
            }
        }
        if !positive(self.lr_gamma) {
            let got = self.lr_gamma;
            return fail("lr_gamma", format!("must be finite and > 0, got {got}"));
        }
        Ok(())
    }
}
