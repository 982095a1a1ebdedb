//! A CPU 2-D convolution (stride 1, zero padding, no dilation, one group) whose forward
//! pass and both gradients are matrix products.
//!
//! candle 0.11's CPU convolution is fast forward, but its backward pass runs the input
//! gradient as a direct `conv_transpose2d` loop and the weight gradient as a convolution
//! whose "kernel" is the whole output image; together they cost 3–4× the forward pass.
//! Here every pass unfolds the image into columns (im2col) and calls one gemm per sample:
//!
//! - forward: `y[n] = W · cols(x[n])`, `W` viewed as `[C_out, C_in·k_h·k_w]`;
//! - weight gradient: `dW = Σ_n dy[n] · cols(x[n])ᵀ`;
//! - input gradient: `dx[n] = dy[n] ⊛ flip(W)ᵀ`, the forward path again, computed only when
//!   the input needs a gradient (never for the network's first layer, whose input is the
//!   image batch).
//!
//! Samples run in parallel on rayon with a single-threaded gemm each; a batch smaller
//! than the thread count hands the threads to gemm instead. Small images are unfolded a
//! group of samples at a time into one column matrix, so that each gemm is wide enough
//! to pay for packing the weights.

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_float::CpuFloat;
use crate::cpu_storage::{filled_by, map2};
use crate::order::{Order, Orders};
use crate::pool_cpu;
use crate::scratch::PerThread;

mod direct;
mod fused;
mod winograd;

use fused::Epilogue;
pub(crate) use fused::FusedWeights;

use crate::error::Result;

/// `x ⊛ w` with stride 1 and `padding` zeros on every side: `x` is `(N, C_in, H, W)`, `w`
/// is `(C_out, C_in, k_h, k_w)`, the result `(N, C_out, H + 2p − k_h + 1, W + 2p − k_w + 1)`.
///
/// f32 and f64 tensors on the CPU with a square kernel and `padding < k` take the gemm
/// path described in the module docs; CUDA tensors in builds with the `cudnn` feature take
/// cuDNN's forward and gradient routines (see `conv_cudnn`); everything else uses candle's
/// own `conv2d`, with identical results up to rounding.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let y = ldl_models::conv2d(&x, &w, 1)?;
/// // The centre sees all nine ones, a corner four.
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [4., 6., 4., 6., 9., 6., 4., 6., 4.]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    let square_kernel = match w.dims() {
        [_, _, kh, kw] => kh == kw && padding < *kh,
        _ => false,
    };
    // Empty tensors: candle's own path answers (gemm and chunking need sizes ≥ 1).
    let empty = x.elem_count() == 0 || w.elem_count() == 0;
    let fast = !empty
        && x.device().is_cpu()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && x.dtype() == w.dtype()
        && square_kernel;
    #[cfg(feature = "cudnn")]
    if crate::conv_cudnn::handles(x, w, padding) {
        return Ok(crate::conv_cudnn::conv2d(x, w, padding)?);
    }
    if !fast {
        return Ok(x.conv2d(w, padding, 1, 1, 1)?);
    }
    let geometry = Geometry::of(x.dims(), w.dims(), padding)?;
    // candle records the op for autograd only when `x` or `w` needs a gradient.
    let op = Forward {
        geometry,
        orders: Orders::PLANES,
    };
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, op)?)
}

/// [`conv2d`] of f32 or f64 CPU tensors with activations in `orders`: `x` is
/// `(N, H, W, C_in)` where `orders.input` is channels last, the result likewise in
/// `orders.output`; differentiable, its gradients in the same orders. Refuses what the
/// fast path cannot compute in those orders (see [`trains_in`]).
pub(crate) fn conv2d_ordered(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    orders: Orders,
) -> Result<Tensor> {
    let op = Forward::checked(x, w, padding, orders)?;
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, op)?)
}

/// Whether [`conv2d_ordered`] can compute a convolution with kernel `w` (stride 1, padding
/// 1) in `orders`, forward and backward (whether it pays: [`pays_channels_last`]).
pub(crate) fn trains_in(w: &Tensor, orders: Orders) -> bool {
    // The fast path takes square kernels with `padding < k`; the padding here is 1.
    unit_geometry(w).is_some_and(|g| {
        g.kernel_h == g.kernel_w
            && g.kernel_h > 1
            && computes(&g, orders.input)
            && computes(&g.transposed(), orders.output)
    })
}

/// The geometry of one sample through a kernel `w`, `(C_out, C_in, k_h, k_w)`, with
/// padding 1 and an input the kernel's size: what the path decisions depend on.
fn unit_geometry(w: &Tensor) -> Option<Geometry> {
    let &[out_channels, in_channels, kh, kw] = w.dims() else {
        return None;
    };
    let kernel = [out_channels, in_channels, kh, kw];
    Geometry::of(&[1, in_channels, kh, kw], &kernel, 1).ok()
}

