//! The NCCL engine: one process per GPU, the gradients summed on the GPUs by NCCL, as
//! PyTorch's DDP does with its `nccl` backend.
//!
//! | what | how |
//! |---|---|
//! | the device | `cuda:<local rank>` (the launcher's local rank); `cuda:0` when the launcher gives each rank one GPU (`CUDA_VISIBLE_DEVICES`, `srun --gpus-per-task=1`) |
//! | the NCCL id | drawn by rank 0 and broadcast over MPI (NCCL's own examples do the same); with one rank there is nothing to send |
//! | the gradients | one fused f32 buffer per step, all-reduced on the GPU ([`Collective::all_reduce_sum_tensor`]) on candle's stream, so it runs after the backward pass and before Adam without a host copy |
//! | losses, counts, records, barriers | over MPI (host buffers of a few numbers) |
//! | two ranks on one GPU | refused at start, naming both ranks and the GPU's UUID |
//! | a rank that stops | each all-reduce is polled through a CUDA event; past `run.distributed_timeout_s` the communicator is aborted (which frees the GPU from NCCL's waiting kernel) and the step fails with the rank named |

use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use crate::error::{Error, Result};
use crate::launch::one_rank_per_gpu;
use crate::Collective;

/// NCCL over this rank's GPU, with another collective (MPI, or one process) for the host
/// buffers and the start.
pub struct NcclCollective {
    host: Box<dyn Collective>,
    /// `None` once aborted after a timeout: every later collective fails.
    comm: Mutex<Option<SharedComm>>,
    device: Device,
    timeout: Duration,
}

/// A communicator that one thread at a time may use.
struct SharedComm(Comm);

// SAFETY: an NCCL communicator is a handle that NCCL lets any thread use as long as no two
// calls on it overlap (NCCL's thread-safety rules); `NcclCollective` only reaches it
// through its `Mutex`, so calls never overlap.
unsafe impl Send for SharedComm {}

impl NcclCollective {
    /// Joins the NCCL communicator of `host`'s ranks on the GPU of `local_rank`: checks
    /// that no two ranks share a GPU, then rank 0 draws the NCCL id and sends it to the
    /// others over `host`.
    pub fn connect(
        host: Box<dyn Collective>,
        local_rank: usize,
        timeout: Duration,
    ) -> Result<NcclCollective> {
        let device = rank_device(local_rank, host.rank())?;
        let Device::Cuda(cuda) = &device else {
            return Err(Error::Unavailable("NCCL needs a CUDA device".into()));
        };
        let stream = cuda.cuda_stream();
        let uuid = stream
            .context()
            .uuid()
            .map_err(|e| Error::Unavailable(format!("cannot read the GPU's UUID: {e}")))?;
        let uuid: String = uuid
            .bytes
            .iter()
            .map(|b| format!("{:02x}", *b as u8))
            .collect();
        one_rank_per_gpu(host.as_ref(), &uuid)?;
        let id = share_id(host.as_ref())?;
        // NCCL joins the communicator on the thread's current device: make it this rank's.
        let context = stream.context();
        context.bind_to_thread().map_err(|e| {
            Error::Unavailable(format!("cannot use cuda:{}: {e}", context.ordinal()))
        })?;
        let comm = Comm::from_rank(stream, host.rank(), host.world_size(), id).map_err(|e| {
            Error::Launch(format!(
                "rank {} of {}: NCCL could not connect the ranks ({e:?}); check that every \
                 node reaches the others (NCCL_SOCKET_IFNAME names the network interface)",
                host.rank(),
                host.world_size()
            ))
        })?;
        Ok(NcclCollective {
            host,
            comm: Mutex::new(Some(SharedComm(comm))),
            device,
            timeout,
        })
    }

    /// Waits for the work queued on the device's stream, polling a CUDA event; past the
    /// timeout, aborts the communicator and fails naming this rank and `what`.
    fn wait(&self, comm: &mut Option<SharedComm>, what: &str) -> Result<()> {
        let Device::Cuda(cuda) = &self.device else {
            return Ok(());
        };
        let event = cuda
            .cuda_stream()
            .record_event(None)
            .map_err(|e| candle_core::Error::Msg(format!("{what}: {e}")))?;
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            match event.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    return Err(Error::Candle(candle_core::Error::Msg(format!(
                        "{what}: {e}"
                    ))))
                }
            }
            if start.elapsed() > self.timeout {
                // Aborting frees the GPU from NCCL's kernel, which waits for the others.
                drop(comm.take());
                return Err(Error::Timeout {
                    rank: self.rank(),
                    world: self.world_size(),
                    what: what.into(),
                    seconds: self.timeout.as_secs(),
                });
            }
            polls += 1;
            // Spin briefly (an all-reduce of a step's gradients takes microseconds to
            // milliseconds), then sleep so that a long wait does not burn a core.
            if polls < 10_000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
}

