//! `ldl`: label distribution learning on candle.
//!
//! This facade re-exports the public API of the workspace crates:
//! label axes and spaces ([`Axis`], [`LabelSpace`]), the losses ([`loss`]: [`loss::FullKl`]
//! and the baselines [`loss::Kl`], [`loss::DldlV2`], [`loss::MeanVariance`]) and the
//! evaluation metrics ([`metrics`]), and the models ([`models`]: ThinAgeNet, TinyAgeNet,
//! an MLP, heads per axis, checkpoints), the data ([`data`]: tables, splits, batches) and
//! training ([`train`]: TOML task configs, Adam, the training loop). [`Error`] takes the
//! error of every part, so a program can return [`Result`] throughout.
//!
//! ```
//! use ldl::{Axis, LabelSpace};
//! let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?.with_unit("years")])?;
//! assert_eq!(space.axis("age").unwrap().len(), 101);
//! # Ok::<(), ldl::Error>(())
//! ```

#![warn(missing_docs)]

mod error;

pub use error::{Error, Result};

/// Backbones, heads, seeded initialisation, checkpoints and devices.
pub use ldl_models as models;

/// Tables, built-in datasets, splits, standardisation and batches.
pub use ldl_data as data;

/// Task configs, the optimiser and the training loop.
pub use ldl_train as train;

/// The Hugging Face Hub: `hf://` checkpoint paths, fetching and pushing model folders,
/// the parquet files of datasets.
pub use ldl_hub as hub;

/// Data-parallel training: the `Collective` interface, one process or an MPI world.
pub use ldl_distributed as distributed;

pub use ldl_core::{
    joint_target, loss, marginals, metrics, Axis, AxisEstimate, AxisKind, AxisTargets,
    CircularBins, ClassEstimate, EncodedLabel, Head, Label, LabelSpace, LinearBins, OutOfRange,
    PositiveStd, ValueEstimate, MAX_JOINT_BINS,
};

// The library route in one import: data in memory, a model that owns its weights, and
// the trainer (docs/library.md).
pub use ldl_data::Dataset;
pub use ldl_models::{BackboneConfig, MlpConfig, Model};
pub use ldl_train::{Baseline, Control, Trainer};

/// Where tensors live and compute (`Device::Cpu`, or a CUDA device with the `cuda`
/// feature), and the tensors themselves: candle's, re-exported so that a program needs
/// no direct dependency on it.
pub use candle_core::{Device, Tensor};

/// The error of label axes, label spaces, losses and metrics alone; [`Error`] takes it.
pub use ldl_core::Error as CoreError;
