//! The `ldl` command with Hub paths, against a fake hub on 127.0.0.1: `predict`/`inspect`
//! with `hf://`, `fetch` (online and `--offline`), `push`, and `model.init_from = "hf://…"`.
//! The Hub settings reach the command through its environment (HF_ENDPOINT, HF_HUB_CACHE),
//! set per child process.

#[path = "../../ldl-hub/tests/support/fake_hub.rs"]
mod fake_hub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fake_hub::{FakeHub, TOKEN};

const BDIMS: &str = include_str!("../../../configs/bdims.toml");

struct Env {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Env {
    fn cache(&self) -> PathBuf {
        self.dir.path().join("hf-cache")
    }

    fn ldl(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ldl"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("HF_TOKEN")
            .env_remove("HF_TOKEN_PATH")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HUGGINGFACE_HUB_CACHE")
            .env("HF_HOME", self.dir.path().join("hf-home"))
            .env("HF_HUB_CACHE", self.cache())
            .env("HF_ENDPOINT", &self.endpoint);
        for (k, v) in extra {
            command.env(k, v);
        }
        command.output().expect("run ldl")
    }

    fn ok(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let out = self.ldl(args, extra);
        assert!(
            out.status.success(),
            "ldl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let out = self.ldl(args, extra);
        assert!(!out.status.success(), "ldl {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }
}

/// A finished two-epoch bdims run, its exported folder and a CSV of twenty people.
fn setup(endpoint: String) -> (Env, PathBuf, PathBuf) {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        endpoint,
    };
    let dir = env.dir.path().to_path_buf();
    std::fs::write(dir.join("task.toml"), BDIMS).unwrap();
    let csv: String = ldl_data::builtin_csv("bdims")
        .unwrap()
        .lines()
        .take(21)
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("people.csv"), csv).unwrap();
    env.ok(
        &[
            "train",
            "task.toml",
            "--quiet",
            "--set",
            "optim.epochs=2",
            "--set",
            "run.output_dir=\"runs\"",
        ],
        &[],
    );
    let run = dir.join("runs/bdims-1");
    let model = dir.join("model");
    assert!(run.join("checkpoints/best.safetensors").is_file());
    env.ok(&["export", "runs/bdims-1", "--out", "model"], &[]);
    (env, run, model)
}

#[test]
fn predict_inspect_and_fetch_take_hub_paths() {
    let mut fake = FakeHub::start();
    let (env, _run, model) = setup(fake.endpoint());
    fake.add_folder("ldl-rs/bdims", &model);

    let local = env.ok(&["predict", "model/model.safetensors", "people.csv"], &[]);
    let hub = env.ok(&["predict", "hf://ldl-rs/bdims", "people.csv"], &[]);
    assert_eq!(hub, local);
    assert_eq!(local.lines().count(), 21);

    let inspect = env.ok(
        &["inspect", "hf://ldl-rs/bdims@main/model.safetensors"],
        &[],
    );
    assert!(inspect.contains("task: bdims"), "{inspect}");

    let folder = PathBuf::from(env.ok(&["fetch", "ldl-rs/bdims"], &[]).trim());
    assert!(folder.starts_with(env.cache().join("models--ldl-rs--bdims/snapshots")));
    for file in ["model.safetensors", "ldl.toml", "README.md"] {
        assert_eq!(
            std::fs::read(folder.join(file)).unwrap(),
            std::fs::read(model.join(file)).unwrap()
        );
    }

    // Without the server: the cache serves, offline or not.
    fake.stop();
    let offline = env.ok(&["fetch", "ldl-rs/bdims", "--offline"], &[]);
    assert_eq!(Path::new(offline.trim()), folder);
    let again = env.ok(
        &["predict", "hf://ldl-rs/bdims", "people.csv"],
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(again, local);
    let err = env.fails(&["fetch", "ldl-rs/other@v2", "--offline"], &[]);
    assert!(err.contains("is not in the cache at"), "{err}");
    assert!(
        err.contains("run `ldl fetch ldl-rs/other@v2` with network"),
        "{err}"
    );
    let err = env.fails(&["eval", "hf://ldl-rs/other", "--data", "people.csv"], &[]);
    assert!(err.contains("cannot reach the Hub at"), "{err}");

    let err = env.fails(&["fetch", "ldl-rs"], &[]);
    assert!(err.contains("`ldl-rs` is not a model repository"), "{err}");
}

#[test]
fn push_uploads_a_run_and_init_from_reads_it_back() {
    let fake = FakeHub::start();
    let (env, _run, model) = setup(fake.endpoint());

    let err = env.fails(&["push", "runs/bdims-1", "me/bdims"], &[]);
    assert!(err.contains("set HF_TOKEN"), "{err}");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    let out = env.ok(
        &["push", "runs/bdims-1", "me/bdims"],
        &[("HF_TOKEN", TOKEN)],
    );
    assert!(
        out.contains("pushed model.safetensors, ldl.toml, README.md to me/bdims"),
        "{out}"
    );
    assert!(out.contains("ldl predict hf://me/bdims"), "{out}");
    let stored = fake.files("me/bdims");
    assert_eq!(
        stored["model.safetensors"],
        std::fs::read(model.join("model.safetensors")).unwrap()
    );
    assert_eq!(
        stored["ldl.toml"],
        std::fs::read(model.join("ldl.toml")).unwrap()
    );

    // An exported folder goes up as it is.
    env.ok(&["push", "model", "me/exported"], &[("HF_TOKEN", TOKEN)]);
    assert_eq!(fake.files("me/exported").len(), 3);
    // With --onnx a run goes up with its ONNX file; an exported folder without one is
    // refused, naming the command that writes it.
    let out = env.ok(
        &["push", "runs/bdims-1", "me/bdims-onnx", "--onnx"],
        &[("HF_TOKEN", TOKEN)],
    );
    assert!(
        out.contains("pushed model.safetensors, ldl.toml, README.md, model.onnx"),
        "{out}"
    );
    let stored = fake.files("me/bdims-onnx");
    assert!(String::from_utf8_lossy(&stored["README.md"]).contains("## ONNX"));
    let err = env.fails(
        &["push", "model", "me/exported", "--onnx"],
        &[("HF_TOKEN", TOKEN)],
    );
    assert!(
        err.contains(
            "has no model.onnx; write it with `ldl export RUN_DIR --out model --onnx --force`"
        ),
        "{err}"
    );

    let out = env.ok(
        &[
            "train",
            "task.toml",
            "--set",
            "optim.epochs=1",
            "--set",
            "run.output_dir=\"runs\"",
            "--set",
            "model.init_from=\"hf://me/bdims\"",
        ],
        &[],
    );
    assert!(out.contains("initialised from hf://me/bdims: "), "{out}");
    assert!(out.contains(" tensors loaded, 0 new"), "{out}");
}
