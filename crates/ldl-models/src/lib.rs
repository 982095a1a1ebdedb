//! Models for `ldl`: DLDL-v2's ThinAgeNet and TinyAgeNet, an MLP for tabular features,
//! one linear head per label axis, seeded initialisation, and checkpoints that carry
//! their label space.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use ldl_core::{Axis, LabelSpace};
//! use ldl_models::{BackboneConfig, Model};
//!
//! let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
//! let model = Model::build(&BackboneConfig::thin_age_net(), &space, 7, &Device::Cpu)?;
//! assert_eq!(model.parameter_count(), 3_708_229);
//! let logits = model.forward_t(&Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?, false)?;
//! assert_eq!(logits[0].dims(), [1, 101]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod block_cpu;
mod checkpoint;
mod conv_cpu;
#[cfg(feature = "cudnn")]
mod conv_cudnn;
mod cpu_float;
mod cpu_storage;
#[cfg(feature = "cuda")]
mod cuda_kernels;
mod cuda_pool;
mod device;
pub mod durable;
pub mod ensemble;
mod error;
mod head_variables;
mod inference;
mod init;
mod layers;
pub mod linear_path;
mod mlp;
mod model;
mod norm_relu_cpu;
#[cfg(feature = "cuda")]
mod norm_relu_cuda;
pub mod onnx;
mod order;
mod pool_cpu;
#[cfg(feature = "cuda")]
mod pool_cuda;
mod precision;
mod pretrained;
mod scratch;
mod simd;
pub mod sync_batch_norm;
mod vgg;
mod worker_thread;

pub use checkpoint::{load_into, load_matching, read_checkpoint, CheckpointInfo, InitReport};
pub use conv_cpu::conv2d;
pub use cpu_float::CpuFloat;
pub use cuda_pool::{gpu_memory_peaks, keep_freed_gpu_memory, reset_gpu_memory_peaks, PoolPeaks};
pub use device::device;
pub use ensemble::network_local_name;
pub use error::{Error, Result};
pub use inference::InferenceModel;
pub use init::seeded_init;
pub use layers::{batch_norm_relu, global_average_pool, max_pool_2x2, ConvBnRelu};
pub use mlp::{BatchRows, Mlp, MlpConfig};
pub use model::{is_running_statistic, parameter_count, trainable_vars, BackboneConfig, Model};
pub use onnx::{OnnxInput, Standardization};
pub use precision::Precision;
pub use pretrained::{load_pretrained, vgg16_bn_key_map};
pub use sync_batch_norm::{CrossRankSum, SharedSum};
pub use vgg::{Vgg, VggConfig, MIN_INPUT_SIZE};
pub use worker_thread::on_worker_thread;
