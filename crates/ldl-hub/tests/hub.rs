//! `ldl-hub` against a fake hub on 127.0.0.1: downloads, the cache, offline mode, the error
//! messages, truncated downloads, fetch and push. No real network is used.

mod support;

use std::path::Path;

use ldl_hub::{Error, HubRef, RepoSpec};
use support::fake_hub::{FakeHub, Truncate, TOKEN};
use support::hub;

fn r(s: &str) -> HubRef {
    s.parse().unwrap()
}

const WEIGHTS: &[u8] = b"not really safetensors, but 64 bytes of bytes of bytes of bytes!";

fn model_repo(fake: &FakeHub, repo: &str) -> String {
    fake.add_repo(
        repo,
        &[
            ("model.safetensors", WEIGHTS),
            ("ldl.toml", b"[task]\nname = \"t\"\n"),
            ("README.md", b"# A model card\n"),
        ],
    )
}

/// Every regular file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn downloads_into_the_hf_cache_layout() {
    let fake = FakeHub::start();
    let commit = model_repo(&fake, "ldl-rs/ages");
    let cache = tempfile::tempdir().unwrap();
    let path = hub(&fake, cache.path())
        .resolve(&r("hf://ldl-rs/ages"))
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), WEIGHTS);
    let expected = cache
        .path()
        .join("models--ldl-rs--ages/snapshots")
        .join(&commit)
        .join("model.safetensors");
    assert_eq!(path, expected);
    let main =
        std::fs::read_to_string(cache.path().join("models--ldl-rs--ages/refs/main")).unwrap();
    assert_eq!(main.trim(), commit);
    // Another file, and the same file by commit.
    let toml = hub(&fake, cache.path())
        .resolve(&r("hf://ldl-rs/ages/ldl.toml"))
        .unwrap();
    assert_eq!(std::fs::read(toml).unwrap(), b"[task]\nname = \"t\"\n");
    let pinned = hub(&fake, cache.path())
        .resolve(&r(&format!("hf://ldl-rs/ages@{commit}")))
        .unwrap();
    assert_eq!(pinned, path);
}

