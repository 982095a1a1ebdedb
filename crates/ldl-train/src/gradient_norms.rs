//! Per-term gradient norms (`run.gradient_norms`): how hard each loss component pulls on
//! the output weights of its head and on the shared backbone, measured on one fixed batch.
//!
//! For every loss part `axis/component` (as logged: `age/ld`, `yaw/smooth`, `yaw/l1`) the
//! part's contribution to the total, `weight · value`, is backpropagated on its own, and
//! the L2 norm of its gradient is taken over the weight matrix of its head
//! (`heads.HEAD.weight`), over the weights of its head's linear path when it has one
//! (`heads.HEAD.linear_path.weight`) and over every trainable variable of the backbone. The gradient
//! of the total is the sum of the parts' gradients, so the norms show which term drives
//! each head and how the heads compete for the backbone. For an ensemble the loss is the
//! mixture's, and the norms are taken over every network's head and backbone together.

use std::collections::BTreeMap;

use candle_core::{backprop::GradStore, Tensor, Var};
use ldl_core::loss::Loss;
use ldl_core::LabelSpace;
use ldl_data::Batch;
use ldl_models::{network_local_name, Model};

use crate::error::{Error, Result};
use crate::records::GradientNorm;

/// The key under which the whole loss's gradient norms are reported, beside the parts.
pub const TOTAL_KEY: &str = "total";

/// The gradient norms of every loss part of `model` on `batch` (evaluation mode: no
/// dropout, BatchNorm's running statistics, nothing updated), by part key
/// (`axis/component`), and of the whole loss under [`TOTAL_KEY`], whose `head` is the
/// norm over the weight matrices of all heads.
pub fn gradient_norms(
    model: &Model,
    loss: &dyn Loss,
    space: &LabelSpace,
    batch: &Batch,
) -> Result<BTreeMap<String, GradientNorm>> {
    let logits = model.forward_t(&batch.inputs, false)?;
    let out = loss.compute(space, &logits, &batch.targets)?;
    let trainable = model.trainable_vars();
    // A head's variable `heads.HEAD.SUFFIX` in every network of an ensemble (one without).
    let of_heads = |suffix: &str| -> Vec<Vec<&Var>> {
        space
            .heads()
            .iter()
            .map(|head| {
                let name = format!("heads.{}.{suffix}", head.name());
                trainable
                    .iter()
                    .filter(|(n, _)| network_local_name(n) == name)
                    .map(|(_, v)| v)
                    .collect()
            })
            .collect()
    };
    let heads = of_heads("weight");
    if let Some(head) = heads.iter().position(Vec::is_empty) {
        let name = space.heads()[head].name();
        return Err(Error::Numeric(format!(
            "the model has no variable `heads.{name}.weight`"
        )));
    }
    let paths = of_heads("linear_path.weight");
    let backbone: Vec<&Var> = trainable
        .iter()
        .filter(|(name, _)| network_local_name(name).starts_with("backbone."))
        .map(|(_, v)| v)
        .collect();
    let mut norms = BTreeMap::new();
    // `None` where there are no path weights to measure.
    let path_norm = |grads: &GradStore, vars: &[&Var]| -> Result<Option<f64>> {
        match vars.is_empty() {
            true => Ok(None),
            false => norm_over(grads, vars).map(Some),
        }
    };
    for part in &out.parts {
        let head = part.head;
        let (Some(head_vars), Some(path_vars)) = (heads.get(head), paths.get(head)) else {
            return Err(Error::Numeric(format!(
                "loss part `{}` has no head",
                part.key()
            )));
        };
        let grads = part.value.affine(part.weight, 0.0)?.backward()?;
        let norm = GradientNorm {
            head: norm_over(&grads, head_vars)?,
            backbone: norm_over(&grads, &backbone)?,
            path: path_norm(&grads, path_vars)?,
        };
        norms.insert(part.key(), norm);
    }
    let grads = out.total.backward()?;
    let all_heads: Vec<&Var> = heads.iter().flatten().copied().collect();
    let all_paths: Vec<&Var> = paths.iter().flatten().copied().collect();
    norms.insert(
        TOTAL_KEY.to_string(),
        GradientNorm {
            head: norm_over(&grads, &all_heads)?,
            backbone: norm_over(&grads, &backbone)?,
            path: path_norm(&grads, &all_paths)?,
        },
    );
    Ok(norms)
}

