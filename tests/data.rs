//! Data: tables (CSV, JSONL), every bad-input case, splits, standardisation, batches,
//! and the built-in real datasets.

use std::collections::HashSet;
use std::path::Path;

use ldl::data::{
    read_builtin, read_csv, read_jsonl, split_by_column, split_by_fractions, FeatureLoader,
    FeatureNoise, Input, InputColumns, LabelColumns, OnBadSample, SplitNames, Standardizer,
    TableSpec,
};
use ldl::{Axis, Label, LabelSpace};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn age_space() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap()
}

fn age_spec() -> TableSpec {
    TableSpec::new(InputColumns::AllOtherColumns).with_label(
        "age",
        LabelColumns::Value {
            value: "age".into(),
            std: Some("age_std".into()),
        },
    )
}

#[test]
fn csv_tables_give_features_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.csv",
        "a,age,b,age_std\n1.5,30,2,3.5\n-1,41.5,0.25,2\n",
    );
    let table = read_csv(&path, &age_spec(), &age_space(), OnBadSample::Error).unwrap();
    assert_eq!(table.feature_names, ["a", "b"]);
    assert_eq!(table.samples.len(), 2);
    assert_eq!(table.samples[0].input, Input::Features(vec![1.5, 2.0]));
    assert_eq!(
        table.samples[1].labels,
        vec![Label::value_with_std(41.5, 2.0)]
    );
    assert_eq!(table.samples[1].origin.line, 3);
}

#[test]
fn every_bad_row_names_its_file_line_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let space = age_space();
    let cases = [
        (
            "not_a_number.csv",
            "a,age,age_std\nx,30,2\n",
            "not_a_number.csv:2: column `a`: `x` is not a number",
        ),
        (
            "empty.csv",
            "",
            "empty.csv: is empty: a table starts with a header row",
        ),
        (
            "header_only.csv",
            "a,age,age_std\n",
            "header_only.csv: has a header row but no rows of samples under it",
        ),
        (
            "same_name.csv",
            "a,age,a,age_std\n1,30,2,2\n",
            "same_name.csv: columns 1 and 3 are both named `a`; rename one",
        ),
        (
            "nan.csv",
            "a,age,age_std\n1,NaN,2\n",
            "nan.csv:2: column `age`: NaN is not a finite number",
        ),
        (
            "out_of_range.csv",
            "a,age,age_std\n1,30,2\n1,130,2\n",
            "out_of_range.csv:3: axis `age`: label value 130 is outside",
        ),
        (
            "bad_std.csv",
            "a,age,age_std\n1,30,0\n",
            "bad_std.csv:2: axis `age`: label std must be finite and > 0",
        ),
        (
            "short_row.csv",
            "a,age,age_std\n1,30\n",
            "short_row.csv:2: cannot parse the row",
        ),
        (
            "empty_cell.csv",
            "a,age,age_std\n1,,2\n",
            "empty_cell.csv:2: column `age`: `` is not a number",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write(dir.path(), name, text);
        let err = read_csv(&path, &age_spec(), &space, OnBadSample::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
    // A missing column names the file and lists the columns there are.
    let path = write(dir.path(), "missing.csv", "a,years\n1,30\n");
    let err = read_csv(&path, &age_spec(), &space, OnBadSample::Error)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.csv: no column `age`; the columns are: a, years"),
        "{err}"
    );
    // A missing file.
    let err = read_csv(
        &dir.path().join("none.csv"),
        &age_spec(),
        &space,
        OnBadSample::Error,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("none.csv"), "{err}");
}

#[test]
fn bad_samples_can_be_skipped_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.csv",
        "a,age,age_std\n1,30,2\nx,31,2\n1,300,2\n2,32,2\n",
    );
    let table = read_csv(&path, &age_spec(), &age_space(), OnBadSample::Skip).unwrap();
    assert_eq!(table.samples.len(), 2);
    assert_eq!(table.skipped.len(), 2);
    assert!(
        table.skipped[0].location.ends_with("t.csv:3"),
        "{:?}",
        table.skipped
    );
    assert!(
        table.skipped[1].reason.contains("outside the axis range"),
        "{:?}",
        table.skipped
    );
}

