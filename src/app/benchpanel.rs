//! Load/fuse benchmark panel: runs `gpu::bench` on a worker thread (progress
//! through events) and shows every figure beside its anchor, as the
//! headless `bench` verb prints it.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph};
use ratatui::Frame;

use super::state::App;
use super::theme::Theme;
use crate::gpu::bench::{BenchProgress, BenchReport};

/// The panel's state.
#[derive(Default)]
pub struct BenchPanel {
    pub running: bool,
    pub progress: Option<BenchProgress>,
    pub report: Option<BenchReport>,
    pub error: Option<String>,
    pub scroll: u16,
}

impl BenchPanel {
    pub fn busy(&self) -> bool {
        self.running
    }
}

pub fn draw(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let bench = &app.bench;
    let [status, body] = Layout::vertical([Constraint::Length(3), Constraint::Min(3)]).areas(area);
    match (&bench.progress, bench.running) {
        (Some(p), true) => {
            let ratio = p.step as f64 / p.steps.max(1) as f64;
            frame.render_widget(
                Gauge::default()
                    .block(Block::default().borders(Borders::ALL).title(" running "))
                    .gauge_style(theme.ok())
                    .ratio(ratio.clamp(0.0, 1.0))
                    .label(format!("[{}/{}] {}", p.step, p.steps, p.stage)),
                status,
            );
        }
        _ => {
            let text = match (&bench.error, &bench.report) {
                (Some(e), _) => Span::styled(format!("benchmark failed: {e}"), theme.damaged()),
                (None, Some(_)) => Span::raw("done: r runs again (5 runs per figure, CPU)"),
                (None, None) => Span::raw("r runs the load, validation, streaming, transfer, fuse and memory benchmark (CPU)"),
            };
            frame.render_widget(
                Paragraph::new(Line::from(text))
                    .block(Block::default().borders(Borders::ALL).title(" benchmark ")),
                status,
            );
        }
    }
    let lines: Vec<Line> = match &bench.report {
        Some(report) => report.table().lines().map(|l| Line::raw(l.to_string())).collect(),
        None => vec![Line::from(Span::styled(
            "each figure is measured beside its anchor in the same run: the safetensors crate, the legacy tar.gz, SHA-256, memcpy",
            theme.dim(),
        ))],
    };
    frame.render_widget(
        Paragraph::new(lines).scroll((bench.scroll, 0)).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" figures (PgUp/PgDn scroll) "),
        ),
        body,
    );
}
