//! The inference forward pass of a convolution followed by BatchNorm and ReLU (and, where
//! the network pools next, a 2×2 max-pool), with BatchNorm folded into the convolution.
//!
//! In evaluation mode BatchNorm is an affine map per channel, `γ·(y − μ)/√(σ² + ε) + β`.
//! Folded into the convolution (weights scaled by `γ/√(σ² + ε)` per output channel, see
//! `crate::inference`), what remains after the gemm is a bias per channel, ReLU and the
//! pooling. They are applied to each output as the convolution writes it (the epilogue),
//! while it is still in cache, instead of in separate passes that read and write the
//! whole activation: BatchNorm + ReLU, then the max-pool. Winograd's 2×2 output tiles are
//! the pooling windows, so there only the pooled value is written at all.
//!
//! | pass over an activation      | training graph | this op (Winograd) | this op (im2col) |
//! |------------------------------|----------------|--------------------|------------------|
//! | convolution writes           | full size      | pooled size        | full size        |
//! | BatchNorm + ReLU read, write | full size      | —                  | —                |
//! | max-pool reads, writes       | full, pooled   | —                  | full, pooled     |

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};

use super::{
    computes, forward_transformed, forward_with, unit_geometry, uses_direct, uses_winograd,
    winograd, Geometry,
};
use crate::cpu_float::CpuFloat;
use crate::cpu_storage::{map3, slice};
use crate::error::Result;
use crate::order::{Order, Orders};
use crate::precision::weight_like;

/// What the forward pass applies to each output as it writes it: `max(0, y + bias[o])`
/// for output channel `o`, then, with `pool`, the 2×2 max-pool of stride 2 (an odd last
/// row or column dropped, as `crate::max_pool_2x2`).
pub(super) struct Epilogue<'a, T> {
    pub(super) bias: &'a [T],
    pub(super) pool: bool,
}

impl<T: CpuFloat> Epilogue<'_, T> {
    /// `max(0, v + bias[channel])`; NaN gives 0, as the fused BatchNorm + ReLU.
    #[inline(always)]
    pub(super) fn apply(&self, channel: usize, v: T) -> T {
        let v = v + self.bias[channel];
        if v > T::ZERO {
            v
        } else {
            T::ZERO
        }
    }

    /// Rewrites outputs of `channel` that gemm has just written, through [`Self::apply`].
    ///
    /// # Safety
    /// Every element of `written` must be initialised.
    pub(super) unsafe fn apply_written(&self, channel: usize, written: &mut [MaybeUninit<T>]) {
        for slot in written {
            // SAFETY: initialised, by the caller's contract; `T: Copy`.
            let v = unsafe { slot.assume_init_read() };
            slot.write(self.apply(channel, v));
        }
    }

    /// Rewrites the channels of one pixel that gemm has just written, channels last,
    /// through [`Self::apply`].
    ///
    /// # Safety
    /// Every element of `pixel` must be initialised.
    pub(super) unsafe fn apply_written_pixel(&self, pixel: &mut [MaybeUninit<T>]) {
        for (channel, slot) in pixel.iter_mut().enumerate() {
            // SAFETY: initialised, by the caller's contract; `T: Copy`.
            let v = unsafe { slot.assume_init_read() };
            slot.write(self.apply(channel, v));
        }
    }

    /// Writes one pixel's channels `from` into `to`, channels last, through `epilogue`'s
    /// [`Self::apply`] when there is one.
    #[inline(always)]
    pub(super) fn write_pixel(epilogue: Option<&Self>, to: &mut [MaybeUninit<T>], from: &[T]) {
        match epilogue {
            Some(e) => {
                for (o, (to, &v)) in to.iter_mut().zip(from).enumerate() {
                    to.write(e.apply(o, v));
                }
            }
            None => {
                for (to, &v) in to.iter_mut().zip(from) {
                    to.write(v);
                }
            }
        }
    }

    /// Writes `from` into `to`, through `epilogue`'s [`Self::apply`] when there is one.
    #[inline(always)]
    pub(super) fn write(
        epilogue: Option<&Self>,
        channel: usize,
        to: &mut [MaybeUninit<T>],
        from: &[T],
    ) {
        match epilogue {
            Some(e) => {
                for (to, &v) in to.iter_mut().zip(from) {
                    to.write(e.apply(channel, v));
                }
            }
            None => {
                for (to, &v) in to.iter_mut().zip(from) {
                    to.write(v);
                }
            }
        }
    }
}

