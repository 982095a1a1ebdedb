//! Times candle's building blocks at the shapes of TinyAgeNet on 64×64 images, batch 32:
//! each distinct convolution forward and backward, and BatchNorm + ReLU in training mode.
//! The figures in docs/performance.md come from this command.
//!
//! `cargo run --release --example layer_timings`

use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor, Var};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let batch = 32;
    // (input channels, output channels, image side) of TinyAgeNet's distinct convolutions.
    let shapes = [
        (3, 16, 64),
        (16, 16, 64),
        (16, 32, 32),
        (32, 32, 32),
        (32, 64, 16),
        (64, 64, 16),
        (64, 128, 8),
        (128, 128, 8),
        (128, 128, 4),
    ];
    let repeats = 3;
    println!("layer                 forward   backward  GFLOP/s fwd  BN+ReLU fwd");
    for (input, output, side) in shapes {
        let x = Var::from_tensor(&Tensor::randn(
            0f32,
            1.,
            (batch, input, side, side),
            &device,
        )?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (output, input, 3, 3), &device)?)?;
        let bn = candle_nn::batch_norm(
            output,
            candle_nn::BatchNormConfig::default(),
            candle_nn::VarBuilder::zeros(DType::F32, &device),
        )?;
        let _warm_up = x.conv2d(&w, 1, 1, 1, 1)?;
        let (mut forward, mut backward, mut norm) = (0.0, 0.0, 0.0);
        for _ in 0..repeats {
            let start = Instant::now();
            let y = x.conv2d(&w, 1, 1, 1, 1)?;
            forward += start.elapsed().as_secs_f64();
            let start = Instant::now();
            let _grads = y.sum_all()?.backward()?;
            backward += start.elapsed().as_secs_f64();
            let start = Instant::now();
            let _z = bn.forward_t(&y, true)?.relu()?;
            norm += start.elapsed().as_secs_f64();
        }
        let n = repeats as f64;
        let flops = 2.0 * (batch * side * side * input * output * 9) as f64;
        println!(
            "conv {input:>3}→{output:<3} @{side:<3}  {:>7.1} ms {:>7.1} ms {:>10.1} {:>10.1} ms",
            forward / n * 1e3,
            backward / n * 1e3,
            flops / (forward / n) / 1e9,
            norm / n * 1e3
        );
    }
    Ok(())
}
