//! OSD tuning panel: pick the whole adapter or one module, move rank and
//! sparsity, and see the energy-retention curve, predicted error and size
//! follow from cached spectra; run the tune grid; save the compressed expert.
//! The numbers come from `osd`; this module only holds the panel's state and
//! draws it.

use std::path::Path;
use std::sync::Arc;

use crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use crate::app::context::Context;
use crate::app::keys::{plain, Binding, HelpGroup, Nav};
use crate::app::panel::Panel;
use crate::app::theme::Theme;
use crate::app::widgets::LIST_WIDTH;
use crate::format::inspect::{Inspected, Opened};
use crate::format::package::{ExpertContents, PackageOptions};
use crate::format::ExpertReader;
use crate::osd::analysis::{Estimate, Method, OsdParams};
use crate::osd::expert::{write_compressed, AdapterAnalysis};
pub use crate::osd::frontier::GridPoint;
use crate::osd::precision::ValueDtype;

mod charts;
use charts::{draw_curve, draw_frontier};

/// Cells of a slider bar.
const SLIDER_WIDTH: usize = 24;

/// The panel's state.
#[derive(Default)]
pub struct OsdPanel {
    pub analysis: Option<Arc<AdapterAnalysis>>,
    pub error: Option<String>,
    pub analyzing: bool,
    pub tuning: bool,
    pub saving: bool,
    /// 0 = the whole adapter, i = module i − 1.
    pub target: usize,
    pub params: OsdParams,
    pub estimate: Estimate,
    pub grid: Vec<GridPoint>,
    /// A save that would replace this file waits for a second `s`.
    pub confirm_overwrite: Option<std::path::PathBuf>,
    /// Number of the current analysis/tune job; Esc moves it on, so a
    /// cancelled job's late answer is dropped.
    pub job: u64,
}

impl OsdPanel {
    pub fn needs_analysis(&self) -> bool {
        self.analysis.is_none() && self.error.is_none() && !self.analyzing
    }

    pub fn ready(&mut self, result: Result<AdapterAnalysis, String>) {
        self.analyzing = false;
        match result {
            Ok(a) if a.modules.is_empty() => {
                self.error = Some(format!(
                    "no low-rank modules to compress ({} skipped: DoRA and IA³ deltas need the base weights; use `expertui --headless osd compress FILE --base W`)",
                    a.skipped.len()
                ))
            }
            Ok(a) => {
                self.analysis = Some(Arc::new(a));
                self.refresh();
            }
            Err(e) => self.error = Some(e),
        }
    }

    pub fn tuned(&mut self, points: Vec<GridPoint>) {
        self.tuning = false;
        self.grid = points;
    }

    /// Changes the parameters and re-evaluates from the caches.
    pub fn adjust(&mut self, change: impl FnOnce(&mut OsdParams)) {
        change(&mut self.params);
        if let Some(a) = &self.analysis {
            let max_rank = a.modules.iter().map(|m| m.svd.rank()).max().unwrap_or(1);
            self.params.rank = self.params.rank.clamp(1, max_rank);
        }
        self.refresh();
    }

    pub fn move_target(&mut self, delta: i64) {
        let count = self.analysis.as_ref().map_or(0, |a| a.modules.len());
        self.target = (self.target as i64 + delta).clamp(0, count as i64) as usize;
        self.refresh();
    }

    /// A click on a slider row (row within the panel body) sets its value
    /// from the column clicked.
    pub fn click_slider(&mut self, column: u16, row: u16) {
        let start = LIST_WIDTH + 1 + 10;
        let Some(offset) = column
            .checked_sub(start)
            .filter(|&c| c < SLIDER_WIDTH as u16)
        else {
            return;
        };
        let fraction = f64::from(offset + 1) / SLIDER_WIDTH as f64;
        let max_rank = self.analysis.as_ref().map_or(1, |a| {
            a.modules.iter().map(|m| m.svd.rank()).max().unwrap_or(1)
        });
        // Rows: border, method, dtype, rank, then a blend's sparsity.
        match row {
            3 => self.adjust(|p| p.rank = (fraction * max_rank as f64).round().max(1.0) as usize),
            // On the keys' 0.01 grid, as `-` and `+` step.
            4 if self.params.method.has_sparse_part() => {
                self.adjust(|p| p.sparsity = (fraction * 100.0).round() / 100.0)
            }
            _ => {}
        }
    }

