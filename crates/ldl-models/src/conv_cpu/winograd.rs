//! 3×3 convolutions by Winograd's minimal filtering algorithm F(2×2, 3×3) (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2×2 block of outputs (a tile) comes from a 4×4 patch of the input. In the
//! transformed domain the convolution is 16 independent matrix products, one per
//! position ξ of the 4×4 transform:
//!
//! - kernel: `U = G·g·Gᵀ`, stored `[16][C_out][C_in]`;
//! - input: `V = Bᵀ·d·B` per channel and tile, stored `[16][tiles][C_in]`;
//! - products: `M[ξ] = V[ξ] · U[ξ]ᵀ`, `[tiles][C_out]`, one gemm each;
//! - output: `Y = Aᵀ·m·A` per output channel and tile, the 2×2 block.
//!
//! The transforms work channels last (every step combines a vector of all channels of a
//! pixel), so they vectorise however few tiles a row holds; the image goes channels last
//! on the way in, the result back to planes on the way out.
//!
//! That is 16 multiplications per tile and channel pair instead of 36: the gemms do
//! 2.25× less work than im2col's, and the transformed input is 4× the image instead of
//! 9×. The transforms only add and halve, so results differ from the direct sum by
//! rounding alone (a few ulps in f32).

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::{gemm_threads, grow, matmul, summed_over_tasks, Epilogue, Geometry, View};
use crate::cpu_float::CpuFloat;
use crate::cpu_storage::filled_by;
use crate::order::{Order, Orders};
use crate::scratch::PerThread;
use crate::simd::{widest, Kernel};

/// Input channels below which im2col is used: the transformed products reduce over the
/// input channels alone, and a gemm that short runs far below its peak (the first layer,
/// with 3 colour channels, stays on im2col).
const MIN_INPUT_CHANNELS: usize = 8;

/// (Input, output) channel pairs below which im2col is used: with few channels the 16
/// gemms are too small to pay for the transforms. TinyAgeNet's second layer (16 → 16
/// channels, 256 pairs) on im2col makes its 64×64, batch-32 training step 114–121 ms
/// instead of 130–137 ms with Winograd there (two alternating runs each of
/// `cargo bench --bench train_step -- tiny`, 2 cores); from 16 → 32 on, Winograd is faster.
const MIN_CHANNEL_PAIRS: usize = 512;

/// The most bytes of transformed input and products one task holds at a time (a band of
/// tile rows of one sample, or a group of small samples): within a core's L2 cache.
const BAND_BYTES: usize = 512 * 1024;

/// Tiles a group of small samples should reach, so that each of the 16 gemms is wide
/// enough to pay for its call.
const GROUP_TILES: usize = 256;

/// `out[k] = f(a[k], b[k])` over rows of equal length. Zipped iterators carry no bounds
/// checks, so the loop vectorises (indexed loops over several slices here did not).
#[inline(always)]
fn zip2<T: Copy>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(a, b);
    }
}

