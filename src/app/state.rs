//! The TUI's state and how keys change it. Rendering lives in the panel
//! modules; the work (parsing, hashing, decoding) is done by `format` on
//! background threads that report through a channel.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};

use crate::format::inspect::{region_at, Decoded, Inspected, Opened, Region, SectionRow};
use crate::format::integrity::SectionCheck;

use super::keys::Action;

/// The panels, in tab order. New panels (OSD tuning, benchmarks) are added here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PanelId {
    Overview,
    Hex,
    Decoder,
    Integrity,
    Osd,
    Bench,
}

impl PanelId {
    pub const ALL: [PanelId; 6] = [
        Self::Overview,
        Self::Hex,
        Self::Decoder,
        Self::Integrity,
        Self::Osd,
        Self::Bench,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Self::Overview => "Overview",
            Self::Hex => "TOC + Hex",
            Self::Decoder => "Decoder",
            Self::Integrity => "Integrity",
            Self::Osd => "OSD",
            Self::Bench => "Bench",
        }
    }
}

/// Results coming back from background work.
pub enum Event {
    Verified {
        checks: Vec<SectionCheck>,
        tail_clean: bool,
    },
    Decoded {
        index: usize,
        result: Result<Decoded, String>,
    },
    OsdReady(Result<crate::osd::expert::AdapterAnalysis, String>),
    OsdTuned(Vec<super::osdpanel::GridPoint>),
    OsdSaved(Result<String, String>),
    BenchProgress(crate::gpu::bench::BenchProgress),
    BenchDone(Result<crate::gpu::bench::BenchReport, String>),
    SwapStep(crate::gpu::bench::SwapStep),
    SwapDone(Result<(), String>),
}

/// Full verification, run once in the background.
#[derive(Debug, Clone)]
pub enum Verification {
    NotApplicable,
    Running,
    Done {
        checks: Vec<SectionCheck>,
        tail_clean: bool,
    },
}

impl Verification {
    /// Whether section `index` is known to be damaged.
    pub fn damaged(&self, index: usize) -> bool {
        match self {
            Self::Done { checks, .. } => checks.get(index).is_some_and(|c| !c.ok()),
            _ => false,
        }
    }
}

/// A line being typed at the bottom of the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptKind {
    Jump,
    Search,
}

#[derive(Debug, Clone)]
pub struct Prompt {
    pub kind: PromptKind,
    pub text: String,
}

/// Hex view position and options.
#[derive(Debug, Clone)]
pub struct HexState {
    pub cursor: u64,
    /// First visible row.
    pub top_row: u64,
    /// Rows that fit (updated by the renderer).
    pub visible_rows: u64,
    pub little_endian: bool,
    pub search: Option<Vec<u8>>,
}

pub const BYTES_PER_ROW: u64 = 16;

/// Everything the TUI shows.
pub struct App {
    pub doc: Arc<Inspected>,
    pub regions: Vec<Region>,
    pub rows: Vec<SectionRow>,
    pub panel: PanelId,
    /// Selected section, shared by the TOC, decoder and integrity panels.
    pub selected: usize,
    /// First row shown in the section list (set by the renderer, for mouse clicks).
    pub list_first: usize,
    pub hex: HexState,
    pub decoded: HashMap<usize, Result<Decoded, String>>,
    pub decoding: Option<usize>,
    pub decoder_scroll: u16,
    pub verification: Verification,
    /// What `validate` says of the file (structure, manifest, grammar,
    /// consistency; sections are hashed by the Integrity panel).
    pub findings: Vec<crate::diagnostics::Finding>,
    /// The signature against the trust policy the TUI was started with
    /// (`None`: no policy given, nothing checked beyond the embedded key).
    pub trust: Option<TrustView>,
    pub prompt: Option<Prompt>,
    pub show_help: bool,
    pub message: String,
    pub quit: bool,
    pub colors: bool,
    pub osd: super::osdpanel::OsdPanel,
    pub bench: super::benchpanel::BenchPanel,
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

impl App {
    pub fn new(doc: Inspected) -> Self {
        Self::with_policy(doc, None)
    }

