//! Building blocks: conv + BatchNorm + ReLU, a 2×2 max-pool with a correct gradient, and
//! global average pooling.

use candle_core::{Module, ModuleT, Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, VarBuilder};

use crate::error::Result;

/// A 3×3 convolution (stride 1, padding 1), BatchNorm and ReLU: the unit of the
/// DLDL-v2 networks. Variables: `conv.weight` (and `conv.bias` with a bias),
/// `bn.{weight, bias, running_mean, running_var}`.
#[derive(Debug, Clone)]
pub struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBnRelu {
    /// A block from `input` to `output` channels.
    pub fn new(input: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let config = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = if bias {
            candle_nn::conv2d(input, output, 3, config, vb.pp("conv"))?
        } else {
            candle_nn::conv2d_no_bias(input, output, 3, config, vb.pp("conv"))?
        };
        // PyTorch's BatchNorm2d defaults: eps 1e-5, momentum 0.1.
        let bn = candle_nn::batch_norm(output, BatchNormConfig::default(), vb.pp("bn"))?;
        Ok(ConvBnRelu { conv, bn })
    }

    /// Forward pass; `train` selects batch statistics (and updates the running ones)
    /// or the running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.conv.forward(x)?;
        Ok(self.bn.forward_t(&x, train)?.relu()?)
    }
}

/// 2×2 max-pooling with stride 2, as PyTorch's `MaxPool2d(2, 2)`: an odd last row or
/// column is dropped.
///
/// candle 0.11's max-pool backward scales each maximum's gradient by (number of maxima in
/// the window) / 4 instead of passing it whole, i.e. by ¼ for the usual single maximum.
/// The output here is `4y − 3·detach(y)`: the same values, and four times candle's
/// gradient, which is the true gradient wherever a window has one maximum (ties only
/// happen on exactly equal activations).
pub fn max_pool_2x2(x: &Tensor) -> Result<Tensor> {
    let (_, _, height, width) = x.dims4()?;
    let x = if height % 2 == 1 || width % 2 == 1 {
        // candle's backward also misplaces gradients on odd sizes: crop first.
        x.narrow(2, 0, height - height % 2)?
            .narrow(3, 0, width - width % 2)?
    } else {
        x.clone()
    };
    let pooled = x.max_pool2d(2)?;
    Ok((pooled.affine(4.0, 0.0)? - pooled.affine(3.0, 0.0)?.detach())?)
}

/// Mean over the spatial dimensions: `(N, C, H, W) → (N, C)`.
pub fn global_average_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
}