    /// Recomputes the estimate of the current target (microseconds).
    pub fn refresh(&mut self) {
        let Some(a) = &self.analysis else { return };
        self.estimate = match self.target {
            0 => a.estimate(&self.params),
            i => a
                .modules
                .get(i - 1)
                .map_or_else(Estimate::default, |m| m.estimate(&self.params)),
        };
    }

    /// The energy curve shown: the whole adapter's or the module's.
    pub fn curve(&self) -> Vec<f64> {
        match (&self.analysis, self.target) {
            (Some(a), 0) => a.overall_energy(),
            (Some(a), i) => a
                .modules
                .get(i - 1)
                .map(|m| m.energy.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn original_bytes(&self) -> u64 {
        match (&self.analysis, self.target) {
            (Some(a), 0) => a.original_bytes(),
            (Some(a), i) => a.modules.get(i - 1).map_or(0, |m| m.delta.original_bytes()),
            _ => 0,
        }
    }

    /// Writes the curve shown as an SVG (the same numbers as the panel).
    pub fn export_plot(&self, stem: &Path) -> String {
        let curve = self.curve();
        if curve.is_empty() {
            return "nothing to plot yet".into();
        }
        let path = stem.with_extension("osd-energy.svg");
        let points = std::iter::once((0.0, 0.0))
            .chain(curve.iter().enumerate().map(|(i, e)| ((i + 1) as f64, *e)))
            .collect();
        let chart = crate::plot::Chart {
            title: "energy retained by rank".into(),
            x_label: "rank".into(),
            y_label: "share of ‖ΔW‖²".into(),
            series: vec![crate::plot::Series {
                name: "energy".into(),
                points,
            }],
        };
        match crate::plot::write_chart(&chart, &path) {
            Ok(()) => format!("plot written to {}", path.display()),
            Err(e) => format!("plot failed: {e}"),
        }
    }
}

/// Analyses the adapter of the open file (worker thread).
pub fn analyse(doc: &Inspected) -> Result<AdapterAnalysis, String> {
    let contents = match &doc.opened {
        Opened::Binary(reader) => ExpertContents::read_binary(reader).map_err(|e| e.to_string())?,
        _ => return Err("OSD works on binary experts: convert this file first".into()),
    };
    let adapter = contents
        .adapter
        .as_ref()
        .ok_or("the expert holds no adapter")?;
    AdapterAnalysis::from_adapter(adapter, None, crate::osd::expert::MAX_ANALYSED_RANK)
        .map_err(|e| e.to_string())
}

/// Methods the panel's tune grid and method key cycle through.
const PANEL_METHODS: [Method; 6] = Method::ALL;

/// The default tune grid (worker thread): the plain baselines and both
/// sparsified methods in every dtype, predicted, with the front measured.
pub fn tune_grid(analysis: &AdapterAnalysis, template: &OsdParams) -> Vec<GridPoint> {
    crate::osd::frontier::tune(
        analysis,
        &[
            Method::Lora,
            Method::Truncsvd,
            Method::Osd,
            Method::Magtrunc,
        ],
        &ValueDtype::ALL,
        &[1, 2, 4, 8],
        template,
        false,
    )
    .unwrap_or_default()
}

/// The headless command that writes the same file as the panel's save.
pub fn equivalent_command(p: &OsdParams, source: &str, out: &Path) -> String {
    let mut cmd = format!(
        "expertui --headless osd compress {source} -o {} --method {} --dtype {} --rank {}",
        out.display(),
        p.method,
        p.dtype,
        p.rank
    );
    if let (Some(c), true) = (p.relax, p.method.is_budgeted()) {
        cmd.push_str(&format!(" --relax {c}"));
    }
    if p.method.has_sparse_part() {
        cmd.push_str(&format!(" --sparsity {} --alpha {}", p.sparsity, p.alpha));
    }
    cmd
}

/// Writes the compressed expert and returns the message with the
/// equivalent headless command (worker thread).
pub fn save(
    reader: &ExpertReader,
    analysis: &AdapterAnalysis,
    p: &OsdParams,
    out: &Path,
    source: &str,
) -> Result<String, String> {
    let contents = ExpertContents::read_binary(reader).map_err(|e| e.to_string())?;
    let (_, report) = write_compressed(&contents, analysis, p, out, &PackageOptions::default())
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "saved {} ({} bytes, error {:.4}); same as: {}",
        out.display(),
        report.file_bytes,
        report.rel_error,
        equivalent_command(p, source, out)
    ))
}

/// `x + by`, on the 0.01 grid, within [0, 0.95].
fn step(x: f64, by: f64) -> f64 {
    ((x + by) * 100.0).round().clamp(0.0, 95.0) / 100.0
}

/// A text slider: `name [=====|-----] value`.
fn slider(name: &str, value: f64, max: f64, label: String, width: usize) -> String {
    let filled = ((value / max.max(f64::MIN_POSITIVE)) * width as f64)
        .round()
        .clamp(0.0, width as f64) as usize;
    format!(
        "{name:<9}[{}{}] {label}",
        "█".repeat(filled),
        "·".repeat(width - filled)
    )
}

/// What the OSD keys do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsdAction {
    RankDown,
    RankUp,
    SparsityDown,
    SparsityUp,
    ToggleMethod,
    ToggleDtype,
    CycleRelax,
    AlphaDown,
    AlphaUp,
    RunTune,
    Save,
    ExportPlot,
    Cancel,
}

