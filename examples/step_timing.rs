//! Times one training step (forward, full-KL loss, backward, Adam) and inference of a
//! DLDL-v2 network on random data, on any device and in either precision: the ldl side of
//! `benches/reference/train_step_torch.py`, which runs the same step in PyTorch.
//!
//! ```sh
//! cargo run --release --features cudnn --example step_timing -- \
//!     --device cuda --backbone thin-age-net --size 224 --batch 32 --precision bf16
//! ```
//!
//! Each timed loop ends by reading a value back from the device, so queued GPU work is
//! inside the time. The first steps (cuDNN's algorithm choice, kernel loading, the memory
//! pool filling up) are warm-up and not timed. On CUDA it also prints the memory pool's
//! peaks over the timed training steps (PyTorch's `max_memory_allocated` / `_reserved`).

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use ldl::loss::{FullKl, Loss};
use ldl::models::{on_worker_thread, trainable_vars, BackboneConfig, Model, Precision};
use ldl::{Axis, Label, LabelSpace};
use rand::{Rng, SeedableRng};

/// Send and Sync: a step's error crosses from rayon's worker thread.
type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    device: String,
    backbone: String,
    size: usize,
    batch: usize,
    precision: Precision,
    steps: usize,
    warmup: usize,
}

impl Options {
    fn parse() -> Result<Options, Failure> {
        let mut options = Options {
            device: "cpu".into(),
            backbone: "thin-age-net".into(),
            size: 224,
            batch: 32,
            precision: Precision::F32,
            steps: 20,
            warmup: 3,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--device" => options.device = value,
                "--backbone" => options.backbone = value,
                "--size" => options.size = value.parse()?,
                "--batch" => options.batch = value.parse()?,
                "--precision" => options.precision = value.parse()?,
                "--steps" => options.steps = value.parse()?,
                "--warmup" => options.warmup = value.parse()?,
                _ => {
                    return Err(format!(
                        "unknown option {flag}; use --device, --backbone (thin-age-net or \
                     tiny-age-net), --size, --batch, --precision (f32 or bf16), --steps, --warmup"
                    )
                    .into())
                }
            }
        }
        if options.steps == 0 || options.batch == 0 {
            return Err("--steps and --batch must be at least 1".into());
        }
        Ok(options)
    }

    fn backbone(&self) -> Result<BackboneConfig, Failure> {
        match self.backbone.as_str() {
            "thin-age-net" => Ok(BackboneConfig::thin_age_net()),
            "tiny-age-net" => Ok(BackboneConfig::tiny_age_net()),
            other => {
                Err(format!("unknown backbone {other}; use thin-age-net or tiny-age-net").into())
            }
        }
    }
}

/// Seconds per call of `f`, over `steps` calls after `warmup` untimed ones. `f` returns a
/// scalar tensor; only the last one is read back, which waits for all queued work (as
/// PyTorch's `torch.cuda.synchronize()`), so the device is never idle between steps.
fn seconds_per_call(
    warmup: usize,
    steps: usize,
    before_timing: impl FnOnce() -> Result<(), Failure>,
    mut f: impl FnMut() -> Result<Tensor, Failure>,
) -> Result<f64, Failure> {
    let read =
        |t: Tensor| -> Result<f32, Failure> { Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
    for _ in 0..warmup {
        read(f()?)?;
    }
    before_timing()?;
    let start = Instant::now();
    let mut last = f()?;
    for _ in 1..steps {
        last = f()?;
    }
    std::hint::black_box(read(last)?);
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}

/// Wall time between synchronisations of a device.
struct PhaseClock<'a> {
    device: &'a Device,
    since: Instant,
}

impl<'a> PhaseClock<'a> {
    fn start(device: &'a Device) -> Result<Self, Failure> {
        device.synchronize()?;
        Ok(PhaseClock {
            device,
            since: Instant::now(),
        })
    }

    /// Seconds since the last lap, once the device has finished the work queued since.
    fn lap(&mut self) -> Result<f64, Failure> {
        self.device.synchronize()?;
        let now = Instant::now();
        let seconds = (now - self.since).as_secs_f64();
        self.since = now;
        Ok(seconds)
    }
}

