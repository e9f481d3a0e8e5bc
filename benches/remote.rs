//! Remote experts, measured against real servers on loopback (the same
//! in-process S3 and HTTP servers the tests use): what each verb costs in
//! requests and bytes, and registry-scale validation of 1 000 experts in a
//! bucket beside the same 1 000 files validated from disk. `cargo bench
//! --bench remote` prints a Markdown report for BENCHMARKS.md.

use std::path::Path;
use std::time::Instant;

#[path = "../tests/support/servers.rs"]
mod servers;

mod common;

use common::{machine, qwen_adapter, qwen_config, write_adapter_dir};
use expertui::format::package::{ExpertContents, PackageOptions};
use servers::Servers;

const COPIES: usize = 1000;

fn package_qwen_dora(dir: &Path) -> Vec<u8> {
    let src = dir.join("qwen-dora");
    write_adapter_dir(&src, &qwen_adapter(28, true), &qwen_config(true));
    let out = dir.join("qwen.expert");
    ExpertContents::from_adapter_dir(&src)
        .unwrap()
        .write_binary(&out, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    std::fs::read(out).unwrap()
}

/// Runs the binary, returning seconds and the (requests, bytes) both
/// servers saw.
fn run(servers: &Servers, args: &[&str]) -> (f64, (u64, u64)) {
    servers.costs();
    let started = Instant::now();
    let out = servers.expertui().args(args).output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.code().is_some_and(|c| c == 0 || c == 3),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ((a, b), (c, d)) = servers.costs();
    (seconds, (a + c, b + d))
}

fn main() {
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let mut report = format!(
        "## Remote experts (`cargo bench --bench remote`)\n\nMachine: {}. Servers: s3s-fs (S3) and axum + tower-http ServeDir (HTTP) in the same process, on loopback.\n\n",
        machine()
    );

    // 1. What each verb costs on the 26 MB Qwen3-shaped DoRA expert.
    let qwen = package_qwen_dora(dir.path());
    servers.publish("qwen.expert", &qwen);
    report.push_str(&format!(
        "### Requests and bytes per verb, {} B Qwen3-0.6B-shaped DoRA expert\n\n| verb | store | requests | bytes sent by the server | time |\n| --- | --- | --- | --- | --- |\n",
        qwen.len()
    ));
    let out = dir.path().join("out.bin");
    let out = out.to_str().unwrap();
    let verbs: [(&str, Vec<&str>); 4] = [
        ("validate", vec!["validate"]),
        ("extract layer.5", vec!["extract", "", "layer.5", "-o", out]),
        (
            "validate --verify-integrity",
            vec!["validate", "--verify-integrity"],
        ),
        (
            "extract layer.5, warm cache",
            vec!["extract", "", "layer.5", "-o", out],
        ),
    ];
    for (store, url) in [
        ("S3", servers.s3_url("qwen.expert")),
        ("HTTP", servers.http_url("qwen.expert")),
    ] {
        let _ = std::fs::remove_dir_all(&servers.cache_dir);
        for (label, args) in &verbs {
            let mut args: Vec<&str> = args.clone();
            match args.iter().position(|a| a.is_empty()) {
                Some(i) => args[i] = &url,
                None => args.push(&url),
            }
            let (seconds, (requests, bytes)) = run(&servers, &args);
            report.push_str(&format!(
                "| `{label}` | {store} | {requests} | {bytes} | {:.0} ms |\n",
                seconds * 1e3
            ));
        }
    }

    // 2. A registry: 1 000 small experts under one prefix.
    let demo =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.expert")).unwrap();
    for i in 0..COPIES {
        servers.publish(&format!("registry/{i:04}.expert"), &demo);
    }
    let prefix = servers.s3_url("registry/");
    let local = servers.bucket_dir.join("registry");
    let local = local.to_str().unwrap();
    report.push_str(&format!(
        "\n### `validate --recursive` over {COPIES} experts of {} B (the demo expert)\n\n| run | time | experts/s | requests per expert | bytes per expert |\n| --- | --- | --- | --- | --- |\n",
        demo.len()
    ));
    for (label, args) in [
        (
            "S3 prefix",
            vec!["validate", "--recursive", "--json", prefix.as_str()],
        ),
        (
            "S3 prefix, --verify-integrity",
            vec![
                "validate",
                "--recursive",
                "--json",
                "--verify-integrity",
                prefix.as_str(),
            ],
        ),
        (
            "local folder (anchor)",
            vec!["validate", "--recursive", "--json", local],
        ),
    ] {
        let mut best = f64::MAX;
        let mut cost = (0, 0);
        for _ in 0..3 {
            let (seconds, c) = run(&servers, &args);
            if seconds < best {
                best = seconds;
                cost = c;
            }
        }
        report.push_str(&format!(
            "| {label} | {:.2} s | {:.0} | {:.2} | {:.0} |\n",
            best,
            COPIES as f64 / best,
            cost.0 as f64 / COPIES as f64,
            cost.1 as f64 / COPIES as f64
        ));
    }
    println!("{report}");
}