    /// The TUI on `doc`, its signature checked against `policy`.
    pub fn with_policy(doc: Inspected, policy: Option<crate::format::signing::Policy>) -> Self {
        let doc = Arc::new(doc);
        let (tx, rx) = channel();
        let regions = doc.regions();
        let rows = doc.rows();
        let findings = findings_of(&doc, policy.as_ref());
        let trust = policy.as_ref().map(|p| TrustView::of(&doc, p));
        let mut app = Self {
            doc,
            regions,
            rows,
            panel: PanelId::Overview,
            selected: 0,
            list_first: 0,
            hex: HexState {
                cursor: 0,
                top_row: 0,
                visible_rows: 16,
                little_endian: true,
                search: None,
            },
            decoded: HashMap::new(),
            decoding: None,
            decoder_scroll: 0,
            verification: Verification::NotApplicable,
            findings,
            trust,
            prompt: None,
            show_help: false,
            message: String::new(),
            quit: false,
            colors: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            osd: Default::default(),
            bench: Default::default(),
            tx,
            rx,
        };
        let doc = app.doc.clone();
        match &doc.opened {
            Opened::Binary(_) => app.start_verification(),
            Opened::Broken(e) => {
                // Open straight onto the bytes where parsing stopped.
                app.panel = PanelId::Hex;
                app.goto(e.offset().unwrap_or(0));
                app.message = format!("cannot parse: {e}");
            }
            Opened::Legacy(_) => {
                app.message =
                    "legacy tar.gz package (deprecated): member files listed as sections".into()
            }
        }
        app
    }

