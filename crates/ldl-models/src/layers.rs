//! Building blocks: conv + BatchNorm + ReLU, a 2×2 max-pool with a correct gradient, and
//! global average pooling.

use candle_core::{DType, ModuleT, Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, VarBuilder};

use crate::error::Result;
use crate::order::{Order, Orders};
use crate::precision::weight_like;
use crate::sync_batch_norm::SharedSum;
use crate::{norm_relu_cpu, pool_cpu};

/// A 3×3 convolution (stride 1, padding 1), BatchNorm and ReLU: the unit of the
/// DLDL-v2 networks. Variables: `conv.weight` (and `conv.bias` with a bias),
/// `bn.{weight, bias, running_mean, running_var}`.
#[derive(Clone)]
pub struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm,
    /// SyncBN in data-parallel training (see [`crate::sync_batch_norm`]).
    sync: Option<SharedSum>,
}

impl std::fmt::Debug for ConvBnRelu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvBnRelu")
            .field("conv", &self.conv)
            .field("bn", &self.bn)
            .field("sync", &self.sync.is_some())
            .finish()
    }
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
        let bn = candle_nn::batch_norm(output, batch_norm_config(), vb.pp("bn"))?;
        Ok(ConvBnRelu {
            conv,
            bn,
            sync: None,
        })
    }

    /// Sums BatchNorm's statistics in training over the ranks of data-parallel training
    /// (SyncBN), or not (`None`, the default). On the CPU and CUDA.
    pub fn set_sync(&mut self, sync: Option<SharedSum>) {
        self.sync = sync;
    }

    /// Forward pass; `train` selects batch statistics (and updates the running ones)
    /// or the running statistics.
    ///
    /// The convolution runs in the dtype of `x` (its weight is cast to it, see
    /// [`crate::Precision`]); BatchNorm runs in its own variables' dtype, and the result
    /// comes back in the dtype of `x`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // The gemm convolution: candle's CPU conv backward is several times slower.
        let mut y = crate::conv2d(x, &weight_like(self.conv.weight(), x)?, 1)?;
        if let Some(bias) = self.conv.bias() {
            y = y.broadcast_add(&weight_like(bias, &y)?.reshape((1, (), 1, 1))?)?;
        }
        let norm_dtype = self.bn.running_mean().dtype();
        let sync = self.sync.as_ref().filter(|_| train);
        if y.dtype() == norm_dtype || fused_on_cuda(&self.bn, &y) {
            return norm_relu(&self.bn, &y, train, sync, Order::Planes);
        }
        // Mixed precision: batch statistics over bf16 values lose too much.
        let normalised = norm_relu(
            &self.bn,
            &y.to_dtype(norm_dtype)?,
            train,
            sync,
            Order::Planes,
        )?;
        Ok(normalised.to_dtype(x.dtype())?)
    }

    /// [`ConvBnRelu::forward_t`] on the CPU with activations in `orders` (see
    /// `crate::order`), for f32 or f64 input of the dtype of the block's variables, where
    /// [`ConvBnRelu::trains_in`] says so.
    pub(crate) fn forward_ordered(
        &self,
        x: &Tensor,
        train: bool,
        orders: Orders,
    ) -> Result<Tensor> {
        let mut y = crate::conv_cpu::conv2d_ordered(x, self.conv.weight(), 1, orders)?;
        if let Some(bias) = self.conv.bias() {
            let shape = match orders.output {
                Order::Planes => (1, bias.elem_count(), 1, 1),
                Order::ChannelsLast => (1, 1, 1, bias.elem_count()),
            };
            y = y.broadcast_add(&bias.reshape(shape)?)?;
        }
        let sync = self.sync.as_ref().filter(|_| train);
        norm_relu(&self.bn, &y, train, sync, orders.output)
    }

    /// The block in training followed, when `pool` says so, by the 2×2 max-pool, as one
    /// autograd node (see `crate::block_cpu`); the same values and gradients as
    /// [`ConvBnRelu::forward_ordered`] then `max_pool_2x2`, for blocks
    /// [`ConvBnRelu::trains_as_one_node`] accepts.
    pub(crate) fn train_as_one_node(
        &self,
        x: &Tensor,
        orders: Orders,
        pool: bool,
    ) -> Result<Tensor> {
        let (Some((gamma, beta)), None, None) =
            (self.bn.weight_and_bias(), self.conv.bias(), &self.sync)
        else {
            return Err(crate::Error::Config(
                "a conv block trains as one node only with affine BatchNorm, no conv bias and \
                 no SyncBN"
                    .into(),
            ));
        };
        let w = self.conv.weight();
        let conv = crate::conv_cpu::Forward::checked(x, w, 1, orders)?;
        let x = x.contiguous()?;
        let conv_output = x
            .detach()
            .apply_op2_no_bwd(&w.detach().contiguous()?, &conv)?;
        let (height, width) = match orders.output {
            Order::Planes => (conv_output.dim(2)?, conv_output.dim(3)?),
            Order::ChannelsLast => (conv_output.dim(1)?, conv_output.dim(2)?),
        };
        // Before the running statistics change.
        if pool && (height < 2 || width < 2) {
            return Err(crate::Error::Config(format!(
                "2×2 max-pooling needs inputs of at least 2×2 pixels, got {height}×{width}"
            )));
        }
        let norm = cpu_norm_relu_op(&self.bn, &conv_output, true, None, orders.output)?;
        let pooled_from = match pool {
            true => Some(conv_output.apply_op3_no_bwd(gamma, beta, &norm)?),
            false => None,
        };
        let block = crate::block_cpu::Block {
            conv,
            conv_output,
            norm,
            pooled_from,
            gamma: gamma.clone(),
            beta: beta.clone(),
        };
        Ok(block.apply(&x, w)?)
    }

    /// Whether [`ConvBnRelu::train_as_one_node`] takes this block in `orders` for `x`:
    /// it computes in them (see [`ConvBnRelu::trains_in`]), `x` is not empty, its
    /// BatchNorm is affine with γ and β of `x`'s dtype, its convolution has no bias (in
    /// training BatchNorm cancels one) and it does not synchronise BatchNorm across ranks.
    pub(crate) fn trains_as_one_node(&self, x: &Tensor, orders: Orders) -> bool {
        let dtype = x.dtype();
        self.trains_in(orders, dtype)
            && x.elem_count() > 0
            && self
                .bn
                .weight_and_bias()
                .is_some_and(|(gamma, beta)| gamma.dtype() == dtype && beta.dtype() == dtype)
            && self.conv.bias().is_none()
            && self.sync.is_none()
    }

    /// Whether reading channels-last input pays for this block against planes (see
    /// `conv_cpu::pays_channels_last`).
    pub(crate) fn pays_channels_last(&self) -> bool {
        crate::conv_cpu::pays_channels_last(self.conv.weight())
    }

    /// Whether [`ConvBnRelu::forward_ordered`] computes this block in `orders`, for
    /// input of `dtype` on the CPU: the CPU convolution does, in both directions, and the
    /// fused BatchNorm takes that dtype.
    pub(crate) fn trains_in(&self, orders: Orders, dtype: DType) -> bool {
        let weight = self.conv.weight();
        let fused_norm = self
            .bn
            .weight_and_bias()
            .is_some_and(|(gamma, _)| gamma.dtype() == dtype && gamma.device().is_cpu());
        matches!(dtype, DType::F32 | DType::F64)
            && weight.dtype() == dtype
            && self.bn.running_mean().dtype() == dtype
            && fused_norm
            && crate::conv_cpu::trains_in(weight, orders)
    }

    /// The convolution with evaluation-mode BatchNorm folded in, for inference: weights
    /// `w·s` and bias `β + s·(b − μ)` per output channel, with `s = γ/√(σ² + ε)` (`b` the
    /// convolution's bias, or 0), computed in f64 and stored in the weights' dtype, with
    /// no autograd graph. `relu(conv(x, w·s) + bias)` is the block's
    /// `forward_t(x, false)` up to rounding.
    pub(crate) fn folded(&self) -> Result<(Tensor, Tensor)> {
        let values = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
        let weight = self.conv.weight();
        let channels = weight.dim(0)?;
        let (gamma, beta) = match self.bn.weight_and_bias() {
            Some((gamma, beta)) => (values(gamma)?, values(beta)?),
            None => (vec![1.0; channels], vec![0.0; channels]),
        };
        let mean = values(self.bn.running_mean())?;
        let variance = values(self.bn.running_var())?;
        let conv_bias = match self.conv.bias() {
            Some(bias) => values(bias)?,
            None => vec![0.0; channels],
        };
        let eps = self.bn.eps();
        let scale: Vec<f64> = (0..channels)
            .map(|o| gamma[o] / (variance[o] + eps).sqrt())
            .collect();
        let bias: Vec<f64> = (0..channels)
            .map(|o| beta[o] + scale[o] * (conv_bias[o] - mean[o]))
            .collect();
        let as_weights = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::new(v, weight.device())?.to_dtype(weight.dtype())?)
        };
        let scale = as_weights(scale)?.reshape((channels, 1, 1, 1))?;
        let folded = weight.detach().broadcast_mul(&scale)?;
        Ok((folded, as_weights(bias)?))
    }
}

