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
use crate::order::Order;
use crate::simd::{widest, Kernel};

/// `(N, C, H, W) → (N, C, ⌊H/2⌋, ⌊W/2⌋)`, or channels last
/// `(N, H, W, C) → (N, ⌊H/2⌋, ⌊W/2⌋, C)`.
pub(crate) struct MaxPool2x2(pub(crate) Order);

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
                    let windows = a.iter().zip(b).zip(c.iter().zip(d));
                    for (slot, ((&a, &b), (&c, &d))) in cell.iter_mut().zip(windows) {
                        slot.write(max(max(a, b), max(c, d)));
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
        let (n, a, b, c) = l.shape().dims4()?;
        let order = self.0;
        let (h, w, channels) = match order {
            Order::Planes => (b, c, a),
            Order::ChannelsLast => (a, b, c),
        };
        fn run<T: CpuFloat>(
            x: &[T],
            order: Order,
            size: (usize, usize),
            channels: usize,
        ) -> Vec<T> {
            match order {
                Order::Planes => pool(x, size),
                Order::ChannelsLast => pool_channels_last(x, size, channels),
            }
        }
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(run(slice(v, l, self.name())?, order, (h, w), channels))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(run(slice(v, l, self.name())?, order, (h, w), channels))
            }
            _ => candle_core::bail!("max-pool: expected f32 or f64"),
        };
        let shape = match order {
            Order::Planes => Shape::from((n, channels, h / 2, w / 2)),
            Order::ChannelsLast => Shape::from((n, h / 2, w / 2, channels)),
        };
        Ok((out, shape))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        Ok(Some(x.apply_op3_no_bwd(y, &dy, &Unpool(self.0))?))
    }
}

/// Which of a window's four cells (in scan order) takes the gradient: the first equal to
/// the maximum `m`; a NaN maximum matches nothing and its gradient goes to the first
/// cell. Non-short-circuit `&` and `|` on the comparisons, not `&&`: what the compiler
/// turns into vector masks (a short-circuit is a branch per element, and which cell wins
/// is unpredictable).
#[inline(always)]
fn winner<T: CpuFloat>(cells: [T; 4], m: T) -> [bool; 4] {
    let [a, b, c, d] = cells.map(|v| v == m);
    let b = b & !a;
    let c = c & !(a | b);
    let d = d & !(a | b | c);
    [!(b | c | d), b, c, d]
}

/// `(x, y, dy) → dx`: each `dy` goes to the first input of its window equal to the max.
pub(crate) struct Unpool(pub(crate) Order);

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
                        let [a, b, c, d] = winner(cells, m);
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

/// [`unpool`] for images `(H, W, C)` channels last: each `dy` to the first input of its
/// window (in scan order) equal to the maximum, zero elsewhere.
fn unpool_channels_last<T: CpuFloat>(
    x: &[T],
    y: &[T],
    dy: &[T],
    (height, width): (usize, usize),
    channels: usize,
) -> Vec<T> {
    let images = x.len() / (height * width * channels);
    // Every image of `dx` pairs with its maxima and gradients below (the zip would stop
    // short).
    assert!(
        y.len() == images * (height / 2) * (width / 2) * channels && dy.len() == y.len(),
        "max-unpool: input lengths"
    );
    // SAFETY: `unpool_images_channels_last` writes all `x.len()` elements (see there).
    unsafe {
        filled_by(x.len(), |dx| {
            unpool_images_channels_last(dx, x, y, dy, (height, width), channels)
        })
    }
}

/// Writes every cell of `dx` for [`unpool_channels_last`]: one image per task, each
/// window's four cells (the winner's `dy`, the others zero), the cells of an odd last
/// column and of an odd last row zero.
fn unpool_images_channels_last<T: CpuFloat>(
    dx: &mut [MaybeUninit<T>],
    x: &[T],
    y: &[T],
    dy: &[T],
    (height, width): (usize, usize),
    channels: usize,
) {
    let (out_h, out_w) = (height / 2, width / 2);
    let row_len = width * channels;
    dx.par_chunks_mut(height * row_len)
        .zip(x.par_chunks(height * row_len))
        .zip(
            y.par_chunks(out_h * out_w * channels)
                .zip(dy.par_chunks(out_h * out_w * channels)),
        )
        .for_each(|((grad, image), (maxima, grads))| {
            widest(UnpoolImage {
                grad,
                image,
                maxima,
                grads,
                size: (height, width),
                channels,
            })
        })
}

/// One image of [`unpool_images_channels_last`], for [`widest`]: the window loop
/// compiled for the widest vectors (it had been scalar code, one channel at a time; see
/// docs/performance.md).
struct UnpoolImage<'a, T> {
    grad: &'a mut [MaybeUninit<T>],
    image: &'a [T],
    maxima: &'a [T],
    grads: &'a [T],
    size: (usize, usize),
    channels: usize,
}

