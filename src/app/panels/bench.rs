//! Load/fuse benchmark panel: runs `gpu::bench` on a worker thread (progress
//! through events) and shows every figure beside its anchor, as bars on a
//! log scale (1 = the anchor) or as the table the headless `bench` verb
//! prints; a device picker; the hot-swap demo of `gpu::bench` (memory per
//! loaded expert, step by step); JSON and plot export of the last report.

use std::path::{Path, PathBuf};

use crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph};
use ratatui::Frame;

use crate::app::context::Context;
use crate::app::keys::{plain, Binding, HelpGroup, Nav};
use crate::app::panel::Panel;
use crate::app::theme::Theme;
use crate::gpu::bench::{BenchProgress, BenchReport, SwapStep};
use crate::gpu::manager::{ExpertMemory, ManagerConfig};

/// What the figures area shows (`t` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BenchView {
    /// Each figure's speed relative to each anchor, as bars.
    #[default]
    Bars,
    /// The text table of the headless verb.
    Table,
    /// The hot-swap demo's steps and memory per expert.
    HotSwap,
}

/// The panel's state.
pub struct BenchPanel {
    pub running: bool,
    /// Stops the running benchmark between figure families (Esc).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    pub progress: Option<BenchProgress>,
    pub report: Option<BenchReport>,
    pub error: Option<String>,
    pub scroll: u16,
    pub view: BenchView,
    /// Device of the next benchmark run and hot-swap demo.
    pub device: String,
    /// Devices the picker cycles through (asked for on first use).
    pub devices: Vec<String>,
    pub swapping: bool,
    pub swap: Vec<SwapStep>,
    pub swap_error: Option<String>,
    /// Capacity of the demo's manager.
    pub swap_capacity: usize,
}

impl Default for BenchPanel {
    fn default() -> Self {
        Self {
            running: false,
            cancel: None,
            progress: None,
            report: None,
            error: None,
            scroll: 0,
            view: BenchView::default(),
            device: "cpu".into(),
            devices: Vec::new(),
            swapping: false,
            swap: Vec::new(),
            swap_error: None,
            swap_capacity: ManagerConfig::default().capacity,
        }
    }
}

impl BenchPanel {
    /// Bars → table → hot-swap (once there is one) → bars.
    pub fn next_view(&mut self) {
        let has_swap = !self.swap.is_empty() || self.swapping || self.swap_error.is_some();
        self.view = match self.view {
            BenchView::Bars => BenchView::Table,
            BenchView::Table if has_swap => BenchView::HotSwap,
            _ => BenchView::Bars,
        };
        self.scroll = 0;
    }

    /// Picks the next device of `available_devices()`; returns the message.
    pub fn next_device(&mut self) -> String {
        if self.devices.is_empty() {
            self.devices = crate::gpu::device::available_devices();
        }
        let i = self
            .devices
            .iter()
            .position(|d| *d == self.device)
            .map_or(0, |i| (i + 1) % self.devices.len().max(1));
        if let Some(d) = self.devices.get(i) {
            self.device = d.clone();
        }
        if self.devices.len() <= 1 {
            format!(
                "device: {} (the only one here; CUDA needs a `--features cuda` build and a driver)",
                self.device
            )
        } else {
            format!(
                "device: {} of {} (used by the next run)",
                self.device,
                self.devices.join(", ")
            )
        }
    }

    /// Writes the last report as pretty JSON to `STEM.bench.json`.
    pub fn export_json(&self, stem: &Path) -> String {
        let Some(report) = &self.report else {
            return "nothing to export yet: r runs the benchmark".into();
        };
        let path = with_suffix(stem, ".bench.json");
        let mut json = match serde_json::to_vec_pretty(report) {
            Ok(json) => json,
            Err(e) => return format!("export failed: {e}"),
        };
        json.push(b'\n');
        match crate::format::atomic::write_atomic(&path, &json) {
            Ok(()) => format!("saved {}", path.display()),
            Err(e) => format!("export failed: {e}"),
        }
    }

    /// Writes the bars of the last report to `STEM.bench.EXT` (`svg` or `png`).
    pub fn export_plot(&self, stem: &Path, ext: &str) -> String {
        let Some(report) = &self.report else {
            return "nothing to plot yet: r runs the benchmark".into();
        };
        let path = with_suffix(stem, &format!(".bench.{ext}"));
        match crate::plot::write_bars(&report.bars(), &path) {
            Ok(()) => format!("saved {}", path.display()),
            Err(e) => format!("plot failed: {e}"),
        }
    }
}

