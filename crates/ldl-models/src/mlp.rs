//! A multi-layer perceptron backbone for tabular features.

use std::sync::Mutex;

use candle_core::{DType, Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Linear, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sync_batch_norm::SharedSum;
pub use ldl_distributed::BatchRows;

/// The configuration of an [`Mlp`]: `inputs → hidden[0] → … → hidden[n−1]`, each hidden
/// layer linear, then optionally BatchNorm, then ReLU, then optionally dropout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Number of input features.
    pub inputs: usize,
    /// Widths of the hidden layers (may be empty: the heads then see the inputs).
    pub hidden: Vec<usize>,
    /// BatchNorm after each hidden linear layer.
    #[serde(default)]
    pub batch_norm: bool,
    /// Dropout probability after each hidden layer, in `[0, 1)`.
    #[serde(default)]
    pub dropout: f64,
    /// One MLP of these sizes per head of the label space rather than one shared by all
    /// heads (see [`crate::Model`]). Heads that share hidden features compete for them: a
    /// noisy axis trained beside a well-predicted one can cost it accuracy. Checkpoints
    /// written before this field existed share theirs (`false`).
    #[serde(default)]
    pub separate_trunks: bool,
    /// How many networks of these sizes the model trains side by side from different
    /// initial weights, averaging their predicted distributions (1: no ensemble; see
    /// [`crate::ensemble`]). Checkpoints written before this field existed hold one.
    #[serde(default = "one_network", skip_serializing_if = "is_one_network")]
    pub ensemble: usize,
    /// A linear path from the inputs to each head: a term linear in the inputs added to
    /// the logits, which moves the distribution's location (see [`crate::linear_path`]).
    /// Checkpoints written before this field existed have none; a model without one
    /// writes no key, so its header is the one it wrote before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub linear_path: bool,
}

fn one_network() -> usize {
    1
}

/// One network is written as no key, so that a model of one network saves the header it
/// saved before ensembles existed.
fn is_one_network(networks: &usize) -> bool {
    *networks == 1
}

impl MlpConfig {
    /// `inputs` features through hidden layers of the given widths, without BatchNorm or
    /// dropout (add them with [`MlpConfig::with_batch_norm`] and
    /// [`MlpConfig::with_dropout`]).
    ///
    /// ```
    /// use ldl_models::{BackboneConfig, MlpConfig};
    /// let mlp = MlpConfig::new(21, [64, 32]).with_batch_norm().with_dropout(0.1);
    /// assert_eq!(mlp.output_features(), 32);
    /// assert_eq!(BackboneConfig::mlp(21, [64, 32]), MlpConfig::new(21, [64, 32]).into());
    /// ```
    pub fn new(inputs: usize, hidden: impl Into<Vec<usize>>) -> MlpConfig {
        MlpConfig {
            inputs,
            hidden: hidden.into(),
            batch_norm: false,
            dropout: 0.0,
            separate_trunks: false,
            ensemble: 1,
            linear_path: false,
        }
    }

    /// The same with BatchNorm after each hidden linear layer.
    pub fn with_batch_norm(self) -> MlpConfig {
        MlpConfig {
            batch_norm: true,
            ..self
        }
    }

    /// The same with dropout of probability `p` after each hidden layer (checked, with
    /// the rest, when the model is built).
    pub fn with_dropout(self, p: f64) -> MlpConfig {
        MlpConfig { dropout: p, ..self }
    }

    /// The same with one MLP per head of the label space ([`MlpConfig::separate_trunks`]).
    pub fn with_separate_trunks(self) -> MlpConfig {
        MlpConfig {
            separate_trunks: true,
            ..self
        }
    }

    /// The same as an ensemble of `networks` networks ([`MlpConfig::ensemble`]).
    ///
    /// ```
    /// use ldl_models::MlpConfig;
    /// assert_eq!(MlpConfig::new(21, [32]).with_ensemble(5).ensemble, 5);
    /// ```
    pub fn with_ensemble(self, networks: usize) -> MlpConfig {
        MlpConfig {
            ensemble: networks,
            ..self
        }
    }

    /// The same with a linear path from the inputs to each head
    /// ([`MlpConfig::linear_path`]).
    ///
    /// ```
    /// use ldl_models::MlpConfig;
    /// assert!(MlpConfig::new(21, [32]).with_linear_path().linear_path);
    /// ```
    pub fn with_linear_path(self) -> MlpConfig {
        MlpConfig {
            linear_path: true,
            ..self
        }
    }

    /// Width of the features the heads see.
    pub fn output_features(&self) -> usize {
        self.hidden.last().copied().unwrap_or(self.inputs)
    }

