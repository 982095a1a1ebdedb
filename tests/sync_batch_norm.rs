//! Synchronised BatchNorm under `mpirun -np 2`: two ranks, each with part of a batch of
//! 16 images, get the gradients (averaged over the ranks) and the BatchNorm running
//! statistics one process gets from the whole batch, within f32 rounding: with halves,
//! with parts of 7 and 9, and for an MLP with BatchNorm and dropout (parts of 7 and 9).
//! Without synchronisation, each rank normalising its half by its own statistics, they do
//! not.
//!
//! The library route's `Trainer::sync_batch_norm` does the same in `fit`.
//!
//! The test binary is its own MPI program: the test launches `mpirun -np 2` on this
//! binary's `rank_program` test, which computes only when the launcher's environment asks.
#![cfg(feature = "mpi")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use ldl::distributed::{average_gradients, Collective, MpiCollective};
use ldl::loss::{FullKl, Loss};
use ldl::models::{BackboneConfig, BatchRows, CrossRankSum, MlpConfig, Model, VggConfig};
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
    (model, images, ages(&mut rng))
}

/// An MLP with BatchNorm and dropout, and a batch of 16 seeded rows of 6 features.
fn mlp_setup() -> (Model, Tensor, Vec<Vec<Label>>) {
    let config: BackboneConfig = MlpConfig::new(6, [16, 12])
        .with_batch_norm()
        .with_dropout(0.3)
        .into();
    let model = Model::build(&config, &space(), 9, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let rows: Vec<f32> = (0..BATCH * 6).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let rows = Tensor::from_vec(rows, (BATCH, 6), &Device::Cpu).unwrap();
    (model, rows, ages(&mut rng))
}

fn ages(rng: &mut ChaCha8Rng) -> Vec<Vec<Label>> {
    (0..BATCH)
        .map(|_| vec![Label::value(rng.gen_range(5.0..90.0))])
        .collect()
}

/// What the ranks compute, each on its part of the batch, and compare with one process.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// TinyAgeNet, halves, SyncBN.
    Synced,
    /// TinyAgeNet, halves, each rank's own BatchNorm.
    Own,
    /// TinyAgeNet, parts of 7 and 9, SyncBN.
    Uneven,
    /// The MLP, parts of 7 and 9, SyncBN and dropout.
    Mlp,
}

impl Case {
    const ALL: [Case; 4] = [Case::Synced, Case::Own, Case::Uneven, Case::Mlp];

    fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    fn setup(self) -> (Model, Tensor, Vec<Vec<Label>>) {
        match self {
            Case::Mlp => mlp_setup(),
            _ => setup(),
        }
    }

    /// The first sample of each rank's part.
    fn first_of_rank_1(self) -> usize {
        match self {
            Case::Synced | Case::Own => BATCH / 2,
            Case::Uneven | Case::Mlp => 7,
        }
    }

    fn synced(self) -> bool {
        !matches!(self, Case::Own)
    }
}