/// Every size the three passes need.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    in_channels: usize,
    height: usize,
    width: usize,
    out_channels: usize,
    kernel_h: usize,
    kernel_w: usize,
    padding: usize,
    out_h: usize,
    out_w: usize,
}

impl Geometry {
    fn of(x: &[usize], w: &[usize], padding: usize) -> candle_core::Result<Self> {
        let (&[batch, in_channels, height, width], &[out_channels, w_in, kernel_h, kernel_w]) =
            (x, w)
        else {
            candle_core::bail!("conv2d expects 4-D input and kernel, got {x:?} and {w:?}");
        };
        if w_in != in_channels {
            candle_core::bail!(
                "conv2d: the input has {in_channels} channels but the kernel expects {w_in}"
            );
        }
        if height + 2 * padding < kernel_h || width + 2 * padding < kernel_w {
            candle_core::bail!(
                "conv2d: a {kernel_h}×{kernel_w} kernel does not fit a {height}×{width} input with padding {padding}"
            );
        }
        Ok(Geometry {
            batch,
            in_channels,
            height,
            width,
            out_channels,
            kernel_h,
            kernel_w,
            padding,
            out_h: height + 2 * padding - kernel_h + 1,
            out_w: width + 2 * padding - kernel_w + 1,
        })
    }

    /// The convolution whose forward pass is this one's input gradient: of the output
    /// gradient with the kernel flipped, channels swapped, padded by `k − 1 − p` (the
    /// fast path takes only square kernels with `p < k`).
    fn transposed(&self) -> Geometry {
        Geometry {
            batch: self.batch,
            in_channels: self.out_channels,
            height: self.out_h,
            width: self.out_w,
            out_channels: self.in_channels,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            padding: self.kernel_h - 1 - self.padding,
            out_h: self.height,
            out_w: self.width,
        }
    }