/// `out[k] = f(a[k], b[k], c[k])`, as [`zip2`].
#[inline(always)]
fn zip3<T: Copy>(out: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
    for (o, ((&a, &b), &c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
        *o = f(a, b, c);
    }
}

/// Whether the Winograd path computes this convolution.
pub(super) fn applies(g: &Geometry) -> bool {
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.in_channels >= MIN_INPUT_CHANNELS
        && g.in_channels * g.out_channels >= MIN_CHANNEL_PAIRS
}

/// (Input, output) channel pairs below which channels-last activations do not pay: the
/// networks with such blocks stay in planes, on im2col (see [`pays_channels_last`]).
/// Without the transpositions to and from planes the transforms cost less than on
/// planes, and TinyAgeNet's 16 → 16 layers (256 pairs) gain with the rest of the network
/// (its training step 111–112 ms channels last against 119–135 ms in planes, two
/// alternating runs each of `cargo bench --bench train_step -- train_step`, 2 cores); at half
/// width (8 → 8, 64 pairs) the gemms over 8 channels are too short: `ldl train
/// configs/quickstart.toml --set optim.epochs=4` took 17.4–17.6 s channels last against
/// 15.3–15.8 s in planes (two alternating runs each).
const MIN_CHANNEL_PAIRS_CHANNELS_LAST: usize = 256;

/// Whether the Winograd path can compute this convolution from channels-last input (im2col
/// unfolds planes only): any 3×3 kernel.
pub(super) fn applies_channels_last(g: &Geometry) -> bool {
    g.kernel_h == 3 && g.kernel_w == 3
}

/// Whether a block that reads channels-last input pays for it against planes: a 3×3
/// kernel over at least [`MIN_INPUT_CHANNELS`] and [`MIN_CHANNEL_PAIRS_CHANNELS_LAST`]
/// pairs. A speed threshold, not a limit: [`applies_channels_last`] says what computes.
pub(super) fn pays_channels_last(g: &Geometry) -> bool {
    applies_channels_last(g)
        && g.in_channels >= MIN_INPUT_CHANNELS
        && g.in_channels * g.out_channels >= MIN_CHANNEL_PAIRS_CHANNELS_LAST
}

/// Tiles per row and per column of the output.
fn tiles(g: &Geometry) -> (usize, usize) {
    (g.out_h.div_ceil(2), g.out_w.div_ceil(2))
}

/// `U = G·g·Gᵀ` for every (output, input) channel pair, `[16][C_out][C_in]`.
pub(super) fn transform_kernel<T: CpuFloat>(g: &Geometry, w: &[T]) -> Vec<T> {
    let (outputs, inputs) = (g.out_channels, g.in_channels);
    let len = 16 * outputs * inputs;
    // Every output channel `o` writes its row `u[ξ][o][..]` of each of the 16 matrices.
    let fill = |u: &mut [MaybeUninit<T>]| {
        let u = SharedSlots::new(u);
        // In parallel over the output channels, and along the input channels within
        // one, so the arithmetic runs on whole rows: one kernel at a time, serial, this
        // was a few percent of a training step and 9% of inference.
        w.par_chunks(inputs * 9).enumerate().for_each_init(
            || vec![T::ZERO; 21 * inputs],
            |buffer, (o, kernels)| {
                let (taps, t) = buffer.split_at_mut(9 * inputs);
                transform_rows(kernels, taps, t);
                let row = |i: usize, j: usize| &t[(i * 3 + j) * inputs..][..inputs];
                for i in 0..4 {
                    let (a, b, c) = (row(i, 0), row(i, 1), row(i, 2));
                    for j in 0..4 {
                        let start = ((i * 4 + j) * outputs + o) * inputs;
                        // SAFETY: `start + inputs ≤ len` (`i·4 + j < 16`, `o < outputs`),
                        // and only the task of output channel `o` writes these slots.
                        let out = unsafe { u.slots(start, inputs) };
                        // (G·k)·Gᵀ: Gᵀ's columns, as G's rows in `transform_rows`.
                        apply_g_row(j, out, a, b, c, |out, v| {
                            out.write(v);
                        });
                    }
                }
            },
        );
    };
    assert_eq!(w.len(), outputs * inputs * 9, "winograd kernel length");
    // SAFETY: `fill` writes all `len` elements: the `outputs` tasks (`w` holds `outputs`
    // kernels of `inputs · 9`, asserted) each write every row `(ξ, o)` of theirs whole.
    unsafe { filled_by(len, fill) }
}

/// `G·k`, 4×3, for the 3×3 kernels `kernels` of one output channel (`[C_in][3][3]`), as
/// rows along the input channels: `t[i][j][c]`, through `taps[tap][c]`.
fn transform_rows<T: CpuFloat>(kernels: &[T], taps: &mut [T], t: &mut [T]) {
    let inputs = kernels.len() / 9;
    for (c, k) in kernels.chunks_exact(9).enumerate() {
        for (tap, &v) in k.iter().enumerate() {
            taps[tap * inputs + c] = v;
        }
    }
    let tap = |row: usize, column: usize| &taps[(row * 3 + column) * inputs..][..inputs];
    for j in 0..3 {
        let (k0, k1, k2) = (tap(0, j), tap(1, j), tap(2, j));
        for i in 0..4 {
            let out = &mut t[(i * 3 + j) * inputs..][..inputs];
            apply_g_row(i, out, k0, k1, k2, |out, v| *out = v);
        }
    }
}

/// `out[c]` = (row `row` of G)·(`a[c]`, `b[c]`, `c[c]`) for every `c`, stored by `store`: G's
/// rows are (1, 0, 0), (½, ½, ½), (½, −½, ½), (0, 0, 1). One loop per row, so that no
/// branch sits in the loop that runs along the channels.
#[inline(always)]
fn apply_g_row<T: CpuFloat, O>(
    row: usize,
    out: &mut [O],
    a: &[T],
    b: &[T],
    c: &[T],
    store: impl Fn(&mut O, T),
) {
    let rows = out.iter_mut().zip(a).zip(b).zip(c);
    match row {
        0 => rows.for_each(|(((o, &a), _), _)| store(o, a)),
        1 => rows.for_each(|(((o, &a), &b), &c)| store(o, (a + b + c) * T::HALF)),
        2 => rows.for_each(|(((o, &a), &b), &c)| store(o, (a - b + c) * T::HALF)),
        _ => rows.for_each(|(((o, _), _), &c)| store(o, c)),
    }
}

/// A slice's slots, written from parallel tasks that each own a disjoint set of rows
/// no plain `chunks_mut` split can express.
struct SharedSlots<'a, T> {
    start: *mut MaybeUninit<T>,
    len: usize,
    _slice: PhantomData<&'a mut [MaybeUninit<T>]>,
}