/// A block's folded weights, kept for many inference passes: `weight`
/// `(C_out, C_in, k, k)`, `bias` `(C_out)` and, for a 3×3 kernel in f32 or f64 on the
/// CPU, the kernel as the Winograd path transforms it (`U = G·g·Gᵀ`, `(16, C_out, C_in)`).
/// A forward pass would otherwise transform every kernel again: a pass over 16/9 of the
/// weights that does not shrink with the batch.
pub(crate) struct FusedWeights {
    weight: Tensor,
    bias: Tensor,
    transformed: Option<Tensor>,
}

impl FusedWeights {
    /// The weights, with the Winograd transform done where it may be used.
    pub(crate) fn new(weight: Tensor, bias: Tensor) -> Result<FusedWeights> {
        let transformed = match unit_geometry(&weight) {
            Some(g) if winograd::applies_channels_last(&g) && cpu_float(&weight) => {
                let op = TransformKernel { geometry: g };
                Some(weight.contiguous()?.apply_op1_no_bwd(&op)?)
            }
            _ => None,
        };
        Ok(FusedWeights {
            weight,
            bias,
            transformed,
        })
    }

    /// The weights alone, for the tests that compare the paths.
    #[cfg(test)]
    fn untransformed(weight: Tensor, bias: Tensor) -> FusedWeights {
        FusedWeights {
            weight,
            bias,
            transformed: None,
        }
    }

    /// The kernel, `(C_out, C_in, k, k)`.
    pub(crate) fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `maxpool?(relu(x ⊛ weight + bias))`, as [`conv2d_bias_relu`], in the dtype of `x`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        padding: usize,
        pool: bool,
        orders: Orders,
    ) -> Result<Tensor> {
        let (weight, bias) = (weight_like(&self.weight, x)?, weight_like(&self.bias, x)?);
        let transformed = self.transformed.as_ref().filter(|u| u.dtype() == x.dtype());
        conv2d_bias_relu(x, &weight, &bias, transformed, padding, pool, orders)
    }
}

/// `w → U = G·g·Gᵀ`, `(16, C_out, C_in)`, for [`FusedWeights`].
struct TransformKernel {
    geometry: Geometry,
}

impl CustomOp1 for TransformKernel {
    fn name(&self) -> &'static str {
        "ldl-winograd-kernel"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let u = match s {
            CpuStorage::F32(w) => {
                CpuStorage::F32(winograd::transform_kernel(g, slice(w, l, self.name())?))
            }
            CpuStorage::F64(w) => {
                CpuStorage::F64(winograd::transform_kernel(g, slice(w, l, self.name())?))
            }
            _ => candle_core::bail!("{}: the kernel must be f32 or f64", self.name()),
        };
        Ok((u, Shape::from((16, g.out_channels, g.in_channels))))
    }
}

