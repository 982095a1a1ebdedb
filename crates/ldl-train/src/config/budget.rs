//! The memory budget: what a config will allocate, estimated from its numbers before
//! anything is built, and refused when it exceeds the limit.
//!
//! Every size a config sets is checked against a range, but the ranges are wide enough
//! that their products are not: an MLP of 64 layers 65,536 wide, an axis of 10⁷ bins, or
//! 2²⁴ synthetic faces each pass their own key's check, then abort on an allocation of
//! many GiB, or swap for minutes before the first epoch. A run that cannot fit should say
//! so at once, naming what to make smaller, so the check runs on the config's numbers
//! alone: it allocates nothing in proportion to what it estimates.
//!
//! # The estimate
//!
//! In bytes, each term on its own (the `*_BYTES` and `*_COPIES` constants say where each
//! factor comes from):
//!
//! | term | bytes |
//! |---|---|
//! | the model's `P` stored numbers | `20 · P`: f32 weights, gradients, Adam's two moments, a checkpoint being written |
//! | activations of one batch | `4 · B · A · ACTIVATION_COPIES`, `A` the numbers every layer outputs per sample (and, for an ensemble of `K` MLPs, `K` copies of the inputs) |
//! | targets and outputs of one batch | `4 · B · H · K · HEAD_COPIES`, `H` the outputs of all heads, `K` the networks of an ensemble (1 without) |
//! | image batches | `4 · B · 3 · S² · IMAGE_BATCHES` (image inputs) |
//! | the label space | `8` per bin centre |
//! | the synthetic faces | `FACE_BYTES` per face of `builtin:faces` |
//! | the table | `TABLE_COPIES` times the size of each table file |
//! | the program | `RUNTIME_BYTES` |
//!
//! The MLP's input width is known only once the table is read: [`Config::check`] counts
//! `data.features` (or one input), and the trainer checks again with the columns read,
//! before the model is built. A Hub dataset's size is unknown before it is fetched; the
//! Hub reader bounds what it loads on its own.
//!
//! It need not be exact; it must catch sizes that cannot fit without refusing the
//! configs that do. Against the maximum resident memory of real runs (`docs/config.md`
//! lists them) it comes within 15%: 16.3 MiB estimated for the bdims config, 17.3
//! measured; 1.6 GiB for 10⁶ bins, 1.9 GiB measured.
//!
//! # The limit
//!
//! `run.memory_limit` (e.g. `"24GiB"` or a number of bytes), else the environment
//! variable `LDL_MEMORY_LIMIT`, else [`DEFAULT_FRACTION`] of the machine's memory (the
//! smaller of `/proc/meminfo`'s `MemTotal` and the cgroup's `memory.max`, or
//! [`UNKNOWN_MEMORY`] where neither can be read).

use serde::{Deserialize, Serialize};

use super::{AxisBins, Backbone, Config, DataSource};
use crate::error::{Error, Result};

const KIB: u64 = 1 << 10;
const GIB: u64 = 1 << 30;

/// The part of the machine's memory a run may plan to use: the estimate counts what ldl
/// allocates, not the allocator's slack, the system or the other programs running, so a
/// quarter is kept back for them.
pub const DEFAULT_FRACTION: (u64, u64) = (3, 4);

/// The memory assumed where the machine's cannot be read: a common laptop's.
pub const UNKNOWN_MEMORY: u64 = 16 * GIB;

/// The environment variable that sets the limit when `run.memory_limit` does not.
pub const LIMIT_VAR: &str = "LDL_MEMORY_LIMIT";

/// Bytes per stored number of the model: f32 weights, their gradients, Adam's first and
/// second moments, and one more copy while a checkpoint is serialised.
const PARAMETER_BYTES: u128 = 5 * 4;

/// Copies of every layer output that a training step holds at once: the forward pass
/// keeps each layer's product, normalised and activated outputs for the backward pass,
/// and the backward pass holds gradients of the same sizes while it runs.
const ACTIVATION_COPIES: u128 = 6;

/// Copies of the heads' outputs a step holds: the logits, their log-softmax and softmax,
/// the target distributions, the loss's per-bin terms and the gradient of the logits,
/// with one more for the evaluation's batch.
const HEAD_COPIES: u128 = 8;

