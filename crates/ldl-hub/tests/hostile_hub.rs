//! `ldl-hub` against a hostile Hub (or mirror, or proxy): answers whose values would become
//! paths outside the cache, ETags that are no hash, connections that stall, sizes that would
//! fill the disk, bodies longer than announced, redirects to other schemes. Each is refused
//! with an error naming the server's value, and nothing is written outside the cache: each
//! test puts the cache in `ROOT/cache` and checks that the would-be victim under `ROOT` does
//! not exist.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldl_hub::{DatasetSpec, Error, HubRef, Progress};
use support::fake_hub::{sha256, FakeHub, Hostile};
use support::hub;

const WEIGHTS: &[u8] = b"not really safetensors, but 64 bytes of bytes of bytes of bytes!";

fn r(s: &str) -> HubRef {
    s.parse().unwrap()
}

/// A fake hub with the model repository `o/n`, and a temporary folder holding the cache
/// (`cache`) and nothing else.
fn setup() -> (FakeHub, tempfile::TempDir) {
    let fake = FakeHub::start();
    fake.add_repo(
        "o/n",
        &[
            ("model.safetensors", WEIGHTS),
            ("ldl.toml", b"[task]\nname = \"t\"\n"),
            ("README.md", b"# A model card\n"),
        ],
    );
    (fake, tempfile::tempdir().unwrap())
}

/// Everything under `root` outside `root/cache`, and every file left in the cache's `blobs`
/// and `snapshots` (a refused answer leaves neither).
fn written(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let in_cache = relative == "cache" || relative.starts_with("cache/");
            let stored = relative.contains("/blobs/") || relative.contains("/snapshots/");
            if path.is_dir() && !path.is_symlink() {
                if !in_cache {
                    out.push(format!("{relative}/"));
                }
                stack.push(path);
            } else if !in_cache || stored {
                out.push(relative);
            }
        }
    }
    out.sort();
    out
}

fn assert_refused(e: &Error, field: &str, value: &str) {
    assert!(
        matches!(e, Error::UnsafeResponse { field: f, .. } if f == field),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(&format!("{field} `{value}`")), "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    assert!(text.contains("HF_ENDPOINT"), "{text}");
}

#[test]
fn a_traversal_etag_is_refused_and_writes_nothing_outside_the_cache() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    let victim = root.path().join("victim.txt");
    // blobs/<ETag> from CACHE/models--o--n/blobs/ is ROOT/victim.txt.
    for etag in [
        "../../../victim.txt",
        "../../../../../../../../tmp/ldl-victim.txt",
    ] {
        fake.hostile(Some(Hostile::Etag(etag.into())));
        let e = hub(&fake, &cache).resolve(&r("hf://o/n")).unwrap_err();
        assert_refused(&e, "ETag", etag);
        assert!(e.to_string().contains("hf://o/n"), "{e}");
        assert!(!victim.exists());
        assert_eq!(written(root.path()), Vec::<String>::new());
    }
    // `ldl fetch` as well.
    let e = hub(&fake, &cache)
        .fetch(&"o/n".parse().unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::UnsafeResponse { .. }), "{e:?}");
    assert_eq!(written(root.path()), Vec::<String>::new());
}

#[test]
fn an_etag_that_is_no_hash_is_refused_since_nothing_could_be_checked() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    for etag in ["abc", "W/not-a-hash", &"f".repeat(63), &"g".repeat(64)] {
        fake.hostile(Some(Hostile::Etag(etag.into())));
        let e = hub(&fake, &cache).resolve(&r("hf://o/n")).unwrap_err();
        assert_refused(&e, "ETag", etag);
        assert!(e.to_string().contains("could not be checked"), "{e}");
        assert_eq!(written(root.path()), Vec::<String>::new());
    }
    // No GET was made: the answer was refused before any download.
    assert!(
        fake.requests().iter().all(|q| q.starts_with("HEAD ")),
        "{:?}",
        fake.requests()
    );
}

#[test]
fn a_traversal_commit_is_refused_and_makes_no_folder_link_or_ref() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    // snapshots/<commit>/ from CACHE/models--o--n/snapshots/ is ROOT/x/.
    let commit = "../../../x";
    fake.hostile(Some(Hostile::Commit(commit.into())));
    let e = hub(&fake, &cache).resolve(&r("hf://o/n")).unwrap_err();
    assert_refused(&e, "X-Repo-Commit", commit);
    assert!(e.to_string().contains("not a commit id"), "{e}");
    assert!(!root.path().join("x").exists());
    assert!(!cache.join("models--o--n/refs/main").exists());
    assert_eq!(written(root.path()), Vec::<String>::new());

    // A commit id that is hex but not 40 digits long is no better.
    fake.hostile(Some(Hostile::Commit("abc123".into())));
    let e = hub(&fake, &cache).resolve(&r("hf://o/n")).unwrap_err();
    assert_refused(&e, "X-Repo-Commit", "abc123");
}

#[test]
fn traversal_file_names_in_a_dataset_listing_are_refused_before_any_download() {
    let fake = FakeHub::start();
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    // snapshots/<commit>/default/train/ is six levels below ROOT.
    let names = [
        "default/train/../../../../../../victim.parquet",
        "default/train/..\\..\\victim.parquet",
        "default/train/a\0b.parquet",
    ];
    for name in names {
        fake.add_dataset(
            "o/d",
            "refs/convert/parquet",
            &[
                ("default/train/0000.parquet", b"PAR1 not parquet PAR1"),
                (name, b"PAR1 not parquet PAR1"),
            ],
        );
        let e = hub(&fake, &cache)
            .dataset_files(&"o/d".parse::<DatasetSpec>().unwrap(), "default", "train")
            .unwrap_err();
        let shown = name.escape_debug().to_string();
        assert_refused(&e, "the file name", &shown);
        assert!(e.to_string().contains("datasets/o/d"), "{e}");
        assert!(!root.path().join("victim.parquet").exists());
        assert_eq!(written(root.path()), Vec::<String>::new());
    }
    assert!(
        fake.requests().iter().all(|q| q.starts_with("GET /api/")),
        "{:?}",
        fake.requests()
    );
}

