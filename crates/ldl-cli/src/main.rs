//! The `ldl` command: it parses the arguments, calls the library and presents what it
//! returns.

mod error;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use error::CliError;
use indicatif::{ProgressBar, ProgressStyle};
use ldl_train::{
    AxisTable, Backbone, Config, EpochRecord, Progress, RunFolder, RunSummary, TrainedModel,
};

#[derive(Parser)]
#[command(
    name = "ldl",
    version,
    about = "Label distribution learning: train models from TOML task configs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model as a task config says.
    ///
    /// Example: ldl train configs/quickstart.toml --set optim.epochs=10
    ///
    /// Resume: ldl train --resume runs/quickstart-faces-1 --set optim.epochs=90
    Train {
        /// The task config (TOML).
        #[arg(required_unless_present = "resume")]
        config: Option<PathBuf>,
        /// Continue the run in this folder from its last completed epoch.
        #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
        resume: Option<PathBuf>,
        /// Override a config key, e.g. `--set optim.lr=0.01` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Print only the final summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Evaluate a checkpoint on labelled data: a .csv or .jsonl file with the training
    /// columns (for an image model: its image column, or its image format's file).
    ///
    /// Example: ldl eval runs/bdims-1/checkpoints/best.safetensors --data people.csv
    ///
    /// Held-out faces: ldl synth --count 500 --seed 99 --size 32 --out held-out &&
    ///   ldl eval runs/quickstart-faces-1/checkpoints/best.safetensors --data held-out/manifest.csv
    Eval {
        /// The checkpoint (`checkpoints/best.safetensors` of a run, or a Hub path
        /// `hf://owner/name[@revision][/file]`).
        checkpoint: PathBuf,
        /// The labelled data.
        #[arg(long)]
        data: PathBuf,
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Predict mean, std and mode per axis: for every row of a .csv file (feature models),
    /// or for image files and folders of images (image models).
    ///
    /// Examples: ldl predict runs/bdims-1/checkpoints/best.safetensors people.csv
    ///           ldl predict runs/quickstart-faces-1/checkpoints/best.safetensors faces/ me.jpg
    ///           ldl predict hf://ldl-rs/bdims people.csv
    Predict {
        /// The checkpoint: a file, or a Hub path `hf://owner/name[@revision][/file]`
        /// (downloaded into the Hugging Face cache; HF_HUB_OFFLINE=1 uses the cache only).
        checkpoint: PathBuf,
        /// A .csv file with the model's feature columns; or JPEG/PNG files and folders of
        /// them (a folder's .jpg, .jpeg and .png files, sorted by name, not recursive).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Write JSON lines instead of CSV.
        #[arg(long)]
        json: bool,
        /// Include the predicted distribution of every axis.
        #[arg(long)]
        pmf: bool,
    },
    /// Serve a model over HTTP: POST /v1/predict (an image, or JSON rows of named
    /// features), GET /v1/model, GET /healthz. Concurrent requests share forward passes.
    /// Stops on Ctrl-C or SIGTERM after answering the requests it accepted.
    ///
    /// Example: ldl serve runs/bdims-1 --port 8080
    ///          curl -d '{"rows":[{...}]}' -H 'Content-Type: application/json' localhost:8080/v1/predict
    Serve {
        /// The model: a checkpoint file, a run folder (its checkpoints/best.safetensors), a
        /// folder written by `ldl export` (its model.safetensors), or a Hub path
        /// `hf://owner/name[@revision][/file]`.
        model: PathBuf,
        /// The address to listen on; 127.0.0.1 answers this machine only.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The port; 0 picks a free one. The first line printed is `listening on http://ADDRESS`.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The most samples per forward pass.
        #[arg(long, default_value_t = 32)]
        max_batch: usize,
        /// How long to wait for more requests to join a forward pass, in milliseconds.
        #[arg(long, default_value_t = 5)]
        batch_window_ms: u64,
        /// The most requests accepted and not yet answered; more are answered 503.
        #[arg(long, default_value_t = 256)]
        queue: usize,
        /// The largest request body, e.g. `16 MiB` or a number of bytes; larger ones are
        /// answered 413.
        #[arg(long, default_value = "16 MiB")]
        max_body: ldl_train::ByteSize,
        /// How long a request's body may take to arrive, in seconds; a slower one is
        /// answered 408 and gives up its place in the queue.
        #[arg(long, default_value_t = 60)]
        body_timeout_s: u64,
    },
    /// Write synthetic faces (PNGs) with their true age, apparent age and pose.
    ///
    /// Example: ldl synth --count 1000 --out data/synthetic --size 64 --seed 1
    Synth {
        /// How many faces (1 to 16777216).
        #[arg(long)]
        count: u64,
        /// The folder to write `images/`, `manifest.csv` and `chalearn.csv` into.
        #[arg(long)]
        out: PathBuf,
        /// Image side in pixels (at most 224).
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// The seed: face i of seed s is always the same.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Train one config with several losses and seeds, then plot mean ± std curves per
    /// loss and write a results table (results.md, results.json).
    ///
    /// Example: ldl compare configs/bdims.toml --losses full-kl,dldl-v2 --seeds 5
    ///          ldl compare configs/age_headpose.toml --losses full-kl,dldl-v2:0.1,dldl-v2:1
    Compare {
        /// The task config (TOML).
        config: PathBuf,
        /// The losses, comma-separated: full-kl, full-kl-rel, kl, dldl-v2, mean-variance;
        /// `dldl-v2:0.1` sets DLDL-v2's λ (the same on every axis).
        #[arg(long, value_delimiter = ',', default_value = "full-kl,dldl-v2")]
        losses: Vec<String>,
        /// Seeds per loss: run.seed, run.seed + 1, …
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        /// Override a config key, e.g. `--set optim.epochs=30` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Output folder (default: RUN.OUTPUT_DIR/TASK-compare).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The tables printed: `all` (MAE or accuracy, the six LDL measures on axes of
        /// explicit target distributions beside the training-mean distribution's, the loss
        /// components), `metrics` or `ldl`. results.md always holds all of them.
        #[arg(long, value_enum, default_value = "all")]
        columns: Columns,
    },
    /// Plot training curves (loss parts per axis, validation MAE) of one or more runs as
    /// PNG and SVG; several runs overlay, one colour each.
    ///
    /// Example: ldl plot runs/quickstart-faces-1 runs/quickstart-faces-2 --out plots
    Plot {
        /// Run folders (each with a metrics.jsonl).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where to write losses.{png,svg} and mae.{png,svg} (default: RUN_DIR/plots for
        /// one run, ./plots for several).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write a finished run as a model folder to share: model.safetensors, ldl.toml and a
    /// model card README.md; with --onnx also model.onnx. A checkpoint (a file, a model
    /// folder's model.safetensors, or a Hub path) exports as model.onnx with its card.
    ///
    /// Example: ldl export runs/quickstart-faces-1 --out models/quickstart-faces --onnx
    ///
    /// A checkpoint: ldl export hf://ldl-rs/bdims --onnx --out bdims-onnx
    Export {
        /// The run folder, or with --onnx a checkpoint (file or
        /// `hf://owner/name[@revision][/file]`).
        source: PathBuf,
        /// The folder to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Also write the model as ONNX (model.onnx, opset 17), with its input and outputs
        /// described in the model card and the file's metadata.
        #[arg(long)]
        onnx: bool,
        /// Replace the files it writes if the folder holds them.
        #[arg(long)]
        force: bool,
    },
    /// Describe a checkpoint: its label space, model and training.
    ///
    /// Example: ldl inspect runs/quickstart-faces-1/checkpoints/best.safetensors
    ///
    /// From the Hub: ldl inspect hf://ldl-rs/bdims@main
    Inspect {
        /// The checkpoint: a file, or a Hub path `hf://owner/name[@revision][/file]`.
        checkpoint: PathBuf,
    },
    /// Download a model repository (model.safetensors, ldl.toml, README.md) into the
    /// Hugging Face cache, or find it there, and print its local folder.
    ///
    /// Example: ldl fetch ldl-rs/bdims@main
    ///
    /// Later, without network: HF_HUB_OFFLINE=1 ldl predict hf://ldl-rs/bdims people.csv
    Fetch {
        /// The repository: owner/name, optionally @revision (a branch, tag or commit).
        repo: String,
        /// Use the cache only; fail if the files are not there (as HF_HUB_OFFLINE=1 does).
        #[arg(long)]
        offline: bool,
    },
    /// Upload a run (exported on the fly, as `ldl export` does) or an exported model
    /// folder to a model repository on the Hub, creating the repository if needed. Needs
    /// a token with write access in HF_TOKEN.
    ///
    /// Example: HF_TOKEN=hf_… ldl push runs/bdims-1 my-name/bdims
    Push {
        /// A finished run folder, or a folder written by `ldl export`.
        run: PathBuf,
        /// The repository: owner/name (optionally @branch).
        repo: String,
        /// Upload the model as ONNX too (model.onnx; a folder from `ldl export` uploads
        /// its model.onnx whenever it has one).
        #[arg(long)]
        onnx: bool,
    },
}

fn main() -> ExitCode {
    ldl_train::tune_for_training();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train {
            config,
            resume,
            overrides,
            quiet,
        } => train(config.as_deref(), resume.as_deref(), &overrides, quiet),
        Command::Eval {
            checkpoint,
            data,
            json,
        } => eval(&checkpoint, &data, json.as_deref()),
        Command::Predict {
            checkpoint,
            inputs,
            json,
            pmf,
        } => predict(&checkpoint, &inputs, json, pmf),
        Command::Inspect { checkpoint } => inspect(&checkpoint),
        Command::Serve {
            model,
            host,
            port,
            max_batch,
            batch_window_ms,
            queue,
            max_body,
            body_timeout_s,
        } => {
            let options = ldl_serve::ServeOptions {
                host,
                port,
                max_batch,
                batch_window: std::time::Duration::from_millis(batch_window_ms),
                queue,
                max_body: usize::try_from(max_body.0).unwrap_or(usize::MAX),
                body_timeout: std::time::Duration::from_secs(body_timeout_s),
            };
            serve(&model, &options)
        }
        Command::Fetch { repo, offline } => fetch(&repo, offline),
        Command::Push { run, repo, onnx } => push(&run, &repo, onnx),
        Command::Plot { runs, out } => plot(&runs, out.as_deref()),
        Command::Export {
            source,
            out,
            onnx,
            force,
        } => export(&source, &out, onnx, force),
        Command::Compare {
            config,
            losses,
            seeds,
            overrides,
            out,
            columns,
        } => compare(
            &config,
            &losses,
            seeds,
            &overrides,
            (out.as_deref(), columns),
        ),
        Command::Synth {
            count,
            out,
            size,
            seed,
        } => synth(count, &out, size, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A stop token that Ctrl-C sets: the run finishes the batch in progress, keeps the last
/// completed epoch and says how to go on.
fn stop_on_ctrl_c() -> ldl_train::StopToken {
    let stop = ldl_train::StopToken::new();
    let handle = stop.clone();
    let _ = ctrlc::set_handler(move || {
        eprintln!("\nstopping after this batch (Ctrl-C)…");
        handle.stop();
    });
    stop
}

/// `ldl compare --columns`: which tables are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Columns {
    /// Every table.
    All,
    /// MAE or accuracy, and the loss components.
    Metrics,
    /// The six LDL measures, beside the training-mean distribution's.
    Ldl,
}

impl From<Columns> for ldl_train::CompareColumns {
    fn from(columns: Columns) -> Self {
        match columns {
            Columns::All => ldl_train::CompareColumns::All,
            Columns::Metrics => ldl_train::CompareColumns::Metrics,
            Columns::Ldl => ldl_train::CompareColumns::Ldl,
        }
    }
}

/// `ldl export`: a run folder as a model folder (with --onnx, model.onnx too), or with
/// --onnx a checkpoint as model.onnx and its card.
fn export(source: &Path, out: &Path, onnx: bool, force: bool) -> Result<(), CliError> {
    let if_exists = if force {
        ldl_train::IfExists::Replace
    } else {
        ldl_train::IfExists::Refuse
    };
    let is_run = source.join("checkpoints").is_dir();
    let files = if onnx && !is_run {
        let checkpoint = if source.is_dir() {
            source.join(ldl_train::MODEL_FILES[0])
        } else {
            source.to_path_buf()
        };
        ldl_train::export_checkpoint_onnx(&checkpoint, out, if_exists)?
    } else {
        ldl_train::export_run_with(source, out, ldl_train::ExportOptions { if_exists, onnx })?
    };
    for file in files {
        println!("{}", file.display());
    }
    Ok(())
}

fn compare(
    path: &std::path::Path,
    losses: &[String],
    seeds: usize,
    overrides: &[String],
    (out, columns): (Option<&std::path::Path>, Columns),
) -> Result<(), CliError> {
    let config = Config::load(path, overrides)?;
    let out = out.map(PathBuf::from).unwrap_or_else(|| {
        config
            .run
            .output_dir
            .join(format!("{}-compare", config.task.name))
    });
    let epochs = config.optim.epochs;
    let mut print = |label: &str, progress: Progress<'_>| {
        if let Progress::Epoch(record) = progress {
            println!("{label:<24} {}", epoch_line(record, epochs));
        }
    };
    let stop = stop_on_ctrl_c();
    let comparison = ldl_train::compare(&config, losses, seeds, &out, &stop, &mut print)?;
    println!("\n{}", comparison.markdown_of(&config, columns.into()));
    for file in &comparison.files {
        println!("{}", file.display());
    }
    Ok(())
}

fn plot(runs: &[PathBuf], out: Option<&std::path::Path>) -> Result<(), CliError> {
    let curves = runs
        .iter()
        .map(|run| ldl_train::RunCurves::read(run))
        .collect::<Result<Vec<_>, _>>()?;
    let out = match (out, runs) {
        (Some(out), _) => out.to_path_buf(),
        (None, [run]) => run.join("plots"),
        (None, _) => PathBuf::from("plots"),
    };
    for file in ldl_train::plot_runs(&curves, &out)? {
        println!("{}", file.display());
    }
    Ok(())
}

/// The bar of one epoch: batches done, the running loss, throughput and ETA.
fn epoch_bar(epoch: usize, epochs: usize, batches: usize) -> ProgressBar {
    let bar = ProgressBar::new(batches as u64);
    let style = ProgressStyle::with_template(&format!(
        "epoch {epoch:>3}/{epochs} [{{bar:30}}] {{pos}}/{{len}}  {{msg}}  ETA {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// The one-line summary of an epoch.
fn epoch_line(record: &EpochRecord, epochs: usize) -> String {
    let mut line = format!(
        "epoch {:>3}/{epochs}  lr {:.1e}  train {:.4}",
        record.epoch, record.lr, record.train.total
    );
    if let Some(validation) = &record.validation {
        line.push_str(&format!("  val {:.4}", validation.loss.total));
        for report in &validation.metrics.axes {
            if let Some(mae) = report.mae {
                line.push_str(&format!("  {} MAE {mae:.2}", report.axis));
            }
        }
    }
    line.push_str(&format!("  ({:.0} samples/s)", record.samples_per_second));
    if record.skipped_batches > 0 {
        line.push_str(&format!(
            "  {} batches skipped (non-finite)",
            record.skipped_batches
        ));
    }
    line
}

fn train(
    path: Option<&std::path::Path>,
    resume: Option<&std::path::Path>,
    overrides: &[String],
    quiet: bool,
) -> Result<(), CliError> {
    let config = match (path, resume) {
        (_, Some(run_dir)) => {
            // Refuse a folder that cannot be resumed before reading anything from it.
            ldl_train::check_resumable(run_dir)?;
            RunFolder::new(run_dir).config(overrides)?
        }
        (Some(path), None) => Config::load(path, overrides)?,
        (None, None) => {
            return Err(CliError::Usage(
                "give a config file, or --resume RUN_DIR".into(),
            ))
        }
    };
    let mut print_progress = progress_printer(config.optim.epochs, quiet);
    let stop = stop_on_ctrl_c();
    let summary = match resume {
        Some(run_dir) => ldl_train::resume(run_dir, overrides, &stop, &mut print_progress)?,
        None => ldl_train::train(&config, &stop, &mut print_progress)?,
    };
    // In data-parallel training every rank returns the summary; rank 0 shows it.
    if ldl_train::launcher_rank().is_some_and(|rank| rank > 0) {
        return Ok(());
    }
    print_summary(&summary, &config)
}

/// What `ldl train` shows while it runs: a live bar per epoch on a terminal, plain
/// per-epoch lines when piped or logged, nothing with `--quiet`.
fn progress_printer(epochs: usize, quiet: bool) -> impl FnMut(Progress<'_>) {
    let mut bar: Option<ProgressBar> = None;
    let interactive = !quiet && std::io::stdout().is_terminal();
    move |progress| {
        // Warnings go to stderr, also with --quiet.
        if let Progress::Warning(warning) = progress {
            eprintln!("warning: {warning}");
            return;
        }
        if quiet {
            return;
        }
        match progress {
            Progress::Batch {
                epoch,
                done,
                batches,
                samples,
                loss,
                seconds,
            } if interactive => {
                let bar = bar.get_or_insert_with(|| epoch_bar(epoch, epochs, batches));
                bar.set_position(done as u64);
                bar.set_message(format!(
                    "loss {loss:.4}  {:.0} samples/s",
                    samples as f64 / seconds.max(1e-9)
                ));
            }
            Progress::Validating { .. } => {
                if let Some(bar) = &bar {
                    bar.set_message("validating…");
                }
            }
            Progress::Epoch(record) => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                println!("{}", epoch_line(record, epochs));
            }
            Progress::Features(features) => {
                println!("features ({}): {}", features.len(), features.join(", "));
            }
            Progress::Batch { .. } | Progress::Warning(_) => {}
        }
    }
}

/// How a finished run went: sizes and time, what was initialised or skipped, and the
/// per-axis results at the best epoch.
fn print_summary(summary: &RunSummary, config: &Config) -> Result<(), CliError> {
    println!(
        "done in {:.1} s: {} train / {} validation / {} test samples, {} parameters",
        summary.seconds,
        summary.samples[0],
        summary.samples[1],
        summary.samples[2],
        summary.parameters
    );
    if let (Some(init), Some(path)) = (&summary.init, &config.model.init_from) {
        let listed = |names: &[String]| {
            let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
            let more = names.len().saturating_sub(shown.len());
            match (shown.is_empty(), more) {
                (true, _) => String::new(),
                (false, 0) => format!(" ({})", shown.join(", ")),
                (false, more) => format!(" ({}, and {more} more)", shown.join(", ")),
            }
        };
        println!(
            "initialised from {}: {} tensors loaded, {} new{}, {} skipped{}",
            path.display(),
            init.loaded.len(),
            init.new.len(),
            listed(&init.new),
            init.skipped.len(),
            listed(&init.skipped)
        );
    }
    if summary.skipped_batches > 0 {
        println!(
            "{} batches were skipped for a non-finite loss or gradient (per epoch in \
             metrics.jsonl)",
            summary.skipped_batches
        );
    }
    if !summary.skipped.is_empty() {
        println!(
            "{} bad samples were skipped (listed in summary.json)",
            summary.skipped.len()
        );
    }
    let axes = config.task.axes.iter().map(|axis| axis.name.as_str());
    match summary.listed_best_epochs(axes) {
        None => println!(
            "best epoch {} ({}):",
            summary.best_epoch,
            config.run.monitor()
        ),
        Some(epochs) => println!("best epoch per axis ({}): {epochs}:", config.run.monitor()),
    }
    print!("{}", AxisTable::of_run(summary).lines());
    println!("run folder: {}", summary.run_dir.display());
    Ok(())
}

fn load(checkpoint: &std::path::Path) -> Result<TrainedModel, CliError> {
    let device = ldl_train::device("cpu")?;
    Ok(TrainedModel::load(checkpoint, &device)?)
}

fn eval(
    checkpoint: &std::path::Path,
    data: &std::path::Path,
    json: Option<&std::path::Path>,
) -> Result<(), CliError> {
    let trained = load(checkpoint)?;
    let evaluation = trained.evaluate_file(data)?;
    println!(
        "loss {:.4} ({})",
        evaluation.loss.total,
        trained.config.loss_description()
    );
    print!("{}", AxisTable::of_evaluation(&evaluation).columns());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&evaluation)?;
        std::fs::write(path, text).map_err(CliError::file(path, "write"))?;
    }
    Ok(())
}

/// Whether a path names a JPEG or PNG file, by extension.
fn is_image(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Image files and folders → the image files, in order (a folder's sorted by name).
fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let entries =
                std::fs::read_dir(input).map_err(CliError::file(input, "list the folder"))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.is_file() && is_image(path))
                .collect();
            if found.is_empty() {
                return Err(CliError::Usage(format!(
                    "{}: no .jpg, .jpeg or .png files in this folder",
                    input.display()
                )));
            }
            found.sort();
            files.extend(found);
        } else if is_image(input) {
            files.push(input.clone());
        } else {
            return Err(CliError::Usage(format!(
                "{}: not an image (.jpg, .jpeg, .png) or a folder; a .csv file goes alone",
                input.display()
            )));
        }
    }
    Ok(files)
}

fn predict(
    checkpoint: &std::path::Path,
    inputs: &[PathBuf],
    json: bool,
    pmf: bool,
) -> Result<(), CliError> {
    let trained = load(checkpoint)?;
    let predictions = match inputs {
        [table] if !table.is_dir() && !is_image(table) => trained.predict_file(table),
        _ => trained.predict_images(&image_files(inputs)?),
    }?;
    let source_column = match predictions.first().map(|p| &p.input) {
        Some(ldl_train::PredictionInput::Image(_)) => "image",
        _ => "line",
    };
    let space = trained.model.label_space();
    if json {
        for p in &predictions {
            let mut object = serde_json::Map::new();
            let source = match &p.input {
                ldl_train::PredictionInput::Line(line) => serde_json::Value::from(*line),
                image => serde_json::Value::from(image.to_string()),
            };
            object.insert(source_column.into(), source);
            for (i, axis) in space.axes().iter().enumerate() {
                // A class's estimate holds its name.
                let mut value = serde_json::to_value(&p.axes[i])?;
                if pmf {
                    value["distribution"] = serde_json::to_value(&p.distributions[i])?;
                }
                object.insert(axis.name().to_string(), value);
            }
            println!("{}", serde_json::Value::Object(object));
        }
        return Ok(());
    }
    let mut header = vec![source_column.to_string()];
    for axis in space.axes() {
        // A class has no mean or std: its name and probability instead.
        let fields: &[&str] = if axis.is_categorical() {
            &["class", "probability"]
        } else {
            &["mean", "std", "mode"]
        };
        for field in fields {
            header.push(format!("{}_{field}", axis.name()));
        }
        if pmf {
            header.extend((0..axis.len()).map(|k| format!("{}_p{k}", axis.name())));
        }
    }
    println!("{}", header.join(","));
    for p in &predictions {
        let mut row = vec![csv_field(&p.input.to_string())];
        for (i, estimate) in p.axes.iter().enumerate() {
            match estimate {
                ldl_train::AxisEstimate::Class(class) => {
                    row.push(csv_field(&class.name));
                    row.push(format!("{:.4}", class.probability));
                }
                ldl_train::AxisEstimate::Value(value) => {
                    row.push(format!("{:.4}", value.mean));
                    row.push(format!("{:.4}", value.std));
                    row.push(value.mode.to_string());
                }
            }
            if pmf {
                row.extend(p.distributions[i].iter().map(|q| format!("{q:.6}")));
            }
        }
        println!("{}", row.join(","));
    }
    Ok(())
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn inspect(checkpoint: &std::path::Path) -> Result<(), CliError> {
    let trained = load(checkpoint)?;
    println!(
        "checkpoint {} (written by ldl-models {})",
        checkpoint.display(),
        trained.info.version
    );
    println!("task: {}", trained.config.task.name);
    println!("axes:");
    for axis in trained.model.label_space().axes() {
        let centers = axis.centers();
        let kind = match axis.kind() {
            ldl_train::AxisKind::Linear => "linear".to_string(),
            ldl_train::AxisKind::Circular { period } => format!("circular (period {period})"),
            ldl_train::AxisKind::Categorical { .. } => "categorical".to_string(),
        };
        let default_std = match axis.default_std() {
            Some(std) => format!(", default std {std}"),
            None if axis.is_categorical() => String::new(),
            None => ", default std two local bin widths".to_string(),
        };
        println!(
            "  {:<10} {kind}, {} bins from {} to {} {}{default_std}",
            axis.name(),
            axis.len(),
            centers[0],
            centers[centers.len() - 1],
            axis.unit(),
        );
    }
    for head in trained.model.label_space().heads() {
        if head.is_joint() {
            let shape: Vec<String> = head.shape().iter().map(|k| k.to_string()).collect();
            println!(
                "joint head {}: one distribution over {} = {} bins",
                head.name(),
                shape.join(" × "),
                head.bins()
            );
        }
    }
    let model = &trained.config.model;
    let path = if model.linear_path() {
        ", with a linear path"
    } else {
        ""
    };
    match model.backbone {
        Backbone::Mlp if model.ensemble > 1 => println!(
            "model: an ensemble of {} MLPs, hidden {:?}{path}",
            model.ensemble, model.hidden
        ),
        Backbone::Mlp => println!("model: mlp, hidden {:?}{path}", model.hidden),
        other => println!("model: {other}, width {}", model.width),
    }
    if trained.config.data.reads_images() {
        let size = trained.config.data.image_size;
        println!("inputs: RGB images, resized to {size}×{size}");
    } else {
        println!("features: {}", trained.features.join(", "));
    }
    println!(
        "loss: {}; optimiser: Adam lr {} for {} epochs; seed {}",
        trained.config.loss_description(),
        trained.config.optim.lr,
        trained.config.optim.epochs,
        trained.config.run.seed
    );
    println!(
        "standardised inputs: {}",
        if trained.standardizer.is_some() {
            "yes"
        } else {
            "no"
        }
    );
    Ok(())
}

/// `ldl serve`: loads the model (a run or export folder names its checkpoint) and serves
/// it until Ctrl-C or SIGTERM.
fn serve(model: &std::path::Path, options: &ldl_serve::ServeOptions) -> Result<(), CliError> {
    let checkpoint = if model.is_dir() {
        let candidates = [
            model.join("checkpoints/best.safetensors"),
            model.join("model.safetensors"),
        ];
        candidates
            .iter()
            .find(|path| path.is_file())
            .cloned()
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "{}: a folder holding neither checkpoints/best.safetensors (a run) nor                      model.safetensors (an export)",
                    model.display()
                ))
            })?
    } else {
        model.to_path_buf()
    };
    let trained = load(&checkpoint)?;
    ldl_serve::serve(trained, &checkpoint.display().to_string(), options).map_err(CliError::Serve)
}