    /// Rows of the column matrix: `C_in · k_h · k_w`.
    fn patch(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Columns of the column matrix: output pixels per sample.
    fn pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    fn input_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    /// The output's shape with activations in `order`.
    fn output_shape(&self, order: Order) -> Shape {
        match order {
            Order::Planes => Shape::from((self.batch, self.out_channels, self.out_h, self.out_w)),
            Order::ChannelsLast => {
                Shape::from((self.batch, self.out_h, self.out_w, self.out_channels))
            }
        }
    }

    fn output_len(&self) -> usize {
        self.out_channels * self.pixels()
    }

    /// How many samples share one gemm. Small images make short gemms (a 4×4 output is 16
    /// columns) that spend their time packing the weights; side by side in one column
    /// matrix, a group of samples reaches [`GROUP_COLUMNS`] columns, while the batch
    /// still splits into at least one group per thread.
    fn group(&self) -> usize {
        let threads = rayon::current_num_threads().max(1);
        let wanted = GROUP_COLUMNS.div_ceil(self.pixels().max(1));
        let per_thread = self.batch.div_ceil(threads);
        wanted.min(per_thread).max(1)
    }

    /// For kernel offset `j` along a row, the output columns whose input column
    /// `ox + j − p` lies inside the image.
    fn valid_columns(&self, j: usize) -> (usize, usize) {
        // Capped: on an image narrower than the padding, no column may be valid.
        let first = self.padding.saturating_sub(j).min(self.out_w);
        let end = (self.width + self.padding)
            .saturating_sub(j)
            .min(self.out_w);
        (first, end.max(first))
    }

    /// Output rows per band when one sample is unfolded a band at a time: the band's
    /// columns take at most [`BAND_BYTES`], so that they are still in the core's cache
    /// when gemm reads them.
    fn band_rows<T>(&self) -> usize {
        let row_bytes = self.patch() * self.out_w * std::mem::size_of::<T>();
        (BAND_BYTES / row_bytes.max(1)).clamp(1, self.out_h.max(1))
    }

    /// Unfolds output rows `rows` of one sample `(C_in, H, W)` into `cols`, a row-major
    /// `[patch, row_len]` matrix, from column `first_column` on (`rows.len() · out_w`
    /// columns).
    fn im2col<T: CpuFloat>(
        &self,
        image: &[T],
        cols: &mut [T],
        row_len: usize,
        first_column: usize,
        rows: Range<usize>,
    ) {
        let columns = rows.len() * self.out_w;
        for c in 0..self.in_channels {
            let plane = &image[c * self.height * self.width..][..self.height * self.width];
            for i in 0..self.kernel_h {
                for j in 0..self.kernel_w {
                    let row = (c * self.kernel_h + i) * self.kernel_w + j;
                    let row = &mut cols[row * row_len + first_column..][..columns];
                    let (first, end) = self.valid_columns(j);
                    for (band_row, oy) in rows.clone().enumerate() {
                        let out = &mut row[band_row * self.out_w..][..self.out_w];
                        let iy = oy + i;
                        if iy < self.padding || iy - self.padding >= self.height {
                            fill_short(out, T::ZERO);
                            continue;
                        }
                        let line = &plane[(iy - self.padding) * self.width..][..self.width];
                        fill_short(&mut out[..first], T::ZERO);
                        fill_short(&mut out[end..], T::ZERO);
                        if end > first {
                            let start = first + j - self.padding;
                            copy_short(&mut out[first..end], &line[start..start + end - first]);
                        }
                    }
                }
            }
        }
    }
}

/// The most bytes of columns one band of a sample unfolds into (see
/// [`Geometry::band_rows`]): well inside a core's L2 cache.
const BAND_BYTES: usize = 256 * 1024;

/// Copies `src` into `dst` (equal lengths) with inline moves of fixed-size blocks.
///
/// im2col copies one short run per kernel offset and output row (a 64-pixel row is 64
/// values, an 8-pixel row 8): `copy_from_slice` calls `memcpy` for each, and the calls
/// cost more than the copying. Lengths between blocks are covered by two overlapping
/// blocks, one from each end.
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    #[inline(always)]
    fn block<T: Copy, const N: usize>(dst: &mut [T], src: &[T], at: usize) {
        let to: &mut [T; N] = (&mut dst[at..at + N]).try_into().expect("block in range");
        let from: &[T; N] = (&src[at..at + N]).try_into().expect("block in range");
        *to = *from;
    }
    let n = dst.len();
    assert_eq!(n, src.len(), "copy_short lengths");
    match n {
        0 => {}
        1 => dst[0] = src[0],
        2..4 => {
            block::<T, 1>(dst, src, 0);
            block::<T, 1>(dst, src, n / 2);
            block::<T, 1>(dst, src, n - 1);
        }
        4..8 => {
            block::<T, 4>(dst, src, 0);
            block::<T, 4>(dst, src, n - 4);
        }
        8..16 => {
            block::<T, 8>(dst, src, 0);
            block::<T, 8>(dst, src, n - 8);
        }
        _ => {
            let mut at = 0;
            while at + 16 <= n {
                block::<T, 16>(dst, src, at);
                at += 16;
            }
            if at < n {
                block::<T, 16>(dst, src, n - 16);
            }
        }
    }
}

/// `dst.fill(value)` with inline stores, for the same reason as [`copy_short`].
#[inline(always)]
fn fill_short<T: Copy>(dst: &mut [T], value: T) {
    let n = dst.len();
    if n < 16 {
        for slot in dst.iter_mut() {
            // Volatile: keeps LLVM from turning this short loop back into a `memset` call.
            // SAFETY: `slot` is a valid, exclusive reference.
            unsafe { std::ptr::write_volatile(slot, value) };
        }
        return;
    }
    let mut at = 0;
    while at + 16 <= n {
        let to: &mut [T; 16] = (&mut dst[at..at + 16]).try_into().expect("block in range");
        *to = [value; 16];
        at += 16;
    }
    if at < n {
        let to: &mut [T; 16] = (&mut dst[n - 16..]).try_into().expect("block in range");
        *to = [value; 16];
    }
}

/// Columns a gemm should see at least (see [`Geometry::group`]): measured at
/// TinyAgeNet's and ThinAgeNet's shapes, gains stop around here.
const GROUP_COLUMNS: usize = 512;

/// A row-major matrix view for [`matmul`]: data, rows, columns, the distance between
/// rows (at least `cols`), and whether to read it transposed.
struct View<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    transposed: bool,
}

impl<'a, T> View<'a, T> {
    /// A dense `rows × cols` matrix.
    fn dense(data: &'a [T], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            transposed: false,
        }
    }

    /// The same matrix, read transposed.
    fn t(self) -> Self {
        View {
            transposed: !self.transposed,
            ..self
        }
    }

    /// (row stride, column stride) of the logical matrix.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.row_stride as isize)
        } else {
            (self.row_stride as isize, 1)
        }
    }

    /// Whether every element the strides reach lies inside the data.
    fn fits(&self) -> bool {
        let (rows, cols) = self.shape();
        let (rs, cs) = self.strides();
        rows == 0
            || cols == 0
            || (rows - 1) * (rs as usize) + (cols - 1) * (cs as usize) < self.data.len()
    }

    /// Logical (rows, columns).
    fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
}

