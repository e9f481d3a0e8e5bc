//! Remote experts against real servers started in this process on
//! loopback: an S3-compatible server (s3s + s3s-fs over a temporary folder)
//! and an HTTP server with Range support (axum + tower-http's ServeDir),
//! plus routes that misbehave on purpose. Every server counts the requests
//! it answers and the bytes it sends, so the costs the docs promise are
//! asserted. Nothing here leaves 127.0.0.1.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use assert_cmd::Command;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use expertui::format::package::{ExpertContents, PackageOptions};
use hyper::body::{Body, Incoming};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const BUCKET: &str = "experts";

/// Requests answered and bytes written (status line, headers and body).
#[derive(Default, Debug)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    fn take(&self) -> (u64, u64) {
        (self.requests.swap(0, SeqCst), self.bytes.swap(0, SeqCst))
    }
}

struct CountingIo {
    inner: TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.bytes.fetch_add(*n as u64, SeqCst);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S: hyper::service::Service<Request<Incoming>>> hyper::service::Service<Request<Incoming>>
    for Counted<S>
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.counters.requests.fetch_add(1, SeqCst);
        self.inner.call(req)
    }
}

/// Serves `svc` on 127.0.0.1 (an ephemeral port) on the current runtime.
async fn serve<S, B>(svc: S) -> (SocketAddr, Arc<Counters>)
where
    S: hyper::service::Service<Request<Incoming>, Response = hyper::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let shared = counters.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let io = TokioIo::new(CountingIo {
                inner: sock,
                counters: shared.clone(),
            });
            let svc = Counted {
                inner: svc.clone(),
                counters: shared.clone(),
            };
            tokio::spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, counters)
}

/// Routes that misbehave on purpose (files from the web folder).
#[derive(Clone)]
struct Web {
    root: PathBuf,
    port: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

fn range_of(headers: &HeaderMap, len: usize) -> Option<(usize, usize)> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = a.parse().ok()?;
    let end = b.parse::<usize>().map_or(len, |e| (e + 1).min(len));
    (start < end).then_some((start, end))
}

fn partial(data: &[u8], headers: &HeaderMap, etag: &str) -> Response {
    let Some((start, end)) = range_of(headers, data.len()) else {
        return (StatusCode::OK, data.to_vec()).into_response();
    };
    let mut response = (StatusCode::PARTIAL_CONTENT, data[start..end].to_vec()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_RANGE,
        format!("bytes {}-{}/{}", start, end - 1, data.len())
            .parse()
            .unwrap(),
    );
    h.insert(header::ETAG, etag.parse().unwrap());
    h.insert(
        header::LAST_MODIFIED,
        "Tue, 01 Dec 2026 00:00:00 GMT".parse().unwrap(),
    );
    response
}

/// 200 with the whole body, whatever Range says.
async fn no_range(State(web): State<Web>, UrlPath(file): UrlPath<String>) -> Response {
    let data = std::fs::read(web.root.join(file)).unwrap();
    (StatusCode::OK, data).into_response()
}

/// Range support, but the ETag changes with every request (a file
/// replaced between two reads).
async fn changing(
    State(web): State<Web>,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let n = web.served.fetch_add(1, SeqCst);
    let data = std::fs::read(web.root.join(file)).unwrap();
    partial(&data, &headers, &format!("\"v{n}\""))
}

async fn slow(UrlPath(_file): UrlPath<String>) -> Response {
    tokio::time::sleep(Duration::from_secs(10)).await;
    StatusCode::OK.into_response()
}

/// A redirect to the same server under another host name.
async fn redirect(State(web): State<Web>, UrlPath(file): UrlPath<String>) -> Response {
    let port = web.port.load(SeqCst);
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(
        header::LOCATION,
        format!("http://localhost:{port}/{file}").parse().unwrap(),
    );
    response
}

