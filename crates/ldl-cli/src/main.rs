//! The `ldl` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ldl_train::{Config, EpochRecord};

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
    Train {
        /// The task config (TOML).
        config: PathBuf,
        /// Override a config key, e.g. `--set optim.lr=0.01` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Print only the final summary.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train {
            config,
            overrides,
            quiet,
        } => train(&config, &overrides, quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn train(path: &std::path::Path, overrides: &[String], quiet: bool) -> Result<(), String> {
    let config = Config::load(path, overrides).map_err(|e| e.to_string())?;
    let axes: Vec<(String, String)> = config
        .task
        .axes
        .iter()
        .map(|a| (a.name.clone(), a.unit.clone()))
        .collect();
    let epochs = config.optim.epochs;
    let mut print_epoch = |record: &EpochRecord| {
        if quiet {
            return;
        }
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
        println!("{line}");
    };
    let summary = ldl_train::train(&config, &mut print_epoch).map_err(|e| e.to_string())?;
    println!(
        "done in {:.1} s: {} train / {} validation / {} test samples, {} parameters",
        summary.seconds,
        summary.samples[0],
        summary.samples[1],
        summary.samples[2],
        summary.parameters
    );
    if !summary.skipped.is_empty() {
        println!(
            "{} bad samples were skipped (listed in summary.json)",
            summary.skipped.len()
        );
    }
    println!(
        "best epoch {} (lowest validation loss):",
        summary.best_epoch
    );
    let splits = [
        ("validation", Some(&summary.best_validation)),
        ("test", summary.test.as_ref()),
    ];
    for (name, evaluation) in splits {
        let Some(evaluation) = evaluation else {
            continue;
        };
        for report in &evaluation.metrics.axes {
            let unit = axes
                .iter()
                .find(|(n, _)| n == &report.axis)
                .map(|(_, u)| u.as_str())
                .unwrap_or("");
            match (report.mae, report.accuracy) {
                (Some(mae), _) => println!(
                    "  {name:<10} {:<8} MAE {mae:.3} {unit}, predicted std {:.2} {unit}",
                    report.axis,
                    report.mean_predicted_std.unwrap_or(f64::NAN)
                ),
                (None, Some(accuracy)) => {
                    println!("  {name:<10} {:<8} accuracy {accuracy:.3}", report.axis)
                }
                _ => {}
            }
        }
    }
    println!("run folder: {}", summary.run_dir.display());
    Ok(())
}