fn main() -> Result<(), Failure> {
    ldl::train::tune_for_training();
    let options = Options::parse()?;
    let device = ldl::models::device(&options.device)?;
    let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
    let mut model = Model::build(&options.backbone()?, &space, 0, &device)?;
    let vars = model.vars().clone();
    model.set_precision(options.precision)?;
    let trainable: Vec<Var> = trainable_vars(&vars).into_iter().map(|(_, v)| v).collect();
    let mut adam = ldl::train::Adam::new(trainable, 1e-3, 0.0)?;

    let (batch, size) = (options.batch, options.size);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let pixels: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| rng.gen_range(-2.0..2.0))
        .collect();
    let images = Tensor::from_vec(pixels, (batch, 3, size, size), &device)?;
    let labels: Vec<Vec<Label>> = (0..batch)
        .map(|_| vec![Label::value_with_std(rng.gen_range(10.0..90.0), 3.0)])
        .collect();
    let targets = space.targets(&labels, DType::F32, &device)?;
    let loss = FullKl::default();
    println!(
        "ldl {} on {}, {}, {} {}×{} batch {}, {} parameters",
        env!("CARGO_PKG_VERSION"),
        options.device,
        options.precision,
        options.backbone,
        size,
        size,
        batch,
        ldl::models::parameter_count(&vars),
    );

    // As `ldl train` runs a step: on a worker of rayon's pool (see `on_worker_thread`).
    let mut step = || -> Result<Tensor, Failure> {
        let passes = || -> Result<_, Failure> {
            let logits = model.forward_t(&images, true)?;
            let out = loss.compute(&space, &logits, &targets)?;
            let grads = out.total.backward()?;
            Ok((out.total, grads))
        };
        let (total, grads) = on_worker_thread(&device, passes)?;
        on_worker_thread(&device, || adam.step(&grads))?;
        Ok(total)
    };
    let reset = || -> Result<(), Failure> { Ok(ldl::models::reset_gpu_memory_peaks(&device)?) };
    let train = seconds_per_call(options.warmup, options.steps, reset, &mut step)?;
    println!(
        "train step: {:.2} ms ({:.1} img/s)",
        train * 1e3,
        batch as f64 / train
    );
    if let Some(peaks) = ldl::models::gpu_memory_peaks(&device)? {
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        println!(
            "peak memory: {:.0} MiB used, {:.0} MiB reserved",
            mib(peaks.used),
            mib(peaks.reserved)
        );
    }

    // Where a step's time goes: each phase ends with a synchronisation, so the phases add
    // up to a little more than the step above (the device idles between them).
    let mut phases = [0.0f64; 4];
    let phase_steps = options.steps.min(10);
    on_worker_thread(&device, || -> Result<(), Failure> {
        for _ in 0..phase_steps {
            let mut clock = PhaseClock::start(&device)?;
            let logits = model.forward_t(&images, true)?;
            phases[0] += clock.lap()?;
            let out = loss.compute(&space, &logits, &targets)?;
            phases[1] += clock.lap()?;
            let grads = out.total.backward()?;
            phases[2] += clock.lap()?;
            adam.step(&grads)?;
            phases[3] += clock.lap()?;
        }
        Ok(())
    })?;
    let ms = |seconds: f64| seconds / phase_steps as f64 * 1e3;
    println!(
        "phases: forward {:.2} ms, loss {:.2} ms, backward {:.2} ms, Adam {:.2} ms",
        ms(phases[0]),
        ms(phases[1]),
        ms(phases[2]),
        ms(phases[3])
    );

    let infer = || -> Result<Tensor, Failure> {
        let logits = model.forward_t(&images, false)?;
        Ok(logits[0].sum_all()?)
    };
    let inference = seconds_per_call(options.warmup, options.steps, || Ok(()), infer)?;
    println!(
        "inference: {:.2} ms ({:.1} img/s)",
        inference * 1e3,
        batch as f64 / inference
    );
    Ok(())
}