/// Pushes a run folder (exported to a temporary folder first) or an exported model folder.
fn push(run: &std::path::Path, repo: &str, onnx: bool) -> Result<(), CliError> {
    let spec: ldl_hub::RepoSpec = repo.parse().map_err(CliError::Hub)?;
    let hub = ldl_hub::Hub::from_env();
    // Refuse early, before exporting anything, when no token is set.
    hub.push_token()?;
    let exported = ldl_hub::MODEL_FILES.iter().all(|f| run.join(f).is_file());
    if exported && onnx && !run.join(ldl_train::ONNX_FILE).is_file() {
        return Err(CliError::Usage(format!(
            "{} has no {}; write it with `ldl export RUN_DIR --out {} --onnx --force`, or push \
             the run folder with --onnx",
            run.display(),
            ldl_train::ONNX_FILE,
            run.display()
        )));
    }
    let temp;
    let folder = if exported {
        run
    } else {
        temp = tempfile::Builder::new()
            .prefix("ldl-push-")
            .tempdir()
            .map_err(CliError::file(
                std::env::temp_dir(),
                "make a temporary folder for the export in",
            ))?;
        let if_exists = ldl_train::IfExists::Refuse;
        let options = ldl_train::ExportOptions { if_exists, onnx };
        ldl_train::export_run_with(run, temp.path(), options)?;
        temp.path()
    };
    let pushed = hub.push(folder, &spec)?;
    println!("pushed {} to {}", pushed.files.join(", "), pushed.repo);
    if let Some(url) = pushed.commit_url {
        println!("commit: {url}");
    }
    println!(
        "use it with: ldl predict {} INPUTS",
        spec.file(ldl_hub::DEFAULT_FILE)
    );
    Ok(())
}