/// What the benchmark keys do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchAction {
    Run,
    Cancel,
    NextView,
    NextDevice,
    HotSwap,
    ExportJson,
    ExportSvg,
    ExportPng,
}

/// What the benchmark and hot-swap workers send back.
pub enum BenchMessage {
    Progress(BenchProgress),
    Done(Result<BenchReport, String>),
    SwapStep(SwapStep),
    SwapDone(Result<(), String>),
}

impl Panel for BenchPanel {
    const TITLE: &'static str = "Bench";
    const NAME: &'static str = "bench";
    type Action = BenchAction;
    type Message = BenchMessage;
    // `j` exports here, so ↓ (not `j`) scrolls this panel.
    const BINDINGS: &'static [Binding<BenchAction>] = &[
        Binding {
            keys: "r",
            help: "run the benchmark",
            group: HelpGroup::Controls,
            action: BenchAction::Run,
            matches: |k| plain(k, KeyCode::Char('r')),
        },
        Binding {
            keys: "t",
            help: "view: bars, table, hot-swap",
            group: HelpGroup::Controls,
            action: BenchAction::NextView,
            matches: |k| plain(k, KeyCode::Char('t')),
        },
        Binding {
            keys: "d",
            help: "device of the next run (cpu, cuda:N)",
            group: HelpGroup::Controls,
            action: BenchAction::NextDevice,
            matches: |k| plain(k, KeyCode::Char('d')),
        },
        Binding {
            keys: "Esc",
            help: "cancel the running benchmark",
            group: HelpGroup::Controls,
            action: BenchAction::Cancel,
            matches: |k| k.code == KeyCode::Esc,
        },
        Binding {
            keys: "w",
            help: "hot-swap demo",
            group: HelpGroup::Controls,
            action: BenchAction::HotSwap,
            matches: |k| plain(k, KeyCode::Char('w')),
        },
        Binding {
            keys: "x",
            help: "export JSON",
            group: HelpGroup::Controls,
            action: BenchAction::ExportJson,
            matches: |k| plain(k, KeyCode::Char('x')),
        },
        Binding {
            keys: "p P",
            help: "export plot SVG/PNG",
            group: HelpGroup::Controls,
            action: BenchAction::ExportSvg,
            matches: |k| plain(k, KeyCode::Char('p')),
        },
        Binding {
            keys: "",
            help: "",
            group: HelpGroup::Controls,
            action: BenchAction::ExportPng,
            matches: |k| plain(k, KeyCode::Char('P')),
        },
    ];

    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context) {
        draw(frame, area, self, ctx.theme);
    }

    fn on_action(&mut self, action: BenchAction, ctx: &mut Context) {
        match action {
            BenchAction::Run => self.start_bench(ctx),
            BenchAction::Cancel => {
                if let (true, Some(cancel)) = (self.running, &self.cancel) {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    *ctx.message = "cancelling after the current figure…".into();
                }
            }
            BenchAction::NextView => self.next_view(),
            BenchAction::NextDevice => *ctx.message = self.next_device(),
            BenchAction::HotSwap => self.start_hot_swap(ctx),
            BenchAction::ExportJson => *ctx.message = self.export_json(&ctx.output_stem()),
            BenchAction::ExportSvg => *ctx.message = self.export_plot(&ctx.output_stem(), "svg"),
            BenchAction::ExportPng => *ctx.message = self.export_plot(&ctx.output_stem(), "png"),
        }
    }

    fn on_message(&mut self, message: BenchMessage, _ctx: &mut Context) {
        match message {
            BenchMessage::Progress(p) => self.progress = Some(p),
            BenchMessage::Done(result) => {
                self.running = false;
                match result {
                    Ok(report) => {
                        self.report = Some(report);
                        self.error = None;
                    }
                    Err(e) => self.error = Some(e),
                }
            }
            BenchMessage::SwapStep(step) => self.swap.push(step),
            BenchMessage::SwapDone(result) => {
                self.swapping = false;
                self.swap_error = result.err();
            }
        }
    }

    /// Every movement key scrolls the figures.
    fn on_nav(&mut self, nav: Nav, _ctx: &mut Context) -> bool {
        self.scroll = match nav {
            Nav::Up => self.scroll.saturating_sub(1),
            Nav::Down => self.scroll.saturating_add(1),
            Nav::PageUp => self.scroll.saturating_sub(10),
            Nav::PageDown => self.scroll.saturating_add(10),
        };
        true
    }

    fn busy(&self) -> bool {
        self.running || self.swapping
    }
}

