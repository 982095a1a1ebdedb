//! Joint axis groups: one distribution over the product grid of several axes (e.g.
//! yaw × pitch). Targets, the joint full-KL terms against closed forms written out here
//! with plain loops, gradients against finite differences, unit invariance, metrics on
//! the marginals, models and stored label spaces.

// The references index small grids the way the formulas do.
#![allow(clippy::needless_range_loop)]

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use ldl::loss::{multivariate_normal_kl, DldlV2, FullKl, Kl, Loss};
use ldl::metrics::Metrics;
use ldl::models::{BackboneConfig, MlpConfig, Model};
use ldl::{joint_target, marginals, Axis, Label, LabelSpace};

fn yaw() -> Axis {
    Axis::linear("yaw", -30.0, 30.0, 3.0)
        .unwrap()
        .with_unit("degrees")
}

fn pitch() -> Axis {
    Axis::linear("pitch", -20.0, 20.0, 4.0)
        .unwrap()
        .with_unit("degrees")
}

/// A circular member: direction over a full turn in 30° bins.
fn heading() -> Axis {
    Axis::circular("heading", -180.0, 360.0, 30.0).unwrap()
}

fn f64_rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

#[test]
fn joint_target_is_the_normalised_2d_gaussian_and_its_marginals_are_the_1d_targets() {
    let (a, b) = (yaw(), pitch());
    // One label near the middle, one truncated by the edges of both axes.
    let labels = [(4.0, 6.0, -7.0, 5.0), (29.0, 4.5, -19.0, 8.0)];
    let space = LabelSpace::new(vec![a.clone(), b.clone()]).unwrap();
    let samples: Vec<Vec<Label>> = labels
        .iter()
        .map(|&(y, sy, p, sp)| vec![Label::value_with_std(y, sy), Label::value_with_std(p, sp)])
        .collect();
    let targets = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
    let grid = joint_target(&[&targets[0].pmf, &targets[1].pmf]).unwrap();
    let rows = f64_rows(&grid);
    for (row, &(y, sy, p, sp)) in rows.iter().zip(&labels) {
        // The 2-D Gaussian with a diagonal covariance, normalised over the grid.
        let mut expected = Vec::new();
        for ya in a.centers() {
            for pb in b.centers() {
                let e = -((ya - y).powi(2) / (2.0 * sy * sy) + (pb - p).powi(2) / (2.0 * sp * sp));
                expected.push(e.exp());
            }
        }
        let total: f64 = expected.iter().sum();
        for (got, want) in row.iter().zip(&expected) {
            assert!(
                (got - want / total).abs() < 1e-12,
                "{got} vs {}",
                want / total
            );
        }
    }
    let sums = marginals(&grid, &[a.len(), b.len()]).unwrap();
    for (marginal, target) in sums.iter().zip(&targets) {
        for (m, t) in f64_rows(marginal)
            .iter()
            .flatten()
            .zip(f64_rows(&target.pmf).iter().flatten())
        {
            assert!((m - t).abs() < 1e-12, "marginal {m} vs 1-D target {t}");
        }
    }
}

/// `KL(N(μ_p, Σ_p) ‖ N(μ_q, Σ_q))` in two dimensions with the explicit 2 × 2 inverse and
/// determinants (covariances row-major).
fn normal_kl_2d(mp: [f64; 2], cp: [f64; 4], mq: [f64; 2], cq: [f64; 4]) -> f64 {
    let det = |c: &[f64; 4]| c[0] * c[3] - c[1] * c[2];
    let inv = [
        cq[3] / det(&cq),
        -cq[1] / det(&cq),
        -cq[2] / det(&cq),
        cq[0] / det(&cq),
    ];
    let trace = inv[0] * cp[0] + inv[1] * cp[2] + inv[2] * cp[1] + inv[3] * cp[3];
    let d = [mq[0] - mp[0], mq[1] - mp[1]];
    let quad = d[0] * (inv[0] * d[0] + inv[1] * d[1]) + d[1] * (inv[2] * d[0] + inv[3] * d[1]);
    0.5 * (trace + quad - 2.0 + (det(&cq) / det(&cp)).ln())
}

