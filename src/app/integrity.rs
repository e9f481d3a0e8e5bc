//! Corruption debugging: each section's state, and for a damaged one the
//! expected and actual digest, its byte range and what still decodes.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::render::{section_list, LIST_WIDTH};
use super::state::{App, Verification};
use super::theme::Theme;
use crate::format::inspect::Opened;

pub fn draw(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let [list, right] =
        Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(20)]).areas(area);
    frame.render_widget(section_list(app, theme, list.height), list);
    let mut lines = Vec::new();
    if let Opened::Broken(e) = &app.doc.opened {
        lines.push(Line::from(Span::styled(
            "the file does not parse",
            theme.damaged(),
        )));
        lines.push(Line::raw(e.to_string()));
        if let Some(offset) = e.offset() {
            lines.push(Line::raw(format!(
                "where: offset {offset:#x} (the hex view opens there)"
            )));
        }
    }
    if let Some(root) = &app.doc.root_error {
        lines.push(Line::from(Span::styled(
            "header or TOC modified:",
            theme.damaged(),
        )));
        lines.push(Line::raw(root.clone()));
        lines.push(Line::raw(""));
    }
    match &app.verification {
        Verification::NotApplicable => {
            lines.push(Line::raw("no section digests to check for this file"))
        }
        Verification::Running => {
            lines.push(Line::raw("verifying every section in the background…"))
        }
        Verification::Done { checks, tail_clean } => {
            let damaged: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
            lines.push(if damaged.is_empty() && *tail_clean {
                Line::from(Span::styled(
                    format!("all {} sections intact", checks.len()),
                    theme.ok(),
                ))
            } else {
                Line::from(Span::styled(
                    format!("{} damaged section(s)", damaged.len()),
                    theme.damaged(),
                ))
            });
            if !tail_clean {
                lines.push(Line::from(Span::styled(
                    "padding before the TOC is not zero",
                    theme.damaged(),
                )));
            }
            if let Some(check) = checks.get(app.selected) {
                lines.push(Line::raw(""));
                let state = if check.ok() {
                    Span::styled("intact", theme.ok())
                } else {
                    Span::styled("DAMAGED", theme.damaged())
                };
                lines.push(Line::from(vec![
                    Span::raw(format!("section {} {}: ", check.index, check.name)),
                    state,
                ]));
                lines.push(Line::raw(format!(
                    "bytes     {:#x}..{:#x} ({} bytes)",
                    check.offset,
                    check.end,
                    check.end - check.offset
                )));
                lines.push(Line::raw(format!(
                    "expected  {}",
                    hex::encode(check.expected)
                )));
                lines.push(Line::raw(format!(
                    "actual    {}",
                    hex::encode(check.actual)
                )));
                if !check.clean_padding {
                    lines.push(Line::from(Span::styled(
                        "padding before this section is not zero",
                        theme.damaged(),
                    )));
                }
                if !check.ok() {
                    let decodes = match app.doc.decode(check.index) {
                        Ok(_) => {
                            "its bytes still decode (contents may be silently wrong)".to_string()
                        }
                        Err(e) => format!("does not decode: {e}"),
                    };
                    lines.push(Line::raw(decodes));
                }
            }
            if !damaged.is_empty() {
                lines.push(Line::raw(""));
                lines.push(Line::from(Span::styled("damaged", theme.title())));
                for c in damaged {
                    lines.push(Line::raw(format!(
                        "  #{} {}  {:#x}..{:#x}",
                        c.index, c.name, c.offset, c.end
                    )));
                }
            }
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" integrity ")),
        right,
    );
}
