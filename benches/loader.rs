//! Image loading throughput: decode + resize + DLDL-v2 augmentation + normalisation of
//! 250×250 JPEGs into 64×64 batches of 32, on the loader's own 2 threads; and the
//! synthetic face generator at 64×64 (one thread).
//!
//! `cargo bench --bench loader`

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ldl::data::{Augment, ImageLoader, ImagePipeline, Input, LabelEffects, Sample, SampleOrigin};
use ldl::{Axis, Label, LabelSpace};

const IMAGES: usize = 128;

fn jpegs(dir: &std::path::Path) -> Vec<PathBuf> {
    (0..IMAGES)
        .map(|i| {
            // Smooth gradients with a little structure, as a face crop compresses.
            let image = image::RgbImage::from_fn(250, 250, |x, y| {
                let v = ((x * 7 + y * 3 + i as u32 * 11) % 256) as u8;
                image::Rgb([v, v.wrapping_add(40), 255 - v])
            });
            let path = dir.join(format!("{i}.jpg"));
            image.save(&path).unwrap();
            path
        })
        .collect()
}

fn bench_loader(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
        Axis::linear("yaw", -90.0, 90.0, 3.0).unwrap(),
    ])
    .unwrap();
    let samples: Vec<Sample> = jpegs(dir.path())
        .into_iter()
        .enumerate()
        .map(|(i, path)| Sample {
            input: Input::ImagePath(path),
            labels: vec![Label::value(30.0), Label::value(12.0)],
            group: None,
            split: None,
            origin: SampleOrigin::line(Arc::new(PathBuf::from("bench")), i + 2),
        })
        .collect();
    let loader = ImageLoader::new(samples, &space, ImagePipeline::new(64), 32, 2)
        .unwrap()
        .shuffled(0)
        .augmented(
            Augment::dldl_v2(),
            LabelEffects {
                negate_on_flip: vec!["yaw".into()],
                rotation_adds_to: None,
            },
        )
        .unwrap();
    let mut group = c.benchmark_group("loader");
    group.throughput(Throughput::Elements(IMAGES as u64));
    group.sample_size(10);
    let mut epoch = 0;
    group.bench_function("jpeg_250_to_64_augmented", |b| {
        b.iter(|| {
            epoch += 1;
            loader
                .epoch(epoch)
                .map(|batch| batch.unwrap().indices.len())
                .sum::<usize>()
        })
    });
    group.finish();
}

fn bench_generator(c: &mut Criterion) {
    let config = ldl::data::SynthConfig::default();
    let mut group = c.benchmark_group("synthetic_faces");
    group.throughput(Throughput::Elements(100));
    let mut start = 0u64;
    group.bench_function("render_100_at_64", |b| {
        b.iter(|| {
            start += 100;
            (start..start + 100)
                .map(|i| ldl::data::render(&config, i).image.pixels[0] as u64)
                .sum::<u64>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_loader, bench_generator);
criterion_main!(benches);