#[test]
fn multivariate_normal_kl_matches_the_2x2_closed_form() {
    let (mp, cp) = ([0.3, -1.2], [2.0, 0.7, 0.7, 1.5]);
    let (mq, cq) = ([1.1, 0.4], [3.0, -0.9, -0.9, 2.2]);
    let expected = normal_kl_2d(mp, cp, mq, cq);
    let got = multivariate_normal_kl(&mp, &cp, &mq, &cq).unwrap();
    assert_close(got, expected, 1e-12, "2-D normal KL");
    // Three dimensions, diagonal: the sum of the 1-D KLs.
    let kl1 = |mp: f64, vp: f64, mq: f64, vq: f64| {
        0.5 * (vq / vp).ln() + (vp + (mp - mq).powi(2)) / (2.0 * vq) - 0.5
    };
    let got = multivariate_normal_kl(
        &[0.0, 1.0, 2.0],
        &[1.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.5],
        &[0.5, -1.0, 2.5],
        &[2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0],
    )
    .unwrap();
    let expected = kl1(0.0, 1.0, 0.5, 2.0) + kl1(1.0, 4.0, -1.0, 1.0) + kl1(2.0, 0.5, 2.5, 3.0);
    assert_close(got, expected, 1e-12, "3-D diagonal normal KL");
    // Not positive definite: an error, not NaN.
    assert!(multivariate_normal_kl(
        &[0.0, 0.0],
        &[1.0, 2.0, 2.0, 1.0],
        &[0.0, 0.0],
        &[1.0, 0.0, 0.0, 1.0]
    )
    .is_err());
}

/// The joint terms written out with loops: KL over the grid, the 2-D normal KL of the
/// grid moments (offsets in bins from each member's label, floor·I added), and the mean
/// of the two one-bin smoothness terms.
fn reference_joint(
    z: &[f64],
    p: &[f64],
    axes: [&Axis; 2],
    labels: [f64; 2],
    floor: f64,
) -> (f64, f64, f64) {
    let q = softmax(z);
    let (k1, k2) = (axes[0].len(), axes[1].len());
    let ld: f64 = p
        .iter()
        .zip(&q)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, q)| p * (p / q).ln())
        .sum();
    let o: Vec<Vec<f64>> = (0..2)
        .map(|j| {
            offsets(
                axes[j].centers(),
                labels[j],
                axes[j].step(),
                axes[j].period(),
            )
        })
        .collect();
    let moments = |r: &[f64]| {
        let mut m = [0.0; 2];
        for i in 0..k1 {
            for k in 0..k2 {
                m[0] += r[i * k2 + k] * o[0][i];
                m[1] += r[i * k2 + k] * o[1][k];
            }
        }
        let mut c = [0.0; 4];
        for i in 0..k1 {
            for k in 0..k2 {
                let (x, y) = (o[0][i] - m[0], o[1][k] - m[1]);
                let w = r[i * k2 + k];
                c[0] += w * x * x;
                c[1] += w * x * y;
                c[3] += w * y * y;
            }
        }
        c[2] = c[1];
        c[0] += floor;
        c[3] += floor;
        (m, c)
    };
    let (mp, cp) = moments(p);
    let (mq, cq) = moments(&q);
    let exp = normal_kl_2d(mp, cp, mq, cq);
    // Smoothness along dimension j: pairs of cells one bin apart along j.
    let mut smooth = 0.0;
    for j in 0..2 {
        let circular = axes[j].period().is_some();
        let kj = if j == 0 { k1 } else { k2 };
        let steps = if circular { kj } else { kj - 1 };
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..k1 {
            for k in 0..k2 {
                let along = if j == 0 { i } else { k };
                if along >= steps {
                    continue;
                }
                let next = (along + 1) % kj;
                let (ni, nk) = if j == 0 { (next, k) } else { (i, next) };
                a.push(q[ni * k2 + nk]);
                b.push(q[i * k2 + k]);
            }
        }
        let (sa, sb): (f64, f64) = (a.iter().sum(), b.iter().sum());
        let sym: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x / sa - y / sb) * ((x / sa).ln() - (y / sb).ln()))
            .sum();
        smooth += 0.25 * sym;
    }
    (ld, exp, smooth)
}

