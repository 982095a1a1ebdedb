//! The MLP's linear path (`MlpConfig::linear_path`): a term linear in the inputs added to
//! each head's logits, which moves the predicted distribution's location.
//!
//! On a few hundred rows of a near-linear target an MLP trails ridge regression: its
//! hidden layers can represent a linear map, but fitting one through ReLUs from little
//! data costs accuracy that a linear model does not pay (`docs/benchmarks.md`, "A linear
//! path": bdims weight and height 6% behind the better baseline over twelve splits; 3%
//! and 2% with the path). The path gives the network that linear map directly, in the
//! form a distribution over bins takes it.
//!
//! For an axis with bin centres `c_j`, the path adds `s(x) · z_j` to logit `j`, where
//! `s(x) = w · x` is linear in the inputs (no bias: a constant times `z_j` is a per-bin
//! constant, which the head's bias holds already) and `z_j` a statistic of the bin. Adding
//! `s · z_j` to the logits multiplies the distribution by `exp(s · z_j)` and renormalises
//! (an exponential tilt): for a normal distribution with std `σ` over a linear axis, it
//! moves the mean by `s · σ² / h` and leaves the std alone, so a location linear in the
//! inputs is one weight vector away.
//!
//! | axis | statistics `z_j` | weights per input |
//! |---|---|---|
//! | linear | `(c_j − m) / h`, in `[−1, 1]` (`m` the middle of the first and last centre, `h` half their distance; none for one bin) | 1 |
//! | circular | `cos θ_j`, `sin θ_j` with `θ_j = 2π c_j / period` (the tilt of a von Mises distribution) | 2 |
//! | categorical | none: classes have no location | 0 |
//!
//! A joint group's head gets each member's statistics, evaluated at the member's bin of
//! every grid cell. The weights start at zero, so an untrained model predicts what its
//! heads alone predict (the training mean with `head_init = "training-mean"`);
//! `Model::set_linear_path_weights` sets them (ldl-train's `least-squares` start). They live
//! under `heads.<head>.linear_path.weight`, `(statistics, inputs)` as a linear layer's.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ldl_core::{Axis, AxisKind, Head, LabelSpace};

use crate::error::Result;

/// The bin statistics `z` of one axis: one vector of `axis.len()` values per statistic
/// (see the [module documentation](self)).
///
/// ```
/// use ldl_core::Axis;
/// use ldl_models::linear_path::axis_statistics;
/// let age = Axis::linear("age", 0.0, 100.0, 25.0)?;
/// assert_eq!(axis_statistics(&age), vec![vec![-1.0, -0.5, 0.0, 0.5, 1.0]]);
/// let hour = Axis::circular("hour", 0.0, 24.0, 6.0)?;
/// let [cos, sin] = &axis_statistics(&hour)[..] else { unreachable!() };
/// assert!((cos[2] + 1.0).abs() < 1e-12 && (sin[1] - 1.0).abs() < 1e-12); // 12 h, 6 h
/// assert!(axis_statistics(&Axis::categorical("sex", ["f", "m"])?).is_empty());
/// # Ok::<(), ldl_core::Error>(())
/// ```
pub fn axis_statistics(axis: &Axis) -> Vec<Vec<f64>> {
    let centres = axis.centers();
    match axis.kind() {
        AxisKind::Linear => {
            let (Some(first), Some(last)) = (centres.first(), centres.last()) else {
                return Vec::new();
            };
            let half = (last - first) / 2.0;
            if centres.len() < 2 || half <= 0.0 {
                return Vec::new();
            }
            let middle = (first + last) / 2.0;
            vec![centres.iter().map(|c| (c - middle) / half).collect()]
        }
        AxisKind::Circular { period } => {
            let angle = |c: &f64| std::f64::consts::TAU * c / period;
            vec![
                centres.iter().map(|c| angle(c).cos()).collect(),
                centres.iter().map(|c| angle(c).sin()).collect(),
            ]
        }
        AxisKind::Categorical { .. } => Vec::new(),
    }
}

