//! A fake Hugging Face Hub for tests: a plain HTTP/1.1 server on 127.0.0.1 that answers the
//! requests ldl makes, with no network beyond the loopback.
//!
//! - `HEAD|GET /{owner}/{name}/resolve/{revision}/{file}`: 200 with `ETag` (the SHA-256 of the
//!   content for LFS files, the git blob SHA-1 for others, as the Hub does), `X-Repo-Commit`,
//!   `Content-Length`; 404 with the Hub's
//!   `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`); 401 for a private
//!   repository without the right token.
//! - Datasets: `GET /api/datasets/{owner}/{name}/revision/{revision}` (the repository's
//!   info at a revision: `sha` and `siblings`, as the Hub lists the files of
//!   `refs/convert/parquet`) and `HEAD|GET /datasets/{owner}/{name}/resolve/{revision}/{file}`,
//!   answered like the model routes.
//! - `POST /api/repos/create`, `POST /api/models/{owner}/{name}/preupload/{revision}` (every
//!   file "regular", so uploads come inline) and `POST /api/models/{owner}/{name}/commit/{revision}`.
//!
//! It can also misbehave as a hostile Hub, mirror or proxy could ([`FakeHub::hostile`]): path
//! traversal in the ETag or `X-Repo-Commit`, an ETag that is no hash, a connection that is
//! accepted and never answered, a body that stalls half-way, a huge announced size, a body
//! longer than announced, a redirect to another scheme. Traversal in a dataset listing needs no
//! mode: add a file of that name with [`FakeHub::add_dataset`].
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The token the fake hub accepts for private repositories and uploads.
pub const TOKEN: &str = "hf_fake_token";

/// How GET responses of file contents are spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncate {
    /// `Content-Length` announces the whole file, half of it is sent, the connection closes.
    CloseEarly,
    /// `Content-Length` and body agree on half the file (the HEAD announced all of it).
    ShortBody,
}

/// How the answers about files are spoiled, as a hostile Hub could spoil them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostile {
    /// Every file's `ETag` is this value (unquoted; sent in quotes).
    Etag(String),
    /// Every file answer's `X-Repo-Commit` is this value.
    Commit(String),
    /// Every connection is accepted and its request read, then nothing is sent until the hub
    /// stops.
    Stall,
    /// File downloads (GET) send their headers and half the body, then nothing.
    StallBody,
    /// File answers (HEAD and GET) announce this size; the body sent is the real one.
    Announce(u64),
    /// File downloads (GET) send this many bytes more than the file, without a
    /// `Content-Length` (the body ends when the connection closes); HEAD announces the file.
    Overflow(usize),
    /// File downloads (GET) answer `302 Found` with this `Location`.
    Redirect(String),
}

#[derive(Default)]
struct Repo {
    private: bool,
    branches: HashMap<String, String>,
    commits: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    truncate: Option<Truncate>,
    hostile: Option<Hostile>,
    requests: Vec<String>,
    commits_made: u64,
}

/// A running fake hub; stopped when dropped.
pub struct FakeHub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn commit_id(n: u64) -> String {
    format!(
        "{:040x}",
        0xc0ffee_u64.wrapping_mul(1_000_003).wrapping_add(n)
    )
}

