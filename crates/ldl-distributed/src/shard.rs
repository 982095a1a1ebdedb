//! Which samples of a global batch a rank trains on.

use std::ops::Range;

/// A rank's part of every global batch: the global batch (per-rank batch × world size,
/// cut from the epoch's seeded order exactly as one process would cut its batches) split
/// into `world` contiguous parts whose sizes differ by at most one.
///
/// ```
/// use ldl_distributed::Shard;
/// let second = Shard { rank: 1, world: 2 };
/// assert_eq!(second.range(64), 32..64);
/// assert_eq!(second.range(5), 2..5); // a last, partial global batch
/// assert_eq!(Shard { rank: 0, world: 4 }.range(2), 0..0); // fewer samples than ranks
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank, `0..world`.
    pub rank: usize,
    /// How many ranks share each batch.
    pub world: usize,
}

impl Shard {
    /// The whole batch: one process.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };

    /// The positions this rank takes in a global batch of `n` samples.
    pub fn range(&self, n: usize) -> Range<usize> {
        let world = self.world.max(1);
        (self.rank * n / world)..((self.rank + 1) * n / world)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shards_of_a_batch_cover_it_once_in_order() {
        for world in 1..=5 {
            for n in 0..=23 {
                let ranges: Vec<Range<usize>> = (0..world)
                    .map(|rank| Shard { rank, world }.range(n))
                    .collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[world - 1].end, n);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                let (low, high) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(high - low <= 1, "{world} ranks, {n} samples: {sizes:?}");
            }
        }
    }
}