/// `dst = lhs · rhs`, `dst` an `m × n` matrix whose rows are `dst_stride` apart; `dst`
/// need not be initialised (gemm only writes it).
fn matmul_into<T: CpuFloat>(
    dst: &mut [MaybeUninit<T>],
    dst_stride: usize,
    lhs: View<T>,
    rhs: View<T>,
    threads: usize,
) {
    // SAFETY: gemm does not read `dst` when not accumulating.
    unsafe {
        gemm_strided(
            dst.as_mut_ptr().cast(),
            dst.len(),
            dst_stride,
            lhs,
            rhs,
            false,
            threads,
        )
    }
}

/// `dst = [dst +] lhs · rhs` on an initialised `dst`, as in [`matmul_into`].
fn matmul<T: CpuFloat>(
    dst: &mut [T],
    dst_stride: usize,
    lhs: View<T>,
    rhs: View<T>,
    accumulate: bool,
    threads: usize,
) {
    // SAFETY: `dst` is an initialised, exclusively borrowed slice.
    let (ptr, len) = (dst.as_mut_ptr(), dst.len());
    unsafe { gemm_strided(ptr, len, dst_stride, lhs, rhs, accumulate, threads) }
}

/// gemm on `dst`, `dst_len` elements at `dst`, exclusively borrowed.
///
/// # Safety
/// `dst` must be valid for writes of `dst_len` elements, and initialised if `accumulate`.
unsafe fn gemm_strided<T: CpuFloat>(
    dst: *mut T,
    dst_len: usize,
    dst_stride: usize,
    lhs: View<T>,
    rhs: View<T>,
    accumulate: bool,
    threads: usize,
) {
    let (m, k) = lhs.shape();
    let (k2, n) = rhs.shape();
    assert!(
        k == k2 && n <= dst_stride && (m == 0 || (m - 1) * dst_stride + n <= dst_len),
        "matmul shapes"
    );
    assert!(lhs.fits() && rhs.fits(), "matmul buffers");
    let (lhs_rs, lhs_cs) = lhs.strides();
    let (rhs_rs, rhs_cs) = rhs.strides();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index gemm computes from these strides inside
    // the buffers; `dst` is exclusively borrowed and does not alias the inputs. Without
    // `accumulate`, gemm sets its `alpha` to zero and never reads `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Threads for gemm when the batch is too small to occupy rayon's pool sample by sample.
fn gemm_threads(batch: usize) -> usize {
    let threads = rayon::current_num_threads();
    if batch >= threads {
        1
    } else {
        threads
    }
}

/// The first `len` elements of `buffer`, grown (never shrunk) to hold them: a sample's
/// last band is shorter than the others, and the next sample's first band would
/// otherwise zero the difference again.
fn grow<T: CpuFloat>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::ZERO);
    }
    &mut buffer[..len]
}

/// Unfolds a group of whole samples side by side: `[patch, samples · pixels]`; returns
/// the row length.
fn group_columns<T: CpuFloat>(g: &Geometry, images: &[T], cols: &mut Vec<T>) -> usize {
    let samples = images.len() / g.input_len();
    let row_len = samples * g.pixels();
    let cols = grow(cols, g.patch() * row_len);
    for (s, image) in images.chunks(g.input_len()).enumerate() {
        g.im2col(image, cols, row_len, s * g.pixels(), 0..g.out_h);
    }
    row_len
}

/// The bands of output rows one sample is unfolded in.
fn bands<T>(g: &Geometry) -> impl Iterator<Item = Range<usize>> {
    let rows = g.band_rows::<T>();
    let out_h = g.out_h;
    (0..out_h)
        .step_by(rows)
        .map(move |start| start..(start + rows).min(out_h))
}

/// The weights as the left operand: `[C_out, patch]`.
fn weights<'a, T>(g: &Geometry, w: &'a [T]) -> View<'a, T> {
    View::dense(w, g.out_channels, g.patch())
}

/// Whether a block whose kernel is `w`, `(C_out, C_in, k_h, k_w)`, should read
/// channels-last input (training and inference): Winograd computes it from channels last,
/// and its channels are enough for that to beat planes on im2col (see
/// `winograd::MIN_CHANNEL_PAIRS_CHANNELS_LAST`).
pub(crate) fn pays_channels_last(w: &Tensor) -> bool {
    unit_geometry(w).is_some_and(|g| winograd::pays_channels_last(&g))
}