    /// How many MLPs a model with `heads` heads builds: one per head with
    /// [`MlpConfig::separate_trunks`] and more than one head, else one.
    pub fn trunk_count(&self, heads: usize) -> usize {
        if self.separate_trunks {
            heads.max(1)
        } else {
            1
        }
    }

    /// Numbers stored by the MLP: weights, biases and four BatchNorm vectors per layer.
    /// Saturates rather than overflows, since it is computed from a checkpoint's header
    /// before the header is checked.
    pub fn stored_elements(&self) -> u128 {
        let mut inputs = self.inputs as u128;
        let mut total = 0u128;
        for width in &self.hidden {
            let width = *width as u128;
            let per_unit = inputs.saturating_add(if self.batch_norm { 5 } else { 1 });
            total = total.saturating_add(width.saturating_mul(per_unit));
            inputs = width;
        }
        total
    }

    pub(crate) fn validate(&self) -> Result<()> {
        const MAX_WIDTH: usize = 1 << 16;
        if !(1..=1 << 20).contains(&self.inputs)
            || self.hidden.iter().any(|w| !(1..=MAX_WIDTH).contains(w))
            || self.hidden.len() > 64
        {
            return Err(Error::Config(format!(
                "MLP inputs must be in 1..=1048576 and at most 64 hidden widths in 1..=65536, got inputs = {} and hidden = {:?}",
                self.inputs, self.hidden
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if !(1..=crate::ensemble::MAX_NETWORKS).contains(&self.ensemble) {
            return Err(Error::Config(format!(
                "an ensemble has 1 to {} networks, got {}",
                crate::ensemble::MAX_NETWORKS,
                self.ensemble
            )));
        }
        Ok(())
    }
}

struct HiddenLayer {
    linear: Linear,
    bn: Option<BatchNorm>,
}

impl HiddenLayer {
    /// BatchNorm (when the layer has it) and ReLU. With `sync` in training, the statistics
    /// are the global batch's, summed over the ranks (SyncBN) by the image networks'
    /// fused BatchNorm + ReLU, which takes the `(N, C)` rows as `(N, C, 1, 1)`.
    fn norm_relu(&self, x: &Tensor, train: bool, sync: Option<&SharedSum>) -> Result<Tensor> {
        let Some(bn) = &self.bn else {
            return Ok(x.relu()?);
        };
        match sync.filter(|_| train) {
            Some(sum) => {
                let (rows, width) = x.dims2()?;
                let planes = x.reshape((rows, width, 1, 1))?;
                let y = crate::layers::synced_batch_norm_relu(bn, &planes, sum)?;
                Ok(y.reshape((rows, width))?)
            }
            None => Ok(bn.forward_t(x, train)?.relu()?),
        }
    }
}

impl HiddenLayer {
    /// The linear layer, its product computed in `compute` (the weight cast to it, the
    /// result back in the dtype of `x`: see [`crate::Precision`]).
    fn forward(&self, x: &Tensor, compute: DType) -> Result<Tensor> {
        if x.dtype() == compute {
            return Ok(self.linear.forward(x)?);
        }
        let weight = self.linear.weight().to_dtype(compute)?;
        let mut y = x
            .to_dtype(compute)?
            .matmul(&weight.t()?)?
            .to_dtype(x.dtype())?;
        if let Some(bias) = self.linear.bias() {
            y = y.broadcast_add(bias)?;
        }
        Ok(y)
    }
}

/// A multi-layer perceptron: features `(N, inputs)` to `(N, output_features)`.
///
/// Dropout masks come from a ChaCha RNG seeded at construction, so training is
/// reproducible (candle's own dropout draws from the unseedable device RNG).
pub struct Mlp {
    config: MlpConfig,
    layers: Vec<HiddenLayer>,
    dropout_rng: Mutex<ChaCha8Rng>,
    /// The dtype of the linear layers' products (f32 unless set by the model).
    compute_dtype: DType,
    /// SyncBN in data-parallel training (see [`crate::sync_batch_norm`]).
    batch_norm_sync: Option<SharedSum>,
}

impl std::fmt::Debug for Mlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mlp").field("config", &self.config).finish()
    }
}

/// Whether `local` names a variable of an MLP as [`Mlp::new`] creates them:
/// `layers.{i}.weight`, `layers.{i}.bias` or `layers.{i}.bn.{weight, bias, running_mean,
/// running_var}`.
pub(crate) fn is_variable_name(local: &str) -> bool {
    let Some((index, rest)) = local
        .strip_prefix("layers.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return false;
    };
    let own = [
        "weight",
        "bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
    ];
    !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) && own.contains(&rest)
}

impl Mlp {
    /// Builds the MLP; variables are `layers.{i}.weight`, `layers.{i}.bias` and, with
    /// BatchNorm, `layers.{i}.bn.*`. `seed` drives the dropout masks.
    pub fn new(config: &MlpConfig, seed: u64, vb: VarBuilder) -> Result<Mlp> {
        config.validate()?;
        let mut inputs = config.inputs;
        let mut layers = Vec::new();
        for (i, width) in config.hidden.iter().enumerate() {
            let vb = vb.pp(format!("layers.{i}"));
            let linear = candle_nn::linear(inputs, *width, vb.clone())?;
            let bn = if config.batch_norm {
                Some(candle_nn::batch_norm(
                    *width,
                    crate::layers::batch_norm_config(),
                    vb.pp("bn"),
                )?)
            } else {
                None
            };
            layers.push(HiddenLayer { linear, bn });
            inputs = *width;
        }
        Ok(Mlp {
            config: config.clone(),
            layers,
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            compute_dtype: vb.dtype(),
            batch_norm_sync: None,
        })
    }

