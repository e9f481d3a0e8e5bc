//! TUI tests on ratatui's TestBackend: a snapshot of every panel on the demo
//! expert and on a damaged copy, key-driven walks, and style checks.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use expertui::app::benchpanel::BenchView;
use expertui::app::render::draw;
use expertui::app::state::{PanelId, Verification};
use expertui::app::App;
use expertui::format::inspect::Inspected;
use expertui::format::FileBytes;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use std::sync::Arc;

const WIDTH: u16 = 120;
const HEIGHT: u16 = 36;

fn app_for(bytes: Vec<u8>, label: &str) -> App {
    let doc = Inspected::from_bytes(label.into(), Arc::new(FileBytes::Owned(bytes)));
    let mut app = App::new(doc);
    app.colors = true;
    app.wait_background();
    app
}

fn demo() -> App {
    app_for(expertui::DEMO_EXPERT.to_vec(), "demo.expert")
}

/// The demo with one byte flipped inside section `layer.2`.
fn damaged() -> (App, u64, u64) {
    let clean = demo();
    let row = clean.rows.iter().find(|r| r.name == "layer.2").unwrap();
    let (start, end) = (row.offset.unwrap(), row.offset.unwrap() + row.stored_len);
    let mut bytes = expertui::DEMO_EXPERT.to_vec();
    bytes[(start + 100) as usize] ^= 0xff;
    (app_for(bytes, "damaged.expert"), start, end)
}

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    app.wait_background();
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn render(app: &mut App) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    terminal
}

fn screen(app: &mut App) -> String {
    render(app).backend().to_string()
}

#[test]
fn overview_snapshot() {
    let mut app = demo();
    insta::assert_snapshot!("overview_demo", screen(&mut app));
}

#[test]
fn hex_snapshot() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('2'));
    insta::assert_snapshot!("hex_demo", screen(&mut app));
}

#[test]
fn decoder_snapshots() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('3'));
    insta::assert_snapshot!("decoder_manifest", screen(&mut app));
    for _ in 0..7 {
        key(&mut app, KeyCode::Down);
    }
    assert_eq!(app.rows[app.selected].name, "layer.0");
    insta::assert_snapshot!("decoder_tensors", screen(&mut app));
}

#[test]
fn integrity_snapshot() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('4'));
    insta::assert_snapshot!("integrity_demo", screen(&mut app));
}

#[test]
fn help_overlay_snapshot() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('?'));
    assert!(app.show_help);
    insta::assert_snapshot!("help_overlay", screen(&mut app));
    key(&mut app, KeyCode::Char('x'));
    assert!(!app.show_help, "any key closes help");
}

#[test]
fn damaged_copy_snapshots_and_red_section() {
    let (mut app, start, end) = damaged();
    let Verification::Done { checks, .. } = &app.verification else {
        panic!("verification did not finish")
    };
    let bad: Vec<_> = checks
        .iter()
        .filter(|c| !c.ok())
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(bad, vec!["layer.2".to_string()]);
    insta::assert_snapshot!("overview_damaged", screen(&mut app));

    key(&mut app, KeyCode::Char('4'));
    for _ in 0..9 {
        key(&mut app, KeyCode::Down);
    }
    let text = screen(&mut app);
    assert!(text.contains("DAMAGED"), "{text}");
    assert!(text.contains(&format!("{start:#x}..{end:#x}")), "{text}");
    insta::assert_snapshot!("integrity_damaged", text);

    // The damaged section's row in the list is red, and so are its bytes.
    key(&mut app, KeyCode::Char('2'));
    let terminal = render(&mut app);
    let buffer = terminal.backend().buffer();
    let row_y = (0..HEIGHT).find(|&y| {
        (0..34)
            .map(|x| buffer[(x, y)].symbol())
            .collect::<String>()
            .contains("layer.2")
    });
    let row_y = row_y.expect("layer.2 listed");
    assert_eq!(buffer[(3, row_y)].fg, Color::Red, "damaged row is red");
    // The cursor sits at the section start: the first hex cell is on a red background.
    assert_eq!(app.hex.cursor, start);
    let hex_row = (0..HEIGHT)
        .find(|&y| {
            (34..50)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
                .contains(&format!("{:08x}", start / 16 * 16))
        })
        .expect("cursor row visible");
    let col = 34 + 1 + 10 + (start % 16) as u16 * 3 + if start % 16 > 7 { 1 } else { 0 };
    let neighbour = col + 3;
    assert_eq!(
        buffer[(neighbour, hex_row)].bg,
        Color::Red,
        "damaged bytes have a red background"
    );
}

