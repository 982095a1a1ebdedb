//! The prediction that minimises each term of the full-KL loss, their sum, and the
//! relative-smoothness variant, for a Gaussian target of std σ = 1, 2, 4, 8 bins:
//! docs/loss.md's "Where the loss's minimiser lies" quotes this output.
//!
//! `cargo run --release --example loss_minimisers`
//!
//! The prediction is a full distribution over the bins, parametrised by its logits, and
//! minimised with L-BFGS in f64 through the crate's own loss code (values and gradients
//! by autograd). Every run starts from the same place, a Gaussian 1.5 times as wide as
//! the target and 1.5 bins off its centre, so that each objective has to move both the
//! mean and the width.

use candle_core::{DType, Device, Tensor, Var};
use ldl::loss::{FullKl, FullKlRelative, Loss};
use ldl::{Axis, AxisTargets, Label, LabelSpace};

type ValueAndGradient<'a> = dyn Fn(&[f64]) -> candle_core::Result<(f64, Vec<f64>)> + 'a;

/// How many past steps L-BFGS keeps.
const MEMORY: usize = 10;
/// The iteration limit, far more than any run here needs to stop moving.
const ITERATIONS: usize = 4000;

/// The objectives: one term of the full-KL loss, their sum, or the relative variant.
#[derive(Clone, Copy)]
enum Objective {
    Term(&'static str),
    FullKl,
    FullKlRelative,
}

impl Objective {
    fn label(self) -> &'static str {
        match self {
            Objective::Term("ld") => "L_ld alone",
            Objective::Term("exp") => "L_exp alone",
            Objective::Term(_) => "L_smooth alone",
            Objective::FullKl => "full-kl (sum)",
            Objective::FullKlRelative => "full-kl-rel (sum)",
        }
    }

    fn value(
        self,
        logits: &Tensor,
        target: &AxisTargets,
        axis: &Axis,
    ) -> Result<Tensor, Box<dyn std::error::Error>> {
        let parts = match self {
            Objective::FullKlRelative => {
                FullKlRelative::default().axis_parts(logits, target, axis)?
            }
            _ => FullKl::default().axis_parts(logits, target, axis)?,
        };
        Ok(match self {
            Objective::Term(name) => parts[name].sum_all()?,
            _ => parts.total()?.sum_all()?,
        })
    }
}

/// Minimises `f` from `x` by L-BFGS with a backtracking (Armijo) line search. Returns
/// the minimiser, the value there and the largest gradient entry left.
fn lbfgs(f: &ValueAndGradient, mut x: Vec<f64>) -> candle_core::Result<(Vec<f64>, f64, f64)> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>();
    let (mut value, mut grad) = f(&x)?;
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    for _ in 0..ITERATIONS {
        if grad.iter().all(|g| g.abs() < 1e-12) {
            break;
        }
        // The two-loop recursion: direction = −H·grad.
        let mut d: Vec<f64> = grad.iter().map(|g| -g).collect();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let alpha = rho * dot(s, &d);
            d.iter_mut().zip(y).for_each(|(di, yi)| *di -= alpha * yi);
            alphas.push(alpha);
        }
        let scale = history.last().map_or(
            1.0 / grad.iter().map(|g| g.abs()).fold(1e-12, f64::max),
            |(s, y, _)| dot(s, y) / dot(y, y),
        );
        d.iter_mut().for_each(|di| *di *= scale);
        for ((s, y, rho), alpha) in history.iter().zip(alphas.iter().rev()) {
            let beta = rho * dot(y, &d);
            d.iter_mut()
                .zip(s)
                .for_each(|(di, si)| *di += (alpha - beta) * si);
        }
        let mut slope = dot(&grad, &d);
        if slope >= 0.0 {
            // Not a descent direction: forget the curvature pairs and go downhill.
            history.clear();
            d = grad.iter().map(|g| -g).collect();
            slope = -dot(&grad, &grad);
        }
        let mut step = 1.0;
        let (next, next_value, next_grad) = loop {
            let trial: Vec<f64> = x.iter().zip(&d).map(|(xi, di)| xi + step * di).collect();
            let (v, g) = f(&trial)?;
            if v <= value + 1e-4 * step * slope || step < 1e-20 {
                break (trial, v, g);
            }
            step *= 0.5;
        };
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = next_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-300 {
            history.push((s, y, 1.0 / sy));
            if history.len() > MEMORY {
                history.remove(0);
            }
        }
        let stalled = next_value >= value && step < 1e-20;
        (x, value, grad) = (next, next_value, next_grad);
        if stalled {
            break;
        }
    }
    let worst = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    Ok((x, value, worst))
}

