//! Reading candle's CPU storages in the custom ops: contiguous slices, and running one
//! f32 or f64 kernel over three inputs.

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