#[test]
fn jump_to_offset_hex_decimal_and_relative() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "0x30");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.hex.cursor, 0x30);
    assert_eq!(app.region_at_cursor().unwrap().label, "header.root_digest");
    assert!(screen(&mut app).contains("header.root_digest"));
    key(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "+16");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.hex.cursor, 0x40);
    key(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "-0x10");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.hex.cursor, 0x30);
    key(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "100");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.hex.cursor, 100);
    key(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "0xffffffff");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.hex.cursor, 100, "past the end: cursor stays");
    assert!(app.message.contains("past the end"));
}

#[test]
fn search_text_and_hex_with_next_and_previous() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "lora_A");
    key(&mut app, KeyCode::Enter);
    let first = app.hex.cursor;
    let bytes = expertui::DEMO_EXPERT;
    assert_eq!(&bytes[first as usize..first as usize + 6], b"lora_A");
    key(&mut app, KeyCode::Char('n'));
    let second = app.hex.cursor;
    assert!(second > first);
    assert_eq!(&bytes[second as usize..second as usize + 6], b"lora_A");
    key(&mut app, KeyCode::Char('N'));
    assert_eq!(app.hex.cursor, first);
    key(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "#89 45 58 50");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.hex.cursor, 0, "magic found (wrapping)");
    assert!(app.message.contains("match at 0x0"));
}

#[test]
fn inspector_decodes_and_toggles_endianness() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char(':'));
    type_text(&mut app, "8"); // version_major = 2, little-endian u16
    key(&mut app, KeyCode::Enter);
    assert!(screen(&mut app).contains("u16 2 "), "little endian");
    key(&mut app, KeyCode::Char('e'));
    assert!(screen(&mut app).contains("u16 512 "), "big endian");
}

#[test]
fn broken_file_opens_raw_at_the_error() {
    let mut bytes = expertui::DEMO_EXPERT.to_vec();
    let toc = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
    // Point the TOC past the end: the structure cannot be parsed.
    bytes[32..40].copy_from_slice(&(toc + 4096).to_le_bytes());
    let mut app = app_for(bytes, "broken.expert");
    assert_eq!(app.panel, PanelId::Hex);
    assert!(app.rows.is_empty());
    let text = screen(&mut app);
    assert!(text.contains("cannot parse"), "{text}");
    insta::assert_snapshot!("hex_broken", text);
}

#[test]
fn legacy_package_lists_member_files() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm-sql-dora.v0.3.0.expert"
    ))
    .unwrap();
    let mut app = app_for(bytes, "legacy.expert");
    let names: Vec<_> = app.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names[0], "manifest.json");
    assert_eq!(names.len(), 6);
    key(&mut app, KeyCode::Char('3'));
    assert!(screen(&mut app).contains("expert-sql-minilm"));
}

#[test]
fn tab_walks_every_panel_and_q_quits() {
    let mut app = demo();
    let mut seen = vec![app.panel];
    for _ in 0..6 {
        key(&mut app, KeyCode::Tab);
        seen.push(app.panel);
    }
    assert_eq!(
        seen,
        vec![
            PanelId::Overview,
            PanelId::Hex,
            PanelId::Decoder,
            PanelId::Integrity,
            PanelId::Osd,
            PanelId::Bench,
            PanelId::Overview
        ]
    );
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.panel, PanelId::Bench);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

