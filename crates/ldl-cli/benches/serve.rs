//! Load on `ldl serve`: requests per second and latency percentiles for TinyAgeNet at
//! 64×64 with 1, 8 and 32 concurrent clients on loopback, beside the same model's
//! throughput in `ldl predict` on the same photos.
//!
//! ```sh
//! cargo bench -p ldl-cli --bench serve              # 10 s per client count
//! LDL_SERVE_BENCH_SECONDS=3 cargo bench -p ldl-cli --bench serve
//! ```
//!
//! Each client sends a 64×64 PNG as a raw body on a new connection, waits for the answer
//! and sends the next; the server runs with its defaults (batch window 5 ms, batches of at
//! most 32). The model is trained for one epoch on 200 synthetic faces: throughput does not
//! depend on its weights.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const QUICKSTART: &str = include_str!("../../../configs/quickstart.toml");
const PHOTOS: usize = 256;

fn ldl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ldl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the ldl binary runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("ldl prints UTF-8")
}

/// POSTs `body` as a PNG on a new connection; the answer's status.
fn post(address: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(address).expect("the server accepts");
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .expect("the request is sent");
    stream.write_all(body).expect("the body is sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// `clients` threads posting photos for `seconds`; every latency, in milliseconds.
fn load(address: &str, photos: &Arc<Vec<Vec<u8>>>, clients: usize, seconds: f64) -> Vec<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let address = address.to_string();
            let photos = Arc::clone(photos);
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut next = client;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    assert_eq!(post(&address, &photos[next % photos.len()]), 200);
                    latencies.push(start.elapsed().as_secs_f64() * 1e3);
                    next += clients;
                }
                latencies
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: f64 = std::env::var("LDL_SERVE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let dir = dir.path();
    std::fs::write(dir.join("task.toml"), QUICKSTART).expect("the config is written");
    ldl(
        dir,
        &[
            "train",
            "task.toml",
            "--quiet",
            "--set",
            "data.image_size=64",
            "--set",
            "model.width=1.0",
            "--set",
            "data.faces.count=200",
            "--set",
            "optim.epochs=1",
            "--set",
            "run.output_dir=\"runs\"",
        ],
    );
    let count = PHOTOS.to_string();
    ldl(
        dir,
        &[
            "synth", "--count", &count, "--size", "64", "--seed", "3", "--out", "faces",
        ],
    );
    let files: Vec<String> = (0..PHOTOS)
        .map(|i| format!("faces/images/{i:06}.png"))
        .collect();
    let photos: Arc<Vec<Vec<u8>>> = Arc::new(
        files
            .iter()
            .map(|f| std::fs::read(dir.join(f)).expect("a photo"))
            .collect(),
    );
    let checkpoint = "runs/quickstart-faces-1/checkpoints/best.safetensors";

    let mut args = vec!["predict", checkpoint];
    args.extend(files.iter().map(String::as_str));
    let start = Instant::now();
    ldl(dir, &args);
    let predict = PHOTOS as f64 / start.elapsed().as_secs_f64();
    println!("ldl predict: {PHOTOS} photos, {predict:.0} photos/s (process start and model load included)");

    let mut server = Command::new(env!("CARGO_BIN_EXE_ldl"))
        .current_dir(dir)
        .args(["serve", checkpoint, "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ldl serve starts");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the address line");
    let address = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("`listening on` first")
        .to_string();

    println!("| clients | requests | requests/s | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|---|");
    for clients in [1, 8, 32] {
        load(&address, &photos, clients, 1.0); // warm-up
        let mut latencies = load(&address, &photos, clients, seconds);
        latencies.sort_by(f64::total_cmp);
        println!(
            "| {clients} | {} | {:.0} | {:.1} | {:.1} |",
            latencies.len(),
            latencies.len() as f64 / seconds,
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0)
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
