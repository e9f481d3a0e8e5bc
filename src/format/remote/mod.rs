//! Experts on object storage (`s3://`, `gs://`, `az://`, `http(s)://`),
//! read with range requests through the `object_store` crate.
//!
//! The byte source: a remote expert becomes a [`FileBytes::Remote`], an
//! anonymous map of the object's size holding the byte ranges fetched so
//! far, and everything above it (structure checks, `ExpertReader`,
//! validation, loading, the TUI) is the code that reads local files. Which
//! ranges are fetched is decided up front from the header and TOC by a
//! [`Plan`]: `validate` needs the small text sections, `extract` one
//! section, a load the weight sections, `--verify-integrity` everything.
//! A reader asked for a section outside the plan gets a typed
//! `NotFetched` error, never zeros.
//!
//! Costs: the first request reads the first 64 KiB (the header and, in
//! package order, the manifest, config, grammar and routing sections); a
//! second reads the TOC at the end of the file unless the first reached it.
//! Sections come from the [`cache`] when they were fetched before.

pub mod cache;
pub mod object;
pub mod store;

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use memmap2::MmapMut;
use url::Url;
use zerocopy::FromBytes;

use crate::format::error::{FormatError, Result};
use crate::format::layout::{Header, SectionType, TocEntry};
use crate::format::reader::{ExpertReader, FileBytes, ReaderOptions};
use crate::format::structure::parse_structure;
use cache::SectionCache;
use object::RemoteObject;

/// Bytes the first request asks for.
pub const FIRST_READ: u64 = 64 << 10;
/// Largest TOC a remote expert may have (a TOC of 500 000 entries).
pub const MAX_TOC_BYTES: u64 = 64 << 20;
/// Fetched ranges closer than this are merged into one request.
const MERGE_GAP: u64 = 64 << 10;
/// Largest single range request (larger spans are split, fetched in parallel).
const CHUNK: u64 = 8 << 20;

/// How remote reads behave (flags `--allow-http`, `--allow-redirects`,
/// `--no-cache`; environment `EXPERTUI_REMOTE_TIMEOUT` in seconds).
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub allow_http: bool,
    pub allow_redirects: bool,
    pub no_cache: bool,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Retries of transient failures (5xx, 429, connection resets), with
    /// exponential backoff.
    pub retries: usize,
    /// Range requests in flight at once.
    pub parallel: usize,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        let env_flag = |k: &str| std::env::var(k).is_ok_and(|v| v == "1" || v == "true");
        Self {
            allow_http: env_flag("EXPERTUI_ALLOW_HTTP"),
            allow_redirects: env_flag("EXPERTUI_ALLOW_REDIRECTS"),
            no_cache: env_flag("EXPERTUI_NO_CACHE"),
            timeout: Duration::from_secs_f64(
                std::env::var("EXPERTUI_REMOTE_TIMEOUT")
                    .ok()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .unwrap_or(30.0),
            ),
            retries: 3,
            parallel: 8,
        }
    }
}

static SETTINGS: OnceLock<Mutex<RemoteSettings>> = OnceLock::new();

fn settings_cell() -> &'static Mutex<RemoteSettings> {
    SETTINGS.get_or_init(|| Mutex::new(RemoteSettings::default()))
}

/// The settings every remote read made from now on uses.
pub fn settings() -> RemoteSettings {
    settings_cell()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Changes the process-wide settings (the CLI's global flags).
pub fn configure(change: impl FnOnce(&mut RemoteSettings)) {
    change(&mut settings_cell().lock().unwrap_or_else(|e| e.into_inner()));
}

/// The runtime object_store's async client runs on (two worker threads;
/// callers block on it from ordinary threads).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("expertui-remote")
            .enable_all()
            .build()
            .unwrap_or_else(|e| {
                // Only fails when the OS refuses threads or an epoll fd.
                eprintln!("error: cannot start the remote I/O runtime: {e}");
                std::process::exit(1)
            })
    })
}

/// The remote URL `path` spells, if it spells one.
pub fn url_of(path: &Path) -> Option<Url> {
    path.to_str().and_then(store::parse)
}

