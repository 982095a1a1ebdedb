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
//! than the thread count hands the threads to gemm instead.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_storage::slice;

use crate::error::Result;

/// `x ⊛ w` with stride 1 and `padding` zeros on every side: `x` is `(N, C_in, H, W)`, `w`
/// is `(C_out, C_in, k_h, k_w)`, the result `(N, C_out, H + 2p − k_h + 1, W + 2p − k_w + 1)`.
///
/// f32 and f64 tensors on the CPU with a square kernel and `padding < k` take the gemm
/// path described in the module docs; everything else uses candle's own `conv2d`, with
/// identical results up to rounding.
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
    if !fast {
        return Ok(x.conv2d(w, padding, 1, 1, 1)?);
    }
    let geometry = Geometry::of(x.dims(), w.dims(), padding)?;
    // candle records the op for autograd only when `x` or `w` needs a gradient.
    Ok(x.contiguous()?
        .apply_op2(&w.contiguous()?, Forward(geometry))?)
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

    fn output_len(&self) -> usize {
        self.out_channels * self.pixels()
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

    /// Unfolds one sample `(C_in, H, W)` into `cols`, `[patch, pixels]` row-major.
    fn im2col<T: Float>(&self, image: &[T], cols: &mut [T]) {
        let pixels = self.pixels();
        for c in 0..self.in_channels {
            let plane = &image[c * self.height * self.width..][..self.height * self.width];
            for i in 0..self.kernel_h {
                for j in 0..self.kernel_w {
                    let row = (c * self.kernel_h + i) * self.kernel_w + j;
                    let row = &mut cols[row * pixels..][..pixels];
                    let (first, end) = self.valid_columns(j);
                    for oy in 0..self.out_h {
                        let out = &mut row[oy * self.out_w..][..self.out_w];
                        let iy = oy + i;
                        if iy < self.padding || iy - self.padding >= self.height {
                            out.fill(T::ZERO);
                            continue;
                        }
                        let line = &plane[(iy - self.padding) * self.width..][..self.width];
                        out[..first].fill(T::ZERO);
                        out[end..].fill(T::ZERO);
                        if end > first {
                            let start = first + j - self.padding;
                            out[first..end].copy_from_slice(&line[start..start + end - first]);
                        }
                    }
                }
            }
        }
    }
}

/// The float types the gemm path handles.
trait Float: Copy + Send + Sync + std::ops::AddAssign + 'static {
    const ZERO: Self;
    const ONE: Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// A row-major matrix view for [`matmul`]: data, rows, columns, and whether to read it
/// transposed.
struct View<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<T> View<'_, T> {
    /// (row stride, column stride) of the logical matrix.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.cols as isize)
        } else {
            (self.cols as isize, 1)
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

/// `dst (m×n, row-major) = [dst +] lhs · rhs`.
fn matmul<T: Float>(dst: &mut [T], lhs: View<T>, rhs: View<T>, accumulate: bool, threads: usize) {
    let (m, k) = lhs.shape();
    let (k2, n) = rhs.shape();
    assert!(k == k2 && dst.len() == m * n, "matmul shapes");
    assert!(lhs.fits() && rhs.fits(), "matmul buffers");
    let (lhs_rs, lhs_cs) = lhs.strides();
    let (rhs_rs, rhs_cs) = rhs.strides();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index gemm computes from these strides inside
    // the slices; `dst` is exclusively borrowed and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
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

/// Runs `f` on the f32 or f64 slices of two storages and wraps the result.
fn dispatch2(
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
    f32_op: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_op: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<CpuStorage> {
    match (a.0, b.0) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => Ok(CpuStorage::F32(f32_op(
            slice(x, a.1, "conv2d")?,
            slice(y, b.1, "conv2d")?,
        ))),
        (CpuStorage::F64(x), CpuStorage::F64(y)) => Ok(CpuStorage::F64(f64_op(
            slice(x, a.1, "conv2d")?,
            slice(y, b.1, "conv2d")?,
        ))),
        _ => candle_core::bail!("conv2d: both tensors must be f32 or both f64"),
    }
}

fn forward<T: Float>(g: &Geometry, x: &[T], w: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; g.batch * g.output_len()];
    let threads = gemm_threads(g.batch);
    y.par_chunks_mut(g.output_len())
        .zip(x.par_chunks(g.input_len()))
        .with_max_len(1)
        .for_each_init(
            || vec![T::ZERO; g.patch() * g.pixels()],
            |cols, (out, image)| {
                g.im2col(image, cols);
                matmul(
                    out,
                    View {
                        data: w,
                        rows: g.out_channels,
                        cols: g.patch(),
                        transposed: false,
                    },
                    View {
                        data: cols,
                        rows: g.patch(),
                        cols: g.pixels(),
                        transposed: false,
                    },
                    false,
                    threads,
                );
            },
        );
    y
}

fn weight_gradient<T: Float>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let len = g.out_channels * g.patch();
    let threads = gemm_threads(g.batch);
    // dWᵀ [patch, C_out] = Σ_n cols(x[n]) · dy[n]ᵀ: gemm reduces over the pixels several
    // times faster in this orientation than as dy[n] · cols(x[n])ᵀ.
    let transposed = x
        .par_chunks(g.input_len())
        .zip(dy.par_chunks(g.output_len()))
        .with_max_len(1)
        .fold(
            || (vec![T::ZERO; len], vec![T::ZERO; g.patch() * g.pixels()]),
            |(mut dw, mut cols), (image, grad)| {
                g.im2col(image, &mut cols);
                matmul(
                    &mut dw,
                    View {
                        data: &cols,
                        rows: g.patch(),
                        cols: g.pixels(),
                        transposed: false,
                    },
                    View {
                        data: grad,
                        rows: g.out_channels,
                        cols: g.pixels(),
                        transposed: true,
                    },
                    true,
                    threads,
                );
                (dw, cols)
            },
        )
        .map(|(dw, _)| dw)
        .reduce(
            || vec![T::ZERO; len],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                a
            },
        );
    let mut dw = vec![T::ZERO; len];
    for r in 0..g.patch() {
        for o in 0..g.out_channels {
            dw[o * g.patch() + r] = transposed[r * g.out_channels + o];
        }
    }
    dw
}

