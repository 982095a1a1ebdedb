//! How the CPU kernels' activations lie in memory: planes, as candle lays out
//! `(N, C, H, W)`, or channels last, `(N, H, W, C)`.
//!
//! Winograd's transforms and the per-channel passes (BatchNorm, ReLU, pooling) work on
//! vectors of all channels of a pixel. On planes, every convolution transposes its input
//! to channels last and its output back; from the first block's output on, the DLDL-v2
//! networks keep their activations channels last on the CPU instead (see
//! `crate::vgg::Vgg::forward_t` and `crate::inference`).

/// How an activation lies in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// `(N, C, H, W)`: a plane per channel, candle's layout.
    Planes,
    /// `(N, H, W, C)`: the channels of a pixel side by side.
    ChannelsLast,
}

/// The orders of an op's input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Orders {
    pub(crate) input: Order,
    pub(crate) output: Order,
}

impl Orders {
    /// Planes in, planes out: candle's layout.
    pub(crate) const PLANES: Orders = Orders {
        input: Order::Planes,
        output: Order::Planes,
    };
}