/// Image batches alive at once: the one trained on, two prefetched by the loader.
const IMAGE_BATCHES: u128 = 3;

/// Memory per face of `builtin:faces` before the first batch: the generated table's
/// text row and the parsed sample with its labels, origin and identity. Measured: the
/// quickstart config's maximum resident memory grows from 52 MiB at 8,000 faces to
/// 529 MiB at 2²⁰, 477 bytes a face (2²⁴ faces were reported at 7.2 GB, 430 a face).
const FACE_BYTES: u128 = 480;

/// A table file is read whole, then parsed into samples, whose numbers, labels and
/// origins take about twice the text's size.
const TABLE_COPIES: u128 = 3;

/// The program itself: code, candle's and the allocator's pools, thread stacks. The
/// bdims config, whose tensors are a few hundred KiB, peaks at 17 MiB resident.
const RUNTIME_BYTES: u128 = 16 << 20;

/// The most bins an axis may have; a larger one is left to the axis's own check.
const MAX_AXIS_BINS: f64 = 1e7;

/// A size in bytes, as `run.memory_limit` spells it: a number of bytes, or a number with
/// a unit (`"512MiB"`, `"24GiB"`, `"1.5TiB"`; `KB`, `MB`, `GB`, `TB` are powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "ByteText", into = "ByteText")]
pub struct ByteSize(pub u64);

/// How a config file may write a [`ByteSize`].
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ByteText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<ByteText> for ByteSize {
    type Error = String;

    fn try_from(text: ByteText) -> std::result::Result<ByteSize, String> {
        match text {
            ByteText::Bytes(bytes) => Ok(ByteSize(bytes)),
            ByteText::Text(text) => text.parse(),
        }
    }
}

impl From<ByteSize> for ByteText {
    fn from(size: ByteSize) -> ByteText {
        ByteText::Text(size.to_string())
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len());
        let (number, unit) = (text[..split].trim(), text[split..].trim());
        let scale: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => KIB,
            "mib" => KIB.pow(2),
            "gib" => KIB.pow(3),
            "tib" => KIB.pow(4),
            "kb" => 1000,
            "mb" => 1000u64.pow(2),
            "gb" => 1000u64.pow(3),
            "tb" => 1000u64.pow(4),
            _ => return Err(format!("`{text}`: use bytes or a unit such as \"24GiB\"")),
        };
        match number.parse::<f64>() {
            Ok(n) if n.is_finite() && n > 0.0 && n * scale as f64 <= u64::MAX as f64 => {
                Ok(ByteSize((n * scale as f64) as u64))
            }
            _ => Err(format!(
                "`{text}`: must be a positive size such as \"24GiB\""
            )),
        }
    }
}

impl std::fmt::Display for ByteSize {
    /// Exactly, in the largest binary unit that divides it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let units = [
            ("TiB", KIB.pow(4)),
            ("GiB", GIB),
            ("MiB", KIB.pow(2)),
            ("KiB", KIB),
        ];
        match units
            .iter()
            .find(|(_, s)| self.0 >= *s && self.0.is_multiple_of(*s))
        {
            Some((unit, scale)) => write!(f, "{}{unit}", self.0 / scale),
            None => write!(f, "{}", self.0),
        }
    }
}

/// One term of an [`Estimate`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Term {
    /// What it is, for the message.
    pub what: String,
    /// Its bytes.
    pub bytes: u128,
}

/// What a config will allocate, term by term.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Estimate {
    pub terms: Vec<Term>,
}