#[test]
fn a_hub_that_never_answers_times_out_within_the_read_timeout() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    fake.hostile(Some(Hostile::Stall));
    let started = Instant::now();
    let e = hub(&fake, &cache)
        .read_timeout(Duration::from_millis(500))
        .resolve(&r("hf://o/n"))
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, Error::Stalled { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("sent nothing for 0.5 s"), "{text}");
    assert!(text.contains("LDL_HUB_READ_TIMEOUT"), "{text}");
    assert!(text.contains(&fake.endpoint()), "{text}");

    // A dataset listing too.
    let started = Instant::now();
    let e = hub(&fake, &cache)
        .read_timeout(Duration::from_millis(500))
        .dataset_files(&"o/d".parse().unwrap(), "default", "train")
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(e, Error::Stalled { .. }), "{e:?}");
    assert_eq!(written(root.path()), Vec::<String>::new());
}

#[test]
fn a_download_that_stalls_half_way_is_given_up_and_removed() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    fake.hostile(Some(Hostile::StallBody));
    let started = Instant::now();
    let e = hub(&fake, &cache)
        .read_timeout(Duration::from_millis(500))
        .resolve(&r("hf://o/n"))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(e, Error::Stalled { .. }), "{e:?}");
    assert!(
        e.to_string().contains("nothing was kept in the cache"),
        "{e}"
    );
    assert_eq!(written(root.path()), Vec::<String>::new());

    fake.hostile(None);
    let path = hub(&fake, &cache).resolve(&r("hf://o/n")).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), WEIGHTS);
}

#[test]
fn a_huge_announced_size_is_refused_before_downloading() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    let huge: u64 = 10_000_000_000_000;
    fake.hostile(Some(Hostile::Announce(huge)));
    let e = hub(&fake, &cache).resolve(&r("hf://o/n")).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { size, limit, .. } if size == huge && limit == 64 << 30),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("10000000000000 bytes (9.1 TiB)"), "{text}");
    assert!(text.contains("LDL_HUB_MAX_FILE_SIZE"), "{text}");
    // Allowed by the limit, it still does not fit on the disk.
    #[cfg(unix)]
    {
        let e = hub(&fake, &cache)
            .max_file_size(u64::MAX)
            .resolve(&r("hf://o/n"))
            .unwrap_err();
        assert!(
            matches!(e, Error::NoSpace { size, .. } if size == huge),
            "{e:?}"
        );
        assert!(e.to_string().contains("HF_HUB_CACHE"), "{e}");
    }
    // A lower limit applies to an honest size too.
    fake.hostile(None);
    let e = hub(&fake, &cache)
        .max_file_size(10)
        .resolve(&r("hf://o/n"))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                size: 64,
                limit: 10,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(fake.requests().iter().all(|q| q.starts_with("HEAD ")));
    assert_eq!(written(root.path()), Vec::<String>::new());
}

#[test]
fn a_body_longer_than_announced_is_cut_off_and_removed() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    fake.hostile(Some(Hostile::Overflow(4 << 20)));
    let e = hub(&fake, &cache).resolve(&r("hf://o/n")).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("more than the 64 bytes it announced"),
        "{e}"
    );
    assert_eq!(written(root.path()), Vec::<String>::new());
}

#[test]
fn a_redirect_to_another_scheme_is_refused() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    fake.hostile(Some(Hostile::Redirect("file:///etc/passwd".into())));
    let e = hub(&fake, &cache).resolve(&r("hf://o/n")).unwrap_err();
    assert_refused(&e, "redirect (Location)", "file:///etc/passwd");
    assert!(e.to_string().contains("not http(s)"), "{e}");
    assert_eq!(written(root.path()), Vec::<String>::new());
}

#[test]
fn a_normal_download_is_checked_reported_and_laid_out_like_the_hf_cache() {
    let (fake, root) = setup();
    let cache = root.path().join("cache");
    let reports = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let seen = reports.clone();
    let path = hub(&fake, &cache)
        .progress(move |p| seen.lock().unwrap().push(p.clone()))
        .resolve(&r("hf://o/n"))
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), WEIGHTS);
    // The blob is named by the SHA-256 it was checked against; the snapshot links to it.
    let blob = cache.join("models--o--n/blobs").join(sha256(WEIGHTS));
    assert_eq!(std::fs::read(&blob).unwrap(), WEIGHTS);
    assert_eq!(
        std::fs::canonicalize(&path).unwrap(),
        std::fs::canonicalize(&blob).unwrap()
    );
    let reports = reports.lock().unwrap();
    assert_eq!(reports.first().map(|p| p.done), Some(0), "{reports:?}");
    let last = reports.last().unwrap();
    assert_eq!((last.done, last.total), (64, 64));
    assert_eq!(last.file, "hf://o/n");
    // Nothing outside the cache but the cache.
    let outside: Vec<String> = written(root.path())
        .into_iter()
        .filter(|p| !p.starts_with("cache/"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
}
