//! Direct 3×3 convolution of channels-last activations, for layers with too few channels
//! for Winograd to pay: TinyAgeNet's 16 → 16 layer at 64×64.
//!
//! Winograd's transforms cost in proportion to the channels and its 16 gemms in
//! proportion to their product, so with 16 → 16 channels each gemm reduces over 16 values
//! and the transforms and staging copies take most of the time. Here each output row is
//! summed in place: a block of [`PIXELS`] output pixels × [`LANES`] output channels stays
//! in registers while every (kernel row, kernel column, input channel) adds one input
//! value times one vector of weights. With the activations channels last, the weights of
//! one tap and input channel are a contiguous vector over the output channels, and the
//! input values are scalars broadcast across it. The forward pass and the input
//! gradient (a forward pass of the flipped kernel) run this way; the weight gradient is a
//! gemm per tap over the padded image ([`weight_gradient`]). What TinyAgeNet's training
//! step gains is measured in docs/performance.md; im2col from channels last, tried first,
//! was no faster than Winograd on this layer.
//!
//! In f32 on CPUs with AVX-512 the sums are fused multiply-adds (see `fused`); elsewhere
//! (f64, other CPUs) a portable loop compiled for the widest vectors (`crate::simd`)
//! multiplies then adds, so the two differ by rounding. Each output is summed in the same
//! order (kernel row, kernel column, input channel) on any thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::fused::Epilogue;
use super::{grow, matmul, summed_over_tasks, Geometry, View};
use crate::cpu_float::CpuFloat;
use crate::cpu_storage::filled_by;
use crate::scratch::PerThread;
use crate::simd::{widest, Kernel};

/// Output channels summed together: one AVX-512 vector of f32.
const LANES: usize = 16;

/// Output pixels summed together: with [`LANES`] channels, 8 accumulator vectors in f32
/// (16 in f64), within the 32 registers AVX-512 has.
const PIXELS: usize = 8;

/// Output rows per task: the task stages `ROWS + 2` padded input rows.
const ROWS: usize = 4;

/// (Input, output) channel pairs from which Winograd takes over: the threshold measured for
/// im2col against Winograd in planes (`winograd::MIN_CHANNEL_PAIRS`); from channels last
/// only 16 → 16 (256 pairs) has been measured against Winograd.
const MAX_CHANNEL_PAIRS: usize = 512;

/// Whether the direct path computes `g`: a 3×3 kernel with padding 1, output channels a
/// multiple of [`LANES`], fewer channel pairs than Winograd needs to pay.
pub(super) fn applies(g: &Geometry) -> bool {
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.padding == 1
        && g.out_channels.is_multiple_of(LANES)
        && g.in_channels * g.out_channels < MAX_CHANNEL_PAIRS
}

/// `w`, `(C_out, C_in, 3, 3)`, as `[3][3][C_in][C_out]`: for each tap and input channel the
/// vector of weights over the output channels.
fn taps_first<T: CpuFloat>(g: &Geometry, w: &[T]) -> Vec<T> {
    let (inputs, outputs) = (g.in_channels, g.out_channels);
    let mut out = vec![T::ZERO; w.len()];
    for o in 0..outputs {
        for c in 0..inputs {
            for tap in 0..9 {
                out[(tap * inputs + c) * outputs + o] = w[(o * inputs + c) * 9 + tap];
            }
        }
    }
    out
}

/// `x ⊛ w` for channels-last `x`, `(N, H, W, C_in)`, into `(N, H, W, C_out)`, each output
/// through `epilogue`'s bias and ReLU when there is one (never a pooling one: see
/// `conv_cpu::uses_direct`).
pub(super) fn forward<T: CpuFloat>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    epilogue: Option<&Epilogue<T>>,
) -> Vec<T> {
    assert!(applies(g), "direct convolution of {g:?}");
    assert!(
        !epilogue.is_some_and(|e| e.pool),
        "the direct path does not pool"
    );
    // Every output sample pairs with an input sample below (the zip would stop short).
    assert_eq!(x.len(), g.batch * g.input_len(), "conv2d input length");
    let weights = taps_first(g, w);
    let row_len = g.out_w * g.out_channels;
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(g.output_len())
            .zip(x.par_chunks(g.input_len()))
            .flat_map(|(sample, image)| {
                sample
                    .par_chunks_mut(ROWS * row_len)
                    .enumerate()
                    .map(move |(task, out)| (image, task * ROWS, out))
            })
            .for_each_init(Vec::new, |stage, (image, first_row, out)| {
                widest(Rows {
                    g,
                    image,
                    weights: &weights,
                    first_row,
                    out,
                    stage,
                    epilogue,
                })
            })
    };
    // SAFETY: `fill` writes all `N · H · W · C_out` elements: one chunk per sample, each
    // paired with its input (asserted above), cut into tasks of whole output rows, and
    // `Rows::run` writes every channel of every pixel of its rows.
    unsafe { filled_by(g.batch * g.output_len(), fill) }
}