/// Whether the forward pass and the weight gradient of `g` from input in `order` take
/// the Winograd path: from planes where it pays (see `winograd::applies`), from
/// channels last always (im2col unfolds planes only).
fn uses_winograd(g: &Geometry, order: Order) -> bool {
    match order {
        Order::Planes => winograd::applies(g),
        Order::ChannelsLast => winograd::applies_channels_last(g),
    }
}

/// Whether [`forward_with`] takes the direct path (see `direct`) for `g` in `orders`,
/// `pool` saying whether the pass pools its output (inference): channels last both ways,
/// a kernel and channel counts `direct::applies` takes, no pooling. That is the forward
/// pass, the input gradient (a forward pass of the flipped kernel) and the weight
/// gradient (`direct::weight_gradient`) in training. A pooling pass stays on Winograd, which pools
/// as it writes its 2×2 tiles where the direct path would write every output and pool in
/// a second pass (TinyAgeNet's inference was slower that way).
fn uses_direct(g: &Geometry, orders: Orders, pool: bool) -> bool {
    orders.input == Order::ChannelsLast
        && orders.output == Order::ChannelsLast
        && !pool
        && direct::applies(g)
}

/// Whether [`forward_with`] computes `g` from input in `order`: any convolution from
/// planes, and from channels last what Winograd computes (a 3×3 kernel; im2col unfolds
/// planes only).
fn computes(g: &Geometry, order: Order) -> bool {
    order == Order::Planes || winograd::applies_channels_last(g)
}

/// `y = W · cols(x)`, a tile at a time: each sample in bands of output rows whose columns
/// stay in cache, or, for small images, groups of samples side by side (see
/// [`Geometry::group`]); or by Winograd (see `winograd`). With `epilogue` (inference,
/// see [`fused`]) applied to every output as it is written, and activations in
/// `orders`; with the epilogue's pooling, the result is pooled to `⌊H/2⌋ × ⌊W/2⌋`. Input
/// in channels last needs [`computes`].
fn forward_with<T: CpuFloat>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    epilogue: Option<&Epilogue<T>>,
    orders: Orders,
) -> Vec<T> {
    // Every output sample pairs with an input sample below (the zip would stop short).
    assert_eq!(x.len(), g.batch * g.input_len(), "conv2d input length");
    if uses_direct(g, orders, epilogue.is_some_and(|e| e.pool)) {
        return direct::forward(g, x, w, epilogue);
    }
    if uses_winograd(g, orders.input) {
        let u = winograd::transform_kernel(g, w);
        return winograd::forward(g, x, &u, epilogue, orders);
    }
    assert_eq!(orders.input, Order::Planes, "im2col unfolds planes only");
    let y = im2col_forward(g, x, w, epilogue, orders.output);
    let size = (g.out_h, g.out_w);
    match (epilogue, orders.output) {
        // Winograd pools as it writes its 2×2 tiles; this path's bands need not align
        // with the pooling windows, so it pools in a second pass.
        (Some(e), Order::Planes) if e.pool => pool_cpu::pool(&y, size),
        (Some(e), Order::ChannelsLast) if e.pool => {
            pool_cpu::pool_channels_last(&y, size, g.out_channels)
        }
        _ => y,
    }
}

/// [`forward_with`] on the Winograd path, with the kernel already transformed: `u` is
/// `winograd::transform_kernel` of the weights, `[16][C_out][C_in]`.
fn forward_transformed<T: CpuFloat>(
    g: &Geometry,
    x: &[T],
    u: &[T],
    epilogue: Option<&Epilogue<T>>,
    orders: Orders,
) -> Vec<T> {
    assert!(
        uses_winograd(g, orders.input),
        "a transformed kernel needs Winograd"
    );
    assert_eq!(x.len(), g.batch * g.input_len(), "conv2d input length");
    assert_eq!(
        u.len(),
        16 * g.out_channels * g.in_channels,
        "winograd kernel length"
    );
    winograd::forward(g, x, u, epilogue, orders)
}

/// The im2col half of [`forward_with`], with `epilogue`'s bias and ReLU (not its pool),
/// from planes to `output` order.
fn im2col_forward<T: CpuFloat>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    epilogue: Option<&Epilogue<T>>,
    output: Order,
) -> Vec<T> {
    let len = g.batch * g.output_len();
    let group = g.group();
    let threads = gemm_threads(g.batch.div_ceil(group));
    let buffers = PerThread::<(Vec<T>, Vec<T>)>::new();
    let task = Im2colTask {
        g,
        w,
        epilogue,
        output,
        threads,
    };
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(group * g.output_len())
            .zip(x.par_chunks(group * g.input_len()))
            .with_max_len(1)
            .for_each(|(out, images)| {
                buffers.with(|(cols, products)| match group {
                    1 => task.bands(images, out, cols),
                    _ => task.group(images, out, cols, products),
                })
            })
    };
    // SAFETY: `fill` writes all `len` elements: the chunks cover `y`, one group of
    // samples each, and pair with as many input chunks (asserted by the caller); see
    // `Im2colTask::bands` and `Im2colTask::group` for what each task writes.
    unsafe { filled_by(len, fill) }
}

