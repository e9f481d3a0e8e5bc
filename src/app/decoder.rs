//! Section decoder: manifest as pretty JSON, tensor tables with statistics
//! and histograms, LoRA modules with rank and scale, text sections as text.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::render::{section_list, LIST_WIDTH};
use super::state::App;
use super::theme::Theme;
use crate::format::inspect::{Decoded, TensorSummary};

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A 16-bin histogram as a one-line sparkline.
pub fn sparkline(histogram: &[u32; 16]) -> String {
    let max = histogram.iter().copied().max().unwrap_or(0).max(1);
    histogram
        .iter()
        .map(|&c| {
            if c == 0 {
                ' '
            } else {
                BARS[((c as usize * 7) / max as usize).min(7)]
            }
        })
        .collect()
}

fn tensor_line(t: &TensorSummary) -> Line<'static> {
    let shape = t
        .shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×");
    let short = t.name.strip_prefix("base_model.model.").unwrap_or(&t.name);
    let norms = match (t.row_norms, t.name.contains("embedding")) {
        (Some([lo, mean, hi]), true) => {
            format!("  row L2 norms min {lo:.4} mean {mean:.4} max {hi:.4}")
        }
        _ => String::new(),
    };
    Line::raw(format!(
        "{short}  {} [{shape}] {} B  min {:+.4} max {:+.4} mean {:+.5} std {:.5} {}{norms}",
        t.dtype,
        t.bytes,
        t.min,
        t.max,
        t.mean,
        t.std,
        sparkline(&t.histogram)
    ))
}

pub fn draw(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let [list, right] =
        Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(20)]).areas(area);
    frame.render_widget(section_list(app, theme, list.height), list);
    let name = app
        .rows
        .get(app.selected)
        .map_or("", |r| r.name.as_str())
        .to_string();
    let lines: Vec<Line> = match app.decoded.get(&app.selected) {
        None if app.decoding == Some(app.selected) => vec![Line::raw("decoding…")],
        None => vec![Line::raw("select a section (↑↓)")],
        Some(Err(e)) => vec![Line::from(Span::styled(
            format!("cannot decode: {e}"),
            theme.damaged(),
        ))],
        Some(Ok(decoded)) => match decoded {
            Decoded::Json(text) | Decoded::Text(text) => {
                text.lines().map(|l| Line::raw(l.to_string())).collect()
            }
            Decoded::Grammar {
                text,
                rules,
                issues,
            } => grammar_lines(text, *rules, issues, theme),
            Decoded::Tensors { tensors, modules } => {
                let mut v = Vec::new();
                if !modules.is_empty() {
                    v.push(Line::from(Span::styled("modules", theme.title())));
                    for m in modules {
                        v.push(Line::raw(format!(
                            "  {:<44} {:<6} rank {:<3} scale {}",
                            m.module,
                            m.kind,
                            m.rank.map_or("-".into(), |r| r.to_string()),
                            m.scale.map_or("-".into(), |s| format!("{s:.4}"))
                        )));
                    }
                }
                v.push(Line::from(Span::styled(
                    format!("tensors ({})", tensors.len()),
                    theme.title(),
                )));
                v.extend(tensors.iter().map(tensor_line));
                v
            }
            Decoded::Binary { len } => vec![Line::raw(format!(
                "{len} bytes of binary data (see the hex view)"
            ))],
        },
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((app.decoder_scroll, 0))
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" {name} ")),
            ),
        right,
    );
}

/// The grammar with a marker under each line llama.cpp would complain
/// about (`^` at the column, the code and message), summary first.
fn grammar_lines(
    text: &str,
    rules: usize,
    issues: &[crate::format::inspect::GrammarIssue],
    theme: Theme,
) -> Vec<Line<'static>> {
    use crate::diagnostics::Severity;
    let warnings = issues
        .iter()
        .filter(|i| i.severity >= Severity::Warning)
        .count();
    let mut v = vec![if warnings == 0 {
        Line::from(Span::styled(
            format!("GBNF grammar, {rules} rules: llama.cpp loads it"),
            theme.ok(),
        ))
    } else {
        Line::from(Span::styled(
            format!(
                "GBNF grammar, {rules} rules: {warnings} problem(s) llama.cpp would refuse (stored verbatim)"
            ),
            theme.damaged(),
        ))
    }];
    for issue in issues.iter().filter(|i| i.line.is_none()) {
        v.push(Line::from(Span::styled(
            format!("  {}: {}", issue.code, issue.message),
            theme.damaged(),
        )));
    }
    for (n, line) in text.lines().enumerate() {
        let here: Vec<_> = issues.iter().filter(|i| i.line == Some(n + 1)).collect();
        let number = Span::styled(format!("{:>4} ", n + 1), theme.dim());
        let body = if here.iter().any(|i| i.severity >= Severity::Warning) {
            Span::styled(line.to_string(), theme.damaged())
        } else {
            Span::raw(line.to_string())
        };
        v.push(Line::from(vec![number, body]));
        for issue in here {
            let col = issue.column.unwrap_or(1).max(1);
            v.push(Line::from(Span::styled(
                format!(
                    "     {}^ {}[{}] {}",
                    " ".repeat(col - 1),
                    issue.severity.label(),
                    issue.code,
                    issue.message
                ),
                if issue.severity >= Severity::Warning {
                    theme.damaged()
                } else {
                    theme.dim()
                },
            )));
        }
    }
    v
}
