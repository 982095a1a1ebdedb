//! A conv block in CPU training as one autograd node: convolution, BatchNorm with batch
//! statistics, ReLU and, where the network pools next, the 2×2 max-pool.
//!
//! candle's backward pass gives every tensor of the graph a gradient it first fills with
//! zeros and then adds the op's gradient into (`GradStore::or_insert` then `add`): for
//! each activation a memset and an element-wise add over its size, on the thread that
//! called `backward`, while the worker pool waits. With the block's ops as separate nodes
//! the convolution's output, the ReLU's output and the pooled output each pay it; as one
//! node only the block's output does (and a small concatenation of γ and β). On
//! TinyAgeNet 64×64 at two threads these passes were about 6% of a training step's CPU
//! time and more of its wall time, being serial.
//!
//! The node computes exactly what the separate ops compute, with the same kernels in the
//! same order, so gradients and running statistics are the same bits. The pieces in
//! front of the last one run before the node is made, on detached inputs; the node's own
//! forward is the last piece (the pool, or BatchNorm + ReLU), so its output is written
//! once, not copied.
//!
//! | piece | forward | backward |
//! |---|---|---|
//! | convolution | `conv_cpu::Forward` | its `bwd` (input and weight gradients) |
//! | BatchNorm + ReLU | `NormRelu` (batch statistics) | `NormRelu::gradients` |
//! | 2×2 max-pool (optional) | `MaxPool2x2` | `Unpool` |

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor};

use crate::conv_cpu;
use crate::norm_relu_cpu::NormRelu;
use crate::pool_cpu::{MaxPool2x2, Unpool};

/// The intermediate results one training block keeps for its backward pass.
pub(crate) struct Block {
    /// The convolution op (its geometry and orders).
    pub conv: conv_cpu::Forward,
    /// The convolution's output `y`, detached.
    pub conv_output: Tensor,
    /// BatchNorm + ReLU with this batch's statistics.
    pub norm: NormRelu,
    /// `relu(bn(y))`, detached, when the block pools it; `None` when the node's output
    /// is this activation.
    pub pooled_from: Option<Tensor>,
    /// BatchNorm's γ.
    pub gamma: Tensor,
    /// BatchNorm's β.
    pub beta: Tensor,
}

impl Block {
    /// The block's output as an autograd node over `x`, the convolution's weights `w`
    /// and the BatchNorm parameters (γ and β, concatenated so that one node can carry
    /// the three: their gradient flows back through the concatenation).
    pub(crate) fn apply(self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let parameters = Tensor::cat(&[&self.gamma, &self.beta], 0)?;
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &parameters, self)
    }
}

/// Runs `f` on `t`'s CPU storage and layout.
fn with_storage<R>(
    t: &Tensor,
    f: impl FnOnce(&CpuStorage, &Layout) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("conv block: expected a CPU tensor");
    };
    f(cpu, layout)
}

impl Block {
    /// BatchNorm + ReLU's `(d conv output, dγ, dβ)` from its output `activation` and that
    /// output's gradient; the first only when `input_gradient` asks for it.
    fn norm_gradients(
        &self,
        activation: &Tensor,
        d_activation: &Tensor,
        input_gradient: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
        self.norm.gradients(
            &self.conv_output,
            &self.gamma,
            activation,
            d_activation,
            input_gradient,
        )
    }
}

impl CustomOp3 for Block {
    fn name(&self) -> &'static str {
        "ldl-conv-block"
    }

    /// The last piece, from the detached intermediates: the arguments' values are the
    /// ones those were computed from.
    fn cpu_fwd(
        &self,
        _x: &CpuStorage,
        _x_layout: &Layout,
        _w: &CpuStorage,
        _w_layout: &Layout,
        _parameters: &CpuStorage,
        _parameters_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match &self.pooled_from {
            Some(activation) => with_storage(activation, |s, l| {
                candle_core::CustomOp1::cpu_fwd(&MaxPool2x2(self.norm.order), s, l)
            }),
            None => with_storage(&self.conv_output, |y, y_layout| {
                with_storage(&self.gamma, |gamma, gamma_layout| {
                    with_storage(&self.beta, |beta, beta_layout| {
                        self.norm
                            .cpu_fwd(y, y_layout, gamma, gamma_layout, beta, beta_layout)
                    })
                })
            }),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _parameters: &Tensor,
        output: &Tensor,
        d_output: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d_output = d_output.contiguous()?;
        // BatchNorm's input gradient only feeds the convolution's gradients.
        let needs_conv_gradients = x.track_op() || w.track_op();
        let (d_conv_output, d_gamma, d_beta) = match &self.pooled_from {
            Some(activation) => {
                let unpool = Unpool(self.norm.order);
                // Dropped at the end of this arm: the convolution's backward pass below
                // runs without the full-size activation gradient alive.
                let d_activation = activation.apply_op3_no_bwd(output, &d_output, &unpool)?;
                self.norm_gradients(activation, &d_activation, needs_conv_gradients)?
            }
            None => self.norm_gradients(output, &d_output, needs_conv_gradients)?,
        };
        let (dx, dw) = match d_conv_output {
            Some(d_conv_output) => self.conv.bwd(x, w, &self.conv_output, &d_conv_output)?,
            None => (None, None),
        };
        let d_parameters = Tensor::cat(&[d_gamma, d_beta], 0)?;
        Ok((dx, dw, Some(d_parameters)))
    }
}
