//! ThinAgeNet and TinyAgeNet: DLDL-v2's VGG-16-shaped networks with fewer channels.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::{global_average_pool, max_pool_2x2, max_pool_2x2_channels_last, ConvBnRelu};
use crate::order::{Order, Orders};
use crate::sync_batch_norm::SharedSum;

/// The smallest input side: five 2×2 poolings need 32 pixels to leave one.
pub const MIN_INPUT_SIZE: usize = 32;

/// The channel layout of VGG-16 in units of the base width `c`; `0` marks a 2×2 max-pool.
pub(crate) const LAYOUT: [usize; 18] = [1, 1, 0, 2, 2, 0, 4, 4, 4, 0, 8, 8, 8, 0, 8, 8, 8, 0];

/// The configuration of a DLDL-v2 network: VGG-16's layout
/// `[c, c, M, 2c, 2c, M, 4c×3, M, 8c×3, M, 8c×3, M]`, every convolution 3×3 (stride 1,
/// padding 1) followed by BatchNorm and ReLU, then global average pooling.
///
/// ```
/// use ldl_models::VggConfig;
/// assert_eq!(VggConfig::thin_age_net().base_channels, 32);
/// assert_eq!(VggConfig::tiny_age_net().base_channels, 16);
/// assert_eq!(VggConfig::thin_age_net().with_width(0.5)?.base_channels, 16);
/// assert_eq!(VggConfig::thin_age_net().output_channels(), 256);
/// # Ok::<(), ldl_models::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VggConfig {
    /// Channels of the first block, `c` (32 for ThinAgeNet, 16 for TinyAgeNet, 64 for
    /// VGG-16 itself).
    pub base_channels: usize,
    /// Channels of the input images (3 for RGB).
    #[serde(default = "three")]
    pub input_channels: usize,
    /// Whether the convolutions have a bias (DLDL-v2's do not; VGG-16's do).
    #[serde(default)]
    pub conv_bias: bool,
}

fn three() -> usize {
    3
}

impl VggConfig {
    /// ThinAgeNet: `c = 32` (VGG-16 with half the channels).
    pub fn thin_age_net() -> VggConfig {
        VggConfig {
            base_channels: 32,
            input_channels: 3,
            conv_bias: false,
        }
    }

    /// TinyAgeNet: `c = 16` (VGG-16 with a quarter of the channels).
    pub fn tiny_age_net() -> VggConfig {
        VggConfig {
            base_channels: 16,
            ..VggConfig::thin_age_net()
        }
    }

    /// Scales the base width by `multiplier` (rounded; at least 1 channel).
    pub fn with_width(mut self, multiplier: f64) -> Result<VggConfig> {
        if !(multiplier.is_finite() && multiplier > 0.0 && multiplier <= 32.0) {
            return Err(Error::Config(format!(
                "width multiplier must be in (0, 32], got {multiplier}"
            )));
        }
        self.base_channels = ((self.base_channels as f64 * multiplier).round() as usize).max(1);
        Ok(self)
    }

    /// Channels of the pooled features the heads see (`8c`).
    pub fn output_channels(&self) -> usize {
        // Saturating: a checkpoint's header is counted before it is checked.
        self.base_channels.saturating_mul(8)
    }

    /// Numbers stored by the backbone: conv weights (and biases) and four BatchNorm
    /// vectors per block. Saturates rather than overflows, since it is computed from a
    /// checkpoint's header before the header is checked.
    pub fn stored_elements(&self) -> u128 {
        let mut channels = self.input_channels as u128;
        let mut total = 0u128;
        for units in LAYOUT.iter().filter(|u| **u > 0) {
            let output = (*units as u128).saturating_mul(self.base_channels as u128);
            let per_output = channels
                .saturating_mul(9)
                .saturating_add(if self.conv_bias { 5 } else { 4 });
            total = total.saturating_add(output.saturating_mul(per_output));
            channels = output;
        }
        total
    }

