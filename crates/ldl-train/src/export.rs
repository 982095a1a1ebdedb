//! A trained run as a model folder to share: `model.safetensors`, `ldl.toml` and a model
//! card `README.md` (the layout a model repository uses), optionally with `model.onnx`;
//! or a checkpoint as `model.onnx` with its card.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ldl_core::files::{read_bounded, FileKind};
use serde_json::Value;

use crate::axis_table::AxisTable;
use crate::config::{AxisBins, Backbone, Config, DataSource};
use crate::error::{Error, Result};
use crate::export_onnx::{onnx_bytes, onnx_section, ONNX_FILE};
use crate::records::RunSummary;
use crate::run_folder::RunFolder;
use crate::trained::TrainedModel;

/// The files [`export_run`] writes, in order: the layout of an ldl model repository on the
/// Hub.
pub const MODEL_FILES: [&str; 3] = ldl_hub::MODEL_FILES;

/// Writes the model folder of the finished run in `run_dir` into `out_dir`:
/// - `model.safetensors`: the best checkpoint (weights, BatchNorm statistics, and in its
///   header the label space, model config, training config and feature standardisation:
///   `ldl predict`, `ldl eval` and `ldl inspect` take it as it is);
/// - `ldl.toml`: the task's label space and model config, for people and tools that read
///   the folder without ldl;
/// - `README.md`: a model card (task, axes with units, model, data, results, how it was
///   trained and how to use it).
///
/// Local paths are not written: data files appear by file name only, `model.init_from`
/// and `data.images` are dropped, and the output folder becomes `runs` (in the
/// checkpoint's stored config too).
///
/// Files of those names already in `out_dir` are replaced only with
/// [`IfExists::Replace`]; otherwise the export is refused before anything is written.
pub fn export_run(run_dir: &Path, out_dir: &Path, if_exists: IfExists) -> Result<Vec<PathBuf>> {
    let onnx = false;
    export_run_with(run_dir, out_dir, ExportOptions { if_exists, onnx })
}

/// The run folder's best checkpoint, or an error that says what `run_dir` is instead: a
/// path that does not exist, a file (a checkpoint exports with `--onnx`), or a folder
/// without one.
fn best_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    let checkpoint = run_dir.join("checkpoints/best.safetensors");
    if checkpoint.is_file() {
        return Ok(checkpoint);
    }
    let shown = run_dir.display();
    let what = if !run_dir.exists() {
        format!("{shown} does not exist; give the run folder `ldl train` printed (runs/NAME-N)")
    } else if run_dir.is_file() {
        format!(
            "{shown} is a file, not a run folder; export the run folder `ldl train` wrote, \
             or give --onnx to export this checkpoint file alone"
        )
    } else {
        format!(
            "{shown} has no checkpoints/best.safetensors; export a run folder written by \
             `ldl train` (it writes the checkpoint after the first epoch), or give --onnx to \
             export a checkpoint file"
        )
    };
    Err(Error::Usage(what))
}

/// [`export_run`] with a choice of formats: with [`ExportOptions::onnx`] the folder gets
/// `model.onnx` too (see [`crate::ONNX_FILE`]), and its card says how to prepare the
/// input and read the outputs.
pub fn export_run_with(
    run_dir: &Path,
    out_dir: &Path,
    options: ExportOptions,
) -> Result<Vec<PathBuf>> {
    let checkpoint = best_checkpoint(run_dir)?;
    let run = RunFolder::new(run_dir).read()?;
    let summary = run.finished()?;
    // The checkpoint must load: a corrupt one is refused here, not by the people using it.
    let (_, info) = ldl_models::read_checkpoint(&checkpoint, &candle_core::Device::Cpu)?;

    let mut files: Vec<&str> = MODEL_FILES.to_vec();
    if options.onnx {
        files.push(ONNX_FILE);
    }
    if options.if_exists == IfExists::Refuse {
        refuse_to_replace(out_dir, &files)?;
    }

    let config = shareable(&run.config);
    let config_text = toml::to_string(&config)
        .map_err(|e| Error::Usage(format!("cannot describe the config as TOML: {e}")))?;
    let mut card = model_card(&config, summary, &info.version);
    // Built before anything is written, so that a model ONNX cannot describe leaves no
    // partial folder.
    let onnx = if options.onnx {
        let trained = TrainedModel::load(&checkpoint, &candle_core::Device::Cpu)?;
        card.push_str(&onnx_section(&trained));
        Some(onnx_bytes(&trained, &config_text)?)
    } else {
        None
    };
    create_folder(out_dir)?;
    let bytes = read_bounded(&checkpoint, FileKind::Checkpoint)
        .map_err(|e| Error::output(&checkpoint, e.problem))?;
    let bytes = with_header_entry(&bytes, "train.config", &config_text)
        .map_err(|why| Error::Usage(format!("{}: {why}", checkpoint.display())))?;
    let model_path = out_dir.join(MODEL_FILES[0]);
    crate::output::write_atomically(&model_path, &bytes)?;

    let description = Description {
        task: config.task.clone(),
        model: config.model.clone(),
        image_size: config.data.reads_images().then_some(config.data.image_size),
    };
    let mut toml_text = String::from(
        "# The label space and model of model.safetensors (whose header holds the same).\n",
    );
    toml_text.push_str(
        &toml::to_string_pretty(&description)
            .map_err(|e| Error::Usage(format!("cannot describe the model as TOML: {e}")))?,
    );
    let toml_path = out_dir.join(MODEL_FILES[1]);
    crate::output::write_atomically(&toml_path, toml_text.as_bytes())?;

    let mut written = vec![model_path, toml_path];
    if let Some(onnx) = onnx {
        let onnx_path = out_dir.join(ONNX_FILE);
        crate::output::write_atomically(&onnx_path, &onnx)?;
        written.push(onnx_path);
    }
    // The card last: a folder with a card is a complete one.
    let card_path = out_dir.join(MODEL_FILES[2]);
    crate::output::write_atomically(&card_path, card.as_bytes())?;
    written.push(card_path);
    Ok(written)
}