impl<T: CpuFloat> Kernel for UnpoolImage<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let UnpoolImage {
            grad,
            image,
            maxima,
            grads,
            size: (height, width),
            channels,
        } = self;
        let (out_h, out_w) = (height / 2, width / 2);
        let zero = T::ZERO;
        let row_len = width * channels;
        for oy in 0..out_h {
            let (top, bottom) = grad[2 * oy * row_len..][..2 * row_len].split_at_mut(row_len);
            let (upper, lower) = image[2 * oy * row_len..][..2 * row_len].split_at(row_len);
            for ox in 0..out_w {
                let at = 2 * ox * channels;
                let out = (oy * out_w + ox) * channels;
                let (m, g) = (&maxima[out..][..channels], &grads[out..][..channels]);
                let (ta, tb) = top[at..][..2 * channels].split_at_mut(channels);
                let (ba, bb) = bottom[at..][..2 * channels].split_at_mut(channels);
                let (ua, ub) = upper[at..][..2 * channels].split_at(channels);
                let (la, lb) = lower[at..][..2 * channels].split_at(channels);
                // Zipped, not indexed: no bounds checks, so the loop vectorises.
                let targets = ta.iter_mut().zip(tb.iter_mut()).zip(ba.iter_mut().zip(bb));
                let cells = ua.iter().zip(ub).zip(la.iter().zip(lb));
                for (((ta, tb), (ba, bb)), (((&ua, &ub), (&la, &lb)), (&m, &g))) in
                    targets.zip(cells.zip(m.iter().zip(g)))
                {
                    let [a, b, c, d] = winner([ua, ub, la, lb], m);
                    let pick = |hit: bool| if hit { g } else { zero };
                    ta.write(pick(a));
                    tb.write(pick(b));
                    ba.write(pick(c));
                    bb.write(pick(d));
                }
            }
            if width % 2 == 1 {
                for cell in top[(width - 1) * channels..]
                    .iter_mut()
                    .chain(&mut bottom[(width - 1) * channels..])
                {
                    cell.write(zero);
                }
            }
        }
        if height % 2 == 1 {
            for cell in &mut grad[(height - 1) * row_len..] {
                cell.write(zero);
            }
        }
    }
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
        let (_, a, b, c) = l1.shape().dims4()?;
        let out = match self.0 {
            Order::Planes => map3(
                self.name(),
                (s1, l1),
                (s2, l2),
                (s3, l3),
                |x, y, dy| unpool(x, y, dy, (b, c)),
                |x, y, dy| unpool(x, y, dy, (b, c)),
            )?,
            Order::ChannelsLast => map3(
                self.name(),
                (s1, l1),
                (s2, l2),
                (s3, l3),
                |x, y, dy| unpool_channels_last(x, y, dy, (a, b), c),
                |x, y, dy| unpool_channels_last(x, y, dy, (a, b), c),
            )?,
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::{pool, pool_channels_last, unpool, unpool_channels_last};

    /// The gradient by definition, one cell at a time: each output's gradient to the
    /// first cell of its window (in scan order) equal to the pooled value, or to the
    /// first cell when none is (a NaN).
    fn reference(
        (x, y, dy): (&[f32], &[f32], &[f32]),
        (height, width): (usize, usize),
        channels: usize,
        at: impl Fn(usize, usize, usize, usize) -> usize,
        out_at: impl Fn(usize, usize, usize, usize) -> usize,
    ) -> Vec<f32> {
        let images = x.len() / (height * width * channels);
        let mut dx = vec![0.0; x.len()];
        for n in 0..images {
            for c in 0..channels {
                for (oy, ox) in
                    (0..height / 2).flat_map(|oy| (0..width / 2).map(move |ox| (oy, ox)))
                {
                    let cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(down, right)| at(n, c, 2 * oy + down, 2 * ox + right));
                    let out = out_at(n, c, oy, ox);
                    let first = cells.iter().position(|&i| x[i] == y[out]).unwrap_or(0);
                    dx[cells[first]] = dy[out];
                }
            }
        }
        dx
    }

    /// Values from a small set, so that windows tie, and NaNs (one pooled, where it is
    /// the first of its window).
    fn inputs(len: usize, outputs: usize) -> (Vec<f32>, Vec<f32>) {
        // Three bits of a multiplicative hash: values 0..8, every order of ties.
        let mut x: Vec<f32> = (0..len as u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) as f32)
            .collect();
        x[0] = f32::NAN;
        x[len / 3] = f32::NAN;
        let dy = (0..outputs).map(|i| 1.0 + i as f32).collect();
        (x, dy)
    }

    #[test]
    fn both_orders_route_each_gradient_to_the_first_maximum_of_its_window() {
        // Odd sizes (a dropped row and column), channel counts below, at and above one
        // AVX-512 vector of f32.
        for (channels, height, width) in [(3, 5, 7), (16, 6, 4), (19, 7, 5)] {
            let (h2, w2) = (height / 2, width / 2);
            let images = 2;
            let (x, dy) = inputs(
                images * channels * height * width,
                images * channels * h2 * w2,
            );

            let planes = |n, c, y, x| ((n * channels + c) * height + y) * width + x;
            let planes_out = |n, c, y, x| ((n * channels + c) * h2 + y) * w2 + x;
            let y = pool(&x, (height, width));
            let expected = reference((&x, &y, &dy), (height, width), channels, planes, planes_out);
            let got = unpool(&x, &y, &dy, (height, width));
            assert_eq!(
                got, expected,
                "planes, {channels} channels, {height}×{width}"
            );

            let last = |n, c, y, x| ((n * height + y) * width + x) * channels + c;
            let last_out = |n, c, y, x| ((n * h2 + y) * w2 + x) * channels + c;
            let y = pool_channels_last(&x, (height, width), channels);
            let expected = reference((&x, &y, &dy), (height, width), channels, last, last_out);
            let got = unpool_channels_last(&x, &y, &dy, (height, width), channels);
            assert_eq!(
                got, expected,
                "channels last, {channels} channels, {height}×{width}"
            );
        }
    }
}
