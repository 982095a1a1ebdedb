//! The declarative task config: a TOML file with `[task]`, `[data]`, `[model]`, `[loss]`,
//! `[optim]` and `[run]`. Every section but `[task]` and `[data]` has defaults; unknown
//! keys are refused with the nearest valid key suggested. `docs/config.md` documents
//! every key.
//!
//! A [`Config`] is what the file says, in types: every choice among names is an enum
//! ([`Backbone`], [`LossConfig`], [`DataFormat`], [`Monitor`], the precision), every
//! default stated once, in the section's `Default` (or, for `[data]`, beside its field).
//! [`Config::check`] turns it into a [`CheckedConfig`] once: the ranges and
//! combinations serde cannot check, and what they build (the label space, the loss,
//! the backbone, the column spec). Training takes only a checked config, so nothing
//! downstream validates again.
//!
//! | module | section |
//! |---|---|
//! | `task.rs` | `[task]`: the name, axes and joint groups → the label space |
//! | `axis.rs` | `[[task.axes]]`: one axis, its bins by kind |
//! | `data.rs` | `[data]`: source, format, columns, splits, faces, Hub |
//! | `model.rs` | `[model]`: the backbone |
//! | `loss.rs` | `[loss]`: the loss with its own parameters |
//! | `optim.rs` | `[optim]`: Adam and the step schedule |
//! | `run.rs` | `[run]`: seed, device, outputs, monitor |
//! | `labels.rs` | `[data.labels]`: each axis's label columns |
//! | `source.rs` | `data.source`: built-in, Hub or a file |
//! | `checked.rs` | the check step and what it builds |
//! | `budget.rs` | the memory a config would take, estimated before anything is built |
//! | `text.rs` | reading a file, `--set` overrides, toml's messages |
//! | `keyword.rs` | values spelled as one of a fixed set of names |

mod axis;
pub(crate) mod budget;
mod checked;
mod data;
pub(crate) mod keyword;
mod labels;
mod loss;
mod model;
mod optim;
mod run;
mod source;
mod task;
mod text;

use serde::{Deserialize, Serialize};

pub use axis::{AxisBins, AxisConfig, AxisKindName};
pub use budget::ByteSize;
pub use checked::CheckedConfig;
pub use data::{
    DataConfig, DataFormat, FacesConfig, HubDataConfig, SplitConfig, DEFAULT_FEATURE_NOISE,
    MAX_LOADER_THREADS,
};
pub use loss::{LossConfig, LossKind};
pub use model::{Backbone, HeadInit, ModelConfig, Trunk};
pub use optim::{OnNonFinite, OptimConfig};
pub(crate) use run::precision_refusal;
pub use run::{Distributed, Monitor, RunConfig};
pub use source::DataSource;
pub(crate) use source::Source;
pub use task::{JointConfig, TaskConfig};

use crate::error::Result;

/// A whole task config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The label space.
    pub task: TaskConfig,
    /// Where the samples come from and how they split.
    pub data: DataConfig,
    /// The network.
    #[serde(default)]
    pub model: ModelConfig,
    /// The loss.
    #[serde(default)]
    pub loss: LossConfig,
    /// The optimiser and schedule.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Seed, device, outputs.
    #[serde(default)]
    pub run: RunConfig,
}

impl Config {
    /// A config for `task` and `data` with every other section at its defaults (set
    /// `model`, `loss`, `optim` and `run` afterwards, then [`Config::check`] it). For
    /// building configs in code; see `examples/age_headpose.rs`.
    pub fn new(task: TaskConfig, data: DataConfig) -> Config {
        Config {
            task,
            data,
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            run: RunConfig::default(),
        }
    }

    /// The label space of `[task]`.
    pub fn label_space(&self) -> Result<ldl_core::LabelSpace> {
        self.task.label_space()
    }

    /// The column spec of `[data]`.
    pub fn table_spec(&self) -> Result<ldl_data::TableSpec> {
        self.data.table_spec()
    }

    /// The loss in words: `[loss]`'s kind, then each axis's own (`full-kl, kl on rating`).
    pub fn loss_description(&self) -> String {
        let mut text = self.loss.kind().to_string();
        for axis in &self.task.axes {
            if let Some(kind) = axis.loss {
                text.push_str(&format!(", {kind} on {}", axis.name));
            }
        }
        text
    }
}