impl FakeHub {
    /// Starts a fake hub on a free port.
    pub fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &state, addr, &stop);
                    });
                }
            })
        };
        FakeHub {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The base URL to use as the Hub endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds (or replaces) the repository `repo` (`owner/name`) with one commit on `main`
    /// holding `files`; returns that commit.
    pub fn add_repo(&self, repo: &str, files: &[(&str, &[u8])]) -> String {
        self.add_commit(repo.to_string(), "main", files)
    }

    /// Adds (or replaces) the dataset repository `repo` (`owner/name`) with one commit on the
    /// branch `revision` (e.g. `refs/convert/parquet`) holding `files` (paths in the
    /// repository); returns that commit.
    pub fn add_dataset(&self, repo: &str, revision: &str, files: &[(&str, &[u8])]) -> String {
        self.add_commit(format!("datasets/{repo}"), revision, files)
    }

    /// The repository `repo_id` (as routes key it) with one commit on `branch`.
    fn add_commit(&self, repo_id: String, branch: &str, files: &[(&str, &[u8])]) -> String {
        let mut state = self.state.lock().unwrap();
        state.commits_made += 1;
        let commit = commit_id(state.commits_made);
        let mut r = Repo::default();
        r.commits.insert(
            commit.clone(),
            files
                .iter()
                .map(|(f, b)| (f.to_string(), b.to_vec()))
                .collect(),
        );
        r.branches.insert(branch.into(), commit.clone());
        state.repos.insert(repo_id, r);
        commit
    }

    /// Adds the repository `repo` with the files of `folder` (not recursive).
    pub fn add_folder(&self, repo: &str, folder: &Path) -> String {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        self.add_repo(repo, &files)
    }

    /// Makes `repo` private: file requests without `Authorization: Bearer TOKEN` get 401.
    pub fn set_private(&self, repo: &str) {
        let mut state = self.state.lock().unwrap();
        state.repos.get_mut(repo).expect("repo").private = true;
    }

    /// Spoils the GET responses of file contents from now on.
    pub fn truncate(&self, mode: Option<Truncate>) {
        self.state.lock().unwrap().truncate = mode;
    }

    /// Spoils the answers about files from now on (see [`Hostile`]); `None` answers well again.
    pub fn hostile(&self, mode: Option<Hostile>) {
        self.state.lock().unwrap().hostile = mode;
    }

    /// The requests served so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The files of `repo` at the head of `main`.
    pub fn files(&self, repo: &str) -> BTreeMap<String, Vec<u8>> {
        let state = self.state.lock().unwrap();
        let r = state.repos.get(repo).expect("repo");
        r.commits[&r.branches["main"]].clone()
    }

    /// Stops serving: later connections are refused.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            let _ = thread.join();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Overrides the `Content-Length` sent (to announce more than is sent).
    announced: Option<u64>,
    /// Sends no `Content-Length`: the body ends when the connection closes.
    unannounced: bool,
    /// Sends the headers and this many bytes of the body, then nothing until the hub stops.
    stall_after: Option<usize>,
}

fn response(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response {
        status,
        headers: vec![],
        body: body.into(),
        announced: None,
        unannounced: false,
        stall_after: None,
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let mut r = response(status, format!("{{\"error\":\"{message}\"}}"));
    r.headers.push(("X-Error-Code".into(), code.into()));
    r.headers.push(("X-Error-Message".into(), message.into()));
    r.headers
        .push(("Content-Type".into(), "application/json".into()));
    r
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        302 => "Found",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    }
}

