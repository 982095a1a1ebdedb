//! The MPI engine: collectives over MPI's world communicator (CPU buffers), each started
//! as a non-blocking operation and polled, so that a rank that never arrives stops the
//! run with a message instead of hanging it.

use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::request::{Request, Scope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::error::{Error, Result};
use crate::Collective;

/// MPI's world: every process `mpirun` (or `srun`) started. Dropping it finalises MPI.
pub struct MpiCollective {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    timeout: Duration,
    /// Kept last: dropping the universe finalises MPI, after the communicator is gone.
    _universe: mpi::environment::Universe,
}

impl MpiCollective {
    /// Initialises MPI. Refuses a world of one process (`run.distributed = "mpi"` without
    /// a launcher) and a second initialisation in one process.
    pub fn initialize(timeout: Duration) -> Result<MpiCollective> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Launch("MPI is already initialised in this process".into()))?;
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
            world,
            rank,
            size,
            timeout,
            _universe: universe,
        })
    }

    /// Polls `request` until it completes; past the timeout, says which rank waited for
    /// what and aborts every rank (an MPI collective cannot be cancelled).
    fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, mut request: Request<'a, D, S>, what: &str) {
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
                self.world.abort(3);
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
        mpi::request::scope(|scope| {
            let request = self.world.immediate_all_reduce_into(
                scope,
                &send[..],
                values,
                SystemOperation::sum(),
            );
            self.wait(request, "an all-reduce of the gradients");
        });
        Ok(())
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        mpi::request::scope(|scope| {
            let request = self.world.immediate_all_reduce_into(
                scope,
                &send[..],
                values,
                SystemOperation::sum(),
            );
            self.wait(request, "an all-reduce of the losses");
        });
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(Error::Mismatch {
                rank: self.rank,
                message: format!("a broadcast from rank {root} in a world of {}", self.size),
            });
        }
        let process = self.world.process_at_rank(root as i32);
        mpi::request::scope(|scope| {
            let request = process.immediate_broadcast_into(scope, values);
            self.wait(request, "a broadcast of the weights");
        });
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        if root >= self.size {
            return Err(Error::Mismatch {
                rank: self.rank,
                message: format!("a broadcast from rank {root} in a world of {}", self.size),
            });
        }
        let process = self.world.process_at_rank(root as i32);
        let mut length = [bytes.len() as u64];
        mpi::request::scope(|scope| {
            let request = process.immediate_broadcast_into(scope, &mut length[..]);
            self.wait(request, "a broadcast of a record's length");
        });
        bytes.resize(length[0] as usize, 0);
        mpi::request::scope(|scope| {
            let request = process.immediate_broadcast_into(scope, &mut bytes[..]);
            self.wait(request, "a broadcast of a record");
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let request = self.world.immediate_barrier();
        self.wait(request, "a barrier");
        Ok(())
    }
}
