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

    /// Where this rank's part of a global batch of `n` samples sits in it.
    pub fn rows(&self, n: usize) -> BatchRows {
        BatchRows {
            start: self.range(n).start,
            global: n,
        }
    }
}

/// Where the rows of a rank's batch sit in their global batch: rows `start..start + n`
/// of `global`. A model that draws something per row (dropout masks) draws it for all
/// `global` rows in the order one process would and keeps this part's, so that the ranks
/// together draw exactly what one process draws.
///
/// ```
/// use ldl_distributed::{BatchRows, Shard};
/// assert_eq!(BatchRows::whole(32), BatchRows { start: 0, global: 32 });
/// assert_eq!(Shard { rank: 1, world: 2 }.rows(5), BatchRows { start: 2, global: 5 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRows {
    /// The position of the part's first row in the global batch.
    pub start: usize,
    /// The size of the global batch.
    pub global: usize,
}

impl BatchRows {
    /// A batch of `rows` rows that is its own global batch (one process).
    pub fn whole(rows: usize) -> BatchRows {
        BatchRows {
            start: 0,
            global: rows,
        }
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