// SAFETY: the pointer is only used through `slots`, whose callers take disjoint ranges
// in each task; `T: Send` lets the values cross threads.
unsafe impl<T: Send> Sync for SharedSlots<'_, T> {}
unsafe impl<T: Send> Send for SharedSlots<'_, T> {}

impl<'a, T> SharedSlots<'a, T> {
    fn new(slice: &'a mut [MaybeUninit<T>]) -> Self {
        SharedSlots {
            start: slice.as_mut_ptr(),
            len: slice.len(),
            _slice: PhantomData,
        }
    }

    /// The `len` slots from `start`.
    ///
    /// # Safety
    /// `start + len` must lie within the slice, and no other task may use these slots
    /// while the returned borrow lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slots(&self, start: usize, len: usize) -> &mut [MaybeUninit<T>] {
        assert!(start + len <= self.len, "slots out of the slice");
        // SAFETY: in bounds (asserted); no other task uses the range (the caller's
        // contract); the slice outlives `self`.
        unsafe { std::slice::from_raw_parts_mut(self.start.add(start), len) }
    }
}

/// Which tiles one task transforms: tile rows `rows` of each of `samples` images.
struct Tiles {
    samples: usize,
    rows: Range<usize>,
    per_row: usize,
}

impl Tiles {
    fn count(&self) -> usize {
        self.samples * self.rows.len() * self.per_row
    }
}

/// Channels transposed a block at a time between planes and channels last: a block of
/// pixels of this many channels is one contiguous run of 64 bytes in f32 (a cache line),
/// written or read whole while as many planes are walked in step. One channel at a time,
/// each pixel's line was written once per channel instead (a third of the input
/// transform's time, by `perf`).
const CHANNEL_BLOCK: usize = 16;

/// Copies the line of `row.len() / channels` pixels that starts at `planes[0]`, in planes
/// `plane_len` apart, into `row`, channels last: `row[x·C + c] = planes[c·plane_len + x]`.
#[inline(always)]
fn planes_to_channels_last<T: Copy>(
    planes: &[T],
    plane_len: usize,
    row: &mut [T],
    channels: usize,
) {
    let width = row.len() / channels;
    for first in (0..channels).step_by(CHANNEL_BLOCK) {
        let block = CHANNEL_BLOCK.min(channels - first);
        let lines: [&[T]; CHANNEL_BLOCK] = std::array::from_fn(|k| {
            let c = first + k.min(block - 1);
            &planes[c * plane_len..][..width]
        });
        for (x, cell) in row.chunks_exact_mut(channels).enumerate() {
            for (value, line) in cell[first..first + block].iter_mut().zip(&lines) {
                *value = line[x];
            }
        }
    }
}

/// Writes `block`, pixels channels last, into planes `plane_len` apart starting at
/// `planes[0]` (`planes[c·plane_len + x] = block[x·C + c]`), through `epilogue`.
#[inline(always)]
fn channels_last_to_planes<T: CpuFloat>(
    block: &[T],
    channels: usize,
    planes: &mut [MaybeUninit<T>],
    plane_len: usize,
    epilogue: Option<&Epilogue<T>>,
) {
    for first in (0..channels).step_by(CHANNEL_BLOCK) {
        let end = (first + CHANNEL_BLOCK).min(channels);
        for (x, cell) in block.chunks_exact(channels).enumerate() {
            for (o, &value) in cell[first..end].iter().enumerate() {
                let o = first + o;
                let value = match epilogue {
                    Some(e) => e.apply(o, value),
                    None => value,
                };
                planes[o * plane_len + x].write(value);
            }
        }
    }
}

