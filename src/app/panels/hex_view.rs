//! TOC + hex browser: section list, hex rows with byte classes and the
//! structure overlaid, the region under the cursor and a value inspector.
//! Only the visible rows are read from the map, so any file size works.
//! The cursor itself is shared state (`Context::hex`): jumps, searches and
//! list clicks move it too.

use std::convert::Infallible;

use crossterm::event::KeyCode;
use half::{bf16, f16};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use crate::app::context::Context;
use crate::app::cursor::{BYTES_PER_ROW, ROW_WIDTHS};
use crate::app::keys::{ctrl, plain, Binding, HelpGroup, Nav};
use crate::app::panel::Panel;
use crate::app::prompt::PromptKind;
use crate::app::theme::Theme;
use crate::app::widgets::LIST_WIDTH;
use crate::format::inspect::{region_at, Opened, RegionKind};

/// The hex browser (its position lives in the shared cursor).
#[derive(Default)]
pub struct HexView {
    /// Where the hex rows were drawn last (for clicks on bytes).
    hex_area: Rect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HexAction {
    Left,
    Right,
    Home,
    End,
    StartJump,
    StartSearch,
    SearchNext,
    SearchPrev,
    ToggleEndian,
}

impl Panel for HexView {
    const TITLE: &'static str = "TOC + Hex";
    const NAME: &'static str = "hex";
    type Action = HexAction;
    type Message = Infallible;
    const BINDINGS: &'static [Binding<HexAction>] = &[
        Binding {
            keys: "←→ / h l",
            help: "byte left/right",
            group: HelpGroup::Move,
            action: HexAction::Left,
            matches: |k| k.code == KeyCode::Left || plain(k, KeyCode::Char('h')),
        },
        Binding {
            keys: "",
            help: "",
            group: HelpGroup::Move,
            action: HexAction::Right,
            matches: |k| k.code == KeyCode::Right || plain(k, KeyCode::Char('l')),
        },
        Binding {
            keys: "g/G",
            help: "start/end of file",
            group: HelpGroup::Page,
            action: HexAction::Home,
            matches: |k| k.code == KeyCode::Home || plain(k, KeyCode::Char('g')),
        },
        Binding {
            keys: "",
            help: "",
            group: HelpGroup::Page,
            action: HexAction::End,
            matches: |k| k.code == KeyCode::End || plain(k, KeyCode::Char('G')),
        },
        Binding {
            keys: ": / C-j",
            help: "jump to offset (0x1f0, 496, +16, -0x10)",
            group: HelpGroup::Inspect,
            action: HexAction::StartJump,
            matches: |k| plain(k, KeyCode::Char(':')) || ctrl(k, 'j'),
        },
        Binding {
            keys: "/",
            help: "search text, or #hex bytes",
            group: HelpGroup::Inspect,
            action: HexAction::StartSearch,
            matches: |k| plain(k, KeyCode::Char('/')),
        },
        Binding {
            keys: "n/N",
            help: "next/previous match",
            group: HelpGroup::Inspect,
            action: HexAction::SearchNext,
            matches: |k| plain(k, KeyCode::Char('n')),
        },
        Binding {
            keys: "",
            help: "",
            group: HelpGroup::Inspect,
            action: HexAction::SearchPrev,
            matches: |k| plain(k, KeyCode::Char('N')),
        },
        Binding {
            keys: "e",
            help: "toggle inspector endianness",
            group: HelpGroup::Inspect,
            action: HexAction::ToggleEndian,
            matches: |k| plain(k, KeyCode::Char('e')),
        },
    ];

    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context) {
        // The section list only when 16 bytes a row still fit beside it
        // (the cursor's section is named in the title anyway).
        let show_list = area.width >= LIST_WIDTH + row_width(BYTES_PER_ROW);
        let list_width = if show_list { LIST_WIDTH } else { 0 };
        let [list, right] =
            Layout::horizontal([Constraint::Length(list_width), Constraint::Min(10)]).areas(area);
        if show_list {
            frame.render_widget(ctx.section_list(list.height), list);
        }
        ctx.hex.bytes_per_row = ROW_WIDTHS
            .iter()
            .copied()
            .rev()
            .find(|&n| row_width(n) <= right.width)
            .unwrap_or(ROW_WIDTHS[0]);
        let [hex_area, info_area] =
            Layout::vertical([Constraint::Min(4), Constraint::Length(8)]).areas(right);
        ctx.hex.visible_rows = u64::from(hex_area.height.saturating_sub(2)).max(1);
        // The wheel scrolls the view without moving the cursor: only keep
        // the view inside the file here.
        let last_row = ctx.doc.len().saturating_sub(1) / ctx.hex.bytes_per_row.max(1);
        ctx.hex.top_row = ctx.hex.top_row.min(last_row);
        self.hex_area = hex_area;
        frame.render_widget(hex_rows(ctx, ctx.theme), hex_area);
        frame.render_widget(inspector(ctx, ctx.theme), info_area);
    }

    fn on_action(&mut self, action: HexAction, ctx: &mut Context) {
        match action {
            HexAction::Left => ctx.step(-1),
            HexAction::Right => ctx.step(1),
            HexAction::Home => ctx.goto(0),
            HexAction::End => ctx.goto(u64::MAX),
            HexAction::StartJump => ctx.open_prompt(PromptKind::Jump),
            HexAction::StartSearch => ctx.open_prompt(PromptKind::Search),
            HexAction::SearchNext => ctx.search(true),
            HexAction::SearchPrev => ctx.search(false),
            HexAction::ToggleEndian => ctx.hex.little_endian = !ctx.hex.little_endian,
        }
    }

    /// A click on a byte puts the cursor there; anything else is the app's
    /// (the section list).
    fn on_click(&mut self, column: u16, row: u16, ctx: &mut Context) -> bool {
        let area = self.hex_area;
        // `row` counts from the top of the panel area, which starts below
        // the one-line tab bar.
        let y = row.saturating_add(1);
        let inside = column > area.x
            && column < area.x + area.width.saturating_sub(1)
            && y > area.y
            && y < area.y + area.height.saturating_sub(1);
        if !inside {
            return false;
        }
        let line = u64::from(y - area.y - 1);
        let x = column - area.x - 1;
        let per_row = ctx.hex.bytes_per_row.max(1);
        let byte = (0..per_row).find(|&i| {
            let start = 10 + 3 * i + i / 8;
            (start..start + 2).contains(&u64::from(x))
        });
        if let Some(i) = byte {
            let offset = (ctx.hex.top_row + line) * per_row + i;
            if offset < ctx.doc.len() {
                ctx.goto(offset);
            }
        }
        true
    }

    /// ↑↓ move the cursor a row, PgUp/PgDn a screen.
    fn on_nav(&mut self, nav: Nav, ctx: &mut Context) -> bool {
        let row = ctx.hex.bytes_per_row as i64;
        let page = ctx.hex.page();
        ctx.step(match nav {
            Nav::Up => -row,
            Nav::Down => row,
            Nav::PageUp => -page,
            Nav::PageDown => page,
        });
        true
    }

    /// Arriving, show the section picked elsewhere (unless the cursor is
    /// already inside it). Section 0 is left alone so the header shows first.
    fn on_enter(&mut self, ctx: &mut Context) {
        let Some(row) = ctx.rows.get(ctx.selected) else {
            return;
        };
        if let Some(offset) = row.offset {
            let end = offset.saturating_add(row.stored_len.max(1));
            let inside = (offset..end).contains(&ctx.hex.cursor);
            if !inside && ctx.selected != 0 {
                ctx.jump(offset);
            }
        }
    }

    /// On screen, the cursor follows the picked section.
    fn on_select(&mut self, shown: bool, ctx: &mut Context) {
        let offset = ctx.rows.get(ctx.selected).and_then(|row| row.offset);
        if let (true, Some(offset)) = (shown, offset) {
            ctx.jump(offset);
        }
    }
}

