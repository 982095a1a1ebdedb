//! Inference: a model's evaluation-mode forward pass with no autograd graph and, for the
//! DLDL-v2 networks on the CPU, BatchNorm folded into the convolutions.
//!
//! [`Model::forward_t`] in evaluation mode stays differentiable (gradient norms and
//! saliency maps need it), so it records a graph that keeps every activation alive until
//! the logits are dropped, and on the CPU each block runs as three passes over its
//! activation: the convolution, BatchNorm + ReLU, and (after the last block of a stage) the
//! max-pool. An [`InferenceModel`] is built once from the model's current weights and runs
//! each block as one fused op (see `conv_cpu::fused`): BatchNorm folded into the
//! convolution's weights and bias, ReLU and the pooling applied as the outputs are
//! written. Each activation is freed as soon as the next block has read it. The 3×3
//! kernels are kept as the Winograd path transforms them, so a forward pass does not
//! transform them again (the inference model then holds 25/9 of the backbone's weights).
//!
//! | backbone, device, precision           | what [`InferenceModel::forward`] runs        |
//! |---------------------------------------|----------------------------------------------|
//! | VGG (ThinAgeNet, TinyAgeNet), CPU, f32 | fused blocks, BatchNorm folded               |
//! | MLP, or CUDA, or bf16                 | `Model::forward_t(x, false)`, graph dropped  |

use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;
use ldl_core::AxisEstimate;

use crate::conv_cpu::{pays_channels_last, FusedWeights};
use crate::error::Result;
use crate::layers::global_average_pool;
use crate::model::Model;
use crate::order::{Order, Orders};
use crate::precision::Precision;
use crate::vgg::Vgg;

/// A model's forward pass for inference: logits in evaluation mode (BatchNorm's running
/// statistics, no dropout) with no autograd graph. Built by [`Model::inference`] from the
/// weights the model has at that moment: build it again after training the model further.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use ldl_core::{Axis, LabelSpace};
/// use ldl_models::{BackboneConfig, Model};
/// let space = LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0)?])?;
/// let model = Model::build(&BackboneConfig::tiny_age_net(), &space, 7, &Device::Cpu)?;
/// let images = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu)?;
/// let inference = model.inference()?;
/// let fused = inference.forward(&images)?;
/// let reference = model.forward_t(&images, false)?;
/// // The same logits up to rounding.
/// let gap = (&fused[0] - &reference[0])?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(gap < 1e-4, "{gap}");
/// assert_eq!(inference.predict(&images)?.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct InferenceModel<'a> {
    model: &'a Model,
    /// The fused blocks, where the backbone, device and precision allow them.
    folded: Option<FoldedVgg<'a>>,
    /// The heads, detached from the model's variables.
    heads: Vec<Linear>,
}

/// A VGG backbone with BatchNorm folded into every convolution.
struct FoldedVgg<'a> {
    vgg: &'a Vgg,
    steps: Vec<Step>,
    /// Whether every block after the first reads channels-last input, so that the
    /// activations can stay channels last from the first block's output to the end.
    channels_last: bool,
}

/// One fused op of [`FoldedVgg`].
enum Step {
    /// `relu(conv(x, weight) + bias)`, max-pooled when `pool`.
    Block { weights: FusedWeights, pool: bool },
    /// A max-pool with no block before it to fuse into.
    Pool,
}

impl Model {
    /// The model's forward pass for inference, with the current weights (see
    /// [`InferenceModel`]). Building it folds BatchNorm into the convolutions and
    /// transforms their kernels, passes over the weights: build it once for many batches.
    pub fn inference(&self) -> Result<InferenceModel<'_>> {
        let folded = match self.vgg() {
            Some(vgg) if self.precision() == Precision::F32 && self.device().is_cpu() => {
                Some(FoldedVgg::new(vgg)?)
            }
            _ => None,
        };
        let heads = self
            .heads()
            .iter()
            .map(|head| Linear::new(head.weight().detach(), head.bias().map(Tensor::detach)))
            .collect();
        Ok(InferenceModel {
            model: self,
            folded,
            heads,
        })
    }
}

impl FoldedVgg<'_> {
    fn new(vgg: &Vgg) -> Result<FoldedVgg<'_>> {
        let mut steps: Vec<Step> = Vec::new();
        for stage in vgg.stages() {
            match (stage, steps.last_mut()) {
                (Some(block), _) => {
                    let (weight, bias) = block.folded()?;
                    steps.push(Step::Block {
                        weights: FusedWeights::new(weight, bias)?,
                        pool: false,
                    });
                }
                (None, Some(Step::Block { pool, .. })) if !*pool => *pool = true,
                (None, _) => steps.push(Step::Pool),
            }
        }
        let channels_last = steps.iter().enumerate().all(|(index, step)| match step {
            Step::Block { weights, .. } => index == 0 || pays_channels_last(weights.weight()),
            Step::Pool => false,
        });
        Ok(FoldedVgg {
            vgg,
            steps,
            channels_last,
        })
    }

    /// Features `(N, 8c)`, as [`Vgg::forward_t`] in evaluation mode.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.vgg.check_input(x)?;
        let cpu_float = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
        if !(self.channels_last && cpu_float && x.elem_count() > 0) {
            return self.forward_planes(x);
        }
        // Images in planes; from the first block's output on, channels last.
        let mut x = x.detach();
        let mut input = Order::Planes;
        for step in &self.steps {
            let Step::Block { weights, pool } = step else {
                unreachable!("`channels_last` holds only blocks");
            };
            let orders = Orders {
                input,
                output: Order::ChannelsLast,
            };
            x = weights.forward(&x, 1, *pool, orders)?;
            input = Order::ChannelsLast;
        }
        // `(N, H, W, C)` → `(N, C)`.
        Ok(x.mean(1)?.mean(1)?)
    }

    /// [`Self::forward`] with every activation in planes.
    fn forward_planes(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.detach();
        for step in &self.steps {
            x = match step {
                Step::Block { weights, pool } => weights.forward(&x, 1, *pool, Orders::PLANES)?,
                Step::Pool => crate::max_pool_2x2(&x)?,
            };
        }
        // A mean over many pixels in bf16 would lose digits: pool in f32, as `Vgg`.
        if matches!(x.dtype(), DType::BF16 | DType::F16) {
            x = x.to_dtype(DType::F32)?;
        }
        global_average_pool(&x)
    }
}

impl InferenceModel<'_> {
    /// Logits per head (see [`Model::forward_t`]), each `(N, bins)`, tracking no
    /// gradient.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let Some(folded) = &self.folded else {
            let logits = self.model.forward_t(x, false)?;
            return Ok(logits.iter().map(Tensor::detach).collect());
        };
        let features = folded.forward(x)?;
        self.heads
            .iter()
            .map(|head| {
                let features = match head.weight().dtype() {
                    dtype if dtype == features.dtype() => features.clone(),
                    dtype => features.to_dtype(dtype)?,
                };
                Ok(head.forward(&features)?)
            })
            .collect()
    }

    /// What the model predicts for a batch of inputs, as [`Model::predict`].
    pub fn predict(&self, inputs: &Tensor) -> Result<Vec<Vec<AxisEstimate>>> {
        let logits = self.forward(inputs)?;
        Ok(self.model.label_space().decode_logits(&logits)?)
    }

    /// The model it runs.
    pub fn model(&self) -> &Model {
        self.model
    }
}
