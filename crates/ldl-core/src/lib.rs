//! The core of `ldl`: discretised label axes, label spaces, the full-KL loss family and
//! evaluation metrics for label distribution learning on candle.
//!
//! A label flows once through this crate: a raw value (with its std) becomes a target
//! distribution on its [`Axis`] ([`Axis::encode`]); a model's logits and the targets give a
//! loss with its parts per axis ([`loss`]); the predicted distribution becomes a mean, a
//! std and a mode in the axis unit ([`Axis::estimate`]) and feeds the [`metrics`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use ldl_core::{loss::{FullKl, Loss}, Axis, Label, LabelSpace};
//!
//! let space = LabelSpace::new(vec![
//!     Axis::linear("age", 0.0, 100.0, 1.0)?.with_unit("years"),
//!     Axis::linear("yaw", -90.0, 90.0, 3.0)?.with_unit("degrees"),
//! ])?;
//! let labels = vec![
//!     vec![Label::value_with_std(34.0, 3.1), Label::value(-21.0)],
//!     vec![Label::value_with_std(61.0, 4.0), Label::value(45.0)],
//! ];
//! let targets = space.targets(&labels, DType::F32, &Device::Cpu)?;
//! let logits = vec![
//!     Tensor::zeros((2, 101), DType::F32, &Device::Cpu)?,
//!     Tensor::zeros((2, 61), DType::F32, &Device::Cpu)?,
//! ];
//! let loss = FullKl::default().compute(&space, &logits, &targets)?;
//! for (key, value) in loss.part_values()? {
//!     println!("{key}: {value:.4}"); // age/ld, age/exp, age/smooth, yaw/ld, …
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod axis;
/// Loading ldl's CUDA kernels (with the `cuda` feature).
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
pub mod files;
mod label;
mod label_space;
pub mod loss;
pub mod metrics;

pub use axis::{Axis, AxisKind, CircularBins, LinearBins, OutOfRange, PositiveStd};
pub use error::{Error, Result};
pub use label::{
    AxisEstimate, ClassEstimate, EncodedLabel, Label, ValueEstimate, PMF_SUM_TOLERANCE,
};
pub use label_space::{joint_target, marginals, AxisTargets, Head, LabelSpace, MAX_JOINT_BINS};
