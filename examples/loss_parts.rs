//! A two-axis label space (age in years, yaw on a full circle in degrees), the full-KL
//! loss of a batch with its parts per axis, one gradient step's worth of gradients, and
//! the decoded predictions.
//!
//! `cargo run --example loss_parts`

use candle_core::{DType, Device, Tensor, Var};
use ldl::loss::{FullKl, Loss};
use ldl::{Axis, Label, LabelSpace};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0)?.with_unit("years"),
        Axis::circular("yaw", -180.0, 360.0, 3.0)?.with_unit("degrees"),
    ])?;
    // Two samples: an apparent age with its annotators' std, and a yaw with the axis
    // default std (two bins).
    let labels = vec![
        vec![Label::value_with_std(34.0, 3.1), Label::value(-21.0)],
        vec![Label::value_with_std(61.0, 4.5), Label::value(177.0)],
    ];
    let targets = space.targets(&labels, DType::F32, &device)?;

    // Stand-in logits: what a network's heads would output (untrained: uniform).
    let logits: Vec<Var> = space
        .axes()
        .iter()
        .map(|axis| Var::zeros((labels.len(), axis.len()), DType::F32, &device))
        .collect::<Result<_, _>>()?;
    let tensors: Vec<Tensor> = logits.iter().map(|v| v.as_tensor().clone()).collect();

    let loss = FullKl::default().compute(&space, &tensors, &targets)?;
    println!("full-kl total: {:.4} nats", loss.total_value()?);
    for (key, value) in loss.part_values()? {
        println!("  {key:<12} {value:.4}");
    }
    let gradients = loss.total.backward()?;
    for (axis, var) in space.axes().iter().zip(&logits) {
        let norm = gradients
            .get(var.as_tensor())
            .map(|g| g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>())
            .transpose()?
            .unwrap_or(0.0);
        println!("gradient norm on the {} logits: {norm:.4}", axis.name());
    }

    // Decoding: the targets' own distributions give back the labels.
    let target_logits: Vec<Tensor> = targets
        .iter()
        .map(|t| t.pmf.clamp(1e-30f32, 1f32)?.log())
        .collect::<Result<_, _>>()?;
    for estimates in space.decode_logits(&target_logits)? {
        for (axis, estimate) in space.axes().iter().zip(estimates) {
            let ldl::AxisEstimate::Value(estimate) = estimate else {
                continue;
            };
            println!(
                "{}: mean {:.2} {unit}, std {:.2} {unit}, mode {} {unit}",
                axis.name(),
                estimate.mean,
                estimate.std,
                estimate.mode,
                unit = axis.unit()
            );
        }
    }
    Ok(())
}
