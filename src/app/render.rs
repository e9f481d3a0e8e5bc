//! The frame: tabs on top, the panel on screen, a status line; overlays
//! for help and the prompt.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;

use super::help;
use super::panels::PanelId;
use super::prompt::PromptKind;
use super::state::App;
use super::theme::Theme;

pub fn draw(frame: &mut Frame, app: &mut App) {
    let theme = Theme { colors: app.colors };
    app.frame_width = frame.area().width;
    let [tabs, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let titles = tab_titles(app, tabs.width);
    let used = u16::try_from(titles_width(&titles)).unwrap_or(u16::MAX);
    let label_width = tabs.width.saturating_sub(used).min(36);
    let [tab_area, label_area] = Layout::horizontal([
        Constraint::Length(tabs.width.saturating_sub(label_width)),
        Constraint::Length(label_width),
    ])
    .areas(tabs);
    frame.render_widget(
        Tabs::new(titles.into_iter().map(Line::from).collect::<Vec<_>>())
            .select(app.panel.index())
            .highlight_style(theme.selected()),
        tab_area,
    );
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(
            truncate_left(&app.doc.label, usize::from(label_width.saturating_sub(1))),
            theme.dim(),
        )))
        .right_aligned(),
        label_area,
    );
    app.draw_panel(frame, body);
    draw_status(frame, status, app, theme);
    if app.show_help {
        help::draw(frame, body, &app.panels, app.help_scroll, theme);
    }
}

/// The tab titles for a bar `width` columns wide: full names when they fit,
/// else the other tabs shrink to their number (the tabs come before the
/// file name).
fn tab_titles(app: &App, width: u16) -> Vec<String> {
    let full: Vec<String> = PanelId::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} {}", i + 1, p.title()))
        .collect();
    if titles_width(&full) <= usize::from(width) {
        return full;
    }
    PanelId::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if *p == app.panel {
                format!("{} {}", i + 1, p.title())
            } else {
                (i + 1).to_string()
            }
        })
        .collect()
}

/// Columns the tab bar takes: each title with a space either side and a
/// divider.
fn titles_width(titles: &[String]) -> usize {
    titles.iter().map(|t| t.chars().count() + 3).sum()
}

/// The panel whose tab is at `column` of the tab bar, as drawn for the
/// terminal's width (the last frame's).
pub fn tab_at(app: &App, column: u16) -> Option<PanelId> {
    let titles = tab_titles(app, app.frame_width);
    let mut start = 0usize;
    for (i, title) in titles.iter().enumerate() {
        let end = start + title.chars().count() + 3;
        if usize::from(column) < end {
            return PanelId::at(i);
        }
        start = end;
    }
    None
}

fn truncate_left(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if width == 0 {
        String::new()
    } else if count <= width {
        text.to_string()
    } else {
        let tail: String = text.chars().skip(count - width + 1).collect();
        format!("…{tail}")
    }
}

/// The prompt being typed, or the message and the panel's key hints.
fn draw_status(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let line = match &app.prompt {
        Some(prompt) => {
            let label = match prompt.kind {
                PromptKind::Jump => "jump to offset: ",
                PromptKind::Search => "search (text, or #hex): ",
            };
            Line::from(vec![
                Span::styled(label, theme.key()),
                Span::raw(prompt.text.clone()),
                Span::raw("█"),
            ])
        }
        None => {
            let mut spans = Vec::new();
            let mut room = usize::from(area.width);
            if !app.message.is_empty() {
                let message = format!("{}  ", app.message);
                room = room.saturating_sub(message.chars().count());
                spans.push(Span::raw(message));
            }
            // Only whole hints: never a cut-off "t view: bars, table, hot-".
            for (key, help) in help::hints(app.panels.get(app.panel)) {
                let hint = format!(" {help}  ");
                let needs = key.chars().count() + hint.chars().count();
                if needs > room {
                    break;
                }
                room -= needs;
                spans.push(Span::styled(key, theme.key()));
                spans.push(Span::styled(hint, theme.dim()));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