/// Fills `v`, `[16][tiles][C_in]`, with the transformed patches `Bᵀ·d·B` of `images`
/// (Bᵀ's rows are (1, 0, −1, 0), (0, 1, 1, 0), (0, −1, 1, 0), (0, 1, 0, −1)).
///
/// Channels last: the input rows a band needs are first copied, zero-padded, into
/// `[row][column][C_in]` (`stage`), so that every step of the transform combines whole
/// vectors of channels, long enough to vectorise even where a row holds a few tiles.
#[inline(always)]
fn transform_input<T: CpuFloat>(
    g: &Geometry,
    images: &[T],
    tiles: &Tiles,
    v: &mut [T],
    stage: &mut Vec<T>,
    order: Order,
) {
    let channels = g.in_channels;
    let count = tiles.count();
    let per_row = tiles.per_row;
    // Padded columns: image column `x` at `x + p`; the last tile reads column 2·per_row + 1.
    let span = 2 * per_row + 2;
    let rows = 2 * tiles.rows.len() + 2;
    let stage = grow(stage, rows * span * channels + 16 * channels);
    let (padded, t) = stage.split_at_mut(rows * span * channels);
    // The image row staged as row `r`, if it is inside the image.
    let source = |r: usize| {
        (2 * tiles.rows.start + r)
            .checked_sub(g.padding)
            .filter(|&y| y < g.height)
    };
    for (s, image) in images.chunks(g.input_len()).enumerate() {
        // Zeros where no pixel is copied: the padding columns, and rows outside the image.
        for (r, row) in padded.chunks_exact_mut(span * channels).enumerate() {
            if source(r).is_some() {
                row[..g.padding * channels].fill(T::ZERO);
                row[(g.padding + g.width) * channels..].fill(T::ZERO);
            } else {
                row.fill(T::ZERO);
            }
        }
        for r in 0..rows {
            let Some(y) = source(r) else {
                continue;
            };
            let row = &mut padded[(r * span + g.padding) * channels..][..g.width * channels];
            match order {
                Order::Planes => {
                    let plane_len = g.height * g.width;
                    planes_to_channels_last(&image[y * g.width..], plane_len, row, channels);
                }
                Order::ChannelsLast => row.copy_from_slice(&image[y * row.len()..][..row.len()]),
            }
        }
        for band_row in 0..tiles.rows.len() {
            for tx in 0..per_row {
                let d = |i: usize, j: usize| {
                    &padded[((2 * band_row + i) * span + 2 * tx + j) * channels..][..channels]
                };
                // Bᵀ·d, row r and column j at t[(4·r + j)·C ..].
                for j in 0..4 {
                    let (d0, d1, d2, d3) = (d(0, j), d(1, j), d(2, j), d(3, j));
                    let row = |r: usize| (4 * r + j) * channels;
                    zip2(&mut t[row(0)..][..channels], d0, d2, |a, b| a - b);
                    zip2(&mut t[row(1)..][..channels], d1, d2, |a, b| a + b);
                    zip2(&mut t[row(2)..][..channels], d2, d1, |a, b| a - b);
                    zip2(&mut t[row(3)..][..channels], d1, d3, |a, b| a - b);
                }
                // (Bᵀ·d)·B into the 16 streams.
                let column = (s * tiles.rows.len() + band_row) * per_row + tx;
                for r in 0..4 {
                    let q = |j: usize| &t[(4 * r + j) * channels..][..channels];
                    let at = |xi: usize| (xi * count + column) * channels;
                    zip2(&mut v[at(4 * r)..][..channels], q(0), q(2), |a, b| a - b);
                    zip2(&mut v[at(4 * r + 1)..][..channels], q(1), q(2), |a, b| {
                        a + b
                    });
                    zip2(&mut v[at(4 * r + 2)..][..channels], q(2), q(1), |a, b| {
                        a - b
                    });
                    zip2(&mut v[at(4 * r + 3)..][..channels], q(1), q(3), |a, b| {
                        a - b
                    });
                }
            }
        }
    }
}