/// True when `path` is a remote URL rather than a local path.
pub fn is_url(path: &Path) -> bool {
    url_of(path).is_some()
}

/// Chooses sections by TOC index and entry.
pub type SectionFilter = Box<dyn Fn(usize, &TocEntry) -> bool>;

/// Which sections a command needs.
pub enum Plan {
    /// Header, TOC and the text sections (manifest, config, grammar, docs,
    /// routing, metrics, signature, certificates): what `info` and
    /// `validate` read.
    Text,
    /// [`Plan::Text`], or everything when the file is signed or `deep`
    /// (a signature vouches for every section's digest).
    Validate { deep: bool },
    /// [`Plan::Text`] plus every weight section (tensors, soft prompt, OSD,
    /// the tensor index): what a load or a fuse reads; everything when the
    /// file is signed (the trust policy checks every section).
    Weights,
    /// [`Plan::Text`] plus the sections `pick` chooses (by TOC index and entry).
    Pick(SectionFilter),
    /// Every byte of the file.
    All,
}

impl Plan {
    fn wants(&self, toc: &[TocEntry]) -> Option<Vec<bool>> {
        let text = |e: &TocEntry| {
            let kind = e.kind();
            kind.is_text() || matches!(kind, SectionType::Signature | SectionType::Certificate)
        };
        let signed = toc.iter().any(|e| e.kind() == SectionType::Signature);
        Some(match self {
            Self::All => return None,
            // A signature vouches for every section through its digest:
            // checking it (as `validate` and a trusted load do) reads them all.
            Self::Validate { deep } if *deep || signed => return None,
            Self::Weights if signed => return None,
            Self::Text | Self::Validate { .. } => toc.iter().map(text).collect(),
            Self::Weights => toc
                .iter()
                .map(|e| {
                    let kind = e.kind();
                    text(e) || kind.is_weights() || kind == SectionType::TensorIndex
                })
                .collect(),
            Self::Pick(pick) => toc
                .iter()
                .enumerate()
                .map(|(i, e)| text(e) || pick(i, e))
                .collect(),
        })
    }
}

/// What opening a remote expert cost.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RemoteCost {
    pub url: String,
    pub size: u64,
    pub requests: u64,
    pub bytes_received: u64,
    pub sections_from_cache: usize,
}

/// A remote expert's bytes as far as the plan needs them.
pub struct RemoteBytes {
    pub bytes: Arc<FileBytes>,
    pub cost: RemoteCost,
}

/// Sorted, merged byte ranges.
#[derive(Debug, Default, Clone)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn add(&mut self, start: u64, end: u64) {
        if start < end {
            self.0.push((start, end));
            self.0.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
            for &(s, e) in &self.0 {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            self.0 = merged;
        }
    }

    fn covers(&self, start: u64, end: u64) -> bool {
        start >= end || self.0.iter().any(|&(s, e)| s <= start && end <= e)
    }

    /// The parts of `start..end` not yet held.
    fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        for &(s, e) in &self.0 {
            if e <= at || s >= end {
                continue;
            }
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
        }
        if at < end {
            out.push((at, end));
        }
        out
    }
}

/// Requests for `spans`: neighbours closer than [`MERGE_GAP`] merged, long
/// spans split into [`CHUNK`]s.
fn requests_for(mut spans: Vec<(u64, u64)>) -> Vec<Range<u64>> {
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(MERGE_GAP) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
        .into_iter()
        .flat_map(|(s, e)| {
            (s..e)
                .step_by(usize::try_from(CHUNK).unwrap_or(usize::MAX))
                .map(move |c| c..(c.saturating_add(CHUNK)).min(e))
        })
        .collect()
}

