//! Data-parallel training under `mpirun -np 2` takes the steps of one process with the
//! same global batch: each rank reads half of every global batch of 2 × 8 samples, the
//! gradients are averaged, and after four epochs both ranks hold the weights one process
//! training with batches of 16 holds, and report its losses.
//!
//! The test binary is its own MPI program: the test launches `mpirun -np 2` on this
//! binary's `rank_program` test, which trains only when the launcher's environment asks.
#![cfg(feature = "mpi")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use candle_core::Device;
use ldl::data::Dataset;
use ldl::distributed::MpiCollective;
use ldl::loss::FullKl;
use ldl::models::{MlpConfig, Model};
use ldl::train::{Control, FitReport, Trainer};
use ldl::{Axis, Label, LabelSpace};

const OUT: &str = "LDL_DISTRIBUTED_TEST_OUT";

/// What a rank reports: each epoch's training and validation loss, and its weights.
type RankResult = (Vec<(f64, f64)>, BTreeMap<String, Vec<f32>>);
const PER_RANK_BATCH: usize = 8;

fn space() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("y", 0.0, 12.0, 0.25).unwrap()]).unwrap()
}

/// 101 training rows (six full global batches and one of 5, split 2 + 3) and 24
/// validation rows of `y = 3 + 4·x1 − 2·x2` plus a wobble.
fn dataset(rows: std::ops::Range<usize>) -> Dataset {
    let (features, labels) = rows
        .map(|i| {
            let x1 = (i % 11) as f32 / 10.0;
            let x2 = (i % 7) as f32 / 6.0;
            let wobble = ((i * 37) % 13) as f64 / 26.0 - 0.25;
            let y = 3.0 + 4.0 * x1 as f64 - 2.0 * x2 as f64 + wobble;
            (vec![x1, x2], vec![Label::value(y)])
        })
        .unzip();
    Dataset::from_features(&space(), features, labels).unwrap()
}

/// Trains the test's model for four epochs with batches of `batch` on this rank.
fn train(trainer: impl FnOnce(Trainer) -> Trainer, batch: usize) -> (FitReport, Model) {
    let model = Model::build(&MlpConfig::new(2, [16]).into(), &space(), 3, &Device::Cpu).unwrap();
    let mut trainer = trainer(
        Trainer::new(model, FullKl::new())
            .epochs(4)
            .batch_size(batch)
            .learning_rate(0.01)
            .seed(5),
    );
    let fit = trainer
        .fit(&dataset(0..101), &dataset(101..125), |_| Control::Continue)
        .unwrap();
    (fit, trainer.into_model())
}

fn weights(model: &Model) -> BTreeMap<String, Vec<f32>> {
    model
        .trainable_vars()
        .into_iter()
        .map(|(name, var)| {
            let values = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (name, values)
        })
        .collect()
}

/// Each epoch's training loss and validation loss.
fn losses(fit: &FitReport) -> Vec<(f64, f64)> {
    fit.epochs
        .iter()
        .map(|e| (e.train.total, e.validation.as_ref().unwrap().loss.total))
        .collect()
}

#[test]
fn two_ranks_train_as_one_process_with_their_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    common::ranks::run_as_two_ranks("rank_program", OUT, dir.path());
    let (fit, model) = train(|t| t, 2 * PER_RANK_BATCH);
    let expected = (losses(&fit), weights(&model));
    let mut largest = (0.0f64, 0.0f64);
    for rank in 0..2 {
        let path = dir.path().join(format!("rank{rank}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let (losses, weights): RankResult = serde_json::from_str(&text).unwrap();
        assert_eq!(losses.len(), expected.0.len());
        for (a, b) in losses.iter().zip(&expected.0) {
            largest.0 = largest.0.max((a.0 - b.0).abs()).max((a.1 - b.1).abs());
        }
        assert_eq!(
            weights.keys().collect::<Vec<_>>(),
            expected.1.keys().collect::<Vec<_>>()
        );
        for (name, values) in &weights {
            for (a, b) in values.iter().zip(&expected.1[name]) {
                largest.1 = largest.1.max((a - b).abs() as f64);
            }
        }
    }
    eprintln!(
        "largest difference: losses {:e}, weights {:e}",
        largest.0, largest.1
    );
    assert!(largest.0 <= 1e-6, "losses differ by {:e}", largest.0);
    assert!(largest.1 <= 1e-5, "weights differ by {:e}", largest.1);
}

#[test]
fn rank_program() {
    let Some(out) = std::env::var_os(OUT) else {
        return;
    };
    let mpi = MpiCollective::initialize(Duration::from_secs(60)).unwrap();
    let rank = ldl::distributed::Collective::rank(&mpi);
    let world: Box<dyn ldl::distributed::Collective> = Box::new(mpi);
    let (fit, model) = train(|t| t.collective(world), PER_RANK_BATCH);
    let json = serde_json::to_string(&(losses(&fit), weights(&model))).unwrap();
    std::fs::write(Path::new(&out).join(format!("rank{rank}.json")), json).unwrap();
}
