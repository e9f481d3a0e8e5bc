//! Real servers on loopback for the remote tests and benchmarks: an
//! S3-compatible server (s3s + s3s-fs over a temporary folder) and an HTTP
//! server with Range support (axum + tower-http's ServeDir), plus routes
//! that misbehave on purpose. Each counts the requests it answers and the
//! bytes it sends. Included with `#[path]` by tests/remote.rs and
//! benches/remote.rs.

#![allow(dead_code)]

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::{Body, Incoming};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

pub const BUCKET: &str = "experts";

/// Requests answered and bytes written (status line, headers and body).
#[derive(Default, Debug)]
pub struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    pub fn take(&self) -> (u64, u64) {
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

/// Range support with a weak ETag (`W/"…"`, as many static servers send).
async fn weak(
    State(web): State<Web>,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let data = std::fs::read(web.root.join(file)).unwrap();
    partial(&data, &headers, "W/\"weak-1\"")
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

pub struct Servers {
    pub _runtime: tokio::runtime::Runtime,
    pub s3: SocketAddr,
    pub s3_counters: Arc<Counters>,
    pub http: SocketAddr,
    pub http_counters: Arc<Counters>,
    pub bucket_dir: PathBuf,
    pub web_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub _dirs: tempfile::TempDir,
}

impl Servers {
    pub fn start() -> Self {
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
                .route("/weak/{file}", axum::routing::get(weak))
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
    pub fn publish(&self, name: &str, bytes: &[u8]) {
        for dir in [&self.bucket_dir, &self.web_dir] {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }

    pub fn s3_url(&self, key: &str) -> String {
        format!("s3://{BUCKET}/{key}")
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.http)
    }

    /// The binary, pointed at these servers, with its own cache folder.
    pub fn expertui(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("expertui").unwrap();
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

    /// Runs the binary with `args` and returns what it did.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.expertui().args(args).output().unwrap()
    }

    pub fn costs(&self) -> ((u64, u64), (u64, u64)) {
        (self.s3_counters.take(), self.http_counters.take())
    }
}