/// The BatchNorm of every model: PyTorch's defaults, eps 1e-5 and momentum 0.1 (the ONNX
/// export writes the same eps).
pub(crate) fn batch_norm_config() -> BatchNormConfig {
    BatchNormConfig::default()
}

/// Whether `batch_norm_relu` takes `x` on CUDA in its own dtype (bf16 included): the
/// fused kernels normalise in f32 whatever they read.
fn fused_on_cuda(bn: &BatchNorm, x: &Tensor) -> bool {
    #[cfg(feature = "cuda")]
    if let Some((gamma, _)) = bn.weight_and_bias() {
        return crate::norm_relu_cuda::supported(x, gamma);
    }
    let _ = (bn, x);
    false
}

/// `relu(bn(x))` for `(N, C, H, W)` input; in training mode the batch statistics
/// normalise and update the running ones (momentum and the unbiased variance as PyTorch).
///
/// On the CPU (f32/f64) this is one fused pass each way (see `norm_relu_cpu`); on CUDA
/// (f32/bf16) fused kernels (see `norm_relu_cuda`); elsewhere candle's BatchNorm and ReLU.
pub fn batch_norm_relu(bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    norm_relu(bn, x, train, None, Order::Planes)
}

/// [`batch_norm_relu`] in training with the batch statistics summed over the ranks by
/// `sum` (SyncBN): for the MLP's BatchNorm.
pub(crate) fn synced_batch_norm_relu(
    bn: &BatchNorm,
    x: &Tensor,
    sum: &SharedSum,
) -> Result<Tensor> {
    norm_relu(bn, x, true, Some(sum), Order::Planes)
}

