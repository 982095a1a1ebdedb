//! Forward and forward+backward of the losses on a batch of 128 samples × 3 axes × 101
//! bins, f32, CPU: the fused CPU kernel of the full-KL loss (the default), the same loss
//! through composed tensor ops (what other devices run), and the baselines. Compare with `benches/reference/full_kl_torch.py` (same shapes, same
//! formulas) run in the same minute; see docs/performance.md.
//!
//! `cargo bench --bench loss`

use candle_core::{DType, Device, Tensor, Var};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ldl::loss::{DldlV2, FullKl, Kl, Loss};
use ldl::{Axis, AxisTargets, Label, LabelSpace};

const BATCH: usize = 128;

struct Setup {
    space: LabelSpace,
    logits: Vec<Var>,
    targets: Vec<AxisTargets>,
}

fn setup() -> Setup {
    let device = Device::Cpu;
    let space = LabelSpace::new(
        ["age", "weight", "height"]
            .iter()
            .map(|name| Axis::linear(*name, 0.0, 100.0, 1.0).unwrap())
            .collect(),
    )
    .unwrap();
    // Deterministic labels spread over the axis, std 3 bins, as the reference does.
    let samples: Vec<Vec<Label>> = (0..BATCH)
        .map(|i| {
            (0..3)
                .map(|a| Label::value_with_std(10.0 + ((i * 37 + a * 11) % 80) as f64, 3.0))
                .collect()
        })
        .collect();
    let targets = space.targets(&samples, DType::F32, &device).unwrap();
    let logits = (0..3)
        .map(|a| {
            let values: Vec<f32> = (0..BATCH * 101)
                .map(|i| (((i * 7919 + a * 104_729) % 1000) as f32 / 250.0) - 2.0)
                .collect();
            Var::from_tensor(&Tensor::from_vec(values, (BATCH, 101), &device).unwrap()).unwrap()
        })
        .collect();
    Setup {
        space,
        logits,
        targets,
    }
}

fn bench_losses(c: &mut Criterion) {
    let s = setup();
    let logits: Vec<Tensor> = s.logits.iter().map(|v| v.as_tensor().clone()).collect();
    let losses: Vec<(&str, Box<dyn Loss>)> = vec![
        ("full-kl", Box::new(FullKl::default())),
        (
            "full-kl-composed",
            Box::new(FullKl::default().with_fused_cpu_kernel(false)),
        ),
        ("kl", Box::new(Kl)),
        ("dldl-v2", Box::new(DldlV2::new(1.0).unwrap())),
    ];
    let mut group = c.benchmark_group("loss_b128_3x101_f32");
    for (name, loss) in &losses {
        group.bench_function(format!("{name}/forward"), |b| {
            b.iter(|| {
                let out = loss.compute(&s.space, &logits, &s.targets).unwrap();
                black_box(out.total.to_scalar::<f32>().unwrap())
            })
        });
        group.bench_function(format!("{name}/forward_backward"), |b| {
            b.iter(|| {
                let out = loss.compute(&s.space, &logits, &s.targets).unwrap();
                let grads = out.total.backward().unwrap();
                black_box(grads.get(s.logits[0].as_tensor()).unwrap().dims().len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_losses);
criterion_main!(benches);
