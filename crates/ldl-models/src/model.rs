//! A model: one backbone and one linear head per head of the label space (per axis, or per joint group).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use ldl_core::{Head, LabelSpace};
use serde::{Deserialize, Serialize};

use crate::ensemble::{mixture_logits, network_prefix, network_seed, network_variable};
use crate::error::{Error, Result};
use crate::init::seeded_init;
use crate::linear_path::{self, LinearPath};
use crate::mlp::{BatchRows, Mlp, MlpConfig};
use crate::precision::Precision;
use crate::sync_batch_norm::SharedSum;
use crate::vgg::{Vgg, VggConfig};

/// Which backbone a model uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backbone", rename_all = "kebab-case")]
pub enum BackboneConfig {
    /// A DLDL-v2 network (ThinAgeNet, TinyAgeNet, or another width) for images.
    Vgg(VggConfig),
    /// A multi-layer perceptron for feature vectors.
    Mlp(MlpConfig),
}

impl BackboneConfig {
    /// ThinAgeNet.
    pub fn thin_age_net() -> Self {
        BackboneConfig::Vgg(VggConfig::thin_age_net())
    }

    /// TinyAgeNet.
    pub fn tiny_age_net() -> Self {
        BackboneConfig::Vgg(VggConfig::tiny_age_net())
    }

    /// An MLP over `inputs` features with hidden layers of the given widths
    /// ([`MlpConfig::new`]; for BatchNorm or dropout build the [`MlpConfig`] and convert it).
    pub fn mlp(inputs: usize, hidden: impl Into<Vec<usize>>) -> Self {
        BackboneConfig::Mlp(MlpConfig::new(inputs, hidden))
    }

    /// How many numbers a model of this backbone with heads for `space` stores (weights
    /// and BatchNorm statistics), computed without building it. Saturates rather than
    /// overflows, since it is computed from a checkpoint's header before the header is
    /// checked.
    pub fn stored_elements(&self, space: &LabelSpace) -> u128 {
        let backbone = match self {
            BackboneConfig::Vgg(c) => c.stored_elements(),
            BackboneConfig::Mlp(c) => c
                .stored_elements()
                .saturating_mul(c.trunk_count(space.heads().len()) as u128),
        };
        let features = self.output_features() as u128;
        // Per head: a weight per feature and a bias per bin, and the linear path's
        // weights per input.
        let path_inputs = match self {
            BackboneConfig::Mlp(c) if c.linear_path => c.inputs as u128,
            _ => 0,
        };
        let heads = space.heads().iter().fold(0u128, |total, head| {
            let weights = features
                .saturating_add(1)
                .saturating_mul(head.bins() as u128);
            let path =
                path_inputs.saturating_mul(linear_path::statistic_count(space, head) as u128);
            total.saturating_add(weights).saturating_add(path)
        });
        backbone
            .saturating_add(heads)
            .saturating_mul(self.networks() as u128)
    }

    /// How many networks the model trains side by side: [`MlpConfig::ensemble`] for the
    /// MLP, one for the image networks.
    pub fn networks(&self) -> usize {
        match self {
            BackboneConfig::Vgg(_) => 1,
            BackboneConfig::Mlp(config) => config.ensemble,
        }
    }

    /// Width of the features the heads see.
    pub fn output_features(&self) -> usize {
        match self {
            BackboneConfig::Vgg(config) => config.output_channels(),
            BackboneConfig::Mlp(config) => config.output_features(),
        }
    }
}

enum Backbone {
    Vgg(Vgg),
    /// Per network of the ensemble (one without: see [`crate::ensemble`]), the MLP
    /// trunks: one shared by every head, or one per head (`MlpConfig::separate_trunks`).
    Mlp(Vec<Vec<Mlp>>),
}