/// [`batch_norm_relu`], with the batch statistics summed over the ranks by `sync` in
/// training (SyncBN), on activations in `order` (channels last: the CPU's fused path
/// only).
fn norm_relu(
    bn: &BatchNorm,
    x: &Tensor,
    train: bool,
    sync: Option<&SharedSum>,
    order: Order,
) -> Result<Tensor> {
    let fused = bn
        .weight_and_bias()
        .is_some_and(|(gamma, _)| norm_relu_cpu::supported(x, gamma));
    if order == Order::ChannelsLast && !(fused && x.elem_count() > 0) {
        return Err(crate::Error::Config(
            "BatchNorm on channels-last activations runs on the CPU in f32 or f64 only".into(),
        ));
    }
    let Some((gamma, beta)) = bn.weight_and_bias() else {
        return Ok(bn.forward_t(x, train)?.relu()?);
    };
    #[cfg(feature = "cuda")]
    if crate::norm_relu_cuda::supported(x, gamma) {
        return crate::norm_relu_cuda::batch_norm_relu(bn, gamma, beta, x, train, sync);
    }
    let on_cpu = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if sync.is_some() && !on_cpu {
        return Err(crate::Error::Config(
            "synchronised BatchNorm (run.sync_batch_norm) runs on the CPU in f32 or f64, and \
             on CUDA in f32 or bf16 with f32 BatchNorm weights"
                .into(),
        ));
    }
    if !norm_relu_cpu::supported(x, gamma) || x.elem_count() == 0 {
        return Ok(bn.forward_t(x, train)?.relu()?);
    }
    let x = x.contiguous()?;
    let op = cpu_norm_relu_op(bn, &x, train, sync, order)?;
    Ok(x.apply_op3(gamma, beta, op)?)
}