/// Whether `t` is an f32 or f64 tensor on the CPU, what the fused pass computes in.
fn cpu_float(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// `relu(x ⊛ w + bias)` with stride 1 and `padding`, followed by a 2×2 max-pool when
/// `pool`, for inference: the result records no autograd graph. `w` is
/// `(C_out, C_in, k, k)` and `bias` `(C_out)`; `x` is `(N, C_in, H, W)`, or
/// `(N, H, W, C_in)` where `orders.input` is channels last, and the result likewise in
/// `orders.output`.
///
/// f32 and f64 CPU tensors of one dtype with a square kernel and `padding < k` run the
/// fused pass of the module docs. Everything else in planes runs [`crate::conv2d`],
/// candle's ops and [`crate::max_pool_2x2`], with the same results up to rounding; what
/// [`super::computes`] refuses in channels last is an error. `transformed`, `w` as
/// [`FusedWeights`] transforms it, saves the transform where the pass takes the Winograd
/// path; the results are the same bits either way.
fn conv2d_bias_relu(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    transformed: Option<&Tensor>,
    padding: usize,
    pool: bool,
    orders: Orders,
) -> Result<Tensor> {
    let Some(geometry) = fused_geometry(x, w, bias, padding, pool, orders.input) else {
        if orders != Orders::PLANES {
            return Err(candle_core::Error::Msg(format!(
                "the fused convolution cannot compute {:?} ⊛ {:?} in {orders:?}",
                x.dims(),
                w.dims()
            ))
            .into());
        }
        let y = crate::conv2d(x, w, padding)?
            .broadcast_add(&bias.reshape((1, (), 1, 1))?)?
            .relu()?;
        let y = if pool { crate::max_pool_2x2(&y)? } else { y };
        return Ok(y.detach());
    };
    // Where the direct path computes the layer, the transformed kernel goes unused.
    let winograd = uses_winograd(&geometry, orders.input) && !uses_direct(&geometry, orders, pool);
    let transformed = transformed.filter(|_| winograd);
    let op = BiasReluConv {
        geometry,
        pool,
        orders,
        transformed: transformed.is_some(),
    };
    let kernel = match transformed {
        Some(u) => {
            let (outputs, inputs) = (geometry.out_channels, geometry.in_channels);
            if u.dims() != [16, outputs, inputs] || u.dtype() != x.dtype() {
                return Err(candle_core::Error::Msg(format!(
                    "a transformed kernel {:?} {:?} for {:?} ⊛ {:?}",
                    u.dims(),
                    u.dtype(),
                    x.dims(),
                    w.dims()
                ))
                .into());
            }
            u.contiguous()?
        }
        None => w.contiguous()?,
    };
    Ok(x.contiguous()?
        .apply_op3_no_bwd(&kernel, &bias.contiguous()?, &op)?)
}

/// The geometry of the fused pass, or `None` where it does not apply.
fn fused_geometry(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    padding: usize,
    pool: bool,
    input: Order,
) -> Option<Geometry> {
    let same_dtype = x.dtype() == w.dtype() && w.dtype() == bias.dtype();
    let square_kernel = matches!(w.dims(), [_, _, kh, kw] if kh == kw && padding < *kh);
    let nonempty = x.elem_count() > 0 && w.elem_count() > 0;
    let &[n, a, b, c] = x.dims() else {
        return None;
    };
    if !(cpu_float(x) && cpu_float(w) && cpu_float(bias) && same_dtype && square_kernel && nonempty)
    {
        return None;
    }
    let planes_dims = match input {
        Order::Planes => [n, a, b, c],
        Order::ChannelsLast => [n, c, a, b],
    };
    let geometry = Geometry::of(&planes_dims, w.dims(), padding).ok()?;
    let bias_fits = bias.dims() == [geometry.out_channels];
    // Smaller outputs cannot pool: the composed path says so.
    let poolable = !pool || (geometry.out_h >= 2 && geometry.out_w >= 2);
    (bias_fits && poolable && computes(&geometry, input)).then_some(geometry)
}

/// `(x, w, bias) → maxpool?(relu(x ⊛ w + bias))`, forward only; with `transformed`,
/// `(x, U, bias)`, the kernel as [`FusedWeights`] keeps it.
struct BiasReluConv {
    geometry: Geometry,
    pool: bool,
    orders: Orders,
    transformed: bool,
}

impl CustomOp3 for BiasReluConv {
    fn name(&self) -> &'static str {
        "ldl-conv2d-bias-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, pool, orders) = (&self.geometry, self.pool, self.orders);
        let out = map3(
            self.name(),
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, w, bias| self.run(x, w, &Epilogue { bias, pool }),
            |x, w, bias| self.run(x, w, &Epilogue { bias, pool }),
        )?;
        let (h, w) = if pool {
            (g.out_h / 2, g.out_w / 2)
        } else {
            (g.out_h, g.out_w)
        };
        let shape = match orders.output {
            Order::Planes => Shape::from((g.batch, g.out_channels, h, w)),
            Order::ChannelsLast => Shape::from((g.batch, h, w, g.out_channels)),
        };
        Ok((out, shape))
    }
}

