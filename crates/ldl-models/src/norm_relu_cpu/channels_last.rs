//! The fused BatchNorm + ReLU passes on channels-last activations, `(N, H, W, C)`: rows
//! of `C` values, one row per pixel, so every step combines a vector of all channels.
//!
//! Each task's loop runs in a function compiled for the widest vectors the CPU has
//! (`crate::simd`): a row of 16 channels is one AVX-512 vector of f32, where the baseline
//! build's SSE took four. The lanes are channels, so every sum adds the rows in the same
//! order on any path, and the results do not change.
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
use crate::simd::{widest, Kernel};

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
        widest(SumRows {
            pixels: pixels(range),
            centre: None,
            sums,
        })
    });
    let mean: Vec<f64> = sums.iter().map(|s| s / count).collect();
    let centre: Vec<T> = mean.iter().map(|&m| T::from_f64(m)).collect();
    let squares = row_sums(rows, channels, |range, sums: &mut [T]| {
        widest(SumRows {
            pixels: pixels(range),
            centre: Some(&centre),
            sums,
        })
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

/// A task's per-channel sums of the values, or of their squared deviations from
/// `centre`, for [`widest`]: these passes, like the others here, run in functions compiled
/// for the widest vectors (baseline x86-64 gives 4 f32 lanes).
struct SumRows<'a, T, P> {
    pixels: P,
    centre: Option<&'a [T]>,
    sums: &'a mut [T],
}

impl<'a, T: CpuFloat, P: Iterator<Item = &'a [T]>> Kernel for SumRows<'a, T, P> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        match self.centre {
            None => {
                for pixel in self.pixels {
                    for (s, &v) in self.sums.iter_mut().zip(pixel) {
                        *s += v;
                    }
                }
            }
            Some(centre) => {
                for pixel in self.pixels {
                    for ((s, &v), &m) in self.sums.iter_mut().zip(pixel).zip(centre) {
                        *s += (v - m) * (v - m);
                    }
                }
            }
        }
    }
}

/// Writes every row of `out`, `channels` wide, in tasks of [`ROWS_PER_TASK`] rows:
/// `task(first row, rows)` writes every element of `rows` (whole rows, the first being
/// `first row`).
fn rows_by<T: CpuFloat>(
    len: usize,
    channels: usize,
    task: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    // Whole rows only: `chunks_exact_mut` would leave a tail unwritten.
    assert_eq!(len % channels.max(1), 0, "channels-last rows of {channels}");
    let fill = |out: &mut [MaybeUninit<T>]| {
        out.par_chunks_mut(ROWS_PER_TASK * channels)
            .enumerate()
            .for_each(|(index, rows)| task(index * ROWS_PER_TASK, rows))
    };
    // SAFETY: `fill` writes all `len` elements: the tasks cover `out` in whole rows
    // (`len` is a multiple of `channels`), and each task writes every element of its
    // rows (the kernels zip each row with as many values, and their indexing panics
    // otherwise).
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
    rows_by(x.len(), channels, |first, out| {
        widest(NormReluRows {
            x: &x[first * channels..][..out.len()],
            scale: &scale,
            shift: &shift,
            out,
        })
    })
}

/// [`forward`] over one task's rows, for [`widest`].
struct NormReluRows<'a, T> {
    x: &'a [T],
    scale: &'a [T],
    shift: &'a [T],
    out: &'a mut [MaybeUninit<T>],
}

impl<T: CpuFloat> Kernel for NormReluRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let channels = self.scale.len();
        for (out, input) in self
            .out
            .chunks_exact_mut(channels)
            .zip(self.x.chunks_exact(channels))
        {
            let coefficients = self.scale.iter().zip(self.shift);
            for ((o, &v), (&a, &b)) in out.iter_mut().zip(input).zip(coefficients) {
                let z = a * v + b;
                o.write(if z > T::ZERO { z } else { T::ZERO });
            }
        }
    }
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
        let at = range.start * channels..range.end * channels;
        widest(GradientSumRows {
            x: &x[at.clone()],
            y: &y[at.clone()],
            dy: &dy[at],
            centre: &centre,
            sums,
        })
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
    rows_by(x.len(), channels, |first, out| {
        let at = first * channels..first * channels + out.len();
        widest(InputGradientRows {
            x: &x[at.clone()],
            y: &y[at.clone()],
            dy: &dy[at],
            coefficients: (&a, &slope, &offset),
            out,
        })
    })
}

/// [`gradient_sums`] over one task's rows, for [`widest`]: `sums` holds `[Σg, Σg·(x−m)]`.
struct GradientSumRows<'a, T> {
    x: &'a [T],
    y: &'a [T],
    dy: &'a [T],
    centre: &'a [T],
    sums: &'a mut [T],
}

impl<T: CpuFloat> Kernel for GradientSumRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let channels = self.centre.len();
        let (sum_g, sum_g_x) = self.sums.split_at_mut(channels);
        let rows = self.x.chunks_exact(channels).zip(
            self.y
                .chunks_exact(channels)
                .zip(self.dy.chunks_exact(channels)),
        );
        for (x, (y, dy)) in rows {
            // Zipped, not indexed: no bounds checks, so the loop vectorises.
            let sums = sum_g.iter_mut().zip(sum_g_x.iter_mut());
            let values = x.iter().zip(self.centre).zip(y.iter().zip(dy));
            for ((s, t), ((&x, &m), (&y, &dy))) in sums.zip(values) {
                let g = relu_gradient(y, dy);
                *s += g;
                *t += g * (x - m);
            }
        }
    }
}

/// [`input_gradient`] over one task's rows, for [`widest`].
struct InputGradientRows<'a, T> {
    x: &'a [T],
    y: &'a [T],
    dy: &'a [T],
    /// `(a, slope, offset)` per channel.
    coefficients: (&'a [T], &'a [T], &'a [T]),
    out: &'a mut [MaybeUninit<T>],
}

impl<T: CpuFloat> Kernel for InputGradientRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (a, slope, offset) = self.coefficients;
        let channels = a.len();
        let rows = self.x.chunks_exact(channels).zip(
            self.y
                .chunks_exact(channels)
                .zip(self.dy.chunks_exact(channels)),
        );
        for (out, (x, (y, dy))) in self.out.chunks_exact_mut(channels).zip(rows) {
            let coefficients = a.iter().zip(slope).zip(offset);
            let values = x.iter().zip(y.iter().zip(dy));
            for (o, (((&a, &slope), &offset), (&x, (&y, &dy)))) in
                out.iter_mut().zip(coefficients.zip(values))
            {
                o.write(a * relu_gradient(y, dy) + slope * x + offset);
            }
        }
    }
}