/// What the OSD jobs send back.
pub enum OsdMessage {
    /// The analysis of job `.0` (ignored if that job was cancelled).
    Analysed(u64, Result<AdapterAnalysis, String>),
    /// The tune grid of job `.0` (ignored if that job was cancelled).
    Tuned(u64, Vec<GridPoint>),
    Saved(Result<String, String>),
}

impl Panel for OsdPanel {
    const TITLE: &'static str = "OSD";
    const NAME: &'static str = "OSD";
    type Action = OsdAction;
    type Message = OsdMessage;
    const BINDINGS: &'static [Binding<OsdAction>] = &[
        Binding {
            keys: "←→ / h l",
            help: "rank −/+",
            group: HelpGroup::Controls,
            action: OsdAction::RankDown,
            matches: |k| k.code == KeyCode::Left || plain(k, KeyCode::Char('h')),
        },
        Binding {
            keys: "",
            help: "",
            group: HelpGroup::Controls,
            action: OsdAction::RankUp,
            matches: |k| k.code == KeyCode::Right || plain(k, KeyCode::Char('l')),
        },
        Binding {
            keys: "- +",
            help: "blends: sparsity −/+ 0.01",
            group: HelpGroup::Controls,
            action: OsdAction::SparsityDown,
            matches: |k| plain(k, KeyCode::Char('-')),
        },
        Binding {
            keys: "",
            help: "",
            group: HelpGroup::Controls,
            action: OsdAction::SparsityUp,
            matches: |k| plain(k, KeyCode::Char('+')) || plain(k, KeyCode::Char('=')),
        },
        Binding {
            keys: "m",
            help: "method: lora, truncsvd, osd, magtrunc, blends",
            group: HelpGroup::Controls,
            action: OsdAction::ToggleMethod,
            matches: |k| plain(k, KeyCode::Char('m')),
        },
        Binding {
            keys: "d",
            help: "dtype f32/bf16/f16",
            group: HelpGroup::Controls,
            action: OsdAction::ToggleDtype,
            matches: |k| plain(k, KeyCode::Char('d')),
        },
        Binding {
            keys: "c",
            help: "relaxation c: auto, 0, 1, 2, 4, 8",
            group: HelpGroup::Controls,
            action: OsdAction::CycleRelax,
            matches: |k| plain(k, KeyCode::Char('c')),
        },
        Binding {
            keys: "a A",
            help: "blends: α −/+",
            group: HelpGroup::Controls,
            action: OsdAction::AlphaDown,
            matches: |k| plain(k, KeyCode::Char('a')),
        },
        Binding {
            keys: "",
            help: "",
            group: HelpGroup::Controls,
            action: OsdAction::AlphaUp,
            matches: |k| plain(k, KeyCode::Char('A')),
        },
        Binding {
            keys: "t",
            help: "tune grid",
            group: HelpGroup::Controls,
            action: OsdAction::RunTune,
            matches: |k| plain(k, KeyCode::Char('t')),
        },
        Binding {
            keys: "Esc",
            help: "cancel the analysis or the tune grid",
            group: HelpGroup::Controls,
            action: OsdAction::Cancel,
            matches: |k| k.code == KeyCode::Esc,
        },
        Binding {
            keys: "s",
            help: "save as .osd.expert",
            group: HelpGroup::Controls,
            action: OsdAction::Save,
            matches: |k| plain(k, KeyCode::Char('s')),
        },
        Binding {
            keys: "p",
            help: "export plot (SVG)",
            group: HelpGroup::Controls,
            action: OsdAction::ExportPlot,
            matches: |k| plain(k, KeyCode::Char('p')),
        },
    ];

    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context) {
        let theme = ctx.theme;
        let Some(analysis) = &self.analysis else {
            frame.render_widget(self.placeholder(theme), area);
            return;
        };
        let [list, right] =
            Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(20)]).areas(area);
        frame.render_widget(self.targets(analysis, list.height, theme), list);
        let [controls, chart_area, grid_area] = Layout::vertical([
            Constraint::Length(9),
            Constraint::Min(6),
            Constraint::Length(if self.grid.is_empty() { 3 } else { 15 }),
        ])
        .areas(right);
        frame.render_widget(self.controls(analysis, theme), controls);
        if self.grid.is_empty() {
            draw_curve(frame, chart_area, &self.curve(), self.params.rank, theme);
        } else {
            let [curve, frontier] =
                Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)])
                    .areas(chart_area);
            draw_curve(frame, curve, &self.curve(), self.params.rank, theme);
            draw_frontier(frame, frontier, &self.grid, theme);
        }
        frame.render_widget(self.grid_table(theme), grid_area);
    }

    fn on_action(&mut self, action: OsdAction, ctx: &mut Context) {
        match action {
            OsdAction::RankDown => self.adjust(|p| p.rank = p.rank.saturating_sub(1).max(1)),
            OsdAction::RankUp => self.adjust(|p| p.rank += 1),
            OsdAction::SparsityDown => self.adjust(|p| p.sparsity = step(p.sparsity, -0.01)),
            OsdAction::SparsityUp => self.adjust(|p| p.sparsity = step(p.sparsity, 0.01)),
            OsdAction::AlphaDown => self.adjust(|p| p.alpha = (p.alpha - 0.1).max(0.0)),
            OsdAction::AlphaUp => self.adjust(|p| p.alpha = (p.alpha + 0.1).min(1.0)),
            OsdAction::ToggleMethod => self.adjust(|p| {
                let at = PANEL_METHODS
                    .iter()
                    .position(|m| *m == p.method)
                    .unwrap_or(0);
                p.method = PANEL_METHODS[(at + 1) % PANEL_METHODS.len()];
            }),
            OsdAction::ToggleDtype => self.adjust(|p| {
                let at = ValueDtype::ALL
                    .iter()
                    .position(|d| *d == p.dtype)
                    .unwrap_or(0);
                p.dtype = ValueDtype::ALL[(at + 1) % ValueDtype::ALL.len()];
            }),
            OsdAction::CycleRelax => self.adjust(|p| {
                p.relax = match p.relax {
                    None => Some(0),
                    Some(c) if c >= 8 => None,
                    Some(0) => Some(1),
                    Some(c) => Some(c * 2),
                }
            }),
            OsdAction::RunTune => self.start_tune(ctx),
            OsdAction::Save => self.start_save(ctx),
            OsdAction::ExportPlot => *ctx.message = self.export_plot(&ctx.output_stem()),
            OsdAction::Cancel => {
                if self.analyzing || self.tuning {
                    // The worker finishes in the background; its answer is
                    // dropped (the job number moved on).
                    self.job += 1;
                    let what = if self.analyzing {
                        "analysis"
                    } else {
                        "tune grid"
                    };
                    self.analyzing = false;
                    self.tuning = false;
                    *ctx.message = format!("{what} cancelled (5 analyses again, t tunes again)");
                }
            }
        }
    }

    fn on_message(&mut self, message: OsdMessage, ctx: &mut Context) {
        match message {
            OsdMessage::Analysed(job, result) if job == self.job => self.ready(result),
            OsdMessage::Tuned(job, points) if job == self.job => self.tuned(points),
            OsdMessage::Analysed(..) | OsdMessage::Tuned(..) => {}
            OsdMessage::Saved(result) => {
                self.saving = false;
                *ctx.message = match result {
                    Ok(text) => text,
                    Err(e) => format!("save failed: {e}"),
                };
            }
        }
    }

    /// ↑↓ pick the target; the page keys do nothing here.
    fn on_nav(&mut self, nav: Nav, _ctx: &mut Context) -> bool {
        match nav {
            Nav::Up => self.move_target(-1),
            Nav::Down => self.move_target(1),
            Nav::PageUp | Nav::PageDown => {}
        }
        true
    }

    fn on_enter(&mut self, ctx: &mut Context) {
        self.start_analysis(ctx);
    }

    /// Every click is the sliders' (the list on the left is the targets).
    fn on_click(&mut self, column: u16, row: u16, _ctx: &mut Context) -> bool {
        self.click_slider(column, row);
        true
    }

    fn busy(&self) -> bool {
        self.analyzing || self.tuning || self.saving
    }
}