impl BiasReluConv {
    /// The pass for one dtype: `kernel` is `w`, or `U` when `transformed`.
    fn run<T: CpuFloat>(&self, x: &[T], kernel: &[T], epilogue: &Epilogue<T>) -> Vec<T> {
        let (g, orders) = (&self.geometry, self.orders);
        match self.transformed {
            true => forward_transformed(g, x, kernel, Some(epilogue), orders),
            false => forward_with(g, x, kernel, Some(epilogue), orders),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::FusedWeights;
    use crate::conv_cpu::test_values as values;
    use crate::order::{Order, Orders};

    /// `maxpool?(relu(conv(x, w) + bias))` by candle's own direct convolution and ops,
    /// in planes.
    fn composed(x: &Tensor, w: &Tensor, bias: &Tensor, pool: bool) -> Tensor {
        let y = x
            .conv2d(w, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, (), 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        if pool {
            y.max_pool2d(2).unwrap()
        } else {
            y
        }
    }

    fn to_planes(t: &Tensor) -> Tensor {
        t.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
    }

    fn to_channels_last(t: &Tensor) -> Tensor {
        t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
    }

    /// Every path of the fused op (im2col in bands and in sample groups, Winograd; with and
    /// without pooling, odd sizes; all four input and output orders) against candle's
    /// composed ops in f64. Only rounding separates them.
    #[test]
    fn every_path_and_order_matches_the_composed_ops() {
        // (batch, input channels, height, width, output channels): the first layer's 3
        // channels (im2col in planes, Winograd from channels last, as every case), a
        // small image (im2col over sample groups), 4 → 8, 8 → 12 and 8 → 32 channels
        // (im2col in planes), 16 → 32 (Winograd in both).
        let cases = [
            (2, 3, 34, 37, 16),
            (5, 3, 6, 7, 8),
            (3, 4, 9, 11, 8),
            (2, 8, 13, 10, 12),
            (2, 8, 13, 10, 32),
            (3, 16, 8, 9, 32),
        ];
        for (index, case) in cases.into_iter().enumerate() {
            check_case(case, index as f64);
        }
    }

    /// im2col unfolds planes only: a kernel Winograd does not take is refused from
    /// channels last, not computed wrongly, and computed from planes.
    #[test]
    fn a_kernel_only_im2col_computes_is_refused_from_channels_last() {
        let device = Device::Cpu;
        let x = Tensor::from_vec(values(2 * 8 * 9 * 9, 0.1), (2, 9, 9, 8), &device).unwrap();
        let kernel = Tensor::from_vec(values(8 * 8 * 25, 0.2), (8, 8, 5, 5), &device).unwrap();
        let bias = Tensor::zeros(8, DType::F64, &device).unwrap();
        let orders = Orders {
            input: Order::ChannelsLast,
            output: Order::ChannelsLast,
        };
        let weights = FusedWeights::new(kernel, bias).unwrap();
        assert!(weights.forward(&x, 2, false, orders).is_err());
        let planes = to_planes(&x);
        assert!(weights.forward(&planes, 2, false, Orders::PLANES).is_ok());
    }

    /// [`every_path_and_order_matches_the_composed_ops`] for one shape.
    fn check_case((n, c, h, w, o): (usize, usize, usize, usize, usize), seed: f64) {
        let device = Device::Cpu;
        let x = Tensor::from_vec(values(n * c * h * w, seed), (n, c, h, w), &device).unwrap();
        let kernel = Tensor::from_vec(values(o * c * 9, seed + 0.5), (o, c, 3, 3), &device);
        let kernel = (kernel.unwrap() * 0.3).unwrap();
        let bias = (Tensor::from_vec(values(o, seed + 0.25), o, &device).unwrap() * 0.2).unwrap();
        let weights = FusedWeights::new(kernel.clone(), bias.clone()).unwrap();
        assert!(
            weights.transformed.is_some(),
            "a 3×3 kernel is kept transformed"
        );
        let untransformed = FusedWeights::untransformed(kernel.clone(), bias.clone());
        let orders = [Order::Planes, Order::ChannelsLast];
        for pool in [false, true] {
            let expected = composed(&x, &kernel, &bias, pool);
            let largest = expected.abs().unwrap().max_all().unwrap();
            let scale = largest.to_scalar::<f64>().unwrap().max(1.0);
            for (input, output) in orders.into_iter().flat_map(|i| orders.map(|o| (i, o))) {
                let case = format!("{:?} pool {pool} {input:?} → {output:?}", (n, c, h, w, o));
                let source = match input {
                    Order::Planes => x.clone(),
                    Order::ChannelsLast => to_channels_last(&x),
                };
                let orders = Orders { input, output };
                let result = weights.forward(&source, 1, pool, orders).unwrap();
                assert!(!result.track_op(), "{case}: no autograd graph");
                // The kernel transformed once or on every pass: the same bits.
                let again = untransformed.forward(&source, 1, pool, orders).unwrap();
                let same = (result.flatten_all().unwrap().to_vec1::<f64>().unwrap())
                    == again.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                assert!(same, "{case}: kept and fresh kernel transforms differ");
                let result = match output {
                    Order::Planes => result,
                    Order::ChannelsLast => to_planes(&result),
                };
                assert_eq!(result.dims(), expected.dims(), "{case}");
                let gap = (&result - &expected).unwrap().abs().unwrap();
                let gap = gap.max_all().unwrap().to_scalar::<f64>().unwrap();
                assert!(gap <= 1e-13 * scale, "{case}: {gap:e}");
            }
        }
        // f32 runs the same kernels: within f32 rounding of the f64 result.
        let expected = composed(&x, &kernel, &bias, true);
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let weights = FusedWeights::new(f32(&kernel), f32(&bias)).unwrap();
        let result = weights.forward(&f32(&x), 1, true, Orders::PLANES);
        let result = result.unwrap().to_dtype(DType::F64).unwrap();
        let gap = (&result - &expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(
            gap.to_scalar::<f64>().unwrap() < 1e-5,
            "{:?} in f32",
            (n, c, h, w, o)
        );
    }
}
