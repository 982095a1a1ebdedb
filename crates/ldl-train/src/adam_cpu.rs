//! Adam's update on the CPU as three in-place passes per variable, for f32 and f64.
//!
//! Composed of tensor ops, one update takes about twelve passes over the parameters, each
//! allocating a tensor of their size. Here the first moment, the second moment and the
//! parameters are updated where they are stored, with the arithmetic of the composed
//! version in the same order (f32 stays f32), so that both give the same numbers bit for
//! bit (checked by the tests below).

use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Tensor};
use ldl_models::CpuFloat;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// Adam's constants for one step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepConstants {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub lr: f64,
    pub weight_decay: f64,
    /// `1 − β1ᵗ` and `1 − β2ᵗ`.
    pub bias1: f64,
    pub bias2: f64,
}

/// Whether the fused path takes these tensors: on the CPU, one float dtype, contiguous.
pub(crate) fn applies(tensors: &[&Tensor]) -> bool {
    let first = tensors[0];
    matches!(first.dtype(), DType::F32 | DType::F64)
        && first.device().is_cpu()
        && tensors.iter().all(|t| {
            t.dtype() == first.dtype()
                && t.dims() == first.dims()
                && t.device().is_cpu()
                && t.is_contiguous()
        })
}

/// One Adam step on `param` given its gradient, updating both moments in place.
pub(crate) fn step(
    param: &Tensor,
    grad: &Tensor,
    first: &Tensor,
    second: &Tensor,
    k: StepConstants,
) -> candle_core::Result<()> {
    first.inplace_op3(grad, param, &Moment { second: false, k })?;
    second.inplace_op3(grad, param, &Moment { second: true, k })?;
    param.inplace_op3(first, second, &Update(k))
}

/// `x·mul + add`, candle's affine map, with its constants in `T`.
#[inline(always)]
fn affine<T: CpuFloat>(x: T, mul: f64, add: f64) -> T {
    x * T::from_f64(mul) + T::from_f64(add)
}

/// The gradient with L2 weight decay, `g + affine(θ, wd, 0)`, as the composed update.
#[inline(always)]
fn decayed<T: CpuFloat>(g: T, theta: T, weight_decay: f64) -> T {
    if weight_decay > 0.0 {
        g + affine(theta, weight_decay, 0.0)
    } else {
        g
    }
}

/// The contiguous elements of a storage's layout.
fn range(layout: &Layout) -> candle_core::Result<std::ops::Range<usize>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(start..end),
        None => candle_core::bail!("adam: tensors must be contiguous"),
    }
}

/// `m ← affine(m, β1) + affine(g, 1 − β1)` or `v ← affine(v, β2) + affine(g², 1 − β2)`.
struct Moment {
    second: bool,
    k: StepConstants,
}

impl Moment {
    fn run<T: CpuFloat>(&self, moment: &mut [T], grad: &[T], param: &[T]) {
        let k = self.k;
        let (beta, second) = (if self.second { k.beta2 } else { k.beta1 }, self.second);
        moment
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK).zip(param.par_chunks(CHUNK)))
            .for_each(|(moment, (grad, param))| {
                for (m, (&g, &theta)) in moment.iter_mut().zip(grad.iter().zip(param)) {
                    let g = decayed(g, theta, k.weight_decay);
                    let g = if second { g * g } else { g };
                    *m = affine(*m, beta, 0.0) + affine(g, 1.0 - beta, 0.0);
                }
            });
    }
}

impl InplaceOp3 for Moment {
    fn name(&self) -> &'static str {
        "ldl-adam-moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        grad: &CpuStorage,
        grad_l: &Layout,
        param: &CpuStorage,
        param_l: &Layout,
    ) -> candle_core::Result<()> {
        let (d, g, p) = (range(dst_l)?, range(grad_l)?, range(param_l)?);
        match (dst, grad, param) {
            (CpuStorage::F32(m), CpuStorage::F32(gr), CpuStorage::F32(pa)) => {
                self.run(&mut m[d], &gr[g], &pa[p])
            }
            (CpuStorage::F64(m), CpuStorage::F64(gr), CpuStorage::F64(pa)) => {
                self.run(&mut m[d], &gr[g], &pa[p])
            }
            _ => candle_core::bail!("adam: expected f32 or f64 tensors of one dtype"),
        }
        Ok(())
    }
}

/// `θ ← θ − affine(affine(m, 1/(1−β1ᵗ)) / (affine(√affine(v, 1/(1−β2ᵗ)), 1, ε)), lr)`.
struct Update(StepConstants);

impl Update {
    fn run<T: CpuFloat>(&self, param: &mut [T], first: &[T], second: &[T]) {
        let k = self.0;
        param
            .par_chunks_mut(CHUNK)
            .zip(first.par_chunks(CHUNK).zip(second.par_chunks(CHUNK)))
            .for_each(|(param, (first, second))| {
                for (theta, (&m, &v)) in param.iter_mut().zip(first.iter().zip(second)) {
                    let m_hat = affine(m, 1.0 / k.bias1, 0.0);
                    let v_hat = affine(v, 1.0 / k.bias2, 0.0);
                    let step = m_hat / affine(v_hat.sqrt(), 1.0, k.eps);
                    *theta = *theta - affine(step, k.lr, 0.0);
                }
            });
    }
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "ldl-adam-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        first: &CpuStorage,
        first_l: &Layout,
        second: &CpuStorage,
        second_l: &Layout,
    ) -> candle_core::Result<()> {
        let (d, m, v) = (range(dst_l)?, range(first_l)?, range(second_l)?);
        match (dst, first, second) {
            (CpuStorage::F32(p), CpuStorage::F32(fm), CpuStorage::F32(sm)) => {
                self.run(&mut p[d], &fm[m], &sm[v])
            }
            (CpuStorage::F64(p), CpuStorage::F64(fm), CpuStorage::F64(sm)) => {
                self.run(&mut p[d], &fm[m], &sm[v])
            }
            _ => candle_core::bail!("adam: expected f32 or f64 tensors of one dtype"),
        }
        Ok(())
    }
}
