//! Times the building blocks of TinyAgeNet at its shapes on 64×64 images, batch 32, each
//! forward and backward: the convolution (ldl's gemm path and candle's own), BatchNorm +
//! ReLU in training mode (ldl's fused op and candle's ops), and the 2×2 max-pool.
//! The figures in docs/performance.md come from this command.
//!
//! `cargo run --release --example layer_timings`

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{BatchNorm, ModuleT};

/// Mean seconds of `forward` and of the backward pass of its output's sum.
fn time(
    repeats: usize,
    forward: impl Fn() -> candle_core::Result<Tensor>,
) -> candle_core::Result<(f64, f64)> {
    forward()?.sum_all()?.backward()?; // warm-up
    let (mut fwd, mut bwd) = (0.0, 0.0);
    for _ in 0..repeats {
        let start = Instant::now();
        let y = forward()?;
        fwd += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let _grads = y.sum_all()?.backward()?;
        bwd += start.elapsed().as_secs_f64();
    }
    Ok((fwd / repeats as f64 * 1e3, bwd / repeats as f64 * 1e3))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ldl::train::tune_for_training();
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
    let repeats = 5;
    println!("times in ms, forward / backward");
    println!(
        "layer                  conv (ldl)     conv (candle)  BN+ReLU (ldl)  BN+ReLU (candle)  max-pool       identity"
    );
    for (input, output, side) in shapes {
        // The first layer's input is data (no gradient), as in the network.
        let data = Tensor::randn(0f32, 1., (batch, input, side, side), &device)?;
        let x = if input == 3 {
            data
        } else {
            Var::from_tensor(&data)?.as_tensor().clone()
        };
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (output, input, 3, 3), &device)?)?;
        let ours = time(repeats, || {
            ldl::models::conv2d(&x, w.as_tensor(), 1)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })?;
        let candle = time(repeats, || x.conv2d(w.as_tensor(), 1, 1, 1, 1))?;

        let activations = Var::from_tensor(&Tensor::randn(
            0f32,
            1.,
            (batch, output, side, side),
            &device,
        )?)?;
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let bn: BatchNorm =
            candle_nn::batch_norm(output, candle_nn::BatchNormConfig::default(), vb)?;
        let fused = time(repeats, || {
            ldl::models::batch_norm_relu(&bn, activations.as_tensor(), true)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })?;
        let composed = time(repeats, || {
            bn.forward_t(activations.as_tensor(), true)?.relu()
        })?;
        let pool = time(repeats, || {
            ldl::models::max_pool_2x2(activations.as_tensor())
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })?;
        // What the harness itself costs: an identity op, then the `sum_all` backward.
        let baseline = time(repeats, || activations.as_tensor().copy())?;
        let pair = |(f, b): (f64, f64)| format!("{f:>6.1} / {b:<6.1}");
        println!(
            "conv {input:>3}→{output:<3} @{side:<3}  {}  {}  {}  {}     {}  {}",
            pair(ours),
            pair(candle),
            pair(fused),
            pair(composed),
            pair(pool),
            pair(baseline)
        );
    }
    Ok(())
}