#[test]
fn distributions_classes_and_images_are_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    std::fs::write(dir.path().join("img/a.png"), b"").unwrap();
    let space = LabelSpace::new(vec![
        Axis::categorical("emotion", ["happy", "sad", "calm"]).unwrap(),
        Axis::categorical("mood", ["up", "down"]).unwrap(),
    ])
    .unwrap();
    let spec = TableSpec::new(InputColumns::Image("path".into()))
        .with_label(
            "emotion",
            LabelColumns::Distribution(vec!["p0".into(), "p1".into(), "p2".into()]),
        )
        .with_label("mood", LabelColumns::Class("mood".into()))
        .with_group("person");
    let path = write(
        dir.path(),
        "m.csv",
        "path,p0,p1,p2,mood,person\nimg/a.png,0.2,0.5,0.3,down,7\n",
    );
    let table = read_csv(&path, &spec, &space, OnBadSample::Error).unwrap();
    let sample = &table.samples[0];
    assert_eq!(sample.input, Input::ImagePath(dir.path().join("img/a.png")));
    assert_eq!(
        sample.labels,
        vec![Label::Distribution(vec![0.2, 0.5, 0.3]), Label::Class(1)]
    );
    assert_eq!(sample.group.as_deref(), Some("7"));
    let cases = [
        (
            "path,p0,p1,p2,mood,person\nimg/b.png,0.2,0.5,0.3,up,1\n",
            "image `img/b.png` not found",
        ),
        (
            "path,p0,p1,p2,mood,person\nimg/a.png,0.2,0.5,0.5,up,1\n",
            "sums to 1.2",
        ),
        (
            "path,p0,p1,p2,mood,person\nimg/a.png,0.7,-0.1,0.4,up,1\n",
            "column `p1`: -0.1 is negative; a distribution's entries are ≥ 0",
        ),
        (
            "path,p0,p1,p2,mood,person\nimg/a.png,0.2,0.5,0.3,sideways,1\n",
            "`sideways` is not one of its classes (up, down)",
        ),
        (
            "path,p0,p1,p2,mood,person\nimg/a.png,0.2,0.5,0.3,up,\n",
            "column `person` is empty",
        ),
    ];
    for (text, expected) in cases {
        let path = write(dir.path(), "bad.csv", text);
        let err = read_csv(&path, &spec, &space, OnBadSample::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.csv:2:") && err.contains(expected),
            "{err}"
        );
    }
}

/// An image path naming a folder, a FIFO or a device is refused when the manifest is
/// read, saying what it is instead of "not found"; nothing is opened, so nothing blocks.
#[cfg(unix)]
#[test]
fn a_manifest_image_that_is_no_regular_file_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("folder.png")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.png")).unwrap();
    let mut cases = vec![
        ("folder.png", "is a directory, not a file"),
        ("zero.png", "is a character device, not a regular file"),
    ];
    let fifo = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo.png"))
        .status();
    if fifo.is_ok_and(|status| status.success()) {
        cases.push(("fifo.png", "is a FIFO (named pipe), not a regular file"));
    } else {
        eprintln!("note: no mkfifo here; the FIFO case is left out");
    }
    let spec = TableSpec::new(InputColumns::Image("path".into())).with_label(
        "age",
        LabelColumns::Value {
            value: "age".into(),
            std: None,
        },
    );
    for (name, expected) in cases {
        let path = write(dir.path(), "m.csv", &format!("path,age\n{name},30\n"));
        let err = read_csv(&path, &spec, &age_space(), OnBadSample::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.csv:2:") && err.contains(name) && err.contains(expected),
            "{err}"
        );
    }
}