/// The jobs: the benchmark and the hot-swap demo, one at a time.
impl BenchPanel {
    /// Runs the benchmark on a worker thread, on the picked device.
    fn start_bench(&mut self, ctx: &mut Context) {
        if self.busy() {
            return;
        }
        let Some(input) = BenchInput::of(ctx) else {
            return;
        };
        self.running = true;
        self.progress = None;
        if self.view == BenchView::HotSwap {
            self.view = BenchView::Bars;
        }
        let device = self.device.clone();
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.cancel = Some(cancel.clone());
        ctx.jobs.spawn(move |reply| {
            let input = input; // the whole struct: its temp file lives as long as the run
            let config = crate::gpu::bench::BenchConfig {
                file: input.path.clone(),
                base: Vec::new(),
                device,
                repeat: 5,
                cancel: Some(cancel),
            };
            let result = crate::gpu::bench::run_bench(&config, &mut |p| {
                reply.send(BenchMessage::Progress(p.clone()));
            })
            .map_err(|e| e.to_string());
            reply.send(BenchMessage::Done(result));
        });
    }

    /// Runs the hot-swap demo on a worker thread, step by step.
    fn start_hot_swap(&mut self, ctx: &mut Context) {
        if self.busy() {
            return;
        }
        let Some(input) = BenchInput::of(ctx) else {
            return;
        };
        self.swapping = true;
        self.swap.clear();
        self.swap_error = None;
        self.view = BenchView::HotSwap;
        self.scroll = 0;
        let device = self.device.clone();
        ctx.jobs.spawn(move |reply| {
            let input = input; // the whole struct: its temp file lives as long as the run
            let result = crate::gpu::bench::hot_swap(&input.path, &device, &mut |step| {
                reply.send(BenchMessage::SwapStep(step));
            });
            reply.send(BenchMessage::SwapDone(result.map_err(|e| e.to_string())));
        });
    }
}

/// The file a benchmark worker measures; for the embedded demo, a temp copy
/// removed when the worker drops it.
struct BenchInput {
    path: PathBuf,
    _temp: Option<tempfile::TempPath>,
}

impl BenchInput {
    /// The open file, or the embedded demo written to a temporary file (the
    /// benchmark loads from disk); `None` with the message set when that fails.
    fn of(ctx: &mut Context) -> Option<Self> {
        if let Some(p) = ctx.doc.reader().and_then(|r| r.path()) {
            return Some(Self {
                path: p.to_path_buf(),
                _temp: None,
            });
        }
        let written = tempfile::Builder::new()
            .prefix("expertui-bench-")
            .suffix(".expert")
            .tempfile()
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &ctx.doc.bytes[..])?;
                Ok(f.into_temp_path())
            });
        match written {
            Ok(temp) => Some(Self {
                path: temp.to_path_buf(),
                _temp: Some(temp),
            }),
            Err(e) => {
                *ctx.message = format!("cannot write the demo to a temp file: {e}");
                None
            }
        }
    }
}

/// `stem` + `suffix`, keeping any dots already in the stem.
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `1.5 KiB`, `12.0 MiB`.
pub fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `×0.44`, `×175`, `n/a`: a ratio as the table prints it.
pub fn ratio_text(r: f64) -> String {
    if r.is_finite() && r > 0.0 {
        format!("×{}", crate::gpu::bench::num(r))
    } else {
        "n/a".into()
    }
}

fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        format!("{text:<width$}")
    } else {
        let head: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{head}…")
    }
}