/// The jobs: analysis on arrival, the tune grid, saving.
impl OsdPanel {
    /// Analyses the adapter on a worker thread, once.
    fn start_analysis(&mut self, ctx: &mut Context) {
        if !self.needs_analysis() {
            return;
        }
        self.analyzing = true;
        self.error = None;
        let (doc, job) = (ctx.doc.clone(), self.job);
        ctx.jobs
            .spawn(move |reply| reply.send(OsdMessage::Analysed(job, analyse(&doc))));
    }

    fn start_tune(&mut self, ctx: &mut Context) {
        let Some(analysis) = self.analysis.clone() else {
            return;
        };
        self.tuning = true;
        let (template, job) = (self.params, self.job);
        ctx.jobs.spawn(move |reply| {
            reply.send(OsdMessage::Tuned(job, tune_grid(&analysis, &template)));
        });
    }

    fn start_save(&mut self, ctx: &mut Context) {
        let Some(analysis) = self.analysis.clone() else {
            return;
        };
        let Some(reader) = ctx.doc.reader().cloned() else {
            *ctx.message = "save needs a binary expert".into();
            return;
        };
        let params = self.params;
        let out = ctx.output_stem().with_extension("osd.expert");
        // Never replace an earlier save silently: the second `s` does.
        if out.exists() && self.confirm_overwrite.as_deref() != Some(out.as_path()) {
            *ctx.message = format!("{} exists: press s again to replace it", out.display());
            self.confirm_overwrite = Some(out);
            return;
        }
        self.confirm_overwrite = None;
        self.saving = true;
        // The embedded demo has no file: the command names the demo verb.
        let source = reader
            .path()
            .map_or("<the embedded demo, which has no file>".into(), |p| {
                p.display().to_string()
            });
        ctx.jobs.spawn(move |reply| {
            let saved = save(&reader, &analysis, &params, &out, &source);
            reply.send(OsdMessage::Saved(saved));
        });
    }
}