/// Writes `model.onnx` and a model card `README.md` for a checkpoint that is not in a run
/// folder: a training checkpoint, the `model.safetensors` of a model folder, or a Hub path
/// `hf://owner/name` (downloaded first). The card describes the task's axes and the ONNX
/// file's input and outputs; results and training details live with the run, not here.
pub fn export_checkpoint_onnx(
    checkpoint: &Path,
    out_dir: &Path,
    if_exists: IfExists,
) -> Result<Vec<PathBuf>> {
    let trained = TrainedModel::load(checkpoint, &candle_core::Device::Cpu)?;
    let files = [ONNX_FILE, MODEL_FILES[2]];
    if if_exists == IfExists::Refuse {
        refuse_to_replace(out_dir, &files)?;
    }
    let config = shareable(trained.config.config());
    let config_text = toml::to_string(&config)
        .map_err(|e| Error::Usage(format!("cannot describe the config as TOML: {e}")))?;
    let onnx = onnx_bytes(&trained, &config_text)?;
    let mut card = card_title(&config.task.name, &trained.info.version);
    let source = checkpoint.file_name().unwrap_or(checkpoint.as_os_str());
    let _ = writeln!(
        card,
        "Exported from the checkpoint `{}`.\n",
        source.to_string_lossy()
    );
    card.push_str(&axes_section(&config));
    card.push_str(&onnx_section(&trained));

    create_folder(out_dir)?;
    let onnx_path = out_dir.join(ONNX_FILE);
    crate::output::write_atomically(&onnx_path, &onnx)?;
    let card_path = out_dir.join(MODEL_FILES[2]);
    crate::output::write_atomically(&card_path, card.as_bytes())?;
    Ok(vec![onnx_path, card_path])
}

/// What [`export_run`] writes besides the model folder, and what it does with files
/// already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Files of the model folder already in the output folder: refused or replaced.
    pub if_exists: IfExists,
    /// Also write `model.onnx`, and describe it in the card.
    pub onnx: bool,
}

fn create_folder(out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir).map_err(|e| {
        Error::output(
            out_dir,
            format!("cannot create the model folder ({e}); give --out a folder you can write"),
        )
    })
}

/// What [`export_run`] does with files of the model folder that are already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Refuse the export, naming them.
    Refuse,
    /// Replace them (`ldl export --force`).
    Replace,
}

/// An error naming those of `files` already in `out_dir`, if there are any.
fn refuse_to_replace(out_dir: &Path, files: &[&str]) -> Result<()> {
    let present: Vec<&str> = files
        .iter()
        .copied()
        .filter(|file| out_dir.join(file).symlink_metadata().is_ok())
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} already holds {}; give --force to replace them, or choose another --out",
        out_dir.display(),
        present.join(", ")
    )))
}

/// What `ldl.toml` holds.
#[derive(serde::Serialize)]
struct Description {
    task: crate::config::TaskConfig,
    model: crate::config::ModelConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_size: Option<u32>,
}

/// The config without this machine's paths.
fn shareable(config: &Config) -> Config {
    let mut config = config.clone();
    config.data.source = source_name(&config.data.source);
    for file in [
        &mut config.data.split.validation_source,
        &mut config.data.split.test_source,
    ]
    .into_iter()
    .flatten()
    {
        *file = source_name(file);
    }
    config.data.images = None;
    config.model.init_from = None;
    config.run.output_dir = PathBuf::from("runs");
    config
}