#[test]
fn small_terminal_does_not_panic() {
    let mut app = demo();
    for panel in ['1', '2', '3', '4', '5', '6', '?'] {
        key(&mut app, KeyCode::Char(panel));
        for (w, h) in [(20, 6), (40, 10), (80, 12)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|f| draw(f, &mut app)).unwrap();
        }
        if app.show_help {
            key(&mut app, KeyCode::Esc);
        }
    }
}

#[test]
fn osd_panel_sliders_follow_keys_and_mouse() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    use expertui::osd::analysis::Method;
    use expertui::osd::ValueDtype;
    let mut app = demo();
    key(&mut app, KeyCode::Char('5'));
    let analysis = app.osd.analysis.clone().expect("analysis finished");
    assert_eq!(analysis.modules.len(), 12);
    insta::assert_snapshot!("osd_panel", screen(&mut app));
    let before = app.osd.estimate;
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Right);
    assert_eq!(app.osd.params.rank, 6);
    let after = app.osd.estimate;
    assert!(
        after.bytes > before.bytes && after.rel_error < before.rel_error,
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after,
        analysis.estimate(&app.osd.params),
        "panel shows the library's estimate"
    );
    // The dtype: bf16 halves the bytes at the same rank.
    key(&mut app, KeyCode::Char('d'));
    assert_eq!(app.osd.params.dtype, ValueDtype::Bf16);
    assert!(app.osd.estimate.bytes * 2 < after.bytes + 12 * 400);
    // The relaxation: auto, then c = 0.
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(app.osd.params.relax, Some(0));
    let text = screen(&mut app);
    assert!(
        text.contains("6 of 8") && text.contains("bf16") && text.contains("c 0"),
        "{text}"
    );
    // Down selects a module: its own curve and estimate.
    key(&mut app, KeyCode::Down);
    assert_eq!(app.osd.target, 1);
    assert_eq!(
        app.osd.estimate,
        analysis.modules[0].estimate(&app.osd.params)
    );
    // The methods in turn; a blend shows its sparsity, which keys and a
    // click on its bar set.
    key(&mut app, KeyCode::Char('m'));
    assert_eq!(app.osd.params.method, Method::Magtrunc);
    key(&mut app, KeyCode::Char('m'));
    assert_eq!(app.osd.params.method, Method::LowrankSparse);
    key(&mut app, KeyCode::Char('+'));
    assert!((app.osd.params.sparsity - 0.02).abs() < 1e-9);
    let click = |column, row| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    };
    app.on_mouse(click(34 + 1 + 10 + 11, 1 + 4), 1);
    assert!(
        (app.osd.params.sparsity - 0.5).abs() < 1e-9,
        "{}",
        app.osd.params.sparsity
    );
    app.on_mouse(click(34 + 1 + 10 + 23, 1 + 3), 1);
    assert_eq!(app.osd.params.rank, 8);
    // The tune grid: baselines and both sparsified methods in every dtype,
    // its measured Pareto front first.
    key(&mut app, KeyCode::Char('t'));
    assert_eq!(app.osd.grid.len(), 3 + 3 * 3 * 4);
    assert!(app.osd.grid.iter().any(|g| g.pareto && g.exact));
    let text = screen(&mut app);
    assert!(
        text.contains("pareto") && text.contains("frontier"),
        "{text}"
    );
    insta::assert_snapshot!("osd_panel_tuned", text);
}