/// The drawing, piece by piece.
impl OsdPanel {
    /// Before the analysis: its progress, or why there is none.
    fn placeholder(&self, theme: Theme) -> Paragraph<'static> {
        let text = match (&self.error, self.analyzing) {
            (Some(e), _) => Span::styled(e.clone(), theme.damaged()),
            (None, true) => Span::raw("analysing every module (SVD, importance)…"),
            (None, false) => Span::raw("press 5 to analyse"),
        };
        Paragraph::new(Line::from(text))
            .block(Block::default().borders(Borders::ALL).title(" OSD "))
    }

    /// The targets: the whole adapter, then each module.
    fn targets(&self, analysis: &AdapterAnalysis, height: u16, theme: Theme) -> Paragraph<'static> {
        let visible = usize::from(height.saturating_sub(2)).max(1);
        let first = self.target.saturating_sub(visible - 1);
        let names =
            std::iter::once("whole adapter".to_string()).chain(analysis.modules.iter().map(|m| {
                let name = m
                    .delta
                    .module
                    .strip_prefix("encoder.")
                    .unwrap_or(&m.delta.module);
                name.replace("attention.self.", "")
                    .replace("attention.", "attn.")
            }));
        let lines: Vec<Line> = names
            .enumerate()
            .skip(first)
            .take(visible)
            .map(|(i, n)| {
                let style = if i == self.target {
                    theme.selected()
                } else {
                    Style::default()
                };
                Line::from(Span::styled(n, style))
            })
            .collect();
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" target "))
    }

    /// Method, sliders, and the estimate they give.
    fn controls(&self, analysis: &AdapterAnalysis, theme: Theme) -> Paragraph<'static> {
        let p = &self.params;
        let max_rank = analysis
            .modules
            .iter()
            .map(|m| m.svd.rank())
            .max()
            .unwrap_or(1);
        let e = &self.estimate;
        let original = self.original_bytes();
        let bytes = e.bytes;
        let method = match p.method {
            Method::Lora => "lora (the adapter's own factors, cast)",
            Method::Truncsvd => "truncsvd (dense rank-r factors)",
            Method::Osd => "osd (published: sparse factors at k = r + c)",
            Method::Magtrunc => "magtrunc (factors pruned by magnitude)",
            Method::LowrankSparse => "lowrank-sparse (rank r + sparse residual)",
            Method::MaskedBlend => "masked-blend ((1−α)Δ_r + αΔ_r⊙M)",
        };
        let relax = match (p.method.is_budgeted(), p.relax) {
            (false, _) => String::new(),
            (true, None) => "   c auto".into(),
            (true, Some(c)) => format!("   c {c}"),
        };
        let mut text = vec![
            Line::from(vec![
                Span::styled("method   ", theme.dim()),
                Span::raw(method),
            ]),
            Line::from(vec![
                Span::styled("dtype    ", theme.dim()),
                Span::raw(format!("{}{relax}", p.dtype)),
            ]),
            Line::raw(slider(
                "rank",
                p.rank as f64,
                max_rank as f64,
                format!("{} of {max_rank}", p.rank),
                SLIDER_WIDTH,
            )),
        ];
        if p.method.has_sparse_part() {
            text.push(Line::raw(slider(
                "sparsity",
                p.sparsity,
                1.0,
                format!("{:.2}", p.sparsity),
                SLIDER_WIDTH,
            )));
            text.push(Line::raw(slider(
                "alpha",
                f64::from(p.alpha),
                1.0,
                format!("{:.1}", p.alpha),
                SLIDER_WIDTH,
            )));
        }
        // A size ratio, said the way round it is: 2.00× smaller, 7.8× larger.
        let ratio = if bytes <= original {
            format!("{:.2}× smaller", original as f64 / bytes.max(1) as f64)
        } else {
            format!("{:.2}× larger", bytes as f64 / original.max(1) as f64)
        };
        text.push(Line::raw(format!(
            "size     {bytes} B written, of {original} B ({ratio}), k ≤ {}",
            e.relaxed_rank
        )));
        text.push(Line::raw(format!(
            "error    {:.4} (relative Frobenius, predicted)   paper {} bits",
            e.rel_error, e.paper_bits
        )));
        Paragraph::new(text).block(
            Block::default()
                .borders(Borders::ALL)
                .title(Span::styled(" OSD tuning ", theme.title())),
        )
    }

    /// The tune grid with its Pareto front, or what to press for one.
    fn grid_table(&self, theme: Theme) -> Paragraph<'static> {
        let mut grid = Vec::new();
        if self.tuning {
            grid.push(Line::raw(
                "tuning (every point predicted, the front measured)…",
            ));
        } else if self.grid.is_empty() {
            grid.push(Line::from(Span::styled(
                "t runs the tune grid; s saves; p exports the plot",
                theme.dim(),
            )));
        } else {
            grid.push(Line::from(Span::styled(
                format!(
                    "{:<14} {:>5} {:>4} {:>10} {:>7} {:>8}",
                    "method", "dtype", "rank", "bytes", "ratio", "error"
                ),
                theme.dim(),
            )));
            // The front first (it is what to choose from), then the rest.
            let mut shown: Vec<&GridPoint> = self.grid.iter().filter(|g| g.pareto).collect();
            shown.sort_by_key(|g| g.bytes);
            shown.extend(self.grid.iter().filter(|g| !g.pareto));
            for g in shown {
                let style = if g.pareto {
                    theme.ok()
                } else {
                    Style::default()
                };
                grid.push(Line::from(Span::styled(
                    format!(
                        "{:<14} {:>5} {:>4} {:>10} {:>6.2}× {:>8.4} {}{}",
                        g.method.name(),
                        g.dtype.name(),
                        g.rank,
                        g.bytes,
                        g.ratio,
                        g.rel_error,
                        if g.exact { "" } else { "~" },
                        if g.pareto { " ◆ pareto" } else { "" }
                    ),
                    style,
                )));
            }
        }
        Paragraph::new(grid).block(Block::default().borders(Borders::ALL).title(" tune grid "))
    }
}