#[test]
fn jsonl_tables_are_read_and_bad_lines_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.jsonl",
        "{\"a\": 1.5, \"age\": 30, \"age_std\": 2}\n\n{\"age_std\": 3, \"a\": 2, \"age\": 40}\n",
    );
    let table = read_jsonl(&path, &age_spec(), &age_space(), OnBadSample::Error).unwrap();
    assert_eq!(table.samples.len(), 2);
    assert_eq!(table.samples[1].input, Input::Features(vec![2.0]));
    assert_eq!(table.samples[1].origin.line, 3);
    let path = write(
        dir.path(),
        "bad.jsonl",
        "{\"a\": 1, \"age\": 30, \"age_std\": 2}\n{\"a\": 1, \"age\": 30\n",
    );
    let err = read_jsonl(&path, &age_spec(), &age_space(), OnBadSample::Error)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.jsonl:2: not valid JSON"), "{err}");
    let path = write(
        dir.path(),
        "null.jsonl",
        "{\"a\": 1, \"age\": null, \"age_std\": 2}\n",
    );
    let err = read_jsonl(&path, &age_spec(), &age_space(), OnBadSample::Error)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("null.jsonl:1: column `age` is missing"),
        "{err}"
    );
}

fn bdims() -> (LabelSpace, TableSpec) {
    let space = LabelSpace::new(vec![
        Axis::linear("age", 18.0, 67.0, 1.0)
            .unwrap()
            .with_unit("years"),
        Axis::linear("weight", 40.0, 120.0, 1.0)
            .unwrap()
            .with_unit("kg"),
        Axis::linear("height", 145.0, 200.0, 1.0)
            .unwrap()
            .with_unit("cm"),
    ])
    .unwrap();
    let value = |column: &str| LabelColumns::Value {
        value: column.into(),
        std: None,
    };
    let spec = TableSpec::new(InputColumns::AllOtherColumns)
        .with_label("age", value("age_years"))
        .with_label("weight", value("weight_kg"))
        .with_label("height", value("height_cm"));
    (space, spec)
}

#[test]
fn the_builtin_real_datasets_load() {
    let (space, spec) = bdims();
    let table = read_builtin("bdims", &spec, &space, OnBadSample::Error).unwrap();
    assert_eq!(table.samples.len(), 507);
    assert_eq!(table.feature_names.len(), 22); // 21 measurements + sex
    let abalone_space =
        LabelSpace::new(vec![Axis::linear("rings", 1.0, 29.0, 1.0).unwrap()]).unwrap();
    let abalone_spec = TableSpec::new(InputColumns::AllOtherColumns).with_label(
        "rings",
        LabelColumns::Value {
            value: "rings".into(),
            std: None,
        },
    );
    let abalone =
        read_builtin("abalone", &abalone_spec, &abalone_space, OnBadSample::Error).unwrap();
    assert_eq!(abalone.samples.len(), 4177);
    assert_eq!(abalone.feature_names.len(), 10);
    let err = read_builtin("mnist", &abalone_spec, &abalone_space, OnBadSample::Error)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bdims, abalone, linnerud"), "{err}");
}

#[test]
fn fraction_splits_are_seeded_and_keep_groups_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("x,age,age_std,person\n");
    for i in 0..300 {
        text.push_str(&format!("{i},{},2,p{}\n", i % 90, (i * 7) % 41));
    }
    let path = write(dir.path(), "g.csv", &text);
    let spec = age_spec().with_group("person");
    let table = read_csv(&path, &spec, &age_space(), OnBadSample::Error).unwrap();
    let lines = |v: &[ldl::data::Sample]| v.iter().map(|s| s.origin.line).collect::<Vec<_>>();
    let a = split_by_fractions(table.samples.clone(), 0.2, 0.1, 5).unwrap();
    let b = split_by_fractions(table.samples.clone(), 0.2, 0.1, 5).unwrap();
    let c = split_by_fractions(table.samples.clone(), 0.2, 0.1, 6).unwrap();
    assert_eq!(lines(&a.validation), lines(&b.validation));
    assert_ne!(lines(&a.validation), lines(&c.validation));
    assert_eq!(a.train.len() + a.validation.len() + a.test.len(), 300);
    let groups = |v: &[ldl::data::Sample]| {
        v.iter()
            .map(|s| s.group.clone().unwrap())
            .collect::<HashSet<_>>()
    };
    let (train, validation, test) = (groups(&a.train), groups(&a.validation), groups(&a.test));
    assert!(
        train.is_disjoint(&validation) && train.is_disjoint(&test) && validation.is_disjoint(&test)
    );
    assert!(
        (50..=70).contains(&a.validation.len()),
        "validation {}",
        a.validation.len()
    );
    assert!(split_by_fractions(table.samples.clone(), 0.6, 0.5, 1).is_err());
}