    /// Numbers the convolutions output for one `side` × `side` image: each block's
    /// channels times its feature map, which every max-pool halves. Computed without
    /// building the network, for estimating the activations a batch needs.
    pub fn layer_outputs(&self, side: usize) -> u128 {
        let mut side = side as u128;
        let mut total = 0u128;
        for units in LAYOUT {
            match units {
                0 => side /= 2,
                units => total += (units * self.base_channels) as u128 * side * side,
            }
        }
        total
    }

    fn validate(&self) -> Result<()> {
        if !(1..=1024).contains(&self.base_channels) || !(1..=64).contains(&self.input_channels) {
            return Err(Error::Config(format!(
                "base_channels must be in 1..=1024 and input_channels in 1..=64, got {} and {}",
                self.base_channels, self.input_channels
            )));
        }
        Ok(())
    }
}

/// A DLDL-v2 backbone: images `(N, C, H, W)` with `H, W ≥ 32` to features `(N, 8c)`.
#[derive(Debug, Clone)]
pub struct Vgg {
    config: VggConfig,
    /// One entry per layout position: a conv block, or `None` for a max-pool.
    stages: Vec<Option<ConvBnRelu>>,
}

impl Vgg {
    /// Builds the backbone; variables are `features.{i}.conv.weight`, `features.{i}.bn.*`
    /// with `i` the position in the layout (pools included, as in torchvision's VGG).
    pub fn new(config: &VggConfig, vb: VarBuilder) -> Result<Vgg> {
        config.validate()?;
        let mut channels = config.input_channels;
        let mut stages = Vec::with_capacity(LAYOUT.len());
        for (i, units) in LAYOUT.iter().enumerate() {
            if *units == 0 {
                stages.push(None);
                continue;
            }
            let output = units * config.base_channels;
            let block = ConvBnRelu::new(
                channels,
                output,
                config.conv_bias,
                vb.pp(format!("features.{i}")),
            )?;
            stages.push(Some(block));
            channels = output;
        }
        Ok(Vgg {
            config: config.clone(),
            stages,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VggConfig {
        &self.config
    }

    /// Synchronises every block's BatchNorm over the ranks (SyncBN), or not (`None`).
    pub fn set_batch_norm_sync(&mut self, sync: Option<SharedSum>) {
        for block in self.stages.iter_mut().flatten() {
            block.set_sync(sync.clone());
        }
    }

    /// Features `(N, 8c)`; `train` switches BatchNorm to batch statistics. The
    /// convolutions compute in the dtype of `x` (bf16 for mixed precision, see
    /// [`crate::Precision`]); the features are f32 (or the variables' dtype).
    ///
    /// On the CPU in f32 or f64 the activations are channels last from the first block's
    /// output on (see `crate::order`), which saves every convolution a transposition of
    /// its input and of its output, both ways; the features are the same up to rounding.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        if self.trains_channels_last(x) {
            return self.forward_channels_last(x, train);
        }
        let mut x = x.clone();
        let mut stages = self.stages.iter().peekable();
        while let Some(stage) = stages.next() {
            x = match stage {
                Some(block) if train && block.trains_as_one_node(&x, Orders::PLANES) => {
                    train_block(block, &x, Orders::PLANES, &mut stages)?
                }
                Some(block) => block.forward_t(&x, train)?,
                None => max_pool_2x2(&x)?,
            };
        }
        // A mean over many pixels in bf16 would lose digits: pool in f32.
        if matches!(x.dtype(), DType::BF16 | DType::F16) {
            x = x.to_dtype(DType::F32)?;
        }
        global_average_pool(&x)
    }

    /// Whether [`Vgg::forward_t`] keeps `x`'s activations channels last: every block
    /// computes in that order (the first from planes) on `x`'s device and dtype, and every
    /// block that reads channels last pays for it (see `conv_cpu::pays_channels_last`).
    pub(crate) fn trains_channels_last(&self, x: &Tensor) -> bool {
        if !x.device().is_cpu() || x.elem_count() == 0 {
            return false;
        }
        let mut input = None;
        for stage in &self.stages {
            match (stage, input) {
                (Some(block), _) => {
                    let orders = Orders {
                        input: input.unwrap_or(Order::Planes),
                        output: Order::ChannelsLast,
                    };
                    let pays = input.is_none() || block.pays_channels_last();
                    if !(pays && block.trains_in(orders, x.dtype())) {
                        return false;
                    }
                    input = Some(Order::ChannelsLast);
                }
                // A pool before the first block would pool planes.
                (None, None) => return false,
                (None, Some(_)) => {}
            }
        }
        input.is_some()
    }

    /// [`Vgg::forward_t`] with the activations channels last from the first block's
    /// output on.
    fn forward_channels_last(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        let mut input = Order::Planes;
        let mut stages = self.stages.iter().peekable();
        while let Some(stage) = stages.next() {
            x = match stage {
                Some(block) => {
                    let orders = Orders {
                        input,
                        output: Order::ChannelsLast,
                    };
                    input = orders.output;
                    if train && block.trains_as_one_node(&x, orders) {
                        train_block(block, &x, orders, &mut stages)?
                    } else {
                        block.forward_ordered(&x, train, orders)?
                    }
                }
                None => max_pool_2x2_channels_last(&x)?,
            };
        }
        // `(N, H, W, C)` → `(N, C)`.
        Ok(x.mean(1)?.mean(1)?)
    }

    /// One entry per layout position: a conv block, or `None` for a max-pool.
    pub(crate) fn stages(&self) -> &[Option<ConvBnRelu>] {
        &self.stages
    }

    /// Refuses images with the wrong channels or smaller than [`MIN_INPUT_SIZE`].
    pub(crate) fn check_input(&self, x: &Tensor) -> Result<()> {
        let (_, channels, height, width) = x.dims4()?;
        if channels != self.config.input_channels {
            return Err(Error::Config(format!(
                "the backbone expects {} input channels, got {channels}",
                self.config.input_channels
            )));
        }
        if height < MIN_INPUT_SIZE || width < MIN_INPUT_SIZE {
            return Err(Error::Config(format!(
                "input images must be at least {MIN_INPUT_SIZE}×{MIN_INPUT_SIZE}, got {height}×{width}"
            )));
        }
        Ok(())
    }
}

/// `block` in training as one autograd node, with the 2×2 max-pool when the next of
/// `stages` is one (which it then takes): candle zero-fills and adds into a gradient per
/// node, so fewer nodes save passes over the activations (see `crate::block_cpu`).
fn train_block<'a>(
    block: &ConvBnRelu,
    x: &Tensor,
    orders: Orders,
    stages: &mut std::iter::Peekable<impl Iterator<Item = &'a Option<ConvBnRelu>>>,
) -> Result<Tensor> {
    let pool = stages.next_if(|stage| stage.is_none()).is_some();
    block.train_as_one_node(x, orders, pool)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use super::{Vgg, VggConfig};

    fn keeps_channels_last(config: VggConfig, dtype: DType) -> bool {
        let vars = VarMap::new();
        let vgg = Vgg::new(
            &config,
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let x = Tensor::zeros((2, 3, 32, 32), dtype, &Device::Cpu).unwrap();
        vgg.trains_channels_last(&x)
    }

    /// TinyAgeNet and ThinAgeNet train channels last on the CPU in f32; half-width
    /// TinyAgeNet (8 → 8 channels) stays in planes, where that is faster; so does input of
    /// another dtype than the variables'.
    #[test]
    fn which_networks_keep_channels_last() {
        assert!(keeps_channels_last(VggConfig::tiny_age_net(), DType::F32));
        assert!(keeps_channels_last(VggConfig::thin_age_net(), DType::F32));
        let half = VggConfig::tiny_age_net().with_width(0.5).unwrap();
        assert!(!keeps_channels_last(half, DType::F32));
        assert!(!keeps_channels_last(VggConfig::tiny_age_net(), DType::F64));
    }
}