/// The CPU BatchNorm + ReLU op for the contiguous activation `x` in `order`: in training
/// with `x`'s batch statistics (summed over the ranks by `sync`), which also update the
/// running ones; otherwise with the running statistics. Refuses a γ or β whose length is
/// not `x`'s channel count.
fn cpu_norm_relu_op(
    bn: &BatchNorm,
    x: &Tensor,
    train: bool,
    sync: Option<&SharedSum>,
    order: Order,
) -> Result<norm_relu_cpu::NormRelu> {
    let (batch, channels, plane) = norm_relu_cpu::dims(x.dims(), order)?;
    let parameters = bn
        .weight_and_bias()
        .map(|(gamma, beta)| (gamma.elem_count(), beta.elem_count()));
    if parameters.is_some_and(|(gamma, beta)| gamma != channels || beta != channels) {
        return Err(crate::Error::Config(format!(
            "BatchNorm over {} channels got an activation of {channels} ({:?}, {order:?})",
            parameters.map_or(0, |(gamma, _)| gamma),
            x.dims()
        )));
    }
    let mut count = batch * plane;
    let mut synced = None;
    let stats = if train {
        let mut stats = norm_relu_cpu::channel_stats(x, order)?;
        if let Some(sum) = sync {
            let local = count;
            (stats, count) = stats.summed_over_ranks(count, sum.as_ref())?;
            synced = Some(crate::sync_batch_norm::RankCounts {
                sum: sum.clone(),
                local,
                global: count,
            });
        }
        update_running_statistics(bn, &stats, count)?;
        stats
    } else {
        let values = |t: &Tensor| t.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>();
        norm_relu_cpu::ChannelStats {
            mean: values(bn.running_mean())?,
            variance: values(bn.running_var())?,
        }
    };
    Ok(norm_relu_cpu::NormRelu {
        stats,
        eps: bn.eps(),
        batch_statistics: train,
        sync: synced,
        order,
    })
}

/// `r ← (1 − m)·r + m·batch`, with the unbiased batch variance (over `count` values per
/// channel) for the running variance.
fn update_running_statistics(
    bn: &BatchNorm,
    stats: &norm_relu_cpu::ChannelStats,
    count: usize,
) -> Result<()> {
    let count = count as f64;
    let momentum = bn.momentum();
    let unbiased = count / (count - 1.0).max(1.0);
    let update = |running: &Tensor, batch_values: Vec<f64>, factor: f64| -> Result<()> {
        let old = running
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        let new: Vec<f64> = old
            .iter()
            .zip(batch_values)
            .map(|(r, b)| (1.0 - momentum) * r + momentum * factor * b)
            .collect();
        let new = Tensor::new(new, running.device())?.to_dtype(running.dtype())?;
        // The running statistics are variables of the model's VarMap: `from_tensor` on a
        // variable shares its storage, so `set` updates the model in place.
        candle_core::Var::from_tensor(running)?.set(&new)?;
        Ok(())
    };
    update(bn.running_mean(), stats.mean.clone(), 1.0)?;
    update(bn.running_var(), stats.variance.clone(), unbiased)?;
    Ok(())
}