#[test]
fn column_splits_follow_the_column_and_refuse_unknown_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "s.csv",
        "x,age,age_std,fold\n1,30,2,train\n2,31,2,val\n3,32,2,test\n4,33,2,train\n",
    );
    let spec = age_spec().with_split("fold");
    let table = read_csv(&path, &spec, &age_space(), OnBadSample::Error).unwrap();
    let splits = split_by_column(table.samples, &SplitNames::default()).unwrap();
    assert_eq!(
        (
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ),
        (2, 1, 1)
    );
    let path = write(
        dir.path(),
        "u.csv",
        "x,age,age_std,fold\n1,30,2,train\n2,31,2,holdout\n",
    );
    let table = read_csv(&path, &spec, &age_space(), OnBadSample::Error).unwrap();
    let err = split_by_column(table.samples, &SplitNames::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("u.csv:3: split `holdout` is none of"), "{err}");
    let path = write(dir.path(), "e.csv", "x,age,age_std,fold\n1,30,2,train\n");
    let table = read_csv(&path, &spec, &age_space(), OnBadSample::Error).unwrap();
    let err = split_by_column(table.samples, &SplitNames::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("validation split is empty"), "{err}");
}

#[test]
fn standardisation_uses_training_statistics_only() {
    let (space, spec) = bdims();
    let table = read_builtin("bdims", &spec, &space, OnBadSample::Error).unwrap();
    let mut splits = split_by_fractions(table.samples, 0.3, 0.0, 1).unwrap();
    let standardizer = Standardizer::fit(&table.feature_names, &splits.train).unwrap();
    standardizer.apply_to(&mut splits.train).unwrap();
    standardizer.apply_to(&mut splits.validation).unwrap();
    let column = |samples: &[ldl::data::Sample], j: usize| -> Vec<f64> {
        samples
            .iter()
            .map(|s| match &s.input {
                Input::Features(f) => f[j] as f64,
                _ => unreachable!(),
            })
            .collect()
    };
    for j in 0..table.feature_names.len() {
        let train = column(&splits.train, j);
        let mean = train.iter().sum::<f64>() / train.len() as f64;
        let var = train.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / train.len() as f64;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
            "feature {j}: mean {mean}, var {var}"
        );
    }
    // Validation was transformed with the training statistics: its mean is not exactly 0.
    let validation_mean =
        column(&splits.validation, 0).iter().sum::<f64>() / splits.validation.len() as f64;
    assert!(validation_mean.abs() > 1e-4);
    // The standardizer round-trips through JSON (it is stored with the model).
    let json = serde_json::to_string(&standardizer).unwrap();
    assert_eq!(
        serde_json::from_str::<Standardizer>(&json).unwrap(),
        standardizer
    );
}

#[test]
fn batches_are_seeded_cover_every_sample_and_honour_drop_last() {
    let (space, spec) = bdims();
    let table = read_builtin("bdims", &spec, &space, OnBadSample::Error).unwrap();
    let loader = FeatureLoader::new(&table.samples, &space, 100)
        .unwrap()
        .shuffled(3);
    let indices =
        |epoch| -> Vec<Vec<usize>> { loader.epoch(epoch).map(|b| b.unwrap().indices).collect() };
    assert_eq!(indices(0), indices(0));
    assert_ne!(indices(0), indices(1));
    let mut seen: Vec<usize> = indices(1).concat();
    seen.sort();
    assert_eq!(seen, (0..507).collect::<Vec<_>>());
    let batches: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 6);
    assert_eq!(batches[5].inputs.dims(), [7, 22]);
    assert_eq!(batches[0].targets.len(), 3);
    assert_eq!(batches[0].targets[2].pmf.dims(), [100, 56]);
    let dropped = loader.clone().drop_last(true);
    assert_eq!(dropped.epoch(0).count(), 5);
    assert!(FeatureLoader::new(&table.samples, &space, 0).is_err());
}