/// What every task of [`im2col_forward`] shares.
struct Im2colTask<'a, T> {
    g: &'a Geometry,
    w: &'a [T],
    epilogue: Option<&'a Epilogue<'a, T>>,
    output: Order,
    threads: usize,
}

impl<T: CpuFloat> Im2colTask<'_, T> {
    /// One sample, a band of output rows at a time; writes every output of the sample:
    /// the bands cover every output row, and gemm writes each band in every channel (the
    /// epilogue only rewrites what gemm wrote).
    fn bands(&self, image: &[T], out: &mut [MaybeUninit<T>], cols: &mut Vec<T>) {
        let g = self.g;
        let (pixels, channels) = (g.pixels(), g.out_channels);
        for rows in bands::<T>(g) {
            let columns = rows.len() * g.out_w;
            let cols = grow(cols, g.patch() * columns);
            g.im2col(image, cols, columns, 0, rows.clone());
            let cols = View::dense(cols, g.patch(), columns);
            let first = rows.start * g.out_w;
            match self.output {
                Order::Planes => {
                    let dst = &mut out[first..];
                    matmul_into(dst, pixels, weights(g, self.w), cols, self.threads);
                }
                Order::ChannelsLast => {
                    // `[pixels, C_out] = colsᵀ · Wᵀ`: the band's pixels, channels last.
                    let dst = &mut out[first * channels..][..columns * channels];
                    matmul_into(
                        dst,
                        channels,
                        cols.t(),
                        weights(g, self.w).t(),
                        self.threads,
                    );
                }
            }
            let Some(e) = self.epilogue else {
                continue;
            };
            // While the band is still in cache.
            match self.output {
                Order::Planes => {
                    for o in 0..channels {
                        let written = &mut out[o * pixels + first..][..columns];
                        // SAFETY: gemm has just written the band's outputs of channel `o`.
                        unsafe { e.apply_written(o, written) };
                    }
                }
                Order::ChannelsLast => {
                    let band = &mut out[first * channels..][..columns * channels];
                    for pixel in band.chunks_exact_mut(channels) {
                        // SAFETY: gemm has just written every channel of the band's pixels.
                        unsafe { e.apply_written_pixel(pixel) };
                    }
                }
            }
        }
    }

    /// A group of samples side by side in one gemm; writes every output of the group:
    /// the products are copied to every channel of every sample.
    fn group(
        &self,
        images: &[T],
        out: &mut [MaybeUninit<T>],
        cols: &mut Vec<T>,
        products: &mut Vec<T>,
    ) {
        let g = self.g;
        let (pixels, channels) = (g.pixels(), g.out_channels);
        let row_len = group_columns(g, images, cols);
        let products = grow(products, channels * row_len);
        let cols = View::dense(&cols[..], g.patch(), row_len);
        if self.output == Order::ChannelsLast {
            // `[samples · pixels, C_out]`: the group's outputs, channels last, in order.
            matmul(
                products,
                channels,
                cols.t(),
                weights(g, self.w).t(),
                false,
                self.threads,
            );
            let pixels = out
                .chunks_mut(channels)
                .zip(products.chunks_exact(channels));
            for (to, from) in pixels {
                Epilogue::write_pixel(self.epilogue, to, from);
            }
            return;
        }
        // `[C_out, samples · pixels]`, spread per sample.
        matmul(
            products,
            row_len,
            weights(g, self.w),
            cols,
            false,
            self.threads,
        );
        for (s, sample) in out.chunks_mut(g.output_len()).enumerate() {
            for (o, channel) in sample.chunks_mut(pixels).enumerate() {
                let from = &products[o * row_len + s * pixels..][..pixels];
                Epilogue::write(self.epilogue, o, channel, from);
            }
        }
    }
}