#[test]
fn cache_hits_without_the_server_and_offline() {
    let mut fake = FakeHub::start();
    model_repo(&fake, "o/n");
    let cache = tempfile::tempdir().unwrap();
    let first = hub(&fake, cache.path()).resolve(&r("hf://o/n")).unwrap();
    let served = fake.requests().len();

    // Offline: from the cache, and no request at all.
    let offline = hub(&fake, cache.path()).offline(true);
    assert_eq!(offline.resolve(&r("hf://o/n")).unwrap(), first);
    assert_eq!(fake.requests().len(), served);

    // Offline miss: another file, another repository.
    for (path, fetch) in [
        ("hf://o/n/other.bin", "ldl fetch o/n"),
        ("hf://o/elsewhere@v2", "ldl fetch o/elsewhere@v2"),
    ] {
        let e = offline.resolve(&r(path)).unwrap_err();
        assert!(matches!(e, Error::NotCached { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(path), "{text}");
        assert!(text.contains(&cache.path().display().to_string()), "{text}");
        assert!(text.contains(fetch), "{text}");
        assert!(text.contains("unset HF_HUB_OFFLINE"), "{text}");
    }
    assert_eq!(fake.requests().len(), served);

    // The server gone: online mode falls back to the cache.
    fake.stop();
    let again = hub(&fake, cache.path()).resolve(&r("hf://o/n")).unwrap();
    assert_eq!(again, first);
    assert_eq!(std::fs::read(again).unwrap(), WEIGHTS);
}

#[test]
fn no_network_says_so() {
    let mut fake = FakeHub::start();
    model_repo(&fake, "o/n");
    let endpoint = fake.endpoint();
    fake.stop();
    let cache = tempfile::tempdir().unwrap();
    let e = hub(&fake, cache.path())
        .resolve(&r("hf://o/n"))
        .unwrap_err();
    assert!(matches!(e, Error::NoNetwork { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("cannot reach the Hub at {endpoint}")),
        "{text}"
    );
    assert!(text.contains("HF_HUB_OFFLINE=1"), "{text}");
}

#[test]
fn not_found_tells_repo_revision_and_file_apart() {
    let fake = FakeHub::start();
    model_repo(&fake, "o/n");
    let cache = tempfile::tempdir().unwrap();
    let h = hub(&fake, cache.path());

    let e = h.resolve(&r("hf://o/missing")).unwrap_err();
    assert!(matches!(e, Error::RepoNotFound { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("repository o/missing not found on http://127.0.0.1:"),
        "{e}"
    );

    let e = h.resolve(&r("hf://o/n@nope")).unwrap_err();
    assert!(matches!(e, Error::RevisionNotFound { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("revision `nope` not found in o/n"),
        "{e}"
    );

    let e = h.resolve(&r("hf://o/n/weights.bin")).unwrap_err();
    assert!(matches!(e, Error::FileNotFound { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("o/n has no file `weights.bin` at revision main"),
        "{e}"
    );
}

#[test]
fn private_repositories_need_a_token() {
    let fake = FakeHub::start();
    model_repo(&fake, "o/private");
    fake.set_private("o/private");
    let cache = tempfile::tempdir().unwrap();
    let e = hub(&fake, cache.path())
        .resolve(&r("hf://o/private"))
        .unwrap_err();
    assert!(
        matches!(e, Error::AuthRequired { status: 401, .. }),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("o/private") && text.contains("(HTTP 401)"),
        "{text}"
    );
    assert!(text.contains("HF_TOKEN"), "{text}");

    let path = hub(&fake, cache.path())
        .token(TOKEN)
        .resolve(&r("hf://o/private"))
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), WEIGHTS);
}

fn assert_nothing_usable(cache: &Path) {
    let files = files_under(&cache.join("models--o--n"));
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("snapshots") && !f.starts_with("blobs")),
        "left in the cache: {files:?}"
    );
}

#[test]
fn a_connection_closed_early_leaves_nothing_in_the_cache() {
    let fake = FakeHub::start();
    model_repo(&fake, "o/n");
    fake.truncate(Some(Truncate::CloseEarly));
    let cache = tempfile::tempdir().unwrap();
    let e = hub(&fake, cache.path())
        .resolve(&r("hf://o/n"))
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("corrupt or truncated"), "{e}");
    assert!(e.to_string().contains("run the command again"), "{e}");
    assert_nothing_usable(cache.path());
    let offline = hub(&fake, cache.path())
        .offline(true)
        .resolve(&r("hf://o/n"));
    assert!(
        matches!(offline, Err(Error::NotCached { .. })),
        "{offline:?}"
    );

    fake.truncate(None);
    let path = hub(&fake, cache.path()).resolve(&r("hf://o/n")).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), WEIGHTS);
}

#[test]
fn a_short_body_is_caught_by_the_etag_and_removed() {
    let fake = FakeHub::start();
    model_repo(&fake, "o/n");
    fake.truncate(Some(Truncate::ShortBody));
    let cache = tempfile::tempdir().unwrap();
    let e = hub(&fake, cache.path())
        .resolve(&r("hf://o/n"))
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{} bytes", WEIGHTS.len() / 2)),
        "{text}"
    );
    assert!(text.contains(&support::fake_hub::sha256(WEIGHTS)), "{text}");
    assert_nothing_usable(cache.path());

    fake.truncate(None);
    let path = hub(&fake, cache.path()).resolve(&r("hf://o/n")).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), WEIGHTS);
}

#[test]
fn a_short_file_kept_in_git_is_caught_by_its_git_blob_id() {
    // ldl.toml is not an LFS file: its ETag is git's blob id, a SHA-1, not a SHA-256.
    let fake = FakeHub::start();
    model_repo(&fake, "o/n");
    let toml = fake.files("o/n")["ldl.toml"].clone();
    fake.truncate(Some(Truncate::ShortBody));
    let cache = tempfile::tempdir().unwrap();
    let e = hub(&fake, cache.path())
        .resolve(&r("hf://o/n/ldl.toml"))
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{} bytes", toml.len() / 2)),
        "{text}"
    );
    assert!(text.contains("git SHA-1"), "{text}");
    assert!(
        text.contains(&support::fake_hub::git_blob_sha1(&toml)),
        "{text}"
    );
    assert_nothing_usable(cache.path());

    fake.truncate(None);
    let path = hub(&fake, cache.path())
        .resolve(&r("hf://o/n/ldl.toml"))
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), toml);
}

#[test]
fn fetch_gets_the_model_folder_at_one_commit() {
    let mut fake = FakeHub::start();
    let commit = model_repo(&fake, "o/n");
    let cache = tempfile::tempdir().unwrap();
    let spec: RepoSpec = "o/n".parse().unwrap();
    let folder = hub(&fake, cache.path()).fetch(&spec).unwrap();
    assert_eq!(folder.file_name().unwrap().to_str().unwrap(), commit);
    for file in ldl_hub::MODEL_FILES {
        assert!(folder.join(file).is_file(), "{file}");
    }
    assert_eq!(
        std::fs::read(folder.join("README.md")).unwrap(),
        b"# A model card\n"
    );

    fake.stop();
    let offline = hub(&fake, cache.path()).offline(true).fetch(&spec).unwrap();
    assert_eq!(offline, folder);
}

