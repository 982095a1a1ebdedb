//! Data for `ldl`: samples read from CSV and JSONL tables (feature columns or image
//! paths, one label per axis as a value with an optional std, a distribution or a class),
//! built-in datasets, train/validation/test splits that keep subjects together, feature
//! standardisation, and batches as tensors.
#![warn(missing_docs)]

mod batch_source;
mod builtin;
mod dataset;
mod encode;
mod error;
mod feature_noise;
mod formats;
mod image;
mod image_loader;
mod loader;
mod missing;
mod sample;
mod seeds;
mod split;
mod standardize;
mod synth;
mod table;

pub use batch_source::BatchSource;
pub use builtin::{builtin_csv, read_builtin, BUILTIN_DATASETS};
pub use dataset::{Dataset, IN_MEMORY};
pub use encode::{EncodedColumn, FeatureEncoder, UnseenCategory};
pub use error::{Error, Result};
pub use feature_noise::{FeatureNoise, MAX_FEATURE_NOISE};
pub use formats::{read_chalearn, read_dldl_list, read_utkface};
pub use image::{decode, decode_bytes, Augment, Geometry, ImagePipeline, RgbImage, MAX_IMAGE_SIDE};
pub use image_loader::{ImageBatches, ImageLoader, LabelEffects};
pub use ldl_distributed::{BatchRows, Shard};
pub use loader::{Batch, FeatureLoader};
pub use missing::Missing;
pub use sample::{FeatureValue, Input, Sample, SampleOrigin};
pub use seeds::mix as mix_seed;
pub use split::{split_by_column, split_by_fractions, SplitNames, Splits};
pub use standardize::Standardizer;
pub use synth::{
    face_labels, read_synthetic_faces, render, write_synthetic_set, FaceLabels, SynthConfig,
    SynthFace, FACE_COLUMNS, MAX_FACES,
};
pub use table::{
    parse_csv, parse_jsonl, read_csv, read_feature_cells, read_feature_rows, read_jsonl, read_rows,
    AxisColumns, Cell, InputColumns, LabelColumns, OnBadSample, Rows, SkippedSample, Table,
    TableSpec,
};
