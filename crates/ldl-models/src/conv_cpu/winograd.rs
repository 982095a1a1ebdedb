//! 3×3 convolutions by Winograd's minimal filtering algorithm F(2×2, 3×3) (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2×2 block of outputs (a tile) comes from a 4×4 patch of the input. In the
//! transformed domain the convolution is 16 independent matrix products, one per
//! position ξ of the 4×4 transform:
//!
//! - kernel: `U = G·g·Gᵀ`, stored `[16][C_out][C_in]`;
//! - input: `V = Bᵀ·d·B` per channel and tile, stored `[16][C_in][tiles]`;
//! - products: `M[ξ] = U[ξ] · V[ξ]`, `[C_out, tiles]`, one gemm each;
//! - output: `Y = Aᵀ·m·A` per output channel and tile, the 2×2 block.
//!
//! That is 16 multiplications per tile and channel pair instead of 36: the gemms do
//! 2.25× less work than im2col's, and the transformed input is 4× the image instead of
//! 9×. The transforms only add and halve, so results differ from the direct sum by
//! rounding alone (a few ulps in f32).

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::{gemm_threads, grow, matmul, Float, Geometry, View};

/// Input channels below which im2col is used: the transformed products reduce over the
/// input channels alone, and a gemm that short runs far below its peak (the first layer,
/// with 3 colour channels, stays on im2col).
const MIN_INPUT_CHANNELS: usize = 8;

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

