//! The check step: a parsed [`Config`] becomes a [`CheckedConfig`] once, carrying what the
//! check built, so that training and evaluation never validate or parse again.

use std::sync::Arc;

use ldl_core::loss::{Loss, PerAxis};
use ldl_core::LabelSpace;
use ldl_data::TableSpec;
use ldl_models::BackboneConfig;

use super::keyword::Keyword;
use super::{Backbone, Config, LossConfig, LossKind, Monitor, Trunk};
use crate::error::{Error, Result};

/// Whether [`Config::check_as`] checks the memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Refuse a config whose estimate exceeds the limit.
    Check,
    /// Leave the budget to the trainer.
    Skip,
}

/// A config whose every key was checked, with the label space, loss, backbone and column
/// spec it describes. Read the config's keys through it (it dereferences to [`Config`]);
/// to change one, take [`CheckedConfig::into_config`], change it and check again.
#[derive(Clone)]
pub struct CheckedConfig {
    config: Config,
    space: LabelSpace,
    loss: Arc<dyn Loss>,
    backbone: BackboneConfig,
    table_spec: TableSpec,
}

impl Config {
    /// Checks what serde cannot (ranges, combinations, names against the axes) and builds
    /// what the config describes. Every error names its key (`optim.lr`,
    /// `task.joint[0].axes`) and what to change.
    ///
    /// Before the label space or anything else in proportion to the config's sizes is
    /// built, the memory the run would take is estimated from its numbers and refused
    /// when over `run.memory_limit` (see `budget.rs`).
    pub fn check(self) -> Result<CheckedConfig> {
        self.check_as(Budget::Check)
    }

    /// [`Config::check`], with the memory budget checked or not: a config `ldl` saved is
    /// read again to inspect a run or to predict, which allocates no training state; a
    /// resumed run is checked by the trainer.
    pub(crate) fn check_as(mut self, budget: Budget) -> Result<CheckedConfig> {
        // Saved with the run, the resolved value keeps meaning the same if the default
        // changes.
        self.model.trunk = Some(self.model.trunk());
        self.data.feature_noise = Some(self.data.feature_noise());
        self.model.head_init = Some(self.model.head_init());
        self.model.linear_path = Some(self.model.linear_path());
        self.task.check_name()?;
        self.check_precision()?;
        self.data.check(&self.task)?;
        self.optim.check()?;
        let backbone = self.model.backbone_config(0)?;
        self.check_inputs_fit_backbone()?;
        let table_spec = self.data.check_inputs()?;
        self.check_run()?;
        // The MLP's inputs are counted again once the table is read (`trainer.rs`).
        if budget == Budget::Check {
            super::budget::check(&self, super::budget::declared_features(&self))?;
        }
        let space = self.task.label_space()?;
        let monitor = self.monitor_for(&space)?;
        monitor.check(&space)?;
        self.run.monitor = Some(monitor);
        let loss = self.build_loss(&space)?.into();
        Ok(CheckedConfig {
            config: self,
            space,
            loss,
            backbone,
            table_spec,
        })
    }

    /// `[loss]`, with the axes that name a loss of their own (`task.axes[].loss`) given
    /// it: the kind with `[loss]`'s parameters when the kinds agree, else its defaults.
    fn build_loss(&self, space: &LabelSpace) -> Result<Box<dyn Loss>> {
        let default = self.loss.build(space)?;
        let own: Vec<(&str, LossKind)> = self
            .task
            .axes
            .iter()
            .filter_map(|axis| axis.loss.map(|kind| (axis.name.as_str(), kind)))
            .collect();
        if own.is_empty() {
            return Ok(default);
        }
        let mut loss = PerAxis::boxed(default);
        for (axis, kind) in own {
            let config = if kind == self.loss.kind() {
                self.loss.clone()
            } else {
                LossConfig::of_kind(kind)
            };
            loss = loss.with_axis_boxed(axis, config.build(space)?);
        }
        loss.check(space)
            .map_err(|e| Error::Config(format!("`task.axes[].loss`: {e}")))?;
        Ok(Box::new(loss))
    }

