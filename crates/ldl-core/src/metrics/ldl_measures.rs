//! The six label-distribution measures, with PyLDL's conventions.
//!
//! Each function compares one target distribution `u` with one predicted distribution
//! `v`. Where a log or a ratio needs it (Clark, Canberra, KL), both are first clipped to
//! `[ε, 1]` with `ε = 2.22e-16` (`f64::EPSILON`, numpy's `finfo(float64).eps`), as PyLDL
//! does. Logs are natural.

use serde::{Deserialize, Serialize};

/// The clipping floor PyLDL uses: the machine epsilon of f64.
pub const LDL_EPSILON: f64 = f64::EPSILON;

fn clip(x: f64) -> f64 {
    x.clamp(LDL_EPSILON, 1.0)
}

/// Chebyshev distance `max_k |u_k − v_k|` (lower is better).
pub fn chebyshev(u: &[f64], v: &[f64]) -> f64 {
    u.iter()
        .zip(v)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// Clark distance `sqrt(Σ (u − v)² / (u + v)²)` on clipped inputs (lower is better).
pub fn clark(u: &[f64], v: &[f64]) -> f64 {
    u.iter()
        .zip(v)
        .map(|(a, b)| {
            let (a, b) = (clip(*a), clip(*b));
            (a - b).powi(2) / (a + b).powi(2)
        })
        .sum::<f64>()
        .sqrt()
}

/// Canberra distance `Σ |u − v| / (u + v)` on clipped inputs (lower is better).
pub fn canberra(u: &[f64], v: &[f64]) -> f64 {
    u.iter()
        .zip(v)
        .map(|(a, b)| {
            let (a, b) = (clip(*a), clip(*b));
            (a - b).abs() / (a + b)
        })
        .sum()
}

/// Kullback-Leibler divergence `KL(u ‖ v) = Σ u (ln u − ln v)` on clipped inputs
/// (lower is better).
pub fn kl_divergence(u: &[f64], v: &[f64]) -> f64 {
    u.iter()
        .zip(v)
        .map(|(a, b)| {
            let (a, b) = (clip(*a), clip(*b));
            a * (a.ln() - b.ln())
        })
        .sum()
}

/// Cosine similarity `Σ u v / (‖u‖ ‖v‖)` (higher is better).
pub fn cosine(u: &[f64], v: &[f64]) -> f64 {
    let dot: f64 = u.iter().zip(v).map(|(a, b)| a * b).sum();
    let norm_u = u.iter().map(|a| a * a).sum::<f64>().sqrt();
    let norm_v = v.iter().map(|b| b * b).sum::<f64>().sqrt();
    dot / (norm_u * norm_v)
}

/// Intersection similarity `Σ min(u, v)`, computed as `1 − ½ Σ |u − v|` as PyLDL does
/// (equal for distributions; higher is better).
pub fn intersection(u: &[f64], v: &[f64]) -> f64 {
    1.0 - 0.5 * u.iter().zip(v).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// The six measures, averaged over samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LdlMeasures {
    /// ↓
    pub chebyshev: f64,
    /// ↓
    pub clark: f64,
    /// ↓
    pub canberra: f64,
    /// ↓
    pub kl_divergence: f64,
    /// ↑
    pub cosine: f64,
    /// ↑
    pub intersection: f64,
}

impl LdlMeasures {
    /// The six measures for one pair of distributions.
    pub fn between(target: &[f64], predicted: &[f64]) -> LdlMeasures {
        LdlMeasures {
            chebyshev: chebyshev(target, predicted),
            clark: clark(target, predicted),
            canberra: canberra(target, predicted),
            kl_divergence: kl_divergence(target, predicted),
            cosine: cosine(target, predicted),
            intersection: intersection(target, predicted),
        }
    }

    pub(crate) fn add(&mut self, other: &LdlMeasures) {
        self.chebyshev += other.chebyshev;
        self.clark += other.clark;
        self.canberra += other.canberra;
        self.kl_divergence += other.kl_divergence;
        self.cosine += other.cosine;
        self.intersection += other.intersection;
    }

    pub(crate) fn scaled(&self, factor: f64) -> LdlMeasures {
        LdlMeasures {
            chebyshev: self.chebyshev * factor,
            clark: self.clark * factor,
            canberra: self.canberra * factor,
            kl_divergence: self.kl_divergence * factor,
            cosine: self.cosine * factor,
            intersection: self.intersection * factor,
        }
    }
}