/// The four outputs `Y = Aᵀ·m·A` of tile `column` (Aᵀ's rows are (1, 1, 1, 0) and
/// (0, 1, −1, −1)) from the products `m`, `[16][count][C]`, channels last into
/// `pixels`, `[4][C]` in the order (0, 0), (0, 1), (1, 0), (1, 1); `t` holds `Aᵀ·m`,
/// `[8][C]`.
#[inline(always)]
fn tile_outputs<T: CpuFloat>(
    m: &[T],
    count: usize,
    column: usize,
    channels: usize,
    t: &mut [T],
    pixels: &mut [T],
) {
    let m = |i: usize, j: usize| &m[((4 * i + j) * count + column) * channels..][..channels];
    // Aᵀ·m: row r, column j at t[(4·r + j)·C ..].
    for j in 0..4 {
        let (m0, m1, m2, m3) = (m(0, j), m(1, j), m(2, j), m(3, j));
        zip3(&mut t[j * channels..][..channels], m0, m1, m2, |a, b, c| {
            a + b + c
        });
        zip3(
            &mut t[(4 + j) * channels..][..channels],
            m1,
            m2,
            m3,
            |a, b, c| a - b - c,
        );
    }
    // (Aᵀ·m)·A.
    for r in 0..2 {
        let p = |j: usize| &t[(4 * r + j) * channels..][..channels];
        let (left, right) = pixels[2 * r * channels..][..2 * channels].split_at_mut(channels);
        zip3(left, p(0), p(1), p(2), |a, b, c| a + b + c);
        zip3(right, p(1), p(2), p(3), |a, b, c| a - b - c);
    }
}

/// `out[k]` = the largest of the four `pixels` of channel `k` (a tile is a pooling
/// window), compared as `crate::pool_cpu` does.
#[inline(always)]
fn max_of_tile<T: CpuFloat>(out: &mut [T], pixels: &[T]) {
    let channels = out.len();
    let (top, bottom) = pixels.split_at(2 * channels);
    let (a, b) = top.split_at(channels);
    let (c, d) = bottom.split_at(channels);
    let max = |x: T, y: T| if y > x { y } else { x };
    for (o, (((&a, &b), &c), &d)) in out.iter_mut().zip(a.iter().zip(b).zip(c).zip(d)) {
        *o = max(max(a, b), max(c, d));
    }
}

/// Writes the outputs of `tiles` from the products `m`, `[16][tiles][C_out]`, into
/// `out`, the outputs of the task's samples: each tile's 2×2 block (see
/// [`tile_outputs`]), or with `epilogue`'s pooling its maximum, channels last into
/// `stage`, then through `epilogue` into the output's planes.
#[inline(always)]
fn transform_output<T: CpuFloat>(
    g: &Geometry,
    m: &[T],
    tiles: &Tiles,
    out: &mut [MaybeUninit<T>],
    stage: &mut Vec<T>,
    epilogue: Option<&Epilogue<T>>,
    order: Order,
) {
    let channels = g.out_channels;
    let count = tiles.count();
    let pool = epilogue.is_some_and(|e| e.pool);
    // Rows and columns written: pixels, or one pooled value per whole tile (a half tile
    // at an odd edge is dropped, as the pooling drops an odd last row or column).
    let (scale, out_h, out_w) = if pool {
        (1, g.out_h / 2, g.out_w / 2)
    } else {
        (2, g.out_h, g.out_w)
    };
    let first_row = scale * tiles.rows.start;
    let rows = (scale * tiles.rows.end)
        .min(out_h)
        .saturating_sub(first_row);
    let stage = grow(stage, rows * out_w * channels + 12 * channels);
    let (block, scratch) = stage.split_at_mut(rows * out_w * channels);
    let (t, pixels) = scratch.split_at_mut(8 * channels);
    let at = |local: usize, ox: usize| (local * out_w + ox) * channels;
    for (s, sample) in out.chunks_mut(channels * out_h * out_w).enumerate() {
        for band_row in 0..tiles.rows.len() {
            for tx in 0..tiles.per_row {
                let column = (s * tiles.rows.len() + band_row) * tiles.per_row + tx;
                if pool && (band_row >= rows || tx >= out_w) {
                    continue;
                }
                tile_outputs(m, count, column, channels, t, pixels);
                if pool {
                    max_of_tile(&mut block[at(band_row, tx)..][..channels], pixels);
                    continue;
                }
                for (k, pixel) in pixels.chunks_exact(channels).enumerate() {
                    let (local, ox) = (2 * band_row + k / 2, 2 * tx + k % 2);
                    if local < rows && ox < out_w {
                        block[at(local, ox)..][..channels].copy_from_slice(pixel);
                    }
                }
            }
        }
        match order {
            Order::Planes => {
                let first = &mut sample[first_row * out_w..];
                channels_last_to_planes(block, channels, first, out_h * out_w, epilogue);
            }
            Order::ChannelsLast => {
                let rows = &mut sample[first_row * out_w * channels..][..block.len()];
                for (to, from) in rows
                    .chunks_exact_mut(channels)
                    .zip(block.chunks_exact(channels))
                {
                    Epilogue::write_pixel(epilogue, to, from);
                }
            }
        }
    }
}