#[test]
fn fetch_needs_the_weights_and_ldl_toml_but_not_the_card() {
    let fake = FakeHub::start();
    fake.add_repo(
        "o/nocard",
        &[("model.safetensors", WEIGHTS), ("ldl.toml", b"x")],
    );
    fake.add_repo(
        "o/notoml",
        &[("model.safetensors", WEIGHTS), ("README.md", b"x")],
    );
    let cache = tempfile::tempdir().unwrap();
    let h = hub(&fake, cache.path());
    let folder = h.fetch(&"o/nocard".parse().unwrap()).unwrap();
    assert!(folder.join("ldl.toml").is_file());
    let e = h.fetch(&"o/notoml@main".parse().unwrap()).unwrap_err();
    assert_eq!(
        e,
        Error::FileNotFound {
            repo: "o/notoml".into(),
            revision: "main".into(),
            file: "ldl.toml".into()
        }
    );
}

fn export_folder(dir: &Path) {
    std::fs::write(dir.join("model.safetensors"), WEIGHTS).unwrap();
    std::fs::write(dir.join("ldl.toml"), "[task]\nname = \"pushed\"\n").unwrap();
    std::fs::write(dir.join("README.md"), "# Pushed\n").unwrap();
}

#[test]
fn push_without_a_token_fails_before_any_request() {
    let fake = FakeHub::start();
    let folder = tempfile::tempdir().unwrap();
    export_folder(folder.path());
    let cache = tempfile::tempdir().unwrap();
    let e = hub(&fake, cache.path())
        .push(folder.path(), &"o/new".parse().unwrap())
        .unwrap_err();
    assert_eq!(e, Error::TokenMissing);
    assert!(e.to_string().contains("set HF_TOKEN"), "{e}");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[test]
fn push_refuses_a_folder_that_is_not_a_model_folder() {
    let fake = FakeHub::start();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("model.safetensors"), WEIGHTS).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = hub(&fake, cache.path())
        .token(TOKEN)
        .push(folder.path(), &"o/new".parse().unwrap())
        .unwrap_err();
    assert!(
        matches!(e, Error::NotAModelFolder { ref file, .. } if file == "ldl.toml"),
        "{e:?}"
    );
    assert!(e.to_string().contains("ldl export"), "{e}");
    assert!(fake.requests().is_empty());
}

#[test]
fn push_uploads_the_folder_and_fetch_brings_it_back() {
    let fake = FakeHub::start();
    let folder = tempfile::tempdir().unwrap();
    export_folder(folder.path());
    let cache = tempfile::tempdir().unwrap();

    let e = hub(&fake, cache.path())
        .token("hf_wrong")
        .push(folder.path(), &"o/new".parse().unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::PushDenied { .. }), "{e:?}");
    assert!(e.to_string().contains("write access"), "{e}");

    let pushed = hub(&fake, cache.path())
        .token(TOKEN)
        .push(folder.path(), &"o/new".parse().unwrap())
        .unwrap();
    assert_eq!(pushed.repo, "o/new");
    assert_eq!(
        pushed.files,
        ldl_hub::MODEL_FILES.map(String::from).to_vec()
    );
    let stored = fake.files("o/new");
    for file in ldl_hub::MODEL_FILES {
        assert_eq!(
            stored[file],
            std::fs::read(folder.path().join(file)).unwrap(),
            "{file}"
        );
    }
    // Pushing again to the existing repository makes a new commit; an ONNX file in the
    // folder goes with the rest.
    std::fs::write(folder.path().join("README.md"), "# Pushed again\n").unwrap();
    std::fs::write(folder.path().join("model.onnx"), b"onnx bytes").unwrap();
    let pushed = hub(&fake, cache.path())
        .token(TOKEN)
        .push(folder.path(), &"o/new".parse().unwrap())
        .unwrap();
    assert_eq!(pushed.files.last().map(String::as_str), Some("model.onnx"));
    assert_eq!(fake.files("o/new")["model.onnx"], b"onnx bytes");
    let back = hub(&fake, cache.path())
        .fetch(&"o/new".parse().unwrap())
        .unwrap();
    for file in ldl_hub::MODEL_FILES {
        assert_eq!(
            std::fs::read(back.join(file)).unwrap(),
            std::fs::read(folder.path().join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn local_paths_pass_through() {
    assert_eq!(
        ldl_hub::local_path("runs/a/checkpoints/best.safetensors").unwrap(),
        Path::new("runs/a/checkpoints/best.safetensors")
    );
    let e = ldl_hub::local_path("hf://just-a-name").unwrap_err();
    assert!(matches!(e, Error::BadPath { .. }), "{e:?}");
}
