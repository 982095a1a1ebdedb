//! Ensembles of MLPs (`MlpConfig::ensemble`): several networks of the same sizes, trained
//! side by side from different initial weights, whose predicted distributions are averaged.
//!
//! On a few hundred rows, what one MLP predicts depends on where its weights started; the
//! average of several such networks varies less, which is why deep ensembles
//! (Lakshminarayanan et al., 2017) predict better than their members and report wider
//! uncertainty where the members disagree. For label distributions the average is a
//! mixture: its mean is the members' mean, and its variance adds the spread of the members'
//! means to their own variances. `docs/benchmarks.md` has the measured effect on the
//! tabular data sets.
//!
//! | | one network (`ensemble = 1`) | an ensemble of `K` |
//! |---|---|---|
//! | variables | `backbone.…`, `heads.<head>.…` | `ensemble.<k>.backbone.…`, `ensemble.<k>.heads.<head>.…` |
//! | training (`Model::forward_networks_rows`) | the loss of the logits | each network its own loss on the batch (with feature noise, on its own noisy copy of the rows); their sum is differentiated, so every network gets the gradient it would get alone |
//! | evaluation, prediction, ONNX | the softmax of the logits | the mean of the networks' softmaxes; `Model::forward_t` returns its log |
//!
//! A model of one network has the names, seeds and noise it had before ensembles existed,
//! and its checkpoint's header does not mention them, so its checkpoints are unchanged.

use candle_core::{Tensor, D};

use crate::error::{Error, Result};

/// The most networks an ensemble may have: enough for any accuracy gain (the gain of an
/// average of `K` flattens as `1/K`), few enough that a typo cannot ask for a model of
/// thousands of copies.
pub const MAX_NETWORKS: usize = 64;

/// The name prefix of network `index` of `networks`: none for a model of one network,
/// `ensemble.<index>` for an ensemble.
pub(crate) fn network_prefix(index: usize, networks: usize) -> Option<String> {
    (networks > 1).then(|| format!("ensemble.{index}"))
}

/// The name of variable `local` (`heads.age.bias`) in network `index` of `networks`.
pub(crate) fn network_variable(index: usize, networks: usize, local: &str) -> String {
    match network_prefix(index, networks) {
        Some(prefix) => format!("{prefix}.{local}"),
        None => local.to_string(),
    }
}

/// `(k, the rest)` for a name that starts with `ensemble.<k>.`.
fn split_network(name: &str) -> Option<(usize, &str)> {
    let (index, local) = name.strip_prefix("ensemble.")?.split_once('.')?;
    let digits = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
    Some((index.parse().ok().filter(|_| digits)?, local))
}

/// A variable's name within its network: `name` without a leading `ensemble.<k>.`.
///
/// ```
/// use ldl_models::network_local_name;
/// assert_eq!(network_local_name("ensemble.3.heads.age.weight"), "heads.age.weight");
/// assert_eq!(network_local_name("heads.age.weight"), "heads.age.weight");
/// ```
pub fn network_local_name(name: &str) -> &str {
    split_network(name).map_or(name, |(_, local)| local)
}

/// How many networks the variables named `names` make: one more than the largest `k` of
/// an `ensemble.<k>.` prefix, or 1 when no name has one.
///
/// ```
/// use ldl_models::ensemble::network_count;
/// assert_eq!(network_count(["ensemble.0.heads.age.bias", "ensemble.4.heads.age.bias"]), 5);
/// assert_eq!(network_count(["heads.age.bias"]), 1);
/// ```
pub fn network_count<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .filter_map(|name| split_network(name).map(|(index, _)| index))
        .max()
        .map_or(1, |largest| largest.saturating_add(1))
}

/// The dropout seed of network `index`: the model's seed for the first (as without an
/// ensemble), a different stream for each other.
pub(crate) fn network_seed(seed: u64, index: usize) -> u64 {
    // An odd constant other than the one that separates a network's trunks, so that
    // network 1's first trunk and network 0's second do not share a stream.
    seed.wrapping_add((index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The logits of the networks' mixture, per head: `log(mean_k softmax(logits_k))`,
/// computed as `logsumexp_k(log_softmax(logits_k)) − ln K` so that no probability
/// underflows. Their softmax is the mixture itself, so the losses, metrics and decoders
/// read them as any logits. `networks[k][h]` is network `k`'s `(N, bins)` logits of head
/// `h`.
pub(crate) fn mixture_logits(networks: &[Vec<Tensor>]) -> Result<Vec<Tensor>> {
    let Some(first) = networks.first() else {
        return Err(Error::Config("an ensemble of no networks".into()));
    };
    if networks.len() == 1 {
        return Ok(first.clone());
    }
    let shift = -(networks.len() as f64).ln();
    (0..first.len())
        .map(|head| {
            let log_probabilities = networks
                .iter()
                .map(|logits| candle_nn::ops::log_softmax(&logits[head], D::Minus1))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let stacked = Tensor::stack(&log_probabilities, 0)?;
            Ok(stacked.log_sum_exp(0)?.affine(1.0, shift)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The mixture's softmax equals the mean of the networks' softmaxes, computed here in
    /// f64 from the definition.
    #[test]
    fn the_mixture_logits_give_the_mean_of_the_networks_distributions() -> Result<()> {
        let rows = [
            [[2.0f32, -1.0, 0.5], [0.0, 0.0, 0.0]],
            [[-3.0, 4.0, 1.0], [10.0, -10.0, 0.0]],
            [[0.1, 0.2, 0.3], [-50.0, 50.0, 0.0]],
        ];
        let networks: Vec<Vec<Tensor>> = rows
            .iter()
            .map(|logits| Ok(vec![Tensor::new(logits, &Device::Cpu)?]))
            .collect::<Result<_>>()?;
        let mixture = mixture_logits(&networks)?;
        let got = candle_nn::ops::softmax(&mixture[0], D::Minus1)?.to_vec2::<f32>()?;
        for row in 0..2 {
            let mut expected = [0.0f64; 3];
            for logits in &rows {
                let exps: Vec<f64> = logits[row].iter().map(|&v| (v as f64).exp()).collect();
                let total: f64 = exps.iter().sum();
                for (bin, e) in exps.iter().enumerate() {
                    expected[bin] += e / total / rows.len() as f64;
                }
            }
            for bin in 0..3 {
                let gap = (got[row][bin] as f64 - expected[bin]).abs();
                assert!(gap < 1e-6, "row {row} bin {bin}: {gap}");
            }
        }
        Ok(())
    }

    #[test]
    fn one_network_is_its_own_mixture() -> Result<()> {
        let logits = Tensor::new(&[[1.0f32, 2.0, 3.0]], &Device::Cpu)?;
        let mixture = mixture_logits(&[vec![logits.clone()]])?;
        assert_eq!(mixture[0].to_vec2::<f32>()?, logits.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn local_names_strip_only_an_ensemble_prefix() {
        assert_eq!(
            network_local_name("ensemble.12.backbone.age.layers.0.bn.weight"),
            "backbone.age.layers.0.bn.weight"
        );
        // An axis may be called `ensemble`: only `ensemble.<digits>.` is a prefix.
        assert_eq!(
            network_local_name("heads.ensemble.weight"),
            "heads.ensemble.weight"
        );
        assert_eq!(network_local_name("ensemble.x.weight"), "ensemble.x.weight");
    }
}
