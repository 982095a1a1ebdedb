//! One training step (forward, full-KL loss, backward, Adam) and inference of the DLDL-v2
//! networks on the CPU, on random data, as `benches/reference`'s PyTorch counterpart
//! does: TinyAgeNet 64×64 batch 32 and ThinAgeNet 112×112 batch 16.
//!
//! `cargo bench --bench train_step`

use candle_core::{DType, Device, Tensor, Var};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ldl::loss::{FullKl, Loss};
use ldl::models::{on_worker_thread, trainable_vars, BackboneConfig, Model};
use ldl::{Axis, AxisTargets, Label, LabelSpace};
use rand::{Rng, SeedableRng};

struct Case {
    name: &'static str,
    backbone: BackboneConfig,
    batch: usize,
    size: usize,
}

fn inputs(batch: usize, size: usize, space: &LabelSpace) -> (Tensor, Vec<AxisTargets>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let pixels: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| rng.gen_range(-2.0..2.0))
        .collect();
    let images = Tensor::from_vec(pixels, (batch, 3, size, size), &Device::Cpu).unwrap();
    let labels: Vec<Vec<Label>> = (0..batch)
        .map(|_| vec![Label::value_with_std(rng.gen_range(10.0..90.0), 3.0)])
        .collect();
    (
        images,
        space.targets(&labels, DType::F32, &Device::Cpu).unwrap(),
    )
}

fn bench_networks(c: &mut Criterion) {
    // As `ldl train` does: without it, freed activations go back to the OS every step.
    ldl::train::tune_for_training();
    let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap();
    let cases = [
        Case {
            name: "tiny_age_net_64_b32",
            backbone: BackboneConfig::tiny_age_net(),
            batch: 32,
            size: 64,
        },
        Case {
            name: "thin_age_net_112_b16",
            backbone: BackboneConfig::thin_age_net(),
            batch: 16,
            size: 112,
        },
    ];
    let mut group = c.benchmark_group("network");
    group.sample_size(10);
    for case in cases {
        let model = Model::build(&case.backbone, &space, 0, &Device::Cpu).unwrap();
        let vars = model.vars().clone();
        let trainable: Vec<Var> = trainable_vars(&vars).into_iter().map(|(_, v)| v).collect();
        // The optimiser `ldl train` runs (PyTorch's Adam semantics).
        let mut optimizer = ldl::train::Adam::new(trainable, 1e-3, 0.0).unwrap();
        let (images, targets) = inputs(case.batch, case.size, &space);
        let loss = FullKl::default();
        group.bench_function(format!("{}/train_step", case.name), |b| {
            b.iter(|| {
                // On a worker of rayon's pool, as `ldl train` runs them (see
                // `on_worker_thread`).
                let (total, grads) = on_worker_thread(&Device::Cpu, || {
                    let logits = model.forward_t(&images, true).unwrap();
                    let out = loss.compute(&space, &logits, &targets).unwrap();
                    (out.total_value().unwrap(), out.total.backward().unwrap())
                });
                on_worker_thread(&Device::Cpu, || optimizer.step(&grads).unwrap());
                black_box(total)
            })
        });
        // Building what `ldl predict`, `ldl serve` and evaluation run: BatchNorm folded
        // into the convolutions and their kernels transformed, once.
        group.bench_function(format!("{}/fold_batch_norm", case.name), |b| {
            b.iter(|| black_box(model.inference().unwrap()))
        });
        let inference = model.inference().unwrap();
        group.bench_function(format!("{}/inference", case.name), |b| {
            b.iter(|| {
                black_box(
                    inference.forward(&images).unwrap()[0]
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_networks);
criterion_main!(benches);
