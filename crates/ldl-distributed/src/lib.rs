//! Data-parallel training for ldl: the few collective operations it needs behind one
//! interface, [`Collective`], with a single-process implementation (the default, which
//! costs nothing) and an MPI engine (the `mpi` feature, over Open MPI through rsmpi).
//!
//! | engine | `run.distributed` | launched by | tensors | feature |
//! |---|---|---|---|---|
//! | [`SingleProcess`] | `"none"` | `ldl train` | any | — |
//! | MPI | `"mpi"` | `mpirun -np N ldl train …`, `srun` | CPU | `mpi` |
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
#[cfg(feature = "mpi")]
mod mpi_engine;
mod shard;
mod single;

use std::time::Duration;

pub use error::{Error, Result};
pub use gradients::{
    average_gradients, broadcast_tensors, broadcast_variables, reduce_step, LocalStep, StepTotals,
};
#[cfg(feature = "mpi")]
pub use mpi_engine::MpiCollective;
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
}

/// This process's rank as the launcher set it (`OMPI_COMM_WORLD_RANK` under Open MPI's
/// `mpirun`, `PMI_RANK` under MPICH's, `SLURM_PROCID` under `srun`), before MPI starts;
/// `None` outside a launcher. Lets a program keep its output to rank 0.
pub fn launcher_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
}

/// Which engine runs the collectives (`run.distributed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One process: nothing to communicate.
    None,
    /// MPI (CPU tensors), over the MPI library the binary was built against.
    Mpi,
}

/// How long a collective waits for the other ranks before the run is stopped: long enough
/// for the slowest rank's epoch-end work (validation, a checkpoint), short enough that a
/// lost rank does not hold the others for hours.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The collective of this process for `engine`: [`SingleProcess`] for [`Engine::None`];
/// for [`Engine::Mpi`], MPI initialised (once per process), refusing a world of one
/// process, which means the launcher was forgotten.
pub fn connect(engine: Engine, timeout: Duration) -> Result<Box<dyn Collective>> {
    match engine {
        Engine::None => Ok(Box::new(SingleProcess)),
        Engine::Mpi => connect_mpi(timeout),
    }
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
