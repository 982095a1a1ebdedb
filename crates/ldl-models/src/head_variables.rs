//! Which variables belong to which head. In a model whose heads share no weights (an MLP
//! with one trunk per head) each head is a model of its own, so a checkpoint may hold
//! each head's variables from a different epoch (the trainer's per-axis best epoch).

use crate::model::Model;

impl Model {
    /// The names of each head's variables, in the order of
    /// [`ldl_core::LabelSpace::heads`], when every variable belongs to exactly one head:
    /// a model of one head, or an MLP with one trunk per head (the trunk, the output layer
    /// and the linear path of the head, in every network of an ensemble). `None` when
    /// heads share weights: one trunk under several heads, or an image network.
    ///
    /// ```
    /// use candle_core::Device;
    /// use ldl_core::{Axis, LabelSpace};
    /// use ldl_models::{BackboneConfig, MlpConfig, Model};
    ///
    /// let space = LabelSpace::new(vec![
    ///     Axis::linear("age", 0.0, 10.0, 1.0)?,
    ///     Axis::linear("height", 0.0, 10.0, 1.0)?,
    /// ])?;
    /// let per_head = MlpConfig::new(3, [4]).with_separate_trunks();
    /// let model = Model::build(&per_head.into(), &space, 1, &Device::Cpu)?;
    /// let heads = model.variables_by_head().unwrap();
    /// assert_eq!(heads[0], [
    ///     "backbone.age.layers.0.bias", "backbone.age.layers.0.weight",
    ///     "heads.age.bias", "heads.age.weight",
    /// ]);
    /// let shared = Model::build(&BackboneConfig::mlp(3, [4]), &space, 1, &Device::Cpu)?;
    /// assert!(shared.variables_by_head().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn variables_by_head(&self) -> Option<Vec<Vec<String>>> {
        let heads = self.label_space().heads();
        let mut names: Vec<String> = {
            let data = match self.vars().data().lock() {
                Ok(data) => data,
                Err(poisoned) => poisoned.into_inner(),
            };
            data.keys().cloned().collect()
        };
        names.sort();
        if heads.len() == 1 {
            return Some(vec![names]);
        }
        let mut by_head = vec![Vec::new(); heads.len()];
        for name in names {
            let local = crate::ensemble::network_local_name(&name);
            let mut owners = heads
                .iter()
                .enumerate()
                .filter(|(_, head)| owns(head.name(), local));
            match (owners.next(), owners.next()) {
                (Some((index, _)), None) => by_head[index].push(name),
                // Shared by every head (one trunk), or a name that reads two ways.
                _ => return None,
            }
        }
        Some(by_head)
    }
}

/// Whether the network-local variable `local` is one of head `head`'s own: its output
/// layer (`heads.<head>.weight`, `.bias`), its linear path (`heads.<head>.linear_path.weight`)
/// or a variable of its trunk (`backbone.<head>.layers.…`).
fn owns(head: &str, local: &str) -> bool {
    let under = |prefix: &str| {
        local
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(head))
            .and_then(|rest| rest.strip_prefix('.'))
    };
    if let Some(rest) = under("heads.") {
        return matches!(rest, "weight" | "bias" | "linear_path.weight");
    }
    under("backbone.").is_some_and(crate::mlp::is_variable_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackboneConfig, MlpConfig};
    use candle_core::Device;
    use ldl_core::{Axis, LabelSpace};

    fn space(names: &[&str]) -> LabelSpace {
        let axes = names
            .iter()
            .map(|name| Axis::linear(*name, 0.0, 4.0, 1.0).unwrap())
            .collect();
        LabelSpace::new(axes).unwrap()
    }

    #[test]
    fn every_variable_of_an_ensemble_with_batch_norm_and_paths_has_one_head() {
        // `a` is a prefix of `a.layers`: names are read by what follows the head's name.
        let space = space(&["a", "a.layers", "b"]);
        let config = MlpConfig::new(2, [3, 3])
            .with_batch_norm()
            .with_separate_trunks()
            .with_ensemble(2)
            .with_linear_path();
        let model = Model::build(&config.into(), &space, 1, &Device::Cpu).unwrap();
        let heads = model.variables_by_head().unwrap();
        let total: usize = heads.iter().map(Vec::len).sum();
        assert_eq!(total, model.vars().all_vars().len());
        // Per network: two layers of (weight, bias, 4 BatchNorm vectors), the output
        // layer's weight and bias, and the path.
        for names in &heads {
            assert_eq!(names.len(), 2 * (2 * 6 + 3), "{names:?}");
        }
        assert!(heads[0].contains(&"ensemble.1.backbone.a.layers.1.bn.running_var".into()));
        assert!(heads[1].contains(&"ensemble.0.backbone.a.layers.layers.0.weight".into()));
        assert!(heads[2].contains(&"ensemble.0.heads.b.linear_path.weight".into()));
    }

    #[test]
    fn a_single_head_owns_everything_even_in_an_image_network() {
        let space = space(&["age"]);
        let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 1, &Device::Cpu).unwrap();
        let heads = model.variables_by_head().unwrap();
        assert_eq!(heads.len(), 1);
        assert_eq!(heads[0].len(), model.vars().all_vars().len());
        let two = self::space(&["age", "yaw"]);
        let shared = Model::build(&BackboneConfig::tiny_age_net(), &two, 1, &Device::Cpu).unwrap();
        assert!(shared.variables_by_head().is_none());
    }
}
