//! Colours, switched off as a whole by `NO_COLOR`.

use ratatui::style::{Color, Modifier, Style};

use crate::format::inspect::RegionKind;

/// Byte classes, coloured as hexyl does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteClass {
    Null,
    Printable,
    Whitespace,
    OtherAscii,
    NonAscii,
}

pub fn byte_class(b: u8) -> ByteClass {
    match b {
        0 => ByteClass::Null,
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => ByteClass::Whitespace,
        0x21..=0x7e => ByteClass::Printable,
        0x01..=0x7f => ByteClass::OtherAscii,
        _ => ByteClass::NonAscii,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub colors: bool,
}

impl Theme {
    fn fg(self, color: Color) -> Style {
        if self.colors {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }

    pub fn byte(self, b: u8) -> Style {
        self.fg(match byte_class(b) {
            ByteClass::Null => Color::DarkGray,
            ByteClass::Printable => Color::Cyan,
            ByteClass::Whitespace => Color::Green,
            ByteClass::OtherAscii => Color::Magenta,
            ByteClass::NonAscii => Color::Yellow,
        })
    }

    /// Background tint of a structure region; damaged sections are red.
    pub fn region(self, kind: RegionKind, damaged: bool) -> Style {
        if !self.colors {
            return if damaged {
                Style::default().add_modifier(Modifier::UNDERLINED)
            } else {
                Style::default()
            };
        }
        let bg = match kind {
            _ if damaged => Color::Red,
            RegionKind::HeaderField => Color::Indexed(17),
            RegionKind::TocEntry(i) if i % 2 == 0 => Color::Indexed(22),
            RegionKind::TocEntry(_) => Color::Indexed(28),
            RegionKind::Section(i) if i % 2 == 0 => Color::Indexed(236),
            RegionKind::Section(_) => Color::Indexed(238),
            RegionKind::Padding => Color::Reset,
        };
        Style::default().bg(bg)
    }

    pub fn damaged(self) -> Style {
        if self.colors {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }

    pub fn ok(self) -> Style {
        self.fg(Color::Green)
    }

    pub fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub fn title(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    pub fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    pub fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}
