//! Images: decoding, resizing, augmentation with its label changes, and the parallel
//! loader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldl::data::{
    decode, Augment, Geometry, ImageLoader, ImagePipeline, Input, LabelEffects, Sample,
    SampleOrigin, Shard,
};
use ldl::{Axis, Label, LabelSpace};

/// A 40×30 image: dark left half, bright right half, a red mark at the top left.
fn asymmetric(path: &Path) {
    let image = image::RgbImage::from_fn(40, 30, |x, y| {
        if x < 4 && y < 4 {
            image::Rgb([255, 0, 0])
        } else if x < 20 {
            image::Rgb([20, 20, 20])
        } else {
            image::Rgb([230, 230, 230])
        }
    });
    image.save(path).unwrap();
}

fn pose_space() -> LabelSpace {
    LabelSpace::new(vec![
        Axis::linear("yaw", -90.0, 90.0, 3.0).unwrap(),
        Axis::linear("roll", -45.0, 45.0, 3.0).unwrap(),
        Axis::linear("age", 0.0, 100.0, 1.0).unwrap(),
    ])
    .unwrap()
}

fn sample(path: PathBuf, line: usize, yaw: f64) -> Sample {
    Sample {
        input: Input::ImagePath(path.clone()),
        labels: vec![Label::value(yaw), Label::value(10.0), Label::value(40.0)],
        group: None,
        split: None,
        origin: SampleOrigin::line(Arc::new(PathBuf::from("manifest.csv")), line),
    }
}