#[test]
fn bench_panel_runs_the_benchmark_in_the_background() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('6'));
    assert_eq!(app.panel, PanelId::Bench);
    insta::assert_snapshot!("bench_idle", screen(&mut app));
    key(&mut app, KeyCode::Char('r'));
    assert!(!app.bench.running);
    let report = app
        .bench
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", app.bench.error));
    let keys: Vec<&str> = report.figures.iter().map(|f| f.key.as_str()).collect();
    for wanted in [
        "cold_load",
        "hot_load",
        "validation",
        "first_layer",
        "fuse_adapter",
    ] {
        assert!(
            keys.iter().any(|k| k.contains(wanted)),
            "{wanted} in {keys:?}"
        );
    }
    assert!(
        report.figures.iter().all(|f| !f.anchors.is_empty()),
        "every figure has an anchor"
    );
    // The bars first: one per (figure, anchor), each with its ratio.
    let (label, ratio) = report.relative().remove(0);
    let text = screen(&mut app);
    assert!(text.contains("cold load") && text.contains('│'), "{text}");
    assert!(text.contains(&label[..20]), "{label} in {text}");
    assert!(
        text.contains(&expertui::app::benchpanel::ratio_text(ratio)),
        "{text}"
    );
    key(&mut app, KeyCode::Char('t'));
    let text = screen(&mut app);
    assert!(
        text.contains("cold load") && text.contains("safetensors"),
        "{text}"
    );
}

/// A report with fixed numbers (no timing), for the bench panel's views.
fn sample_report() -> expertui::gpu::bench::BenchReport {
    use expertui::gpu::bench::{Anchor, BenchReport, Figure, Machine, Stats};
    let stats = |median: f64| Stats {
        median,
        min: median * 0.9,
        max: median * 1.2,
        samples: 5,
    };
    let figure =
        |key: &str, label: &str, unit: &str, better, value: f64, anchors: &[(&str, f64)]| Figure {
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            better,
            value: stats(value),
            anchors: anchors
                .iter()
                .map(|(l, v)| Anchor {
                    label: (*l).into(),
                    value: stats(*v),
                    ratio: value / v,
                })
                .collect(),
            target: None,
            note: None,
        };
    BenchReport {
        machine: Machine {
            cpu: "Test CPU".into(),
            cores: 2,
            os: "linux".into(),
        },
        device: "cpu".into(),
        file: "demo.expert".into(),
        format: "binary".into(),
        file_bytes: 20480,
        tensor_bytes: 16384,
        tensor_sections: 8,
        modules: 4,
        repeat: 5,
        fuse_base: "synthetic".into(),
        figures: vec![
            figure(
                "cold_load",
                "cold load to ready tensors",
                "ms",
                "lower",
                1.5,
                &[("safetensors crate", 1.85), ("legacy tar.gz", 32.2)],
            ),
            figure(
                "validation",
                "validation (structure + root digest)",
                "ms",
                "lower",
                0.5,
                &[("safetensors header parse", 0.22)],
            ),
            figure(
                "verify",
                "verify throughput",
                "GB/s",
                "higher",
                3.3,
                &[("one SHA-256 stream", 1.75)],
            ),
        ],
        notes: vec!["synthetic base weights".into()],
    }
}

fn bench_with_report() -> App {
    let mut app = demo();
    key(&mut app, KeyCode::Char('6'));
    app.bench.report = Some(sample_report());
    app
}

