//! The MPI engine: collectives over MPI's world communicator (CPU buffers), each started
//! as a non-blocking operation and polled, so that a rank that never arrives stops the
//! run with a message instead of hanging it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::environment::Threading;
use mpi::request::{Request, Scope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::error::{Error, Result};
use crate::Collective;

/// MPI's world: every process `mpirun` (or `srun`) started. Dropping it finalises MPI.
///
/// It may be shared between threads (SyncBN's statistics are summed from inside the
/// backward pass, which candle may run on another thread than the one that built the
/// model): MPI is initialised with `MPI_THREAD_SERIALIZED` and every call holds one lock.
pub struct MpiCollective {
    world: Mutex<MpiWorld>,
    rank: usize,
    size: usize,
    timeout: Duration,
}

/// The world communicator, with the universe whose drop finalises MPI (kept last).
struct MpiWorld {
    world: SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

// SAFETY: the communicator is a handle (a pointer under Open MPI) that MPI itself lets any
// thread use when MPI runs at `MPI_THREAD_SERIALIZED` or above, which `initialize`
// checks, provided no two calls overlap; `MpiCollective` only reaches it through its
// `Mutex`, so calls never overlap.
unsafe impl Send for MpiWorld {}

impl MpiCollective {
    /// Initialises MPI. Refuses a world of one process (`run.distributed = "mpi"` without
    /// a launcher), an MPI library without thread support, and a second initialisation
    /// in one process.
    pub fn initialize(timeout: Duration) -> Result<MpiCollective> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Launch("MPI is already initialised in this process".into()))?;
        if matches!(threading, Threading::Single | Threading::Funneled) {
            return Err(Error::Unavailable(format!(
                "the MPI library offers {threading:?} threading; ldl needs Serialized: build \
                 it against an MPI with thread support (Open MPI does)"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if size < 2 {
            return Err(Error::Launch(
                "run.distributed = \"mpi\" in a world of 1 process: start one process per \
                 rank with `mpirun -np N ldl train …` (or `srun` under Slurm), or leave \
                 run.distributed unset to train in one process"
                    .into(),
            ));
        }
        Ok(MpiCollective {
            world: Mutex::new(MpiWorld {
                world,
                _universe: universe,
            }),
            rank,
            size,
            timeout,
        })
    }

    /// Runs `call` with the communicator, holding the lock that serialises MPI calls.
    fn with_world<R>(&self, call: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        let world = match self.world.lock() {
            Ok(world) => world,
            Err(poisoned) => poisoned.into_inner(),
        };
        call(&world.world)
    }

    /// Polls `request` until it completes; past the timeout, says which rank waited for
    /// what and aborts every rank (an MPI collective cannot be cancelled).
    fn wait<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        world: &SimpleCommunicator,
        mut request: Request<'a, D, S>,
        what: &str,
    ) {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            if start.elapsed() > self.timeout {
                eprintln!(
                    "error: distributed training, rank {} of {}: {what} waited {} s for the \
                     other ranks; one of them stopped or is stuck, so every rank stops now \
                     (resume with --resume once all ranks can run)",
                    self.rank,
                    self.size,
                    self.timeout.as_secs()
                );
                world.abort(3);
            }
            polls += 1;
            // Spin briefly (a step's all-reduce usually completes in microseconds), then
            // sleep so that a long wait does not burn a core.
            if polls < 10_000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root < self.size {
            return Ok(());
        }
        Err(Error::Mismatch {
            rank: self.rank,
            message: format!("a broadcast from rank {root} in a world of {}", self.size),
        })
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let send = values.to_vec();
        self.with_world(|world| {
            mpi::request::scope(|scope| {
                let sum = SystemOperation::sum();
                let request = world.immediate_all_reduce_into(scope, &send[..], values, sum);
                self.wait(world, request, "an all-reduce of the gradients");
            })
        });
        Ok(())
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        self.with_world(|world| {
            mpi::request::scope(|scope| {
                let sum = SystemOperation::sum();
                let request = world.immediate_all_reduce_into(scope, &send[..], values, sum);
                self.wait(world, request, "an all-reduce of the losses or statistics");
            })
        });
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        self.check_root(root)?;
        self.with_world(|world| {
            let process = world.process_at_rank(root as i32);
            mpi::request::scope(|scope| {
                let request = process.immediate_broadcast_into(scope, values);
                self.wait(world, request, "a broadcast of the weights");
            })
        });
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        self.check_root(root)?;
        self.with_world(|world| {
            let process = world.process_at_rank(root as i32);
            let mut length = [bytes.len() as u64];
            mpi::request::scope(|scope| {
                let request = process.immediate_broadcast_into(scope, &mut length[..]);
                self.wait(world, request, "a broadcast of a record's length");
            });
            bytes.resize(length[0] as usize, 0);
            mpi::request::scope(|scope| {
                let request = process.immediate_broadcast_into(scope, &mut bytes[..]);
                self.wait(world, request, "a broadcast of a record");
            });
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.with_world(|world| {
            let request = world.immediate_barrier();
            self.wait(world, request, "a barrier");
        });
        Ok(())
    }
}