/// `dx = dy ⊛ flip(W)ᵀ`: the input gradient of a stride-1 convolution is a convolution
/// of the output gradient with the kernel flipped in space and with input and output
/// channels swapped, padded by `k − 1 − p`. Running it through the forward path replaces
/// a scatter-add (col2im) with a copy (im2col).
fn input_gradient<T: Float>(g: &Geometry, dy: &[T], w: &[T]) -> Vec<T> {
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let mut flipped = vec![T::ZERO; w.len()];
    for o in 0..g.out_channels {
        for c in 0..g.in_channels {
            for i in 0..kh {
                for j in 0..kw {
                    flipped[((c * g.out_channels + o) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)] =
                        w[((o * g.in_channels + c) * kh + i) * kw + j];
                }
            }
        }
    }
    let transposed = Geometry {
        batch: g.batch,
        in_channels: g.out_channels,
        height: g.out_h,
        width: g.out_w,
        out_channels: g.in_channels,
        kernel_h: kh,
        kernel_w: kw,
        // `conv2d` takes this path only for square kernels with p < k.
        padding: kh - 1 - g.padding,
        out_h: g.height,
        out_w: g.width,
    };
    forward(&transposed, dy, &flipped)
}

/// The forward op; its backward applies [`WeightGradient`] and [`InputGradient`].
struct Forward(Geometry);

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
        let g = &self.0;
        let out = dispatch2(
            (s1, l1),
            (s2, l2),
            |x, w| forward(g, x, w),
            |x, w| forward(g, x, w),
        )?;
        Ok((
            out,
            Shape::from((g.batch, g.out_channels, g.out_h, g.out_w)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &WeightGradient(self.0))?)
        } else {
            None
        };
        // The first layer's input is data: skipping its gradient saves a full gemm and
        // col2im over the largest image of the network.
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &InputGradient(self.0))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `(x, dy) → dW`.
struct WeightGradient(Geometry);

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
        let g = &self.0;
        let out = dispatch2(
            (s1, l1),
            (s2, l2),
            |x, dy| weight_gradient(g, x, dy),
            |x, dy| weight_gradient(g, x, dy),
        )?;
        let shape = (g.out_channels, g.in_channels, g.kernel_h, g.kernel_w);
        Ok((out, Shape::from(shape)))
    }
}

/// `(dy, W) → dx`.
struct InputGradient(Geometry);

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
        let g = &self.0;
        let out = dispatch2(
            (s1, l1),
            (s2, l2),
            |dy, w| input_gradient(g, dy, w),
            |dy, w| input_gradient(g, dy, w),
        )?;
        let shape = (g.batch, g.in_channels, g.height, g.width);
        Ok((out, Shape::from(shape)))
    }
}