    /// Sums BatchNorm's training statistics over the ranks of data-parallel training
    /// (SyncBN), or not (`None`, the default). On the CPU and CUDA; nothing changes
    /// without BatchNorm.
    pub fn set_batch_norm_sync(&mut self, sync: Option<SharedSum>) {
        self.batch_norm_sync = sync;
    }

    /// Computes the linear layers' products in `dtype` (bf16 for mixed precision, see
    /// [`crate::Precision`]); everything else stays in the variables' dtype.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute_dtype = dtype;
    }

    /// Restarts the dropout masks' RNG from `seed` (the trainer does this every epoch, so
    /// that a resumed run draws the masks an uninterrupted one would).
    pub fn reseed_dropout(&self, seed: u64) {
        let mut rng = match self.dropout_rng.lock() {
            Ok(rng) => rng,
            Err(poisoned) => poisoned.into_inner(),
        };
        *rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// The configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// Forward pass; `train` enables dropout and BatchNorm's batch statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let rows = BatchRows::whole(x.dims().first().copied().unwrap_or(0));
        self.forward(x, train.then_some(rows))
    }

    /// Training forward pass of `rows` of a global batch (see [`BatchRows`]): dropout
    /// and BatchNorm's batch statistics on.
    pub fn forward_rows(&self, x: &Tensor, rows: BatchRows) -> Result<Tensor> {
        self.forward(x, Some(rows))
    }

    /// The forward pass, in training when `rows` says where the batch sits.
    fn forward(&self, x: &Tensor, training: Option<BatchRows>) -> Result<Tensor> {
        let (batch, features) = x.dims2()?;
        if features != self.config.inputs {
            return Err(Error::Config(format!(
                "the MLP expects {} input features, got {features}",
                self.config.inputs
            )));
        }
        if let Some(rows) = training.filter(|r| r.start + batch > r.global) {
            return Err(Error::Config(format!(
                "rows {}..{} of a global batch of {}: the part does not fit in its batch",
                rows.start,
                rows.start + batch,
                rows.global
            )));
        }
        let train = training.is_some();
        let sync = self.batch_norm_sync.as_ref();
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, self.compute_dtype)?;
            x = layer.norm_relu(&x, train, sync)?;
            if let Some(rows) = training.filter(|_| self.config.dropout > 0.0) {
                x = self.dropout(&x, rows)?;
            }
        }
        Ok(x)
    }

    /// Dropout of `x`, rows `rows.start..` of a global batch of `rows.global`: the masks
    /// of the whole global batch are drawn in row order, as one process draws them, and
    /// this part's rows kept.
    fn dropout(&self, x: &Tensor, rows: BatchRows) -> Result<Tensor> {
        let keep = 1.0 - self.config.dropout;
        let (batch, width) = x.dims2()?;
        let mask: Vec<f32> = {
            let mut rng = self
                .dropout_rng
                .lock()
                .map_err(|_| Error::Config("the dropout RNG's lock is poisoned".into()))?;
            let mut draw = || {
                if rng.gen::<f64>() < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            };
            let before = rows.start * width;
            let after = (rows.global - rows.start - batch) * width;
            (0..before).for_each(|_| {
                draw();
            });
            let mask = (0..batch * width).map(|_| draw()).collect();
            (0..after).for_each(|_| {
                draw();
            });
            mask
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }
}
