//! What the launcher (`mpirun`, `srun`) tells each process, and the checks a launch must
//! pass before the ranks train together.

use crate::error::{Error, Result};
use crate::Collective;

/// The first of these environment variables that is set and holds a number.
fn launcher_number(names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

/// This process's rank as the launcher set it (`OMPI_COMM_WORLD_RANK` under Open MPI's
/// `mpirun`, `PMI_RANK` under MPICH's, `SLURM_PROCID` under `srun`), before MPI starts;
/// `None` outside a launcher. Lets a program keep its output to rank 0.
pub fn launcher_rank() -> Option<usize> {
    launcher_number(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"])
}

/// How many processes the launcher started (`OMPI_COMM_WORLD_SIZE`, `PMI_SIZE`,
/// `SLURM_NTASKS`); `None` outside a launcher.
pub fn launcher_world_size() -> Option<usize> {
    launcher_number(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"])
}

/// This process's rank among those on its node (`OMPI_COMM_WORLD_LOCAL_RANK`,
/// `MPI_LOCALRANKID`, `SLURM_LOCALID`): which GPU of the node it takes.
pub fn launcher_local_rank() -> Option<usize> {
    launcher_number(&[
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ])
}

/// Refuses two ranks on one GPU: each rank sends the UUID of its GPU to all, and every
/// rank stops with the same message naming the first two that share one.
pub fn one_rank_per_gpu(host: &dyn Collective, uuid: &str) -> Result<()> {
    let mut uuids = Vec::with_capacity(host.world_size());
    for root in 0..host.world_size() {
        let mut bytes = if root == host.rank() {
            uuid.as_bytes().to_vec()
        } else {
            Vec::new()
        };
        host.broadcast_bytes(&mut bytes, root)?;
        uuids.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    match first_shared(&uuids) {
        None => Ok(()),
        Some((a, b)) => Err(Error::Launch(format!(
            "ranks {a} and {b} both train on the GPU with UUID {}: NCCL needs one rank per \
             GPU; start at most as many ranks per node as it has GPUs, or give each rank \
             its own CUDA_VISIBLE_DEVICES",
            uuids[a]
        ))),
    }
}

/// The first two positions that hold the same value.
fn first_shared(values: &[String]) -> Option<(usize, usize)> {
    values.iter().enumerate().find_map(|(b, value)| {
        values[..b]
            .iter()
            .position(|earlier| earlier == value)
            .map(|a| (a, b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_gpu_is_found_with_both_ranks() {
        let uuids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(first_shared(&uuids(&[])), None);
        assert_eq!(first_shared(&uuids(&["a", "b", "c"])), None);
        assert_eq!(first_shared(&uuids(&["a", "b", "a"])), Some((0, 2)));
        assert_eq!(first_shared(&uuids(&["a", "b", "b", "a"])), Some((1, 2)));
    }

    #[test]
    fn one_process_passes_the_gpu_check() {
        assert!(one_rank_per_gpu(&crate::SingleProcess, "GPU-0").is_ok());
    }
}
