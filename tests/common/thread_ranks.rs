//! Ranks as threads of one process, for checking SyncBN without a launcher: each rank's
//! `sum` waits for the others and returns the element-wise total, summed in rank order, so
//! every rank gets the same numbers. And the check itself: one training step of a batch
//! split over two ranks (each on its own thread, with its own copy of the model), against
//! one process holding the whole batch.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use ldl::loss::{FullKl, Loss};
use ldl::models::{
    trainable_vars, BackboneConfig, BatchRows, CrossRankSum, MlpConfig, Model, VggConfig,
};
use ldl::{Label, LabelSpace};
use rand::Rng;

/// What the ranks share: each rank's values for the sum in progress, and how many sums
/// have completed.
struct Shared {
    world: usize,
    state: Mutex<Rendezvous>,
    changed: Condvar,
}

#[derive(Default)]
struct Rendezvous {
    slots: Vec<Option<Vec<f64>>>,
    /// Ranks that have read the current sum; the last one clears the slots.
    read: usize,
    /// Completed sums: a rank waits for the next generation before writing again.
    generation: u64,
}

/// One rank of `ranks(world)`.
pub struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
}

/// `world` ranks that sum through shared memory.
pub fn ranks(world: usize) -> Vec<ThreadRank> {
    let shared = Arc::new(Shared {
        world,
        state: Mutex::new(Rendezvous {
            slots: vec![None; world],
            ..Rendezvous::default()
        }),
        changed: Condvar::new(),
    });
    (0..world)
        .map(|rank| ThreadRank {
            rank,
            shared: Arc::clone(&shared),
        })
        .collect()
}

/// How long a rank waits for the others: a rank that panicked fails the test instead of
/// hanging it.
const WAIT: Duration = Duration::from_secs(60);

impl CrossRankSum for ThreadRank {
    fn sum(&self, values: &mut [f64]) -> Result<(), String> {
        let shared = &self.shared;
        let timeout = |what: &str| format!("rank {}: no other rank {what} in 60 s", self.rank);
        let mut state = shared.state.lock().unwrap();
        // Wait until the previous sum is fully read, then put this rank's values in.
        let (guard, wait) = shared
            .changed
            .wait_timeout_while(state, WAIT, |s| s.slots[self.rank].is_some())
            .unwrap();
        state = guard;
        if wait.timed_out() {
            return Err(timeout("finished the previous sum"));
        }
        state.slots[self.rank] = Some(values.to_vec());
        let generation = state.generation;
        shared.changed.notify_all();
        let (guard, wait) = shared
            .changed
            .wait_timeout_while(state, WAIT, |s| {
                s.generation == generation && s.slots.iter().any(Option::is_none)
            })
            .unwrap();
        state = guard;
        if wait.timed_out() {
            return Err(timeout("joined the sum"));
        }
        // Summed in rank order, so every rank gets the same numbers.
        for (i, value) in values.iter_mut().enumerate() {
            *value = state
                .slots
                .iter()
                .map(|slot| slot.as_ref().map_or(0.0, |s| s[i]))
                .sum();
        }
        state.read += 1;
        if state.read == shared.world {
            state.read = 0;
            state.generation += 1;
            state.slots.iter_mut().for_each(|slot| *slot = None);
            shared.changed.notify_all();
        }
        Ok(())
    }
}

/// The models and batches of the SyncBN checks on `device`: TinyAgeNet at a quarter width
/// on 16 seeded images of 32×32, and an MLP with BatchNorm and dropout on 16 rows of 6
/// features; with the ages of the 16 samples.
pub fn cases(device: &Device) -> (Vec<(BackboneConfig, Tensor)>, Vec<Vec<Label>>) {
    let tiny = BackboneConfig::Vgg(VggConfig::tiny_age_net().with_width(0.25).unwrap());
    let mlp: BackboneConfig = MlpConfig::new(6, [16, 12])
        .with_batch_norm()
        .with_dropout(0.3)
        .into();
    let random = |seed: u64, shape: &[usize]| {
        let mut r = super::rng(seed);
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| r.gen_range(-1.0..1.0))
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu)
            .unwrap()
            .to_device(device)
            .unwrap()
    };
    let labels = (0..16)
        .map(|i| vec![Label::value(5.0 + 5.3 * i as f64)])
        .collect();
    let inputs = vec![
        (tiny, random(4, &[16, 3, 32, 32])),
        (mlp, random(5, &[16, 6])),
    ];
    (inputs, labels)
}

/// Each trainable variable's gradient, by name, and each running statistic.
pub type Step = (Vec<(String, Tensor)>, Vec<(String, Tensor)>);

