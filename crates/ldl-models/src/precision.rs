//! The number type a model computes in: f32 everywhere, or bf16 mixed precision.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The number type of a model's forward and backward passes.
///
/// With [`Precision::Bf16`], the backbone's matrix products (the convolutions, the MLP's
/// linear layers) run in bf16, and so do the activations between the DLDL-v2 networks'
/// blocks (the max-pools included), while everything whose accuracy matters stays f32:
/// the weights and Adam's moments (each product casts its weight to bf16 on the fly, so
/// the gradient reaches the f32 weight through the cast), BatchNorm's statistics and
/// normalisation, the global average pool, the heads, the logits and the loss. This is the mixed precision of PyTorch's `autocast`: the same
/// checkpoints, half the activation memory, and the tensor cores of recent NVIDIA GPUs.
///
/// bf16 is for CUDA devices ([`Precision::check_device`]); the CPU computes in f32.
///
/// ```
/// use ldl_models::Precision;
/// assert_eq!("bf16".parse::<Precision>()?, Precision::Bf16);
/// assert_eq!(Precision::default(), Precision::F32);
/// assert_eq!(Precision::Bf16.compute_dtype(), candle_core::DType::BF16);
/// assert!("fp16".parse::<Precision>().is_err());
/// # Ok::<(), ldl_models::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (the default; the only choice that uses ldl's fast CPU kernels).
    #[default]
    F32,
    /// bf16 products and activations, f32 weights, normalisation, heads and loss.
    Bf16,
}

impl Precision {
    /// The dtype of the backbone's products and activations.
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// Whether `device` can compute in this precision: bf16 needs CUDA (candle has no
    /// bf16 matrix product on the CPU).
    ///
    /// ```
    /// use ldl_models::Precision;
    /// let cpu = candle_core::Device::Cpu;
    /// assert!(Precision::F32.check_device(&cpu).is_ok());
    /// let refused = Precision::Bf16.check_device(&cpu).unwrap_err().to_string();
    /// assert!(refused.contains("needs a CUDA device"), "{refused}");
    /// ```
    pub fn check_device(self, device: &Device) -> Result<()> {
        match (self, device) {
            (Precision::Bf16, Device::Cpu) => Err(Error::Device(
                "precision `bf16` needs a CUDA device: candle has no bf16 matrix product on \
                 the CPU, where ldl trains in `f32` with its own fast kernels"
                    .into(),
            )),
            (Precision::Bf16, Device::Metal(_)) => Err(Error::Device(
                "precision `bf16` is supported on CUDA devices only; use `f32`".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The name used in configs: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(name: &str) -> Result<Precision> {
        match name.trim() {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(Error::Config(format!(
                "unknown precision `{other}`; use `f32` or `bf16`"
            ))),
        }
    }
}

/// `w` in the dtype of the activations `x` it multiplies (a no-op when they agree). The
/// cast is recorded for autograd, so the gradient reaches the f32 variable.
pub(crate) fn weight_like(w: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    w.to_dtype(x.dtype())
}