/// [`transform_input`]'s arguments, for [`widest`].
struct InputTransform<'a, T>(
    &'a Geometry,
    &'a [T],
    &'a Tiles,
    &'a mut [T],
    &'a mut Vec<T>,
    Order,
);

impl<T: CpuFloat> Kernel for InputTransform<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        transform_input(self.0, self.1, self.2, self.3, self.4, self.5)
    }
}

/// [`transform_output`]'s arguments, for [`widest`].
struct OutputTransform<'a, T>(
    &'a Geometry,
    &'a [T],
    &'a Tiles,
    &'a mut [MaybeUninit<T>],
    &'a mut Vec<T>,
    Option<&'a Epilogue<'a, T>>,
    Order,
);

impl<T: CpuFloat> Kernel for OutputTransform<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        transform_output(self.0, self.1, self.2, self.3, self.4, self.5, self.6)
    }
}

/// [`transform_output_gradient`]'s arguments, for [`widest`].
struct OutputGradientTransform<'a, T>(
    &'a Geometry,
    &'a [T],
    &'a Tiles,
    &'a mut [T],
    &'a mut Vec<T>,
    Order,
);

impl<T: CpuFloat> Kernel for OutputGradientTransform<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        transform_output_gradient(self.0, self.1, self.2, self.3, self.4, self.5)
    }
}

/// How a batch is cut into tasks, one per rayon job: a group of small samples whole, or
/// one sample in bands of tile rows, so that a task's transformed data stays in cache.
struct Plan {
    /// Samples per task.
    group: usize,
    /// Tile rows per band of a single sample.
    band: usize,
    tile_rows: usize,
    per_row: usize,
    /// Threads for each gemm (more than one only when the tasks are fewer than the
    /// threads).
    threads: usize,
}

impl Plan {
    fn of<T>(g: &Geometry) -> Plan {
        let (tile_rows, per_row) = tiles(g);
        let threads_available = rayon::current_num_threads().max(1);
        let group = GROUP_TILES
            .div_ceil(tile_rows * per_row)
            .min(g.batch.div_ceil(threads_available))
            .max(1);
        let bytes_per_tile = 16 * (g.in_channels + g.out_channels) * std::mem::size_of::<T>();
        let band = (BAND_BYTES / (bytes_per_tile * per_row).max(1)).clamp(1, tile_rows);
        Plan {
            group,
            band,
            tile_rows,
            per_row,
            threads: gemm_threads(g.batch.div_ceil(group)),
        }
    }

    /// The tile sets one task over `samples` samples works through, in order.
    fn tile_sets(&self, samples: usize) -> impl Iterator<Item = Tiles> {
        let step = if samples == 1 {
            self.band
        } else {
            self.tile_rows
        };
        let (rows, per_row) = (self.tile_rows, self.per_row);
        (0..rows).step_by(step).map(move |start| Tiles {
            samples,
            rows: start..(start + step).min(rows),
            per_row,
        })
    }
}

/// The 16 products `M[ξ] = V[ξ] · U[ξ]ᵀ`, `[tiles][C_out]`, for `count` tiles.
fn multiply<T: CpuFloat>(
    g: &Geometry,
    u: &[T],
    v: &[T],
    m: &mut [T],
    count: usize,
    threads: usize,
) {
    let (outputs, inputs) = (g.out_channels, g.in_channels);
    for xi in 0..16 {
        let lhs = View::dense(&v[xi * count * inputs..][..count * inputs], count, inputs);
        let kernel = &u[xi * outputs * inputs..][..outputs * inputs];
        let rhs = View::dense(kernel, outputs, inputs).t();
        let dst = &mut m[xi * count * outputs..][..count * outputs];
        matmul(dst, outputs, lhs, rhs, false, threads);
    }
}