    /// Hashes every section on a worker thread.
    pub fn start_verification(&mut self) {
        let Some(reader) = self.doc.reader().cloned() else {
            return;
        };
        self.verification = Verification::Running;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let checks = reader.verify();
            let tail_clean = reader.tail_padding_clean();
            let _ = tx.send(Event::Verified { checks, tail_clean });
        });
    }

    /// Analyses the adapter for the OSD panel on a worker thread, once.
    pub fn start_osd_analysis(&mut self) {
        if !self.osd.needs_analysis() {
            return;
        }
        self.osd.analyzing = true;
        let doc = self.doc.clone();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Event::OsdReady(super::osdpanel::analyse(&doc)));
        });
    }

    fn start_osd_tune(&mut self) {
        let Some(analysis) = self.osd.analysis.clone() else {
            return;
        };
        self.osd.tuning = true;
        let (tx, method) = (self.tx.clone(), self.osd.params.method);
        std::thread::spawn(move || {
            let _ = tx.send(Event::OsdTuned(super::osdpanel::tune_grid(
                &analysis, method,
            )));
        });
    }

    /// Where "save as" and the exports write: beside the file, or here for the demo.
    fn osd_stem(&self) -> std::path::PathBuf {
        match self.doc.reader().and_then(|r| r.path()) {
            Some(path) => path.with_extension(""),
            None => std::path::PathBuf::from("demo"),
        }
    }

    fn start_osd_save(&mut self) {
        let Some(analysis) = self.osd.analysis.clone() else {
            return;
        };
        let Some(reader) = self.doc.reader().cloned() else {
            self.message = "save needs a binary expert".into();
            return;
        };
        self.osd.saving = true;
        let (tx, params) = (self.tx.clone(), self.osd.params);
        let out = self.osd_stem().with_extension("osd.expert");
        let source = reader
            .path()
            .map_or("demo".into(), |p| p.display().to_string());
        std::thread::spawn(move || {
            let _ = tx.send(Event::OsdSaved(super::osdpanel::save(
                &reader, &analysis, &params, &out, &source,
            )));
        });
    }

    /// The file the benchmark and hot-swap demo load: the open one, or the
    /// embedded demo written to a temporary file (they load from disk).
    fn bench_file(&mut self) -> Option<BenchInput> {
        if let Some(p) = self.doc.reader().and_then(|r| r.path()) {
            return Some(BenchInput {
                path: p.to_path_buf(),
                _temp: None,
            });
        }
        // The demo goes to a temp file that the worker owns: it is deleted
        // when the run ends, however it ends.
        let written = tempfile::Builder::new()
            .prefix("expertui-bench-")
            .suffix(".expert")
            .tempfile()
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &self.doc.bytes[..])?;
                Ok(f.into_temp_path())
            });
        match written {
            Ok(temp) => Some(BenchInput {
                path: temp.to_path_buf(),
                _temp: Some(temp),
            }),
            Err(e) => {
                self.message = format!("cannot write the demo to a temp file: {e}");
                None
            }
        }
    }

    /// Runs the benchmark on a worker thread, on the picked device.
    pub fn start_bench(&mut self) {
        if self.bench.busy() {
            return;
        }
        let Some(input) = self.bench_file() else {
            return;
        };
        self.bench.running = true;
        self.bench.progress = None;
        if self.bench.view == super::benchpanel::BenchView::HotSwap {
            self.bench.view = super::benchpanel::BenchView::Bars;
        }
        let (tx, device) = (self.tx.clone(), self.bench.device.clone());
        std::thread::spawn(move || {
            let input = input; // the whole struct: its temp file lives as long as the run
            let config = crate::gpu::bench::BenchConfig {
                file: input.path.clone(),
                base: Vec::new(),
                device,
                repeat: 5,
            };
            let progress_tx = tx.clone();
            let result = crate::gpu::bench::run_bench(&config, &mut |p| {
                let _ = progress_tx.send(Event::BenchProgress(p.clone()));
            })
            .map_err(|e| e.to_string());
            let _ = tx.send(Event::BenchDone(result));
        });
    }

    /// Runs the hot-swap demo on a worker thread, step by step.
    pub fn start_hot_swap(&mut self) {
        if self.bench.busy() {
            return;
        }
        let Some(input) = self.bench_file() else {
            return;
        };
        self.bench.swapping = true;
        self.bench.swap.clear();
        self.bench.swap_error = None;
        self.bench.view = super::benchpanel::BenchView::HotSwap;
        self.bench.scroll = 0;
        let (tx, device) = (self.tx.clone(), self.bench.device.clone());
        std::thread::spawn(move || {
            let input = input; // the whole struct: its temp file lives as long as the run
            let step_tx = tx.clone();
            let result = crate::gpu::bench::hot_swap(&input.path, &device, &mut |step| {
                let _ = step_tx.send(Event::SwapStep(step));
            });
            let _ = tx.send(Event::SwapDone(result.map_err(|e| e.to_string())));
        });
    }

    /// Applies finished background work; returns whether anything changed.
    pub fn poll_background(&mut self) -> bool {
        let mut changed = false;
        while let Ok(event) = self.rx.try_recv() {
            self.apply(event);
            changed = true;
        }
        changed
    }

    /// Blocks until background work is done (tests and scripted runs).
    pub fn wait_background(&mut self) {
        while matches!(self.verification, Verification::Running)
            || self.decoding.is_some()
            || self.osd.busy()
            || self.bench.busy()
        {
            match self.rx.recv() {
                Ok(event) => self.apply(event),
                Err(_) => break,
            }
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Verified { checks, tail_clean } => {
                let damaged = checks.iter().filter(|c| !c.ok()).count();
                self.message = if damaged == 0 && tail_clean {
                    format!("verified: all {} sections intact", checks.len())
                } else {
                    format!("verification: {damaged} damaged section(s)")
                };
                self.verification = Verification::Done { checks, tail_clean };
            }
            Event::OsdReady(result) => self.osd.ready(result),
            Event::BenchProgress(p) => self.bench.progress = Some(p),
            Event::BenchDone(result) => {
                self.bench.running = false;
                match result {
                    Ok(report) => {
                        self.bench.report = Some(report);
                        self.bench.error = None;
                    }
                    Err(e) => self.bench.error = Some(e),
                }
            }
            Event::SwapStep(step) => self.bench.swap.push(step),
            Event::SwapDone(result) => {
                self.bench.swapping = false;
                self.bench.swap_error = result.err();
            }
            Event::OsdTuned(points) => self.osd.tuned(points),
            Event::OsdSaved(result) => {
                self.osd.saving = false;
                self.message = match result {
                    Ok(text) => text,
                    Err(e) => format!("save failed: {e}"),
                };
            }
            Event::Decoded { index, result } => {
                self.decoded.insert(index, result);
                if self.decoding == Some(index) {
                    self.decoding = None;
                }
            }
        }
    }

    /// Decodes the selected section in the background, once.
    pub fn request_decode(&mut self) {
        let index = self.selected;
        if self.rows.is_empty() || self.decoded.contains_key(&index) || self.decoding == Some(index)
        {
            return;
        }
        self.decoding = Some(index);
        let doc = self.doc.clone();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let result = doc.decode(index);
            let _ = tx.send(Event::Decoded { index, result });
        });
    }

    pub fn region_at_cursor(&self) -> Option<&Region> {
        region_at(&self.regions, self.hex.cursor)
    }

    /// Moves the hex cursor, keeping it inside the file and on screen.
    pub fn goto(&mut self, offset: u64) {
        let last = self.doc.len().saturating_sub(1);
        self.hex.cursor = offset.min(last);
        let row = self.hex.cursor / BYTES_PER_ROW;
        let visible = self.hex.visible_rows.max(1);
        if row < self.hex.top_row {
            self.hex.top_row = row;
        } else if row >= self.hex.top_row + visible {
            self.hex.top_row = row + 1 - visible;
        }
    }

    fn move_cursor(&mut self, delta: i64) {
        let target = if delta < 0 {
            self.hex.cursor.saturating_sub(delta.unsigned_abs())
        } else {
            self.hex.cursor.saturating_add(delta as u64)
        };
        self.goto(target);
    }

    pub fn select(&mut self, index: usize) {
        if self.rows.is_empty() {
            return;
        }
        self.selected = index.min(self.rows.len() - 1);
        self.decoder_scroll = 0;
        if let Some(offset) = self.rows[self.selected].offset {
            if self.panel == PanelId::Hex {
                self.goto(offset);
            }
        }
        if self.panel == PanelId::Decoder {
            self.request_decode();
        }
    }

    fn switch(&mut self, panel: PanelId) {
        self.panel = panel;
        if panel == PanelId::Osd {
            self.start_osd_analysis();
        }
        // Arriving at the hex view, show the section picked elsewhere.
        if let (PanelId::Hex, Some(row)) = (panel, self.rows.get(self.selected)) {
            if let Some(offset) = row.offset {
                let inside = (offset..offset + row.stored_len.max(1)).contains(&self.hex.cursor);
                // Section 0 is left alone so the header shows first.
                if !inside && self.selected != 0 {
                    self.goto(offset);
                }
            }
        }
        if panel == PanelId::Decoder {
            self.request_decode();
        }
    }

    /// Handles one key press.
    pub fn on_key(&mut self, key: KeyEvent) {
        if self.prompt.is_some() {
            self.on_prompt_key(key);
            return;
        }
        if self.show_help {
            self.show_help = false;
            return;
        }
        let action = super::keys::action_for(self.panel, key);
        self.perform(action);
    }

    pub fn perform(&mut self, action: Action) {
        let page = self.hex.visible_rows.max(1) as i64 * BYTES_PER_ROW as i64;
        match action {
            Action::None => {}
            Action::Quit => self.quit = true,
            Action::Help => self.show_help = true,
            Action::NextPanel | Action::PrevPanel => {
                let i = PanelId::ALL
                    .iter()
                    .position(|p| *p == self.panel)
                    .unwrap_or(0);
                let n = PanelId::ALL.len();
                let next = if action == Action::NextPanel {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.switch(PanelId::ALL[next]);
            }
            Action::Panel(p) => self.switch(p),
            Action::Up => match self.panel {
                PanelId::Hex => self.move_cursor(-(BYTES_PER_ROW as i64)),
                PanelId::Bench => self.bench.scroll = self.bench.scroll.saturating_sub(1),
                PanelId::Osd => self.osd.move_target(-1),
                _ => self.select(self.selected.saturating_sub(1)),
            },
            Action::Down => match self.panel {
                PanelId::Hex => self.move_cursor(BYTES_PER_ROW as i64),
                PanelId::Bench => self.bench.scroll = self.bench.scroll.saturating_add(1),
                PanelId::Osd => self.osd.move_target(1),
                _ => self.select(self.selected + 1),
            },
            Action::Left => self.move_cursor(-1),
            Action::Right => self.move_cursor(1),
            Action::PageUp => match self.panel {
                PanelId::Hex => self.move_cursor(-page),
                PanelId::Bench => self.bench.scroll = self.bench.scroll.saturating_sub(10),
                _ => self.decoder_scroll = self.decoder_scroll.saturating_sub(10),
            },
            Action::PageDown => match self.panel {
                PanelId::Hex => self.move_cursor(page),
                PanelId::Bench => self.bench.scroll = self.bench.scroll.saturating_add(10),
                _ => self.decoder_scroll = self.decoder_scroll.saturating_add(10),
            },
            Action::Home => self.goto(0),
            Action::End => self.goto(u64::MAX),
            Action::PrevSection => {
                self.select(self.selected.saturating_sub(1));
            }
            Action::NextSection => self.select(self.selected + 1),
            Action::StartJump => {
                self.prompt = Some(Prompt {
                    kind: PromptKind::Jump,
                    text: String::new(),
                })
            }
            Action::StartSearch => {
                self.prompt = Some(Prompt {
                    kind: PromptKind::Search,
                    text: String::new(),
                })
            }
            Action::SearchNext => self.search(true),
            Action::SearchPrev => self.search(false),
            Action::ToggleEndian => self.hex.little_endian = !self.hex.little_endian,
            Action::Verify => self.start_verification(),
            Action::RankDown => self
                .osd
                .adjust(|p| p.rank = p.rank.saturating_sub(1).max(1)),
            Action::RankUp => self.osd.adjust(|p| p.rank += 1),
            Action::SparsityDown => self
                .osd
                .adjust(|p| p.sparsity = (p.sparsity - 0.05).max(0.0)),
            Action::SparsityUp => self
                .osd
                .adjust(|p| p.sparsity = (p.sparsity + 0.05).min(0.95)),
            Action::AlphaDown => self.osd.adjust(|p| p.alpha = (p.alpha - 0.1).max(0.0)),
            Action::AlphaUp => self.osd.adjust(|p| p.alpha = (p.alpha + 0.1).min(1.0)),
            Action::ToggleMethod => self.osd.adjust(|p| {
                p.method = match p.method {
                    crate::osd::analysis::Method::Osd => crate::osd::analysis::Method::Blend,
                    crate::osd::analysis::Method::Blend => crate::osd::analysis::Method::Osd,
                };
                if p.method == crate::osd::analysis::Method::Blend {
                    p.sparsity = p.sparsity.min(0.2);
                }
            }),
            Action::RunTune => self.start_osd_tune(),
            Action::RunBench => self.start_bench(),
            Action::SaveOsd => self.start_osd_save(),
            Action::ExportPlot => self.message = self.osd.export_plot(&self.osd_stem()),
            Action::BenchView => self.bench.next_view(),
            Action::BenchDevice => self.message = self.bench.next_device(),
            Action::HotSwap => self.start_hot_swap(),
            Action::ExportBenchJson => self.message = self.bench.export_json(&self.osd_stem()),
            Action::ExportBenchSvg => {
                self.message = self.bench.export_plot(&self.osd_stem(), "svg")
            }
            Action::ExportBenchPng => {
                self.message = self.bench.export_plot(&self.osd_stem(), "png")
            }
        }
    }

    fn on_prompt_key(&mut self, key: KeyEvent) {
        let Some(prompt) = self.prompt.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Esc => self.prompt = None,
            KeyCode::Backspace => {
                prompt.text.pop();
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                prompt.text.push(c)
            }
            KeyCode::Enter => {
                let Some(prompt) = self.prompt.take() else {
                    return;
                };
                match prompt.kind {
                    PromptKind::Jump => match parse_jump(&prompt.text, self.hex.cursor) {
                        Some(offset) if offset < self.doc.len() => {
                            self.goto(offset);
                            self.message = format!("at {offset:#x} ({offset})");
                        }
                        Some(offset) => {
                            self.message =
                                format!("{offset:#x} is past the end ({} bytes)", self.doc.len())
                        }
                        None => {
                            self.message = format!(
                                "not an offset: {:?} (use 0x1f0, 496, +16, -0x10)",
                                prompt.text
                            )
                        }
                    },
                    PromptKind::Search => match parse_pattern(&prompt.text) {
                        Some(pattern) => {
                            self.hex.search = Some(pattern);
                            self.search(true);
                        }
                        None => self.message = format!("bad search pattern {:?}", prompt.text),
                    },
                }
            }
            _ => {}
        }
    }

    /// Finds the next (or previous) match of the search pattern, wrapping.
    fn search(&mut self, forward: bool) {
        let Some(pattern) = self.hex.search.clone() else {
            self.message = "no search yet: press / first".into();
            return;
        };
        let bytes: &[u8] = &self.doc.bytes;
        let from = self.hex.cursor as usize;
        let found = if forward {
            find(bytes.get(from + 1..).unwrap_or(&[]), &pattern)
                .map(|i| from + 1 + i)
                .or_else(|| find(bytes, &pattern))
        } else {
            rfind(bytes.get(..from).unwrap_or(&[]), &pattern).or_else(|| rfind(bytes, &pattern))
        };
        match found {
            Some(at) => {
                self.goto(at as u64);
                self.message = format!("match at {at:#x}");
            }
            None => self.message = "not found".into(),
        }
    }

    /// Mouse: wheel scrolls the hex view, a click on a list row selects it.
    pub fn on_mouse(&mut self, event: MouseEvent, list_top: u16) {
        if self.panel == PanelId::Osd {
            if let MouseEventKind::Down(_) = event.kind {
                self.osd
                    .click_slider(event.column, event.row.saturating_sub(list_top));
                return;
            }
        }
        match event.kind {
            MouseEventKind::ScrollDown => self.perform(Action::Down),
            MouseEventKind::ScrollUp => self.perform(Action::Up),
            MouseEventKind::Down(_)
                if event.column < super::render::LIST_WIDTH && event.row > list_top =>
            {
                let index = self.list_first + usize::from(event.row - list_top - 1);
                if index < self.rows.len() {
                    self.select(index);
                    if let Some(offset) = self.rows[index].offset {
                        self.goto(offset);
                    }
                }
            }
            _ => {}
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Parses `0x1f0`, `496`, `+16`, `-0x10` relative to `cursor`.
pub fn parse_jump(text: &str, cursor: u64) -> Option<u64> {
    let text = text.trim();
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    };
    if let Some(rest) = text.strip_prefix('+') {
        cursor.checked_add(number(rest)?)
    } else if let Some(rest) = text.strip_prefix('-') {
        cursor.checked_sub(number(rest)?)
    } else {
        number(text)
    }
}

/// Text, or hex bytes after a `#` (`#89 45 58 50`).
pub fn parse_pattern(text: &str) -> Option<Vec<u8>> {
    match text.strip_prefix('#') {
        Some(hex_text) => {
            let digits: String = hex_text.chars().filter(|c| !c.is_whitespace()).collect();
            hex::decode(digits).ok().filter(|b| !b.is_empty())
        }
        None => (!text.is_empty()).then(|| text.as_bytes().to_vec()),
    }
}

/// The file a benchmark worker measures; for the embedded demo, a temp copy
/// removed when the worker drops it.
struct BenchInput {
    path: std::path::PathBuf,
    _temp: Option<tempfile::TempPath>,
}

/// The validation report's findings for an opened document (the library
/// decides; the UI only shows them).
fn findings_of(
    doc: &Inspected,
    policy: Option<&crate::format::signing::Policy>,
) -> Vec<crate::diagnostics::Finding> {
    use crate::format::inspect::Opened;
    use crate::validation::{validate_path, validate_reader, ValidateOptions};
    let options = ValidateOptions {
        policy,
        ..ValidateOptions::default()
    };
    let report = match &doc.opened {
        Opened::Binary(reader) => validate_reader(reader, doc.label.clone(), &options).ok(),
        Opened::Legacy(_) => {
            let path = std::path::Path::new(&doc.label);
            path.is_file()
                .then(|| validate_path(path, &options).ok())
                .flatten()
        }
        Opened::Broken(_) => None,
    };
    report.map(|r| r.findings).unwrap_or_default()
}

/// The signature's verdict under the TUI's trust policy.
#[derive(Debug, Clone)]
pub struct TrustView {
    /// Whether the policy admits the file.
    pub passes: bool,
    /// One line: state, signer, why.
    pub summary: String,
}

impl TrustView {
    fn of(doc: &Inspected, policy: &crate::format::signing::Policy) -> Self {
        use crate::format::inspect::Opened;
        match &doc.opened {
            Opened::Binary(reader) => {
                let report = crate::format::signing::check(reader, policy);
                Self {
                    passes: !policy.fails(&report),
                    summary: report.summary(),
                }
            }
            _ => Self {
                passes: !policy.requires_signature(),
                summary: "unsigned (this file cannot carry a signature)".into(),
            },
        }
    }
}
