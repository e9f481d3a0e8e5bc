//! The frame: tabs on top, the active panel, a status line; overlays for
//! help and prompts.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Tabs};
use ratatui::Frame;

use super::keys::{hints, BINDINGS};
use super::state::{App, PanelId, PromptKind};
use super::theme::Theme;
use super::{benchpanel, decoder, hexview, integrity, osdpanel, overview};

/// Width of the section list on the left of list-based panels.
pub const LIST_WIDTH: u16 = 34;

pub fn draw(frame: &mut Frame, app: &mut App) {
    let theme = Theme { colors: app.colors };
    let [tabs, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let titles: Vec<Line> = PanelId::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| Line::from(format!("{} {}", i + 1, p.title())))
        .collect();
    let index = PanelId::ALL
        .iter()
        .position(|p| *p == app.panel)
        .unwrap_or(0);
    let [tab_area, label_area] =
        Layout::horizontal([Constraint::Min(40), Constraint::Length(36)]).areas(tabs);
    frame.render_widget(
        Tabs::new(titles)
            .select(index)
            .highlight_style(theme.selected()),
        tab_area,
    );
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(
            truncate_left(&app.doc.label, 35),
            theme.dim(),
        )))
        .right_aligned(),
        label_area,
    );
    match app.panel {
        PanelId::Overview => overview::draw(frame, body, app, theme),
        PanelId::Hex => hexview::draw(frame, body, app, theme),
        PanelId::Decoder => decoder::draw(frame, body, app, theme),
        PanelId::Integrity => integrity::draw(frame, body, app, theme),
        PanelId::Osd => osdpanel::draw(frame, body, app, theme),
        PanelId::Bench => benchpanel::draw(frame, body, app, theme),
    }
    draw_status(frame, status, app, theme);
    if app.show_help {
        draw_help(frame, body, theme);
    }
}

fn truncate_left(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        text.to_string()
    } else {
        let tail: String = text.chars().skip(count - width + 1).collect();
        format!("…{tail}")
    }
}

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
            if !app.message.is_empty() {
                spans.push(Span::raw(format!("{}  ", app.message)));
            }
            for (key, help) in hints(app.panel) {
                spans.push(Span::styled(key, theme.key()));
                spans.push(Span::styled(format!(" {help}  "), theme.dim()));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_help(frame: &mut Frame, area: Rect, theme: Theme) {
    let lines: Vec<Line> = BINDINGS
        .iter()
        .filter(|b| !b.keys.is_empty())
        .map(|b| {
            let scope = b.panel.map_or("all".to_string(), |p| p.title().to_string());
            Line::from(vec![
                Span::styled(format!("{:<12}", b.keys), theme.key()),
                Span::raw(format!("{:<42}", b.help)),
                Span::styled(scope, theme.dim()),
            ])
        })
        .collect();
    let height = (lines.len() as u16 + 2).min(area.height);
    let width = 72.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(Span::styled(" keys (any key closes) ", theme.title())),
        ),
        popup,
    );
}

/// The section list shared by the hex, decoder and integrity panels.
pub fn section_list(app: &mut App, theme: Theme, height: u16) -> Paragraph<'static> {
    let visible = usize::from(height.saturating_sub(2)).max(1);
    let first = app.selected.saturating_sub(visible.saturating_sub(1));
    app.list_first = first;
    let lines: Vec<Line> = app
        .rows
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(i, row)| {
            let damaged = app.verification.damaged(i);
            let mark = if damaged { "✗" } else { " " };
            let text = format!("{mark}{:>2} {:<14} {}", i, row.kind.label(), row.name);
            let mut style = if damaged {
                theme.damaged()
            } else {
                ratatui::style::Style::default()
            };
            if i == app.selected {
                style = style.patch(theme.selected());
            }
            Line::from(Span::styled(text, style))
        })
        .collect();
    Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" sections "))
}
