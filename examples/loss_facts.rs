//! The facts docs/loss.md quotes, computed: the smoothness term at the ideal prediction,
//! the floor the `nominal` target moments leave at the axis ends, the width of the
//! full-KL loss's minimiser, and unit invariance.
//!
//! `cargo run --release --example loss_facts`

use candle_core::{DType, Device, Tensor, Var};
use ldl::loss::{DldlV2, FullKl, Loss, TargetMoments};
use ldl::{Axis, AxisTargets, Label, LabelSpace};

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let age = Axis::linear("age", 0.0, 100.0, 1.0)?.with_unit("years");

    println!("L_smooth at q = p (Gaussian target at 50, std s bins):");
    for s in [1.0, 2.0, 3.0, 5.0, 8.0] {
        let p = age.encode(&Label::value_with_std(50.0, s))?.pmf;
        let p = Tensor::from_vec(p, (1, 101), &device)?;
        // Logits must be finite: floor the probabilities that underflowed to 0.
        let target = AxisTargets::from_pmf(&p, &age)?;
        let parts = FullKl::default().axis_parts(&p.clamp(1e-300, 1.0)?.log()?, &target, &age)?;
        println!(
            "  s = {s}: L_smooth = {:.5}, 1/(2s²) = {:.5}",
            scalar(&parts["smooth"])?,
            1.0 / (2.0 * s * s)
        );
    }

    println!("L_exp at q = p for y = 0, s = 2 (the lower end of 0..100):");
    let space = LabelSpace::new(vec![age.clone()])?;
    let targets = space.targets(
        &[vec![Label::value_with_std(0.0, 2.0)]],
        DType::F64,
        &device,
    )?;
    let ideal = targets[0].pmf.log()?;
    for (name, moments) in [
        ("pmf", TargetMoments::Pmf),
        ("nominal", TargetMoments::Nominal),
    ] {
        let parts =
            FullKl::default()
                .with_target_moments(moments)
                .axis_parts(&ideal, &targets[0], &age)?;
        println!(
            "  target moments = {name}: L_exp = {:.4}",
            scalar(&parts["exp"])?
        );
    }

    println!("Minimiser of the full-KL loss for a Gaussian target at 50 (gradient descent):");
    for s in [2.0, 3.0, 5.0] {
        let targets =
            space.targets(&[vec![Label::value_with_std(50.0, s)]], DType::F64, &device)?;
        let logits = Var::from_tensor(&targets[0].pmf.clamp(1e-300, 1.0)?.log()?)?;
        let mut last = f64::NAN;
        for _ in 0..20000 {
            let loss =
                FullKl::default().compute(&space, &[logits.as_tensor().clone()], &targets)?;
            last = loss.total_value()?;
            let grads = loss.total.backward()?;
            let g = grads
                .get(logits.as_tensor())
                .expect("logits get a gradient");
            logits.set(&(logits.as_tensor() - g.affine(0.5, 0.0)?)?)?;
        }
        let estimate = &space.decode_logits(&[logits.as_tensor().clone()])?[0][0];
        let variance = estimate.as_value().map_or(f64::NAN, |e| e.std.powi(2));
        println!(
            "  s = {s}: minimiser variance {variance:.3} bins² (s² = {:.1}, s² + ½ = {:.1}), loss there {last:.4}",
            s * s,
            s * s + 0.5
        );
    }

    println!("The same batch in years and in months (×12):");
    for (unit, scale) in [("years", 1.0), ("months", 12.0)] {
        let axis = Axis::linear("age", 0.0, 100.0 * scale, scale)?;
        let space = LabelSpace::new(vec![axis])?;
        let labels: Vec<Vec<Label>> = [(23.0, 3.0), (47.5, 4.0), (71.0, 2.5)]
            .iter()
            .map(|(y, s)| vec![Label::value_with_std(y * scale, s * scale)])
            .collect();
        let targets = space.targets(&labels, DType::F64, &device)?;
        let row: Vec<f64> = (0..101)
            .map(|k| -((k as f64 - 40.0) / 15.0).powi(2))
            .collect();
        let logits = Tensor::from_vec(row.repeat(3), (3, 101), &device)?;
        let full = FullKl::default().compute(&space, std::slice::from_ref(&logits), &targets)?;
        let v2 = DldlV2::new(1.0)?.compute(&space, &[logits], &targets)?;
        println!(
            "  {unit:<6}: full-kl {:.12}, dldl-v2 (λ = 1) {:.6}",
            full.total_value()?,
            v2.total_value()?
        );
    }
    Ok(())
}
