//! Helpers shared by the integration tests: an independent scalar reference of the
//! loss terms (plain f64 loops over slices, no tensors), seeded random inputs, and
//! finite differences.
#![allow(dead_code)]

pub mod ranks;
pub mod thread_ranks;
pub mod vgg_reference;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// Offsets of the centres from `centre`, in bins, wrapped on a circle of `period`.
pub fn offsets(centres: &[f64], centre: f64, step: f64, period: Option<f64>) -> Vec<f64> {
    centres
        .iter()
        .map(|c| {
            let mut d = c - centre;
            if let Some(p) = period {
                while d > p / 2.0 {
                    d -= p;
                }
                while d <= -p / 2.0 {
                    d += p;
                }
            }
            d / step
        })
        .collect()
}

pub fn mean_var(r: &[f64], d: &[f64]) -> (f64, f64) {
    let mu: f64 = r.iter().zip(d).map(|(a, b)| a * b).sum();
    let v: f64 = r.iter().zip(d).map(|(a, b)| a * (b - mu).powi(2)).sum();
    (mu, v)
}

/// The full-KL terms of LOSS.md, written out directly: `(ld, exp, smooth)`.
/// `centre` is the target's (circular) mean, `step` the bin width, `floor` the variance
/// floor in bins².
pub fn reference_full_kl(
    p: &[f64],
    z: &[f64],
    centres: &[f64],
    step: f64,
    period: Option<f64>,
    centre: f64,
    floor: f64,
) -> (f64, f64, f64) {
    let q = softmax(z);
    let ld: f64 = p
        .iter()
        .zip(&q)
        .filter(|(pi, _)| **pi > 0.0)
        .map(|(pi, qi)| pi * (pi.ln() - qi.ln()))
        .sum();
    let d = offsets(centres, centre, step, period);
    let (mp, vp) = mean_var(p, &d);
    let (mq, vq) = mean_var(&q, &d);
    let (vp, vq) = (vp.max(floor), vq.max(floor));
    let exp = 0.5 * (vq / vp).ln() + (vp + (mp - mq).powi(2)) / (2.0 * vq) - 0.5;
    let k = q.len();
    let (a, b): (Vec<f64>, Vec<f64>) = match period {
        Some(_) => ((0..k).map(|i| q[(i + 1) % k]).collect(), q.clone()),
        None => {
            let sa: f64 = q[1..].iter().sum();
            let sb: f64 = q[..k - 1].iter().sum();
            (
                q[1..].iter().map(|x| x / sa).collect(),
                q[..k - 1].iter().map(|x| x / sb).collect(),
            )
        }
    };
    let smooth = 0.5
        * a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y) * (x.ln() - y.ln()))
            .sum::<f64>();
    (ld, exp, smooth)
}

/// A random distribution with all entries > 0.
pub fn random_pmf(rng: &mut ChaCha8Rng, k: usize) -> Vec<f64> {
    let w: Vec<f64> = (0..k).map(|_| rng.gen_range(0.05..1.0)).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|x| x / s).collect()
}

pub fn random_logits(rng: &mut ChaCha8Rng, k: usize, scale: f64) -> Vec<f64> {
    (0..k).map(|_| rng.gen_range(-scale..scale)).collect()
}

pub fn matrix(rows: &[Vec<f64>]) -> Tensor {
    let k = rows[0].len();
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), k), &Device::Cpu).unwrap()
}

/// One axis's targets built from `(batch, K)` target distributions alone (the target
/// value is each row's mean), as the per-axis losses take them.
pub fn pmf_targets(pmf: &Tensor, axis: &ldl::Axis) -> ldl::AxisTargets {
    ldl::AxisTargets::from_pmf(pmf, axis).unwrap()
}

/// All elements of a tensor of any rank, in row-major order, as f64.
pub fn to_vec(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Checks autograd's gradient of `f(logits)` (a scalar) against central differences.
/// Returns the largest relative error, measured against the gradient's largest entry.
pub fn gradient_check(logits: &[Vec<f64>], f: impl Fn(&Tensor) -> Tensor, h: f64) -> f64 {
    let var = Var::from_tensor(&matrix(logits)).unwrap();
    let value = f(var.as_tensor());
    let grads = value.backward().unwrap();
    let analytic = grads
        .get(var.as_tensor())
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let scale = analytic
        .iter()
        .flatten()
        .fold(1e-12f64, |m, g| m.max(g.abs()));
    let mut worst: f64 = 0.0;
    for b in 0..logits.len() {
        for k in 0..logits[0].len() {
            let mut plus = logits.to_vec();
            plus[b][k] += h;
            let mut minus = logits.to_vec();
            minus[b][k] -= h;
            let numeric = (scalar(&f(&matrix(&plus))) - scalar(&f(&matrix(&minus)))) / (2.0 * h);
            let error = (numeric - analytic[b][k]).abs() / scale;
            worst = worst.max(error);
        }
    }
    worst
}

pub fn assert_close(actual: f64, expected: f64, relative: f64, what: &str) {
    let tolerance = relative * expected.abs().max(1e-12);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: got {actual:.17e}, expected {expected:.17e} (relative tolerance {relative:e})"
    );
}

/// Every variable of a model's map, by name, as f32 values (sorted by name).
pub fn values_of(vars: &candle_nn::VarMap) -> Vec<(String, Vec<f32>)> {
    let data = vars.data().lock().unwrap();
    let mut named: Vec<(String, Vec<f32>)> = data
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// The roughness `S(r) = ½ Σ (a − b)(ln a − ln b)` of LOSS.md's smoothness term, with `a`
/// the distribution shifted by one bin and `b` itself (truncated to the `K − 1` shared
/// bins and renormalised on a linear axis, rotated on a circular one). Entries below the
/// smallest normal f32 are raised to it first, as `full-kl-rel` does for targets.
pub fn reference_roughness(r: &[f64], circular: bool) -> f64 {
    let r: Vec<f64> = r.iter().map(|x| x.max(f32::MIN_POSITIVE as f64)).collect();
    let k = r.len();
    let (a, b): (Vec<f64>, Vec<f64>) = if circular {
        ((0..k).map(|i| r[(i + 1) % k]).collect(), r.clone())
    } else {
        let upper: f64 = r[1..].iter().sum();
        let lower: f64 = r[..k - 1].iter().sum();
        (
            r[1..].iter().map(|x| x / upper).collect(),
            r[..k - 1].iter().map(|x| x / lower).collect(),
        )
    };
    0.5 * a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x.ln() - y.ln()))
        .sum::<f64>()
}

/// The terms of `full-kl-rel` written out directly: `(ld, exp, smooth_rel)`, with
/// `smooth_rel = ½ (ρ − ln ρ − 1)`, `ρ = S(q) / S(p)`, both roughnesses raised to at
/// least `smoothness_floor`. Arguments as [`reference_full_kl`].
#[allow(clippy::too_many_arguments)]
pub fn reference_full_kl_relative(
    p: &[f64],
    z: &[f64],
    centres: &[f64],
    step: f64,
    period: Option<f64>,
    centre: f64,
    floor: f64,
    smoothness_floor: f64,
) -> (f64, f64, f64) {
    let (ld, exp, _) = reference_full_kl(p, z, centres, step, period, centre, floor);
    let circular = period.is_some();
    let of_q = reference_roughness(&softmax(z), circular).max(smoothness_floor);
    let of_p = reference_roughness(p, circular).max(smoothness_floor);
    let ratio = of_q / of_p;
    (ld, exp, 0.5 * (ratio - ratio.ln() - 1.0))
}