/// The convolution of `x` with the 3×3 kernel whose transform is `u` (from
/// [`transform_kernel`]; stride 1, `g.padding`), as [`super::forward_with`]: through
/// `epilogue` when there is one.
pub(super) fn forward<T: CpuFloat>(
    g: &Geometry,
    x: &[T],
    u: &[T],
    epilogue: Option<&Epilogue<T>>,
    orders: Orders,
) -> Vec<T> {
    let plan = Plan::of::<T>(g);
    let sample_len = match epilogue {
        Some(e) if e.pool => g.out_channels * (g.out_h / 2) * (g.out_w / 2),
        _ => g.output_len(),
    };
    let len = g.batch * sample_len;
    // Every output sample pairs with an input sample below (the zip would stop short).
    assert_eq!(x.len(), g.batch * g.input_len(), "conv2d input length");
    let buffers = PerThread::<(Vec<T>, Vec<T>, Vec<T>)>::new();
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(plan.group * sample_len)
            .zip(x.par_chunks(plan.group * g.input_len()))
            .with_max_len(1)
            .for_each(|(out, images)| {
                buffers.with(|(v, m, scratch)| {
                    for tiles in plan.tile_sets(images.len() / g.input_len()) {
                        let count = tiles.count();
                        let v = grow(v, 16 * g.in_channels * count);
                        let m = grow(m, 16 * g.out_channels * count);
                        let tiles = &tiles;
                        widest(InputTransform(g, images, tiles, v, scratch, orders.input));
                        multiply(g, u, v, m, count, plan.threads);
                        let order = orders.output;
                        widest(OutputTransform(g, m, tiles, out, scratch, epilogue, order));
                    }
                })
            })
    };
    // SAFETY: `fill` writes all `len` elements: the chunks cover `y` and pair with as
    // many input chunks (asserted above), and every task writes all the outputs of its
    // samples: the tiles cover every output row and column, and with pooling every
    // pooled row and column (tile `(r, c)` is pooled output `(r, c)`).
    unsafe { filled_by(len, fill) }
}

/// Fills `dm`, `[16][tiles][C_out]`, with `A·dY·Aᵀ` of every 2×2 tile of the output
/// gradients `grads` (outputs past an odd edge count as zero): the transposed output
/// transform, which carries the gradient back to the products. Channels last, as
/// [`transform_input`].
#[inline(always)]
fn transform_output_gradient<T: CpuFloat>(
    g: &Geometry,
    grads: &[T],
    tiles: &Tiles,
    dm: &mut [T],
    stage: &mut Vec<T>,
    order: Order,
) {
    let channels = g.out_channels;
    let count = tiles.count();
    let per_row = tiles.per_row;
    let (rows, columns) = (2 * tiles.rows.len(), 2 * per_row);
    let stage = grow(stage, rows * columns * channels + 8 * channels);
    let (block, t) = stage.split_at_mut(rows * columns * channels);
    for (s, sample) in grads.chunks(g.output_len()).enumerate() {
        // Zeros past the last output column, and for rows past the last output row.
        for (r, row) in block.chunks_exact_mut(columns * channels).enumerate() {
            if 2 * tiles.rows.start + r < g.out_h {
                row[g.out_w * channels..].fill(T::ZERO);
            } else {
                row.fill(T::ZERO);
            }
        }
        for r in 0..rows {
            let oy = 2 * tiles.rows.start + r;
            if oy >= g.out_h {
                break;
            }
            let row = &mut block[r * columns * channels..][..g.out_w * channels];
            match order {
                Order::Planes => {
                    planes_to_channels_last(&sample[oy * g.out_w..], g.pixels(), row, channels);
                }
                Order::ChannelsLast => row.copy_from_slice(&sample[oy * row.len()..][..row.len()]),
            }
        }
        for band_row in 0..tiles.rows.len() {
            for tx in 0..per_row {
                let at = |r: usize, q: usize| {
                    &block[((2 * band_row + r) * columns + 2 * tx + q) * channels..][..channels]
                };
                let (a, b, c, d) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                // A·dY: A's rows are (1, 0), (1, 1), (1, −1), (0, −1); row i at
                // t[2·i·C ..] (first column) and t[(2·i + 1)·C ..] (second).
                let (first, rest) = t.split_at_mut(2 * channels);
                first[..channels].copy_from_slice(a);
                first[channels..].copy_from_slice(b);
                zip2(&mut rest[..channels], a, c, |x, y| x + y);
                zip2(&mut rest[channels..2 * channels], b, d, |x, y| x + y);
                zip2(&mut rest[2 * channels..3 * channels], a, c, |x, y| x - y);
                zip2(&mut rest[3 * channels..4 * channels], b, d, |x, y| x - y);
                zip2(&mut rest[4 * channels..5 * channels], c, c, |x, _| {
                    T::ZERO - x
                });
                zip2(&mut rest[5 * channels..6 * channels], d, d, |x, _| {
                    T::ZERO - x
                });
                // (A·dY)·Aᵀ along each row: (p, p + q, p − q, −q).
                let column = (s * tiles.rows.len() + band_row) * per_row + tx;
                for i in 0..4 {
                    let p = &t[2 * i * channels..][..channels];
                    let q = &t[(2 * i + 1) * channels..][..channels];
                    let at = |j: usize| ((4 * i + j) * count + column) * channels;
                    dm[at(0)..][..channels].copy_from_slice(p);
                    zip2(&mut dm[at(1)..][..channels], p, q, |x, y| x + y);
                    zip2(&mut dm[at(2)..][..channels], p, q, |x, y| x - y);
                    zip2(&mut dm[at(3)..][..channels], q, q, |x, _| T::ZERO - x);
                }
            }
        }
    }
}

