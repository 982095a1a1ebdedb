//! The MPI engine under `mpirun -np 2`: sums, broadcasts and the fused gradient average
//! give the values computed by hand, and a rank left waiting past the timeout stops the
//! run with a message naming it, instead of hanging.
//!
//! The test binary is its own MPI program: `mpi_engine_under_mpirun` launches
//! `mpirun -np 2` on this binary's `rank_program` test, which does the work only when the
//! launcher's environment names a role for it.
#![cfg(feature = "mpi")]

use std::process::Command;
use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use ldl_distributed::{average_gradients, reduce_step, Collective, LocalStep, MpiCollective};

const ROLE: &str = "LDL_MPI_TEST_ROLE";

/// `mpirun -np 2` on this test binary's `rank_program` with `role`; its exit status and
/// everything it printed.
fn mpirun(role: &str) -> (bool, String) {
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "rank_program",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE, role)
        .output()
        .expect("mpirun runs (Open MPI's openmpi-bin)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn mpi_engine_under_mpirun() {
    let (ok, text) = mpirun("collectives");
    assert!(ok, "{text}");
    assert_eq!(text.matches("rank checks passed").count(), 2, "{text}");

    let (ok, text) = mpirun("one rank missing");
    assert!(!ok, "{text}");
    assert!(
        text.contains("rank 0 of 2: an all-reduce of the gradients waited 1 s for the other ranks"),
        "{text}"
    );
}

#[test]
fn rank_program() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let mpi = MpiCollective::initialize(Duration::from_secs(1)).unwrap();
    let (rank, world) = (mpi.rank(), mpi.world_size());
    assert_eq!(world, 2);
    if role == "one rank missing" {
        if rank == 0 {
            let mut values = [1.0f32];
            mpi.all_reduce_sum(&mut values).unwrap();
            unreachable!("the all-reduce cannot complete without rank 1");
        }
        std::thread::sleep(Duration::from_secs(30));
        return;
    }

    let mut values = [rank as f32 + 1.0, 10.0 * (rank as f32 + 1.0)];
    mpi.all_reduce_sum(&mut values).unwrap();
    assert_eq!(values, [3.0, 30.0]);
    let mut values = [rank as f64 + 0.25];
    mpi.all_reduce_sum_f64(&mut values).unwrap();
    assert_eq!(values, [1.5]);
    let mut weights = [rank as f32; 3];
    mpi.broadcast(&mut weights, 1).unwrap();
    assert_eq!(weights, [1.0; 3]);
    mpi.barrier().unwrap();

    // Rank 0 trained on 3 samples, rank 1 on 1: the average weights them 3:1.
    let samples = [3usize, 1][rank];
    let step = LocalStep {
        samples,
        total: [2.0, 6.0][rank],
        parts: vec![[1.0, 5.0][rank]],
        non_finite: false,
    };
    let totals = reduce_step(&mpi, &step).unwrap();
    assert_eq!(totals.samples, 4);
    assert_eq!(totals.total, (3.0 * 2.0 + 6.0) / 4.0);
    assert_eq!(totals.parts, vec![(3.0 * 1.0 + 5.0) / 4.0]);

    let var =
        Var::from_tensor(&Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap())
            .unwrap();
    let loss = (var.as_tensor() * [1.0, 4.0][rank])
        .unwrap()
        .sum_all()
        .unwrap();
    let mut grads = loss.backward().unwrap();
    average_gradients(
        &mpi,
        std::slice::from_ref(&var),
        &mut grads,
        samples,
        totals.samples,
    )
    .unwrap();
    let averaged = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(averaged, vec![(3.0 * 1.0 + 4.0) / 4.0; 4]);
    println!("rank checks passed");
}
