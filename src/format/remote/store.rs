//! From a URL to an object store and a key: `s3://`, `gs://`, `az://` (and
//! `abfs(s)://`), `http(s)://`. Credentials and endpoints come from each
//! store's standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`),
//! read by object_store's builders and never printed. Plain `http://` is
//! refused unless the host is loopback or `--allow-http` is given.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use super::RemoteSettings;
use crate::format::error::{FormatError, Result};

/// Schemes read as remote URLs.
pub const SCHEMES: [&str; 8] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "http", "https"];

/// The store, the object's key and what identifies its host.
pub struct Located {
    pub store: Arc<dyn ObjectStore>,
    pub path: ObjectPath,
    pub host: Option<String>,
    /// The URL without credentials or query, for messages.
    pub display: String,
}

/// A URL with one of [`SCHEMES`], or `None` for anything else (a local path).
pub fn parse(text: &str) -> Option<Url> {
    let (scheme, _) = text.split_once("://")?;
    if !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        return None;
    }
    Url::parse(text).ok()
}

/// The URL as shown: scheme, host, port and path only.
pub fn display(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn bad(url: &str, reason: impl Into<String>) -> FormatError {
    FormatError::Remote {
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// Plain HTTP to `endpoint` is allowed for loopback or on request.
fn check_plain_http(shown: &str, endpoint: &Url, settings: &RemoteSettings) -> Result<bool> {
    if endpoint.scheme() != "http" {
        return Ok(false);
    }
    let host = endpoint.host_str().unwrap_or_default();
    if is_loopback(host) || settings.allow_http {
        return Ok(true);
    }
    Err(bad(
        shown,
        format!("plain http:// to {host} sends the expert (and any credentials) unencrypted; use https:// or pass --allow-http"),
    ))
}

fn client(settings: &RemoteSettings, allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(settings.timeout)
        .with_connect_timeout(Duration::from_secs(5).min(settings.timeout))
}

fn retry(settings: &RemoteSettings) -> RetryConfig {
    RetryConfig {
        max_retries: settings.retries,
        retry_timeout: settings.timeout.saturating_mul(2),
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
    }
}

/// The endpoint an S3 URL really talks to (`AWS_ENDPOINT` /
/// `AWS_ENDPOINT_URL` for S3-compatible stores), when one is set.
fn s3_endpoint() -> Option<Url> {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|k| std::env::var(k).ok())
        .and_then(|e| Url::parse(&e).ok())
}

/// Builds the store for `url` (a [`parse`]d URL).
pub fn locate(url: &Url, settings: &RemoteSettings) -> Result<Located> {
    let shown = display(url);
    let fail = |e: object_store::Error| bad(&shown, format!("cannot configure the store: {e}"));
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            &shown,
            "credentials in the URL are refused (they would travel in every request and error): set them in the store's environment variables",
        ));
    }
    // `url.path()` is percent-encoded already; the stores encode again.
    let key = |url: &Url| {
        ObjectPath::from_url_path(url.path())
            .map_err(|e| bad(&shown, format!("bad object key {:?}: {e}", url.path())))
    };
    // The same settings on every store's builder (they share no trait).
    macro_rules! build {
        ($builder:expr, $url:expr, $allow_http:expr) => {
            $builder
                .with_url($url)
                .with_client_options(client(settings, $allow_http))
                .with_retry(retry(settings))
                .build()
                .map_err(fail)?
        };
    }
    let scheme = url.scheme().to_ascii_lowercase();
    let (store, path, host): (Arc<dyn ObjectStore>, ObjectPath, Option<String>) =
        match scheme.as_str() {
            "s3" | "s3a" => {
                let (allow_http, host) = match s3_endpoint() {
                    Some(endpoint) => (
                        check_plain_http(&shown, &endpoint, settings)?,
                        endpoint.host_str().map(str::to_string),
                    ),
                    None => (false, None),
                };
                let store = build!(AmazonS3Builder::from_env(), url.as_str(), allow_http);
                (Arc::new(store), key(url)?, host)
            }
            "gs" => {
                let store = build!(GoogleCloudStorageBuilder::from_env(), url.as_str(), false);
                (Arc::new(store), key(url)?, None)
            }
            "az" | "abfs" | "abfss" => {
                let store = build!(MicrosoftAzureBuilder::from_env(), url.as_str(), false);
                // az://container/key: the key is the path.
                (Arc::new(store), key(url)?, None)
            }
            "http" | "https" => {
                let allow_http = check_plain_http(&shown, url, settings)?;
                let mut base = url.clone();
                base.set_path("/");
                base.set_query(None);
                base.set_fragment(None);
                let store = build!(HttpBuilder::new(), base.as_str(), allow_http);
                (
                    Arc::new(store),
                    key(url)?,
                    url.host_str().map(str::to_string),
                )
            }
            other => return Err(bad(&shown, format!("unsupported scheme {other}://"))),
        };
    Ok(Located {
        store,
        path,
        host,
        display: shown,
    })
}