fn joint_case(axes: [Axis; 2], labels: [(f64, f64); 2], seed: u64, f32_logits: bool) {
    let space = LabelSpace::new(axes.to_vec())
        .unwrap()
        .with_joint(&[axes[0].name(), axes[1].name()])
        .unwrap();
    let samples = vec![labels
        .iter()
        .map(|&(y, s)| Label::value_with_std(y, s))
        .collect::<Vec<_>>()];
    let targets = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
    let bins = axes[0].len() * axes[1].len();
    let z = random_logits(&mut rng(seed), bins, 2.0);
    let p = to_vec(&joint_target(&[&targets[0].pmf, &targets[1].pmf]).unwrap());
    let values = [
        scalar(&targets[0].value.get(0).unwrap()),
        scalar(&targets[1].value.get(0).unwrap()),
    ];
    let (ld, exp, smooth) = reference_joint(&z, &p, [&axes[0], &axes[1]], values, 1e-3);
    let mut logits = matrix(&[z]);
    let tolerance = if f32_logits {
        logits = logits.to_dtype(DType::F32).unwrap();
        1e-4
    } else {
        1e-10
    };
    let parts = FullKl::default()
        .group_parts(&logits, &targets, &[&axes[0], &axes[1]])
        .unwrap();
    let (got_ld, got_exp, got_smooth) = (&parts["ld"], &parts["exp"], &parts["smooth"]);
    assert_close(scalar(&got_ld.get(0).unwrap()), ld, tolerance, "joint L_ld");
    assert_close(
        scalar(&got_exp.get(0).unwrap()),
        exp,
        tolerance,
        "joint L_exp",
    );
    assert_close(
        scalar(&got_smooth.get(0).unwrap()),
        smooth,
        tolerance,
        "joint L_smooth",
    );
    // The loss of the whole space reports the three parts under the group's name.
    let out = FullKl::default()
        .compute(&space, &[logits], &targets)
        .unwrap();
    let keys: Vec<String> = out.parts.iter().map(|p| p.key()).collect();
    let name = format!("{}+{}", axes[0].name(), axes[1].name());
    assert_eq!(
        keys,
        [
            format!("{name}/ld"),
            format!("{name}/exp"),
            format!("{name}/smooth")
        ]
    );
    assert_close(
        out.total_value().unwrap(),
        ld + exp + smooth,
        tolerance,
        "total",
    );
}

#[test]
fn joint_full_kl_terms_match_the_closed_forms() {
    joint_case([yaw(), pitch()], [(4.0, 6.0), (-7.0, 5.0)], 1, false);
    joint_case([yaw(), pitch()], [(29.0, 3.0), (20.0, 8.0)], 2, false);
    joint_case([yaw(), pitch()], [(-11.0, 4.0), (3.0, 4.0)], 3, true);
    // A circular member: offsets wrap, the shift along it is a rotation.
    joint_case([heading(), pitch()], [(170.0, 40.0), (0.0, 6.0)], 4, false);
}