/// 2×2 max-pooling with stride 2, as PyTorch's `MaxPool2d(2, 2)`: an odd last row or
/// column is dropped, and the gradient goes to the first maximum of each window.
///
/// On the CPU (f32/f64) this is ldl's own op (see `pool_cpu`), on CUDA (f32/bf16) ldl's
/// kernels (see `pool_cuda`). Elsewhere it is composed of candle ops whose autograd gives
/// the same gradient: the four values of each
/// window side by side, the index of the first maximum (`argmax`, detached), and that value
/// picked with `where_cond`, which passes the gradient to the picked value only. candle's
/// own `max_pool2d` is not used: its backward in 0.11 scales each maximum's gradient by
/// (number of maxima in the window) / 4, and misplaces gradients on odd sizes. Inputs
/// smaller than 2×2 are an error.
pub fn max_pool_2x2(x: &Tensor) -> Result<Tensor> {
    let (batch, channels, height, width) = x.dims4()?;
    if height < 2 || width < 2 {
        return Err(candle_core::Error::Msg(format!(
            "2×2 max-pooling needs inputs of at least 2×2 pixels, got {height}×{width}"
        ))
        .into());
    }
    if x.elem_count() > 0 && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        return Ok(x
            .contiguous()?
            .apply_op1(pool_cpu::MaxPool2x2(Order::Planes))?);
    }
    #[cfg(feature = "cuda")]
    if crate::pool_cuda::supported(x) {
        return Ok(x.contiguous()?.apply_op1(crate::pool_cuda::MaxPool2x2)?);
    }
    let (rows, columns) = (height / 2, width / 2);
    // (N, C, H/2, 2, W/2, 2) → (N, C, H/2, W/2, 4): each window's values side by side.
    let windows = x
        .narrow(2, 0, 2 * rows)?
        .narrow(3, 0, 2 * columns)?
        .reshape((batch, channels, rows, 2, columns, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .reshape((batch, channels, rows, columns, 4))?;
    let shape = windows.shape().clone();
    // candle's argmax keeps the lowest index among equal maxima, on the CPU and on CUDA.
    let first = windows.detach().argmax_keepdim(D::Minus1)?;
    let positions = Tensor::arange(0u32, 4, x.device())?.broadcast_as(&shape)?;
    let picked = positions.eq(&first.broadcast_as(&shape)?)?;
    let zeros = Tensor::zeros(&shape, x.dtype(), x.device())?;
    Ok(picked.where_cond(&windows, &zeros)?.sum(D::Minus1)?)
}

/// [`max_pool_2x2`] of a channels-last `(N, H, W, C)` f32 or f64 CPU tensor, into
/// `(N, ⌊H/2⌋, ⌊W/2⌋, C)`.
pub(crate) fn max_pool_2x2_channels_last(x: &Tensor) -> Result<Tensor> {
    let (_, height, width, _) = x.dims4()?;
    let cpu_float = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if height < 2 || width < 2 || x.elem_count() == 0 || !cpu_float {
        return Err(candle_core::Error::Msg(format!(
            "channels-last 2×2 max-pooling takes f32 or f64 CPU inputs of at least 2×2 \
             pixels, got {:?} {:?}",
            x.dims(),
            x.dtype()
        ))
        .into());
    }
    Ok(x.contiguous()?
        .apply_op1(pool_cpu::MaxPool2x2(Order::ChannelsLast))?)
}

/// Mean over the spatial dimensions: `(N, C, H, W) → (N, C)`.
pub fn global_average_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    //! [`ConvBnRelu::train_as_one_node`] against the separate ops.

    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};

    use super::{max_pool_2x2, max_pool_2x2_channels_last, ConvBnRelu};
    use crate::order::{Order, Orders};

    struct Setup {
        vars: VarMap,
        block: ConvBnRelu,
        x: Var,
        /// Every variable's value before a step (the running statistics change).
        initial: Vec<(String, Tensor)>,
    }

    fn setup() -> Setup {
        let device = Device::Cpu;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &device);
        let block = ConvBnRelu::new(12, 24, false, vb).unwrap();
        // Non-trivial γ and β: the defaults (1, 0) would hide a swap of their gradients.
        for (name, var) in vars.data().lock().unwrap().iter() {
            if name.ends_with("bn.weight") || name.ends_with("bn.bias") {
                var.set(&var.rand_like(0.5, 1.5).unwrap()).unwrap();
            }
        }
        let x = Tensor::randn(0f32, 1.0, (3, 12, 9, 11), &device).unwrap();
        let initial = vars
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().copy().unwrap()))
            .collect();
        Setup {
            vars,
            block,
            x: Var::from_tensor(&x).unwrap(),
            initial,
        }
    }

    /// From the initial variables: gradients of `Σ out·r` (a fixed `r`) with respect to
    /// the input and every variable, and every variable after the step, by name.
    /// `case`: the orders, whether the block pools, and whether the input needs a
    /// gradient (not for the first block, whose input is the images).
    fn step(setup: &Setup, case: (Orders, bool, bool), one_node: bool) -> Vec<Vec<f32>> {
        let (orders, pool, input_gradient) = case;
        let data = setup.vars.data().lock().unwrap();
        for (name, value) in &setup.initial {
            data[name].set(value).unwrap();
        }
        let x = match input_gradient {
            true => setup.x.as_tensor().clone(),
            false => setup.x.as_tensor().detach(),
        };
        let input = match orders.input {
            Order::Planes => x,
            Order::ChannelsLast => x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap(),
        };
        let block = &setup.block;
        let out = if one_node {
            block.train_as_one_node(&input, orders, pool).unwrap()
        } else {
            let y = block.forward_ordered(&input, true, orders).unwrap();
            match (pool, orders.output) {
                (false, _) => y,
                (true, Order::Planes) => max_pool_2x2(&y).unwrap(),
                (true, Order::ChannelsLast) => max_pool_2x2_channels_last(&y).unwrap(),
            }
        };
        let n = out.elem_count() as u32;
        let r = Tensor::arange(0u32, n, &Device::Cpu).unwrap();
        let r = r.to_dtype(DType::F32).unwrap().sin().unwrap();
        let r = r.reshape(out.shape()).unwrap();
        let grads = (out * r).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        // Empty where the input needs no gradient (and then gets none).
        let mut values = vec![grads.get(&setup.x).map(flat).unwrap_or_default()];
        assert_eq!(values[0].is_empty(), !input_gradient);
        for name in names {
            let var = &data[name];
            values.push(flat(var.as_tensor()));
            if let Some(grad) = grads.get(var) {
                values.push(flat(grad));
            }
        }
        values
    }

    /// The one node computes what the separate ops compute, bit for bit: input and
    /// weight gradients, γ and β gradients, running statistics; with and without the
    /// pool, in planes, channels last, and from planes to channels last (the first
    /// block), with and without an input gradient.
    #[test]
    fn one_node_matches_the_separate_ops_bit_for_bit() {
        let setup = setup();
        let channels_last = Orders {
            input: Order::ChannelsLast,
            output: Order::ChannelsLast,
        };
        let first = Orders {
            input: Order::Planes,
            output: Order::ChannelsLast,
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for orders in [Orders::PLANES, channels_last, first] {
            for pool in [false, true] {
                for input_gradient in [true, false] {
                    let case = (orders, pool, input_gradient);
                    let separate = step(&setup, case, false);
                    let one_node = step(&setup, case, true);
                    // The input gradient, 5 variables, and the gradients of conv.weight,
                    // γ and β.
                    assert_eq!(separate.len(), 9);
                    assert_eq!(one_node.len(), 9);
                    for (a, b) in separate.iter().zip(&one_node) {
                        assert_eq!(bits(a), bits(b), "{case:?}");
                    }
                }
            }
        }
    }
}
