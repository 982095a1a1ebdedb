//! Synchronised BatchNorm under `mpirun -np 2`: two ranks, each with half of a batch of
//! 16 images, get the gradients (averaged over the ranks) and the BatchNorm running
//! statistics one process gets from the whole batch, within f32 rounding. Without
//! synchronisation, each rank normalising its half by its own statistics, they do not.
//!
//! The test binary is its own MPI program: the test launches `mpirun -np 2` on this
//! binary's `rank_program` test, which computes only when the launcher's environment asks.
#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use ldl::distributed::{average_gradients, Collective, MpiCollective};
use ldl::loss::{FullKl, Loss};
use ldl::models::{BackboneConfig, CrossRankSum, Model, VggConfig};
use ldl::{Axis, Label, LabelSpace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const OUT: &str = "LDL_SYNC_BN_TEST_OUT";
const BATCH: usize = 16;

/// Each variable's gradient, and each BatchNorm running statistic, by name.
type Values = BTreeMap<String, Vec<f32>>;

fn space() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap()
}

/// TinyAgeNet at a quarter width, and a batch of 16 seeded 32×32 images with their ages.
fn setup() -> (Model, Tensor, Vec<Vec<Label>>) {
    let config = BackboneConfig::Vgg(VggConfig::tiny_age_net().with_width(0.25).unwrap());
    let model = Model::build(&config, &space(), 9, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let pixels: Vec<f32> = (0..BATCH * 3 * 32 * 32)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let images = Tensor::from_vec(pixels, (BATCH, 3, 32, 32), &Device::Cpu).unwrap();
    let labels = (0..BATCH)
        .map(|_| vec![Label::value(rng.gen_range(5.0..90.0))])
        .collect();
    (model, images, labels)
}

/// One training-mode forward and backward of `model` on `images`; the gradients, and the
/// running statistics it updated.
fn step(
    model: &Model,
    images: &Tensor,
    labels: &[Vec<Label>],
) -> (Values, candle_core::backprop::GradStore) {
    let targets = space().targets(labels, DType::F32, &Device::Cpu).unwrap();
    let logits = model.forward_t(images, true).unwrap();
    let loss = FullKl::new().compute(&space(), &logits, &targets).unwrap();
    let grads = loss.total.backward().unwrap();
    (running_statistics(model), grads)
}

fn running_statistics(model: &Model) -> Values {
    let data = model.vars().data().lock().unwrap();
    data.iter()
        .filter(|(name, _)| name.contains("running"))
        .map(|(name, var)| (name.clone(), values(var.as_tensor())))
        .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn gradients(model: &Model, grads: &candle_core::backprop::GradStore) -> Values {
    model
        .trainable_vars()
        .into_iter()
        .map(|(name, var)| (name, values(grads.get(var.as_tensor()).unwrap())))
        .collect()
}

/// The largest difference of each entry relative to the largest value of its tensor.
fn largest_relative_difference(a: &Values, b: &Values) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(name, x)| {
            let y = &b[name];
            let scale = y.iter().fold(1e-12f64, |m, v| m.max(v.abs() as f64));
            x.iter()
                .zip(y)
                .fold(0.0f64, |m, (p, q)| m.max((p - q).abs() as f64 / scale))
        })
        .fold(0.0, f64::max)
}

/// BatchNorm's sums over the ranks, for the model.
struct Sums(Arc<dyn Collective>);

impl CrossRankSum for Sums {
    fn sum(&self, values: &mut [f64]) -> Result<(), String> {
        self.0.all_reduce_sum_f64(values).map_err(|e| e.to_string())
    }
}

#[test]
fn two_ranks_with_sync_batch_norm_take_the_whole_batch_step() {
    let dir = tempfile::tempdir().unwrap();
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
        .env(OUT, dir.path())
        .output()
        .expect("mpirun runs (Open MPI's openmpi-bin)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (model, images, labels) = setup();
    let (statistics, grads) = step(&model, &images, &labels);
    let whole = (gradients(&model, &grads), statistics);
    let read = |name: &str| -> (Values, Values) {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let mut report = Vec::new();
    for rank in 0..2 {
        let synced = read(&format!("synced{rank}.json"));
        let gradients = largest_relative_difference(&synced.0, &whole.0);
        let statistics = largest_relative_difference(&synced.1, &whole.1);
        assert!(
            gradients <= 1e-4,
            "rank {rank}: gradients differ by {gradients:e}"
        );
        assert!(
            statistics <= 1e-5,
            "rank {rank}: statistics differ by {statistics:e}"
        );
        let own = read(&format!("own{rank}.json"));
        let unsynced = largest_relative_difference(&own.0, &whole.0);
        assert!(
            unsynced > 1e-2,
            "rank {rank}: per-rank BatchNorm gave {unsynced:e}"
        );
        report.push((gradients, statistics, unsynced));
    }
    eprintln!("largest relative differences (gradients, statistics; per-rank BatchNorm's gradients): {report:?}");
}

#[test]
fn rank_program() {
    let Some(out) = std::env::var_os(OUT) else {
        return;
    };
    let mpi: Arc<dyn Collective> =
        Arc::new(MpiCollective::initialize(Duration::from_secs(60)).unwrap());
    let rank = mpi.rank();
    let half = BATCH / 2;
    for synced in [true, false] {
        let (mut model, images, labels) = setup();
        if synced {
            model
                .set_batch_norm_sync(Some(Arc::new(Sums(Arc::clone(&mpi)))))
                .unwrap();
        }
        let mine = images.narrow(0, rank * half, half).unwrap();
        let (statistics, mut grads) = step(&model, &mine, &labels[rank * half..][..half]);
        let vars: Vec<_> = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
        average_gradients(mpi.as_ref(), &vars, &mut grads, half, BATCH).unwrap();
        let json = serde_json::to_string(&(gradients(&model, &grads), statistics)).unwrap();
        let name = format!("{}{rank}.json", if synced { "synced" } else { "own" });
        std::fs::write(Path::new(&out).join(name), json).unwrap();
    }
}