/// One training step of a model built from `config` (seed 9) on rows `start..start+len`
/// of `inputs` (a global batch), with `sync` for its BatchNorm; the gradients scaled by
/// the part's share of the batch (as the trainer averages them over the ranks).
fn part_step(
    config: &BackboneConfig,
    space: &LabelSpace,
    inputs: &Tensor,
    labels: &[Vec<Label>],
    (start, len): (usize, usize),
    sync: Option<ThreadRank>,
) -> Step {
    let device = inputs.device();
    let mut model = Model::build(config, space, 9, device).unwrap();
    if let Some(rank) = sync {
        model.set_batch_norm_sync(Some(Arc::new(rank))).unwrap();
    }
    let global = inputs.dim(0).unwrap();
    let part = inputs.narrow(0, start, len).unwrap();
    let rows = BatchRows { start, global };
    let targets = space
        .targets(&labels[start..start + len], DType::F32, device)
        .unwrap();
    let logits = model.forward_rows(&part, rows).unwrap();
    let loss = FullKl::new().compute(space, &logits, &targets).unwrap();
    let grads = loss.total.backward().unwrap();
    let share = len as f64 / global as f64;
    let gradients = trainable_vars(model.vars())
        .into_iter()
        .map(|(name, var)| {
            let grad = grads.get(var.as_tensor()).unwrap();
            (name, (grad * share).unwrap())
        })
        .collect();
    let data = model.vars().data().lock().unwrap();
    let mut statistics: Vec<(String, Tensor)> = data
        .iter()
        .filter(|(name, _)| name.contains("running"))
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    statistics.sort_by(|a, b| a.0.cmp(&b.0));
    (gradients, statistics)
}

/// The step of one process on the whole batch, and of two ranks on parts of `first` and
/// the rest, synchronised (`sync`) or each with its own BatchNorm: the ranks' gradients
/// summed (each already scaled by its share), and rank 0's running statistics.
pub fn one_process_and_two_ranks(
    config: &BackboneConfig,
    space: &LabelSpace,
    inputs: &Tensor,
    labels: &[Vec<Label>],
    first: usize,
    sync: bool,
) -> (Step, Step) {
    let global = inputs.dim(0).unwrap();
    let whole = part_step(config, space, inputs, labels, (0, global), None);
    let parts = [(0, first), (first, global - first)];
    let mut ranks = ranks(2).into_iter();
    let steps: Vec<Step> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|&part| {
                let rank = ranks.next().filter(|_| sync);
                scope.spawn(move || part_step(config, space, inputs, labels, part, rank))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let gradients = steps[0]
        .0
        .iter()
        .zip(&steps[1].0)
        .map(|((name, a), (_, b))| (name.clone(), (a + b).unwrap()))
        .collect();
    (whole, (gradients, steps[0].1.clone()))
}

/// The largest difference of each tensor relative to the largest value of `b`'s, and the
/// tensor's name. A tensor that is zero up to rounding in `b` (the MLP's linear biases,
/// whose gradient BatchNorm's mean removes: below 1e-5 of the largest of all tensors)
/// passes when `a`'s is too.
pub fn largest_relative_difference(
    a: &[(String, Tensor)],
    b: &[(String, Tensor)],
) -> (f64, String) {
    let values = |t: &Tensor| -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let largest_of = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let zero = 1e-5
        * b.iter()
            .map(|(_, t)| largest_of(&values(t)))
            .fold(1e-12, f64::max);
    let mut worst = (0.0, String::new());
    for ((name, x), (other, y)) in a.iter().zip(b) {
        assert_eq!(name, other);
        let (x, y) = (values(x), values(y));
        let scale = largest_of(&y);
        let difference = if scale < zero {
            if largest_of(&x) < zero {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            x.iter()
                .zip(&y)
                .fold(0.0f64, |m, (p, q)| m.max((p - q).abs() / scale))
        };
        if difference > worst.0 {
            worst = (difference, name.clone());
        }
    }
    worst
}

/// How far two ranks may be from one process in [`assert_two_ranks_take_the_whole_step`]:
/// the largest relative difference of the gradients and of the running statistics with
/// SyncBN, and the least one of the gradients with each rank's own BatchNorm.
pub struct Tolerances {
    pub gradients: f64,
    pub statistics: f64,
    pub unsynced_at_least: f64,
}

/// SyncBN over two thread ranks (parts of 7 and 9 of 16) against one process, for each of
/// [`cases`] on `device`: with SyncBN the step agrees within `tolerances`; with each
/// rank's own BatchNorm it does not.
pub fn assert_two_ranks_take_the_whole_step(device: &Device, tolerances: Tolerances) {
    let space = LabelSpace::new(vec![ldl::Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap();
    let (cases, labels) = cases(device);
    for (config, inputs) in &cases {
        let (whole, synced) = one_process_and_two_ranks(config, &space, inputs, &labels, 7, true);
        let (gradients, worst) = largest_relative_difference(&synced.0, &whole.0);
        let (statistics, _) = largest_relative_difference(&synced.1, &whole.1);
        eprintln!(
            "{config:?}: SyncBN gradients {gradients:e} ({worst}), statistics {statistics:e}"
        );
        assert!(
            gradients <= tolerances.gradients,
            "SyncBN gradients: {gradients:e} in {worst}"
        );
        assert!(
            statistics <= tolerances.statistics,
            "SyncBN statistics: {statistics:e}"
        );
        let (_, own) = one_process_and_two_ranks(config, &space, inputs, &labels, 7, false);
        let (apart, _) = largest_relative_difference(&own.0, &whole.0);
        eprintln!("{config:?}: per-rank BatchNorm gradients {apart:e}");
        assert!(
            apart > tolerances.unsynced_at_least,
            "per-rank BatchNorm: {apart:e}"
        );
    }
}
