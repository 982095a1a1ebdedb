//! `[model]`: the backbone and its sizes.

use std::path::PathBuf;

use ldl_models::{BackboneConfig, MlpConfig, VggConfig};
use serde::{Deserialize, Serialize};

use super::keyword::{keyword_conversions, Keyword};
use crate::error::{Error, Result};

/// `[model]`. Every key has a default ([`ModelConfig::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The network (default `mlp`).
    pub backbone: Backbone,
    /// Hidden layer widths of the MLP (default `[64, 64]`).
    pub hidden: Vec<usize>,
    /// BatchNorm in the MLP's hidden layers (default true).
    pub batch_norm: bool,
    /// Dropout after the MLP's hidden layers (default 0).
    pub dropout: f64,
    /// Whether the heads share the MLP (`shared`) or each has an MLP of its own
    /// (`per-axis`, the default for the MLP; a joint group's axes share one). Axes that
    /// share hidden features compete for them: on bdims, one MLP per axis lowered the
    /// test MAE of all three axes (see `docs/benchmarks.md`). The image backbones share
    /// theirs. A config saved without the key (by an earlier ldl) means `shared`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Trunk>,
    /// Width multiplier of the age networks (default 1).
    pub width: f64,
    /// Biases in the age networks' convolutions (default false, as DLDL-v2; VGG-16's
    /// ImageNet weights have them).
    pub conv_bias: bool,
    /// Fine-tuning: start from the weights of this ldl checkpoint (relative to the config
    /// file, or a Hub path `hf://owner/name[@revision][/file]`) wherever name and shape
    /// match; heads of another size, and tensors it lacks, keep their fresh
    /// initialisation. Ignored when resuming.
    pub init_from: Option<PathBuf>,
    /// Where the heads start in a fresh run: `least-squares` (the default for the MLP
    /// with a linear path: each path at a ridge regression of the targets' locations on
    /// the features and each linear axis at that regression's normal distribution, so
    /// that an untrained model is a linear predictor), `training-mean` (the default for the MLP without a path: each
    /// head's bias set to the log of the training split's mean target distribution, so
    /// that an untrained model predicts the training mean rather than the middle of the
    /// axis) or `uniform` (candle's initialisation, near-uniform predictions; the
    /// default for the image networks, whose documented figures were measured with it).
    /// A config saved without the key (by an earlier ldl) means `uniform`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_init: Option<HeadInit>,
    /// How many MLPs to train side by side from different initial weights, averaging
    /// their predicted distributions (default 1: no ensemble). The MLP only; each network
    /// costs as much as one, in time and parameters. Not written when 1, so that a run
    /// of one network saves the config it saved before the key existed.
    #[serde(skip_serializing_if = "is_one")]
    pub ensemble: usize,
    /// A linear path from the inputs to each axis's location in the MLP (default true for
    /// the MLP; the image networks have none): a term linear in the features added to
    /// each head's logits (see `ldl_models::linear_path`). On bdims it closed most of the
    /// MLP's gap to ridge regression (see `docs/benchmarks.md`). A config saved without
    /// the key (by an earlier ldl) means false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear_path: Option<bool>,
}

fn is_one(networks: &usize) -> bool {
    *networks == 1
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backbone: Backbone::Mlp,
            hidden: vec![64, 64],
            batch_norm: true,
            dropout: 0.0,
            trunk: None,
            width: 1.0,
            conv_bias: false,
            init_from: None,
            head_init: None,
            ensemble: 1,
            linear_path: None,
        }
    }
}

/// `model.head_init`: where a fresh model's heads (and linear paths) start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HeadInit {
    /// Candle's initialisation: near-uniform predictions (`uniform`).
    Uniform,
    /// The log of the training split's mean target distribution (`training-mean`).
    TrainingMean,
    /// Each linear path at a ridge regression of the targets' locations on the features,
    /// each linear axis's bias at that regression's normal distribution, the other axes'
    /// at the training mean, and the heads' weight matrices at zero (`least-squares`).
    LeastSquares,
}

impl Keyword for HeadInit {
    const KEY: &'static str = "model.head_init";
    const WHAT: &'static str = "head initialisation";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("uniform", HeadInit::Uniform),
        ("training-mean", HeadInit::TrainingMean),
        ("least-squares", HeadInit::LeastSquares),
    ];
}
keyword_conversions!(HeadInit);

/// `model.backbone`: the network under the heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Backbone {
    /// A multi-layer perceptron over feature columns (`mlp`).
    #[default]
    Mlp,
    /// DLDL-v2's TinyAgeNet for images (`tiny-age-net`).
    TinyAgeNet,
    /// DLDL-v2's ThinAgeNet for images (`thin-age-net`).
    ThinAgeNet,
}

impl Keyword for Backbone {
    const KEY: &'static str = "model.backbone";
    const WHAT: &'static str = "backbone";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("mlp", Backbone::Mlp),
        ("tiny-age-net", Backbone::TinyAgeNet),
        ("thin-age-net", Backbone::ThinAgeNet),
    ];
}
keyword_conversions!(Backbone);

