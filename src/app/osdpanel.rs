//! OSD tuning panel: pick the whole adapter or one module, move rank and
//! sparsity, and see the energy-retention curve, predicted error and size
//! follow from cached spectra; run the tune grid; save the compressed expert.
//! The numbers come from `osd`; this module only holds the panel's state and
//! draws it.

use std::path::Path;
use std::sync::Arc;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::render::LIST_WIDTH;
use super::state::App;
use super::theme::Theme;
use crate::format::inspect::{Inspected, Opened};
use crate::format::package::{ExpertContents, PackageOptions};
use crate::format::ExpertReader;
use crate::osd::analysis::{Estimate, Method, OsdParams};
pub use crate::osd::expert::GridPoint;
use crate::osd::expert::{write_compressed, AdapterAnalysis};

/// Cells of a slider bar.
const SLIDER_WIDTH: usize = 24;

/// Largest rank the panel analyses.
const K_MAX: usize = 32;

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
}

impl OsdPanel {
    pub fn needs_analysis(&self) -> bool {
        self.analysis.is_none() && self.error.is_none() && !self.analyzing
    }

    pub fn busy(&self) -> bool {
        self.analyzing || self.tuning || self.saving
    }

    pub fn ready(&mut self, result: Result<AdapterAnalysis, String>) {
        self.analyzing = false;
        match result {
            Ok(a) if a.modules.is_empty() => {
                self.error = Some(format!(
                    "no low-rank modules to compress ({} skipped)",
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
        match row {
            2 => self.adjust(|p| p.rank = (fraction * max_rank as f64).round().max(1.0) as usize),
            3 => self.adjust(|p| p.sparsity = (fraction * 100.0).round() / 100.0),
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

    fn original_bits(&self) -> u64 {
        match (&self.analysis, self.target) {
            (Some(a), 0) => a.original_bits(),
            (Some(a), i) => a.modules.get(i - 1).map_or(0, |m| m.delta.original_bits()),
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
    AdapterAnalysis::from_adapter(adapter, None, K_MAX).map_err(|e| e.to_string())
}

/// The default tune grid (worker thread).
pub fn tune_grid(analysis: &AdapterAnalysis, method: Method) -> Vec<GridPoint> {
    let sparsities: &[f64] = match method {
        Method::Osd => &[0.25, 0.5, 0.75],
        Method::Blend => &[0.01, 0.05, 0.1],
    };
    analysis
        .grid(&[1, 2, 4, 6], sparsities, method)
        .unwrap_or_default()
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
        "saved {} ({} bytes); same as: expertui --headless osd compress {source} -o {} --rank {} --sparsity {} --method {}{}",
        out.display(),
        report.file_bytes,
        out.display(),
        p.rank,
        p.sparsity,
        match p.method { Method::Osd => "osd", Method::Blend => "blend" },
        if p.method == Method::Blend { format!(" --alpha {}", p.alpha) } else { String::new() }
    ))
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

pub fn draw(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let osd = &app.osd;
    let [list, right] =
        Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(20)]).areas(area);
    let Some(analysis) = &osd.analysis else {
        let text = match (&osd.error, osd.analyzing) {
            (Some(e), _) => Span::styled(e.clone(), theme.damaged()),
            (None, true) => Span::raw("analysing every module (SVD, importance)…"),
            (None, false) => Span::raw("press 5 to analyse"),
        };
        frame.render_widget(
            Paragraph::new(Line::from(text))
                .block(Block::default().borders(Borders::ALL).title(" OSD ")),
            area,
        );
        return;
    };
    // Targets: the whole adapter, then each module.
    let visible = usize::from(list.height.saturating_sub(2)).max(1);
    let first = osd.target.saturating_sub(visible - 1);
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
            let style = if i == osd.target {
                theme.selected()
            } else {
                Style::default()
            };
            Line::from(Span::styled(n, style))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" target ")),
        list,
    );

    let [controls, chart_area, grid_area] = Layout::vertical([
        Constraint::Length(9),
        Constraint::Min(6),
        Constraint::Length(if osd.grid.is_empty() { 3 } else { 15 }),
    ])
    .areas(right);
    let p = &osd.params;
    let max_rank = analysis
        .modules
        .iter()
        .map(|m| m.svd.rank())
        .max()
        .unwrap_or(1);
    let e = &osd.estimate;
    let original = osd.original_bits().div_ceil(8);
    let bytes = e.bits.div_ceil(8);
    let method = match p.method {
        Method::Osd => "osd (published: sparse factors at relaxed rank)",
        Method::Blend => "blend (low rank + sparse residual)",
    };
    let mut text = vec![
        Line::from(vec![
            Span::styled("method   ", theme.dim()),
            Span::raw(method),
        ]),
        Line::raw(slider(
            "rank",
            p.rank as f64,
            max_rank as f64,
            format!("{} of {max_rank}", p.rank),
            SLIDER_WIDTH,
        )),
        Line::raw(slider(
            "sparsity",
            p.sparsity,
            1.0,
            format!("{:.2}", p.sparsity),
            SLIDER_WIDTH,
        )),
    ];
    if p.method == Method::Blend {
        text.push(Line::raw(slider(
            "alpha",
            f64::from(p.alpha),
            1.0,
            format!("{:.1}", p.alpha),
            SLIDER_WIDTH,
        )));
    }
    text.push(Line::raw(format!(
        "size     {bytes} B of {original} B ({:.2}× smaller), relaxed rank {}",
        original as f64 / bytes.max(1) as f64,
        e.relaxed_rank
    )));
    text.push(Line::raw(format!(
        "energy   {:.4} kept   error {:.4} (relative Frobenius, estimated)",
        e.energy_kept, e.rel_error
    )));
    frame.render_widget(
        Paragraph::new(text).block(
            Block::default()
                .borders(Borders::ALL)
                .title(Span::styled(" OSD tuning ", theme.title())),
        ),
        controls,
    );

    let curve = osd.curve();
    let points: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
        .chain(curve.iter().enumerate().map(|(i, v)| ((i + 1) as f64, *v)))
        .collect();
    let x_max = curve.len().max(1) as f64;
    let at_rank = curve.get(p.rank.saturating_sub(1)).copied().unwrap_or(0.0);
    let marker = vec![(p.rank as f64, 0.0), (p.rank as f64, at_rank)];
    let datasets = vec![
        Dataset::default()
            .name("energy retained")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(theme.ok())
            .data(&points),
        Dataset::default()
            .name(format!("rank {}", p.rank))
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(theme.key())
            .data(&marker),
    ];
    let chart = Chart::new(datasets)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" energy-retention curve "),
        )
        .x_axis(
            Axis::default()
                .title("rank")
                .bounds([0.0, x_max])
                .labels(vec![
                    Line::raw("0"),
                    Line::raw(format!("{}", x_max as usize)),
                ]),
        )
        .y_axis(
            Axis::default()
                .title("energy")
                .bounds([0.0, 1.0])
                .labels(vec![Line::raw("0"), Line::raw("0.5"), Line::raw("1")]),
        );
    frame.render_widget(chart, chart_area);

    let mut grid = Vec::new();
    if osd.tuning {
        grid.push(Line::raw("tuning (exact compression at every point)…"));
    } else if osd.grid.is_empty() {
        grid.push(Line::from(Span::styled(
            "t runs the tune grid; s saves; p exports the plot",
            theme.dim(),
        )));
    } else {
        grid.push(Line::from(Span::styled(
            format!(
                "{:>5} {:>8} {:>9} {:>7} {:>8} {:>8}",
                "rank", "sparsity", "bytes", "ratio", "error", "out.err"
            ),
            theme.dim(),
        )));
        for g in &osd.grid {
            let style = if g.pareto {
                theme.ok()
            } else {
                Style::default()
            };
            grid.push(Line::from(Span::styled(
                format!(
                    "{:>5} {:>8.2} {:>9} {:>6.2}× {:>8.4} {:>8.4} {}",
                    g.rank,
                    g.sparsity,
                    g.bytes,
                    g.compression,
                    g.rel_error,
                    g.output_error,
                    if g.pareto { "◆ pareto" } else { "" }
                ),
                style,
            )));
        }
    }
    frame.render_widget(
        Paragraph::new(grid).block(Block::default().borders(Borders::ALL).title(" tune grid ")),
        grid_area,
    );
}