/// The statistics of a head of `space`: every member's, each evaluated at the member's bin
/// of every cell of the head's grid (row-major, the first member slowest). One vector of
/// `head.bins()` values per statistic.
pub fn head_statistics(space: &LabelSpace, head: &Head) -> Vec<Vec<f64>> {
    let shape = head.shape();
    let mut rows = Vec::new();
    for (position, &axis) in head.axes().iter().enumerate() {
        // Cells per step of this member's bin, and how many times its bins repeat.
        let inner: usize = shape[position + 1..].iter().product();
        for member in axis_statistics(&space.axes()[axis]) {
            let row = (0..head.bins())
                .map(|cell| member[(cell / inner) % shape[position]])
                .collect();
            rows.push(row);
        }
    }
    rows
}

/// How many weights per input the path of `head` has (0: the head has no path).
pub fn statistic_count(space: &LabelSpace, head: &Head) -> usize {
    head.axes()
        .iter()
        .map(|&axis| axis_statistics(&space.axes()[axis]).len())
        .sum()
}

/// True for a head (axis or joint group) name that ends in `.linear_path`: its head's
/// weights would be named as another head's path (`heads.<name>.weight`), so models
/// refuse it, with or without a path.
pub fn is_reserved_head_name(name: &str) -> bool {
    name.ends_with(".linear_path")
}

/// True for `heads.<head>.linear_path.weight`, a network-local name of a path's weights.
pub(crate) fn is_weight_name(local: &str) -> bool {
    let head = local
        .strip_prefix("heads.")
        .and_then(|rest| rest.strip_suffix(".linear_path.weight"));
    head.is_some_and(|head| !head.is_empty())
}

/// For the name of a path's weights (`[ensemble.<k>.]heads.<head>.linear_path.weight`),
/// the name of its head's weight matrix (`[ensemble.<k>.]heads.<head>.weight`).
pub(crate) fn head_weight_of(name: &str) -> Option<String> {
    let local = crate::ensemble::network_local_name(name);
    is_weight_name(local).then(|| {
        let stem = &name[..name.len() - ".linear_path.weight".len()];
        format!("{stem}.weight")
    })
}

/// One head's linear path: its weights, a variable, and its statistics, a constant.
pub(crate) struct LinearPath {
    /// `(statistics, inputs)`.
    weight: Tensor,
    /// `(statistics, bins)`.
    statistics: Tensor,
}

impl LinearPath {
    /// Every head's statistics as a tensor `(statistics, bins)` on `device`, `None` for a
    /// head without any: built once per model and shared by the networks of an ensemble.
    pub(crate) fn statistics_of_heads(
        space: &LabelSpace,
        device: &Device,
    ) -> Result<Vec<Option<Tensor>>> {
        space
            .heads()
            .iter()
            .map(|head| {
                let rows = head_statistics(space, head);
                if rows.is_empty() {
                    return Ok(None);
                }
                let values: Vec<f32> = rows.iter().flatten().map(|&z| z as f32).collect();
                Ok(Some(Tensor::from_vec(
                    values,
                    (rows.len(), head.bins()),
                    device,
                )?))
            })
            .collect()
    }

    /// The path of `head` with its `statistics`, its weight under
    /// `heads.<head>.linear_path` of `vb` (zero when new).
    pub(crate) fn new(
        head: &Head,
        statistics: &Tensor,
        inputs: usize,
        vb: &VarBuilder,
    ) -> Result<LinearPath> {
        let vb = vb.pp("heads").pp(head.name()).pp("linear_path");
        let shape = (statistics.dim(0)?, inputs);
        let weight = vb.get_with_hints(shape, "weight", candle_nn::Init::Const(0.))?;
        Ok(LinearPath {
            weight,
            statistics: statistics.clone(),
        })
    }