/// Columns a hex row of `n` bytes takes: offset, bytes (a wider gap every
/// 8), the ASCII column between bars, the block's borders.
fn row_width(n: u64) -> u16 {
    let n = n as u16;
    10 + 3 * n + (n / 8).saturating_sub(1) + (n + 2) + 2
}

fn hex_rows(ctx: &Context, theme: Theme) -> Paragraph<'static> {
    let bytes: &[u8] = &ctx.doc.bytes;
    let len = bytes.len() as u64;
    let error_at = match &ctx.doc.opened {
        Opened::Broken(e) => e.offset(),
        _ => None,
    };
    let per_row = ctx.hex.bytes_per_row.max(1);
    let mut lines = Vec::new();
    for row in ctx.hex.top_row..ctx.hex.top_row + ctx.hex.visible_rows {
        let start = row * per_row;
        if start >= len {
            break;
        }
        let end = (start + per_row).min(len);
        let chunk = bytes.get(start as usize..end as usize).unwrap_or(&[]);
        let mut spans = vec![Span::styled(format!("{start:08x}  "), theme.dim())];
        let mut ascii = Vec::with_capacity(chunk.len());
        // Parts of a remote expert not fetched yet read as zeros: shown as
        // gaps, never as bytes.
        let whole_row = ctx.doc.bytes.has(start, end);
        for (i, &b) in chunk.iter().enumerate() {
            let offset = start + i as u64;
            if !whole_row && !ctx.doc.bytes.has(offset, offset + 1) {
                let gap = i % 8 == 7 && (i as u64) + 1 < per_row;
                spans.push(Span::styled("··", theme.dim()));
                spans.push(Span::raw(if gap { "  " } else { " " }));
                ascii.push(Span::styled(" ", theme.dim()));
                continue;
            }
            let style = byte_style(ctx, theme, offset, b, error_at);
            spans.push(Span::styled(format!("{b:02x}"), style));
            let gap = i % 8 == 7 && (i as u64) + 1 < per_row;
            spans.push(Span::raw(if gap { "  " } else { " " }));
            let c = if (0x20..0x7f).contains(&b) {
                b as char
            } else if b == 0 {
                '⋄'
            } else {
                '·'
            };
            ascii.push(Span::styled(c.to_string(), style));
        }
        for i in chunk.len()..per_row as usize {
            let gap = i % 8 == 7 && (i as u64) + 1 < per_row;
            spans.push(Span::raw(if gap { "    " } else { "   " }));
        }
        spans.push(Span::styled("│", theme.dim()));
        spans.extend(ascii);
        spans.push(Span::styled("│", theme.dim()));
        lines.push(Line::from(spans));
    }
    let section = region_at(ctx.regions, ctx.hex.cursor)
        .map(|r| r.label.clone())
        .unwrap_or_default();
    let title = format!(
        " hex  {:#x}/{:#x}  {} ",
        ctx.hex.cursor,
        len.saturating_sub(1),
        crate::diagnostics::printable(&section)
    );
    Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title))
}

