//! The float types of the CPU kernels (convolution, fused BatchNorm + ReLU, max-pooling,
//! and the trainer's Adam update), as one trait.
//!
//! Every kernel is written once, generic over [`CpuFloat`], and monomorphised for f32 and
//! f64: a candle op matches on the storage's dtype once and calls the generic body, so
//! the inner loops see concrete types (no dynamic dispatch, and they vectorise as the
//! hand-written f32 loops would). The trait carries only what those bodies use.

use std::ops::{Add, AddAssign, Div, Mul, Sub};

mod sealed {
    /// Keeps [`super::CpuFloat`] to f32 and f64: the kernels' numerics (f64 sums, the
    /// conversions) are only checked for those two.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// f32 or f64, as the CPU kernels compute in them.
///
/// Implemented for exactly these two types (the trait is sealed).
pub trait CpuFloat:
    sealed::Sealed
    + Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
    + 'static
{
    /// `0`.
    const ZERO: Self;
    /// `1`.
    const ONE: Self;
    /// `1/2`, exact in both types (Winograd's transforms halve).
    const HALF: Self;

    /// `v` rounded to the nearest `Self`, as `v as Self` (candle converts its scalar
    /// constants the same way, which keeps the fused kernels bit-identical to candle's
    /// composed ops).
    fn from_f64(v: f64) -> Self;

    /// `self` as f64, exactly.
    fn to_f64(self) -> f64;

    /// The square root, correctly rounded in `Self`.
    fn sqrt(self) -> Self;
}

impl CpuFloat for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;

    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }

    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl CpuFloat for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;

    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

#[cfg(test)]
mod tests {
    use super::CpuFloat;

    #[test]
    fn conversions_round_as_casts_do() {
        let v = 0.1_f64;
        assert_eq!(
            <f32 as CpuFloat>::from_f64(v).to_bits(),
            (v as f32).to_bits()
        );
        assert_eq!(<f64 as CpuFloat>::from_f64(v).to_bits(), v.to_bits());
        assert_eq!(CpuFloat::to_f64(0.1_f32), 0.1_f32 as f64);
        assert_eq!(CpuFloat::sqrt(2.0_f32), 2.0_f32.sqrt());
        assert_eq!(<f64 as CpuFloat>::HALF * 2.0, <f64 as CpuFloat>::ONE);
    }
}
