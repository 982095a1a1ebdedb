//! 2×2 max-pooling (stride 2) on the CPU with the exact gradient, for f32/f64 `(N, C, H, W)`
//! tensors.
//!
//! candle 0.11's max-pool backward scales gradients wrongly and is built from half a dozen
//! full-size ops (upsampling, a mask, an average pool). Here the forward pass is one read of
//! the input and the backward pass routes each output gradient to the first maximum of its
//! window, as PyTorch does. An odd last row or column is dropped, as in PyTorch's
//! `MaxPool2d(2, 2)`.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_float::CpuFloat;
use crate::cpu_storage::{filled_by, map3, slice};

/// `(N, C, H, W) → (N, C, ⌊H/2⌋, ⌊W/2⌋)`.
pub(crate) struct MaxPool2x2;

/// Window origins of output `(oy, ox)`: the four input offsets in scan order.
#[inline(always)]
fn window(width: usize, oy: usize, ox: usize) -> [usize; 4] {
    let top = 2 * oy * width + 2 * ox;
    [top, top + 1, top + width, top + width + 1]
}

/// The 2×2 max-pool of `x`, planes of `height × width` one after the other, into planes of
/// `⌊height/2⌋ × ⌊width/2⌋`.
pub(crate) fn pool<T: CpuFloat>(x: &[T], (height, width): (usize, usize)) -> Vec<T> {
    let (out_h, out_w) = (height / 2, width / 2);
    let planes = x.len() / (height * width);
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(out_h * out_w)
            .zip(x.par_chunks(height * width))
            .for_each(|(out, plane)| {
                for oy in 0..out_h {
                    for ox in 0..out_w {
                        let [a, b, c, d] = window(width, oy, ox).map(|i| plane[i]);
                        let ab = if b > a { b } else { a };
                        let cd = if d > c { d } else { c };
                        out[oy * out_w + ox].write(if cd > ab { cd } else { ab });
                    }
                }
            })
    };
    // SAFETY: `fill` writes all `planes · out_h · out_w` elements: one chunk per input
    // plane, every pixel of each.
    unsafe { filled_by(planes * out_h * out_w, fill) }
}

/// The 2×2 max-pool of `x`, images `(H, W, C)` channels last one after the other, into
/// images `(⌊H/2⌋, ⌊W/2⌋, C)`; values compared as [`pool`] does.
pub(crate) fn pool_channels_last<T: CpuFloat>(
    x: &[T],
    (height, width): (usize, usize),
    channels: usize,
) -> Vec<T> {
    let (out_h, out_w) = (height / 2, width / 2);
    let images = x.len() / (height * width * channels);
    let max = |a: T, b: T| if b > a { b } else { a };
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(out_w * channels)
            .enumerate()
            .for_each(|(row, out)| {
                let (image, oy) = (row / out_h.max(1), row % out_h.max(1));
                let top =
                    &x[((image * height + 2 * oy) * width) * channels..][..2 * width * channels];
                let (upper, lower) = top.split_at(width * channels);
                for (ox, cell) in out.chunks_exact_mut(channels).enumerate() {
                    let at = 2 * ox * channels;
                    let (a, b) = upper[at..][..2 * channels].split_at(channels);
                    let (c, d) = lower[at..][..2 * channels].split_at(channels);
                    for (k, slot) in cell.iter_mut().enumerate() {
                        slot.write(max(max(a[k], b[k]), max(c[k], d[k])));
                    }
                }
            })
    };
    // SAFETY: `fill` writes all `images · out_h · out_w · C` elements: one chunk per
    // output row of every image, every channel of every pixel of it.
    unsafe { filled_by(images * out_h * out_w * channels, fill) }
}

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "ldl-max-pool-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(pool(slice(v, l, self.name())?, (h, w))),
            CpuStorage::F64(v) => CpuStorage::F64(pool(slice(v, l, self.name())?, (h, w))),
            _ => candle_core::bail!("max-pool: expected f32 or f64"),
        };
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        Ok(Some(x.apply_op3_no_bwd(y, &dy, &Unpool)?))
    }
}

/// `(x, y, dy) → dx`: each `dy` goes to the first input of its window equal to the max.
struct Unpool;

fn unpool<T: CpuFloat>(x: &[T], y: &[T], dy: &[T], (height, width): (usize, usize)) -> Vec<T> {
    let (out_h, out_w) = (height / 2, width / 2);
    let zero = T::ZERO;
    let planes = x.len() / (height * width);
    // Every plane of `dx` pairs with a plane of `y` and `dy` below (the zip would stop
    // short).
    assert!(
        y.len() == planes * out_h * out_w && dy.len() == y.len(),
        "max-unpool: input lengths"
    );
    // Every element is written once: the cells that lose their window and an odd last
    // row or column with zero.
    let fill = |dx: &mut [MaybeUninit<T>]| {
        dx.par_chunks_mut(height * width)
            .zip(x.par_chunks(height * width))
            .zip(
                y.par_chunks(out_h * out_w)
                    .zip(dy.par_chunks(out_h * out_w)),
            )
            .for_each(|((grad, plane), (maxima, grads))| {
                for oy in 0..out_h {
                    let (top, bottom) = grad[2 * oy * width..][..2 * width].split_at_mut(width);
                    let (upper, lower) = plane[2 * oy * width..][..2 * width].split_at(width);
                    for ox in 0..out_w {
                        let (m, g) = (maxima[oy * out_w + ox], grads[oy * out_w + ox]);
                        let cells = [
                            upper[2 * ox],
                            upper[2 * ox + 1],
                            lower[2 * ox],
                            lower[2 * ox + 1],
                        ];
                        // The first cell equal to the maximum, in scan order; a NaN maximum
                        // matches nothing and its gradient goes to the first cell. Selects,
                        // not branches: which cell wins is unpredictable.
                        let b = cells[1] == m && cells[0] != m;
                        let c = cells[2] == m && cells[0] != m && cells[1] != m;
                        let d = cells[3] == m && cells[0] != m && cells[1] != m && cells[2] != m;
                        let a = !(b || c || d);
                        let pick = |hit: bool| if hit { g } else { zero };
                        top[2 * ox].write(pick(a));
                        top[2 * ox + 1].write(pick(b));
                        bottom[2 * ox].write(pick(c));
                        bottom[2 * ox + 1].write(pick(d));
                    }
                    if width % 2 == 1 {
                        top[width - 1].write(zero);
                        bottom[width - 1].write(zero);
                    }
                }
                if height % 2 == 1 {
                    for cell in &mut grad[(height - 1) * width..] {
                        cell.write(zero);
                    }
                }
            })
    };
    // SAFETY: `fill` writes all `x.len()` elements: one chunk per plane (each paired
    // with its window maxima and gradients, asserted above), and every cell
    // of every plane: each window's four, the odd column, the odd row.
    unsafe { filled_by(x.len(), fill) }
}

impl CustomOp3 for Unpool {
    fn name(&self) -> &'static str {
        "ldl-max-unpool-2x2"
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
        let (_, _, h, w) = l1.shape().dims4()?;
        let out = map3(
            self.name(),
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, y, dy| unpool(x, y, dy, (h, w)),
            |x, y, dy| unpool(x, y, dy, (h, w)),
        )?;
        Ok((out, l1.shape().clone()))
    }
}
