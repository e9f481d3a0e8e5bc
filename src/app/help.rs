//! The help overlay and the status-line hints, made from the global
//! bindings and each panel's, so they list exactly the keys that work.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::keys::{HelpGroup, KeyHelp, GLOBAL};
use super::panel::AnyPanel;
use super::panels::{PanelId, Panels};
use super::theme::Theme;

/// One line of the help overlay.
pub struct HelpRow {
    pub keys: String,
    pub help: String,
    /// `all`, or the panel's title.
    pub scope: &'static str,
}

impl HelpRow {
    fn of(binding: &KeyHelp, scope: &'static str) -> Self {
        Self {
            keys: binding.keys.into(),
            help: binding.help.into(),
            scope,
        }
    }
}

/// Every binding, group by group: the global ones first, then each
/// panel's in tab order. Second halves of pairs have no row.
pub fn rows(panels: &Panels) -> Vec<HelpRow> {
    let mut rows = Vec::new();
    for group in HelpGroup::ALL {
        let shown = |b: &&KeyHelp| b.group == group && !b.keys.is_empty();
        let global: Vec<KeyHelp> = GLOBAL.iter().map(|b| b.help_only()).collect();
        rows.extend(global.iter().filter(shown).map(|b| HelpRow::of(b, "all")));
        if group == HelpGroup::App {
            rows.push(number_keys(panels));
        }
        for &id in PanelId::ALL {
            let panel = panels.get(id);
            let own = panel.key_help();
            rows.extend(
                own.iter()
                    .filter(shown)
                    .map(|b| HelpRow::of(b, panel.title())),
            );
        }
    }
    rows
}

/// `1-6  overview, hex, …`: one number key per panel, in tab order.
fn number_keys(panels: &Panels) -> HelpRow {
    let names: Vec<&str> = PanelId::ALL
        .iter()
        .map(|&id| panels.get(id).name())
        .collect();
    HelpRow {
        keys: format!("1-{}", names.len()),
        help: names.join(", "),
        scope: "all",
    }
}

/// Short hints for the status line: the panel's own keys, then the basics.
pub fn hints(panel: &dyn AnyPanel) -> Vec<(&'static str, &'static str)> {
    panel
        .key_help()
        .iter()
        .filter(|b| !b.keys.is_empty())
        .map(|b| (b.keys, b.help))
        .chain([("Tab", "panel"), ("?", "help"), ("q", "quit")])
        .collect()
}

/// The overlay, centred in `area`, scrolled down `scroll` lines (↑↓ PgUp
/// PgDn scroll it, any other key closes it).
pub fn draw(frame: &mut Frame, area: Rect, panels: &Panels, scroll: u16, theme: Theme) {
    let lines: Vec<Line> = rows(panels)
        .into_iter()
        .map(|row| {
            Line::from(vec![
                Span::styled(format!("{:<12}", row.keys), theme.key()),
                Span::raw(format!("{:<42}", row.help)),
                Span::styled(row.scope, theme.dim()),
            ])
        })
        .collect();
    let total = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let height = total.saturating_add(2).min(area.height);
    let width = 72.min(area.width);
    let scroll = scroll.min(total.saturating_sub(height.saturating_sub(2)));
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).scroll((scroll, 0)).block(
            Block::default().borders(Borders::ALL).title(Span::styled(
                if total + 2 > height {
                    " keys (↑↓ PgUp PgDn scroll, any other key closes) "
                } else {
                    " keys (any key closes) "
                },
                theme.title(),
            )),
        ),
        popup,
    );
}
