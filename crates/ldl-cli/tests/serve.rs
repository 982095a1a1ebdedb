//! `ldl serve`: the real binary on an ephemeral loopback port. Its predictions equal
//! `ldl predict`'s on the same inputs (JSON rows for a feature model; raw and multipart
//! bodies for an image model), its page shows the same numbers in headless Chromium, every
//! bad request gets its status and a JSON error naming the problem, concurrent clients
//! share forward passes, the queue is bounded, and SIGTERM stops the server after it
//! answers what it accepted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const BDIMS: &str = include_str!("../../../configs/bdims.toml");
const QUICKSTART: &str = include_str!("../../../configs/quickstart.toml");

/// Runs `ldl ARGS` in `dir`; its stdout.
fn ldl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ldl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `ldl serve`, killed when dropped if it still runs.
struct Served {
    child: Child,
    address: String,
}

impl Served {
    /// Starts `ldl serve MODEL --port 0 ARGS` in `dir` and waits for its address.
    fn start(dir: &Path, model: &str, args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ldl"))
            .current_dir(dir)
            .args(["serve", model, "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        Served { child, address }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        request(&self.address, "GET", path, None, b"")
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        request(&self.address, "POST", path, Some(content_type), body)
    }

    fn health(&self) -> (u64, u64) {
        let (status, health) = self.get("/healthz");
        assert_eq!(status, 200);
        assert_eq!(health["status"], "ok");
        (
            health["forward_passes"].as_u64().unwrap(),
            health["samples"].as_u64().unwrap(),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on its own connection; the status and the JSON body.
fn request(
    address: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a body: what it sent still counts.
    let _ = stream.write_all(body);
    read_answer(stream)
}

/// The status and JSON body of the answer on `stream`.
fn read_answer(mut stream: TcpStream) -> (u16, Value) {
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {text:?}"));
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_str(body).unwrap())
}

/// Asserts an error answer: its status, and a message holding each of `parts`.
fn assert_error((status, body): (u16, Value), expected: u16, parts: &[&str]) {
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(status, expected, "{message}");
    for part in parts {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6
}

/// Asserts that a served prediction equals a line of `ldl predict --json --pmf`.
fn assert_same(served: &Value, predicted: &Value) {
    for axis in served["axes"].as_array().unwrap() {
        let name = axis["axis"].as_str().unwrap();
        let expected = &predicted[name];
        match expected.get("class") {
            Some(class) => {
                assert_eq!(axis["mode"], *class, "{name}");
                assert!(axis["mean"].is_null() && axis["std"].is_null());
            }
            None => {
                for field in ["mean", "std", "mode"] {
                    let (a, b) = (
                        axis[field].as_f64().unwrap(),
                        expected[field].as_f64().unwrap(),
                    );
                    assert!(close(a, b), "{name} {field}: {a} vs {b}");
                }
            }
        }
        let (a, b) = (
            axis["mode_probability"].as_f64().unwrap(),
            expected["mode_probability"].as_f64().unwrap(),
        );
        assert!(close(a, b), "{name} mode probability: {a} vs {b}");
        if let Some(pmf) = served.get("pmf") {
            let (p, q) = (
                pmf[name].as_array().unwrap(),
                expected["distribution"].as_array().unwrap(),
            );
            assert_eq!(p.len(), q.len());
            for (p, q) in p.iter().zip(q) {
                assert!(close(p.as_f64().unwrap(), q.as_f64().unwrap()), "{name}");
            }
        }
    }
}

/// Trains bdims with a categorical `sex` axis for 2 epochs in `dir`; its run folder.
fn train_bdims(dir: &Path) -> &'static str {
    let config = BDIMS
        .replace(
            "[[task.axes]]\nname = \"age\"",
            "[[task.axes]]\nname = \"sex\"\nkind = \"categorical\"\nclasses = [\"female\", \"male\"]\n\n[[task.axes]]\nname = \"age\"",
        )
        .replace(
            "age = { value = \"age_years\" }",
            "age = { value = \"age_years\" }\nsex = { class = \"sex\" }",
        );
    std::fs::write(dir.join("task.toml"), config).unwrap();
    ldl(
        dir,
        &[
            "train",
            "task.toml",
            "--quiet",
            "--set",
            "optim.epochs=2",
            "--set",
            "run.output_dir=\"runs\"",
        ],
    );
    "runs/bdims-1"
}

/// The first `n` rows of the built-in bdims table as `rows.csv` in `dir`, and as JSON
/// objects of the columns the model reads.
fn bdims_rows(dir: &Path, columns: &[String], n: usize) -> Vec<Value> {
    let csv = ldl_data::builtin_csv("bdims").unwrap();
    let lines: Vec<&str> = csv.lines().take(n + 1).collect();
    std::fs::write(dir.join("rows.csv"), lines.join("\n")).unwrap();
    let header: Vec<&str> = lines[0].split(',').collect();
    lines[1..]
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let row: serde_json::Map<String, Value> = columns
                .iter()
                .map(|name| {
                    let j = header.iter().position(|h| h == name).unwrap();
                    (name.clone(), json!(cells[j].parse::<f64>().unwrap()))
                })
                .collect();
            Value::Object(row)
        })
        .collect()
}

#[test]
fn a_feature_model_answers_as_ldl_predict_and_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_bdims(dir.path());
    let server = Served::start(dir.path(), run, &["--max-body", "4096"]);

    let (status, model) = server.get("/v1/model");
    assert_eq!(status, 200);
    assert_eq!(model["task"], "bdims");
    assert_eq!(model["model"]["backbone"], "mlp");
    assert_eq!(model["input"]["kind"], "features");
    let axes = model["axes"].as_array().unwrap();
    assert_eq!(axes[0]["name"], "sex");
    assert_eq!(axes[0]["kind"], "categorical");
    assert_eq!(axes[0]["classes"], json!(["female", "male"]));
    assert_eq!(axes[1]["name"], "age");
    assert_eq!(axes[1]["unit"], "years");
    assert_eq!(
        (axes[1]["min"].as_f64(), axes[1]["max"].as_f64()),
        (Some(15.0), Some(70.0))
    );
    assert_eq!(axes[1]["step"].as_f64(), Some(1.0));
    let columns: Vec<String> = model["input"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(columns.len(), 21, "{columns:?}");

    // The same rows through `ldl predict` and through the server.
    let rows = bdims_rows(dir.path(), &columns, 4);
    let checkpoint = format!("{run}/checkpoints/best.safetensors");
    let expected: Vec<Value> = ldl(
        dir.path(),
        &["predict", &checkpoint, "rows.csv", "--json", "--pmf"],
    )
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect();
    assert_eq!(expected.len(), 4);
    let body = json!({ "rows": rows }).to_string();
    let (status, answer) = server.post("/v1/predict?pmf=true", "application/json", body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 4);
    for (served, predicted) in predictions.iter().zip(&expected) {
        assert_same(served, predicted);
        assert_eq!(served["axes"][1]["unit"], "years");
        assert!(["female", "male"].contains(&served["axes"][0]["mode"].as_str().unwrap()));
    }
    // One object is one row; without `pmf` there are no distributions.
    let (status, answer) = server.post(
        "/v1/predict",
        "application/json",
        rows[2].to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let single = &answer["predictions"][0];
    assert!(single.get("pmf").is_none());
    assert_same(single, &expected[2]);

    // Bad requests: a 4xx and a JSON error naming the problem.
    let mut unknown = rows[0].clone();
    unknown["shoe_size"] = json!(44);
    let post_json = |value: &Value| {
        server.post(
            "/v1/predict",
            "application/json",
            value.to_string().as_bytes(),
        )
    };
    assert_error(post_json(&unknown), 422, &["unknown feature `shoe_size`"]);
    let mut missing = rows[0].clone();
    missing.as_object_mut().unwrap().remove(&columns[3]);
    assert_error(
        post_json(&json!({ "rows": [rows[1], missing] })),
        422,
        &["row 1", &format!("`{}` has no value", columns[3])],
    );
    let mut text = rows[0].clone();
    text[&columns[0]] = json!("tall");
    assert_error(
        post_json(&text),
        422,
        &[&format!("`{}`", columns[0]), "not a number"],
    );
    let mut boolean = rows[0].clone();
    boolean[&columns[1]] = json!(true);
    assert_error(
        post_json(&boolean),
        422,
        &[&format!("`{}`", columns[1]), "a boolean"],
    );
    assert_error(post_json(&json!({ "rows": [] })), 422, &["`rows` is empty"]);
    assert_error(
        post_json(&json!({ "rows": [1, 2] })),
        422,
        &["row 0 is not an object"],
    );
    assert_error(post_json(&json!([1, 2])), 422, &["expected {\"rows\""]);
    assert_error(
        server.post("/v1/predict", "application/json", b"{\"rows\": [}"),
        400,
        &["not valid JSON"],
    );
    assert_error(
        server.post("/v1/predict", "image/png", b"\x89PNG"),
        415,
        &["reads named features", "image/png"],
    );
    assert_error(
        server.post("/v1/predict?pmf=maybe", "application/json", body.as_bytes()),
        400,
        &["`pmf` must be true or false"],
    );
    let big = json!({ "rows": vec![rows[0].clone(); 20] }).to_string();
    assert!(big.len() > 4096 && big.len() < 8192, "{}", big.len());
    assert_error(
        server.post("/v1/predict", "application/json", big.as_bytes()),
        413,
        &["4096 bytes", "--max-body"],
    );
    assert_error(server.get("/v2/predict"), 404, &["no such route"]);
    assert_error(server.get("/v1/predict"), 405, &["method not allowed"]);
    // Refused requests never reached the model; the server still answers.
    assert_eq!(server.health(), (2, 5));
}

#[test]
fn concurrent_clients_share_forward_passes_and_a_full_queue_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_bdims(dir.path());
    let checkpoint = format!("{run}/checkpoints/best.safetensors");
    let server = Served::start(dir.path(), run, &["--batch-window-ms", "50"]);
    let (_, model) = server.get("/v1/model");
    let columns: Vec<String> = model["input"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let rows = bdims_rows(dir.path(), &columns, 32);
    let expected: Vec<Value> = ldl(
        dir.path(),
        &["predict", &checkpoint, "rows.csv", "--json", "--pmf"],
    )
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect();

    // 32 clients at once, each with its own row: each gets its own row's prediction.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .iter()
            .map(|row| {
                let body = row.to_string();
                let address = &server.address;
                scope.spawn(move || {
                    request(
                        address,
                        "POST",
                        "/v1/predict?pmf=true",
                        Some("application/json"),
                        body.as_bytes(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!((answers.len(), expected.len()), (32, 32));
    for ((status, answer), predicted) in answers.iter().zip(&expected) {
        assert_eq!(*status, 200, "{answer}");
        assert_same(&answer["predictions"][0], predicted);
    }
    let (passes, samples) = server.health();
    assert_eq!(samples, 32);
    assert!(passes < 32, "{passes} forward passes for 32 requests");
    drop(server);

    // One request may wait; the others are answered 503 at once, with a JSON error.
    let server = Served::start(
        dir.path(),
        run,
        &["--queue", "1", "--batch-window-ms", "200"],
    );
    let body = rows[0].to_string();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (body, address) = (&body, &server.address);
                scope.spawn(move || {
                    request(
                        address,
                        "POST",
                        "/v1/predict",
                        Some("application/json"),
                        body.as_bytes(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy: Vec<&(u16, Value)> = answers
        .iter()
        .filter(|(status, _)| *status == 503)
        .collect();
    let served = answers.iter().filter(|(status, _)| *status == 200).count();
    assert!(!busy.is_empty() && served >= 1, "{answers:?}");
    assert_eq!(busy.len() + served, 8, "{answers:?}");
    for answer in busy {
        assert_error(answer.clone(), 503, &["busy"]);
    }
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_answered_408_and_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_bdims(dir.path());
    let args = ["--queue", "1", "--body-timeout-s", "1"];
    let server = Served::start(dir.path(), run, &args);
    let (_, model) = server.get("/v1/model");
    let columns: Vec<String> = model["input"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let row = bdims_rows(dir.path(), &columns, 1).remove(0).to_string();

    // A client that announces its body and sends ten bytes of it, then nothing.
    let mut stalled = TcpStream::connect(&server.address).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.address,
        row.len()
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&row.as_bytes()[..10]).unwrap();
    let started = std::time::Instant::now();
    assert_error(
        read_answer(stalled),
        408,
        &["the body did not arrive within 1 s (--body-timeout-s)"],
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // Its place in the queue of one is free again.
    let (status, answer) = server.post("/v1/predict", "application/json", row.as_bytes());
    assert_eq!(status, 200, "{answer}");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_after_it_answers_the_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_bdims(dir.path());
    let mut server = Served::start(dir.path(), run, &["--batch-window-ms", "3000"]);
    let (_, model) = server.get("/v1/model");
    let columns: Vec<String> = model["input"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let rows = bdims_rows(dir.path(), &columns, 1);
    let address = server.address.clone();
    let body = rows[0].to_string();
    let in_flight = std::thread::spawn(move || {
        request(
            &address,
            "POST",
            "/v1/predict",
            Some("application/json"),
            body.as_bytes(),
        )
    });
    // The request waits in the batch window when the signal comes.
    std::thread::sleep(Duration::from_millis(800));
    let pid = libc::pid_t::try_from(server.child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (status, answer) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"].as_array().unwrap().len(), 1);
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A TinyAgeNet at a quarter width trained for one epoch on 60 synthetic faces, in
/// `runs/quickstart-faces-1` under `dir`.
fn train_tiny_image_model(dir: &Path) {
    std::fs::write(dir.join("task.toml"), QUICKSTART).unwrap();
    ldl(
        dir,
        &[
            "train",
            "task.toml",
            "--quiet",
            "--set",
            "optim.epochs=1",
            "--set",
            "data.faces.count=60",
            "--set",
            "model.width=0.25",
            "--set",
            "run.output_dir=\"runs\"",
        ],
    );
}

#[test]
fn an_image_model_answers_raw_and_multipart_bodies_as_ldl_predict() {
    let dir = tempfile::tempdir().unwrap();
    train_tiny_image_model(dir.path());
    ldl(
        dir.path(),
        &[
            "synth", "--count", "3", "--size", "48", "--seed", "5", "--out", "faces",
        ],
    );
    let images: Vec<String> = (0..3).map(|i| format!("faces/images/{i:06}.png")).collect();
    let checkpoint = "runs/quickstart-faces-1/checkpoints/best.safetensors";
    let mut args = vec!["predict", checkpoint, "--json", "--pmf"];
    args.extend(images.iter().map(String::as_str));
    let expected: Vec<Value> = ldl(dir.path(), &args)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(expected.len(), 3);
    let bytes: Vec<Vec<u8>> = images
        .iter()
        .map(|image| std::fs::read(dir.path().join(image)).unwrap())
        .collect();

    let server = Served::start(dir.path(), checkpoint, &[]);
    let (status, model) = server.get("/v1/model");
    assert_eq!(status, 200);
    assert_eq!(model["input"]["kind"], "image");
    assert_eq!(model["input"]["width"], 32);
    assert_eq!(model["model"]["backbone"], "tiny-age-net");

    // A raw body per image.
    for (image, predicted) in bytes.iter().zip(&expected) {
        let (status, answer) = server.post("/v1/predict?pmf=true", "image/png", image);
        assert_eq!(status, 200, "{answer}");
        assert_same(&answer["predictions"][0], predicted);
        assert_eq!(answer["predictions"][0]["axes"][0]["unit"], "years");
    }
    // All three as the `image` parts of one form, in order.
    let boundary = "ldl-test-boundary";
    let mut form = Vec::new();
    for (i, image) in bytes.iter().enumerate() {
        form.extend(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.png\"\r\nContent-Type: image/png\r\n\r\n"
        ).as_bytes());
        form.extend(image);
        form.extend(b"\r\n");
    }
    form.extend(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let (status, answer) = server.post("/v1/predict?pmf=true", &content_type, &form);
    assert_eq!(status, 200, "{answer}");
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    for (served, predicted) in predictions.iter().zip(&expected) {
        assert_same(served, predicted);
    }

    // Bad requests.
    assert_error(
        server.post("/v1/predict", "text/plain", b"hello"),
        415,
        &["reads images", "text/plain"],
    );
    assert_error(
        server.post("/v1/predict", "image/png", b"not a png at all"),
        422,
        &["cannot be decoded"],
    );
    assert_error(
        server.post("/v1/predict", "image/jpeg", b""),
        422,
        &["empty"],
    );
    let other = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"\r\n\r\nxyz\r\n--{boundary}--\r\n"
    );
    assert_error(
        server.post("/v1/predict", &content_type, other.as_bytes()),
        422,
        &["unknown form field `photo`"],
    );
    let none = format!("--{boundary}--\r\n");
    assert_error(
        server.post("/v1/predict", &content_type, none.as_bytes()),
        422,
        &["no `image` part"],
    );
    let mut broken = form.clone();
    broken.truncate(form.len() / 2);
    let (status, _) = server.post("/v1/predict", &content_type, &broken);
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(server.health().1, 6);
}

#[test]
fn categorical_columns_take_strings_and_missing_values_take_null() {
    let dir = tempfile::tempdir().unwrap();
    // bdims with a text column: each person's build, missing for every seventh.
    let csv = ldl_data::builtin_csv("bdims").unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (waist, hip, weight) = (column("wai_gi"), column("hip_gi"), column("weight_kg"));
    let mut table = String::from("wai_gi,hip_gi,build,weight_kg\n");
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        let build = match i % 7 {
            0 => "",
            _ if cells[waist].parse::<f64>().unwrap() < 80.0 => "slim",
            _ => "broad",
        };
        table.push_str(&format!(
            "{},{},{build},{}\n",
            cells[waist], cells[hip], cells[weight]
        ));
    }
    std::fs::write(dir.path().join("people.csv"), table).unwrap();
    let config = "[task]\nname = \"build\"\n\n[[task.axes]]\nname = \"weight\"\nunit = \"kg\"\n\
                  min = 40\nmax = 120\nstep = 1\n\n[data]\nsource = \"people.csv\"\n\
                  features = [\"wai_gi\", \"hip_gi\", \"build\"]\nmissing = \"mean\"\n\
                  split = { validation = 0.2, test = 0.2 }\n\n[data.labels]\n\
                  weight = { value = \"weight_kg\" }\n\n[model]\nbackbone = \"mlp\"\n\
                  hidden = [16]\n\n[optim]\nepochs = 2\n\n[run]\noutput_dir = \"runs\"\n";
    std::fs::write(dir.path().join("task.toml"), config).unwrap();
    ldl(dir.path(), &["train", "task.toml", "--quiet"]);
    std::fs::write(
        dir.path().join("rows.csv"),
        "wai_gi,hip_gi,build\n70,90,slim\n95,100,broad\n85,95,\n",
    )
    .unwrap();
    let checkpoint = "runs/build-1/checkpoints/best.safetensors";
    let expected: Vec<Value> = ldl(
        dir.path(),
        &["predict", checkpoint, "rows.csv", "--json", "--pmf"],
    )
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect();

    let server = Served::start(dir.path(), "runs/build-1", &[]);
    let (_, model) = server.get("/v1/model");
    let build = &model["input"]["columns"][2];
    assert_eq!(build["kind"], "categorical");
    assert_eq!(build["categories"], json!(["broad", "slim"]));
    let rows = json!({ "rows": [
        { "wai_gi": 70, "hip_gi": 90, "build": "slim" },
        { "wai_gi": 95, "hip_gi": 100, "build": "broad" },
        { "wai_gi": 85, "hip_gi": 95, "build": null },
    ]});
    let (status, answer) = server.post(
        "/v1/predict?pmf=true",
        "application/json",
        rows.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!((predictions.len(), expected.len()), (3, 3));
    for (served, predicted) in predictions.iter().zip(&expected) {
        assert_same(served, predicted);
    }
    // A left-out column is missing too, and filled the same way.
    let (status, answer) = server.post(
        "/v1/predict?pmf=true",
        "application/json",
        json!({ "wai_gi": 85, "hip_gi": 95 }).to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_same(&answer["predictions"][0], &expected[2]);
    let unseen = json!({ "wai_gi": 85, "hip_gi": 95, "build": "medium" });
    assert_error(
        server.post(
            "/v1/predict",
            "application/json",
            unseen.to_string().as_bytes(),
        ),
        422,
        &["`build`", "`medium`", "broad, slim"],
    );
}

/// A GET on its own connection; the response head and body as text.
fn raw_get(address: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Headless Chromium as root on a machine without a display or network: no sandbox (it
/// needs user namespaces), and no background connections, which a closed network refuses.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Chromium from the distribution's package, if installed; without it a browser test is
/// skipped, except under CI.
fn chromium() -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| Path::new(path).exists());
    if found.is_none() {
        // Skipped here, but never under CI, whose script installs it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the browser tests: .ci/run installs chromium"
        );
        eprintln!("skipped the browser part: chromium is not installed");
    }
    found
}

/// `text` percent-encoded for a URL fragment.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The page's way of writing a number (JavaScript's `toFixed`: 1 decimal from 100 up).
fn as_the_page_writes(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The page at `url` as headless Chromium (`browser`) renders it, after its scripts ran.
fn dump_dom(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args(CHROMIUM_FLAGS)
        .args(["--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read the whole DOM before waiting, so a large page cannot fill the pipe; the read
    // ends when Chromium exits, and a browser that hangs is killed after two minutes.
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(120));
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let mut dom = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut dom)
        .unwrap();
    child.wait().unwrap();
    drop(watchdog);
    dom
}

/// The value of attribute `name` in the SVG element `element` (`x2="12.5"` → 12.5).
fn attribute(element: &str, name: &str) -> f64 {
    let start = element
        .find(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {element}"))
        + name.len()
        + 3;
    let end = start + element[start..].find('"').unwrap();
    element[start..end].parse().unwrap()
}

/// A circular axis is drawn as a dial in a real browser: one spoke per bin, and the needle
/// pointing at the API's circular mean (0° up, clockwise, as the page draws it).
#[test]
fn the_page_draws_a_circular_axis_as_a_dial() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A wind direction read from its east and north components.
    let mut csv = String::from("east,north,direction\n");
    for i in 0..240 {
        let degrees = (i * 37 % 360) as f64 + 0.5;
        let radians = degrees.to_radians();
        csv.push_str(&format!(
            "{:.4},{:.4},{degrees}\n",
            radians.sin(),
            radians.cos()
        ));
    }
    std::fs::write(dir.path().join("wind.csv"), csv).unwrap();
    let config = "[task]\nname = \"wind\"\n\n[[task.axes]]\nname = \"direction\"\n\
                  kind = \"circular\"\nunit = \"degrees\"\nmin = 0\nperiod = 360\nstep = 10\n\n\
                  [data]\nsource = \"wind.csv\"\nfeatures = [\"east\", \"north\"]\n\n\
                  [data.labels]\ndirection = { value = \"direction\" }\n\n\
                  [model]\nbackbone = \"mlp\"\nhidden = [16]\n\n\
                  [optim]\nepochs = 20\n\n[run]\noutput_dir = \"runs\"\n";
    std::fs::write(dir.path().join("wind.toml"), config).unwrap();
    ldl(dir.path(), &["train", "wind.toml", "--quiet"]);
    let server = Served::start(dir.path(), "runs/wind-1", &[]);
    let row = json!({ "east": 1.0, "north": 0.0 });
    let (status, answer) = server.post(
        "/v1/predict",
        "application/json",
        row.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let mean = answer["predictions"][0]["axes"][0]["mean"]
        .as_f64()
        .unwrap();

    let url = format!(
        "http://{}/#row={}",
        server.address,
        percent_encoded(&row.to_string())
    );
    let dom = dump_dom(browser, &url);
    let start = dom
        .find("data-axis=\"direction\"")
        .unwrap_or_else(|| panic!("no chart for direction: {dom}"));
    let chart = &dom[start..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    assert!(chart.contains("<circle"), "{chart}");
    let lines: Vec<&str> = chart.split("<line").skip(1).collect();
    assert_eq!(
        lines.len(),
        36 + 1,
        "a spoke per bin and the needle: {chart}"
    );
    let needle = lines[36];
    // The page's geometry: centre (100, 100), radius 80, 0° at the top, clockwise.
    let angle = mean / 360.0 * std::f64::consts::TAU - std::f64::consts::FRAC_PI_2;
    let (x, y) = (100.0 + 80.0 * angle.cos(), 100.0 + 80.0 * angle.sin());
    let (x2, y2) = (attribute(needle, "x2"), attribute(needle, "y2"));
    assert!(
        (x2 - x).abs() < 1e-6 && (y2 - y).abs() < 1e-6,
        "needle at ({x2}, {y2}), mean {mean}° is at ({x}, {y})"
    );
    // The wind blows from the east: the model has learnt roughly 90°.
    assert!((mean - 90.0).abs() < 45.0, "mean {mean}");
}

/// The page at `/` is plain HTML with its script inline and fetches nothing from
/// elsewhere. In headless Chromium, a row carried by the link is predicted and drawn: an
/// SVG chart per axis, and beside it the API's mean ± std and mode (a class name on the
/// categorical axis). Without Chromium the browser half is skipped, but not under CI,
/// whose script installs it.
#[test]
fn the_page_shows_the_predictions_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_bdims(dir.path());
    let server = Served::start(dir.path(), run, &[]);
    let (head, page) = raw_get(&server.address, "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(page.contains("<script>") && page.contains("/v1/predict"));
    for external in ["src=", "href=", "@import", "url("] {
        assert!(!page.contains(external), "the page loads {external}…");
    }

    let Some(browser) = chromium() else {
        return;
    };
    let (_, model) = server.get("/v1/model");
    let columns: Vec<String> = model["input"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let row = bdims_rows(dir.path(), &columns, 1).remove(0);
    let (status, answer) = server.post(
        "/v1/predict",
        "application/json",
        row.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");

    let url = format!(
        "http://{}/#row={}",
        server.address,
        percent_encoded(&row.to_string())
    );
    let dom = dump_dom(browser, &url);

    let axes = answer["predictions"][0]["axes"].as_array().unwrap();
    for axis in axes {
        let name = axis["axis"].as_str().unwrap();
        let start = dom
            .find(&format!("data-axis=\"{name}\""))
            .unwrap_or_else(|| panic!("no chart for {name} in the page: {dom}"));
        let section = &dom[start..];
        let section = &section[..section[1..]
            .find("data-axis=")
            .map_or(section.len(), |i| i + 1)];
        assert!(section.contains("<svg"), "{name}: {section}");
        let p = format!("(p = {:.3})", axis["mode_probability"].as_f64().unwrap());
        match axis["mode"].as_str() {
            Some(class) => assert!(section.contains(&format!("mode {class} {p}")), "{section}"),
            None => {
                let unit = axis["unit"].as_str().unwrap();
                let mean = format!(
                    "mean {} ± {} {unit}",
                    as_the_page_writes(axis["mean"].as_f64().unwrap()),
                    as_the_page_writes(axis["std"].as_f64().unwrap())
                );
                assert!(section.contains(&mean), "{name}: {mean} not in {section}");
                let mode = as_the_page_writes(axis["mode"].as_f64().unwrap());
                assert!(
                    section.contains(&format!("mode {mode} {unit} {p}")),
                    "{section}"
                );
            }
        }
    }
}

/// Headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: JSON messages ended by a NUL byte, requests on the
/// child's fd 3, answers and events on its fd 4), attached to one page.
#[cfg(unix)]
struct Browser {
    child: Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

#[cfg(unix)]
impl Browser {
    /// Starts Chromium and opens `url` in a page of its own.
    fn open(chromium: &str, url: &str) -> Browser {
        use std::os::fd::{FromRawFd, RawFd};
        use std::os::unix::process::CommandExt;
        let pipe = || {
            let mut fds: [RawFd; 2] = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 writes.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            fds
        };
        // The child's ends move to descriptors above 9, so that dup2 onto 3 and 4 below
        // always copies (a copy onto itself would keep close-on-exec) and never overwrites
        // the other end.
        let above_nine = |fd: RawFd| {
            // SAFETY: `fd` is open (from pipe2); the copy is a new descriptor we own.
            let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            assert!(high >= 10);
            // SAFETY: `fd` is ours and no longer used.
            unsafe { libc::close(fd) };
            high
        };
        let [child_reads, we_write] = pipe();
        let [we_read, child_writes] = pipe();
        let (child_reads, child_writes) = (above_nine(child_reads), above_nine(child_writes));
        let profile = tempfile::tempdir().unwrap();
        let mut command = Command::new(chromium);
        command
            .args(CHROMIUM_FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only dup2, which is async-signal-safe, runs; the
        // copies on fds 3 and 4 lose close-on-exec, the originals keep it.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(child_reads, 3) < 0 || libc::dup2(child_writes, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        // SAFETY: each descriptor came from pipe2 above and is owned by one File only.
        let (to, from) = unsafe {
            libc::close(child_reads);
            libc::close(child_writes);
            (
                std::fs::File::from_raw_fd(we_write),
                std::fs::File::from_raw_fd(we_read),
            )
        };
        let mut browser = Browser {
            child,
            to,
            from: BufReader::new(from),
            next_id: 0,
            session: None,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": url }));
        let target_id = target["targetId"].clone();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        browser
    }

    /// Sends one command and returns its result, skipping the events that come between.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let mut message = json!({ "id": self.next_id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut reply = Vec::new();
            let read = self.from.read_until(0, &mut reply).unwrap();
            assert!(read > 0, "Chromium closed the pipe during {method}");
            reply.pop();
            let reply: Value = serde_json::from_slice(&reply).unwrap();
            if reply["id"] == json!(self.next_id) {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is true, for at most a minute.
    fn wait_for(&mut self, expression: &str) {
        for _ in 0..600 {
            if self.evaluate(expression) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the page never had {expression}");
    }
}

#[cfg(unix)]
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image model's page in headless Chromium: a photo given to its file input is sent,
/// and the page shows, for every axis, a chart and the API's mean ± std and mode for the
/// same photo. Skipped without Chromium, but not under CI, whose script installs it.
#[cfg(unix)]
#[test]
fn the_page_takes_a_photo_in_a_browser() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    train_tiny_image_model(dir.path());
    ldl(
        dir.path(),
        &[
            "synth", "--count", "1", "--size", "48", "--seed", "7", "--out", "faces",
        ],
    );
    let photo = dir.path().join("faces/images/000000.png");
    let server = Served::start(dir.path(), "runs/quickstart-faces-1", &[]);
    let (status, answer) = server.post("/v1/predict", "image/png", &std::fs::read(&photo).unwrap());
    assert_eq!(status, 200, "{answer}");
    let axes = answer["predictions"][0]["axes"].as_array().unwrap().clone();

    let mut browser = Browser::open(chromium, &format!("http://{}/", server.address));
    browser.wait_for("document.getElementById('file') !== null");
    let document = browser.call("DOM.getDocument", json!({}));
    let input = browser.call(
        "DOM.querySelector",
        json!({ "nodeId": document["root"]["nodeId"], "selector": "#file" }),
    );
    browser.call(
        "DOM.setFileInputFiles",
        json!({ "files": [photo.display().to_string()], "nodeId": input["nodeId"] }),
    );
    let count = axes.len();
    browser.wait_for(&format!(
        "document.querySelectorAll('#results .axis svg').length === {count} \
         || document.getElementById('error').textContent !== ''"
    ));
    assert_eq!(
        browser.evaluate("document.getElementById('error').textContent"),
        json!("")
    );
    assert_eq!(
        browser.evaluate("document.getElementById('preview').style.display"),
        json!("block")
    );
    for axis in &axes {
        let name = axis["axis"].as_str().unwrap();
        let shown = browser.evaluate(&format!(
            "document.querySelector('[data-axis=\"{name}\"] .numbers').innerText"
        ));
        let shown = shown
            .as_str()
            .unwrap_or_else(|| panic!("no numbers for {name}"));
        let unit = axis["unit"].as_str().unwrap();
        let mean = format!(
            "mean {} ± {} {unit}",
            as_the_page_writes(axis["mean"].as_f64().unwrap()),
            as_the_page_writes(axis["std"].as_f64().unwrap())
        );
        assert!(shown.contains(&mean), "{name}: {mean} not in {shown:?}");
        let mode = format!(
            "mode {} {unit} (p = {:.3})",
            as_the_page_writes(axis["mode"].as_f64().unwrap()),
            axis["mode_probability"].as_f64().unwrap()
        );
        assert!(shown.contains(&mode), "{name}: {mode} not in {shown:?}");
    }
    let _ = browser.call("Browser.close", json!({}));
}