#[test]
fn bench_panel_bars_and_table_snapshots() {
    let mut app = bench_with_report();
    assert_eq!(app.bench.view, BenchView::Bars);
    insta::assert_snapshot!("bench_bars", screen(&mut app));
    // Better than the anchor is green, worse red; the ratio is printed either way.
    let terminal = render(&mut app);
    let buffer = terminal.backend().buffer();
    let row_of = |needle: &str| {
        (0..HEIGHT)
            .find(|y| {
                (0..WIDTH)
                    .map(|x| buffer[(x, *y)].symbol().to_string())
                    .collect::<String>()
                    .contains(needle)
            })
            .unwrap_or_else(|| panic!("{needle} on screen"))
    };
    let colour_of = |y: u16, glyph: &str| {
        (0..WIDTH)
            .map(|x| &buffer[(x, y)])
            .find(|c| c.symbol() == glyph)
            .map(|c| c.fg)
    };
    let tar = row_of("×21.5");
    assert_eq!(colour_of(tar, "█"), Some(Color::Green));
    let header = row_of("×0.44");
    assert_eq!(colour_of(header, "▒"), Some(Color::Red));
    // Without colour the ratios and the side of the anchor still tell.
    app.colors = false;
    let text = screen(&mut app);
    assert!(text.contains("×0.44") && text.contains("×1.89"), "{text}");
    app.colors = true;
    key(&mut app, KeyCode::Char('t'));
    assert_eq!(app.bench.view, BenchView::Table);
    insta::assert_snapshot!("bench_table", screen(&mut app));
    // No hot-swap yet: t comes back to the bars.
    key(&mut app, KeyCode::Char('t'));
    assert_eq!(app.bench.view, BenchView::Bars);
    key(&mut app, KeyCode::PageDown);
    assert_eq!(app.bench.scroll, 10);
}

#[test]
fn bench_panel_hot_swap_demo() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('6'));
    key(&mut app, KeyCode::Char('w'));
    assert!(!app.bench.swapping);
    assert_eq!(app.bench.swap_error, None);
    assert_eq!(app.bench.view, BenchView::HotSwap);
    let steps = &app.bench.swap;
    let capacity = app.bench.swap_capacity;
    assert_eq!(capacity, 10);
    // register, 10 loads, a use, the load that evicts, 10 unloads.
    assert_eq!(steps.len(), 1 + capacity + 1 + 1 + capacity);
    assert_eq!(
        steps.iter().map(|s| s.memory.len()).max(),
        Some(capacity),
        "never more than the capacity loaded"
    );
    let swap = &steps[capacity + 2];
    assert!(swap.action.contains("evicts expert-02"), "{}", swap.action);
    assert!(swap.memory.iter().all(|m| m.id != "expert-02"));
    assert!(swap
        .memory
        .iter()
        .all(|m| m.adapter_bytes > 0 && m.device == "cpu"));
    assert_eq!(swap.total(), capacity * swap.memory[0].adapter_bytes);
    assert!(steps.last().unwrap().memory.is_empty(), "all unloaded");
    insta::assert_snapshot!("bench_hot_swap", screen(&mut app));
    // Every view draws on small terminals too.
    app.bench.report = Some(sample_report());
    for _ in 0..3 {
        for (w, h) in [(20, 6), (40, 10), (80, 12)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|f| draw(f, &mut app)).unwrap();
        }
        key(&mut app, KeyCode::Char('t'));
    }
    assert_eq!(app.bench.view, BenchView::HotSwap);
    // t cycles bars → table → hot-swap.
    key(&mut app, KeyCode::Char('t'));
    key(&mut app, KeyCode::Char('t'));
    key(&mut app, KeyCode::Char('t'));
    assert_eq!(app.bench.view, BenchView::HotSwap);
}

#[test]
fn bench_panel_device_picker_cycles_available_devices() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('6'));
    let devices = expertui::gpu::device::available_devices();
    assert_eq!(devices[0], "cpu");
    assert_eq!(app.bench.device, "cpu");
    for i in 1..=devices.len() {
        key(&mut app, KeyCode::Char('d'));
        assert_eq!(app.bench.device, devices[i % devices.len()]);
        assert!(app.message.contains(&app.bench.device), "{}", app.message);
    }
    #[cfg(not(feature = "cuda"))]
    assert_eq!(devices, vec!["cpu".to_string()]);
    assert!(screen(&mut app).contains("device cpu"));
}

