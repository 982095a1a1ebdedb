//! A researcher's own problem through the library: three axes of three kinds (age in
//! years, wind direction on a circle, income on log-spaced centres), 2,000 samples in
//! memory, an MLP with a head per axis, the full-KL loss, and a saved model.
//! `cargo run --release --example custom_axes`; docs/library.md walks through it.

use ldl::loss::FullKl;
use ldl::train::Progress;
use ldl::{Axis, AxisEstimate, CircularBins, Control, Dataset, Label, LabelSpace, LinearBins};
use ldl::{BackboneConfig, Device, Model, Tensor, Trainer};
use rand::{Rng, SeedableRng};

pub fn main() -> ldl::Result<()> {
    let age = LinearBins {
        min: 18.0,
        max: 90.0,
        step: 1.0,
    };
    let wind = CircularBins {
        start: 0.0,
        period: 360.0,
        step: 10.0,
    };
    let income = (0..=24).map(|i| 5_000.0 * 1.2f64.powi(i)).collect();
    let space = LabelSpace::new(vec![
        Axis::linear_bins("age", age)?.with_unit("years"),
        Axis::circular_bins("wind", wind)?.with_unit("degrees"),
        Axis::from_centers("income", income)?.with_unit("USD"),
    ])?;

    // Four measurements per sample, and the labels they determine up to noise.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..2000 {
        let x: [f32; 4] = std::array::from_fn(|_| rng.gen_range(-1.0..1.0));
        let [a, b, c, d] = x.map(f64::from);
        let mut noise = |scale: f64| scale * rng.gen_range(-1.0..1.0);
        let age = 54.0 + 30.0 * a + noise(3.0);
        let wind = c.atan2(b).to_degrees().rem_euclid(360.0);
        let income = 40_000.0 * (1.2 * d + 0.4 * a + noise(0.1)).exp();
        features.push(x.to_vec());
        labels.push([age, wind, income].map(Label::value).to_vec());
    }
    let splits = Dataset::from_features(&space, features, labels)?.split(0.15, 0.15, 1)?;

    let model = Model::build(&BackboneConfig::mlp(4, [64, 64]), &space, 1, &Device::Cpu)?;
    let mut trainer = Trainer::new(model, FullKl::new())
        .epochs(60)
        .learning_rate(3e-3)
        .lr_steps(40, 0.1)
        .patience(10);
    let fit = trainer.fit(&splits.train, &splits.validation, |event| {
        match event {
            Progress::Epoch(e) if e.epoch % 20 == 0 => {
                println!("epoch {}: {:.4}", e.epoch, e.train.total)
            }
            _ => {}
        }
        Control::Continue
    })?;
    println!("best epoch {} of {}", fit.best_epoch, fit.epochs.len());

    // Test MAE per axis beside the training-mean predictor's.
    let report = trainer.evaluate(&splits.test)?;
    for axis in space.axes() {
        let mae = report.mae(axis.name()).unwrap_or(f64::NAN);
        let baseline = report.baseline(axis.name()).unwrap_or(f64::NAN);
        let (name, unit, ratio) = (axis.name(), axis.unit(), mae / baseline);
        println!(
            "{name:>6}: test MAE {mae:>8.2} {unit}, mean predictor {baseline:>8.2} ({ratio:.2}×)"
        );
    }

    // The model saves itself with its label space and loads back the same.
    let path = std::env::temp_dir().join(format!("custom-axes-{}", std::process::id()));
    trainer.model().save(&path)?;
    let loaded = Model::load(&path, &Device::Cpu)?;
    std::fs::remove_file(&path)?;
    let x = Tensor::new(&[[0.5f32, 0.0, 1.0, 0.2]], &Device::Cpu)?;
    let estimates = loaded.predict(&x)?;
    assert_eq!(estimates, trainer.model().predict(&x)?);
    if let AxisEstimate::Value(age) = &estimates[0][0] {
        println!("age at x: {:.1} ± {:.1} years", age.mean, age.std);
    }
    Ok(())
}