    /// `logits + (x wᵀ) z`, for inputs `x` `(N, inputs)` and logits `(N, bins)`.
    pub(crate) fn add_to(&self, logits: &Tensor, x: &Tensor) -> Result<Tensor> {
        let x = match x.dtype() {
            DType::F32 => x.clone(),
            _ => x.to_dtype(DType::F32)?,
        };
        let shift = x.matmul(&self.weight.t()?)?.matmul(&self.statistics)?;
        Ok(logits.broadcast_add(&shift.to_dtype(logits.dtype())?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_weights_are_told_from_a_head_named_linear_path() {
        assert!(is_weight_name("heads.age.linear_path.weight"));
        assert!(is_weight_name("heads.yaw+pitch.linear_path.weight"));
        assert!(!is_weight_name("heads.linear_path.weight"));
        assert!(!is_weight_name("heads.age.weight"));
        assert!(!is_weight_name("backbone.age.linear_path.weight"));
    }

    #[test]
    fn a_paths_head_is_named_from_it() {
        let head = |name| head_weight_of(name);
        assert_eq!(
            head("heads.age.linear_path.weight").unwrap(),
            "heads.age.weight"
        );
        assert_eq!(
            head("ensemble.2.heads.yaw+pitch.linear_path.weight").unwrap(),
            "ensemble.2.heads.yaw+pitch.weight"
        );
        assert_eq!(head("heads.age.weight"), None);
    }

    /// A group listed in another order than its axes: the grid follows the group, the
    /// first member (hour) slowest, and so do the statistics.
    #[test]
    fn a_joint_head_follows_its_groups_order() {
        let space = LabelSpace::new(vec![
            Axis::linear("pitch", -10.0, 10.0, 10.0).unwrap(),
            Axis::circular("hour", 0.0, 24.0, 6.0).unwrap(),
        ])
        .unwrap()
        .with_joint(&["hour", "pitch"])
        .unwrap();
        let head = &space.heads()[0];
        let rows = head_statistics(&space, head);
        assert_eq!(rows.len(), 3);
        for hour in 0..4 {
            for pitch in 0..3 {
                let cell = hour * 3 + pitch;
                let angle = std::f64::consts::TAU * (6 * hour) as f64 / 24.0;
                assert!((rows[0][cell] - angle.cos()).abs() < 1e-15);
                assert!((rows[1][cell] - angle.sin()).abs() < 1e-15);
                assert_eq!(rows[2][cell], pitch as f64 - 1.0);
            }
        }
    }

    #[test]
    fn uneven_linear_centres_keep_their_spacing() {
        let axis = Axis::from_centers("dose", vec![1.0, 2.0, 4.0, 9.0]).unwrap();
        assert_eq!(axis_statistics(&axis), vec![vec![-1.0, -0.75, -0.25, 1.0]]);
    }

    #[test]
    fn a_joint_head_holds_each_members_statistics_per_cell() {
        let space = LabelSpace::new(vec![
            Axis::linear("pitch", -10.0, 10.0, 10.0).unwrap(),
            Axis::categorical("kind", ["a", "b"]).unwrap(),
            Axis::circular("yaw", 0.0, 360.0, 90.0).unwrap(),
        ])
        .unwrap()
        .with_joint(&["pitch", "yaw"])
        .unwrap();
        let kind = space.heads().iter().find(|h| h.name() == "kind").unwrap();
        assert_eq!(statistic_count(&space, kind), 0);
        let head = space.heads().iter().find(|h| h.is_joint()).unwrap();
        let rows = head_statistics(&space, head);
        assert_eq!(rows.len(), 3);
        assert_eq!(statistic_count(&space, head), 3);
        for pitch in 0..3 {
            for yaw in 0..4 {
                let cell = pitch * 4 + yaw;
                let angle = std::f64::consts::FRAC_PI_2 * yaw as f64;
                assert_eq!(rows[0][cell], pitch as f64 - 1.0);
                assert!((rows[1][cell] - angle.cos()).abs() < 1e-15);
                assert!((rows[2][cell] - angle.sin()).abs() < 1e-15);
            }
        }
    }
}