#[test]
fn a_product_prediction_gives_the_sum_of_the_one_axis_terms() {
    // When prediction and target both factorise, the grid KL and the normal KL are sums
    // over the members and the smoothness is their mean (with a negligible floor, since
    // the 1-D floor is a maximum and the joint one is added).
    let axes = [heading(), pitch()];
    let separate = LabelSpace::new(axes.to_vec()).unwrap();
    let joint = separate.clone().with_joint(&["heading", "pitch"]).unwrap();
    let samples = vec![
        vec![
            Label::value_with_std(-175.0, 35.0),
            Label::value_with_std(12.0, 5.0),
        ],
        vec![
            Label::value_with_std(60.0, 50.0),
            Label::value_with_std(-3.0, 9.0),
        ],
    ];
    let targets = separate
        .targets(&samples, DType::F64, &Device::Cpu)
        .unwrap();
    let mut r = rng(9);
    let z1: Vec<Vec<f64>> = (0..2)
        .map(|_| random_logits(&mut r, axes[0].len(), 2.0))
        .collect();
    let z2: Vec<Vec<f64>> = (0..2)
        .map(|_| random_logits(&mut r, axes[1].len(), 2.0))
        .collect();
    let grid: Vec<Vec<f64>> = z1
        .iter()
        .zip(&z2)
        .map(|(a, b)| {
            a.iter()
                .flat_map(|x| b.iter().map(move |y| x + y))
                .collect()
        })
        .collect();
    let loss = FullKl::default().with_variance_floor(1e-12).unwrap();
    let one = loss
        .compute(&separate, &[matrix(&z1), matrix(&z2)], &targets)
        .unwrap();
    let both = loss.compute(&joint, &[matrix(&grid)], &targets).unwrap();
    let parts = |out: &ldl::loss::LossOutput| -> Vec<(String, f64)> { out.part_values().unwrap() };
    let one = parts(&one);
    let both = parts(&both);
    let get = |v: &[(String, f64)], key: &str| v.iter().find(|(k, _)| k == key).unwrap().1;
    for (component, scale) in [("ld", 1.0), ("exp", 1.0), ("smooth", 0.5)] {
        let expected = scale
            * (get(&one, &format!("heading/{component}"))
                + get(&one, &format!("pitch/{component}")));
        assert_close(
            get(&both, &format!("heading+pitch/{component}")),
            expected,
            1e-9,
            component,
        );
    }
    // DLDL's KL and DLDL-v2's L1 (on the marginals) behave the same way.
    let kl_one = Kl
        .compute(&separate, &[matrix(&z1), matrix(&z2)], &targets)
        .unwrap();
    let kl_both = Kl.compute(&joint, &[matrix(&grid)], &targets).unwrap();
    assert_close(
        kl_both.total_value().unwrap(),
        kl_one.total_value().unwrap(),
        1e-10,
        "KL",
    );
    let v2 = DldlV2::new(0.5).unwrap();
    let v2_one = parts(
        &v2.compute(&separate, &[matrix(&z1), matrix(&z2)], &targets)
            .unwrap(),
    );
    let v2_both = parts(&v2.compute(&joint, &[matrix(&grid)], &targets).unwrap());
    for key in ["heading/l1", "pitch/l1"] {
        assert_close(get(&v2_both, key), get(&v2_one, key), 1e-9, key);
    }
}

#[test]
fn joint_loss_gradients_match_finite_differences() {
    let axes = [yaw(), heading()];
    let space = LabelSpace::new(axes.to_vec())
        .unwrap()
        .with_joint(&["yaw", "heading"])
        .unwrap();
    let samples = vec![
        vec![
            Label::value_with_std(-26.0, 4.0),
            Label::value_with_std(175.0, 30.0),
        ],
        vec![
            Label::value_with_std(8.0, 7.0),
            Label::value_with_std(-20.0, 45.0),
        ],
    ];
    let targets = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
    let mut r = rng(5);
    let bins = axes[0].len() * axes[1].len();
    let z: Vec<Vec<f64>> = (0..2).map(|_| random_logits(&mut r, bins, 1.5)).collect();
    let loss = FullKl::default();
    let worst = gradient_check(
        &z,
        |logits| {
            loss.compute(&space, std::slice::from_ref(logits), &targets)
                .unwrap()
                .total
        },
        1e-5,
    );
    assert!(
        worst < 1e-6,
        "joint full-KL gradient: relative error {worst:e}"
    );
}

#[test]
fn joint_loss_is_unchanged_by_a_change_of_unit() {
    // Degrees → radians on both members: every joint term is in nats and unit-free.
    let value = |scale: f64| {
        let a = Axis::linear("yaw", -30.0 * scale, 30.0 * scale, 3.0 * scale).unwrap();
        let b = Axis::circular("heading", -180.0 * scale, 360.0 * scale, 30.0 * scale).unwrap();
        let space = LabelSpace::new(vec![a, b])
            .unwrap()
            .with_joint(&["yaw", "heading"])
            .unwrap();
        let samples = vec![vec![
            Label::value_with_std(5.0 * scale, 4.0 * scale),
            Label::value_with_std(-160.0 * scale, 40.0 * scale),
        ]];
        let targets = space.targets(&samples, DType::F64, &Device::Cpu).unwrap();
        let z = vec![random_logits(&mut rng(3), 21 * 12, 2.0)];
        FullKl::default()
            .compute(&space, &[matrix(&z)], &targets)
            .unwrap()
            .part_values()
            .unwrap()
    };
    let degrees = value(1.0);
    let radians = value(std::f64::consts::PI / 180.0);
    for ((key, d), (_, r)) in degrees.iter().zip(&radians) {
        assert_close(*r, *d, 1e-9, key);
    }
}

