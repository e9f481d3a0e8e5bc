//! One remote object read by byte ranges: every read is pinned to the
//! version seen first (ETag, else modification time), checked for the exact
//! length asked, refused when a redirect led to another host, and counted.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResult, ObjectMeta, ObjectStore};

use super::runtime;
use crate::format::error::{FormatError, Result};

/// Requests made and bytes received, for reports and tests.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

impl Traffic {
    /// (requests, bytes) so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// A remote object at one version.
pub struct RemoteObject {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    /// The URL as shown to the user (no credentials, no query).
    pub url: String,
    /// Host the URL names: a redirect elsewhere is refused unless allowed.
    host: Option<String>,
    allow_redirects: bool,
    pub size: u64,
    version: Version,
    pub traffic: Arc<Traffic>,
}

/// What pins an object's version.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    e_tag: Option<String>,
    last_modified: String,
}

impl Version {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            e_tag: meta.e_tag.clone(),
            last_modified: meta.last_modified.to_rfc3339(),
        }
    }

    fn label(&self) -> String {
        match &self.e_tag {
            Some(tag) => format!("ETag {tag}"),
            None => format!("modified {}", self.last_modified),
        }
    }
}

/// How the remote layer names an object_store failure.
pub(super) fn remote_error(url: &str, e: &object_store::Error) -> FormatError {
    use object_store::Error as E;
    let reason = match e {
        E::NotFound { .. } => "not found (404)".to_string(),
        E::PermissionDenied { .. } => {
            "permission denied (403): check the credentials in the environment".to_string()
        }
        E::Unauthenticated { .. } => {
            "not authenticated (401): set the store's credentials in the environment".to_string()
        }
        E::Precondition { .. } => {
            return FormatError::RemoteChanged {
                url: url.to_string(),
                before: "the version first read".into(),
                now: "another (the server refused If-Match)".into(),
            }
        }
        E::NotSupported { .. } => format!(
            "the server does not honour range requests ({e}); download the file and open it locally"
        ),
        other => {
            let text = other.to_string();
            let lower = text.to_ascii_lowercase();
            if lower.contains("timed out") || lower.contains("timeout") {
                format!("timed out ({text}); EXPERTUI_REMOTE_TIMEOUT=SECONDS allows more")
            } else if text.contains("non-partial response") || text.contains("Range") {
                format!("the server does not honour range requests ({text}); download the file and open it locally")
            } else {
                text
            }
        }
    };
    FormatError::Remote {
        url: url.to_string(),
        reason,
    }
}

impl RemoteObject {
    /// Reads `range` of the object (clipped to its end) in one request and
    /// learns its size and version from the answer.
    pub(super) fn open_with_read(
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
        url: String,
        host: Option<String>,
        allow_redirects: bool,
        first: Range<u64>,
    ) -> Result<(Self, Bytes)> {
        let traffic = Arc::new(Traffic::default());
        let options = GetOptions::new().with_range(Some(GetRange::Bounded(first.clone())));
        let result = runtime().block_on(store.get_opts(&path, options));
        traffic.requests.fetch_add(1, Ordering::Relaxed);
        let result = result.map_err(|e| remote_error(&url, &e))?;
        let object = Self {
            version: Version::of(&result.meta),
            size: result.meta.size,
            store,
            path,
            url,
            host,
            allow_redirects,
            traffic,
        };
        object.check_redirect(&result)?;
        let want = first.start..first.end.min(object.size);
        let bytes = object.body(result, &want)?;
        Ok((object, bytes))
    }

    /// Reads exactly `range` (which must lie in the object), pinned to the
    /// version first seen.
    pub fn read(&self, range: Range<u64>) -> Result<Bytes> {
        if range.end > self.size || range.start > range.end {
            return Err(FormatError::Remote {
                url: self.url.clone(),
                reason: format!(
                    "bytes {}..{} asked of a {}-byte object",
                    range.start, range.end, self.size
                ),
            });
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        // If-Match compares strongly: a weak ETag (`W/"…"`) never matches,
        // so it is not sent; the answer's ETag, date and size are still
        // compared below.
        let strong = self.version.e_tag.clone().filter(|t| !t.starts_with("W/"));
        let options = GetOptions::new()
            .with_range(Some(GetRange::Bounded(range.clone())))
            .with_if_match(strong);
        let result = runtime().block_on(self.store.get_opts(&self.path, options));
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        let result = result.map_err(|e| remote_error(&self.url, &e))?;
        self.check_redirect(&result)?;
        let now = Version::of(&result.meta);
        if now != self.version || result.meta.size != self.size {
            return Err(FormatError::RemoteChanged {
                url: self.url.clone(),
                before: format!("{} bytes, {}", self.size, self.version.label()),
                now: format!("{} bytes, {}", result.meta.size, now.label()),
            });
        }
        self.body(result, &range)
    }

    /// Reads several ranges, at most `parallel` requests at a time (each
    /// worker thread blocks on one request; the I/O runs on the runtime).
    pub fn read_many(&self, ranges: &[Range<u64>], parallel: usize) -> Result<Vec<Bytes>> {
        let next = AtomicU64::new(0);
        let slots: Vec<std::sync::OnceLock<Bytes>> =
            ranges.iter().map(|_| std::sync::OnceLock::new()).collect();
        let first_error: std::sync::Mutex<Option<FormatError>> = std::sync::Mutex::new(None);
        let workers = parallel.clamp(1, ranges.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let (Some(range), Some(slot)) = (ranges.get(i), slots.get(i)) else {
                        break;
                    };
                    match self.read(range.clone()) {
                        Ok(bytes) => {
                            let _ = slot.set(bytes);
                        }
                        Err(e) => {
                            // Stop handing out work: the first error is the answer.
                            next.store(u64::MAX / 2, Ordering::Relaxed);
                            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            first.get_or_insert(e);
                            break;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        slots
            .into_iter()
            .map(|slot| {
                slot.into_inner().ok_or_else(|| FormatError::Remote {
                    url: self.url.clone(),
                    reason: "a range was not read".into(),
                })
            })
            .collect()
    }

    /// The payload of `result`, which must be exactly `want`.
    fn body(&self, result: GetResult, want: &Range<u64>) -> Result<Bytes> {
        if result.range != *want {
            return Err(FormatError::Remote {
                url: self.url.clone(),
                reason: format!(
                    "asked for bytes {}..{}, the server sent {}..{}",
                    want.start, want.end, result.range.start, result.range.end
                ),
            });
        }
        let bytes = runtime()
            .block_on(result.bytes())
            .map_err(|e| remote_error(&self.url, &e))?;
        self.traffic
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if bytes.len() as u64 != want.end - want.start {
            return Err(FormatError::Remote {
                url: self.url.clone(),
                reason: format!(
                    "the body ended after {} of {} bytes (truncated response)",
                    bytes.len(),
                    want.end - want.start
                ),
            });
        }
        Ok(bytes)
    }

    fn check_redirect(&self, result: &GetResult) -> Result<()> {
        if self.allow_redirects || self.host.is_none() {
            return Ok(());
        }
        let Some(uri) = result
            .extensions
            .get::<tower_http::follow_redirect::RequestUri>()
        else {
            return Ok(());
        };
        let host = uri.0.host().map(str::to_string);
        if host != self.host {
            return Err(FormatError::Remote {
                url: self.url.clone(),
                reason: format!(
                    "redirected to another host ({}); pass --allow-redirects to follow it",
                    host.as_deref().unwrap_or("?")
                ),
            });
        }
        Ok(())
    }
}
