//! SyncBN's sums over the ranks, as the model asks for them (`ldl_models::CrossRankSum`),
//! from the trainer's collective.

use std::sync::Arc;

use ldl_distributed::Collective;
use ldl_models::{CrossRankSum, SharedSum};

/// BatchNorm's statistics and gradient sums summed over the ranks of `collective`.
pub(crate) fn batch_norm_sums(collective: &Arc<dyn Collective>) -> SharedSum {
    Arc::new(CollectiveSum(Arc::clone(collective)))
}

struct CollectiveSum(Arc<dyn Collective>);

impl CrossRankSum for CollectiveSum {
    fn sum(&self, values: &mut [f64]) -> std::result::Result<(), String> {
        self.0.all_reduce_sum_f64(values).map_err(|e| e.to_string())
    }
}