#[test]
fn bench_panel_exports_json_and_plots_beside_the_file() {
    let dir = std::env::temp_dir().join(format!("expertui-tui-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bench.demo.expert");
    std::fs::write(&file, expertui::DEMO_EXPERT).unwrap();
    let mut app = App::new(Inspected::open(&file).unwrap());
    app.wait_background();
    key(&mut app, KeyCode::Char('6'));
    key(&mut app, KeyCode::Char('x'));
    assert!(app.message.contains("nothing to export"), "{}", app.message);
    app.bench.report = Some(sample_report());
    key(&mut app, KeyCode::Char('x'));
    let json_path = dir.join("bench.demo.bench.json");
    assert_eq!(app.message, format!("saved {}", json_path.display()));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(json["figures"].as_array().map(Vec::len), Some(3));
    key(&mut app, KeyCode::Char('p'));
    let svg_path = dir.join("bench.demo.bench.svg");
    assert_eq!(app.message, format!("saved {}", svg_path.display()));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    key(&mut app, KeyCode::Char('P'));
    let png = std::fs::read(dir.join("bench.demo.bench.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{}", app.message);
    assert!(screen(&mut app).contains("saved "));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A published-style expert: a manifest that disagrees with its tensors and
/// a left-recursive grammar, packaged with the library.
fn published_sql() -> App {
    use expertui::format::package::{ExpertContents, PackageOptions};
    use expertui::format::SectionType;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut contents =
        ExpertContents::from_adapter_dir(&root.join("tests/fixtures/minilm-dora-r8")).unwrap();
    let published = root.join("tests/fixtures/published/sql");
    contents.manifest = std::fs::read(published.join("manifest.json")).unwrap();
    contents.set_file(
        SectionType::Grammar,
        "grammar.gbnf",
        std::fs::read(published.join("grammar.gbnf")).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sql.expert");
    contents
        .write_binary(&out, &PackageOptions::default(), &mut |_, _| {})
        .unwrap();
    app_for(std::fs::read(&out).unwrap(), "sql.expert")
}

#[test]
fn findings_in_the_overview_and_grammar_marked_in_the_decoder() {
    let mut app = published_sql();
    let codes: Vec<&str> = app.findings.iter().map(|f| f.code.as_str()).collect();
    assert!(codes.contains(&"grammar.left-recursion"), "{codes:?}");
    assert!(
        codes.contains(&"manifest.adapter-rank-mismatch"),
        "{codes:?}"
    );
    let overview = screen(&mut app);
    assert!(overview.contains("findings ("), "{overview}");
    insta::assert_snapshot!("overview_findings", overview);

    key(&mut app, KeyCode::Char('3'));
    while app.rows[app.selected].name != "grammar.gbnf" {
        key(&mut app, KeyCode::Down);
    }
    let decoder = screen(&mut app);
    assert!(
        decoder.contains("^ warning[grammar.left-recursion]"),
        "{decoder}"
    );
    insta::assert_snapshot!("decoder_grammar_findings", decoder);
}

/// A signed copy of the demo with one tensor byte flipped: the overview
/// says the signature is INVALID once the sections are hashed, and a trust
/// policy is reported as admitted / REFUSED / not checked.
#[test]
fn overview_signature_is_honest_about_damage_and_trust() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let bin = |args: &[&str]| {
        let out = assert_cmd::Command::cargo_bin("expertui")
            .unwrap()
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    bin(&["--headless", "keygen", "-o", key.to_str().unwrap()]);
    let signed = dir.path().join("signed.expert");
    std::fs::write(&signed, expertui::DEMO_EXPERT).unwrap();
    bin(&[
        "--headless",
        "sign",
        signed.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&signed).unwrap();

    let mut app = app_for(bytes.clone(), "signed.expert");
    let text = screen(&mut app);
    assert!(text.contains("signed by"), "{text}");
    assert!(text.contains("not checked (no trust policy"), "{text}");

    let public = expertui::format::signing::PublicKey::load(&dir.path().join("k.pub")).unwrap();
    let mut policy = expertui::format::signing::Policy::new();
    policy.pin(public);
    let doc = Inspected::from_bytes(
        "signed.expert".into(),
        Arc::new(FileBytes::Owned(bytes.clone())),
    );
    let mut app = App::with_policy(doc, Some(policy.clone()));
    app.wait_background();
    assert!(
        screen(&mut app).contains("admitted: valid"),
        "{}",
        screen(&mut app)
    );

    let row = app.rows.iter().find(|r| r.name == "layer.2").unwrap();
    let mut tampered = bytes.clone();
    tampered[(row.offset.unwrap() + 100) as usize] ^= 0xff;
    let doc = Inspected::from_bytes(
        "tampered.expert".into(),
        Arc::new(FileBytes::Owned(tampered.clone())),
    );
    let mut app = App::with_policy(doc, None);
    app.wait_background();
    let text = screen(&mut app);
    let line = text
        .lines()
        .find(|l| l.starts_with("\"│signature"))
        .unwrap_or_default();
    assert!(line.contains("INVALID"), "{text}");

    let unsigned = Inspected::from_bytes(
        "demo.expert".into(),
        Arc::new(FileBytes::Static(expertui::DEMO_EXPERT)),
    );
    let mut app = App::with_policy(unsigned, Some(policy));
    app.wait_background();
    let text = screen(&mut app);
    assert!(text.contains("REFUSED"), "{text}");
}

/// Esc closes prompts and help and never quits; only `q` (and Ctrl-C) do.
#[test]
fn esc_never_quits() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char(':'));
    assert!(app.prompt.is_some());
    key(&mut app, KeyCode::Esc);
    assert!(app.prompt.is_none() && !app.quit);
    key(&mut app, KeyCode::Esc);
    assert!(!app.quit, "a second Esc does not quit");
    key(&mut app, KeyCode::Char('?'));
    key(&mut app, KeyCode::Esc);
    assert!(!app.show_help && !app.quit);
    for panel in ['1', '2', '3', '4', '5', '6'] {
        key(&mut app, KeyCode::Char(panel));
        key(&mut app, KeyCode::Esc);
        assert!(!app.quit, "panel {panel}");
    }
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

/// `[` / `]` step from where the cursor is, the list follows the cursor,
/// and jumps put their target near the top of the view.
#[test]
fn section_keys_follow_the_cursor() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('2'));
    let layer = |app: &App, name: &str| app.rows.iter().position(|r| r.name == name).unwrap();
    let (l2, l3) = (layer(&app, "layer.2"), layer(&app, "layer.3"));
    let inside_l2 = app.rows[l2].offset.unwrap() + 1000;
    key(&mut app, KeyCode::Char(':'));
    type_text(&mut app, &format!("{inside_l2:#x}"));
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.hex.cursor, inside_l2);
    assert_eq!(app.selected, l2, "the list follows the cursor");
    let row = app.hex.cursor / 16;
    assert!(
        row >= app.hex.top_row && row - app.hex.top_row <= 2,
        "jump lands near the top"
    );
    key(&mut app, KeyCode::Char(']'));
    assert_eq!(app.selected, l3);
    assert_eq!(app.hex.cursor, app.rows[l3].offset.unwrap());
    assert!(app.hex.cursor / 16 - app.hex.top_row <= 2);
    key(&mut app, KeyCode::Char('['));
    assert_eq!(app.selected, l2, "back to the section before the cursor");
    // From the end of the file (the TOC), `[` goes to the last section.
    key(&mut app, KeyCode::Char('G'));
    key(&mut app, KeyCode::Char('['));
    let last = app
        .rows
        .iter()
        .enumerate()
        .max_by_key(|(_, r)| r.offset.unwrap_or(0))
        .unwrap()
        .0;
    assert_eq!(app.selected, last);
}

/// Every panel laid out for 80×24 first, and at 120×40.
#[test]
fn every_panel_at_80x24_and_120x40() {
    let mut app = demo();
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        for panel in ['1', '2', '3', '4', '5', '6', '?'] {
            key(&mut app, KeyCode::Char(panel));
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|f| draw(f, &mut app)).unwrap();
            let screen = terminal.backend().to_string();
            let name = if panel == '?' {
                "help".to_string()
            } else {
                panel.to_string()
            };
            insta::assert_snapshot!(format!("panel_{name}_{w}x{h}"), screen);
            if app.show_help {
                key(&mut app, KeyCode::Esc);
            }
        }
    }
}