/// `dW = Σ dy · cols(x)ᵀ`, tiled as [`forward_with`].
fn weight_gradient<T: CpuFloat>(g: &Geometry, x: &[T], dy: &[T], orders: Orders) -> Vec<T> {
    if uses_direct(g, orders, false) {
        return direct::weight_gradient(g, x, dy);
    }
    if uses_winograd(g, orders.input) {
        return winograd::weight_gradient(g, x, dy, orders);
    }
    assert_eq!(orders.input, Order::Planes, "im2col unfolds planes only");
    let len = g.out_channels * g.patch();
    let group = g.group();
    let threads = gemm_threads(g.batch.div_ceil(group));
    // dWᵀ [patch, C_out] = Σ_tiles cols · dyᵀ: gemm reduces over the pixels several
    // times faster in this orientation than as dy · colsᵀ.
    let buffers = PerThread::<(Vec<T>, Vec<T>)>::new();
    let transposed = summed_over_tasks(g, (x, dy), group, len, |images, grads, dw| {
        buffers.with(|(cols, gathered)| {
            let grads = (grads, orders.output);
            add_weight_gradient(g, images, grads, dw, cols, gathered, threads)
        })
    });
    let mut dw = vec![T::ZERO; len];
    for r in 0..g.patch() {
        for o in 0..g.out_channels {
            dw[o * g.patch() + r] = transposed[r * g.out_channels + o];
        }
    }
    dw
}

/// The sum over the batch, in tasks of `samples` samples each, of what `add(inputs,
/// output gradients, sum)` adds to a task's `len` values: the weight gradients' reduction.
/// Each task's sum starts from zero and the sums meet in a fixed tree (the tasks are split
/// down to one each), so the result does not depend on which thread ran what; scratch
/// can be per thread.
fn summed_over_tasks<T: CpuFloat>(
    g: &Geometry,
    (x, dy): (&[T], &[T]),
    samples: usize,
    len: usize,
    add: impl Fn(&[T], &[T], &mut [T]) + Sync + Send,
) -> Vec<T> {
    // Every sample's input pairs with its output gradient (the zip would stop short).
    assert_eq!(x.len(), g.batch * g.input_len(), "conv2d input length");
    assert_eq!(dy.len(), g.batch * g.output_len(), "conv2d gradient length");
    x.par_chunks(samples * g.input_len())
        .zip(dy.par_chunks(samples * g.output_len()))
        .with_max_len(1)
        .fold(
            || vec![T::ZERO; len],
            |mut sum, (images, grads)| {
                add(images, grads, &mut sum);
                sum
            },
        )
        .reduce(
            || vec![T::ZERO; len],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                a
            },
        )
}

/// `dWᵀ += Σ cols · dyᵀ` over one task's samples (`images`, in planes, and their output
/// gradients `grads` in their order): a lone sample a band at a time, a group of samples
/// side by side.
fn add_weight_gradient<T: CpuFloat>(
    g: &Geometry,
    images: &[T],
    (grads, order): (&[T], Order),
    dw: &mut [T],
    cols: &mut Vec<T>,
    gathered: &mut Vec<T>,
    threads: usize,
) {
    let (pixels, channels) = (g.pixels(), g.out_channels);
    if g.group() == 1 {
        for rows in bands::<T>(g) {
            let columns = rows.len() * g.out_w;
            let cols = grow(cols, g.patch() * columns);
            g.im2col(images, cols, columns, 0, rows.clone());
            // The band of the output gradient as `dyᵀ`, `[columns, C_out]`.
            let grad = match order {
                // `[C_out, columns]`, rows `pixels` apart, read transposed.
                Order::Planes => View {
                    data: &grads[rows.start * g.out_w..],
                    rows: channels,
                    cols: columns,
                    row_stride: pixels,
                    transposed: false,
                }
                .t(),
                Order::ChannelsLast => {
                    View::dense(&grads[rows.start * g.out_w * channels..], columns, channels)
                }
            };
            let lhs = View::dense(cols, g.patch(), columns);
            matmul(dw, channels, lhs, grad, true, threads);
        }
        return;
    }
    let row_len = group_columns(g, images, cols);
    let lhs = View::dense(&cols[..], g.patch(), row_len);
    if order == Order::ChannelsLast {
        // The group's gradients, channels last, are `dyᵀ` as they lie.
        matmul(
            dw,
            channels,
            lhs,
            View::dense(grads, row_len, channels),
            true,
            threads,
        );
        return;
    }
    // The group's output gradients in the columns' layout.
    let gathered = grow(gathered, channels * row_len);
    for (s, sample) in grads.chunks(g.output_len()).enumerate() {
        for (o, channel) in sample.chunks(pixels).enumerate() {
            gathered[o * row_len + s * pixels..][..pixels].copy_from_slice(channel);
        }
    }
    let grad = View::dense(gathered, channels, row_len);
    matmul(dw, channels, lhs, grad.t(), true, threads);
}

