//! The model's layers as ONNX nodes: the backbone (ThinAgeNet/TinyAgeNet or the MLP
//! trunks), then per head a linear layer (plus the MLP's linear path) and a softmax (for an ensemble, per network, and
//! the mean of the networks' softmaxes), and for a joint group the grid and its marginals.

use candle_core::Tensor;
use ldl_core::Head;

use super::graph::{float, int, ints, GraphBuilder};
use super::outputs::OutputNames;
use crate::ensemble::network_prefix;
use crate::error::{Error, Result};
use crate::layers::batch_norm_config;
use crate::mlp::MlpConfig;
use crate::model::{BackboneConfig, Model};
use crate::vgg::{VggConfig, LAYOUT};

/// Adds the nodes from the graph input `input` to every output, for `model`.
pub(crate) fn add_network(
    graph: &mut GraphBuilder,
    model: &Model,
    input: &str,
    names: &OutputNames,
) -> Result<()> {
    let variables = Variables(model);
    let heads = model.label_space().heads();
    let networks = model.config().networks();
    // Per network, per head: the head's logits.
    let logits = (0..networks)
        .map(|network| {
            let prefix = match network_prefix(network, networks) {
                Some(prefix) => format!("{prefix}."),
                None => String::new(),
            };
            let features = backbone(graph, &variables, model.config(), heads, input, &prefix)?;
            heads
                .iter()
                .enumerate()
                .map(|(index, head)| {
                    let features = &features[index.min(features.len() - 1)];
                    let name = format!("{prefix}heads.{}", head.name());
                    let logits = linear(graph, &variables, features, &name)?;
                    linear_path(graph, &variables, model, head, input, &logits, &name)
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    for (index, head) in heads.iter().enumerate() {
        let logits: Vec<&str> = logits.iter().map(|l| l[index].as_str()).collect();
        add_distribution(graph, head, &logits, names);
    }
    Ok(())
}

/// The features each head sees, for the network whose variables start with `prefix`
/// (empty, or `ensemble.<k>.`): one for all heads, or one per head.
fn backbone(
    graph: &mut GraphBuilder,
    variables: &Variables,
    config: &BackboneConfig,
    heads: &[Head],
    input: &str,
    prefix: &str,
) -> Result<Vec<String>> {
    match config {
        BackboneConfig::Vgg(config) => Ok(vec![vgg(graph, variables, config, input)?]),
        BackboneConfig::Mlp(config) if config.trunk_count(heads.len()) == 1 => {
            let trunk = format!("{prefix}backbone");
            Ok(vec![mlp(graph, variables, config, input, &trunk)?])
        }
        BackboneConfig::Mlp(config) => heads
            .iter()
            .map(|head| {
                let trunk = format!("{prefix}backbone.{}", head.name());
                mlp(graph, variables, config, input, &trunk)
            })
            .collect(),
    }
}

/// The model's variables by checkpoint name.
struct Variables<'a>(&'a Model);

impl Variables<'_> {
    fn find(&self, name: &str) -> Option<Tensor> {
        let data = match self.0.vars().data().lock() {
            Ok(data) => data,
            Err(poisoned) => poisoned.into_inner(),
        };
        data.get(name).map(|var| var.as_tensor().clone())
    }

    fn get(&self, name: &str) -> Result<Tensor> {
        self.find(name)
            .ok_or_else(|| Error::Export(format!("the model has no variable `{name}`")))
    }

    /// A constant holding the variable `name`, named as it.
    fn constant(&self, graph: &mut GraphBuilder, name: &str) -> Result<String> {
        graph.weight(name, &self.get(name)?)
    }
}

/// VGG-16's layout of 3×3 convolutions (each followed by BatchNorm and ReLU) and 2×2
/// max-pools, then global average pooling: `(N, 3, H, W) → (N, 8c)`.
fn vgg(
    graph: &mut GraphBuilder,
    variables: &Variables,
    config: &VggConfig,
    input: &str,
) -> Result<String> {
    let mut x = input.to_string();
    for (i, units) in LAYOUT.iter().enumerate() {
        if *units == 0 {
            let attributes = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
            x = graph.node("MaxPool", &[&x], &format!("pool{i}"), attributes);
            continue;
        }
        let prefix = format!("backbone.features.{i}");
        let weight = variables.constant(graph, &format!("{prefix}.conv.weight"))?;
        let mut inputs = vec![x.clone(), weight];
        if config.conv_bias {
            inputs.push(variables.constant(graph, &format!("{prefix}.conv.bias"))?);
        }
        let attributes = vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            ints("strides", &[1, 1]),
        ];
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        x = graph.node("Conv", &inputs, &format!("{prefix}.conv"), attributes);
        x = batch_norm(graph, variables, &x, &format!("{prefix}.bn"))?;
        x = graph.node("Relu", &[&x], &format!("{prefix}.relu"), vec![]);
    }
    let pooled = graph.node("GlobalAveragePool", &[&x], "global_pool", vec![]);
    // (N, C, 1, 1) → (N, C).
    Ok(graph.node("Flatten", &[&pooled], "features", vec![int("axis", 1)]))
}

/// The MLP under `prefix`: per hidden layer a linear layer, BatchNorm if configured, and
/// ReLU (dropout is the identity at inference).
fn mlp(
    graph: &mut GraphBuilder,
    variables: &Variables,
    config: &MlpConfig,
    input: &str,
    prefix: &str,
) -> Result<String> {
    let mut x = input.to_string();
    for i in 0..config.hidden.len() {
        let layer = format!("{prefix}.layers.{i}");
        x = linear(graph, variables, &x, &layer)?;
        if config.batch_norm {
            x = batch_norm(graph, variables, &x, &format!("{layer}.bn"))?;
        }
        x = graph.node("Relu", &[&x], &format!("{layer}.relu"), vec![]);
    }
    Ok(x)
}

/// `x Wᵀ + b` for the linear layer whose variables are `{prefix}.weight` and
/// `{prefix}.bias` (candle's layout: `W` is `(outputs, inputs)`).
fn linear(
    graph: &mut GraphBuilder,
    variables: &Variables,
    x: &str,
    prefix: &str,
) -> Result<String> {
    let weight = variables.constant(graph, &format!("{prefix}.weight"))?;
    let mut inputs = vec![x.to_string(), weight];
    let bias = format!("{prefix}.bias");
    if let Some(values) = variables.find(&bias) {
        inputs.push(graph.weight(&bias, &values)?);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(graph.node("Gemm", &inputs, prefix, vec![int("transB", 1)]))
}

/// `logits + (x wᵀ) z` for a head with a linear path (see [`crate::linear_path`]) whose
/// variables are under `prefix`; the logits as they are for a head without one.
fn linear_path(
    graph: &mut GraphBuilder,
    variables: &Variables,
    model: &Model,
    head: &Head,
    input: &str,
    logits: &str,
    prefix: &str,
) -> Result<String> {
    let path = format!("{prefix}.linear_path");
    let Some(weight) = variables.find(&format!("{path}.weight")) else {
        return Ok(logits.to_string());
    };
    let rows = crate::linear_path::head_statistics(model.label_space(), head);
    let values: Vec<f32> = rows.iter().flatten().map(|&z| z as f32).collect();
    let statistics = graph.floats(
        &format!("{path}.statistics"),
        &[rows.len(), head.bins()],
        &values,
    );
    let weight = graph.weight(&format!("{path}.weight"), &weight)?;
    let tilt = graph.node("Gemm", &[input, &weight], &path, vec![int("transB", 1)]);
    let shift = graph.node(
        "MatMul",
        &[&tilt, &statistics],
        &format!("{path}.shift"),
        vec![],
    );
    Ok(graph.node(
        "Add",
        &[logits, &shift],
        &format!("{prefix}.logits"),
        vec![],
    ))
}

/// Inference-mode BatchNorm with the running statistics, over axis 1 of `x`.
fn batch_norm(
    graph: &mut GraphBuilder,
    variables: &Variables,
    x: &str,
    prefix: &str,
) -> Result<String> {
    let mut inputs = vec![x.to_string()];
    for part in ["weight", "bias", "running_mean", "running_var"] {
        inputs.push(variables.constant(graph, &format!("{prefix}.{part}"))?);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let epsilon = float("epsilon", batch_norm_config().eps as f32);
    Ok(graph.node("BatchNormalization", &inputs, prefix, vec![epsilon]))
}

/// A head's distribution from its logits, one per network (see [`distribution`]). A
/// single axis's distribution is its output; a joint group's is reshaped into its grid
/// output, and each member's marginal sums the grid over the other members.
fn add_distribution(graph: &mut GraphBuilder, head: &Head, logits: &[&str], names: &OutputNames) {
    let prefix = format!("heads.{}", head.name());
    if !head.is_joint() {
        distribution(graph, logits, Output::Into(names.axis(head.axes()[0])));
        return;
    }
    let probabilities = distribution(graph, logits, Output::Named(&format!("{prefix}.softmax")));
    // `0` keeps the batch dimension; the grid is row-major, the first member slowest.
    let mut shape = vec![0i64];
    shape.extend(head.shape().iter().map(|k| *k as i64));
    let shape = graph.int64s(&format!("{prefix}.grid_shape"), &shape);
    let grid = names.joint(head.name());
    graph.node_into("Reshape", &[&probabilities, &shape], grid, vec![]);
    for (j, axis) in head.axes().iter().enumerate() {
        let others: Vec<i64> = (1..=head.axes().len() as i64)
            .filter(|dim| *dim != j as i64 + 1)
            .collect();
        let others = graph.int64s(&format!("{prefix}.sum_axes_{j}"), &others);
        graph.node_into(
            "ReduceSum",
            &[grid, &others],
            names.axis(*axis),
            vec![int("keepdims", 0)],
        );
    }
}

/// Where [`distribution`] writes.
enum Output<'a> {
    /// Into a reserved name (a graph output).
    Into(&'a str),
    /// A fresh name made from this one.
    Named(&'a str),
}

/// The softmax of `logits`, or for an ensemble (one logits per network) the mean of the
/// networks' softmaxes; returns the name it wrote.
fn distribution(graph: &mut GraphBuilder, logits: &[&str], output: Output) -> String {
    let softmax = || vec![int("axis", -1)];
    let (op, inputs): (&str, Vec<String>) = match logits {
        [logits] => ("Softmax", vec![logits.to_string()]),
        networks => {
            let each = networks
                .iter()
                .map(|l| graph.node("Softmax", &[l], &format!("{l}.softmax"), softmax()))
                .collect();
            ("Mean", each)
        }
    };
    let attributes = if op == "Softmax" { softmax() } else { vec![] };
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    match output {
        Output::Into(name) => {
            graph.node_into(op, &inputs, name, attributes);
            name.to_string()
        }
        Output::Named(name) => graph.node(op, &inputs, name, attributes),
    }
}