impl Estimate {
    /// The estimate of `config` with an MLP over `features` inputs.
    pub fn of(config: &Config, features: usize) -> Estimate {
        let heads = head_outputs(config);
        let batch = config.optim.batch_size as u128;
        let parameters = stored_numbers(config, features, heads);
        let mut terms = vec![
            Term {
                what: format!("the model's {parameters} parameters"),
                bytes: parameters.saturating_mul(PARAMETER_BYTES),
            },
            Term {
                what: "activations of one batch".into(),
                bytes: 4 * batch * layer_outputs(config, features) * ACTIVATION_COPIES,
            },
            Term {
                what: format!("targets and outputs of one batch over {heads} bins"),
                bytes: (4 * batch * heads * HEAD_COPIES).saturating_mul(network_count(config)),
            },
            Term {
                what: "the label space's bin centres".into(),
                bytes: 8 * axis_bins(config).iter().sum::<u128>(),
            },
            Term {
                what: "the program".into(),
                bytes: RUNTIME_BYTES,
            },
        ];
        if config.data.reads_images() {
            let side = config.data.image_size as u128;
            terms.push(Term {
                what: "image batches".into(),
                bytes: 4 * batch * 3 * side * side * IMAGE_BATCHES,
            });
        }
        terms.extend(table_term(config));
        Estimate { terms }
    }

    /// The sum of the terms.
    pub fn total(&self) -> u128 {
        self.terms.iter().map(|t| t.bytes).sum()
    }
}

/// The MLP's inputs as far as the config says before the table is read: the
/// `data.features` listed, or one.
pub(crate) fn declared_features(config: &Config) -> usize {
    config.data.features.as_ref().map_or(1, Vec::len)
}

/// Refuses `config` when its [`Estimate`] with `features` MLP inputs exceeds the limit,
/// with a message that names the largest terms, the estimate, the limit and what to
/// change.
pub(crate) fn check(config: &Config, features: usize) -> Result<()> {
    let limit = limit(config)?;
    let estimate = Estimate::of(config, features);
    let total = estimate.total();
    if total <= limit.bytes as u128 {
        return Ok(());
    }
    let mut terms = estimate.terms;
    terms.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    let largest: Vec<String> = terms
        .iter()
        .take(3)
        .map(|t| format!("{} {}", t.what, human(t.bytes)))
        .collect();
    Err(Error::Config(format!(
        "`run.memory_limit`: this run would take about {} ({}), more than the limit of {} \
         ({}); make it smaller (model.hidden or model.width, the axes' bins, \
         optim.batch_size, data.faces.count, data.image_size) or raise the limit with \
         run.memory_limit = \"{}\" or {LIMIT_VAR}",
        human(total),
        largest.join(", "),
        human(limit.bytes as u128),
        limit.source,
        ByteSize(total.min(u64::MAX as u128) as u64).rounded_up(),
    )))
}

/// The limit in force and where it came from.
pub(crate) struct Limit {
    pub bytes: u64,
    pub source: String,
}

/// `run.memory_limit`, else [`LIMIT_VAR`], else the default of [`physical_memory`].
pub(crate) fn limit(config: &Config) -> Result<Limit> {
    if let Some(size) = config.run.memory_limit {
        return Ok(Limit {
            bytes: size.0,
            source: "run.memory_limit".into(),
        });
    }
    if let Ok(text) = std::env::var(LIMIT_VAR) {
        let size: ByteSize = text
            .parse()
            .map_err(|e| Error::Config(format!("{LIMIT_VAR}: {e}")))?;
        return Ok(Limit {
            bytes: size.0,
            source: LIMIT_VAR.into(),
        });
    }
    let (memory, known) = match physical_memory() {
        Some(memory) => (memory, "this machine's"),
        None => (UNKNOWN_MEMORY, "unknown, taken as"),
    };
    Ok(Limit {
        bytes: default_limit(memory),
        source: format!("3/4 of the memory, {known} {}", human(memory as u128)),
    })
}

/// [`DEFAULT_FRACTION`] of `memory`.
pub(crate) fn default_limit(memory: u64) -> u64 {
    let (part, whole) = DEFAULT_FRACTION;
    (memory as u128 * part as u128 / whole as u128) as u64
}

/// The memory this process may use: `MemTotal`, lowered to a cgroup's `memory.max`.
fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let total = meminfo.as_deref().and_then(mem_total);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(total), Some(cgroup)) => Some(total.min(cgroup)),
        (total, cgroup) => total.or(cgroup),
    }
}

/// `MemTotal` of `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(KIB)
}