/// Splits `row` into its even and odd elements.
#[inline(always)]
fn deinterleave<T: Copy>(row: &[T], even: &mut [T], odd: &mut [T]) {
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// Whether the Winograd path computes this convolution.
pub(super) fn applies(g: &Geometry) -> bool {
    g.kernel_h == 3 && g.kernel_w == 3 && g.in_channels >= MIN_INPUT_CHANNELS
}

/// Tiles per row and per column of the output.
fn tiles(g: &Geometry) -> (usize, usize) {
    (g.out_h.div_ceil(2), g.out_w.div_ceil(2))
}

/// `U = G·g·Gᵀ` for every (output, input) channel pair, `[16][C_out][C_in]`.
fn transform_kernel<T: Float>(g: &Geometry, w: &[T]) -> Vec<T> {
    let (outputs, inputs) = (g.out_channels, g.in_channels);
    let mut u = vec![T::ZERO; 16 * outputs * inputs];
    for o in 0..outputs {
        for c in 0..inputs {
            let k = &w[(o * inputs + c) * 9..][..9];
            // G·k, 4×3: G's rows are (1, 0, 0), (½, ½, ½), (½, −½, ½), (0, 0, 1).
            let mut t = [[T::ZERO; 3]; 4];
            for j in 0..3 {
                let (k0, k1, k2) = (k[j], k[3 + j], k[6 + j]);
                t[0][j] = k0;
                t[1][j] = (k0 + k1 + k2) * T::HALF;
                t[2][j] = (k0 - k1 + k2) * T::HALF;
                t[3][j] = k2;
            }
            // (G·k)·Gᵀ, 4×4.
            for (i, row) in t.iter().enumerate() {
                let [a, b, c2] = *row;
                let transformed = [a, (a + b + c2) * T::HALF, (a - b + c2) * T::HALF, c2];
                for (j, value) in transformed.into_iter().enumerate() {
                    u[((i * 4 + j) * outputs + o) * inputs + c] = value;
                }
            }
        }
    }
    u
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

/// Fills `v`, `[16][C_in][tiles]`, with the transformed patches `Bᵀ·d·B` of `images`
/// (Bᵀ's rows are (1, 0, −1, 0), (0, 1, 1, 0), (0, −1, 1, 0), (0, 1, 0, −1)).
///
/// A row of tiles at a time, so that every loop runs along image rows and vectorises:
/// first `Bᵀ` combines the four input rows of the tile row (`t`, indexed by image
/// column + padding, zero outside the image), then `B` combines columns
/// `2·tx … 2·tx + 3` of `t` into the 16 outputs of each tile.
#[inline(always)]
fn transform_input<T: Float>(
    g: &Geometry,
    images: &[T],
    tiles: &Tiles,
    v: &mut [T],
    scratch: &mut Vec<T>,
) {
    let count = tiles.count();
    let per_row = tiles.per_row;
    let span = 2 * per_row + 2;
    let half = per_row + 1;
    let scratch = grow(scratch, 4 * span + g.width + 2 * half);
    let (t, rest) = scratch.split_at_mut(4 * span);
    let (zeros, parity) = rest.split_at_mut(g.width);
    let (even, odd) = parity.split_at_mut(half);
    zeros.fill(T::ZERO);
    let zeros = &*zeros;
    // Columns of `t` the image covers: index `x` is image column `x − p`.
    let (first, end) = (g.padding.min(span), (g.width + g.padding).min(span));
    for (s, image) in images.chunks(g.input_len()).enumerate() {
        for c in 0..g.in_channels {
            let plane = &image[c * g.height * g.width..][..g.height * g.width];
            let line = |y: usize| match y.checked_sub(g.padding) {
                Some(y) if y < g.height => &plane[y * g.width..][..g.width],
                _ => zeros,
            };
            for (band_row, ty) in tiles.rows.clone().enumerate() {
                let d = [0, 1, 2, 3].map(|i| &line(2 * ty + i)[..end - first]);
                let (t0, rest) = t.split_at_mut(span);
                let (t1, rest) = rest.split_at_mut(span);
                let (t2, t3) = rest.split_at_mut(span);
                for row in [&mut *t0, &mut *t1, &mut *t2, &mut *t3] {
                    row[..first].fill(T::ZERO);
                    row[end..].fill(T::ZERO);
                }
                zip2(&mut t0[first..end], d[0], d[2], |a, b| a - b);
                zip2(&mut t1[first..end], d[1], d[2], |a, b| a + b);
                zip2(&mut t2[first..end], d[2], d[1], |a, b| a - b);
                zip2(&mut t3[first..end], d[1], d[3], |a, b| a - b);
                let column = (s * tiles.rows.len() + band_row) * per_row;
                for (r, q) in t.chunks_exact(span).enumerate() {
                    // Tile tx reads columns 2·tx … 2·tx + 3 of q: even[tx], odd[tx],
                    // even[tx + 1], odd[tx + 1], each a unit-stride stream.
                    deinterleave(q, even, odd);
                    let stream = |xi: usize| (xi * g.in_channels + c) * count + column;
                    let (a, rest) = v.split_at_mut(stream(4 * r + 1));
                    let v0 = &mut a[stream(4 * r)..][..per_row];
                    let (b, rest) = rest.split_at_mut(stream(4 * r + 2) - stream(4 * r + 1));
                    let v1 = &mut b[..per_row];
                    let (e, rest) = rest.split_at_mut(stream(4 * r + 3) - stream(4 * r + 2));
                    let v2 = &mut e[..per_row];
                    let v3 = &mut rest[..per_row];
                    let (e0, e1) = (&even[..per_row], &even[1..=per_row]);
                    let (o0, o1) = (&odd[..per_row], &odd[1..=per_row]);
                    zip2(v0, e0, e1, |a, b| a - b);
                    zip2(v1, o0, e1, |a, b| a + b);
                    zip2(v2, e1, o0, |a, b| a - b);
                    zip2(v3, o0, o1, |a, b| a - b);
                }
            }
        }
    }
}

/// Writes the output pixels of `tiles` from the products `m`, `[16][C_out][tiles]`, into
/// `out`, the outputs of the task's samples: `Y = Aᵀ·m·A` per tile (Aᵀ's rows are
/// (1, 1, 1, 0) and (0, 1, −1, −1)), a row of tiles at a time as [`transform_input`].
#[inline(always)]
fn transform_output<T: Float>(
    g: &Geometry,
    m: &[T],
    tiles: &Tiles,
    out: &mut [MaybeUninit<T>],
    scratch: &mut Vec<T>,
) {
    let count = tiles.count();
    let per_row = tiles.per_row;
    let scratch = grow(scratch, 10 * per_row);
    let (scratch, columns) = scratch.split_at_mut(8 * per_row);
    for (s, sample) in out.chunks_mut(g.output_len()).enumerate() {
        for o in 0..g.out_channels {
            let plane = &mut sample[o * g.pixels()..][..g.pixels()];
            for (band_row, ty) in tiles.rows.clone().enumerate() {
                let column = (s * tiles.rows.len() + band_row) * per_row;
                let stream =
                    |xi: usize| &m[(xi * g.out_channels + o) * count + column..][..per_row];
                // Aᵀ·m: two rows of four columns, each a vector over the tiles.
                let (upper, lower) = scratch.split_at_mut(4 * per_row);
                for j in 0..4 {
                    let (m0, m1, m2, m3) =
                        (stream(j), stream(4 + j), stream(8 + j), stream(12 + j));
                    let up = &mut upper[j * per_row..][..per_row];
                    zip3(up, m0, m1, m2, |a, b, c| a + b + c);
                    let low = &mut lower[j * per_row..][..per_row];
                    zip3(low, m1, m2, m3, |a, b, c| a - b - c);
                }
                // (Aᵀ·m)·A: output columns 2·tx and 2·tx + 1 of rows 2·ty and 2·ty + 1.
                for (r, half) in [&*upper, &*lower].into_iter().enumerate() {
                    let oy = 2 * ty + r;
                    if oy >= g.out_h {
                        continue;
                    }
                    let (p0, p1) = (&half[..per_row], &half[per_row..2 * per_row]);
                    let (p2, p3) = (&half[2 * per_row..3 * per_row], &half[3 * per_row..]);
                    let (left, right) = columns.split_at_mut(per_row);
                    zip3(left, p0, p1, p2, |a, b, c| a + b + c);
                    zip3(right, p1, p2, p3, |a, b, c| a - b - c);
                    let line = &mut plane[oy * g.out_w..][..g.out_w];
                    let pairs = g.out_w / 2;
                    for (pair, (&l, &r)) in line[..2 * pairs]
                        .chunks_exact_mut(2)
                        .zip(left.iter().zip(right.iter()))
                    {
                        pair[0].write(l);
                        pair[1].write(r);
                    }
                    // An odd last column keeps the first half of its tile.
                    if g.out_w % 2 == 1 {
                        line[g.out_w - 1].write(left[pairs]);
                    }
                }
            }
        }
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

/// The 16 products `M[ξ] = U[ξ] · V[ξ]` for `count` tiles.
fn multiply<T: Float>(g: &Geometry, u: &[T], v: &[T], m: &mut [T], count: usize, threads: usize) {
    let (outputs, inputs) = (g.out_channels, g.in_channels);
    for xi in 0..16 {
        let lhs = View::dense(
            &u[xi * outputs * inputs..][..outputs * inputs],
            outputs,
            inputs,
        );
        let rhs = View::dense(&v[xi * inputs * count..][..inputs * count], inputs, count);
        let dst = &mut m[xi * outputs * count..][..outputs * count];
        matmul(dst, count, lhs, rhs, false, threads);
    }
}

/// The convolution of `x` with `w` (3×3, stride 1, `g.padding`), as [`super::forward`].
pub(super) fn forward<T: Float>(g: &Geometry, x: &[T], w: &[T]) -> Vec<T> {
    let u = transform_kernel(g, w);
    let plan = Plan::of::<T>(g);
    let len = g.batch * g.output_len();
    let mut y = Vec::with_capacity(len);
    y.spare_capacity_mut()[..len]
        .par_chunks_mut(plan.group * g.output_len())
        .zip(x.par_chunks(plan.group * g.input_len()))
        .with_max_len(1)
        .for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(v, m, scratch), (out, images)| {
                for tiles in plan.tile_sets(images.len() / g.input_len()) {
                    let count = tiles.count();
                    let v = grow(v, 16 * g.in_channels * count);
                    let m = grow(m, 16 * g.out_channels * count);
                    transform_input(g, images, &tiles, v, scratch);
                    multiply(g, &u, v, m, count, plan.threads);
                    transform_output(g, m, &tiles, out, scratch);
                }
            },
        );
    // SAFETY: every task wrote all the output pixels of its samples: the tiles cover
    // every output row and column.
    unsafe { y.set_len(len) };
    y
}

/// Fills `dm`, `[16][C_out][tiles]`, with `A·dY·Aᵀ` of every 2×2 tile of the output
/// gradients `grads` (outputs past an odd edge count as zero): the transposed output
/// transform, which carries the gradient back to the products. A row of tiles at a time
/// as [`transform_input`].
#[inline(always)]
fn transform_output_gradient<T: Float>(
    g: &Geometry,
    grads: &[T],
    tiles: &Tiles,
    dm: &mut [T],
    scratch: &mut Vec<T>,
) {
    let count = tiles.count();
    let n = tiles.per_row;
    // Two padded gradient rows, then the tile columns split by parity (a, b from the
    // upper row, c, d from the lower), then one row of A·dY (p, q).
    let scratch = grow(scratch, 4 * n + 6 * n);
    let (padded, rest) = scratch.split_at_mut(4 * n);
    let (split, pq) = rest.split_at_mut(4 * n);
    for (s, sample) in grads.chunks(g.output_len()).enumerate() {
        for o in 0..g.out_channels {
            let plane = &sample[o * g.pixels()..][..g.pixels()];
            for (band_row, ty) in tiles.rows.clone().enumerate() {
                for (r, row) in padded.chunks_exact_mut(2 * n).enumerate() {
                    row.fill(T::ZERO);
                    let oy = 2 * ty + r;
                    if oy < g.out_h {
                        row[..g.out_w].copy_from_slice(&plane[oy * g.out_w..][..g.out_w]);
                    }
                }
                let (a, rest) = split.split_at_mut(n);
                let (b, rest) = rest.split_at_mut(n);
                let (c, d) = rest.split_at_mut(n);
                deinterleave(&padded[..2 * n], a, b);
                deinterleave(&padded[2 * n..], c, d);
                let column = (s * tiles.rows.len() + band_row) * n;
                let (p, q) = pq.split_at_mut(n);
                for i in 0..4 {
                    // Row i of A·dY; A's rows are (1, 0), (1, 1), (1, −1), (0, −1).
                    match i {
                        0 => {
                            p.copy_from_slice(a);
                            q.copy_from_slice(b);
                        }
                        1 => {
                            zip2(p, a, c, |x, y| x + y);
                            zip2(q, b, d, |x, y| x + y);
                        }
                        2 => {
                            zip2(p, a, c, |x, y| x - y);
                            zip2(q, b, d, |x, y| x - y);
                        }
                        _ => {
                            zip2(p, c, c, |x, _| T::ZERO - x);
                            zip2(q, d, d, |x, _| T::ZERO - x);
                        }
                    }
                    // (A·dY)·Aᵀ along the row: (p, p + q, p − q, −q).
                    let stream = |j: usize| ((4 * i + j) * g.out_channels + o) * count + column;
                    for (j, dst) in (0..4).map(|j| (j, stream(j))) {
                        let dst = &mut dm[dst..][..n];
                        match j {
                            0 => dst.copy_from_slice(p),
                            1 => zip2(dst, p, q, |x, y| x + y),
                            2 => zip2(dst, p, q, |x, y| x - y),
                            _ => zip2(dst, q, q, |x, _| T::ZERO - x),
                        }
                    }
                }
            }
        }
    }
}

/// `dW = Gᵀ·dU·G` per channel pair, from `dU`, `[16][C_out][C_in]`, into the kernel's
/// layout `[C_out][C_in][3][3]`.
fn kernel_gradient<T: Float>(g: &Geometry, du: &[T]) -> Vec<T> {
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
    for o in 0..outputs {
        for c in 0..inputs {
            let at = |i: usize, j: usize| du[((4 * i + j) * outputs + o) * inputs + c];
            // Gᵀ·dU: 3×4, one column at a time.
            let columns: [[T; 3]; 4] =
                std::array::from_fn(|j| g_t([at(0, j), at(1, j), at(2, j), at(3, j)]));
            let left: [[T; 4]; 3] = std::array::from_fn(|a| columns.map(|column| column[a]));
            // (Gᵀ·dU)·G: 3×3, one row at a time.
            for (a, row) in left.into_iter().enumerate() {
                for (b, value) in g_t(row).into_iter().enumerate() {
                    dw[((o * inputs + c) * 3 + a) * 3 + b] = value;
                }
            }
        }
    }
    dw
}

/// The kernel gradient `dW` of the convolution of `x` (as [`forward`]) given the output
/// gradient `dy`, by the chain rule through the Winograd forward pass: with `V` the
/// transformed input patches and `A·dY·Aᵀ` the transformed output gradients,
/// `dU[ξ] = Σ_tiles (A·dY·Aᵀ)[ξ] · V[ξ]ᵀ` (16 gemms that reduce over the tiles) and
/// `dW = Gᵀ·dU·G`.
pub(super) fn weight_gradient<T: Float>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let plan = Plan::of::<T>(g);
    let (outputs, inputs) = (g.out_channels, g.in_channels);
    let len = 16 * outputs * inputs;
    let du = x
        .par_chunks(plan.group * g.input_len())
        .zip(dy.par_chunks(plan.group * g.output_len()))
        .with_max_len(1)
        .fold(
            || (vec![T::ZERO; len], Vec::new(), Vec::new(), Vec::new()),
            |(mut du, mut v, mut dm, mut scratch), (images, grads)| {
                for tiles in plan.tile_sets(images.len() / g.input_len()) {
                    let count = tiles.count();
                    let v = grow(&mut v, 16 * inputs * count);
                    let dm = grow(&mut dm, 16 * outputs * count);
                    transform_input(g, images, &tiles, v, &mut scratch);
                    transform_output_gradient(g, grads, &tiles, dm, &mut scratch);
                    for xi in 0..16 {
                        let lhs = View::dense(
                            &dm[xi * outputs * count..][..outputs * count],
                            outputs,
                            count,
                        );
                        let rhs =
                            View::dense(&v[xi * inputs * count..][..inputs * count], inputs, count);
                        let dst = &mut du[xi * outputs * inputs..][..outputs * inputs];
                        matmul(dst, inputs, lhs, rhs.t(), true, plan.threads);
                    }
                }
                (du, v, dm, scratch)
            },
        )
        .map(|(du, _, _, _)| du)
        .reduce(
            || vec![T::ZERO; len],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                a
            },
        );
    kernel_gradient(g, &du)
}
