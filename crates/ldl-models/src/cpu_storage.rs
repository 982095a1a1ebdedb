//! Reading candle's CPU storages in the custom ops (contiguous slices, one generic kernel
//! run for f32 or f64) and allocating their outputs without zeroing them first.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Layout};

/// The contiguous slice of `data` a layout describes; `op` names the op in the error.
pub(crate) fn slice<'a, T>(
    data: &'a [T],
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: inputs must be contiguous"),
    }
}

/// A vector of `len` elements, each written by `fill`, without zeroing them first.
///
/// The kernels' outputs are as large as their activations and every element is written
/// exactly once; zeroing them beforehand would be one more full pass over memory.
/// `fill` receives the `len` uninitialised slots, in order.
///
/// If `fill` panics, the panic propagates and the buffer is freed as an empty vector:
/// no element is ever read, uninitialised or not (`T: Copy`, so nothing needs dropping).
///
/// # Safety
/// `fill` must write every element of the slice it receives before it returns normally.
pub(crate) unsafe fn filled_by<T: Copy>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut data = Vec::with_capacity(len);
    // `with_capacity` reserves at least `len`: the slice is exactly `len` slots.
    fill(&mut data.spare_capacity_mut()[..len]);
    // SAFETY: `fill` returned, so by the caller's contract it wrote all `len` slots, and
    // `len` is within the capacity. Had it panicked, this line is never reached and the
    // vector is dropped with length 0, exposing nothing.
    unsafe { data.set_len(len) };
    data
}

/// Runs the f32 or the f64 kernel on two storages of that dtype.
pub(crate) fn map2(
    op: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f32_kernel: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_kernel: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<CpuStorage> {
    match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => Ok(CpuStorage::F32(f32_kernel(
            slice(a, l1, op)?,
            slice(b, l2, op)?,
        ))),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => Ok(CpuStorage::F64(f64_kernel(
            slice(a, l1, op)?,
            slice(b, l2, op)?,
        ))),
        _ => candle_core::bail!("{op}: both tensors must be f32 or both f64"),
    }
}

/// Runs the f32 or the f64 kernel on three storages of that dtype.
pub(crate) fn map3(
    op: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
    f32_kernel: impl FnOnce(&[f32], &[f32], &[f32]) -> Vec<f32>,
    f64_kernel: impl FnOnce(&[f64], &[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<CpuStorage> {
    match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => Ok(CpuStorage::F32(
            f32_kernel(slice(a, l1, op)?, slice(b, l2, op)?, slice(c, l3, op)?),
        )),
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => Ok(CpuStorage::F64(
            f64_kernel(slice(a, l1, op)?, slice(b, l2, op)?, slice(c, l3, op)?),
        )),
        _ => candle_core::bail!("{op}: expected three f32 or three f64 tensors"),
    }
}

#[cfg(test)]
mod tests {
    use super::filled_by;

    #[test]
    fn a_fill_that_writes_every_slot_yields_the_values_in_order() {
        // SAFETY: the closure writes all 37 slots.
        let v: Vec<f32> = unsafe {
            filled_by(37, |out| {
                for (i, slot) in out.iter_mut().enumerate() {
                    slot.write(i as f32);
                }
            })
        };
        assert_eq!(v, (0..37).map(|i| i as f32).collect::<Vec<_>>());
        // SAFETY: an empty slice has no slot to write.
        let empty: Vec<f64> = unsafe { filled_by(0, |out| assert!(out.is_empty())) };
        assert!(empty.is_empty());
    }

    #[test]
    fn a_panicking_fill_propagates_and_returns_no_buffer() {
        let result = std::panic::catch_unwind(|| {
            // SAFETY: the closure panics before returning, so no vector is produced.
            unsafe {
                filled_by::<f64>(8, |out| {
                    out[0].write(1.0);
                    panic!("fill failed");
                })
            }
        });
        assert!(result.is_err());
    }
}