/// The bins of each axis, from the config's numbers (an axis the label space would
/// refuse counts 0: its own check reports it).
fn axis_bins(config: &Config) -> Vec<u128> {
    let steps = |span: f64, step: f64| {
        let steps = (span / step).round();
        if steps.is_finite() && (1.0..=MAX_AXIS_BINS).contains(&steps) {
            steps as u128
        } else {
            0
        }
    };
    let bins = |bins: &AxisBins| match bins {
        AxisBins::Linear { min, max, step } => match steps(max - min, *step) {
            0 => 0,
            n => n + 1,
        },
        AxisBins::Circular { period, step, .. } => steps(*period, *step),
        AxisBins::Categorical { classes } => classes.len() as u128,
    };
    config.task.axes.iter().map(|a| bins(&a.bins)).collect()
}

/// The outputs of all heads: one per bin of each axis outside joint groups, one per cell
/// of each joint grid (grids over the label space's bound are left to its check).
fn head_outputs(config: &Config) -> u128 {
    let bins = axis_bins(config);
    let position = |name: &String| config.task.axes.iter().position(|a| &a.name == name);
    let mut in_groups = vec![false; bins.len()];
    let mut total = 0u128;
    for group in &config.task.joint {
        let members: Vec<usize> = group.axes.iter().filter_map(position).collect();
        let cells = members.iter().try_fold(1u128, |cells, &m| {
            Some(cells * bins[m]).filter(|&c| c <= ldl_core::MAX_JOINT_BINS as u128)
        });
        total += cells.unwrap_or(0);
        members.iter().for_each(|&m| in_groups[m] = true);
    }
    total
        + (0..bins.len())
            .filter(|&a| !in_groups[a])
            .map(|a| bins[a])
            .sum::<u128>()
}

/// The model's stored numbers ([`ldl_models::BackboneConfig::stored_elements`] without a
/// label space): the backbone's, and a weight per feature and a bias per head output.
fn stored_numbers(config: &Config, features: usize, heads: u128) -> u128 {
    let Ok(backbone) = config.model.backbone_config(features) else {
        return 0;
    };
    let stored = match &backbone {
        ldl_models::BackboneConfig::Mlp(mlp) => mlp
            .stored_elements()
            .saturating_mul(mlp.trunk_count(head_count(config)) as u128),
        ldl_models::BackboneConfig::Vgg(vgg) => vgg.stored_elements(),
    };
    let heads = (backbone.output_features() as u128 + 1).saturating_mul(heads);
    let paths = match &backbone {
        ldl_models::BackboneConfig::Mlp(mlp) if mlp.linear_path => {
            (features as u128).saturating_mul(linear_path_statistics(config))
        }
        _ => 0,
    };
    // Every network of an ensemble has a backbone and heads of its own.
    stored
        .saturating_add(heads)
        .saturating_add(paths)
        .saturating_mul(backbone.networks() as u128)
}

/// The MLP's linear path's weights per input: one per linear axis of more than one bin,
/// two per circular axis, none for a categorical axis (`ldl_models::linear_path`; a joint
/// group's head holds its members').
fn linear_path_statistics(config: &Config) -> u128 {
    let bins = axis_bins(config);
    let statistics = |(axis, bins): (&super::AxisConfig, &u128)| match &axis.bins {
        AxisBins::Linear { .. } if *bins > 1 => 1,
        AxisBins::Circular { .. } => 2,
        _ => 0,
    };
    config.task.axes.iter().zip(&bins).map(statistics).sum()
}

/// How many heads the label space has: one per axis outside joint groups, one per group.
fn head_count(config: &Config) -> usize {
    let grouped: std::collections::BTreeSet<&String> =
        config.task.joint.iter().flat_map(|g| &g.axes).collect();
    let single = config
        .task
        .axes
        .iter()
        .filter(|a| !grouped.contains(&a.name))
        .count();
    single + config.task.joint.len()
}

/// How many networks the model trains side by side: an ensemble's, else 1.
fn network_count(config: &Config) -> u128 {
    config
        .model
        .backbone_config(1)
        .map_or(1, |backbone| backbone.networks() as u128)
}