/// `ldl fetch`: the model folder of `repo` into the cache, with a progress bar per file
/// on a terminal; prints the cached folder.
fn fetch(repo: &str, offline: bool) -> Result<(), CliError> {
    let spec: ldl_hub::RepoSpec = repo.parse().map_err(CliError::Hub)?;
    let bar: std::sync::Mutex<Option<(String, ProgressBar)>> = std::sync::Mutex::new(None);
    let hub = ldl_hub::Hub::from_env()
        .offline(offline || ldl_hub::offline_from_env())
        .progress(move |progress| download_bar(&bar, progress));
    let folder = hub.fetch(&spec).map_err(CliError::Hub)?;
    println!("{}", folder.display());
    Ok(())
}

/// Shows `progress` on the bar of its file, starting a bar for a new file and finishing it
/// when the file is complete. Hidden when stderr is not a terminal.
fn download_bar(
    bar: &std::sync::Mutex<Option<(String, ProgressBar)>>,
    progress: &ldl_hub::Progress,
) {
    let Ok(mut current) = bar.lock() else {
        return;
    };
    if current
        .as_ref()
        .is_none_or(|(file, _)| *file != progress.file)
    {
        let new = ProgressBar::new(progress.total);
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        new.set_style(style);
        new.set_message(progress.file.clone());
        *current = Some((progress.file.clone(), new));
    }
    if let Some((_, bar)) = current.as_ref() {
        bar.set_position(progress.done);
        if progress.done >= progress.total {
            bar.finish_and_clear();
        }
    }
}

fn synth(count: u64, out: &std::path::Path, size: u32, seed: u64) -> Result<(), CliError> {
    if !(8..=224).contains(&size) {
        return Err(CliError::Usage(format!(
            "--size must be between 8 and 224, got {size}"
        )));
    }
    if count == 0 || count > ldl_train::MAX_FACES {
        return Err(CliError::Usage(format!(
            "--count must be between 1 and {}, got {count}",
            ldl_train::MAX_FACES
        )));
    }
    let config = ldl_train::SynthConfig {
        size,
        seed,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    ldl_train::write_synthetic_set(&config, count, out).map_err(ldl_train::Error::from)?;
    println!(
        "wrote {count} faces of {size}×{size} to {} in {:.1} s (manifest.csv, chalearn.csv)",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