/// Opens the expert at `url` and fetches what `plan` needs.
/// `progress(done, total)` counts bytes fetched after the header and TOC.
pub fn fetch(url: &Url, plan: &Plan, progress: &mut dyn FnMut(u64, u64)) -> Result<RemoteBytes> {
    let settings = settings();
    let located = store::locate(url, &settings)?;
    let shown = located.display.clone();
    let (object, prefix) = RemoteObject::open_with_read(
        located.store,
        located.path,
        shown.clone(),
        located.host,
        settings.allow_redirects,
        0..FIRST_READ,
    )?;
    let size = object.size;
    let cost = |cached: usize| {
        let (requests, bytes_received) = object.traffic.snapshot();
        RemoteCost {
            url: shown.clone(),
            size,
            requests,
            bytes_received,
            sections_from_cache: cached,
        }
    };
    // Small enough to have come whole: an ordinary in-memory file.
    if prefix.len() as u64 >= size {
        return Ok(RemoteBytes {
            bytes: Arc::new(FileBytes::Owned(prefix.to_vec())),
            cost: cost(0),
        });
    }
    let mut map = MmapMut::map_anon(usize::try_from(size).unwrap_or(usize::MAX)).map_err(|e| {
        FormatError::Remote {
            url: shown.clone(),
            reason: format!("cannot map {size} bytes for the object: {e}"),
        }
    })?;
    let mut present = Ranges::default();
    let put = |map: &mut MmapMut, present: &mut Ranges, at: u64, bytes: &[u8]| {
        let start = usize::try_from(at).unwrap_or(usize::MAX);
        if let Some(dst) = start
            .checked_add(bytes.len())
            .and_then(|end| map.get_mut(start..end))
        {
            dst.copy_from_slice(bytes);
            present.add(at, at + bytes.len() as u64);
        }
    };
    put(&mut map, &mut present, 0, &prefix);
    // The TOC ends the file: read it unless the first read reached it
    // (and the rest of a header longer than the first read, so the root
    // digest is computed over real bytes).
    if let Ok((header, _)) = Header::read_from_prefix(&prefix) {
        let header_end = u64::from(header.header_size.get());
        if header_end <= size.min(MAX_TOC_BYTES) {
            for (start, end) in present.clone().missing(0, header_end) {
                let bytes = object.read(start..end)?;
                put(&mut map, &mut present, start, &bytes);
            }
        }
        let toc_start = header.toc_offset.get();
        if toc_start < size && size - toc_start <= MAX_TOC_BYTES {
            for (start, end) in present.clone().missing(toc_start, size) {
                let bytes = object.read(start..end)?;
                put(&mut map, &mut present, start, &bytes);
            }
        }
    }
    let mut cached = 0;
    // A structure that does not parse is reported by the reader as it
    // would be for a local file: nothing more is fetched.
    if let Ok(structure) = parse_structure(&map) {
        let cache = (!settings.no_cache).then(SectionCache::from_env).flatten();
        let wants = plan.wants(&structure.toc);
        // A plan that needs every byte (`--verify-integrity`, a signature
        // check, the viewer, a conversion) reads the remote object itself,
        // padding included, and still fills the cache; partial plans (a
        // load, `extract`, `validate`) take sections from it.
        let read_cache = wants.is_some();
        let mut spans = Vec::new();
        let mut fresh = Vec::new();
        for (index, entry) in structure.toc.iter().enumerate() {
            if wants
                .as_ref()
                .is_some_and(|w| !w.get(index).copied().unwrap_or(false))
            {
                continue;
            }
            let (start, len) = (entry.offset.get(), entry.stored_len.get());
            let end = start.saturating_add(len);
            if present.covers(start, end) {
                continue;
            }
            let hit = cache
                .as_ref()
                .filter(|_| read_cache)
                .and_then(|c| c.get(&entry.sha256, len));
            if let Some(bytes) = hit {
                put(&mut map, &mut present, start, &bytes);
                cached += 1;
                continue;
            }
            spans.extend(present.missing(start, end));
            fresh.push(index);
        }
        if wants.is_none() {
            spans = present.missing(0, size);
        }
        let requests = requests_for(spans);
        let total: u64 = requests.iter().map(|r| r.end - r.start).sum();
        let mut done = 0;
        for batch in requests.chunks(settings.parallel.max(1) * 4) {
            for (range, bytes) in batch
                .iter()
                .zip(object.read_many(batch, settings.parallel)?)
            {
                put(&mut map, &mut present, range.start, &bytes);
                done += bytes.len() as u64;
            }
            progress(done, total);
        }
        if let Some(cache) = &cache {
            for entry in fresh.iter().filter_map(|&i| structure.toc.get(i)) {
                let start = usize::try_from(entry.offset.get()).unwrap_or(usize::MAX);
                let end =
                    start.saturating_add(usize::try_from(entry.stored_len.get()).unwrap_or(0));
                // Only intact sections are kept (`put` checks the digest).
                if let Some(bytes) = map.get(start..end) {
                    cache.put(&entry.sha256, bytes);
                }
            }
        }
    }
    let map = map.make_read_only().map_err(|e| FormatError::Remote {
        url: shown.clone(),
        reason: format!("cannot seal the fetched bytes: {e}"),
    })?;
    Ok(RemoteBytes {
        bytes: Arc::new(FileBytes::Remote {
            map,
            present: present.0,
            url: shown.clone(),
        }),
        cost: cost(cached),
    })
}