/// How many MLPs the model builds (one per head with `model.trunk = "per-axis"`, times
/// the networks of an ensemble).
fn mlp_count(config: &Config) -> u128 {
    match config.model.backbone_config(1) {
        Ok(ldl_models::BackboneConfig::Mlp(mlp)) => {
            (mlp.trunk_count(head_count(config)) * mlp.ensemble) as u128
        }
        _ => 1,
    }
}

/// The numbers every layer of the backbone outputs for one sample: the MLP's inputs (one
/// copy per network of an ensemble, each with noise of its own) and widths, or each
/// convolution's channels times its feature map (halved by every pooling).
fn layer_outputs(config: &Config, features: usize) -> u128 {
    let model = &config.model;
    match model.backbone {
        Backbone::Mlp => {
            let hidden: u128 = model.hidden.iter().map(|&w| w as u128).sum();
            (features as u128).saturating_mul(network_count(config))
                + hidden.saturating_mul(mlp_count(config))
        }
        Backbone::TinyAgeNet | Backbone::ThinAgeNet => match model.backbone_config(0) {
            Ok(ldl_models::BackboneConfig::Vgg(vgg)) => {
                vgg.layer_outputs(config.data.image_size as usize)
            }
            _ => 0,
        },
    }
}

/// The in-memory table of the source: the synthetic faces, or the table files' sizes
/// (files that cannot be read are left to the reader's own message).
fn table_term(config: &Config) -> Option<Term> {
    let data = &config.data;
    if data.source == DataSource::Faces {
        return Some(Term {
            what: format!("{} synthetic faces", data.faces.count),
            bytes: data.faces.count as u128 * FACE_BYTES,
        });
    }
    let split = &data.split;
    let files = [
        Some(&data.source),
        split.validation_source.as_ref(),
        split.test_source.as_ref(),
    ];
    let bytes: u128 = files
        .into_iter()
        .flatten()
        .filter_map(|source| match source {
            DataSource::File(path) => std::fs::metadata(path).ok(),
            _ => None,
        })
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len() as u128 * TABLE_COPIES)
        .sum();
    (bytes > 0).then(|| Term {
        what: "the table".into(),
        bytes,
    })
}

