//! Section decoder: manifest as pretty JSON, tensor tables with statistics
//! and histograms, LoRA modules with rank and scale, text sections as text.

use std::collections::HashMap;
use std::convert::Infallible;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::context::Context;
use crate::app::keys::{Binding, Nav};
use crate::app::panel::Panel;
use crate::app::theme::Theme;
use crate::app::widgets::LIST_WIDTH;
use crate::format::inspect::{Decoded, TensorSummary};

/// The decoder: sections decoded in the background, each once.
#[derive(Default)]
pub struct Decoder {
    /// Finished decodes, by section index.
    pub decoded: HashMap<usize, Result<Decoded, String>>,
    /// The section being decoded now.
    pub decoding: Option<usize>,
    pub scroll: u16,
}

/// A finished decode.
pub struct DecodedSection {
    index: usize,
    result: Result<Decoded, String>,
}

impl Panel for Decoder {
    const TITLE: &'static str = "Decoder";
    const NAME: &'static str = "decoder";
    type Action = Infallible;
    type Message = DecodedSection;
    const BINDINGS: &'static [Binding<Infallible>] = &[];

    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context) {
        let [list, right] =
            Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(20)]).areas(area);
        frame.render_widget(ctx.section_list(list.height), list);
        let name = ctx.rows.get(ctx.selected).map_or("", |r| r.name.as_str());
        let lines = self.lines(ctx.selected, ctx.theme);
        // Tensor tables are rows: cut at the edge, not wrapped onto two
        // lines each. Text wraps.
        let tabular = matches!(
            self.decoded.get(&ctx.selected),
            Some(Ok(Decoded::Tensors { .. }))
        );
        let inner = right.height.saturating_sub(2);
        let mut paragraph = Paragraph::new(lines.clone());
        if !tabular {
            paragraph = paragraph.wrap(Wrap { trim: false });
        }
        // PgDn stops at the last screen of content, never in blank space.
        let width = usize::from(right.width.saturating_sub(2)).max(1);
        let rows: usize = if tabular {
            lines.len()
        } else {
            lines.iter().map(|l| l.width().max(1).div_ceil(width)).sum()
        };
        let total = u16::try_from(rows).unwrap_or(u16::MAX);
        self.scroll = self.scroll.min(total.saturating_sub(inner));
        frame.render_widget(
            paragraph.scroll((self.scroll, 0)).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" {name} ")),
            ),
            right,
        );
    }

    fn on_message(&mut self, done: DecodedSection, _ctx: &mut Context) {
        self.decoded.insert(done.index, done.result);
        if self.decoding == Some(done.index) {
            self.decoding = None;
        }
    }

    /// PgUp/PgDn scroll the decoded text; ↑↓ are left to pick sections.
    fn on_nav(&mut self, nav: Nav, _ctx: &mut Context) -> bool {
        match nav {
            Nav::PageUp => self.scroll = self.scroll.saturating_sub(10),
            Nav::PageDown => self.scroll = self.scroll.saturating_add(10),
            Nav::Up | Nav::Down => return false,
        }
        true
    }

    fn on_enter(&mut self, ctx: &mut Context) {
        self.request(ctx);
    }

    /// Another section: back to its top, decoded if on screen.
    fn on_select(&mut self, shown: bool, ctx: &mut Context) {
        self.scroll = 0;
        if shown {
            self.request(ctx);
        }
    }

    fn busy(&self) -> bool {
        self.decoding.is_some()
    }
}

impl Decoder {
    /// Decodes the picked section in the background, once.
    fn request(&mut self, ctx: &mut Context) {
        let index = ctx.selected;
        if ctx.rows.is_empty() || self.decoded.contains_key(&index) || self.decoding == Some(index)
        {
            return;
        }
        self.decoding = Some(index);
        let doc = ctx.doc.clone();
        ctx.jobs.spawn(move |reply| {
            let result = doc.decode(index);
            reply.send(DecodedSection { index, result });
        });
    }

    /// What the text area shows for section `index`.
    fn lines(&self, index: usize, theme: Theme) -> Vec<Line<'static>> {
        match self.decoded.get(&index) {
            None if self.decoding == Some(index) => vec![Line::raw("decoding…")],
            None => vec![Line::raw("select a section (↑↓)")],
            Some(Err(e)) => vec![Line::from(Span::styled(
                format!("cannot decode: {e}"),
                theme.damaged(),
            ))],
            Some(Ok(decoded)) => decoded_lines(decoded, theme),
        }
    }
}

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

/// The longest prefix ending in `.` that every name shares (empty for one
/// name: it is then shown whole).
fn common_prefix<'a>(mut names: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = names.next() else {
        return String::new();
    };
    let mut common = first.len();
    let mut count = 1;
    for name in names {
        count += 1;
        common = first
            .bytes()
            .zip(name.bytes())
            .take(common)
            .take_while(|(a, b)| a == b)
            .count();
    }
    if count < 2 {
        return String::new();
    }
    let cut = first
        .get(..common)
        .and_then(|p| p.rfind('.'))
        .map_or(0, |i| i + 1);
    first.get(..cut).unwrap_or("").to_string()
}

fn tensor_line(t: &TensorSummary, prefix: usize) -> Line<'static> {
    let shape = t
        .shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×");
    let short = t.name.get(prefix..).unwrap_or(&t.name);
    let norms = match (t.row_norms, t.name.contains("embedding")) {
        (Some([lo, mean, hi]), true) => {
            format!("  row L2 norms min {lo:.4} mean {mean:.4} max {hi:.4}")
        }
        _ => String::new(),
    };
    // One row per tensor: range, mean μ, deviation σ, histogram.
    Line::raw(format!(
        "{short}  {} [{shape}]  {:+.3}…{:+.3}  μ{:+.1e} σ{:.3}  {}{norms}",
        t.dtype,
        t.min,
        t.max,
        t.mean,
        t.std,
        sparkline(&t.histogram)
    ))
}

/// A decoded section as text: JSON and text as they are, a grammar with
/// its problems marked, tensors as a table with statistics.
fn decoded_lines(decoded: &Decoded, theme: Theme) -> Vec<Line<'static>> {
    match decoded {
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
            // The prefix every name shares (`encoder.layer.0.attention.`)
            // is said once, so each row fits one line.
            let prefix = common_prefix(tensors.iter().map(|t| t.name.as_str()));
            v.push(Line::from(Span::styled(
                if prefix.is_empty() {
                    format!("tensors ({})", tensors.len())
                } else {
                    format!("tensors ({}) under {prefix}", tensors.len())
                },
                theme.title(),
            )));
            v.extend(tensors.iter().map(|t| tensor_line(t, prefix.len())));
            v
        }
        Decoded::Binary { len } => vec![Line::raw(format!(
            "{len} bytes of binary data (see the hex view)"
        ))],
    }
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
