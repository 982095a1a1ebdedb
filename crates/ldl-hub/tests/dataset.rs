//! Hub datasets against a fake hub on 127.0.0.1: listing the parquet conversion
//! (`refs/convert/parquet`), choosing a config's split, downloading into the cache, reading
//! the columns back, offline use, and the errors. The parquet files are written here.

mod support;

use ldl_hub::{open_parquet, ColumnKind, DatasetSpec, Error, ReadBudget, Value};
use support::fake_hub::FakeHub;
use support::hub;
use support::parquet_file::{parquet_bytes, png, Column};

fn ds(s: &str) -> DatasetSpec {
    s.parse().unwrap()
}

/// Rows `from..to` of a UTKFace-like table: an image, an age, a gender.
fn faces(from: u32, to: u32) -> Vec<u8> {
    parquet_bytes(&[
        (
            "image",
            Column::Image((from..to).map(|i| Some(png(8, i).0)).collect()),
        ),
        (
            "age",
            Column::Float((from..to).map(|i| 20.0 + i as f32 * 0.5).collect()),
        ),
        (
            "gender",
            Column::Int((from..to).map(|i| (i % 2) as i64).collect()),
        ),
    ])
}

fn faces_dataset(fake: &FakeHub, repo: &str) {
    fake.add_dataset(
        repo,
        "refs/convert/parquet",
        &[
            (".gitattributes", b"*.parquet filter=lfs\n"),
            ("default/train/0001.parquet", &faces(3, 5)),
            ("default/train/0000.parquet", &faces(0, 3)),
            ("default/test/0000.parquet", &faces(5, 6)),
        ],
    );
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_split_is_listed_downloaded_and_read_in_order() {
    let fake = FakeHub::start();
    faces_dataset(&fake, "ldl-rs/faces");
    let cache = tempfile::tempdir().unwrap();
    let files = hub(&fake, cache.path())
        .dataset_files(&ds("ldl-rs/faces"), "default", "train")
        .unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hf://datasets/ldl-rs/faces/default/train/0000.parquet",
            "hf://datasets/ldl-rs/faces/default/train/0001.parquet",
        ]
    );
    // The Hub's listing of the parquet conversion, then the files from the dataset's URLs.
    let requests = fake.requests();
    assert!(
        requests.contains(
            &"GET /api/datasets/ldl-rs/faces/revision/refs%2Fconvert%2Fparquet".to_string()
        ),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r
            == "GET /datasets/ldl-rs/faces/resolve/refs%2Fconvert%2Fparquet/default/train/0000.parquet"),
        "{requests:?}"
    );
    for f in &files {
        assert!(f
            .local
            .starts_with(cache.path().join("datasets--ldl-rs--faces")));
    }

    let mut budget = ReadBudget::default();
    let mut ages = Vec::new();
    let mut images = Vec::new();
    for f in &files {
        let reader = open_parquet(&f.local, &f.name).unwrap();
        let kinds: Vec<(&str, &ColumnKind)> = reader
            .schema()
            .iter()
            .map(|(n, k)| (n.as_str(), k))
            .collect();
        assert_eq!(
            kinds,
            [
                ("image", &ColumnKind::Image),
                ("age", &ColumnKind::Number),
                ("gender", &ColumnKind::Number)
            ]
        );
        let rows = reader
            .read(&columns(&["age", "image", "gender"]), &mut budget)
            .unwrap();
        assert_eq!(rows.columns, ["age", "image", "gender"]);
        for row in rows.rows {
            let [Value::Number(age), Value::Bytes(bytes), Value::Number(gender)] = &row[..] else {
                panic!("{row:?}")
            };
            ages.push(*age);
            images.push((bytes.to_vec(), *gender));
        }
    }
    let expected: Vec<f64> = (0..5).map(|i| 20.0 + i as f64 * 0.5).collect();
    assert_eq!(ages, expected);
    for (i, (bytes, gender)) in images.iter().enumerate() {
        assert_eq!(bytes, &png(8, i as u32).0, "row {i}");
        assert_eq!(*gender, (i % 2) as f64);
    }
    assert_eq!(budget.rows, ReadBudget::default().rows - 5);
}

