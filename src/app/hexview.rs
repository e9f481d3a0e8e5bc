//! TOC + hex browser: section list, hex rows with byte classes and the
//! structure overlaid, the region under the cursor and a value inspector.
//! Only the visible rows are read from the map, so any file size works.

use half::{bf16, f16};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::render::{section_list, LIST_WIDTH};
use super::state::{App, BYTES_PER_ROW};
use super::theme::Theme;
use crate::format::inspect::{region_at, Opened, RegionKind};

pub fn draw(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let [list, right] =
        Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(20)]).areas(area);
    frame.render_widget(section_list(app, theme, list.height), list);
    let [hex_area, info_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(8)]).areas(right);
    app.hex.visible_rows = u64::from(hex_area.height.saturating_sub(2)).max(1);
    app.goto(app.hex.cursor); // keep the cursor on screen after a resize
    frame.render_widget(hex_rows(app, theme), hex_area);
    frame.render_widget(inspector(app, theme), info_area);
}

fn hex_rows(app: &App, theme: Theme) -> Paragraph<'static> {
    let bytes: &[u8] = &app.doc.bytes;
    let len = bytes.len() as u64;
    let error_at = match &app.doc.opened {
        Opened::Broken(e) => e.offset(),
        _ => None,
    };
    let mut lines = Vec::new();
    for row in app.hex.top_row..app.hex.top_row + app.hex.visible_rows {
        let start = row * BYTES_PER_ROW;
        if start >= len {
            break;
        }
        let end = (start + BYTES_PER_ROW).min(len);
        let chunk = bytes.get(start as usize..end as usize).unwrap_or(&[]);
        let mut spans = vec![Span::styled(format!("{start:08x}  "), theme.dim())];
        let mut ascii = Vec::with_capacity(chunk.len());
        for (i, &b) in chunk.iter().enumerate() {
            let offset = start + i as u64;
            let style = byte_style(app, theme, offset, b, error_at);
            spans.push(Span::styled(format!("{b:02x}"), style));
            spans.push(Span::raw(if i == 7 { "  " } else { " " }));
            let c = if (0x20..0x7f).contains(&b) {
                b as char
            } else if b == 0 {
                '⋄'
            } else {
                '·'
            };
            ascii.push(Span::styled(c.to_string(), style));
        }
        for i in chunk.len()..BYTES_PER_ROW as usize {
            spans.push(Span::raw(if i == 7 { "    " } else { "   " }));
        }
        spans.push(Span::styled("│", theme.dim()));
        spans.extend(ascii);
        spans.push(Span::styled("│", theme.dim()));
        lines.push(Line::from(spans));
    }
    let title = format!(" hex  {:#x}/{:#x} ", app.hex.cursor, len.saturating_sub(1));
    Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title))
}

fn byte_style(app: &App, theme: Theme, offset: u64, byte: u8, error_at: Option<u64>) -> Style {
    let mut style = theme.byte(byte);
    if let Some(region) = region_at(&app.regions, offset) {
        let damaged = matches!(region.kind, RegionKind::Section(i) if app.verification.damaged(i));
        style = style.patch(theme.region(region.kind, damaged));
    }
    if error_at == Some(offset) {
        style = style.patch(theme.damaged()).patch(theme.selected());
    }
    if offset == app.hex.cursor {
        style = style.patch(theme.selected());
    }
    style
}

/// Values of the bytes at the cursor, and what the cursor is on.
fn inspector(app: &App, theme: Theme) -> Paragraph<'static> {
    let bytes: &[u8] = &app.doc.bytes;
    let at = app.hex.cursor as usize;
    let le = app.hex.little_endian;
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
    let region = app.region_at_cursor().map_or("—".to_string(), |r| {
        format!(
            "{}  [{:#x}..{:#x})  +{:#x}",
            r.label,
            r.start,
            r.end,
            app.hex.cursor - r.start
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