/// Long work can be cancelled with Esc: the benchmark stops between figure
/// families, the OSD analysis is dropped; search highlights the whole match.
#[test]
fn esc_cancels_running_jobs_and_search_highlights_the_match() {
    let mut app = demo();
    key(&mut app, KeyCode::Char('6'));
    app.on_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE));
    assert!(app.bench.running);
    app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert!(!app.quit);
    app.wait_background();
    assert!(!app.bench.running);
    assert_eq!(
        app.bench.error.as_deref(),
        Some("cancelled"),
        "{:?}",
        app.bench.error
    );
    assert!(app.bench.report.is_none());

    let mut app = demo();
    app.on_key(KeyEvent::new(KeyCode::Char('5'), KeyModifiers::NONE));
    assert!(app.osd.analyzing);
    app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert!(!app.osd.analyzing && !app.quit);
    assert!(app.message.contains("cancelled"), "{}", app.message);
    app.wait_background();
    // Coming back starts it again, and it finishes.
    key(&mut app, KeyCode::Char('1'));
    key(&mut app, KeyCode::Char('5'));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while app.osd.analysis.is_none() && std::time::Instant::now() < deadline {
        app.poll_background();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(app.osd.analysis.is_some());

    let mut app = demo();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "manifest");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.hex.match_len, 8);
    assert!(app.message.starts_with("match at"), "{}", app.message);
}