#[test]
fn the_cache_serves_offline_and_without_the_server() {
    let mut fake = FakeHub::start();
    faces_dataset(&fake, "o/faces");
    let cache = tempfile::tempdir().unwrap();
    let first = hub(&fake, cache.path())
        .dataset_files(&ds("o/faces"), "default", "train")
        .unwrap();
    let served = fake.requests().len();

    let offline = hub(&fake, cache.path()).offline(true);
    let again = offline
        .dataset_files(&ds("o/faces"), "default", "train")
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(fake.requests().len(), served, "offline made a request");

    // Only what was downloaded is cached: the test split was not.
    let e = offline
        .dataset_files(&ds("o/faces"), "default", "test")
        .unwrap_err();
    assert!(matches!(e, Error::SplitNotCached { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "split `test` of config `default` of dataset o/faces (revision refs/convert/parquet) \
         is not complete in the cache: it was never downloaded whole; run once with network \
         (unset HF_HUB_OFFLINE) to download it"
    );

    let e = offline
        .dataset_files(&ds("o/elsewhere"), "default", "train")
        .unwrap_err();
    assert!(matches!(e, Error::DatasetNotCached { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("o/elsewhere"), "{text}");
    assert!(text.contains(&cache.path().display().to_string()), "{text}");
    assert!(text.contains("unset HF_HUB_OFFLINE"), "{text}");

    fake.stop();
    let stopped = hub(&fake, cache.path())
        .dataset_files(&ds("o/faces"), "default", "train")
        .unwrap();
    assert_eq!(stopped, first);
    let reader = open_parquet(&stopped[0].local, &stopped[0].name).unwrap();
    assert_eq!(reader.num_rows(), 3);
    // Not cached, and no server: the network error, with the way out.
    let e = hub(&fake, cache.path())
        .dataset_files(&ds("o/elsewhere"), "default", "train")
        .unwrap_err();
    assert!(matches!(e, Error::NoNetwork { .. }), "{e:?}");
}

#[test]
fn a_split_with_files_missing_from_the_cache_is_not_read_as_complete() {
    let mut fake = FakeHub::start();
    faces_dataset(&fake, "o/faces");
    let cache = tempfile::tempdir().unwrap();
    let files = hub(&fake, cache.path())
        .dataset_files(&ds("o/faces"), "default", "train")
        .unwrap();
    assert_eq!(files.len(), 2);
    // As a run killed before the second file, or a cleaned cache, leaves it.
    std::fs::remove_file(&files[1].local).unwrap();
    fake.stop();
    for offline in [false, true] {
        let e = hub(&fake, cache.path())
            .offline(offline)
            .dataset_files(&ds("o/faces"), "default", "train")
            .unwrap_err();
        assert!(matches!(e, Error::SplitNotCached { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("1 of its 2 files are missing (`default/train/0001.parquet` …)"),
            "{text}"
        );
    }
}

#[test]
fn missing_splits_configs_and_conversions_say_what_exists() {
    let fake = FakeHub::start();
    faces_dataset(&fake, "o/faces");
    fake.add_dataset("o/raw", "main", &[("data.csv", b"a\n1\n")]);
    let cache = tempfile::tempdir().unwrap();
    let h = hub(&fake, cache.path());

    let e = h
        .dataset_files(&ds("o/faces"), "default", "validation")
        .unwrap_err();
    assert!(matches!(e, Error::NoParquetFiles { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("no parquet files for config `default`, split `validation`"),
        "{text}"
    );
    assert!(
        text.contains("config `default` split `test`, config `default` split `train`"),
        "{text}"
    );
    let e = h
        .dataset_files(&ds("o/faces"), "plain", "train")
        .unwrap_err();
    assert!(
        e.to_string().contains("config `default` split `train`"),
        "{e}"
    );

    let e = h
        .dataset_files(&ds("o/raw"), "default", "train")
        .unwrap_err();
    assert!(matches!(e, Error::NotConverted { .. }), "{e:?}");
    assert!(e.to_string().contains("o/raw@main"), "{e}");
    let e = h
        .dataset_files(&ds("o/raw@main"), "default", "train")
        .unwrap_err();
    assert!(
        e.to_string().contains("it has: no parquet files at all"),
        "{e}"
    );

    let e = h
        .dataset_files(&ds("o/nothing"), "default", "train")
        .unwrap_err();
    assert!(matches!(e, Error::RepoNotFound { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("repository datasets/o/nothing not found"),
        "{e}"
    );
}

#[test]
fn parquet_files_on_a_branch_are_read_with_a_revision() {
    // push_to_hub's layout on main: data/SPLIT-00000-of-0000N.parquet.
    let fake = FakeHub::start();
    fake.add_dataset(
        "o/pushed",
        "main",
        &[
            ("README.md", b"---\n---\n"),
            ("data/train-00001-of-00002.parquet", &faces(2, 4)),
            ("data/train-00000-of-00002.parquet", &faces(0, 2)),
            ("data/test-00000-of-00001.parquet", &faces(4, 5)),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let files = hub(&fake, cache.path())
        .dataset_files(&ds("o/pushed@main"), "default", "train")
        .unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.path_in_repo.as_str()).collect();
    assert_eq!(
        names,
        [
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet"
        ]
    );
    assert_eq!(
        files[0].name,
        "hf://datasets/o/pushed@main/data/train-00000-of-00002.parquet"
    );
}

#[test]
fn bad_files_and_columns_are_errors_not_panics() {
    let good = faces(0, 4);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };

    // Not parquet at all, and a truncated file.
    for (name, bytes) in [
        ("text.parquet", b"age,image\n1,2\n".as_slice()),
        ("short.parquet", &good[..good.len() / 2]),
        ("empty.parquet", b"".as_slice()),
    ] {
        let e = open_parquet(&write(name, bytes), name).err().unwrap();
        assert!(matches!(e, Error::Parquet { .. }), "{name}: {e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{name}: not a readable parquet file")),
            "{text}"
        );
    }

    // Damaged data pages with an intact footer: every byte of the first half garbled in
    // turn would be slow, so a few spread-out stretches.
    for start in [4, good.len() / 8, good.len() / 4, good.len() / 3] {
        let mut bytes = good.clone();
        for b in bytes.iter_mut().skip(start).take(24) {
            *b ^= 0x5a;
        }
        let path = write("garbled.parquet", &bytes);
        let result = open_parquet(&path, "garbled.parquet").and_then(|r| {
            r.read(
                &columns(&["image", "age", "gender"]),
                &mut ReadBudget::default(),
            )
        });
        // Either the damage hit bytes the reader does not check (values differ), or it is
        // reported: never a panic.
        if let Err(e) = result {
            assert!(e.to_string().starts_with("garbled.parquet: "), "{e}");
        }
    }

    let path = write("faces.parquet", &good);
    let reader = open_parquet(&path, "hf://datasets/o/n/default/train/0000.parquet").unwrap();
    let e = reader
        .read(
            &columns(&["image", "apparent_age"]),
            &mut ReadBudget::default(),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "hf://datasets/o/n/default/train/0000.parquet: no column `apparent_age`; the columns \
         are: image (image struct {bytes, path}), age (number), gender (number)"
    );

    // Budgets: rows, bytes, one value.
    let mut budget = ReadBudget {
        rows: 3,
        ..ReadBudget::default()
    };
    let e = reader.read(&columns(&["age"]), &mut budget).unwrap_err();
    assert!(
        e.to_string().contains("4 rows is more than the 3 left"),
        "{e}"
    );
    let mut budget = ReadBudget {
        bytes: 10,
        ..ReadBudget::default()
    };
    let e = reader.read(&columns(&["image"]), &mut budget).unwrap_err();
    assert!(e.to_string().contains("more than the 10 left"), "{e}");
    let mut budget = ReadBudget {
        value_bytes: 16,
        ..ReadBudget::default()
    };
    let e = reader.read(&columns(&["image"]), &mut budget).unwrap_err();
    assert!(
        e.to_string().contains("row 0: column `image` holds")
            && e.to_string().contains("more than the 16 a value may have"),
        "{e}"
    );
}

/// Runs `f` on another thread; `None` if it takes more than 10 s, as reading a FIFO with no
/// writer would (for ever).
fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(f()));
    receive
        .recv_timeout(std::time::Duration::from_secs(10))
        .ok()
}

/// Every file under `dir`, following no links.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
        if kind.is_dir() {
            files.extend(files_under(&path));
        } else if kind.is_file() {
            files.push(path);
        }
    }
    files
}

/// A FIFO in place of any file of the cache (a blob, a ref, ldl's record of a split's
/// files) gives an error or a fresh download, never a wait for a writer.
#[cfg(unix)]
#[test]
fn a_fifo_in_the_cache_is_an_error_not_a_hang() {
    let mut fake = FakeHub::start();
    faces_dataset(&fake, "o/faces");
    let cache = tempfile::tempdir().unwrap();
    let files = hub(&fake, cache.path())
        .dataset_files(&ds("o/faces"), "default", "train")
        .unwrap();
    fake.stop();
    // The blob the first file's snapshot entry leads to.
    let first_blob = std::fs::canonicalize(&files[0].local).unwrap();
    let cached = files_under(cache.path());
    assert!(cached.len() >= 4, "{cached:?}");
    for file in cached {
        let saved = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&file).status();
        if !made.is_ok_and(|status| status.success()) {
            eprintln!("note: no mkfifo here; the test is left out");
            return;
        }
        let offline = hub(&fake, cache.path()).offline(true);
        let local = files[0].local.clone();
        let outcome = within_seconds(move || {
            let listed = offline.dataset_files(&ds("o/faces"), "default", "train");
            let opened = open_parquet(&local, "0000.parquet").map(|_| ());
            format!("{listed:?} / {opened:?}")
        });
        let outcome = outcome.unwrap_or_else(|| panic!("{} as a FIFO blocked", file.display()));
        if std::fs::canonicalize(&file).unwrap() == first_blob {
            assert!(
                outcome.contains("is a FIFO (named pipe), not a regular file"),
                "{}: {outcome}",
                file.display()
            );
        }
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, saved).unwrap();
    }
}