/// A backbone and one linear head per head of the label space: one per axis
/// (`heads.<axis name>`, `K` outputs), and one per joint group (`heads.yaw+pitch`, one
/// output per grid cell), returning logits per head ready for the losses. An MLP backbone
/// may instead be one MLP per head ([`MlpConfig::with_separate_trunks`]), so that the
/// heads share no hidden features, and an ensemble of several MLPs with their own heads
/// ([`MlpConfig::with_ensemble`], see [`crate::ensemble`]).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use ldl_core::{Axis, LabelSpace};
/// use ldl_models::{BackboneConfig, Model};
/// let space = LabelSpace::new(vec![
///     Axis::linear("age", 0.0, 100.0, 1.0)?,
///     Axis::linear("yaw", -90.0, 90.0, 3.0)?,
/// ])?;
/// let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 42, &Device::Cpu)?;
/// let images = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
/// let logits = model.forward_t(&images, false)?;
/// assert_eq!(logits[0].dims(), [2, 101]);
/// assert_eq!(logits[1].dims(), [2, 61]);
/// assert_eq!(model.parameter_count(), 934_869 + 128 * 61 + 61);
///
/// // The model owns its variables: it saves and loads itself, label space included.
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("model.safetensors");
/// model.save(&path)?;
/// let loaded = Model::load(&path, &Device::Cpu)?;
/// assert_eq!(loaded.label_space(), model.label_space());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Model {
    config: BackboneConfig,
    /// Every variable: the trainable ones and BatchNorm's running statistics.
    vars: VarMap,
    space: LabelSpace,
    backbone: Backbone,
    /// Per network of the ensemble (one without), one head per head of the label space.
    heads: Vec<Vec<Linear>>,
    /// Per network, per head, the MLP's linear path (`MlpConfig::linear_path`): `None`
    /// for a head without one; no entries without the path.
    linear_paths: Vec<Vec<Option<LinearPath>>>,
    precision: Precision,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("axes", &self.space.len())
            .finish()
    }
}