#[test]
fn metrics_of_a_joint_head_are_those_of_its_marginals() {
    let axes = [yaw(), pitch()];
    let separate = LabelSpace::new(axes.to_vec()).unwrap();
    let joint = separate.clone().with_joint(&["yaw", "pitch"]).unwrap();
    let samples = vec![
        vec![
            Label::value_with_std(10.0, 3.0),
            Label::value_with_std(-4.0, 4.0),
        ],
        vec![
            Label::value_with_std(-22.0, 5.0),
            Label::value_with_std(16.0, 4.0),
        ],
    ];
    let targets = separate
        .targets(&samples, DType::F64, &Device::Cpu)
        .unwrap();
    // A correlated grid prediction; its marginals go to the one-axis metrics.
    let mut r = rng(17);
    let grid: Vec<Vec<f64>> = (0..2)
        .map(|_| random_logits(&mut r, axes[0].len() * axes[1].len(), 3.0))
        .collect();
    let q: Vec<Vec<f64>> = grid.iter().map(|z| softmax(z)).collect();
    let shape = [axes[0].len(), axes[1].len()];
    let m = marginals(&matrix(&q), &shape).unwrap();
    let log_m: Vec<Tensor> = m.iter().map(|t| t.log().unwrap()).collect();
    let mut by_axis = Metrics::new(&separate);
    by_axis.update(&log_m, &targets).unwrap();
    let mut by_grid = Metrics::new(&joint);
    by_grid.update(&[matrix(&grid)], &targets).unwrap();
    let (a, b) = (by_axis.report(), by_grid.report());
    for name in ["yaw", "pitch"] {
        let (x, y) = (a.axis(name).unwrap(), b.axis(name).unwrap());
        assert_close(y.mae.unwrap(), x.mae.unwrap(), 1e-9, name);
        assert_close(y.ldl.kl_divergence, x.ldl.kl_divergence, 1e-9, name);
    }
    // Estimates decode from the marginals too.
    let estimates = joint.decode_logits(&[matrix(&grid)]).unwrap();
    let (mean, _) = mean_var(&to_vec(&m[0].get(1).unwrap()), axes[0].centers());
    assert_close(
        estimates[1][0].as_value().unwrap().mean,
        mean,
        1e-9,
        "yaw mean",
    ); // sample 1, axis 0
}

#[test]
fn joint_groups_are_checked_and_stored() {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        yaw(),
        pitch(),
        Axis::categorical("emotion", ["happy", "sad"]).unwrap(),
    ])
    .unwrap();
    let err = |members: &[&str]| space.clone().with_joint(members).unwrap_err().to_string();
    assert!(err(&["yaw"]).contains("two or more"), "{}", err(&["yaw"]));
    assert!(err(&["yaw", "roll"]).contains("no axis `roll`"));
    assert!(err(&["yaw", "emotion"]).contains("categorical"));
    assert!(err(&["yaw", "yaw"]).contains("twice"));
    let joint = space.clone().with_joint(&["pitch", "yaw"]).unwrap();
    let again = joint
        .clone()
        .with_joint(&["yaw", "age"])
        .unwrap_err()
        .to_string();
    assert!(again.contains("already in the group"), "{again}");
    let heads: Vec<(&str, usize)> = joint.heads().iter().map(|h| (h.name(), h.bins())).collect();
    assert_eq!(
        heads,
        [("age", 101), ("pitch+yaw", 11 * 21), ("emotion", 2)]
    );
    // Stored and read back (checkpoints keep it as JSON); a space without groups keeps
    // the plain list of axes that earlier checkpoints hold.
    let json = serde_json::to_string(&joint).unwrap();
    assert_eq!(serde_json::from_str::<LabelSpace>(&json).unwrap(), joint);
    let plain = serde_json::to_value(&space).unwrap();
    assert!(plain.is_array());
    // A huge grid is refused before anything is allocated.
    let wide = LabelSpace::new(vec![
        Axis::linear("a", 0.0, 9999.0, 1.0).unwrap(),
        Axis::linear("b", 0.0, 9999.0, 1.0).unwrap(),
    ])
    .unwrap();
    assert!(wide
        .with_joint(&["a", "b"])
        .unwrap_err()
        .to_string()
        .contains("bins"));
}

