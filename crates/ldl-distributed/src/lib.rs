//! Data-parallel training for ldl: the few collective operations it needs behind one
//! interface, [`Collective`], with a single-process implementation (the default, which
//! costs nothing) and an MPI engine (the `mpi` feature, over Open MPI through rsmpi).
//!
//! | engine | `run.distributed` | launched by | tensors | feature |
//! |---|---|---|---|---|
//! | [`SingleProcess`] | `"none"` | `ldl train` | any | — |
//! | MPI | `"mpi"` | `mpirun -np N ldl train …`, `srun` | CPU | `mpi` |
//! | NCCL | `"nccl"` | `mpirun -np N ldl train …`, `srun` (one rank per GPU) | CUDA | `nccl`, and `mpi` for more than one rank |
//!
//! Every rank runs the same training loop on its [`Shard`] of each global batch, then
//! [`average_gradients`] sums the gradients (each weighted by the rank's samples) in one
//! fused all-reduce, so every rank's Adam takes the same step and the weights stay
//! identical: `W` ranks with batches of `b` train as one process with batches of `W·b`,
//! up to float rounding.
//!
//! Collectives never wait forever: the MPI engine polls each operation and, past its
//! timeout, prints which rank waited for what and aborts every rank.

#![warn(missing_docs)]

mod error;
mod gradients;
mod launch;
#[cfg(feature = "mpi")]
mod mpi_engine;
#[cfg(feature = "nccl")]
mod nccl_engine;
mod shard;
mod single;

use std::time::Duration;

use candle_core::{DType, Device, Tensor};

pub use error::{Error, Result};
pub use gradients::{
    average_gradients, broadcast_tensors, broadcast_variables, reduce_step, LocalStep, StepTotals,
};
pub use launch::{launcher_local_rank, launcher_rank, launcher_world_size, one_rank_per_gpu};
#[cfg(feature = "mpi")]
pub use mpi_engine::MpiCollective;
#[cfg(feature = "nccl")]
pub use nccl_engine::NcclCollective;
pub use shard::{BatchRows, Shard};
pub use single::SingleProcess;

/// What data-parallel training needs from its processes: their number and place, and
/// sums and copies of buffers across them. Every rank must call the same operations in
/// the same order with buffers of the same lengths.
pub trait Collective: Send + Sync {
    /// This process's place, `0..world_size()`; rank 0 writes the run folder.
    fn rank(&self) -> usize;

    /// How many processes train together.
    fn world_size(&self) -> usize;

    /// Replaces `values` on every rank with the element-wise sum over the ranks.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;

    /// [`Collective::all_reduce_sum`] in f64 (losses and counts, which f32 would round).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;

    /// Replaces `values` on every rank with rank `root`'s.
    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()>;

    /// Replaces `bytes` on every rank with rank `root`'s, whatever their lengths were
    /// (records such as an epoch's validation results, as JSON).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// This rank's shard of each batch.
    fn shard(&self) -> Shard {
        Shard {
            rank: self.rank(),
            world: self.world_size(),
        }
    }

    /// The device this engine's rank trains on (`cuda:<local rank>` under NCCL); `None`
    /// when the engine works on host buffers and the config chooses the device.
    fn device(&self) -> Option<Device> {
        None
    }

    /// The element-wise sum over the ranks of `tensor`, as a new tensor of its shape,
    /// dtype and device. By default through the host ([`Collective::all_reduce_sum`]); the
    /// NCCL engine sums on the GPU.
    fn all_reduce_sum_tensor(&self, tensor: &Tensor) -> Result<Tensor> {
        host_all_reduce_sum_tensor(self, tensor)
    }
}

/// [`Collective::all_reduce_sum_tensor`] through a host buffer of f32.
pub(crate) fn host_all_reduce_sum_tensor<C: Collective + ?Sized>(
    collective: &C,
    tensor: &Tensor,
) -> Result<Tensor> {
    let mut values = tensor
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    collective.all_reduce_sum(&mut values)?;
    Ok(Tensor::from_vec(values, tensor.shape(), tensor.device())?.to_dtype(tensor.dtype())?)
}

/// Which engine runs the collectives (`run.distributed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One process: nothing to communicate.
    None,
    /// MPI (CPU tensors), over the MPI library the binary was built against.
    Mpi,
    /// NCCL (CUDA tensors, one rank per GPU), started over MPI.
    Nccl,
}

/// How long a collective waits for the other ranks before the run is stopped: long enough
/// for the slowest rank's epoch-end work (validation, a checkpoint), short enough that a
/// lost rank does not hold the others for hours.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The collective of this process for `engine`: [`SingleProcess`] for [`Engine::None`];
/// for [`Engine::Nccl`], NCCL on this rank's GPU (see `NcclCollective`);
/// for [`Engine::Mpi`], MPI initialised (once per process), refusing a world of one
/// process, which means the launcher was forgotten.
pub fn connect(engine: Engine, timeout: Duration) -> Result<Box<dyn Collective>> {
    match engine {
        Engine::None => Ok(Box::new(SingleProcess)),
        Engine::Mpi => connect_mpi(timeout),
        Engine::Nccl => connect_nccl(timeout),
    }
}

/// NCCL over the GPU of this rank's local rank. A launcher must have started the
/// process (`mpirun -np 1` checks the NCCL path on one GPU); with more than one rank, MPI
/// carries the start and the small host buffers.
#[cfg(feature = "nccl")]
fn connect_nccl(timeout: Duration) -> Result<Box<dyn Collective>> {
    let world = launcher_world_size().ok_or_else(|| {
        Error::Launch(
            "run.distributed = \"nccl\" without a launcher: start one process per GPU with \
             `mpirun -np N ldl train …` (or `srun` under Slurm), or leave run.distributed \
             unset to train on one GPU"
                .into(),
        )
    })?;
    let host: Box<dyn Collective> = if world == 1 {
        Box::new(SingleProcess)
    } else if cfg!(feature = "mpi") {
        connect_mpi(timeout)?
    } else {
        return Err(Error::Unavailable(format!(
            "run.distributed = \"nccl\" with {world} ranks needs MPI to start them: build \
             with `LDL_CUDA_FEATURES=cudnn,nccl,mpi scripts/cuda-build.sh`"
        )));
    };
    let local_rank = launcher_local_rank().unwrap_or(0);
    Ok(Box::new(NcclCollective::connect(
        host, local_rank, timeout,
    )?))
}

#[cfg(not(feature = "nccl"))]
fn connect_nccl(_timeout: Duration) -> Result<Box<dyn Collective>> {
    Err(Error::Unavailable(
        "run.distributed = \"nccl\" needs ldl built with NCCL: \
         `LDL_CUDA_FEATURES=cudnn,nccl,mpi scripts/cuda-build.sh` (see docs/distributed.md)"
            .into(),
    ))
}

#[cfg(feature = "mpi")]
fn connect_mpi(timeout: Duration) -> Result<Box<dyn Collective>> {
    Ok(Box::new(MpiCollective::initialize(timeout)?))
}

#[cfg(not(feature = "mpi"))]
fn connect_mpi(_timeout: Duration) -> Result<Box<dyn Collective>> {
    Err(Error::Unavailable(
        "run.distributed = \"mpi\" needs ldl built with MPI: install Open MPI (libopenmpi-dev) \
         and build with `cargo build --release --features mpi`"
            .into(),
    ))
}
