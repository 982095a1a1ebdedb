//! The fused BatchNorm + ReLU passes on channels-last activations, `(N, H, W, C)`: rows
//! of `C` values, one row per pixel, so every step combines a vector of all channels.
//!
//! Per-channel sums run over fixed tasks of [`ROWS_PER_TASK`] rows, each summed in `T`
//! and then added in f64 in task order: the tasks depend on the data alone, so these sums
//! come out the same whatever the thread count.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::{relu_gradient, ChannelStats};
use crate::cpu_float::CpuFloat;
use crate::cpu_storage::filled_by;

/// Rows per task: 256 values per channel summed in `T` (as the planes path's eight lanes
/// over a 45×45 plane), and a task's rows of 256 channels (1 MB in f32) stay in L2.
const ROWS_PER_TASK: usize = 256;

/// Per-channel sums over all rows: `add(rows, sums)` adds a task's rows into its `sums`
/// (`width` values, zeroed), which are then added in f64 in task order.
fn row_sums<T: CpuFloat>(
    rows: usize,
    width: usize,
    add: impl Fn(Range<usize>, &mut [T]) + Sync,
) -> Vec<f64> {
    let partial: Vec<Vec<T>> = (0..rows.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|task| {
            let start = task * ROWS_PER_TASK;
            let mut sums = vec![T::ZERO; width];
            add(start..(start + ROWS_PER_TASK).min(rows), &mut sums);
            sums
        })
        .collect();
    let mut total = vec![0.0; width];
    for sums in partial {
        for (t, s) in total.iter_mut().zip(sums) {
            *t += s.to_f64();
        }
    }
    total
}

/// Batch mean and biased variance per channel, in two passes as the planes path.
pub(super) fn stats<T: CpuFloat>(x: &[T], channels: usize) -> ChannelStats {
    let rows = x.len() / channels;
    let count = rows as f64;
    let pixels = |range: Range<usize>| {
        x[range.start * channels..range.end * channels].chunks_exact(channels)
    };
    let sums = row_sums(rows, channels, |range, sums: &mut [T]| {
        for pixel in pixels(range) {
            for (s, &v) in sums.iter_mut().zip(pixel) {
                *s += v;
            }
        }
    });
    let mean: Vec<f64> = sums.iter().map(|s| s / count).collect();
    let centre: Vec<T> = mean.iter().map(|&m| T::from_f64(m)).collect();
    let squares = row_sums(rows, channels, |range, sums: &mut [T]| {
        for pixel in pixels(range) {
            for ((s, &v), &m) in sums.iter_mut().zip(pixel).zip(&centre) {
                *s += (v - m) * (v - m);
            }
        }
    });
    // `centre` is the mean rounded to T; correct for the rounding.
    let variance = (0..channels)
        .map(|c| {
            let offset = mean[c] - centre[c].to_f64();
            (squares[c] / count - offset * offset).max(0.0)
        })
        .collect();
    ChannelStats { mean, variance }
}

/// Writes `f(row)` for every row of `out`, `channels` wide, in tasks of rows.
fn rows_by<T: CpuFloat>(
    len: usize,
    channels: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    // Whole rows only: `chunks_exact_mut` would leave a tail unwritten.
    assert_eq!(len % channels.max(1), 0, "channels-last rows of {channels}");
    let fill = |out: &mut [MaybeUninit<T>]| {
        out.par_chunks_mut(ROWS_PER_TASK * channels)
            .enumerate()
            .for_each(|(task, rows)| {
                for (r, row) in rows.chunks_exact_mut(channels).enumerate() {
                    f(task * ROWS_PER_TASK + r, row);
                }
            })
    };
    // SAFETY: `fill` writes all `len` elements: the tasks cover `out` in whole rows
    // (`len` is a multiple of `channels`), and `f` writes every element of its row (the
    // callers zip the row with as many values, and their indexing panics otherwise).
    unsafe { filled_by(len, fill) }
}

/// `max(0, scale·x + shift)` per channel.
pub(super) fn forward<T: CpuFloat>(x: &[T], scale: &[f64], shift: &[f64]) -> Vec<T> {
    let channels = scale.len();
    let (scale, shift): (Vec<T>, Vec<T>) = scale
        .iter()
        .zip(shift)
        .map(|(&a, &b)| (T::from_f64(a), T::from_f64(b)))
        .unzip();
    rows_by(x.len(), channels, |row, out| {
        let input = &x[row * channels..][..channels];
        for ((o, &v), (&a, &b)) in out.iter_mut().zip(input).zip(scale.iter().zip(&shift)) {
            let z = a * v + b;
            o.write(if z > T::ZERO { z } else { T::ZERO });
        }
    })
}

/// `[[Σg], [Σg·x̂]]` per channel, `g = dy·[y > 0]`, centred before multiplying as the
/// planes path.
pub(super) fn gradient_sums<T: CpuFloat>(
    x: &[T],
    y: &[T],
    dy: &[T],
    mean: &[f64],
    inv_std: &[f64],
) -> Vec<T> {
    let channels = mean.len();
    let rows = x.len() / channels;
    let centre: Vec<T> = mean.iter().map(|&m| T::from_f64(m)).collect();
    let sums = row_sums(rows, 2 * channels, |range, sums: &mut [T]| {
        let (sum_g, sum_g_x) = sums.split_at_mut(channels);
        for row in range {
            let at = row * channels..(row + 1) * channels;
            let (x, y, dy) = (&x[at.clone()], &y[at.clone()], &dy[at]);
            // Zipped, not indexed: no bounds checks, so the loop vectorises.
            let sums = sum_g.iter_mut().zip(sum_g_x.iter_mut());
            let values = x.iter().zip(&centre).zip(y.iter().zip(dy));
            for ((s, t), ((&x, &m), (&y, &dy))) in sums.zip(values) {
                let g = relu_gradient(y, dy);
                *s += g;
                *t += g * (x - m);
            }
        }
    });
    let (sum_g, sum_g_x) = sums.split_at(channels);
    let sum_g_xhat = sum_g_x.iter().zip(inv_std).map(|(s, i)| s * i);
    sum_g
        .iter()
        .copied()
        .chain(sum_g_xhat)
        .map(T::from_f64)
        .collect()
}

/// `dx = a·g + slope·x + offset` per channel, from `(a, slope, offset)` per channel.
pub(super) fn input_gradient<T: CpuFloat>(
    x: &[T],
    y: &[T],
    dy: &[T],
    coefficients: &[(f64, f64, f64)],
) -> Vec<T> {
    let channels = coefficients.len();
    let lanes = |pick: fn(&(f64, f64, f64)) -> f64| -> Vec<T> {
        coefficients.iter().map(|c| T::from_f64(pick(c))).collect()
    };
    let (a, slope, offset) = (lanes(|c| c.0), lanes(|c| c.1), lanes(|c| c.2));
    rows_by(x.len(), channels, |row, out| {
        let at = row * channels..(row + 1) * channels;
        let (x, y, dy) = (&x[at.clone()], &y[at.clone()], &dy[at]);
        let coefficients = a.iter().zip(&slope).zip(&offset);
        let values = x.iter().zip(y.iter().zip(dy));
        for (o, (((&a, &slope), &offset), (&x, (&y, &dy)))) in
            out.iter_mut().zip(coefficients.zip(values))
        {
            o.write(a * relu_gradient(y, dy) + slope * x + offset);
        }
    })
}