#[test]
fn a_model_has_one_head_per_group_and_survives_a_checkpoint() {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 10.0, 1.0).unwrap(),
        yaw(),
        pitch(),
    ])
    .unwrap()
    .with_joint(&["yaw", "pitch"])
    .unwrap();
    let config = BackboneConfig::Mlp(MlpConfig {
        inputs: 3,
        hidden: vec![8],
        batch_norm: false,
        dropout: 0.0,
        separate_trunks: false,
        ensemble: 1,
        linear_path: false,
    });
    let model = Model::build(&config, &space, 7, &Device::Cpu).unwrap();
    let vars = model.vars().clone();
    let x = Tensor::new(&[[0.1f32, -0.3, 0.7], [1.0, 0.2, -0.5]], &Device::Cpu).unwrap();
    let logits = model.forward_t(&x, false).unwrap();
    let dims: Vec<Vec<usize>> = logits.iter().map(|z| z.dims().to_vec()).collect();
    assert_eq!(dims, [vec![2, 11], vec![2, 21 * 11]]);
    assert_eq!(
        config.stored_elements(&space),
        vars.all_vars()
            .iter()
            .map(|v| v.elem_count() as u128)
            .sum::<u128>()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("joint.safetensors");
    model.save(&path).unwrap();
    let (loaded, _) = Model::from_checkpoint(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.label_space(), &space);
    let again = loaded.forward_t(&x, false).unwrap();
    for (a, b) in logits.iter().zip(&again) {
        assert_eq!(f64_rows(a), f64_rows(b));
    }
}

#[test]
fn two_groups_cannot_share_a_head_name() {
    // `a`+`b+c` and `a+b`+`c` would both be `a+b+c`, and share one set of weights.
    let axis = |name: &str| Axis::linear(name, 0.0, 3.0, 1.0).unwrap();
    let space = LabelSpace::new(vec![axis("a"), axis("b+c"), axis("a+b"), axis("c")])
        .unwrap()
        .with_joint(&["a", "b+c"])
        .unwrap();
    let err = space.with_joint(&["a+b", "c"]).unwrap_err().to_string();
    assert!(
        err.contains("`a+b+c`") && err.contains("another group"),
        "{err}"
    );
}

#[test]
fn joint_l_exp_stays_accurate_in_f32_on_a_large_grid() {
    // A prediction concentrated on the diagonal of a 1000 × 1000 grid: its covariance is
    // nearly singular and its variances are of order K²/12, next to which the floor
    // vanishes in f32. The f32 loss must agree with the f64 one, not turn NaN.
    let k = 1000;
    let a = Axis::linear("a", 0.0, (k - 1) as f64, 1.0).unwrap();
    let b = Axis::linear("b", 0.0, (k - 1) as f64, 1.0).unwrap();
    let space = LabelSpace::new(vec![a, b])
        .unwrap()
        .with_joint(&["a", "b"])
        .unwrap();
    let labels = vec![vec![Label::value(500.0), Label::value(500.0)]];
    let mut z = vec![-60.0f64; k * k];
    for i in 0..k {
        z[i * k + i] = 0.0;
    }
    let logits = Tensor::from_vec(z, (1, k * k), &Device::Cpu).unwrap();
    let exp = |dtype: DType| {
        let targets = space.targets(&labels, dtype, &Device::Cpu).unwrap();
        let out = FullKl::default()
            .compute(&space, &[logits.to_dtype(dtype).unwrap()], &targets)
            .unwrap();
        out.part_values()
            .unwrap()
            .into_iter()
            .find(|(key, _)| key == "a+b/exp")
            .unwrap()
            .1
    };
    let (single, double) = (exp(DType::F32), exp(DType::F64));
    assert!(double.is_finite() && double > 1000.0, "{double}");
    assert_close(single, double, 1e-3, "f32 joint L_exp");
}