/// The GPU of a rank: `cuda:<local rank>`, or `cuda:0` when only one GPU is visible to
/// the process (the launcher gave each rank its own).
fn rank_device(local_rank: usize, rank: usize) -> Result<Device> {
    let visible = candle_core::cuda_backend::cudarc::driver::CudaContext::device_count()
        .map_err(|e| Error::Unavailable(format!("rank {rank}: no CUDA driver or GPU ({e})")))?;
    let ordinal = if visible == 1 { 0 } else { local_rank };
    if ordinal >= visible.max(0) as usize {
        return Err(Error::Launch(format!(
            "rank {rank} has local rank {local_rank} but its node shows {visible} GPUs: start \
             at most one rank per GPU on each node (mpirun's `-npernode`, srun's \
             `--ntasks-per-node`)"
        )));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| Error::Unavailable(format!("rank {rank}: cannot open cuda:{ordinal}: {e}")))
}

/// The NCCL id: drawn by rank 0, sent to the others over `host`.
fn share_id(host: &dyn Collective) -> Result<Id> {
    let mut bytes = Vec::new();
    if host.rank() == 0 {
        let id =
            Id::new().map_err(|e| Error::Unavailable(format!("NCCL cannot draw an id ({e:?})")))?;
        bytes = id.internal().iter().map(|c| *c as u8).collect();
    }
    host.broadcast_bytes(&mut bytes, 0)?;
    let internal: [std::ffi::c_char; 128] = bytes
        .iter()
        .map(|b| *b as std::ffi::c_char)
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| Error::Mismatch {
            rank: host.rank(),
            message: format!("an NCCL id of {} bytes instead of 128", bytes.len()),
        })?;
    Ok(Id::uninit(internal))
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.host.rank()
    }

    fn world_size(&self) -> usize {
        self.host.world_size()
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        self.host.all_reduce_sum(values)
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.host.all_reduce_sum_f64(values)
    }

    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        self.host.broadcast(values, root)
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        self.host.broadcast_bytes(bytes, root)
    }

    fn barrier(&self) -> Result<()> {
        self.host.barrier()
    }

    fn device(&self) -> Option<Device> {
        Some(self.device.clone())
    }

    /// The sum over the ranks on the GPU, for an f32 tensor on this rank's GPU; any other
    /// tensor goes through the host.
    fn all_reduce_sum_tensor(&self, tensor: &Tensor) -> Result<Tensor> {
        if !tensor.device().same_device(&self.device) || tensor.dtype() != DType::F32 {
            return crate::host_all_reduce_sum_tensor(self, tensor);
        }
        let mut guard = match self.comm.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(comm) = guard.as_ref() else {
            return Err(Error::Launch(format!(
                "rank {}: the NCCL communicator was aborted after a timeout",
                self.rank()
            )));
        };
        let summed = tensor
            .contiguous()?
            .apply_op1_no_bwd(&AllReduceSum { comm: &comm.0 })?;
        self.wait(&mut *guard, "an all-reduce of the gradients (NCCL)")?;
        Ok(summed)
    }
}

/// `x → Σ_ranks x` on the GPU: NCCL's all-reduce into a new buffer, queued on the
/// communicator's stream (candle's), so it follows the kernels that wrote `x`.
struct AllReduceSum<'a> {
    comm: &'a Comm,
}

impl CustomOp1 for AllReduceSum<'_> {
    fn name(&self) -> &'static str {
        "ldl-nccl-all-reduce-sum"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{} runs on CUDA tensors only", self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: the input must be contiguous", self.name());
        };
        let device = x.device();
        let input = x.as_cuda_slice::<f32>()?.slice(start..end);
        let mut output = device.alloc_zeros::<f32>(end - start)?;
        self.comm
            .all_reduce(&input, &mut output, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}")))?;
        Ok((
            CudaStorage::wrap_cuda_slice(output, device.clone()),
            layout.shape().clone(),
        ))
    }
}