/// `dW = Gᵀ·dU·G` per channel pair, from `dU`, `[16][C_out][C_in]`, into the kernel's
/// layout `[C_out][C_in][3][3]`.
fn kernel_gradient<T: CpuFloat>(g: &Geometry, du: &[T]) -> Vec<T> {
    let (outputs, inputs) = (g.out_channels, g.in_channels);
    // Gᵀ·x for a 4-vector: Gᵀ's rows are (1, ½, ½, 0), (0, ½, −½, 0), (0, ½, ½, 1).
    let g_t = |x: [T; 4]| {
        [
            x[0] + (x[1] + x[2]) * T::HALF,
            (x[1] - x[2]) * T::HALF,
            (x[1] + x[2]) * T::HALF + x[3],
        ]
    };
    let mut dw = vec![T::ZERO; outputs * inputs * 9];
    // In parallel over the output channels, as `transform_kernel`.
    dw.par_chunks_mut(inputs * 9)
        .enumerate()
        .for_each(|(o, dw)| {
            for (c, dw) in dw.chunks_exact_mut(9).enumerate() {
                let at = |i: usize, j: usize| du[((4 * i + j) * outputs + o) * inputs + c];
                // Gᵀ·dU: 3×4, one column at a time.
                let columns: [[T; 3]; 4] =
                    std::array::from_fn(|j| g_t([at(0, j), at(1, j), at(2, j), at(3, j)]));
                let left: [[T; 4]; 3] = std::array::from_fn(|a| columns.map(|column| column[a]));
                // (Gᵀ·dU)·G: 3×3, one row at a time.
                for (a, row) in left.into_iter().enumerate() {
                    for (b, value) in g_t(row).into_iter().enumerate() {
                        dw[a * 3 + b] = value;
                    }
                }
            }
        });
    dw
}

/// The kernel gradient `dW` of the convolution of `x` (as [`forward`]) given the output
/// gradient `dy`, by the chain rule through the Winograd forward pass: with `V` the
/// transformed input patches and `A·dY·Aᵀ` the transformed output gradients,
/// `dU[ξ] = Σ_tiles (A·dY·Aᵀ)[ξ] · V[ξ]ᵀ` (16 gemms that reduce over the tiles) and
/// `dW = Gᵀ·dU·G`.
pub(super) fn weight_gradient<T: CpuFloat>(
    g: &Geometry,
    x: &[T],
    dy: &[T],
    orders: Orders,
) -> Vec<T> {
    let plan = Plan::of::<T>(g);
    let (outputs, inputs) = (g.out_channels, g.in_channels);
    let len = 16 * outputs * inputs;
    let buffers = PerThread::<(Vec<T>, Vec<T>, Vec<T>)>::new();
    let du = summed_over_tasks(g, (x, dy), plan.group, len, |images, grads, du| {
        buffers.with(|(v, dm, scratch)| {
            for tiles in plan.tile_sets(images.len() / g.input_len()) {
                let count = tiles.count();
                let v = grow(v, 16 * inputs * count);
                let dm = grow(dm, 16 * outputs * count);
                let (input, output) = (orders.input, orders.output);
                widest(InputTransform(g, images, &tiles, v, scratch, input));
                widest(OutputGradientTransform(
                    g, grads, &tiles, dm, scratch, output,
                ));
                for xi in 0..16 {
                    // dU[ξ] += DM[ξ]ᵀ · V[ξ]: [C_out, tiles] · [tiles, C_in].
                    let transformed = &dm[xi * count * outputs..][..count * outputs];
                    let lhs = View::dense(transformed, count, outputs).t();
                    let rhs =
                        View::dense(&v[xi * count * inputs..][..count * inputs], count, inputs);
                    let dst = &mut du[xi * outputs * inputs..][..outputs * inputs];
                    matmul(dst, inputs, lhs, rhs, true, plan.threads);
                }
            }
        })
    });
    kernel_gradient(g, &du)
}
