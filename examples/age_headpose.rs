//! Age and head pose from one network, trained through the library API: the label space
//! is built in code (age in years, yaw and pitch in degrees, each with its own range and
//! step), the rest of the task too, and the full-KL loss trains the three heads with no
//! weights. It is the same task as `configs/age_headpose.toml` (and, with `--joint`,
//! `configs/age_headpose_joint.toml`), so it gives the same numbers as `ldl train` on
//! those files.
//!
//! ```sh
//! cargo run --release --example age_headpose            # one head per axis
//! cargo run --release --example age_headpose -- --joint # one head over yaw × pitch
//! cargo run --release --example age_headpose -- --faces 2000 --epochs 5
//! ```

use ldl::data::LabelColumns;
use ldl::train::{
    Backbone, Config, DataConfig, DataSource, FacesConfig, LossConfig, Progress, TaskConfig,
};
use ldl::{Axis, LabelSpace};

/// The label space: three axes in two units; with `joint`, yaw and pitch share one
/// softmax over their 61 × 41 grid.
pub fn label_space(joint: bool) -> ldl::Result<LabelSpace> {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0)?.with_unit("years"),
        Axis::linear("yaw", -90.0, 90.0, 3.0)?.with_unit("degrees"),
        Axis::linear("pitch", -60.0, 60.0, 3.0)?.with_unit("degrees"),
    ])?;
    if joint {
        Ok(space.with_joint(&["yaw", "pitch"])?)
    } else {
        Ok(space)
    }
}

/// The whole task: synthetic faces rendered in memory at 32 × 32 (apparent age with
/// its per-sample std, yaw and pitch of the head), TinyAgeNet at half width, the full-KL
/// loss, Adam at 3e-3 with a step down after 20 epochs.
pub fn config(
    joint: bool,
    faces: u64,
    epochs: usize,
) -> Result<Config, Box<dyn std::error::Error>> {
    let name = if joint {
        "age-headpose-joint"
    } else {
        "age-headpose"
    };
    let task = TaskConfig::from_label_space(name, &label_space(joint)?)?;

    let mut data = DataConfig::new(DataSource::Faces);
    data.image_size = 32;
    data.faces = FacesConfig {
        count: faces,
        max_yaw: 90.0,
        max_pitch: 60.0,
        max_roll: 10.0,
        ..FacesConfig::default()
    };
    // One person's faces never straddle two splits.
    data.group_column = Some("identity".into());
    data.split.validation = 0.15;
    data.split.test = 0.15;
    data.augment.flip = true;
    // Mirroring a face turns its yaw around.
    data.label_effects.negate_on_flip = vec!["yaw".into()];
    let column = |value: &str, std: Option<&str>| LabelColumns::Value {
        value: value.into(),
        std: std.map(Into::into),
    };
    data.labels.insert(
        "age".into(),
        column("apparent_age", Some("apparent_age_std")),
    );
    data.labels.insert("yaw".into(), column("yaw", None));
    data.labels.insert("pitch".into(), column("pitch", None));

    let mut config = Config::new(task, data);
    config.model.backbone = Backbone::TinyAgeNet;
    config.model.width = 0.5;
    // The default loss: full-KL, which needs no weights between the three heads.
    config.loss = LossConfig::default();
    config.optim.lr = 0.003;
    config.optim.batch_size = 32;
    config.optim.epochs = epochs;
    config.optim.lr_step_epochs = 20;
    config.run.seed = 1;
    Ok(config)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value_of = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).cloned()
    };
    let joint = args.iter().any(|a| a == "--joint");
    let faces = value_of("--faces")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(8000);
    let epochs = value_of("--epochs")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(25);
    let config = config(joint, faces, epochs)?.check()?;
    ldl::train::tune_for_training();

    let summary = ldl::train::train(&config, &ldl::train::StopToken::new(), &mut |progress| {
        if let Progress::Epoch(record) = progress {
            let mae: Vec<String> = record
                .validation
                .iter()
                .flat_map(|v| v.metrics.axes.iter())
                .filter_map(|a| a.mae.map(|mae| format!("{} MAE {mae:.2}", a.axis)))
                .collect();
            println!("epoch {:>3}  {}", record.epoch, mae.join("  "));
        }
    })?;
    println!("best epoch {}", summary.best_epoch);
    for axis in &summary.best_validation.metrics.axes {
        let baseline = summary.mean_predictor.iter().find(|m| m.axis == axis.axis);
        if let (Some(mae), Some(baseline)) = (axis.mae, baseline) {
            println!(
                "  validation {:<6} MAE {mae:.3} (training-mean predictor: {:.3})",
                axis.axis, baseline.validation_mae
            );
        }
    }
    println!("run folder: {}", summary.run_dir.display());
    Ok(())
}
