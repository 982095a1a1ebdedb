//! Running a CPU kernel compiled for the widest vector instructions the processor has.
//!
//! The crate is built for baseline x86-64, so the compiler vectorises ldl's own loops
//! with 128-bit SSE: 4 f32 at a time. gemm chooses its AVX-512 kernels at run time, and
//! the loops around it (Winograd's transforms, BatchNorm, pooling) should use the same
//! width. [`widest`] runs a [`Kernel`] inside a function compiled for AVX-512 or for
//! AVX2, chosen by CPU detection (cached by the standard library): the kernel's
//! `#[inline(always)]` body is inlined into that function and vectorised for it.
//!
//! Results do not depend on the choice: Rust never fuses a multiply and an add into one
//! FMA unasked, and the loops are element-wise (each lane computes what the scalar loop
//! would), so every path rounds alike.

/// One call of a CPU kernel for [`widest`]: its arguments as fields, and a `run` marked
/// `#[inline(always)]` that calls the kernel, itself `#[inline(always)]`. (A closure
/// would not do: the compiler keeps a large closure out of line, compiled as built.)
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;

    /// Calls the kernel.
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for AVX-512 (F, BW, DQ, VL), else AVX2, where the CPU has
/// them; else as built.
#[inline(always)]
pub(crate) fn widest<K: Kernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        // The features `avx512` is compiled for, and those Rust takes them to imply.
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has every feature `avx512` is compiled for.
            return unsafe { avx512(kernel) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2(kernel) };
        }
    }
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(test)]
mod tests {
    use super::{widest, Kernel};

    struct Affine<'a> {
        a: &'a [f32],
        b: &'a [f32],
    }

    impl Kernel for Affine<'_> {
        type Output = Vec<f32>;

        #[inline(always)]
        fn run(self) -> Vec<f32> {
            affine(self.a, self.b)
        }
    }

    #[inline(always)]
    fn affine(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| x * y + x - y * 0.5).collect()
    }

    #[test]
    fn every_path_rounds_as_the_scalar_loop() {
        let a: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let b: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.11).cos() / 7.0).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let vectorised = widest(Affine { a: &a, b: &b });
        assert_eq!(bits(&affine(&a, &b)), bits(&vectorised));
    }
}