/// Bars of `report.relative()` on a log scale centred on the anchor (│):
/// better to the right (█, green), worse to the left (▒, red), the ratio in
/// text after each bar so they read without colour.
pub fn bar_lines(report: &BenchReport, width: usize, theme: Theme) -> Vec<Line<'static>> {
    let pairs = report.relative();
    let mut lines: Vec<Line> = report
        .table()
        .lines()
        .take(2)
        .map(|l| Line::raw(l.to_string()))
        .collect();
    let ratio_w = 8;
    let longest = pairs
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let label_w = longest.min(width * 9 / 20).max(8);
    let half = width.saturating_sub(label_w + ratio_w + 3) / 2;
    let decades = pairs
        .iter()
        .filter(|(_, r)| r.is_finite() && *r > 0.0)
        .map(|(_, r)| r.log10().abs())
        .fold(1.0f64, f64::max)
        .ceil();
    lines.push(Line::raw(""));
    lines.push(Line::from(Span::styled(
        "speed relative to each anchor, log scale: │ = the anchor (×1), right = better, left = worse",
        theme.dim(),
    )));
    // The axis: ×10^-d at the left end, 1 at the anchor, ×10^d at the right.
    let mut axis: Vec<char> = vec![' '; 2 * half + 1];
    let mut put = |at: usize, text: &str| {
        for (i, c) in text.chars().enumerate() {
            if let Some(cell) = axis.get_mut(at + i) {
                *cell = c;
            }
        }
    };
    let zeros = "0".repeat(decades as usize - 1);
    let low = format!("×0.{zeros}1");
    let high = format!("×10{zeros}");
    if half >= 8 {
        put(0, &low);
        put(half, "1");
        put((2 * half + 1).saturating_sub(high.chars().count()), &high);
    }
    lines.push(Line::from(Span::styled(
        format!(
            "{} {}",
            " ".repeat(label_w),
            axis.into_iter().collect::<String>()
        ),
        theme.dim(),
    )));
    for (label, ratio) in pairs {
        let finite = ratio.is_finite() && ratio > 0.0;
        let cells = if finite {
            ((ratio.log10().abs() / decades) * half as f64).round() as usize
        } else {
            0
        }
        .min(half);
        let better = finite && ratio >= 1.0;
        let style: Style = if !finite {
            theme.dim()
        } else if better {
            theme.ok()
        } else {
            theme.damaged()
        };
        let (left, right) = if better {
            (
                " ".repeat(half),
                format!("{}{}", "█".repeat(cells), " ".repeat(half - cells)),
            )
        } else {
            (
                format!("{}{}", " ".repeat(half - cells), "▒".repeat(cells)),
                " ".repeat(half),
            )
        };
        let (left_style, right_style) = if better {
            (Style::default(), style)
        } else {
            (style, Style::default())
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{} ", fit(&label, label_w))),
            Span::styled(left, left_style),
            Span::raw("│"),
            Span::styled(right, right_style),
            Span::styled(format!(" {}", ratio_text(ratio)), style),
        ]));
    }
    lines
}

/// The hot-swap demo's steps as lines: what each did, the experts loaded,
/// their memory together and per expert.
pub fn swap_lines(bench: &BenchPanel, theme: Theme) -> Vec<Line<'static>> {
    let device = bench
        .swap
        .iter()
        .find_map(|s| s.memory.first())
        .map_or(bench.device.as_str(), |m| m.device.as_str());
    let mut lines = vec![
        Line::from(Span::styled(
            format!(
                "the open file × {} in an ExpertManager on {device} (capacity {}, LRU), no base",
                bench.swap_capacity + 1,
                bench.swap_capacity
            ),
            theme.dim(),
        )),
        Line::from(Span::styled(
            format!(
                "{:>3}  {:<38} {:>6} {:>10} {:>14}",
                "#", "step", "loaded", "total", "per expert"
            ),
            theme.title(),
        )),
    ];
    for (i, step) in bench.swap.iter().enumerate() {
        let per: Vec<usize> = step.memory.iter().map(ExpertMemory::total).collect();
        let per_text = match per.first() {
            None => "-".to_string(),
            Some(first) if per.iter().all(|b| b == first) => {
                format!("{} each", human_bytes(*first))
            }
            Some(_) => per
                .iter()
                .map(|b| human_bytes(*b))
                .collect::<Vec<_>>()
                .join(", "),
        };
        lines.push(Line::raw(format!(
            "{:>3}  {} {:>6} {:>10} {:>14}",
            i,
            fit(&step.action, 38),
            format!("{}/{}", step.memory.len(), bench.swap_capacity),
            human_bytes(step.total()),
            per_text,
        )));
    }
    if let Some(e) = &bench.swap_error {
        lines.push(Line::from(Span::styled(
            format!("hot-swap failed: {e}"),
            theme.damaged(),
        )));
    }
    lines
}