/// Each sample's noise comes from (seed, epoch, sample): the batch size, the shuffle and
/// the data-parallel shard a sample lands in do not change what is added to it.
#[test]
fn feature_noise_depends_on_epoch_and_sample_only() {
    let (space, spec) = bdims();
    let table = read_builtin("bdims", &spec, &space, OnBadSample::Error).unwrap();
    let noise = FeatureNoise::new(0.5, 21).unwrap();
    // Every sample's features in epoch `epoch`, by sample index, from `loader`.
    let by_sample = |loader: &FeatureLoader, epoch| -> Vec<Vec<f32>> {
        let mut rows = vec![Vec::new(); table.samples.len()];
        for batch in loader.epoch(epoch) {
            let batch = batch.unwrap();
            let inputs: Vec<Vec<f32>> = batch.inputs.to_vec2().unwrap();
            for (i, row) in batch.indices.iter().zip(inputs) {
                rows[*i] = row;
            }
        }
        rows
    };
    let loader = |batch| FeatureLoader::new(&table.samples, &space, batch).unwrap();
    let clean = by_sample(&loader(64), 0);
    let noisy = by_sample(&loader(64).with_noise(noise), 0);
    let other_batches = by_sample(&loader(5).shuffled(8).with_noise(noise), 0);
    assert_eq!(noisy, other_batches);
    let mut sharded = vec![Vec::new(); table.samples.len()];
    for rank in 0..2 {
        let shard = ldl::data::Shard { rank, world: 2 };
        let part = loader(16).shuffled(8).sharded(shard).with_noise(noise);
        for (i, row) in by_sample(&part, 0).into_iter().enumerate() {
            if !row.is_empty() {
                sharded[i] = row;
            }
        }
    }
    assert_eq!(noisy, sharded);
    assert_ne!(noisy, by_sample(&loader(64).with_noise(noise), 1));
    // What was added is the sample's draw: the same as `FeatureNoise::add` gives.
    for i in [0, 17, 506] {
        let mut expected = clean[i].clone();
        noise.add(&mut expected, 0, i);
        assert_eq!(noisy[i], expected);
    }
    // Std 0 adds nothing.
    let zero = FeatureNoise::new(0.0, 21).unwrap();
    assert_eq!(by_sample(&loader(64).with_noise(zero), 0), clean);
}

/// An ensemble's networks each read the rows with noise of their own: network `k` the
/// rows plus its own generator's draw for (epoch, sample), network 0 what one network
/// reads.
#[test]
fn each_network_of_an_ensemble_reads_noise_of_its_own() {
    let (space, spec) = bdims();
    let table = read_builtin("bdims", &spec, &space, OnBadSample::Error).unwrap();
    let noises: Vec<FeatureNoise> = [21, 22, 23]
        .iter()
        .map(|seed| FeatureNoise::new(0.5, *seed).unwrap())
        .collect();
    let plain = FeatureLoader::new(&table.samples, &space, 50).unwrap();
    let clean: Vec<Vec<f32>> = plain
        .epoch(2)
        .next()
        .unwrap()
        .unwrap()
        .inputs
        .to_vec2()
        .unwrap();
    assert!(plain
        .epoch(2)
        .next()
        .unwrap()
        .unwrap()
        .network_inputs
        .is_empty());
    let loader = plain.clone().with_noise_per_network(noises.clone());
    let batch = loader.epoch(2).next().unwrap().unwrap();
    let per_network = batch.inputs_per_network();
    assert_eq!(per_network.len(), 3);
    for (network, inputs) in per_network.iter().enumerate() {
        let rows: Vec<Vec<f32>> = inputs.to_vec2().unwrap();
        for (row, &sample) in rows.iter().zip(&batch.indices) {
            let mut expected = clean[sample].clone();
            noises[network].add(&mut expected, 2, sample);
            assert_eq!(*row, expected, "network {network}, sample {sample}");
        }
    }
    assert_ne!(
        per_network[0].to_vec2::<f32>().unwrap(),
        per_network[1].to_vec2::<f32>().unwrap()
    );
    let one = plain
        .with_noise(noises[0])
        .epoch(2)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        one.inputs.to_vec2::<f32>().unwrap(),
        per_network[0].to_vec2::<f32>().unwrap()
    );
}
