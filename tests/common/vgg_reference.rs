//! An independent f64 reference of the DLDL-v2 networks (`ldl::models::Vgg` inside a
//! `Model`): candle's own direct convolution, BatchNorm written out, ReLU, candle's
//! max-pool and the mean over the pixels, from the model's variables. Its autograd gives
//! reference gradients.

use candle_core::{DType, Tensor, Var, D};
use candle_nn::VarMap;
use ldl::models::Model;
use rand::Rng;

/// VGG-16's layout in units of the base width; 0 is a 2×2 max-pool.
const LAYOUT: [usize; 18] = [1, 1, 0, 2, 2, 0, 4, 4, 4, 0, 8, 8, 8, 0, 8, 8, 8, 0];

/// The model's variables as f64 variables of their own, by name: the reference's
/// gradients are theirs.
pub fn f64_vars(model: &Model) -> VarMap {
    let copies = VarMap::new();
    {
        let source = model.vars().data().lock().unwrap();
        let mut target = copies.data().lock().unwrap();
        for (name, var) in source.iter() {
            let value = var.as_tensor().to_dtype(DType::F64).unwrap();
            target.insert(name.clone(), Var::from_tensor(&value).unwrap());
        }
    }
    copies
}

/// The logits per head of a model with a VGG backbone on `x`, from `vars` (see
/// [`f64_vars`]), in f64: BatchNorm normalises with the batch's statistics in training
/// (biased variance, as the forward pass of PyTorch and ldl) and with the running ones
/// otherwise. In training, `batch_statistics` receives each block's batch mean and
/// unbiased variance (what the running statistics move towards).
pub fn logits(
    model: &Model,
    vars: &VarMap,
    x: &Tensor,
    train: bool,
    batch_statistics: &mut Vec<(Tensor, Tensor)>,
) -> Vec<Tensor> {
    let vars = vars.data().lock().unwrap();
    let get = |name: &str| vars.get(name).map(|v| v.as_tensor().clone());
    let channel = |t: Tensor| t.reshape((1, (), 1, 1)).unwrap();
    let mut x = x.to_dtype(DType::F64).unwrap();
    for (i, units) in LAYOUT.iter().enumerate() {
        if *units == 0 {
            x = max_pool(&x);
            continue;
        }
        let at = |part: &str| format!("backbone.features.{i}.{part}");
        x = x
            .conv2d(&get(&at("conv.weight")).unwrap(), 1, 1, 1, 1)
            .unwrap();
        if let Some(bias) = get(&at("conv.bias")) {
            x = x.broadcast_add(&channel(bias)).unwrap();
        }
        let (mean, variance) = if train {
            let mean = x
                .mean_keepdim(0)
                .unwrap()
                .mean_keepdim(2)
                .unwrap()
                .mean_keepdim(3)
                .unwrap();
            let centred = x.broadcast_sub(&mean).unwrap();
            let variance = centred.sqr().unwrap().mean_keepdim(0).unwrap();
            let variance = variance.mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
            let (n, _, h, w) = x.dims4().unwrap();
            let count = (n * h * w) as f64;
            let unbiased = (&variance * (count / (count - 1.0))).unwrap();
            batch_statistics.push((mean.flatten_all().unwrap(), unbiased.flatten_all().unwrap()));
            (mean, variance)
        } else {
            let running = |part: &str| channel(get(&at(part)).unwrap().detach());
            (running("bn.running_mean"), running("bn.running_var"))
        };
        let std = (variance + 1e-5).unwrap().sqrt().unwrap();
        let (gamma, beta) = (get(&at("bn.weight")).unwrap(), get(&at("bn.bias")).unwrap());
        x = x
            .broadcast_sub(&mean)
            .unwrap()
            .broadcast_div(&std)
            .unwrap()
            .broadcast_mul(&channel(gamma))
            .unwrap()
            .broadcast_add(&channel(beta))
            .unwrap()
            .relu()
            .unwrap();
    }
    let features = x.mean(D::Minus1).unwrap().mean(D::Minus1).unwrap();
    model
        .label_space()
        .heads()
        .iter()
        .map(|head| {
            let weight = get(&format!("heads.{}.weight", head.name())).unwrap();
            let bias = get(&format!("heads.{}.bias", head.name())).unwrap();
            features
                .matmul(&weight.t().unwrap())
                .unwrap()
                .broadcast_add(&bias)
                .unwrap()
        })
        .collect()
}

/// 2×2 max-pooling as the maximum over each window's four values: candle's reduction,
/// whose gradient goes to the maximum (candle's own `max_pool2d` scales its gradient by a
/// quarter). An odd last row or column is dropped.
fn max_pool(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.dims4().unwrap();
    let (rows, columns) = (h / 2, w / 2);
    x.narrow(2, 0, 2 * rows)
        .unwrap()
        .narrow(3, 0, 2 * columns)
        .unwrap()
        .reshape((n, c, rows, 2, columns, 2))
        .unwrap()
        .permute((0, 1, 2, 4, 3, 5))
        .unwrap()
        .reshape((n, c, rows, columns, 4))
        .unwrap()
        .max(D::Minus1)
        .unwrap()
}

/// BatchNorm's scale, shift and running statistics (and convolution biases) away from
/// their initial 1, 0, 0, 1 (0), so that treating them wrongly would show.
pub fn randomise_batch_norm(model: &Model, seed: u64) {
    let mut r = super::rng(seed);
    let data = model.vars().data().lock().unwrap();
    let mut names: Vec<&String> = data
        .keys()
        .filter(|n| n.contains(".bn.") || n.ends_with("conv.bias"))
        .collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let (low, high) = if name.ends_with("running_var") || name.ends_with("weight") {
            (0.5, 2.0)
        } else {
            (-0.5, 0.5)
        };
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| r.gen_range(low..high))
            .collect();
        var.set(&Tensor::new(values, var.device()).unwrap())
            .unwrap();
    }
}

/// The largest absolute value of `t`, in f64.
pub fn largest(t: &Tensor) -> f64 {
    let t = t.to_dtype(DType::F64).unwrap();
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// The largest |a − b| over the largest |b| (of equal shapes).
pub fn relative_gap(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (
        a.to_dtype(DType::F64).unwrap(),
        b.to_dtype(DType::F64).unwrap(),
    );
    largest(&(&a - &b).unwrap()) / largest(&b).max(1e-12)
}