/// Memory per expert at the step holding the most (the last of equals, so
/// after the eviction), least recently used first.
pub fn peak_lines(bench: &BenchPanel, theme: Theme) -> (String, Vec<Line<'static>>) {
    let Some((at, peak)) = bench
        .swap
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| (s.memory.len(), s.total()))
        .filter(|(_, s)| !s.memory.is_empty())
    else {
        return (" memory per expert ".into(), Vec::new());
    };
    let mut lines: Vec<Line> = peak
        .memory
        .iter()
        .map(|m| {
            let fused = if m.applied || m.fused_bytes > 0 {
                format!(" +{} fused", human_bytes(m.fused_bytes))
            } else {
                String::new()
            };
            Line::raw(format!(
                "{:<10} {:>10} {}{fused}",
                m.id,
                human_bytes(m.adapter_bytes),
                m.device
            ))
        })
        .collect();
    lines.push(Line::from(Span::styled(
        format!("{:<10} {:>10}", "total", human_bytes(peak.total())),
        theme.title(),
    )));
    (format!(" per expert, step {at} (LRU first) "), lines)
}

fn draw(frame: &mut Frame, area: Rect, bench: &BenchPanel, theme: Theme) {
    let [status, body] = Layout::vertical([Constraint::Length(3), Constraint::Min(3)]).areas(area);
    match (&bench.progress, bench.running) {
        (Some(p), true) => {
            let ratio = p.step as f64 / p.steps.max(1) as f64;
            frame.render_widget(
                Gauge::default()
                    .block(
                        Block::default()
                            .borders(Borders::ALL)
                            .title(format!(" running on {} ", bench.device)),
                    )
                    .gauge_style(theme.ok())
                    .ratio(ratio.clamp(0.0, 1.0))
                    .label(format!("[{}/{}] {}", p.step, p.steps, p.stage)),
                status,
            );
        }
        _ => {
            let text = match (&bench.error, &bench.report) {
                _ if bench.swapping => Span::raw(format!(
                    "hot-swap demo running on {}: step {}",
                    bench.device,
                    bench.swap.len()
                )),
                (Some(e), _) => Span::styled(format!("benchmark failed: {e}"), theme.damaged()),
                (None, Some(r)) => Span::raw(format!(
                    "done on {} ({} runs per figure): r runs again, t bars/table, j p export",
                    r.device, r.repeat
                )),
                (None, None) => Span::raw(
                    "r runs the load, validation, streaming, transfer, fuse and memory benchmark; w the hot-swap demo",
                ),
            };
            frame.render_widget(
                Paragraph::new(Line::from(text)).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(format!(" benchmark · device {} (d) ", bench.device)),
                ),
                status,
            );
        }
    }
    let inner = usize::from(body.width.saturating_sub(2));
    if bench.view == BenchView::HotSwap {
        let [steps, memory] =
            Layout::horizontal([Constraint::Min(40), Constraint::Length(40)]).areas(body);
        frame.render_widget(
            Paragraph::new(swap_lines(bench, theme))
                .scroll((bench.scroll, 0))
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" hot-swap (w runs, t view, PgUp/PgDn scroll) "),
                ),
            steps,
        );
        let (title, lines) = peak_lines(bench, theme);
        frame.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
            memory,
        );
        return;
    }
    let (title, lines): (&str, Vec<Line>) = match (bench.view, &bench.report) {
        (BenchView::Bars | BenchView::HotSwap, Some(report)) => (
            " figures: bars (t table, PgUp/PgDn scroll) ",
            bar_lines(report, inner, theme),
        ),
        (BenchView::Table, Some(report)) => (
            " figures: table (t view, PgUp/PgDn scroll) ",
            report.table().lines().map(|l| Line::raw(l.to_string())).collect(),
        ),
        (_, None) => (
            " figures (PgUp/PgDn scroll) ",
            vec![Line::from(Span::styled(
                "each figure is measured beside its anchor in the same run: the safetensors crate, the legacy tar.gz, SHA-256, memcpy",
                theme.dim(),
            ))],
        ),
    };
    frame.render_widget(
        Paragraph::new(lines)
            .scroll((bench.scroll, 0))
            .block(Block::default().borders(Borders::ALL).title(title)),
        body,
    );
}