/// `model.trunk`: whether the heads share one MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Trunk {
    /// One MLP under every head (`shared`).
    Shared,
    /// One MLP per head: per axis, or per joint group (`per-axis`).
    PerAxis,
}

impl Keyword for Trunk {
    const KEY: &'static str = "model.trunk";
    const WHAT: &'static str = "trunk";
    const NAMES: &'static [(&'static str, Self)] =
        &[("shared", Trunk::Shared), ("per-axis", Trunk::PerAxis)];
}
keyword_conversions!(Trunk);

impl Backbone {
    /// True for the networks that read images.
    pub fn reads_images(self) -> bool {
        self != Backbone::Mlp
    }
}

impl ModelConfig {
    /// `model.head_init` as set, or its default for the backbone: `least-squares` for the
    /// MLP with a linear path, `training-mean` for the MLP without, `uniform` for the
    /// image networks.
    pub fn head_init(&self) -> HeadInit {
        match (self.head_init, self.backbone) {
            (Some(init), _) => init,
            (None, Backbone::Mlp) if self.linear_path() => HeadInit::LeastSquares,
            (None, Backbone::Mlp) => HeadInit::TrainingMean,
            (None, _) => HeadInit::Uniform,
        }
    }

    /// `model.trunk` as set, or its default for the backbone: `per-axis` for the MLP,
    /// `shared` for the image networks.
    pub fn trunk(&self) -> Trunk {
        match (self.trunk, self.backbone) {
            (Some(trunk), _) => trunk,
            (None, Backbone::Mlp) => Trunk::PerAxis,
            (None, _) => Trunk::Shared,
        }
    }

    /// `model.linear_path` as set, or its default for the backbone: on for the MLP, off
    /// for the image networks.
    pub fn linear_path(&self) -> bool {
        self.linear_path.unwrap_or(self.backbone == Backbone::Mlp)
    }

    /// The backbone for inputs of `features` features (the MLP's input width; image
    /// networks ignore it), or why the sizes are invalid, naming the key.
    pub fn backbone_config(&self, features: usize) -> Result<BackboneConfig> {
        let vgg = |base: VggConfig| -> Result<BackboneConfig> {
            let mut config = base
                .with_width(self.width)
                .map_err(|e| Error::Config(format!("`model.width`: {e}")))?;
            config.conv_bias = self.conv_bias;
            Ok(config.into())
        };
        match self.backbone {
            Backbone::Mlp => {
                if !(0.0..1.0).contains(&self.dropout) {
                    return Err(Error::Config(format!(
                        "`model.dropout`: must be in [0, 1), got {}",
                        self.dropout
                    )));
                }
                if self.hidden.contains(&0) {
                    return Err(Error::Config("`model.hidden`: widths must be ≥ 1".into()));
                }
                let networks = ldl_models::ensemble::MAX_NETWORKS;
                if !(1..=networks).contains(&self.ensemble) {
                    return Err(Error::Config(format!(
                        "`model.ensemble`: the number of networks must be in 1..={networks}, \
                         got {}",
                        self.ensemble
                    )));
                }
                if self.head_init() == HeadInit::LeastSquares && !self.linear_path() {
                    return Err(Error::Config(
                        "`model.head_init`: `least-squares` starts the linear paths, and \
                         `model.linear_path` is false: set it to true, or use \
                         `training-mean`"
                            .into(),
                    ));
                }
                Ok(MlpConfig {
                    inputs: features,
                    hidden: self.hidden.clone(),
                    batch_norm: self.batch_norm,
                    dropout: self.dropout,
                    separate_trunks: self.trunk() == Trunk::PerAxis,
                    ensemble: self.ensemble,
                    linear_path: self.linear_path(),
                }
                .into())
            }
            _ if self.linear_path() => Err(Error::Config(format!(
                "`model.linear_path`: the linear path is for the MLP; `{}` reads images: \
                 remove the key or set it to false",
                self.backbone
            ))),
            _ if self.head_init() == HeadInit::LeastSquares => Err(Error::Config(format!(
                "`model.head_init`: `least-squares` starts the MLP's linear paths; `{}` has \
                 none: use `uniform` or `training-mean`",
                self.backbone
            ))),
            _ if self.ensemble != 1 => Err(Error::Config(format!(
                "`model.ensemble`: ensembles are for the MLP; `{}` trains one network: \
                 remove the key or set it to 1",
                self.backbone
            ))),
            _ if self.trunk() == Trunk::PerAxis => Err(Error::Config(format!(
                "`model.trunk`: `per-axis` is for the MLP; `{}` shares its network between \
                 the heads: remove the key or set it to `shared`",
                self.backbone
            ))),
            Backbone::TinyAgeNet => vgg(VggConfig::tiny_age_net()),
            Backbone::ThinAgeNet => vgg(VggConfig::thin_age_net()),
        }
    }
}