/// `sqrt(Σ g²)` over the gradients of `vars` (a variable with no gradient counts 0), in f64.
fn norm_over(grads: &GradStore, vars: &[&Var]) -> Result<f64> {
    let mut sum = 0.0;
    for var in vars {
        if let Some(grad) = grads.get(var.as_tensor()) {
            sum += squared_sum(grad)?;
        }
    }
    Ok(sum.sqrt())
}

fn squared_sum(t: &Tensor) -> Result<f64> {
    let t = t.to_dtype(candle_core::DType::F64)?;
    Ok(t.sqr()?.sum_all()?.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use ldl_core::loss::{DldlV2, FullKl, Kl};
    use ldl_core::{Axis, Label};
    use ldl_models::BackboneConfig;

    /// Two axes (one head each) on a 3-feature MLP, and a batch of 4 rows.
    fn setup() -> (Model, LabelSpace, Batch) {
        let space = LabelSpace::new(vec![
            Axis::linear("a", 0.0, 6.0, 1.0).unwrap(),
            Axis::linear("b", 0.0, 40.0, 5.0).unwrap(),
        ])
        .unwrap();
        let model = Model::build(&BackboneConfig::mlp(3, [4]), &space, 7, &Device::Cpu).unwrap();
        let inputs = Tensor::new(
            &[
                [0.5f32, -1.0, 2.0],
                [1.5, 0.2, -0.3],
                [-0.7, 0.9, 0.1],
                [0.0, -0.4, 1.2],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let rows = [
            (1.0, 1.0, 5.0, 10.0),
            (2.5, 2.0, 20.0, 5.0),
            (4.0, 1.0, 33.0, 5.0),
            (5.5, 1.5, 12.0, 8.0),
        ];
        let samples: Vec<Vec<Label>> = rows
            .iter()
            .map(|&(a, sa, b, sb)| vec![Label::value_with_std(a, sa), Label::value_with_std(b, sb)])
            .collect();
        let targets = space.targets(&samples, DType::F32, &Device::Cpu).unwrap();
        let batch = Batch {
            inputs,
            targets,
            indices: vec![0, 1, 2, 3],
            rows: ldl_data::BatchRows::whole(4),
            network_inputs: Vec::new(),
        };
        (model, space, batch)
    }

    /// One part's batch value as a function of the model's current variables.
    fn part_value(
        model: &Model,
        loss: &dyn Loss,
        space: &LabelSpace,
        batch: &Batch,
        key: &str,
    ) -> f64 {
        let logits = model.forward_t(&batch.inputs, false).unwrap();
        let out = loss.compute(space, &logits, &batch.targets).unwrap();
        let part = out.parts.iter().find(|p| p.key() == key).unwrap();
        part.weight
            * part
                .value
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
    }

    /// The norm of the gradient of one part over one variable by central differences.
    fn finite_difference_norm(
        model: &Model,
        loss: &dyn Loss,
        space: &LabelSpace,
        batch: &Batch,
        key: &str,
        var_name: &str,
    ) -> f64 {
        let var = model
            .trainable_vars()
            .into_iter()
            .find(|(n, _)| n == var_name)
            .unwrap()
            .1;
        let original = var.as_tensor().copy().unwrap();
        let shape = original.shape().clone();
        let values: Vec<f32> = original.flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-2f32;
        let mut sum = 0.0;
        for i in 0..values.len() {
            let at = |delta: f32| {
                let mut moved = values.clone();
                moved[i] += delta;
                var.set(&Tensor::from_vec(moved, &shape, &Device::Cpu).unwrap())
                    .unwrap();
                part_value(model, loss, space, batch, key)
            };
            let d = (at(h) - at(-h)) / (2.0 * h as f64);
            sum += d * d;
        }
        var.set(&original).unwrap();
        sum.sqrt()
    }

    #[test]
    fn every_part_norm_matches_finite_differences() {
        let (model, space, batch) = setup();
        let loss = FullKl::default();
        let norms = gradient_norms(&model, &loss, &space, &batch).unwrap();
        for axis in ["a", "b"] {
            for component in ["ld", "exp", "smooth"] {
                let key = format!("{axis}/{component}");
                let head = format!("heads.{axis}.weight");
                let expected = finite_difference_norm(&model, &loss, &space, &batch, &key, &head);
                let got = norms[&key].head;
                assert!(
                    (got - expected).abs() <= 2e-3 * expected.max(1e-3),
                    "{key}: autograd {got}, finite differences {expected}"
                );
                let first = "backbone.layers.0.weight";
                if model.trainable_vars().iter().any(|(n, _)| n == first) {
                    assert!(norms[&key].backbone > 0.0, "{key} reaches the backbone");
                }
            }
        }
    }

    #[test]
    fn a_path_norm_matches_finite_differences_and_is_absent_without_a_path() {
        let (plain, space, batch) = setup();
        let loss = FullKl::default();
        let norms = gradient_norms(&plain, &loss, &space, &batch).unwrap();
        assert!(norms.values().all(|n| n.path.is_none()));
        let config = ldl_models::MlpConfig::new(3, [4]).with_linear_path();
        let model = Model::build(&config.into(), &space, 7, &Device::Cpu).unwrap();
        let norms = gradient_norms(&model, &loss, &space, &batch).unwrap();
        for key in ["a/ld", "a/exp", "b/exp"] {
            let axis = &key[..1];
            let path = format!("heads.{axis}.linear_path.weight");
            let expected = finite_difference_norm(&model, &loss, &space, &batch, key, &path);
            let got = norms[key].path.unwrap();
            assert!(
                (got - expected).abs() <= 2e-3 * expected.max(1e-3),
                "{key}: autograd {got}, finite differences {expected}"
            );
        }
        // The paths are disjoint like the heads: with one part per axis, the total's
        // norm is the root of the sum of the parts' squares.
        let kl = gradient_norms(&model, &Kl, &space, &batch).unwrap();
        let (a, b) = (kl["a/ld"].path.unwrap(), kl["b/ld"].path.unwrap());
        let total = kl[TOTAL_KEY].path.unwrap();
        let expected = (a * a + b * b).sqrt();
        assert!(
            (total - expected).abs() < 1e-6 * expected,
            "{total} {expected}"
        );
    }

    #[test]
    fn a_single_component_loss_has_the_total_norm() {
        let (model, space, batch) = setup();
        let norms = gradient_norms(&model, &Kl, &space, &batch).unwrap();
        let (a, b, total) = (norms["a/ld"], norms["b/ld"], norms[TOTAL_KEY]);
        // The heads are disjoint: the total's squared head norm is the sum of the parts'.
        let heads = (a.head.powi(2) + b.head.powi(2)).sqrt();
        assert!(
            (total.head - heads).abs() < 1e-6 * heads,
            "{total:?} {a:?} {b:?}"
        );
        // The backbone's gradients add as vectors: the triangle inequality bounds it.
        assert!(total.backbone <= a.backbone + b.backbone + 1e-9);
        assert!(total.backbone >= (a.backbone - b.backbone).abs() - 1e-9);
    }

    #[test]
    fn a_weighted_part_is_measured_with_its_weight() {
        let (model, space, batch) = setup();
        let one = gradient_norms(&model, &DldlV2::new(1.0).unwrap(), &space, &batch).unwrap();
        let three = gradient_norms(&model, &DldlV2::new(3.0).unwrap(), &space, &batch).unwrap();
        for axis in ["a", "b"] {
            let l1 = format!("{axis}/l1");
            let ld = format!("{axis}/ld");
            assert!((three[&l1].head - 3.0 * one[&l1].head).abs() < 1e-6 * three[&l1].head);
            assert!((three[&ld].head - one[&ld].head).abs() < 1e-9);
        }
    }

    #[test]
    fn nothing_is_updated() {
        let (model, space, batch) = setup();
        let before: Vec<Vec<f32>> = model
            .trainable_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        gradient_norms(&model, &FullKl::default(), &space, &batch).unwrap();
        let after: Vec<Vec<f32>> = model
            .trainable_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        assert_eq!(before, after);
    }
}