/// `dx = dy ⊛ flip(W)ᵀ`: the input gradient of a stride-1 convolution is a convolution
/// of the output gradient with the kernel flipped in space and with input and output
/// channels swapped, padded by `k − 1 − p`. Running it through the forward path replaces
/// a scatter-add (col2im) with a copy (im2col).
fn input_gradient<T: CpuFloat>(g: &Geometry, dy: &[T], w: &[T], orders: Orders) -> Vec<T> {
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let mut flipped = vec![T::ZERO; w.len()];
    // In parallel over the new output channels (a serial loop here was work the calling
    // thread did alone while the pool waited).
    flipped
        .par_chunks_mut(g.out_channels * kh * kw)
        .enumerate()
        .for_each(|(c, flipped)| {
            for o in 0..g.out_channels {
                for i in 0..kh {
                    for j in 0..kw {
                        flipped[(o * kh + (kh - 1 - i)) * kw + (kw - 1 - j)] =
                            w[((o * g.in_channels + c) * kh + i) * kw + j];
                    }
                }
            }
        });
    let backwards = Orders {
        input: orders.output,
        output: orders.input,
    };
    forward_with(&g.transposed(), dy, &flipped, None, backwards)
}

/// Deterministic values in [−1, 1] that no two positions share by accident, for the
/// convolution tests.
#[cfg(test)]
fn test_values(count: usize, seed: f64) -> Vec<f64> {
    (0..count)
        .map(|i| ((i as f64 + 1.0) * 0.618_033_988_7 + seed).sin())
        .collect()
}

/// The forward op; its backward applies [`WeightGradient`] and [`InputGradient`].
pub(crate) struct Forward {
    geometry: Geometry,
    orders: Orders,
}

impl Forward {
    /// The op [`conv2d_ordered`] applies to `x` and `w`, or the reason it cannot.
    pub(crate) fn checked(x: &Tensor, w: &Tensor, padding: usize, orders: Orders) -> Result<Self> {
        let &[n, a, b, c] = x.dims() else {
            return Err(candle_core::Error::Msg(format!(
                "conv2d expects 4-D input, got {:?}",
                x.dims()
            ))
            .into());
        };
        let planes_dims = match orders.input {
            Order::Planes => [n, a, b, c],
            Order::ChannelsLast => [n, c, a, b],
        };
        let geometry = Geometry::of(&planes_dims, w.dims(), padding)?;
        let cpu_float = |t: &Tensor| {
            t.device().is_cpu()
                && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        };
        let fits = cpu_float(x)
            && x.dtype() == w.dtype()
            && x.elem_count() > 0
            && w.elem_count() > 0
            && matches!(w.dims(), [_, _, kh, kw] if kh == kw && padding < *kh)
            && computes(&geometry, orders.input)
            && computes(&geometry.transposed(), orders.output);
        if !fits {
            return Err(candle_core::Error::Msg(format!(
                "the CPU convolution cannot compute {:?} ⊛ {:?} in {orders:?}",
                x.dims(),
                w.dims()
            ))
            .into());
        }
        Ok(Forward { geometry, orders })
    }
}

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "ldl-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, orders) = (&self.geometry, self.orders);
        let out = map2(
            "conv2d",
            (s1, l1),
            (s2, l2),
            |x, w| forward_with(g, x, w, None, orders),
            |x, w| forward_with(g, x, w, None, orders),
        )?;
        Ok((out, g.output_shape(orders.output)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (geometry, orders) = (self.geometry, self.orders);
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &WeightGradient { geometry, orders })?)
        } else {
            None
        };
        // The first layer's input is data: skipping its gradient saves a full gemm and
        // col2im over the largest image of the network.
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &InputGradient { geometry, orders })?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `(x, dy) → dW`.
struct WeightGradient {
    geometry: Geometry,
    orders: Orders,
}

impl CustomOp2 for WeightGradient {
    fn name(&self) -> &'static str {
        "ldl-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, orders) = (&self.geometry, self.orders);
        let out = map2(
            "conv2d",
            (s1, l1),
            (s2, l2),
            |x, dy| weight_gradient(g, x, dy, orders),
            |x, dy| weight_gradient(g, x, dy, orders),
        )?;
        let shape = (g.out_channels, g.in_channels, g.kernel_h, g.kernel_w);
        Ok((out, Shape::from(shape)))
    }
}

/// `(dy, W) → dx`.
struct InputGradient {
    geometry: Geometry,
    orders: Orders,
}

impl CustomOp2 for InputGradient {
    fn name(&self) -> &'static str {
        "ldl-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, orders) = (&self.geometry, self.orders);
        let out = map2(
            "conv2d",
            (s1, l1),
            (s2, l2),
            |dy, w| input_gradient(g, dy, w, orders),
            |dy, w| input_gradient(g, dy, w, orders),
        )?;
        Ok((out, g.transposed().output_shape(orders.input)))
    }
}