/// Holds the connection open, sending nothing, until the hub stops (at most a minute).
fn stall(stop: &AtomicBool) {
    for _ in 0..1200 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn serve(
    mut stream: TcpStream,
    state: &Mutex<State>,
    addr: SocketAddr,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let request = read_request(&stream)?;
    let head = request.method == "HEAD";
    let r = route(&request, state, addr);
    if state.lock().unwrap().hostile == Some(Hostile::Stall) {
        stall(stop);
        return Ok(());
    }
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !r.unannounced {
        let length = r.announced.unwrap_or(r.body.len() as u64);
        out.push_str(&format!("Content-Length: {length}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    stream.write_all(out.as_bytes())?;
    if !head {
        match r.stall_after {
            Some(n) => {
                stream.write_all(&r.body[..n.min(r.body.len())])?;
                stream.flush()?;
                stall(stop);
                return Ok(());
            }
            None => stream.write_all(&r.body)?,
        }
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn authorized(request: &Request) -> bool {
    request.headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"))
}

/// The repository and the commit `revision` (a commit, or a branch; `/` as `%2F`) names,
/// or the Hub's answer when there is none or the request may not see it.
fn commit_of<'s>(
    st: &'s State,
    repo_id: &str,
    revision: &str,
    request: &Request,
) -> Result<(&'s Repo, String), Response> {
    let Some(repo) = st.repos.get(repo_id) else {
        return Err(error(404, "RepoNotFound", "Repository not found"));
    };
    if repo.private && !authorized(request) {
        return Err(error(
            401,
            "RepoNotFound",
            "Invalid credentials in Authorization header",
        ));
    }
    let revision = revision.replace("%2F", "/");
    if repo.commits.contains_key(&revision) {
        Ok((repo, revision))
    } else if let Some(c) = repo.branches.get(&revision) {
        Ok((repo, c.clone()))
    } else {
        Err(error(404, "RevisionNotFound", "Invalid rev id"))
    }
}

fn route(request: &Request, state: &Mutex<State>, addr: SocketAddr) -> Response {
    let mut st = state.lock().unwrap();
    st.requests
        .push(format!("{} {}", request.method, request.path));
    let path = request.path.split('?').next().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "datasets", owner, name, "revision", revision]) => {
            let (repo, commit) =
                match commit_of(&st, &format!("datasets/{owner}/{name}"), revision, request) {
                    Ok(found) => found,
                    Err(response) => return response,
                };
            let siblings: Vec<serde_json::Value> = repo.commits[&commit]
                .keys()
                .map(|f| serde_json::json!({ "rfilename": f }))
                .collect();
            let mut r = response(
                200,
                serde_json::json!({
                    "id": format!("{owner}/{name}"),
                    "sha": commit,
                    "private": repo.private,
                    "siblings": siblings,
                })
                .to_string(),
            );
            r.headers
                .push(("Content-Type".into(), "application/json".into()));
            r
        }
        ("HEAD" | "GET", [owner, name, "resolve", revision, file @ ..])
        | ("HEAD" | "GET", ["datasets", owner, name, "resolve", revision, file @ ..])
            if !file.is_empty() =>
        {
            let repo_id = if segments[0] == "datasets" {
                format!("datasets/{owner}/{name}")
            } else {
                format!("{owner}/{name}")
            };
            let file = file.join("/");
            let truncate = st.truncate;
            let hostile = st.hostile.clone();
            let (repo, commit) = match commit_of(&st, &repo_id, revision, request) {
                Ok(found) => found,
                Err(response) => return response,
            };
            let Some(bytes) = repo.commits[&commit].get(&file) else {
                let mut r = error(404, "EntryNotFound", "Entry not found");
                r.headers.push(("X-Repo-Commit".into(), commit));
                return r;
            };
            let mut r = response(200, bytes.clone());
            r.headers
                .push(("ETag".into(), format!("\"{}\"", etag(&file, bytes))));
            r.headers.push(("X-Repo-Commit".into(), commit));
            r.headers
                .push(("Content-Type".into(), "application/octet-stream".into()));
            if request.method == "GET" {
                match truncate {
                    Some(Truncate::CloseEarly) => {
                        r.announced = Some(bytes.len() as u64);
                        r.body.truncate(bytes.len() / 2);
                    }
                    Some(Truncate::ShortBody) => r.body.truncate(bytes.len() / 2),
                    None => {}
                }
            }
            spoil(&mut r, hostile, request.method == "GET");
            r
        }
        ("POST", ["api", "repos", "create"]) => {
            if !authorized(request) {
                return error(
                    401,
                    "Unauthorized",
                    "Invalid credentials in Authorization header",
                );
            }
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let name = body["name"].as_str().unwrap_or("").to_string();
            let owner = body["organization"].as_str().unwrap_or("").to_string();
            let repo_id = format!("{owner}/{name}");
            if st.repos.contains_key(&repo_id) {
                return error(409, "Conflict", "You already created this model repo");
            }
            st.commits_made += 1;
            let commit = commit_id(st.commits_made);
            let mut repo = Repo::default();
            repo.commits.insert(commit.clone(), BTreeMap::new());
            repo.branches.insert("main".into(), commit);
            st.repos.insert(repo_id.clone(), repo);
            response(200, format!("{{\"url\":\"http://{addr}/{repo_id}\"}}"))
        }
        ("POST", ["api", "models", owner, name, "preupload", _revision]) => {
            if !authorized(request) {
                return error(
                    401,
                    "Unauthorized",
                    "Invalid credentials in Authorization header",
                );
            }
            if !st.repos.contains_key(&format!("{owner}/{name}")) {
                return error(404, "RepoNotFound", "Repository not found");
            }
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let files: Vec<serde_json::Value> = body["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|f| serde_json::json!({"path": f["path"], "uploadMode": "regular"}))
                .collect();
            response(200, serde_json::json!({ "files": files }).to_string())
        }
        ("POST", ["api", "models", owner, name, "commit", revision]) => {
            if !authorized(request) {
                return error(
                    401,
                    "Unauthorized",
                    "Invalid credentials in Authorization header",
                );
            }
            let repo_id = format!("{owner}/{name}");
            st.commits_made += 1;
            let commit = commit_id(st.commits_made);
            let Some(repo) = st.repos.get_mut(&repo_id) else {
                return error(404, "RepoNotFound", "Repository not found");
            };
            let Some(parent) = repo.branches.get(*revision).cloned() else {
                return error(404, "RevisionNotFound", "Invalid rev id");
            };
            let mut files = repo.commits[&parent].clone();
            for line in request.body.split(|b| *b == b'\n') {
                let Ok(op) = serde_json::from_slice::<serde_json::Value>(line) else {
                    continue;
                };
                match op["key"].as_str() {
                    Some("file") => {
                        let path = op["value"]["path"].as_str().unwrap_or("").to_string();
                        let content = op["value"]["content"].as_str().unwrap_or("");
                        files.insert(path, base64_decode(content));
                    }
                    Some("deletedFile") => {
                        files.remove(op["value"]["path"].as_str().unwrap_or(""));
                    }
                    _ => {}
                }
            }
            repo.commits.insert(commit.clone(), files);
            repo.branches.insert(revision.to_string(), commit.clone());
            response(
                200,
                serde_json::json!({
                    "commitUrl": format!("http://{addr}/{repo_id}/commit/{commit}"),
                    "commitOid": commit,
                })
                .to_string(),
            )
        }
        _ => error(404, "NotFound", "Not found"),
    }
}

/// Applies a [`Hostile`] mode to the answer `r` about a file (a download when `get`).
fn spoil(r: &mut Response, hostile: Option<Hostile>, get: bool) {
    let set = |r: &mut Response, name: &str, value: String| {
        for (k, v) in r.headers.iter_mut() {
            if k == name {
                *v = value.clone();
            }
        }
    };
    match hostile {
        Some(Hostile::Etag(etag)) => set(r, "ETag", format!("\"{etag}\"")),
        Some(Hostile::Commit(commit)) => set(r, "X-Repo-Commit", commit),
        Some(Hostile::Announce(size)) => r.announced = Some(size),
        Some(Hostile::StallBody) if get => r.stall_after = Some(r.body.len() / 2),
        Some(Hostile::Overflow(extra)) if get => {
            r.unannounced = true;
            r.body.extend(vec![b'x'; extra]);
        }
        Some(Hostile::Redirect(location)) if get => {
            r.status = 302;
            r.body.clear();
            r.headers.push(("Location".into(), location));
        }
        _ => {}
    }
}

/// The ETag the Hub gives a file: the SHA-256 of LFS files (weights, parquet), the git
/// blob id of files kept in git (configs, cards).
pub fn etag(file: &str, bytes: &[u8]) -> String {
    let lfs = [".safetensors", ".parquet", ".bin"];
    if lfs.iter().any(|suffix| file.ends_with(suffix)) {
        sha256(bytes)
    } else {
        git_blob_sha1(bytes)
    }
}

/// git's object id of a file: the SHA-1 of `blob LEN\0` and the content.
pub fn git_blob_sha1(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