/// A safetensors file with one metadata entry replaced: the header is rewritten, the
/// tensor bytes (addressed relative to the header's end) are kept as they are.
fn with_header_entry(bytes: &[u8], key: &str, value: &str) -> std::result::Result<Vec<u8>, String> {
    let corrupt = || "not a valid safetensors file".to_string();
    let length: [u8; 8] = bytes
        .get(..8)
        .ok_or_else(corrupt)?
        .try_into()
        .map_err(|_| corrupt())?;
    let length = usize::try_from(u64::from_le_bytes(length)).map_err(|_| corrupt())?;
    let header = bytes.get(8..8 + length).ok_or_else(corrupt)?;
    let mut header: Value = serde_json::from_slice(header).map_err(|_| corrupt())?;
    let metadata = header
        .get_mut("__metadata__")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| "the checkpoint has no metadata".to_string())?;
    metadata.insert(key.to_string(), Value::String(value.to_string()));
    let mut text = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // The format pads the header with spaces to a multiple of 8 bytes.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - length);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + length..]);
    Ok(out)
}

/// The data source as a model card names it: a built-in name, or a file name without
/// its local folder.
fn source_name(source: &DataSource) -> DataSource {
    match source {
        DataSource::File(path) => match path.file_name() {
            Some(name) => DataSource::File(name.into()),
            None => source.clone(),
        },
        other => other.clone(),
    }
}

/// The model card: what the model estimates, how it was trained, its results, how to use
/// it.
fn model_card(config: &Config, summary: &RunSummary, version: &str) -> String {
    let mut card = card_title(&config.task.name, version);
    card.push_str(&axes_section(config));
    card.push_str(&training_section(config, summary));
    card.push_str("\n## Results\n\n");
    card.push_str(&AxisTable::of_run(summary).markdown());
    let _ = writeln!(
        card,
        "\n## Use\n\n```sh\nldl predict model.safetensors {}\nldl inspect model.safetensors\n```\n\n\
         ## Training\n\nTrained by `ldl train` with the loss, optimiser, epochs and seed \
         above; the checkpoint's header holds the whole training config (seed {}), so the \
         same data on the same device trains the same model.",
        if config.data.reads_images() {
            "photos/ face.jpg"
        } else {
            "rows.csv"
        },
        config.run.seed
    );
    card
}

/// The card's title and first paragraph.
fn card_title(task: &str, version: &str) -> String {
    format!(
        "# {task}\n\nA label distribution learning model trained with ldl {version}: one \
         distribution over discretised bins per axis, decoded to a mean, a std and a mode.\n\n"
    )
}

/// The axes: kind, unit and range of each.
fn axes_section(config: &Config) -> String {
    let mut out = String::from("## Axes\n\n| axis | kind | unit | range |\n|---|---|---|---|\n");
    for axis in &config.task.axes {
        let range = match &axis.bins {
            AxisBins::Linear { min, max, step } => format!("{min} to {max}, step {step}"),
            AxisBins::Circular { period, step, .. } => format!("period {period}, step {step}"),
            AxisBins::Categorical { classes } => classes.join(", "),
        };
        let kind = axis.bins.kind();
        let _ = writeln!(out, "| {} | {kind} | {} | {range} |", axis.name, axis.unit);
    }
    out
}

/// The model, loss, optimiser and data, and how the run went.
fn training_section(config: &Config, summary: &RunSummary) -> String {
    let model = &config.model;
    let path = if model.linear_path() {
        " and a linear path from the features to each axis's location"
    } else {
        ""
    };
    let backbone = match model.backbone {
        Backbone::Mlp if model.ensemble > 1 => format!(
            "an ensemble of {} MLPs, hidden layers {:?}{path}, whose distributions are averaged",
            model.ensemble, model.hidden
        ),
        Backbone::Mlp => format!("MLP, hidden layers {:?}{path}", model.hidden),
        other => format!(
            "{other}, width {}, inputs {}×{} RGB",
            model.width, config.data.image_size, config.data.image_size
        ),
    };
    let [train, validation, test] = summary.samples;
    let axes = config.task.axes.iter().map(|axis| axis.name.as_str());
    let best = match summary.listed_best_epochs(axes) {
        None => summary.best_epoch.to_string(),
        Some(epochs) => format!("per axis, {epochs}"),
    };
    format!(
        "\n## Model and training\n\n- Backbone: {backbone}; {} trainable parameters.\n\
         - Loss: `{}`. Adam, learning rate {}, {} epochs, batch {}, seed {}.\n\
         - Data: `{}`; {train} training / {validation} validation / {test} test samples.\n\
         - Best epoch: {best} ({} epochs trained, {:.0} s).\n",
        summary.parameters,
        config.loss_description(),
        config.optim.lr,
        config.optim.epochs,
        config.optim.batch_size,
        config.run.seed,
        source_name(&config.data.source),
        summary.epochs,
        summary.seconds,
    )
}