/// `dW` for `g` from channels-last `x` and output gradient `dy`, `(C_out, C_in, 3, 3)`:
/// per tap `(i, j)`, `dWᵀ[i][j] = Σ_samples X[i][j]ᵀ · dY`, one gemm each that reduces
/// over a sample's pixels. With the input zero-padded to `W + 2` columns (and the output
/// gradient given two zero columns to match), the inputs under tap `(i, j)` for all the
/// output pixels of a sample are one dense matrix of rows `C_in` apart, starting at
/// padded pixel `(i, j)`: the extra columns pair with zero gradients. Winograd's weight
/// gradient reduces over 16 channels per gemm here; these reduce over `H · (W + 2)`.
pub(super) fn weight_gradient<T: CpuFloat>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    assert!(applies(g), "direct convolution of {g:?}");
    let (inputs, outputs) = (g.in_channels, g.out_channels);
    let len = 9 * inputs * outputs;
    let buffers = PerThread::<(Vec<T>, Vec<T>)>::new();
    let taps = summed_over_tasks(g, (x, dy), 1, len, |image, grads, sums| {
        buffers.with(|(padded, widened)| add_tap_gradients(g, image, grads, padded, widened, sums))
    });
    // `[tap][C_in][C_out]` to `(C_out, C_in, 3, 3)`.
    let mut dw = vec![T::ZERO; len];
    for tap in 0..9 {
        for c in 0..inputs {
            for o in 0..outputs {
                dw[(o * inputs + c) * 9 + tap] = taps[(tap * inputs + c) * outputs + o];
            }
        }
    }
    dw
}

/// Adds one sample's `X[i][j]ᵀ · dY` to `sums`, `[tap][C_in][C_out]`; `padded` and
/// `widened` are scratch for the padded input and output gradient.
fn add_tap_gradients<T: CpuFloat>(
    g: &Geometry,
    image: &[T],
    grads: &[T],
    padded: &mut Vec<T>,
    widened: &mut Vec<T>,
    sums: &mut [T],
) {
    let (inputs, outputs) = (g.in_channels, g.out_channels);
    let span = g.width + 2;
    // Rows −1 ..= H, and one more: tap (2, 2) of the last pixel's extra columns reads
    // two values past row H.
    let padded = grow(padded, (g.height + 3) * span * inputs);
    padded.fill(T::ZERO);
    for (y, line) in image.chunks_exact(g.width * inputs).enumerate() {
        padded[((y + 1) * span + 1) * inputs..][..line.len()].copy_from_slice(line);
    }
    let pixels = g.out_h * span;
    let widened = grow(widened, pixels * outputs);
    for (to, from) in widened
        .chunks_exact_mut(span * outputs)
        .zip(grads.chunks_exact(g.out_w * outputs))
    {
        to[..from.len()].copy_from_slice(from);
        to[from.len()..].fill(T::ZERO);
    }
    for (tap, sum) in sums.chunks_exact_mut(inputs * outputs).enumerate() {
        let (i, j) = (tap / 3, tap % 3);
        let under = View::dense(&padded[(i * span + j) * inputs..], pixels, inputs);
        let gradient = View::dense(&widened[..], pixels, outputs);
        matmul(sum, outputs, under.t(), gradient, true, 1);
    }
}