/// Mean and std in bins of the distribution `softmax(z)`, measured from `centre` (wrapped
/// into half a period on a circular axis).
fn moments(z: &[f64], axis: &Axis, centre: f64) -> (f64, f64) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = z.iter().map(|x| (x - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let offsets: Vec<f64> = axis
        .centers()
        .iter()
        .map(|c| axis.difference(*c, centre) / axis.step())
        .collect();
    let mean: f64 = weights
        .iter()
        .zip(&offsets)
        .map(|(w, d)| w * d)
        .sum::<f64>()
        / total;
    let variance: f64 = weights
        .iter()
        .zip(&offsets)
        .map(|(w, d)| w * (d - mean).powi(2))
        .sum::<f64>()
        / total;
    (mean, variance.sqrt())
}

/// The table of one axis: every objective for every σ.
fn study(axis: &Axis, centre: f64) -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let space = LabelSpace::new(vec![axis.clone()])?;
    println!(
        "| σ (bins) | S(p) at q = p | 1/(2σ²) | objective | mean − y (bins) | std (bins) | std / σ | value | max |∂/∂z| |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for sigma in [1.0, 2.0, 4.0, 8.0] {
        let label = Label::value_with_std(centre, sigma * axis.step());
        let targets = space.targets(&[vec![label]], DType::F64, &device)?;
        let target = &targets[0];
        let ideal = target.pmf.clamp(1e-300, 1.0)?.log()?;
        let at_target = FullKl::default().axis_parts(&ideal, target, axis)?;
        let roughness = at_target["smooth"].sum_all()?.to_scalar::<f64>()?;
        let start: Vec<f64> = axis
            .centers()
            .iter()
            .map(|c| {
                let d = axis.difference(*c, centre) / axis.step() - 1.5;
                -d * d / (2.0 * (1.5 * sigma).powi(2))
            })
            .collect();
        for objective in [
            Objective::Term("ld"),
            Objective::Term("exp"),
            Objective::Term("smooth"),
            Objective::FullKl,
            Objective::FullKlRelative,
        ] {
            let f = |z: &[f64]| -> candle_core::Result<(f64, Vec<f64>)> {
                let var = Var::from_vec(z.to_vec(), (1, z.len()), &device)?;
                let value = objective
                    .value(var.as_tensor(), target, axis)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                let grads = value.backward()?;
                let grad = grads
                    .get(var.as_tensor())
                    .expect("a gradient")
                    .flatten_all()?;
                Ok((value.to_scalar::<f64>()?, grad.to_vec1::<f64>()?))
            };
            let (z, value, worst) = lbfgs(&f, start.clone())?;
            let (mean, std) = moments(&z, axis, centre);
            println!(
                "| {sigma} | {roughness:.5} | {:.5} | {} | {mean:+.4} | {std:.4} | {:.4} | {value:.5} | {worst:.1e} |",
                1.0 / (2.0 * sigma * sigma),
                objective.label(),
                std / sigma,
            );
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Linear axis, 121 bins (0..120, step 1), target centred at 60:");
    study(&Axis::linear("x", 0.0, 120.0, 1.0)?, 60.0)?;
    println!();
    println!("Circular axis, 120 bins (period 120, step 1), target at 60:");
    study(&Axis::circular("a", 0.0, 120.0, 1.0)?, 60.0)?;
    Ok(())
}
