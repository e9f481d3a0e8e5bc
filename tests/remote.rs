//! Remote experts against real servers started in this process on
//! loopback: an S3-compatible server (s3s + s3s-fs over a temporary folder)
//! and an HTTP server with Range support (axum + tower-http's ServeDir),
//! plus routes that misbehave on purpose. Every server counts the requests
//! it answers and the bytes it sends, so the costs the docs promise are
//! asserted. Nothing here leaves 127.0.0.1.

#[path = "support/servers.rs"]
mod servers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use expertui::format::package::{ExpertContents, PackageOptions};
use servers::Servers;

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
        let out = servers.run(&["validate", "--json", &url]);
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
    let out = servers.run(&[
        "validate",
        "--verify-integrity",
        &servers.http_url("damaged.expert"),
    ]);
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
    let out = servers.run(&[
        "validate",
        "--recursive",
        "--json",
        &servers.s3_url("team/"),
    ]);
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
    // Wrong credentials: the S3 server refuses the signature.
    let out = servers
        .expertui()
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .args(["validate", &servers.s3_url("dora.expert")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        !err.contains("wrong-secret"),
        "the secret is never printed: {err}"
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
    let out = servers.run(&[
        "--allow-redirects",
        "validate",
        &servers.http_url("redirect/dora.expert"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fails(
        &["validate", "--recursive", &servers.http_url("")],
        1,
        "no listing",
    );
    // Credentials in a URL are refused, and never repeated.
    let out = servers.run(&[
        "validate",
        &format!("http://user:hunter2@{}/dora.expert", servers.http),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("credentials in the URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out"), "{err}");
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
    // The viewer draws it as it draws the local file (but for its name).
    let draw = |doc: expertui::format::inspect::Inspected| {
        let mut app = expertui::app::App::new(doc);
        app.wait_background();
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 36)).unwrap();
        terminal
            .draw(|f| expertui::app::render::draw(f, &mut app))
            .unwrap();
        terminal.backend().to_string()
    };
    let url = servers.http_url("dora.expert");
    let remote_screen = draw(doc);
    // As `expertui URL` opens it: header, TOC and text sections first (the
    // unfetched bytes drawn as gaps, nothing judged yet), the rest fetched
    // in the background with progress, then checked and drawn in full.
    let parsed = expertui::format::remote::url_of(Path::new(&url)).unwrap();
    let partial = expertui::format::remote::fetch(
        &parsed,
        &expertui::format::remote::Plan::Text,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(!partial.bytes.complete());
    let partial_doc =
        expertui::format::inspect::Inspected::from_bytes(url.clone(), partial.bytes.clone());
    assert!(!partial_doc.sections_present());
    let mut app = expertui::app::App::new(expertui::format::inspect::Inspected::from_bytes(
        url.clone(),
        partial.bytes,
    ));
    assert!(app.findings.is_empty());
    assert!(app.message.contains("fetching"), "{}", app.message);
    app.panel = expertui::app::state::PanelId::Hex;
    app.goto(bytes.len() as u64 / 2);
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 36)).unwrap();
    terminal
        .draw(|f| expertui::app::render::draw(f, &mut app))
        .unwrap();
    let hex = terminal.backend().to_string();
    assert!(
        hex.contains("·· ··"),
        "unfetched bytes drawn as gaps: {hex}"
    );
    app.fetch_remote(parsed);
    app.wait_background();
    assert!(app.fetching.is_none());
    assert!(app.doc.sections_present());
    assert!(
        app.message.contains("all 10 sections intact"),
        "{}",
        app.message
    );
    let local_path = dir.path().join("dora.expert");
    let local_screen = draw(expertui::format::inspect::Inspected::open(&local_path).unwrap());
    assert!(
        remote_screen.contains("all 10 sections verified"),
        "{remote_screen}"
    );
    let name_free = |s: &str, name: &str| s.replace(name, "");
    assert_eq!(
        name_free(&remote_screen, &url).lines().count(),
        name_free(&local_screen, local_path.to_str().unwrap())
            .lines()
            .count()
    );
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

#[test]
fn a_signed_expert_is_checked_in_full_before_a_remote_load() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    dora_expert(dir.path());
    let key = dir.path().join("publisher");
    servers
        .expertui()
        .args(["keygen", "-o"])
        .arg(&key)
        .assert()
        .success();
    let signed = dir.path().join("signed.expert");
    servers
        .expertui()
        .arg("sign")
        .arg(dir.path().join("dora.expert"))
        .arg("--key")
        .arg(&key)
        .arg("-o")
        .arg(&signed)
        .assert()
        .success();
    let bytes = std::fs::read(&signed).unwrap();
    servers.publish("signed.expert", &bytes);
    let reader = expertui::format::ExpertReader::open(&signed).unwrap();
    let layer = reader
        .find(expertui::format::SectionType::Tensors, "layer.4")
        .unwrap();
    let mut damaged = bytes.clone();
    damaged[layer.offset as usize + 100] ^= 1;
    servers.publish("damaged-signed.expert", &damaged);
    let base = fixture("merge/base-layer0-subset.safetensors");
    let fuse = |name: &str| {
        servers
            .expertui()
            .env("EXPERTUI_NO_CACHE", "1")
            .args(["fuse", &servers.s3_url(name), "--base"])
            .arg(&base)
            .arg("-o")
            .arg(dir.path().join("out.safetensors"))
            .args(["--require-signature", "--pubkey"])
            .arg(key.with_extension("pub"))
            .output()
            .unwrap()
    };
    let ok = fuse("signed.expert");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The damage is in a layer fuse would read anyway; the point is that
    // the signature check saw every section, remote or not.
    let refused = fuse("damaged-signed.expert");
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn keys_with_spaces_and_weak_etags_work() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let bytes = dora_expert(dir.path());
    servers.publish("my expert.expert", &bytes);
    for url in [
        servers.s3_url("my%20expert.expert"),
        servers.http_url("my%20expert.expert"),
    ] {
        let out = servers.run(&["validate", "--verify-integrity", &url]);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A weak ETag cannot be sent as If-Match (it never matches strongly):
    // reads are pinned by comparing ETag, date and size instead.
    servers.publish("weak.expert", &bytes);
    let out = servers.run(&[
        "validate",
        "--verify-integrity",
        &servers.http_url("weak/weak.expert"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
