//! One interface over the two loaders, so that a training loop reads a split's batches
//! without knowing whether they come from feature vectors or from image files.

use crate::error::Result;
use crate::image_loader::ImageLoader;
use crate::loader::{Batch, FeatureLoader};
use crate::SkippedSample;

/// A split's batches, epoch by epoch: [`FeatureLoader`] over feature vectors,
/// [`ImageLoader`] over image files.
///
/// ```
/// # use ldl_data::*;
/// # use ldl_core::{Axis, LabelSpace};
/// let space = LabelSpace::new(vec![Axis::linear("age_years", 18.0, 67.0, 1.0)?])?;
/// let spec = TableSpec::new(InputColumns::Features(vec!["hip_gi".into()]))
///     .with_label("age_years", LabelColumns::Value { value: "age_years".into(), std: None });
/// let table = read_builtin("bdims", &spec, &space, OnBadSample::Error)?;
/// let source: Box<dyn BatchSource> = Box::new(FeatureLoader::new(&table.samples, &space, 100)?);
/// assert_eq!(source.batches(), 6); // 507 samples: 5 full batches and one of 7
/// assert_eq!(source.epoch(0).count(), source.batches());
/// assert!(source.skipped().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait BatchSource {
    /// How many batches an epoch has.
    fn batches(&self) -> usize;

    /// The batches of epoch `epoch` (its shuffle and augmentation), in order.
    fn epoch(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<Batch>> + '_>;

    /// The samples left out so far because they could not be prepared
    /// ([`crate::OnBadSample::Skip`]), each once, in sample order.
    fn skipped(&self) -> Vec<SkippedSample>;
}

impl BatchSource for FeatureLoader<'_> {
    fn batches(&self) -> usize {
        FeatureLoader::batches(self)
    }

    fn epoch(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        Box::new(FeatureLoader::epoch(self, epoch))
    }

    /// None: feature rows are checked when the table is read, before any batch.
    fn skipped(&self) -> Vec<SkippedSample> {
        Vec::new()
    }
}

impl BatchSource for ImageLoader {
    fn batches(&self) -> usize {
        ImageLoader::batches(self)
    }

    fn epoch(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        Box::new(ImageLoader::epoch(self, epoch))
    }

    fn skipped(&self) -> Vec<SkippedSample> {
        ImageLoader::skipped(self)
    }
}
