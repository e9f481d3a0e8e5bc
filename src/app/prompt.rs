//! The line typed at the bottom of the screen: a jump to an offset or a
//! search, both moving the byte cursor.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::cursor::HexState;

/// What the typed line is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptKind {
    Jump,
    Search,
}

#[derive(Debug, Clone)]
pub struct Prompt {
    pub kind: PromptKind,
    pub text: String,
}

/// What a key did to the prompt.
pub enum Edit {
    /// Still typing (or the key meant nothing here).
    Typing,
    /// Esc: the prompt is gone, nothing happens.
    Cancel,
    /// Enter: act on the text.
    Submit,
}

impl Prompt {
    pub fn new(kind: PromptKind) -> Self {
        Self {
            kind,
            text: String::new(),
        }
    }

    /// Applies one key to the text being typed.
    pub fn edit(&mut self, key: KeyEvent) -> Edit {
        match key.code {
            KeyCode::Esc => return Edit::Cancel,
            KeyCode::Enter => return Edit::Submit,
            KeyCode::Backspace => {
                self.text.pop();
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => self.text.push(c),
            _ => {}
        }
        Edit::Typing
    }

    /// Jumps or searches in `bytes`; returns the message for the status line.
    pub fn submit(self, hex: &mut HexState, bytes: &[u8]) -> String {
        let len = bytes.len() as u64;
        match self.kind {
            PromptKind::Jump => match parse_jump(&self.text, hex.cursor) {
                Some(offset) if offset < len => {
                    hex.jump(offset, len);
                    format!("at {offset:#x} ({offset})")
                }
                Some(offset) => format!("{offset:#x} is past the end ({len} bytes)"),
                None if self.text.trim().starts_with('-') => format!(
                    "{:?} goes before the start of the file (the cursor is at {:#x})",
                    self.text, hex.cursor
                ),
                None => format!(
                    "not an offset: {:?} (use 0x1f0, 496, +16, -0x10)",
                    self.text
                ),
            },
            PromptKind::Search => match parse_pattern(&self.text) {
                Some(pattern) => {
                    hex.search = Some(pattern);
                    hex.search(bytes, true)
                }
                None => format!("bad search pattern {:?}", self.text),
            },
        }
    }
}

/// Parses `0x1f0`, `496`, `+16`, `-0x10` relative to `cursor`.
pub fn parse_jump(text: &str, cursor: u64) -> Option<u64> {
    let text = text.trim();
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    };
    if let Some(rest) = text.strip_prefix('+') {
        cursor.checked_add(number(rest)?)
    } else if let Some(rest) = text.strip_prefix('-') {
        cursor.checked_sub(number(rest)?)
    } else {
        number(text)
    }
}

/// Text, or hex bytes after a `#` (`#89 45 58 50`).
pub fn parse_pattern(text: &str) -> Option<Vec<u8>> {
    match text.strip_prefix('#') {
        Some(hex_text) => {
            let digits: String = hex_text.chars().filter(|c| !c.is_whitespace()).collect();
            hex::decode(digits).ok().filter(|b| !b.is_empty())
        }
        None => (!text.is_empty()).then(|| text.as_bytes().to_vec()),
    }
}