/// Every `*.expert` object under the prefix `url` names (a bucket listing:
/// `s3://`, `gs://`, `az://`; plain HTTP servers have no listing), sorted,
/// as URLs.
pub fn list_experts(url: &Url) -> Result<Vec<String>> {
    use futures::TryStreamExt;
    if matches!(url.scheme(), "http" | "https") {
        return Err(FormatError::Remote {
            url: store::display(url),
            reason: "an HTTP server has no listing: give a bucket prefix (s3://, gs://, az://) or a local folder".into(),
        });
    }
    let located = store::locate(url, &settings())?;
    let prefix = (!located.path.as_ref().is_empty()).then_some(&located.path);
    let listed: Vec<object_store::ObjectMeta> = runtime()
        .block_on(located.store.list(prefix).try_collect())
        .map_err(|e| object::remote_error(&located.display, &e))?;
    let mut out: Vec<String> = listed
        .into_iter()
        .filter(|m| m.location.as_ref().ends_with(".expert"))
        .map(|m| {
            let mut object = url.clone();
            object.set_path(&format!("/{}", m.location));
            object.set_query(None);
            store::display(&object)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// A reader over a remote expert (see [`fetch`]).
pub fn open_reader(
    url: &Url,
    plan: &Plan,
    options: ReaderOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(ExpertReader, RemoteCost)> {
    let fetched = fetch(url, plan, progress)?;
    let reader = ExpertReader::from_shared(fetched.bytes, options)?;
    Ok((reader, fetched.cost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_report_what_is_missing() {
        let mut r = Ranges::default();
        r.add(10, 20);
        r.add(30, 40);
        r.add(15, 32);
        assert_eq!(r.0, vec![(10, 40)]);
        assert!(r.covers(12, 38) && !r.covers(5, 12));
        assert_eq!(r.missing(0, 50), vec![(0, 10), (40, 50)]);
        assert_eq!(r.missing(12, 38), Vec::<(u64, u64)>::new());
    }

    #[test]
    fn requests_merge_neighbours_and_split_long_spans() {
        let reqs = requests_for(vec![(0, 10), (100, 200), (1 << 30, (1 << 30) + 3 * CHUNK)]);
        assert_eq!(reqs[0], 0..200);
        assert_eq!(reqs.len(), 4);
        assert!(reqs.iter().all(|r| r.end - r.start <= CHUNK));
    }

    #[test]
    fn only_remote_schemes_are_urls() {
        for url in [
            "s3://b/k.expert",
            "gs://b/k",
            "az://c/k",
            "https://h/x.expert",
            "http://127.0.0.1:9/x",
        ] {
            assert!(is_url(Path::new(url)), "{url}");
        }
        for path in [
            "model.expert",
            "/tmp/x.expert",
            "C:\\x.expert",
            "ftp://h/x",
            "file.expert://x",
        ] {
            assert!(!is_url(Path::new(path)), "{path}");
        }
    }
}