/// One task of [`forward`]: output rows `first_row..` of one sample (as many as `out`
/// holds), for [`widest`].
struct Rows<'a, T> {
    g: &'a Geometry,
    image: &'a [T],
    weights: &'a [T],
    first_row: usize,
    out: &'a mut [MaybeUninit<T>],
    stage: &'a mut Vec<T>,
    epilogue: Option<&'a Epilogue<'a, T>>,
}

impl<T: CpuFloat> Kernel for Rows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let g = self.g;
        let (inputs, outputs) = (g.in_channels, g.out_channels);
        let rows = self.out.len() / (g.out_w * outputs);
        // Input rows first_row − 1 ..= first_row + rows, zero-padded: one column left,
        // and on the right one column plus a block's slack (the last block of a row
        // reads up to PIXELS − 1 pixels past the row's end; those outputs are dropped).
        let span = g.width + 2 + PIXELS;
        let stage_len = (rows + 2) * span * inputs;
        if self.stage.len() < stage_len {
            self.stage.resize(stage_len, T::ZERO);
        }
        let stage = &mut self.stage[..stage_len];
        for (r, line) in stage.chunks_exact_mut(span * inputs).enumerate() {
            line.fill(T::ZERO);
            let Some(y) = (self.first_row + r)
                .checked_sub(1)
                .filter(|&y| y < g.height)
            else {
                continue;
            };
            let source = &self.image[y * g.width * inputs..][..g.width * inputs];
            line[inputs..][..g.width * inputs].copy_from_slice(source);
        }
        let stage = &*stage;
        let row_len = g.out_w * outputs;
        for (r, out) in self.out.chunks_exact_mut(row_len).enumerate() {
            for first in (0..g.out_w).step_by(PIXELS) {
                let count = PIXELS.min(g.out_w - first);
                for lane in (0..outputs).step_by(LANES) {
                    let sums = block(stage, span, inputs, outputs, self.weights, (r, first, lane));
                    for (p, sum) in sums.iter().enumerate().take(count) {
                        let at = (first + p) * outputs + lane;
                        let to = &mut out[at..][..LANES];
                        match self.epilogue {
                            Some(e) => {
                                for (k, (to, &v)) in to.iter_mut().zip(sum).enumerate() {
                                    to.write(e.apply(lane + k, v));
                                }
                            }
                            None => {
                                for (to, &v) in to.iter_mut().zip(sum) {
                                    to.write(v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The sums of [`PIXELS`] outputs from column `first` of staged output row `r`, output
/// channels `lane..lane + LANES`: over kernel rows, kernel columns and input channels, in
/// that order.
#[inline(always)]
fn block<T: CpuFloat>(
    stage: &[T],
    span: usize,
    inputs: usize,
    outputs: usize,
    weights: &[T],
    (r, first, lane): (usize, usize, usize),
) -> [[T; LANES]; PIXELS] {
    #[cfg(target_arch = "x86_64")]
    if let Some(sums) = fused::block(stage, span, inputs, outputs, weights, (r, first, lane)) {
        return sums;
    }
    let mut sums = [[T::ZERO; LANES]; PIXELS];
    for i in 0..3 {
        let line = &stage[(r + i) * span * inputs..][..span * inputs];
        for j in 0..3 {
            let pixels = &line[(first + j) * inputs..][..PIXELS * inputs];
            let taps = &weights[(i * 3 + j) * inputs * outputs..][..inputs * outputs];
            for c in 0..inputs {
                let vector: &[T; LANES] = taps[c * outputs + lane..][..LANES]
                    .try_into()
                    .expect("a vector of weights");
                for (p, sum) in sums.iter_mut().enumerate() {
                    let value = pixels[p * inputs + c];
                    for (s, &v) in sum.iter_mut().zip(vector) {
                        *s += value * v;
                    }
                }
            }
        }
    }
    sums
}

/// [`block`] in f32 with fused multiply-adds, on CPUs with AVX-512: Rust does not fuse
/// `s += value · v` by itself, and `f32::mul_add` in a generic loop stays scalar. Half
/// the vector instructions of the plain loop; each sum rounds once per term instead of
/// twice, so the results differ from the other path by rounding.
#[cfg(target_arch = "x86_64")]
mod fused {
    use std::any::TypeId;
    use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps};
    use std::arch::x86_64::{_mm512_setzero_ps, _mm512_storeu_ps};

    use super::{LANES, PIXELS};
    use crate::cpu_float::CpuFloat;

    /// The sums of [`super::block`] when `T` is f32 and the CPU has AVX-512; `None`
    /// otherwise.
    #[inline(always)]
    pub(super) fn block<T: CpuFloat>(
        stage: &[T],
        span: usize,
        inputs: usize,
        outputs: usize,
        weights: &[T],
        at: (usize, usize, usize),
    ) -> Option<[[T; LANES]; PIXELS]> {
        if TypeId::of::<T>() != TypeId::of::<f32>() || !avx512() {
            return None;
        }
        // SAFETY: `T` is f32 (checked above): the same memory, read as what it is.
        let (stage, weights) = unsafe {
            (
                std::slice::from_raw_parts(stage.as_ptr().cast::<f32>(), stage.len()),
                std::slice::from_raw_parts(weights.as_ptr().cast::<f32>(), weights.len()),
            )
        };
        // SAFETY: the CPU has AVX-512 F (checked above).
        let sums = unsafe { block_f32(stage, span, inputs, outputs, weights, at) };
        // SAFETY: `T` is f32, so both arrays have the same type.
        Some(unsafe { std::mem::transmute_copy(&sums) })
    }

    fn avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// # Safety
    /// The CPU must have AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn block_f32(
        stage: &[f32],
        span: usize,
        inputs: usize,
        outputs: usize,
        weights: &[f32],
        (r, first, lane): (usize, usize, usize),
    ) -> [[f32; LANES]; PIXELS] {
        let mut sums: [__m512; PIXELS] = [_mm512_setzero_ps(); PIXELS];
        for i in 0..3 {
            let line = &stage[(r + i) * span * inputs..][..span * inputs];
            for j in 0..3 {
                let pixels = &line[(first + j) * inputs..][..PIXELS * inputs];
                let taps = &weights[(i * 3 + j) * inputs * outputs..][..inputs * outputs];
                for c in 0..inputs {
                    let vector = &taps[c * outputs + lane..][..LANES];
                    // SAFETY: `vector` holds LANES = 16 f32, one unaligned load.
                    let vector = unsafe { _mm512_loadu_ps(vector.as_ptr()) };
                    for (p, sum) in sums.iter_mut().enumerate() {
                        // SAFETY: p < PIXELS and c < inputs, so the index is below
                        // `pixels.len()` = PIXELS · inputs (a bounds check per product
                        // cost as much as the product).
                        let value = unsafe { *pixels.get_unchecked(p * inputs + c) };
                        *sum = _mm512_fmadd_ps(_mm512_set1_ps(value), vector, *sum);
                    }
                }
            }
        }
        let mut out = [[0.0; LANES]; PIXELS];
        for (to, sum) in out.iter_mut().zip(sums) {
            // SAFETY: `to` holds 16 f32, one unaligned store.
            unsafe { _mm512_storeu_ps(to.as_mut_ptr(), sum) };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{applies, forward, weight_gradient};
    use crate::conv_cpu::{test_values as values, Geometry};
    use crate::cpu_float::CpuFloat;

    /// The largest `|got − expected|`, f32 or f64 results against f64 sums.
    fn largest_gap<T: CpuFloat>(got: &[T], expected: &[f64]) -> f64 {
        assert_eq!(got.len(), expected.len());
        got.iter()
            .zip(expected)
            .fold(0.0, |m, (a, b)| m.max((a.to_f64() - b).abs()))
    }

    fn narrow(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&v| v as f32).collect()
    }

    /// `x ⊛ w` by the definition, channels last, zero padding 1, in f64.
    fn reference(g: &Geometry, x: &[f64], w: &[f64]) -> Vec<f64> {
        let (h, wd, ci, co) = (g.height, g.width, g.in_channels, g.out_channels);
        let mut y = vec![0.0; g.batch * h * wd * co];
        for n in 0..g.batch {
            for (oy, ox, o) in
                (0..h).flat_map(|a| (0..wd).flat_map(move |b| (0..co).map(move |o| (a, b, o))))
            {
                let mut sum = 0.0;
                for (i, j, c) in
                    (0..3).flat_map(|i| (0..3).flat_map(move |j| (0..ci).map(move |c| (i, j, c))))
                {
                    let (iy, ix) = ((oy + i).wrapping_sub(1), (ox + j).wrapping_sub(1));
                    if iy < h && ix < wd {
                        sum += x[((n * h + iy) * wd + ix) * ci + c]
                            * w[((o * ci + c) * 3 + i) * 3 + j];
                    }
                }
                y[((n * h + oy) * wd + ox) * co + o] = sum;
            }
        }
        y
    }

    /// `dW[o][c][i][j] = Σ dy[n, y, x, o] · x[n, y + i − 1, x + j − 1, c]` by the
    /// definition, in f64.
    fn reference_weight_gradient(g: &Geometry, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let (h, wd, ci, co) = (g.height, g.width, g.in_channels, g.out_channels);
        let mut dw = vec![0.0; co * ci * 9];
        for (n, oy, ox) in
            (0..g.batch).flat_map(|n| (0..h).flat_map(move |y| (0..wd).map(move |x| (n, y, x))))
        {
            for (i, j) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                let (iy, ix) = ((oy + i).wrapping_sub(1), (ox + j).wrapping_sub(1));
                if iy >= h || ix >= wd {
                    continue;
                }
                for (o, c) in (0..co).flat_map(|o| (0..ci).map(move |c| (o, c))) {
                    dw[((o * ci + c) * 3 + i) * 3 + j] += dy[((n * h + oy) * wd + ox) * co + o]
                        * x[((n * h + iy) * wd + ix) * ci + c];
                }
            }
        }
        dw
    }

    /// The weight gradient in f64 to rounding and in f32 to f32 rounding of the sums by
    /// definition, odd sizes included.
    #[test]
    fn the_weight_gradient_matches_the_definition() {
        for (n, ci, h, wd, co) in [(2, 16, 5, 13, 16), (3, 8, 6, 8, 32), (1, 3, 7, 3, 16)] {
            let g = Geometry::of(&[n, ci, h, wd], &[co, ci, 3, 3], 1).unwrap();
            let x = values(n * h * wd * ci, 0.4);
            let dy = values(n * h * wd * co, 0.9);
            let expected = reference_weight_gradient(&g, &x, &dy);
            let largest = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let got = weight_gradient(&g, &x, &dy);
            let gap = largest_gap(&got, &expected);
            assert!(
                gap <= 1e-12 * largest,
                "f64 {:?}: {gap:e}",
                (n, ci, h, wd, co)
            );
            let got = weight_gradient(&g, &narrow(&x), &narrow(&dy));
            let gap = largest_gap(&got, &expected);
            assert!(
                gap <= 1e-5 * largest,
                "f32 {:?}: {gap:e}",
                (n, ci, h, wd, co)
            );
        }
    }

    /// f64 (the portable loop) to rounding, and f32 (on AVX-512 CPUs the fused
    /// multiply-add kernel) to f32 rounding, of the sums by definition: widths that are
    /// and are not a multiple of the pixel block, 16 and 32 output channels.
    #[test]
    fn both_dtypes_match_the_definition() {
        for (n, ci, h, wd, co) in [(2, 16, 5, 13, 16), (3, 8, 6, 8, 32), (1, 3, 7, 3, 16)] {
            let g = Geometry::of(&[n, ci, h, wd], &[co, ci, 3, 3], 1).unwrap();
            assert!(applies(&g));
            let x = values(n * h * wd * ci, 0.3);
            let w = values(co * ci * 9, 0.7);
            let expected = reference(&g, &x, &w);
            let largest = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let got = forward(&g, &x, &w, None);
            let gap = largest_gap(&got, &expected);
            assert!(
                gap <= 1e-13 * largest,
                "f64 {:?}: {gap:e}",
                (n, ci, h, wd, co)
            );
            let got = forward(&g, &narrow(&x), &narrow(&w), None);
            let gap = largest_gap(&got, &expected);
            assert!(
                gap <= 1e-5 * largest,
                "f32 {:?}: {gap:e}",
                (n, ci, h, wd, co)
            );
        }
    }
}
