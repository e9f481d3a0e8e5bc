//! Corruption debugging: each section's state, and for a damaged one the
//! expected and actual digest, its byte range and what still decodes.

use std::convert::Infallible;

use crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::checks::Verification;
use crate::app::context::Context;
use crate::app::keys::{plain, Binding, HelpGroup};
use crate::app::panel::Panel;
use crate::app::widgets::LIST_WIDTH;
use crate::format::inspect::Opened;

/// The integrity panel: it shows the shared verification and can restart it.
#[derive(Default)]
pub struct Integrity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityAction {
    Verify,
}

impl Panel for Integrity {
    const TITLE: &'static str = "Integrity";
    const NAME: &'static str = "integrity";
    type Action = IntegrityAction;
    type Message = Infallible;
    const BINDINGS: &'static [Binding<IntegrityAction>] = &[Binding {
        keys: "v",
        help: "verify again",
        group: HelpGroup::Inspect,
        action: IntegrityAction::Verify,
        matches: |k| plain(k, KeyCode::Char('v')),
    }];

    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context) {
        let [list, right] =
            Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(20)]).areas(area);
        frame.render_widget(ctx.section_list(list.height), list);
        frame.render_widget(
            Paragraph::new(report_lines(ctx))
                .wrap(Wrap { trim: false })
                .block(Block::default().borders(Borders::ALL).title(" integrity ")),
            right,
        );
    }

    fn on_action(&mut self, action: IntegrityAction, ctx: &mut Context) {
        match action {
            IntegrityAction::Verify => ctx.start_verification(),
        }
    }
}

/// The file's state, the picked section's digests, the damaged list.
fn report_lines(ctx: &Context) -> Vec<Line<'static>> {
    let theme = ctx.theme;
    let mut lines = Vec::new();
    if let Opened::Broken(e) = &ctx.doc.opened {
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
    if let Some(root) = &ctx.doc.root_error {
        lines.push(Line::from(Span::styled(
            "header or TOC modified:",
            theme.damaged(),
        )));
        lines.push(Line::raw(root.clone()));
        lines.push(Line::raw(""));
    }
    match &*ctx.verification {
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
            if let Some(check) = checks.get(ctx.selected) {
                lines.push(Line::raw(""));
                use crate::format::digests::{blame, Blame};
                let state = match blame(check, ctx.doc.root_error.is_none()) {
                    Blame::Intact if check.ok() => Span::styled("intact", theme.ok()),
                    Blame::Intact | Blame::Section => Span::styled("DAMAGED", theme.damaged()),
                    Blame::TocEntry => Span::styled(
                        "its TOC ENTRY disagrees (the root digest fails: the TOC was changed, the bytes may be intact)",
                        theme.damaged(),
                    ),
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
                    let decodes = match ctx.doc.decode(check.index) {
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
    lines
}