impl Model {
    /// Builds a model whose variables are created in `vars` (backbone under `backbone.`,
    /// heads under `heads.`, each network of an ensemble under `ensemble.<k>.`) with
    /// candle's default initialisation, or taken from `vars`
    /// where it already holds them. `seed` drives dropout masks.
    pub(crate) fn on_vars(
        config: &BackboneConfig,
        space: &LabelSpace,
        seed: u64,
        vars: VarMap,
        device: &Device,
    ) -> Result<Model> {
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let networks = config.networks();
        let network_vars = |index: usize| match network_prefix(index, networks) {
            Some(prefix) => vb.pp(prefix),
            None => vb.clone(),
        };
        let backbone = match config {
            BackboneConfig::Vgg(c) => Backbone::Vgg(Vgg::new(c, vb.pp("backbone"))?),
            BackboneConfig::Mlp(c) => {
                c.validate()?;
                Backbone::Mlp(
                    (0..networks)
                        .map(|n| mlp_trunks(c, space, network_seed(seed, n), &network_vars(n)))
                        .collect::<Result<_>>()?,
                )
            }
        };
        let features = config.output_features();
        let heads = (0..networks)
            .map(|n| linear_heads(space, features, &network_vars(n)))
            .collect::<Result<_>>()?;
        if let Some(head) = space
            .heads()
            .iter()
            .find(|h| linear_path::is_reserved_head_name(h.name()))
        {
            return Err(Error::Config(format!(
                "the head `{}` ends in `.linear_path`, which names the heads' linear paths' \
                 weights; rename the axis",
                head.name()
            )));
        }
        let linear_paths = match config {
            BackboneConfig::Mlp(c) if c.linear_path => {
                let statistics = LinearPath::statistics_of_heads(space, device)?;
                (0..networks)
                    .map(|n| {
                        let vb = network_vars(n);
                        space
                            .heads()
                            .iter()
                            .zip(&statistics)
                            .map(|(head, z)| {
                                z.as_ref()
                                    .map(|z| LinearPath::new(head, z, c.inputs, &vb))
                                    .transpose()
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                    .collect::<Result<_>>()?
            }
            _ => Vec::new(),
        };
        Ok(Model {
            config: config.clone(),
            vars,
            space: space.clone(),
            backbone,
            heads,
            linear_paths,
            precision: Precision::F32,
        })
    }

    /// Builds a model with fresh f32 variables on `device`, initialised from `seed`
    /// (bit-identical for the same seed; see [`crate::seeded_init`]).
    pub fn build(
        config: &BackboneConfig,
        space: &LabelSpace,
        seed: u64,
        device: &Device,
    ) -> Result<Model> {
        let model = Model::on_vars(config, space, seed, VarMap::new(), device)?;
        seeded_init(&model.vars, seed)?;
        Ok(model)
    }

    /// Every variable of the model by name: the trainable ones and BatchNorm's running
    /// statistics. The map shares its tensors with the model: setting a variable changes
    /// the model.
    pub fn vars(&self) -> &VarMap {
        &self.vars
    }

    /// The trainable variables (everything but BatchNorm's running statistics), sorted by
    /// name: what an optimiser steps (`ldl::train::Adam::for_model(&model, …)` takes them).
    pub fn trainable_vars(&self) -> Vec<(String, candle_core::Var)> {
        trainable_vars(&self.vars)
    }

    /// The device the variables are on.
    pub fn device(&self) -> &Device {
        // A label space has at least one axis, so a model at least one head.
        self.heads[0][0].weight().device()
    }

    /// The number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        parameter_count(&self.vars)
    }

    /// Sets the number type of the forward and backward passes (f32 by default; see
    /// [`Precision`] for what bf16 changes). The variables keep their dtype. bf16 is
    /// refused on the CPU, where candle has no bf16 matrix product.
    ///
    /// ```
    /// use candle_core::Device;
    /// use ldl_core::{Axis, LabelSpace};
    /// use ldl_models::{BackboneConfig, Model, Precision};
    /// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
    /// let mut model = Model::build(&BackboneConfig::tiny_age_net(), &space, 1, &Device::Cpu)?;
    /// model.set_precision(Precision::F32)?;
    /// let refused = model.set_precision(Precision::Bf16).unwrap_err();
    /// assert!(refused.to_string().contains("needs a CUDA device"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        let first_head = self.heads.first().and_then(|heads| heads.first());
        if let Some(head) = first_head {
            precision.check_device(head.weight().device())?;
        }
        self.precision = precision;
        let dtype = match precision {
            // The variables' own dtype: f32 from `build`, whatever `new` was given.
            Precision::F32 => first_head.map_or(DType::F32, |h| h.weight().dtype()),
            Precision::Bf16 => DType::BF16,
        };
        if let Backbone::Mlp(networks) = &mut self.backbone {
            for trunk in networks.iter_mut().flatten() {
                trunk.set_compute_dtype(dtype);
            }
        }
        Ok(())
    }

    /// Sums BatchNorm's training statistics over the ranks of data-parallel training
    /// (SyncBN, see [`crate::sync_batch_norm`]), or stops (`None`). On the CPU and CUDA.
    pub fn set_batch_norm_sync(&mut self, sync: Option<SharedSum>) -> Result<()> {
        match &mut self.backbone {
            Backbone::Vgg(vgg) => vgg.set_batch_norm_sync(sync),
            Backbone::Mlp(networks) => {
                for trunk in networks.iter_mut().flatten() {
                    trunk.set_batch_norm_sync(sync.clone());
                }
            }
        }
        Ok(())
    }

    /// The number type of the forward and backward passes.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Restarts the dropout RNG (if the backbone has dropout) from `seed`.
    pub fn reseed_dropout(&self, seed: u64) {
        if let Backbone::Mlp(networks) = &self.backbone {
            for (network, trunks) in networks.iter().enumerate() {
                let seed = network_seed(seed, network);
                for (index, trunk) in trunks.iter().enumerate() {
                    trunk.reseed_dropout(trunk_seed(seed, index));
                }
            }
        }
    }

    /// The backbone configuration.
    pub fn config(&self) -> &BackboneConfig {
        &self.config
    }

    /// Sets every head's bias (in every network of an ensemble): `biases[h]` holds one
    /// value per output of head `h` (in [`LabelSpace::heads`] order). Starting the biases
    /// at the log of a prior distribution makes an untrained model predict that prior.
    pub fn set_head_biases(&self, biases: &[Vec<f32>]) -> Result<()> {
        let heads = self.space.heads();
        if biases.len() != heads.len() {
            return Err(Error::Config(format!(
                "{} head biases for {} heads",
                biases.len(),
                heads.len()
            )));
        }
        for (head, bias) in heads.iter().zip(biases) {
            self.set_head_variable(head, "bias", bias, head.bins())?;
        }
        Ok(())
    }

    /// Sets the weights of every head's linear path (`MlpConfig::linear_path`; in every
    /// network of an ensemble): `weights[h]` holds head `h`'s `(statistics, inputs)`
    /// matrix row by row, and is `None` for a head without a path.
    pub fn set_linear_path_weights(&self, weights: &[Option<Vec<f32>>]) -> Result<()> {
        let heads = self.space.heads();
        let inputs = match &self.config {
            BackboneConfig::Mlp(c) if c.linear_path => c.inputs,
            _ => return Err(Error::Config("the model has no linear path".into())),
        };
        if weights.len() != heads.len() {
            return Err(Error::Config(format!(
                "linear path weights for {} heads, the model has {}",
                weights.len(),
                heads.len()
            )));
        }
        for (head, weight) in heads.iter().zip(weights) {
            let count = linear_path::statistic_count(&self.space, head);
            match weight {
                Some(w) => {
                    let len = count.saturating_mul(inputs);
                    self.set_head_variable(head, "linear_path.weight", w, len)?
                }
                None if count == 0 => {}
                None => {
                    return Err(Error::Config(format!(
                        "no linear path weights for head `{}`, which has a path",
                        head.name()
                    )))
                }
            }
        }
        Ok(())
    }

    /// Sets every head's weight matrix (not its bias or linear path; in every network of
    /// an ensemble) to zero, so that the heads' outputs start at their biases (plus the
    /// linear paths) whatever the trunks compute. The trunks still learn: a head's weights
    /// move in the first step, and the gradient reaches the trunk from the second.
    pub fn zero_head_weights(&self) -> Result<()> {
        for head in self.space.heads() {
            self.each_head_variable(head, "weight", |var| Ok(var.set(&var.zeros_like()?)?))?;
        }
        Ok(())
    }

    /// Sets `heads.<head>.<suffix>` in every network to `values`, which must hold `len`
    /// numbers (the variable keeps its shape).
    fn set_head_variable(
        &self,
        head: &Head,
        suffix: &str,
        values: &[f32],
        len: usize,
    ) -> Result<()> {
        if values.len() != len {
            return Err(Error::Config(format!(
                "head `{}`: `{suffix}` holds {len} numbers, got {}",
                head.name(),
                values.len()
            )));
        }
        self.each_head_variable(head, suffix, |var| {
            let value = Tensor::from_slice(values, var.shape(), var.device())?;
            Ok(var.set(&value.to_dtype(var.dtype())?)?)
        })
    }

    /// Calls `visit` with `heads.<head>.<suffix>` of every network of the model.
    fn each_head_variable(
        &self,
        head: &Head,
        suffix: &str,
        mut visit: impl FnMut(&candle_core::Var) -> Result<()>,
    ) -> Result<()> {
        let vars = self.vars.data().lock().map_err(|_| {
            Error::Config("the model's variables are locked by a thread that panicked".into())
        })?;
        let networks = self.heads.len();
        let local = format!("heads.{}.{suffix}", head.name());
        for network in 0..networks {
            let name = network_variable(network, networks, &local);
            let var = vars
                .get(&name)
                .ok_or_else(|| Error::Config(format!("the model has no variable `{name}`")))?;
            visit(var)?;
        }
        Ok(())
    }

    /// The VGG backbone, if the model has one.
    pub(crate) fn vgg(&self) -> Option<&Vgg> {
        match &self.backbone {
            Backbone::Vgg(vgg) => Some(vgg),
            Backbone::Mlp(_) => None,
        }
    }

    /// The linear heads of the first network, in the order of [`LabelSpace::heads`].
    pub(crate) fn heads(&self) -> &[Linear] {
        &self.heads[0]
    }

    /// How many networks the model trains side by side (see [`crate::ensemble`]).
    pub fn networks(&self) -> usize {
        self.heads.len()
    }

    /// The label space the heads predict.
    pub fn label_space(&self) -> &LabelSpace {
        &self.space
    }

    /// Logits per head (see [`LabelSpace::heads`]; per axis without joint groups), each
    /// `(N, bins)`. `train` switches BatchNorm to batch statistics
    /// (updating the running ones) and enables dropout. For an ensemble these are the
    /// logits of the networks' mixture: to train one, give each network its own loss
    /// ([`Model::forward_networks_rows`]).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let rows = BatchRows::whole(x.dims().first().copied().unwrap_or(0));
        self.forward(x, train.then_some(rows))
    }

    /// [`Model::forward_t`] in training for `rows` of a global batch (data-parallel
    /// training: see [`BatchRows`]), so that dropout drops what one process would. For an
    /// ensemble these are the mixture's logits: train with
    /// [`Model::forward_networks_rows`].
    pub fn forward_rows(&self, x: &Tensor, rows: BatchRows) -> Result<Vec<Tensor>> {
        self.forward(x, Some(rows))
    }

    /// Each network's logits per head, `[network][head]`, in training for `rows` of a
    /// global batch: what training an ensemble needs, one loss per network (see
    /// [`crate::ensemble`]). `inputs` holds one tensor that every network reads, or one
    /// per network (inputs with noise of their own: `ldl_data::Batch::inputs_per_network`).
    /// One network without an ensemble.
    pub fn forward_networks_rows(
        &self,
        inputs: &[Tensor],
        rows: BatchRows,
    ) -> Result<Vec<Vec<Tensor>>> {
        self.forward_networks(inputs, Some(rows))
    }

    /// The forward pass, in training when `rows` says where the batch sits.
    fn forward(&self, x: &Tensor, training: Option<BatchRows>) -> Result<Vec<Tensor>> {
        mixture_logits(&self.forward_networks(std::slice::from_ref(x), training)?)
    }

    /// Every network's logits per head, from one input for all or one per network.
    fn forward_networks(
        &self,
        inputs: &[Tensor],
        training: Option<BatchRows>,
    ) -> Result<Vec<Vec<Tensor>>> {
        let train = training.is_some();
        let networks = self.heads.len();
        if inputs.len() != 1 && inputs.len() != networks {
            return Err(Error::Config(format!(
                "{} inputs for a model of {networks} networks: give one for all, or one each",
                inputs.len()
            )));
        }
        let input = |network: usize| &inputs[network.min(inputs.len() - 1)];
        match &self.backbone {
            Backbone::Vgg(vgg) => {
                let x = input(0);
                let features = match self.precision {
                    Precision::F32 => vgg.forward_t(x, train)?,
                    // The convolutions compute in the dtype of their input.
                    Precision::Bf16 => vgg.forward_t(&x.to_dtype(DType::BF16)?, train)?,
                };
                Ok(vec![apply_heads(&self.heads[0], &[features])?])
            }
            Backbone::Mlp(networks) => networks
                .iter()
                .zip(&self.heads)
                .enumerate()
                .map(|(network, (trunks, heads))| {
                    let x = input(network);
                    let features = trunks
                        .iter()
                        .map(|trunk| match training {
                            Some(rows) => trunk.forward_rows(x, rows),
                            None => trunk.forward_t(x, false),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let logits = apply_heads(heads, &features)?;
                    match self.linear_paths.get(network) {
                        Some(paths) => add_linear_paths(logits, paths, x),
                        None => Ok(logits),
                    }
                })
                .collect(),
        }
    }
}

impl Model {
    /// What the model predicts for a batch of inputs (in evaluation mode), sample by
    /// sample: `[sample][axis]`, each estimate typed by its axis's kind.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use ldl_core::{Axis, AxisEstimate, LabelSpace};
    /// use ldl_models::{BackboneConfig, Model};
    /// let space = LabelSpace::new(vec![
    ///     Axis::linear("age", 0.0, 100.0, 1.0)?,
    ///     Axis::categorical("sex", ["female", "male"])?,
    /// ])?;
    /// let model = Model::build(&BackboneConfig::mlp(3, [8]), &space, 1, &Device::Cpu)?;
    /// let rows = Tensor::new(&[[0.1f32, 0.2, 0.3], [1.0, 0.0, -1.0]], &Device::Cpu)?;
    /// let predictions = model.predict(&rows)?;
    /// assert_eq!((predictions.len(), predictions[0].len()), (2, 2));
    /// let AxisEstimate::Value(age) = &predictions[1][0] else { unreachable!() };
    /// assert!((0.0..=100.0).contains(&age.mean) && age.std > 0.0);
    /// assert!(["female", "male"].contains(&predictions[1][1].as_class().unwrap().name.as_str()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Runs [`Model::inference`], which folds BatchNorm into the convolutions first: for
    /// many batches, build the [`crate::InferenceModel`] once and call its `predict`.
    pub fn predict(&self, inputs: &Tensor) -> Result<Vec<Vec<ldl_core::AxisEstimate>>> {
        self.inference()?.predict(inputs)
    }
}

/// Each head applied to its features: `features` holds one tensor for all heads, or one
/// per head.
fn apply_heads(heads: &[Linear], features: &[Tensor]) -> Result<Vec<Tensor>> {
    heads
        .iter()
        .enumerate()
        .map(|(index, head)| {
            let features =
                features[index.min(features.len() - 1)].to_dtype(head.weight().dtype())?;
            Ok(head.forward(&features)?)
        })
        .collect()
}

/// Each head's logits plus its linear path's term, where it has one.
fn add_linear_paths(
    logits: Vec<Tensor>,
    paths: &[Option<LinearPath>],
    inputs: &Tensor,
) -> Result<Vec<Tensor>> {
    logits
        .into_iter()
        .zip(paths)
        .map(|(logits, path)| match path {
            Some(path) => path.add_to(&logits, inputs),
            None => Ok(logits),
        })
        .collect()
}

/// One linear head per head of `space`, under `heads.<head name>`.
fn linear_heads(space: &LabelSpace, features: usize, vb: &VarBuilder) -> Result<Vec<Linear>> {
    Ok(space
        .heads()
        .iter()
        .map(|head| candle_nn::linear(features, head.bins(), vb.pp("heads").pp(head.name())))
        .collect::<candle_core::Result<Vec<_>>>()?)
}

/// The MLP trunks of a model: one under `backbone.`, or with separate trunks one per
/// head under `backbone.<head name>.`. A label space of one head gets the single trunk's
/// names either way, so its checkpoints do not depend on the setting.
fn mlp_trunks(
    config: &MlpConfig,
    space: &LabelSpace,
    seed: u64,
    vb: &VarBuilder,
) -> Result<Vec<Mlp>> {
    let heads = space.heads();
    if config.trunk_count(heads.len()) == 1 {
        return Ok(vec![Mlp::new(config, seed, vb.pp("backbone"))?]);
    }
    heads
        .iter()
        .enumerate()
        .map(|(index, head)| {
            let vb = vb.pp("backbone").pp(head.name());
            Mlp::new(config, trunk_seed(seed, index), vb)
        })
        .collect()
}

/// The dropout seed of the `index`-th MLP trunk: the model's seed for the first (as with
/// one shared trunk), a different stream for each other.
fn trunk_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// True for BatchNorm's running statistics, which are state, not trainable parameters.
pub fn is_running_statistic(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// The trainable variables (everything but BatchNorm's running statistics), by name.
pub fn trainable_vars(vars: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = match vars.data().lock() {
        Ok(data) => data,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut named: Vec<(String, candle_core::Var)> = data
        .iter()
        .filter(|(name, _)| !is_running_statistic(name))
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// The number of trainable parameters.
pub fn parameter_count(vars: &VarMap) -> usize {
    trainable_vars(vars)
        .iter()
        .map(|(_, var)| var.elem_count())
        .sum()
}

impl From<VggConfig> for BackboneConfig {
    fn from(config: VggConfig) -> Self {
        BackboneConfig::Vgg(config)
    }
}

impl From<MlpConfig> for BackboneConfig {
    fn from(config: MlpConfig) -> Self {
        BackboneConfig::Mlp(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldl_core::Axis;

    /// Counted from a header before it is checked, the stored numbers of absurd sizes
    /// saturate instead of overflowing (which would panic, or wrap to a small count).
    #[test]
    fn the_stored_count_of_absurd_sizes_saturates() {
        let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap();
        let mlp = MlpConfig::new(usize::MAX, [usize::MAX, usize::MAX])
            .with_batch_norm()
            .with_linear_path()
            .with_ensemble(64);
        assert_eq!(mlp.stored_elements(), u128::MAX);
        assert_eq!(BackboneConfig::from(mlp).stored_elements(&space), u128::MAX);
        let vgg = VggConfig {
            base_channels: usize::MAX,
            ..VggConfig::tiny_age_net()
        };
        assert_eq!(vgg.stored_elements(), u128::MAX);
        assert_eq!(BackboneConfig::from(vgg).stored_elements(&space), u128::MAX);
    }
}
