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
    let [tab_area, label_area] =
        Layout::horizontal([Constraint::Min(40), Constraint::Length(36)]).areas(tabs);
    frame.render_widget(
        Tabs::new(titles)
            .select(app.panel.index())
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
    app.draw_panel(frame, body);
    draw_status(frame, status, app, theme);
    if app.show_help {
        help::draw(frame, body, &app.panels, theme);
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
            if !app.message.is_empty() {
                spans.push(Span::raw(format!("{}  ", app.message)));
            }
            for (key, help) in help::hints(app.panels.get(app.panel)) {
                spans.push(Span::styled(key, theme.key()));
                spans.push(Span::styled(format!(" {help}  "), theme.dim()));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
