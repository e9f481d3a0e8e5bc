//! Pieces of screen more than one panel draws.

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::checks::Verification;
use super::theme::Theme;
use crate::format::inspect::SectionRow;

/// Width of the section list on the left of list-based panels (mouse
/// clicks left of it pick a section).
pub const LIST_WIDTH: u16 = 34;

/// The section list shared by the hex, decoder and integrity panels, and
/// the first row it shows (mouse clicks count from there).
pub fn section_list(
    rows: &[SectionRow],
    selected: usize,
    verification: &Verification,
    theme: Theme,
    height: u16,
) -> (Paragraph<'static>, usize) {
    let visible = usize::from(height.saturating_sub(2)).max(1);
    let first = selected.saturating_sub(visible.saturating_sub(1));
    let lines: Vec<Line> = rows
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(i, row)| {
            let damaged = verification.damaged(i);
            let mark = if damaged { "✗" } else { " " };
            let text = format!("{mark}{:>2} {:<14} {}", i, row.kind.label(), row.name);
            let mut style = if damaged {
                theme.damaged()
            } else {
                Style::default()
            };
            if i == selected {
                style = style.patch(theme.selected());
            }
            Line::from(Span::styled(text, style))
        })
        .collect();
    let list =
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" sections "));
    (list, first)
}
