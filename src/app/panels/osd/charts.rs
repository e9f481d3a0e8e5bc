//! The OSD panel's two charts: the energy-retention curve with the chosen
//! rank marked, and the tune grid's frontier (error vs bytes written, one
//! curve per method).

use ratatui::layout::Rect;
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType};
use ratatui::Frame;

use crate::app::theme::Theme;
use crate::osd::analysis::Method;
use crate::osd::frontier::GridPoint;

/// The energy-retention curve with the chosen rank marked.
pub(super) fn draw_curve(frame: &mut Frame, area: Rect, curve: &[f64], rank: usize, theme: Theme) {
    let points: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
        .chain(curve.iter().enumerate().map(|(i, v)| ((i + 1) as f64, *v)))
        .collect();
    let x_max = curve.len().max(1) as f64;
    let at_rank = curve.get(rank.saturating_sub(1)).copied().unwrap_or(0.0);
    let marker = vec![(rank as f64, 0.0), (rank as f64, at_rank)];
    let datasets = vec![
        Dataset::default()
            .name("energy retained")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(theme.ok())
            .data(&points),
        Dataset::default()
            .name(format!("rank {}", rank))
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
    frame.render_widget(chart, area);
}

/// The tune grid's frontier: error against bytes written, one curve per
/// method (its best point at each size, over dtypes and ranks).
pub(super) fn draw_frontier(frame: &mut Frame, area: Rect, grid: &[GridPoint], theme: Theme) {
    let styles = [theme.ok(), theme.key(), theme.title(), theme.damaged()];
    let mut curves: Vec<(Method, Vec<(f64, f64)>)> = Vec::new();
    for method in Method::ALL {
        let mut pts: Vec<(f64, f64)> = grid
            .iter()
            .filter(|g| g.method == method)
            .map(|g| (g.bytes as f64, g.rel_error))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        // The lower envelope: a point counts if it beats every smaller one.
        let mut best = f64::INFINITY;
        pts.retain(|p| {
            let keep = p.1 < best;
            best = best.min(p.1);
            keep
        });
        if !pts.is_empty() {
            curves.push((method, pts));
        }
    }
    let x_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0f64, f64::max);
    let datasets: Vec<Dataset> = curves
        .iter()
        .enumerate()
        .map(|(i, (method, pts))| {
            Dataset::default()
                .name(method.name())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(styles[i % styles.len()])
                .data(pts)
        })
        .collect();
    let chart = Chart::new(datasets)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" frontier: error vs bytes written "),
        )
        .x_axis(
            Axis::default()
                .title("bytes")
                .bounds([0.0, x_max])
                .labels(vec![Line::raw("0"), Line::raw(format!("{x_max:.0}"))]),
        )
        .y_axis(
            Axis::default()
                .title("error")
                .bounds([0.0, 1.0])
                .labels(vec![Line::raw("0"), Line::raw("1")]),
        );
    frame.render_widget(chart, area);
}