    /// bf16 on a CPU is refused here; other devices are checked when opened.
    fn check_precision(&self) -> Result<()> {
        // With NCCL the device is the rank's GPU, whatever `run.device` says.
        let on_gpu = self.run.distributed == super::run::Distributed::Nccl;
        if self.run.device.trim() != "cpu" || on_gpu {
            return Ok(());
        }
        match super::precision_refusal(self.run.precision, &candle_core::Device::Cpu) {
            Some(refused) => Err(Error::Config(format!("`run.precision`: {refused}"))),
            None => Ok(()),
        }
    }

    /// An image network needs image inputs, the MLP feature columns.
    fn check_inputs_fit_backbone(&self) -> Result<()> {
        let backbone = self.model.backbone;
        if backbone.reads_images() == self.data.reads_images() {
            return Ok(());
        }
        let message = if backbone.reads_images() {
            format!("`{backbone}` reads images; set data.image_column or an image format")
        } else {
            "`mlp` reads feature columns, but the data are images; use tiny-age-net or \
             thin-age-net"
                .into()
        };
        Err(Error::Config(format!("`model.backbone`: {message}")))
    }

    /// `run.monitor` as set, or its default: `per-axis` for the MLP whose axes share no
    /// weights (one trunk per axis, or one axis), else `loss`. A per-axis monitor of axes
    /// that share weights is refused.
    fn monitor_for(&self, space: &LabelSpace) -> Result<Monitor> {
        let heads = space.heads().len();
        let mlp = self.model.backbone == Backbone::Mlp;
        let separate = heads == 1 || (mlp && self.model.trunk() == Trunk::PerAxis);
        match &self.run.monitor {
            None if mlp && separate => Ok(Monitor::PerAxis),
            None => Ok(Monitor::Loss),
            Some(Monitor::PerAxis) if !separate => Err(Error::Config(format!(
                "`run.monitor = \"per-axis\"` takes each axis's weights from the epoch of its \
                 own best validation figure, which needs axes that share no weights (the MLP \
                 with `model.trunk = \"per-axis\"`), but these axes share the {} network: \
                 monitor `loss` or one axis (`AXIS/mae`, `AXIS/accuracy`)",
                self.model.backbone.name()
            ))),
            Some(monitor) => Ok(monitor.clone()),
        }
    }

    /// `run.patience` and `run.eval_every`.
    fn check_run(&self) -> Result<()> {
        if self.run.patience == Some(0) {
            return Err(Error::Config(
                "`run.patience`: must be ≥ 1 (or left out to train every epoch)".into(),
            ));
        }
        if self.run.eval_every == 0 {
            return Err(Error::Config("`run.eval_every`: must be ≥ 1".into()));
        }
        Ok(())
    }
}

impl CheckedConfig {
    /// The config as checked.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config, to change and check again.
    pub fn into_config(self) -> Config {
        self.config
    }

    /// The label space of `[task]`.
    pub fn space(&self) -> &LabelSpace {
        &self.space
    }

    /// The loss of `[loss]` for that label space.
    pub fn loss(&self) -> &dyn Loss {
        self.loss.as_ref()
    }

    /// The loss's config.
    pub fn loss_config(&self) -> &LossConfig {
        &self.config.loss
    }

    /// The backbone of `[model]`, for inputs of `features` features (the MLP's input
    /// width; the image networks ignore it).
    pub fn backbone(&self, features: usize) -> BackboneConfig {
        let mut backbone = self.backbone.clone();
        if let BackboneConfig::Mlp(mlp) = &mut backbone {
            mlp.inputs = features;
        }
        backbone
    }

    /// The column spec of `[data]` (for table sources).
    pub fn table_spec(&self) -> &TableSpec {
        &self.table_spec
    }
}

impl std::ops::Deref for CheckedConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

impl std::fmt::Debug for CheckedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CheckedConfig").field(&self.config).finish()
    }
}