fn byte_style(ctx: &Context, theme: Theme, offset: u64, byte: u8, error_at: Option<u64>) -> Style {
    let mut style = theme.byte(byte);
    if let Some(region) = region_at(ctx.regions, offset) {
        let damaged = matches!(region.kind, RegionKind::Section(i) if ctx.verification.damaged(i));
        style = style.patch(theme.region(region.kind, damaged));
    }
    if error_at == Some(offset) {
        style = style.patch(theme.damaged()).patch(theme.selected());
    }
    let matched =
        offset > ctx.hex.cursor && offset < ctx.hex.cursor.saturating_add(ctx.hex.match_len);
    if offset == ctx.hex.cursor || matched {
        style = style.patch(theme.selected());
    }
    style
}

/// Values of the bytes at the cursor, and what the cursor is on.
fn inspector(ctx: &Context, theme: Theme) -> Paragraph<'static> {
    let bytes: &[u8] = &ctx.doc.bytes;
    let at = ctx.hex.cursor as usize;
    let le = ctx.hex.little_endian;
    let take = |n: usize| -> Option<Vec<u8>> {
        let mut v = bytes.get(at..at.checked_add(n)?)?.to_vec();
        if !le {
            v.reverse();
        }
        Some(v)
    };
    let num = |n: usize, f: &dyn Fn(&[u8]) -> String| take(n).map_or("-".to_string(), |v| f(&v));
    let a = |v: &[u8], i: usize| v.get(i).copied().unwrap_or(0);
    let u = |v: &[u8]| {
        v.iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    let sign = |x: u64, bits: u32| ((x << (64 - bits)) as i64 >> (64 - bits)).to_string();
    let row1 = format!(
        "u8 {:<5} i8 {:<5} u16 {:<7} i16 {:<7} u32 {:<11} i32 {}",
        num(1, &|v| a(v, 0).to_string()),
        num(1, &|v| (a(v, 0) as i8).to_string()),
        num(2, &|v| u(v).to_string()),
        num(2, &|v| sign(u(v), 16)),
        num(4, &|v| u(v).to_string()),
        num(4, &|v| sign(u(v), 32)),
    );
    let row2 = format!(
        "u64 {:<21} i64 {}",
        num(8, &|v| u(v).to_string()),
        num(8, &|v| sign(u(v), 64)),
    );
    let row3 = format!(
        "f16 {:<12} bf16 {:<12} f32 {:<14} f64 {}",
        num(2, &|v| format!(
            "{:.6}",
            f16::from_bits(u(v) as u16).to_f32()
        )),
        num(2, &|v| format!(
            "{:.6}",
            bf16::from_bits(u(v) as u16).to_f32()
        )),
        num(4, &|v| format!("{:.7e}", f32::from_bits(u(v) as u32))),
        num(8, &|v| format!("{:.7e}", f64::from_bits(u(v)))),
    );
    let region = ctx.region_at_cursor().map_or("—".to_string(), |r| {
        format!(
            "{}  [{:#x}..{:#x})  +{:#x}",
            r.label,
            r.start,
            r.end,
            ctx.hex.cursor - r.start
        )
    });
    let lines = vec![
        Line::from(vec![
            Span::styled("at cursor  ", theme.dim()),
            Span::raw(region),
        ]),
        Line::raw(row1),
        Line::raw(row2),
        Line::raw(row3),
        Line::from(Span::styled(
            format!("{} endian (e toggles)", if le { "little" } else { "big" }),
            theme.dim(),
        )),
    ];
    Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" inspector "))
}