/// `bytes` for a message: `17.2 GiB`, `512 MiB`.
fn human(bytes: u128) -> String {
    let units = [
        ("TiB", 1u128 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    match units.iter().find(|(_, scale)| bytes >= *scale) {
        Some((unit, scale)) => format!("{:.1} {unit}", bytes as f64 / *scale as f64),
        None => format!("{bytes} B"),
    }
}

impl ByteSize {
    /// This size rounded up to whole GiB (at least 1 GiB), for a suggested limit.
    fn rounded_up(self) -> ByteSize {
        ByteSize(self.0.div_ceil(GIB).max(1).saturating_mul(GIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config of `axes` (TOML `[[task.axes]]` entries) on a CSV, with `extra` keys.
    fn config(axes: &str, extra: &str) -> Config {
        let text = format!("[task]\nname = \"t\"\n{axes}\n[data]\nsource = \"t.csv\"\n{extra}\n");
        toml::from_str(&text).unwrap()
    }

    const AGE: &str = "[[task.axes]]\nname = \"age\"\nmin = 0\nmax = 100\nstep = 1";

    fn term(estimate: &Estimate, starts: &str) -> u128 {
        let found = estimate.terms.iter().find(|t| t.what.starts_with(starts));
        found.map_or(0, |t| t.bytes)
    }

    #[test]
    fn an_mlp_stores_its_parameters_in_f32_and_adam_holds_two_more() {
        let config = config(AGE, "[model]\nhidden = [64, 32]\n[optim]\nbatch_size = 8");
        let features = 10u128;
        // Weights and biases, BatchNorm's four vectors, then a head of 101 bins and its
        // linear path (a weight per feature).
        let parameters = (10 * 64 + 64 + 4 * 64) + (64 * 32 + 32 + 4 * 32) + (32 + 1) * 101 + 10;
        assert_eq!(stored_numbers(&config, 10, 101), parameters);
        let backbone = config.model.backbone_config(10).unwrap();
        let space = config.label_space().unwrap();
        assert_eq!(backbone.stored_elements(&space), parameters);
        let estimate = Estimate::of(&config, 10);
        // 4 bytes of weights, 4 of gradients, 2 × 4 of Adam's moments, 4 of a checkpoint.
        assert_eq!(
            term(&estimate, "the model's"),
            parameters * (4 + 4 + 2 * 4 + 4)
        );
        let widths = features + 64 + 32;
        assert_eq!(
            term(&estimate, "activations"),
            4 * 8 * widths * ACTIVATION_COPIES
        );
        assert_eq!(term(&estimate, "targets"), 4 * 8 * 101 * HEAD_COPIES);
        assert_eq!(term(&estimate, "the label space"), 8 * 101);
    }

    /// One MLP per axis stores, and outputs, as many times the numbers of one: the
    /// estimate counts what the model builds, whatever the trunk.
    #[test]
    fn one_mlp_per_axis_is_counted_once_per_head() {
        let axes = format!(
            "{AGE}\n[[task.axes]]\nname = \"yaw\"\nmin = -90\nmax = 90\nstep = 3\n\
             [[task.axes]]\nname = \"pitch\"\nmin = -60\nmax = 60\nstep = 3\n\
             [[task.joint]]\naxes = [\"yaw\", \"pitch\"]"
        );
        for trunk in ["per-axis", "shared"] {
            let config = config(
                &axes,
                &format!("[model]\nhidden = [16, 8]\ntrunk = \"{trunk}\""),
            );
            let space = config.label_space().unwrap();
            assert_eq!(space.heads().len(), 2);
            let backbone = config.model.backbone_config(5).unwrap();
            let outputs = head_outputs(&config);
            assert_eq!(
                stored_numbers(&config, 5, outputs),
                backbone.stored_elements(&space),
                "{trunk}"
            );
            let trunks = if trunk == "per-axis" { 2 } else { 1 };
            assert_eq!(layer_outputs(&config, 5), 5 + trunks * (16 + 8), "{trunk}");
        }
    }

    /// An ensemble stores and outputs what its networks do, each as much as one alone.
    #[test]
    fn an_ensemble_is_counted_once_per_network() {
        let axes = format!("{AGE}\n[[task.axes]]\nname = \"yaw\"\nmin = -90\nmax = 90\nstep = 3");
        let alone = config(&axes, "[model]\nhidden = [16, 8]");
        let ensemble = config(&axes, "[model]\nhidden = [16, 8]\nensemble = 3");
        let space = ensemble.label_space().unwrap();
        let outputs = head_outputs(&ensemble);
        let backbone = ensemble.model.backbone_config(5).unwrap();
        assert_eq!(
            stored_numbers(&ensemble, 5, outputs),
            backbone.stored_elements(&space)
        );
        assert_eq!(
            stored_numbers(&ensemble, 5, outputs),
            3 * stored_numbers(&alone, 5, outputs)
        );
        // Three copies of the inputs; two heads, one MLP per head, three networks.
        assert_eq!(layer_outputs(&ensemble, 5), 3 * 5 + 3 * 2 * (16 + 8));
        let targets = |config: &Config| term(&Estimate::of(config, 5), "targets");
        assert_eq!(targets(&ensemble), 3 * targets(&alone));
    }

    #[test]
    fn bins_counted_from_the_numbers_match_the_label_space() {
        let axes = format!(
            "{AGE}\n[[task.axes]]\nname = \"yaw\"\nkind = \"circular\"\nmin = -180\n\
             period = 360\nstep = 3\n[[task.axes]]\nname = \"pitch\"\nmin = -60\nmax = 60\n\
             step = 3\n[[task.axes]]\nname = \"mood\"\nkind = \"categorical\"\n\
             classes = [\"a\", \"b\"]"
        );
        let config = config(&axes, "");
        let space = config.label_space().unwrap();
        let lengths: Vec<u128> = space.axes().iter().map(|a| a.len() as u128).collect();
        assert_eq!(axis_bins(&config), lengths);
        assert_eq!(head_outputs(&config), 101 + 120 + 41 + 2);
        // The MLP's linear path (on by default) counted from the numbers as the model
        // counts it from the label space: 1 per linear axis, 2 per circular, 0 per class.
        let stored = |config: &Config, space: &ldl_core::LabelSpace| {
            let outputs = head_outputs(config);
            let backbone = config.model.backbone_config(5).unwrap();
            assert_eq!(
                stored_numbers(config, 5, outputs),
                backbone.stored_elements(space)
            );
        };
        assert_eq!(linear_path_statistics(&config), 1 + 2 + 1);
        stored(&config, &space);
        let joint = format!("{axes}\n[[task.joint]]\naxes = [\"yaw\", \"pitch\"]");
        let config = super::tests::config(&joint, "");
        let space = config.label_space().unwrap();
        let heads: u128 = space.heads().iter().map(|h| h.bins() as u128).sum();
        assert_eq!(head_outputs(&config), heads);
        assert_eq!(heads, 101 + 120 * 41 + 2);
        stored(&config, &space);
    }

    #[test]
    fn an_age_network_outputs_its_channels_times_its_feature_maps() {
        let c = ldl_models::VggConfig::tiny_age_net().base_channels as u128;
        // `[c, c, M, 2c, 2c, M, 4c×3, M, 8c×3, M, 8c×3, M]` on 32 × 32 images.
        let expected = 2 * c * 32 * 32
            + 2 * 2 * c * 16 * 16
            + 3 * 4 * c * 8 * 8
            + 3 * 8 * c * 4 * 4
            + 3 * 8 * c * 2 * 2;
        let vgg = ldl_models::VggConfig::tiny_age_net();
        assert_eq!(vgg.layer_outputs(32), expected);
        let config = config(
            AGE,
            "image_size = 32\nimage_column = \"path\"\n[model]\nbackbone = \"tiny-age-net\"\n\
             [optim]\nbatch_size = 4",
        );
        let estimate = Estimate::of(&config, 0);
        assert_eq!(
            term(&estimate, "activations"),
            4 * 4 * expected * ACTIVATION_COPIES
        );
        assert_eq!(
            term(&estimate, "image batches"),
            4 * 4 * 3 * 32 * 32 * IMAGE_BATCHES
        );
    }

    #[test]
    fn faces_count_their_table_and_an_axis_too_large_is_left_to_its_check() {
        let faces = "source = \"builtin:faces\"\n[data.faces]\ncount = 1000";
        let text = format!("[task]\nname = \"t\"\n{AGE}\n[data]\n{faces}\n");
        let config: Config = toml::from_str(&text).unwrap();
        assert_eq!(
            term(&Estimate::of(&config, 1), "1000 synthetic"),
            1000 * FACE_BYTES
        );
        let huge = "[[task.axes]]\nname = \"age\"\nmin = 0\nmax = 1e9\nstep = 1";
        assert_eq!(axis_bins(&super::tests::config(huge, "")), vec![0]);
    }

    #[test]
    fn the_default_limit_is_three_quarters_of_the_memory() {
        assert_eq!(default_limit(8 * GIB), 6 * GIB);
        let meminfo = "MemTotal:        8388608 kB\nMemFree:         1024 kB\n";
        assert_eq!(mem_total(meminfo), Some(8 * GIB));
        assert_eq!(mem_total("MemFree: 1 kB"), None);
    }

    #[test]
    fn sizes_read_with_or_without_a_unit_and_print_exactly() {
        let read = |text: &str| text.parse::<ByteSize>().map(|s| s.0);
        assert_eq!(read("24GiB"), Ok(24 * GIB));
        assert_eq!(read(" 1.5 GiB "), Ok(3 * GIB / 2));
        assert_eq!(read("2GB"), Ok(2_000_000_000));
        assert_eq!(read("1000"), Ok(1000));
        for bad in ["", "0", "-1GiB", "lots", "12 parsecs", "NaN GiB"] {
            assert!(read(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteSize(24 * GIB).to_string(), "24GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let config = config(AGE, "[run]\nmemory_limit = \"512MiB\"");
        assert_eq!(config.run.memory_limit, Some(ByteSize(512 << 20)));
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("memory_limit = \"512MiB\""), "{text}");
        let bytes = super::tests::config(AGE, "[run]\nmemory_limit = 4096");
        assert_eq!(bytes.run.memory_limit, Some(ByteSize(4096)));
    }
}
