//! Finding a NaN or an infinity the step it appears: in the loss (named by axis and
//! part), in the gradients (named by variable), and in the weights after an epoch.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};

/// What is wrong with a batch's loss, if anything: the total and every non-finite part
/// by axis and part (`axis `age`, part `ld` = NaN`).
pub(crate) fn loss_problem(total: f64, parts: &[(String, f64)]) -> Option<String> {
    if total.is_finite() {
        return None;
    }
    let bad: Vec<String> = parts
        .iter()
        .filter(|(_, v)| !v.is_finite())
        .map(|(key, v)| match key.split_once('/') {
            Some((axis, part)) => format!("axis `{axis}`, part `{part}` = {v}"),
            None => format!("part `{key}` = {v}"),
        })
        .collect();
    // A few parts name the place; all of them would make a line too long to read.
    const SHOWN: usize = 3;
    Some(match bad.len() {
        // Every part is finite: their weighted sum overflowed.
        0 => format!("the loss is {total}: the weighted sum of finite parts overflowed"),
        n if n <= SHOWN => format!("the loss is {total}: {}", bad.join(", ")),
        n => format!(
            "the loss is {total}: {} and {} more parts",
            bad[..SHOWN].join(", "),
            n - SHOWN
        ),
    })
}

/// The first gradient (in `vars` order) or BatchNorm running statistic (updated by the
/// forward pass; in `statistics` order) that holds a NaN or an infinity, named.
///
/// Cheap: per tensor `t − t` (0 where finite, NaN where not) summed, and all the sums
/// fetched from the device at once.
pub(crate) fn step_problem(
    grads: &GradStore,
    vars: &[(String, Var)],
    statistics: &[(String, Var)],
) -> Result<Option<String>> {
    let gradients = vars.iter().filter_map(|(name, var)| {
        let grad = grads.get(var.as_tensor())?;
        Some((format!("the gradient of `{name}`"), grad))
    });
    let statistics = statistics
        .iter()
        .map(|(name, var)| (format!("the BatchNorm statistic `{name}`"), var.as_tensor()));
    let mut names = Vec::new();
    let mut sums = Vec::new();
    for (name, tensor) in gradients.chain(statistics) {
        // `t − t`: 0 where finite, NaN where not.
        sums.push(tensor.sub(tensor)?.sum_all()?.to_dtype(DType::F32)?);
        names.push(name);
    }
    if sums.is_empty() {
        return Ok(None);
    }
    let sums = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
    Ok(sums
        .iter()
        .position(|s| !s.is_finite())
        .map(|i| format!("{} is not finite", names[i])))
}

/// The BatchNorm running statistics among `vars`, by name.
pub(crate) fn running_statistics(vars: &candle_nn::VarMap) -> Result<Vec<(String, Var)>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| Error::Numeric("the variable map's lock is poisoned".into()))?;
    let mut found: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, _)| ldl_models::is_running_statistic(name))
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Copies of the BatchNorm running statistics, which a forward pass in training mode
/// updates: a skipped batch must not leave its NaN in them.
pub(crate) struct RunningStats(Vec<(Var, Tensor)>);

impl RunningStats {
    /// Copies `statistics` (deep copies: `Var::set` writes in place).
    pub fn save(statistics: &[(String, Var)]) -> Result<RunningStats> {
        let saved = statistics
            .iter()
            .map(|(_, var)| Ok((var.clone(), var.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        Ok(RunningStats(saved))
    }

    /// Puts the copies back.
    pub fn restore(&self) -> Result<()> {
        for (var, value) in &self.0 {
            var.set(value)?;
        }
        Ok(())
    }
}

/// Every variable, BatchNorm statistics included, must stay finite.
pub(crate) fn check_state(vars: &candle_nn::VarMap, epoch: usize, kept: &str) -> Result<()> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| Error::Numeric("the variable map's lock is poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let values = data[name]
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::Numeric(format!(
                "epoch {epoch}: `{name}` holds {bad}; {kept}"
            )));
        }
    }
    Ok(())
}

/// Adam's moments must stay finite too: a gradient that is finite but larger than about
/// 1.8e19 has an infinite square, and an infinite second moment silently freezes its
/// weight (every later update of it is 0) and is saved with the optimiser's state.
pub(crate) fn check_moments(
    adam: &crate::adam::Adam,
    names: &[String],
    epoch: usize,
    kept: &str,
) -> Result<()> {
    let moments = [
        ("first", &adam.first_moments),
        ("second", &adam.second_moments),
    ];
    for (kind, tensors) in moments {
        for (name, tensor) in names.iter().zip(tensors.iter()) {
            let values = tensor
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::Numeric(format!(
                    "epoch {epoch}: Adam's {kind} moment of `{name}` holds {bad} (a gradient \
                     too large to square in f32); {kept}; lower optim.lr or standardise the \
                     inputs"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A gradient of 1e20 is finite, so the step is taken, but its square is not: the
    /// second moment is infinite, which the end-of-epoch check names.
    #[test]
    fn an_infinite_adam_moment_is_found() {
        let device = Device::Cpu;
        let weight = Var::new(&[1.0f32, 1.0], &device).unwrap();
        let loss = weight
            .as_tensor()
            .affine(1e20, 0.0)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let vars = [("w".to_string(), weight.clone())];
        assert_eq!(step_problem(&grads, &vars, &[]).unwrap(), None);
        let mut adam = crate::adam::Adam::new(vec![weight], 0.1, 0.0).unwrap();
        let names = ["w".to_string()];
        check_moments(&adam, &names, 1, "kept").unwrap();
        adam.step(&grads).unwrap();
        let err = check_moments(&adam, &names, 1, "kept")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("epoch 1: Adam's second moment of `w` holds inf"),
            "{err}"
        );
    }

    #[test]
    fn a_non_finite_loss_names_axis_and_part() {
        assert_eq!(loss_problem(1.5, &[("age/ld".into(), 1.5)]), None);
        let parts = [
            ("age/ld".to_string(), f64::NAN),
            ("age/exp".to_string(), 0.5),
        ];
        assert_eq!(
            loss_problem(f64::NAN, &parts).unwrap(),
            "the loss is NaN: axis `age`, part `ld` = NaN"
        );
        let overflow = loss_problem(f64::INFINITY, &[("age/ld".into(), 1e308)]).unwrap();
        assert!(overflow.contains("overflowed"), "{overflow}");
    }

    /// `sqrt` at 0: a finite loss whose gradient is infinite.
    #[test]
    fn a_non_finite_gradient_names_the_variable() {
        let device = Device::Cpu;
        let fine = Var::new(&[1.0f32, 2.0], &device).unwrap();
        let edge = Var::new(&[0.0f32, 1.0], &device).unwrap();
        let loss = (fine.as_tensor().sqr().unwrap().sum_all().unwrap()
            + edge.as_tensor().sqrt().unwrap().sum_all().unwrap())
        .unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        let grads = loss.backward().unwrap();
        let vars = [
            ("fine".to_string(), fine.clone()),
            ("edge".to_string(), edge),
        ];
        assert_eq!(
            step_problem(&grads, &vars, &[]).unwrap().unwrap(),
            "the gradient of `edge` is not finite"
        );
        assert_eq!(step_problem(&grads, &vars[..1], &[]).unwrap(), None);
        let statistic = Var::new(&[1.0f32, f32::INFINITY], &device).unwrap();
        let statistics = [("bn.running_var".to_string(), statistic)];
        assert_eq!(
            step_problem(&grads, &vars[..1], &statistics)
                .unwrap()
                .unwrap(),
            "the BatchNorm statistic `bn.running_var` is not finite"
        );
    }
}