struct Servers {
    _runtime: tokio::runtime::Runtime,
    s3: SocketAddr,
    s3_counters: Arc<Counters>,
    http: SocketAddr,
    http_counters: Arc<Counters>,
    bucket_dir: PathBuf,
    web_dir: PathBuf,
    cache_dir: PathBuf,
    _dirs: tempfile::TempDir,
}

impl Servers {
    fn start() -> Self {
        let dirs = tempfile::tempdir().unwrap();
        let s3_root = dirs.path().join("s3");
        let bucket_dir = s3_root.join(BUCKET);
        let web_dir = dirs.path().join("web");
        std::fs::create_dir_all(&bucket_dir).unwrap();
        std::fs::create_dir_all(&web_dir).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let web = Web {
            root: web_dir.clone(),
            port: Arc::new(AtomicU64::new(0)),
            served: Arc::new(AtomicU64::new(0)),
        };
        let (s3, s3_counters, http, http_counters) = runtime.block_on(async {
            let mut builder =
                s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&s3_root).unwrap());
            builder.set_auth(s3s::auth::SimpleAuth::from_single("test", "test"));
            let (s3, s3_counters) = serve(builder.build()).await;
            let router = axum::Router::new()
                .route("/norange/{file}", axum::routing::get(no_range))
                .route("/changing/{file}", axum::routing::get(changing))
                .route("/slow/{file}", axum::routing::get(slow))
                .route("/redirect/{file}", axum::routing::get(redirect))
                .fallback_service(tower_http::services::ServeDir::new(&web.root))
                .with_state(web.clone());
            let (http, http_counters) =
                serve(hyper_util::service::TowerToHyperService::new(router)).await;
            (s3, s3_counters, http, http_counters)
        });
        web.port.store(u64::from(http.port()), SeqCst);
        Self {
            _runtime: runtime,
            s3,
            s3_counters,
            http,
            http_counters,
            bucket_dir,
            web_dir,
            cache_dir: dirs.path().join("cache"),
            _dirs: dirs,
        }
    }

    /// Puts `bytes` in the bucket and the web folder under `name`.
    fn publish(&self, name: &str, bytes: &[u8]) {
        for dir in [&self.bucket_dir, &self.web_dir] {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }

    fn s3_url(&self, key: &str) -> String {
        format!("s3://{BUCKET}/{key}")
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.http)
    }

    /// The binary, pointed at these servers, with its own cache folder.
    fn expertui(&self) -> Command {
        let mut cmd = Command::cargo_bin("expertui").unwrap();
        cmd.env("AWS_ENDPOINT", format!("http://{}", self.s3))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("EXPERTUI_CACHE_DIR", &self.cache_dir)
            .env("EXPERTUI_REMOTE_TIMEOUT", "5")
            .env_remove("EXPERTUI_ALLOW_HTTP")
            .env_remove("EXPERTUI_NO_CACHE")
            .env("NO_COLOR", "1")
            .arg("--headless");
        cmd
    }

    fn costs(&self) -> ((u64, u64), (u64, u64)) {
        (self.s3_counters.take(), self.http_counters.take())
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The MiniLM DoRA fixture packaged (1.5 MB: its TOC lies beyond the first
/// 64 KiB, so a validate needs both requests).
fn dora_expert(dir: &Path) -> Vec<u8> {
    let out = dir.join("dora.expert");
    ExpertContents::from_adapter_dir(&fixture("minilm-dora-r8"))
        .unwrap()
        .write_binary(&out, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    std::fs::read(out).unwrap()
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn validate_costs_at_most_two_requests_and_128_kib_on_both_stores() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = dora_expert(dir.path());
    assert!(bytes.len() > 1 << 20);
    servers.publish("dora.expert", &bytes);
    let local = json_of(
        &servers
            .expertui()
            .args(["validate", "--json"])
            .arg(dir.path().join("dora.expert"))
            .output()
            .unwrap(),
    );
    for url in [
        servers.s3_url("dora.expert"),
        servers.http_url("dora.expert"),
    ] {
        servers.costs();
        let out = servers
            .expertui()
            .args(["validate", "--json", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json_of(&out);
        assert_eq!(report["valid"], true, "{url}");
        assert_eq!(
            report["findings"], local["findings"],
            "{url}: same findings as locally"
        );
        let ((s3_requests, s3_bytes), (http_requests, http_bytes)) = servers.costs();
        let (requests, sent) = (s3_requests + http_requests, s3_bytes + http_bytes);
        assert!(requests <= 2, "{url}: {requests} requests");
        assert!(sent <= 128 << 10, "{url}: {sent} bytes");
        assert_eq!(report["remote"]["requests"], requests, "{url}");
    }
}

#[test]
fn extract_fetches_one_section_and_matches_the_local_bytes() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = dora_expert(dir.path());
    servers.publish("dora.expert", &bytes);
    let local = dir.path().join("local.bin");
    servers
        .expertui()
        .args(["extract"])
        .arg(dir.path().join("dora.expert"))
        .args(["layer.3", "-o"])
        .arg(&local)
        .assert()
        .success();
    for url in [
        servers.s3_url("dora.expert"),
        servers.http_url("dora.expert"),
    ] {
        servers.costs();
        let remote = dir.path().join("remote.bin");
        servers
            .expertui()
            .args(["extract", &url, "layer.3", "-o"])
            .arg(&remote)
            .assert()
            .success();
        assert_eq!(
            std::fs::read(&remote).unwrap(),
            std::fs::read(&local).unwrap()
        );
        let ((a, b), (c, d)) = servers.costs();
        assert!(a + c <= 3, "{url}: {} requests", a + c);
        assert!(b + d < bytes.len() as u64 / 2, "{url}: {} bytes", b + d);
    }
}

#[test]
fn verify_integrity_names_the_damaged_section_and_the_cache_makes_loads_cheap() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = dora_expert(dir.path());
    servers.publish("dora.expert", &bytes);
    let url = servers.s3_url("dora.expert");
    servers
        .expertui()
        .args(["validate", "--verify-integrity", &url])
        .assert()
        .success();
    let ((first, _), _) = servers.costs();
    assert!(first >= 2);
    // A load of the same expert now takes every section from the cache:
    // only the header and the TOC move.
    let out = dir.path().join("layer.bin");
    servers
        .expertui()
        .args(["extract", &url, "layer.3", "-o"])
        .arg(&out)
        .assert()
        .success();
    let ((again, sent), _) = servers.costs();
    assert!(again <= 2, "{again} requests with a warm cache");
    assert!(sent <= 128 << 10, "{sent} bytes with a warm cache");
    // `--verify-integrity` reads the remote object itself, not the cache.
    servers
        .expertui()
        .args(["validate", "--verify-integrity", &url])
        .assert()
        .success();
    let ((checked, _), _) = servers.costs();
    assert!(checked > 2, "{checked} requests");

    // A flipped byte in a layer: named exactly as locally, and never cached.
    let reader = expertui::format::ExpertReader::open(dir.path().join("dora.expert")).unwrap();
    let layer = reader
        .find(expertui::format::SectionType::Tensors, "layer.2")
        .unwrap();
    let mut damaged = bytes.clone();
    damaged[layer.offset as usize + 5000] ^= 0x40;
    servers.publish("damaged.expert", &damaged);
    let out = servers
        .expertui()
        .args([
            "validate",
            "--verify-integrity",
            &servers.http_url("damaged.expert"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("layer.2"), "{text}");
}

#[test]
fn fuse_from_s3_equals_fuse_from_disk() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = dora_expert(dir.path());
    servers.publish("dora.expert", &bytes);
    let base = fixture("merge/base-layer0-subset.safetensors");
    let fuse = |input: &str, out: &Path| {
        servers
            .expertui()
            .args(["fuse", input, "--base"])
            .arg(&base)
            .arg("-o")
            .arg(out)
            .assert()
            .success();
    };
    let (local, remote) = (dir.path().join("local.st"), dir.path().join("remote.st"));
    fuse(dir.path().join("dora.expert").to_str().unwrap(), &local);
    fuse(&servers.s3_url("dora.expert"), &remote);
    assert_eq!(
        std::fs::read(remote).unwrap(),
        std::fs::read(local).unwrap()
    );
}

#[test]
fn a_bucket_prefix_validates_recursively() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = dora_expert(dir.path());
    for i in 0..5 {
        servers.publish(&format!("team/{i}.expert"), &bytes);
    }
    servers.publish("team/notes.txt", b"not an expert");
    let mut cut = bytes.clone();
    cut.truncate(100_000);
    servers.publish("team/cut.expert", &cut);
    let out = servers
        .expertui()
        .args([
            "validate",
            "--recursive",
            "--json",
            &servers.s3_url("team/"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let files: Vec<&str> = lines.iter().filter_map(|l| l["file"].as_str()).collect();
    assert_eq!(files.len(), 6, "{text}");
    assert!(files.iter().all(|f| f.starts_with("s3://experts/team/")));
    assert_eq!(
        out.status.code(),
        Some(3),
        "the cut file is invalid: {text}"
    );
    let cut_line = lines
        .iter()
        .find(|l| l["file"] == "s3://experts/team/cut.expert");
    assert_eq!(cut_line.unwrap()["valid"], false);
}

#[test]
fn bad_remotes_get_clear_errors() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = dora_expert(dir.path());
    servers.publish("dora.expert", &bytes);
    let fails = |args: &[&str], code: i32, needle: &str| {
        let out = servers.expertui().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.to_lowercase().contains(needle),
            "{args:?}: {needle:?} not in {err}"
        );
    };
    fails(
        &["validate", &servers.s3_url("missing.expert")],
        1,
        "not found",
    );
    fails(
        &["validate", &servers.http_url("missing.expert")],
        1,
        "not found",
    );
    fails(
        &["validate", &servers.http_url("norange/dora.expert")],
        1,
        "range",
    );
    fails(
        &[
            "validate",
            "--verify-integrity",
            &servers.http_url("changing/dora.expert"),
        ],
        1,
        "changed",
    );
    fails(
        &["validate", &servers.http_url("redirect/dora.expert")],
        1,
        "redirect",
    );
    let out = servers
        .expertui()
        .args([
            "--allow-redirects",
            "validate",
            &servers.http_url("redirect/dora.expert"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain http to another host is refused before anything is sent.
    fails(
        &["validate", "http://192.0.2.1/x.expert"],
        1,
        "--allow-http",
    );
    // A server slower than the timeout.
    let started = std::time::Instant::now();
    let out = servers
        .expertui()
        .env("EXPERTUI_REMOTE_TIMEOUT", "0.5")
        .args(["validate", &servers.http_url("slow/dora.expert")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(9));
    // A file shorter than its header says: a structure finding, as locally.
    servers.publish("cut.expert", &bytes[..200_000]);
    fails(&["validate", &servers.s3_url("cut.expert")], 3, "");
}

#[test]
fn the_viewer_opens_a_remote_expert() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = dora_expert(dir.path());
    servers.publish("dora.expert", &bytes);
    std::env::set_var("EXPERTUI_CACHE_DIR", &servers.cache_dir);
    let doc =
        expertui::format::inspect::Inspected::open(Path::new(&servers.http_url("dora.expert")))
            .unwrap();
    assert_eq!(doc.len(), bytes.len() as u64);
    let reader = doc.reader().expect("a binary expert");
    reader.verify_all().unwrap();
    assert_eq!(reader.bytes(), &bytes[..]);
    // Off-terminal, `expertui URL` prints the overview.
    let out = servers
        .expertui()
        .arg(servers.s3_url("dora.expert"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("s3://experts/dora.expert"));
}