/// A click on a tab shows its panel.
#[test]
fn tabs_are_clickable() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut app = demo();
    render(&mut app);
    let click = |app: &mut App, column: u16| {
        app.on_mouse(
            MouseEvent {
                kind: MouseEventKind::Down(MouseButton::Left),
                column,
                row: 0,
                modifiers: KeyModifiers::NONE,
            },
            1,
        );
    };
    // " 1 Overview │ 2 TOC + Hex │ 3 Decoder │ 4 Integrity │ 5 OSD │ 6 Bench"
    click(&mut app, 17);
    assert_eq!(app.panel, PanelId::Hex);
    click(&mut app, 30);
    assert_eq!(app.panel, PanelId::Decoder);
    click(&mut app, 65);
    assert_eq!(app.panel, PanelId::Bench);
}

/// On the hex view the wheel scrolls the bytes and a click puts the cursor
/// on the byte under it.
#[test]
fn hex_mouse_scrolls_the_view_and_clicks_pick_bytes() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut app = demo();
    key(&mut app, KeyCode::Char('2'));
    render(&mut app);
    let mouse = |app: &mut App, kind, column, row| {
        app.on_mouse(
            MouseEvent {
                kind,
                column,
                row,
                modifiers: KeyModifiers::NONE,
            },
            1,
        )
    };
    mouse(&mut app, MouseEventKind::ScrollDown, 60, 5);
    assert_eq!(app.hex.top_row, 3);
    assert_eq!(app.hex.cursor, 0, "the wheel does not move the cursor");
    render(&mut app);
    assert_eq!(app.hex.top_row, 3, "drawing keeps the scrolled view");
    mouse(&mut app, MouseEventKind::ScrollUp, 60, 5);
    render(&mut app);
    // Second hex line (file row 1), third byte: 0x12.
    let column = 34 + 1 + 10 + 3 * 2;
    mouse(&mut app, MouseEventKind::Down(MouseButton::Left), column, 3);
    assert_eq!(app.hex.cursor, 0x12);
}