/// One training-mode forward and backward of `model` on `inputs`, which sit at `rows` of
/// the batch; the gradients, and the running statistics it updated.
fn step(
    model: &Model,
    inputs: &Tensor,
    labels: &[Vec<Label>],
    rows: BatchRows,
) -> (Values, candle_core::backprop::GradStore) {
    let targets = space().targets(labels, DType::F32, &Device::Cpu).unwrap();
    let logits = model.forward_rows(inputs, rows).unwrap();
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

/// The largest difference of each entry relative to the largest value of its tensor, and
/// that tensor's name.
///
/// A tensor that is zero in exact arithmetic (the gradient of the MLP's linear biases,
/// which BatchNorm's mean removes) holds rounding only: in `b` its values are below 1e-5
/// of the largest of all tensors, and it passes (difference 0) when `a`'s are too.
fn largest_relative_difference(a: &Values, b: &Values) -> (f64, String) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let largest_of = |values: &[f32]| values.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    let zero = 1e-5 * b.values().map(|y| largest_of(y)).fold(1e-12, f64::max);
    a.iter()
        .map(|(name, x)| {
            let y = &b[name];
            let scale = largest_of(y);
            let largest = if scale < zero {
                if largest_of(x) < zero {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                x.iter()
                    .zip(y)
                    .fold(0.0f64, |m, (p, q)| m.max((p - q).abs() as f64 / scale))
            };
            (largest, name.clone())
        })
        .fold((0.0, String::new()), |m, d| if d.0 > m.0 { d } else { m })
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
    common::ranks::run_as_two_ranks("rank_program", OUT, dir.path());
    let read = |name: &str| -> (Values, Values) {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let mut report = Vec::new();
    for case in Case::ALL {
        let (model, inputs, labels) = case.setup();
        let (statistics, grads) = step(&model, &inputs, &labels, BatchRows::whole(BATCH));
        let whole = (gradients(&model, &grads), statistics);
        for rank in 0..2 {
            let ranks = read(&format!("{}{rank}.json", case.name()));
            let (gradients, worst) = largest_relative_difference(&ranks.0, &whole.0);
            let (statistics, _) = largest_relative_difference(&ranks.1, &whole.1);
            report.push((case, rank, gradients, statistics));
            if !case.synced() {
                assert!(
                    gradients > 1e-2,
                    "rank {rank}: per-rank BatchNorm gave {gradients:e}"
                );
                continue;
            }
            assert!(
                gradients <= 1e-4,
                "{case:?}, rank {rank}: gradients differ by {gradients:e} (in {worst})"
            );
            assert!(
                statistics <= 1e-5,
                "{case:?}, rank {rank}: statistics differ by {statistics:e}"
            );
        }
    }
    eprintln!("largest relative differences from one process (case, rank, gradients, statistics): {report:?}");
}

/// 40 synthetic faces: 32 to train on (two global batches of 16), 8 to validate on.
fn faces() -> (Vec<ldl::data::Sample>, Vec<ldl::data::Sample>) {
    use ldl::data::{InputColumns, LabelColumns, OnBadSample, SynthConfig, TableSpec};
    let spec = TableSpec::new(InputColumns::AllOtherColumns).with_label(
        "age",
        LabelColumns::Value {
            value: "apparent_age".into(),
            std: None,
        },
    );
    let config = SynthConfig::default();
    let table =
        ldl::data::read_synthetic_faces(&config, 40, &spec, &space(), OnBadSample::Error).unwrap();
    let mut samples = table.samples;
    let validation = samples.split_off(32);
    (samples, validation)
}

/// Two epochs of `Trainer::fit` on the faces with a learning rate so small that the
/// weights stay put (so that Adam cannot amplify rounding): each epoch's training and
/// validation loss.
fn fit_losses(
    trainer: impl FnOnce(ldl::train::Trainer) -> ldl::train::Trainer,
    batch: usize,
) -> Vec<(f64, f64)> {
    let (model, _, _) = setup();
    let (train, validation) = faces();
    let mut trainer = trainer(
        ldl::train::Trainer::new(model, FullKl::new())
            .epochs(2)
            .batch_size(batch)
            .learning_rate(1e-12)
            .image_size(32)
            .seed(3),
    );
    let fit = trainer
        .fit(&train, &validation, |_| ldl::train::Control::Continue)
        .unwrap();
    fit.epochs
        .iter()
        .map(|e| (e.train.total, e.validation.as_ref().unwrap().loss.total))
        .collect()
}

#[test]
fn the_library_route_with_sync_batch_norm_fits_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    common::ranks::run_as_two_ranks("library_rank_program", OUT, dir.path());
    let one = fit_losses(|t| t, BATCH);
    let read = |name: &str| -> Vec<(f64, f64)> {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
    };
    let largest = |a: &[(f64, f64)]| {
        a.iter().zip(&one).fold(0.0f64, |m, (x, y)| {
            m.max((x.0 - y.0).abs()).max((x.1 - y.1).abs())
        })
    };
    let (synced, own) = (
        largest(&read("fit-synced.json")),
        largest(&read("fit-own.json")),
    );
    eprintln!("largest loss difference from one process: SyncBN {synced:e}, per-rank {own:e}");
    assert!(synced <= 1e-5, "SyncBN: {synced:e}");
    assert!(own > 1e-3, "per-rank BatchNorm: {own:e}");
}

#[test]
fn library_rank_program() {
    let Some(out) = std::env::var_os(OUT) else {
        return;
    };
    let mpi: Arc<dyn Collective> =
        Arc::new(MpiCollective::initialize(Duration::from_secs(60)).unwrap());
    let rank = mpi.rank();
    for synced in [true, false] {
        // One world, shared by both fits.
        let world = Arc::clone(&mpi);
        let losses = fit_losses(|t| t.collective(world).sync_batch_norm(synced), BATCH / 2);
        if rank == 0 {
            let name = if synced {
                "fit-synced.json"
            } else {
                "fit-own.json"
            };
            let json = serde_json::to_string(&losses).unwrap();
            std::fs::write(Path::new(&out).join(name), json).unwrap();
        }
    }
}

#[test]
fn rank_program() {
    let Some(out) = std::env::var_os(OUT) else {
        return;
    };
    let mpi: Arc<dyn Collective> =
        Arc::new(MpiCollective::initialize(Duration::from_secs(60)).unwrap());
    let rank = mpi.rank();
    for case in Case::ALL {
        let (mut model, inputs, labels) = case.setup();
        if case.synced() {
            model
                .set_batch_norm_sync(Some(Arc::new(Sums(Arc::clone(&mpi)))))
                .unwrap();
        }
        let split = case.first_of_rank_1();
        let (start, len) = if rank == 0 {
            (0, split)
        } else {
            (split, BATCH - split)
        };
        let mine = inputs.narrow(0, start, len).unwrap();
        let rows = BatchRows {
            start,
            global: BATCH,
        };
        let (statistics, mut grads) = step(&model, &mine, &labels[start..][..len], rows);
        let vars: Vec<_> = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
        average_gradients(mpi.as_ref(), &vars, &mut grads, len, BATCH).unwrap();
        let json = serde_json::to_string(&(gradients(&model, &grads), statistics)).unwrap();
        let name = format!("{}{rank}.json", case.name());
        std::fs::write(Path::new(&out).join(name), json).unwrap();
    }
}
