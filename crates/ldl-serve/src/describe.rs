//! `GET /v1/model`: what `ldl inspect` prints, as JSON.

use ldl_train::{Axis, AxisKind, Backbone, TrainedModel};
use serde_json::{json, Value};

/// The label space (axes with kind, range, step, unit and class names; joint heads), the
/// model, its input and a summary of its training.
pub fn describe(model: &TrainedModel, checkpoint: &str) -> Value {
    let space = model.model.label_space();
    let axes: Vec<Value> = space.axes().iter().map(axis_entry).collect();
    let joint_heads: Vec<Value> = space
        .heads()
        .iter()
        .filter(|head| head.is_joint())
        .map(|head| {
            let names: Vec<&str> = head
                .axes()
                .iter()
                .map(|&i| space.axes()[i].name())
                .collect();
            json!({ "name": head.name(), "axes": names, "shape": head.shape() })
        })
        .collect();
    let config = &model.config;
    let network = match config.model.backbone {
        Backbone::Mlp => json!({
            "backbone": "mlp",
            "hidden": config.model.hidden,
            "ensemble": config.model.ensemble,
            "linear_path": config.model.linear_path(),
        }),
        other => json!({ "backbone": other.to_string(), "width": config.model.width }),
    };
    let input = if model.reads_images() {
        let size = config.data.image_size;
        json!({ "kind": "image", "width": size, "height": size, "channels": "rgb" })
    } else {
        json!({
            "kind": "features",
            "columns": columns(model),
            "features": model.features,
            "standardized": model.standardizer.is_some(),
        })
    };
    json!({
        "task": config.task.name,
        "checkpoint": checkpoint,
        "written_by": format!("ldl-models {}", model.info.version),
        "axes": axes,
        "joint_heads": joint_heads,
        "model": network,
        "input": input,
        "training": {
            "loss": config.loss_description(),
            "optimizer": "adam",
            "lr": config.optim.lr,
            "epochs": config.optim.epochs,
            "batch_size": config.optim.batch_size,
            "seed": config.run.seed,
        },
    })
}

/// One axis as `/v1/model` lists it: name, unit, bins, kind, and its classes or its range.
fn axis_entry(axis: &Axis) -> Value {
    let centers = axis.centers();
    let mut entry = json!({
        "name": axis.name(),
        "unit": axis.unit(),
        "bins": axis.len(),
    });
    match axis.kind() {
        AxisKind::Categorical { classes } => {
            entry["kind"] = json!("categorical");
            entry["classes"] = json!(classes);
        }
        kind => {
            entry["kind"] = json!(match kind {
                AxisKind::Circular { .. } => "circular",
                _ => "linear",
            });
            if let AxisKind::Circular { period } = kind {
                entry["period"] = json!(period);
            }
            entry["min"] = json!(centers[0]);
            entry["max"] = json!(centers[centers.len() - 1]);
            entry["step"] = json!(axis.step());
            entry["default_std"] = json!(axis.default_std());
        }
    }
    entry
}

/// The columns a row of `/v1/predict` names: numeric, or categorical with its categories.
fn columns(model: &TrainedModel) -> Vec<Value> {
    match &model.encoder {
        Some(encoder) => encoder
            .columns
            .iter()
            .map(|column| match column {
                ldl_data::EncodedColumn::Numeric { name, fill } => json!({
                    "name": name,
                    "kind": "numeric",
                    "missing": if fill.is_some() { "training mean" } else { "error" },
                }),
                ldl_data::EncodedColumn::Categorical {
                    name,
                    categories,
                    fill,
                } => json!({
                    "name": name,
                    "kind": "categorical",
                    "categories": categories,
                    "missing": if fill.is_some() { "training shares" } else { "error" },
                }),
            })
            .collect(),
        None => model
            .features
            .iter()
            .map(|name| json!({ "name": name, "kind": "numeric", "missing": "error" }))
            .collect(),
    }
}