#[test]
fn images_decode_and_resize_to_normalised_squares() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.png", "a.jpg"] {
        let path = dir.path().join(name);
        asymmetric(&path);
        let image = decode(&path).unwrap();
        assert_eq!((image.width, image.height), (40, 30));
        let (pixels, geometry) = ImagePipeline::new(16)
            .process(&image, &Augment::default(), None)
            .unwrap();
        assert_eq!(pixels.len(), 3 * 16 * 16);
        assert_eq!(
            geometry,
            Geometry {
                flipped: false,
                rotation: 0.0
            }
        );
        // Centre crop of the shorter side: the left columns are dark, the right ones bright,
        // both scaled into [−1, 1].
        assert!(pixels[16 * 8 + 2] < -0.7, "{}", pixels[16 * 8 + 2]);
        assert!(pixels[16 * 8 + 13] > 0.7, "{}", pixels[16 * 8 + 13]);
    }
    std::fs::write(
        dir.path().join("bad.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    let err = decode(&dir.path().join("bad.jpg")).unwrap_err().to_string();
    assert!(
        err.contains("bad.jpg") && err.contains("cannot decode"),
        "{err}"
    );
    let err = decode(&dir.path().join("none.png"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("none.png"), "{err}");
}

#[test]
fn label_effects_follow_the_geometry() {
    let space = pose_space();
    let effects = LabelEffects::head_pose();
    let labels = vec![Label::value(30.0), Label::value(10.0), Label::value(40.0)];
    let flipped = effects
        .apply(
            &space,
            &labels,
            Geometry {
                flipped: true,
                rotation: 0.0,
            },
        )
        .unwrap();
    assert_eq!(
        flipped,
        vec![Label::value(-30.0), Label::value(-10.0), Label::value(40.0)]
    );
    let rotated = effects
        .apply(
            &space,
            &labels,
            Geometry {
                flipped: false,
                rotation: 7.5,
            },
        )
        .unwrap();
    assert_eq!(rotated[1], Label::value(17.5));
    // Past the end of a linear axis: clamped.
    let near_end = vec![Label::value(0.0), Label::value(42.0), Label::value(1.0)];
    let moved = effects
        .apply(
            &space,
            &near_end,
            Geometry {
                flipped: false,
                rotation: 9.0,
            },
        )
        .unwrap();
    assert_eq!(moved[1], Label::value(45.0));
    // A distribution on a symmetric axis is mirrored by reversing its bins.
    let mut pmf = vec![0.0; 61];
    pmf[40] = 1.0; // 30°
    let labels = vec![
        Label::Distribution(pmf),
        Label::value(0.0),
        Label::value(1.0),
    ];
    let flipped = effects
        .apply(
            &space,
            &labels,
            Geometry {
                flipped: true,
                rotation: 0.0,
            },
        )
        .unwrap();
    let Label::Distribution(mirrored) = &flipped[0] else {
        panic!()
    };
    assert_eq!(mirrored[20], 1.0); // −30°
}

#[test]
fn flipping_an_image_negates_its_yaw_and_roll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("face.png");
    asymmetric(&path);
    let space = pose_space();
    let samples: Vec<Sample> = (0..16).map(|i| sample(path.clone(), i + 2, 30.0)).collect();
    let flip_only = Augment {
        flip: true,
        ..Augment::default()
    };
    let loader = ImageLoader::new(samples, &space, ImagePipeline::new(16), 16, 2)
        .unwrap()
        .shuffled(3)
        .augmented(flip_only, LabelEffects::head_pose())
        .unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    let images = batch
        .inputs
        .flatten_from(1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let yaws = batch.targets[0].value.to_vec1::<f32>().unwrap();
    let rolls = batch.targets[1].value.to_vec1::<f32>().unwrap();
    let mut seen = [false, false];
    for ((image, yaw), roll) in images.iter().zip(&yaws).zip(&rolls) {
        // Red channel, middle row: bright on the right unless mirrored.
        let mirrored = image[16 * 8 + 2] > image[16 * 8 + 13];
        seen[usize::from(mirrored)] = true;
        assert_eq!(*yaw, if mirrored { -30.0 } else { 30.0 });
        assert_eq!(*roll, if mirrored { -10.0 } else { 10.0 });
    }
    assert_eq!(
        seen,
        [true, true],
        "both flipped and unflipped samples occur"
    );
}

#[test]
fn the_loader_is_seeded_and_independent_of_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("face.png");
    asymmetric(&path);
    let space = pose_space();
    let samples: Vec<Sample> = (0..10)
        .map(|i| sample(path.clone(), i + 2, i as f64))
        .collect();
    let load = |threads: usize, seed: u64| -> Vec<(Vec<usize>, Vec<f32>)> {
        ImageLoader::new(samples.clone(), &space, ImagePipeline::new(24), 4, threads)
            .unwrap()
            .shuffled(seed)
            .augmented(Augment::dldl_v2(), LabelEffects::head_pose())
            .unwrap()
            .epoch(1)
            .map(|b| {
                let b = b.unwrap();
                (
                    b.indices,
                    b.inputs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect()
    };
    let one = load(1, 5);
    assert_eq!(one, load(2, 5));
    assert_ne!(one, load(2, 6));
    assert_eq!(one.len(), 3);
    let mut seen: Vec<usize> = one.iter().flat_map(|(i, _)| i.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

#[test]
fn an_undecodable_image_names_its_file_and_manifest_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    asymmetric(&good);
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let space = pose_space();
    let samples = vec![sample(good, 2, 0.0), sample(bad, 3, 0.0)];
    let loader = ImageLoader::new(samples, &space, ImagePipeline::new(16), 2, 1).unwrap();
    let err = loader.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(
        err.contains("broken.png") && err.contains("manifest.csv:3"),
        "{err}"
    );
}

/// A path to a device, a FIFO or a folder is refused by `decode` at once, naming what it
/// is: `/dev/zero` is not read without end, and a FIFO with no writer does not block.
#[cfg(unix)]
#[test]
fn decoding_a_special_file_says_what_it_is_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![
        (PathBuf::from("/dev/zero"), "is a character device"),
        (dir.path().to_path_buf(), "is a directory"),
    ];
    let fifo = dir.path().join("fifo.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|status| status.success()) {
        cases.push((fifo, "is a FIFO (named pipe)"));
    } else {
        eprintln!("note: no mkfifo here; the FIFO case is left out");
    }
    for (path, expected) in cases {
        let err = decode(&path).unwrap_err().to_string();
        assert_eq!(
            err.split_once(": ")
                .map(|(p, m)| (p, m.starts_with(expected))),
            Some((path.to_str().unwrap(), true)),
            "{err}"
        );
    }
}

/// With `on_bad_sample = skip`, an undecodable image leaves its batch, is listed once with
/// its manifest line, and a batch of nothing but bad images is not yielded at all.
#[test]
fn undecodable_images_are_skipped_and_listed_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    asymmetric(&good);
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let space = pose_space();
    // Batches of two: [good, bad], [bad, bad], [good].
    let samples = vec![
        sample(good.clone(), 2, 0.0),
        sample(bad.clone(), 3, 0.0),
        sample(bad.clone(), 4, 0.0),
        sample(bad, 5, 0.0),
        sample(good, 6, 0.0),
    ];
    let loader = ImageLoader::new(samples, &space, ImagePipeline::new(16), 2, 2)
        .unwrap()
        .on_bad_sample(ldl::data::OnBadSample::Skip);
    for epoch in 0..2 {
        let batches: Vec<Vec<usize>> = loader.epoch(epoch).map(|b| b.unwrap().indices).collect();
        assert_eq!(batches, [vec![0], vec![4]]);
    }
    let skipped = loader.skipped();
    let locations: Vec<&str> = skipped.iter().map(|s| s.location.as_str()).collect();
    assert_eq!(locations.len(), 3, "{skipped:?}");
    for (location, line) in locations.iter().zip([3, 4, 5]) {
        assert!(
            location.ends_with(&format!("manifest.csv:{line}")),
            "{location}"
        );
    }
    assert!(skipped.iter().all(|s| s.reason.contains("broken.png")));
}

/// Data-parallel training: the two ranks' batches, put side by side, are the batches one
/// process cuts with the global batch (the same samples in the same order, augmented
/// alike), the last, partial one split 2 + 3.
#[test]
fn two_shards_of_each_batch_make_the_one_process_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("face.png");
    asymmetric(&path);
    let space = pose_space();
    let samples: Vec<Sample> = (0..11)
        .map(|i| sample(path.clone(), i + 2, i as f64))
        .collect();
    let load = |batch: usize, shard: Shard| -> Vec<(Vec<usize>, Vec<f32>)> {
        let loader = ImageLoader::new(samples.clone(), &space, ImagePipeline::new(16), batch, 2)
            .unwrap()
            .sharded(shard)
            .shuffled(3)
            .augmented(Augment::dldl_v2(), LabelEffects::head_pose())
            .unwrap();
        assert_eq!(loader.batches(), 2);
        loader
            .epoch(2)
            .map(|b| {
                let b = b.unwrap();
                (
                    b.indices,
                    b.inputs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect()
    };
    let whole = load(6, Shard::WHOLE);
    let first = load(3, Shard { rank: 0, world: 2 });
    let second = load(3, Shard { rank: 1, world: 2 });
    assert_eq!(whole.len(), 2);
    assert_eq!(
        (first[1].0.len(), second[1].0.len()),
        (2, 3),
        "the last batch of 5 splits 2 + 3"
    );
    for ((a, b), joined) in first.iter().zip(&second).zip(&whole) {
        let indices: Vec<usize> = a.0.iter().chain(&b.0).copied().collect();
        assert_eq!(indices, joined.0);
        let pixels: Vec<f32> = a.1.iter().chain(&b.1).copied().collect();
        assert_eq!(pixels, joined.1);
    }
}
