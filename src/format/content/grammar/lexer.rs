//! Positions, errors and the lexical layer of the parser: spaces and
//! comments, names, numbers and escaped characters, each as llama.cpp reads
//! them.

use super::parser::{is_word_char, Parser, Quoted};
use super::GrammarError;

impl<'a> Parser<'a> {
    // -- positions and errors ------------------------------------------------

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(super) fn peek_at(&self, offset: usize) -> Option<u8> {
        self.pos
            .checked_add(offset)
            .and_then(|i| self.bytes.get(i))
            .copied()
    }

    pub(super) fn line_col(&self, pos: usize) -> (usize, usize) {
        // Index of the last line start at or before `pos`.
        let idx = self
            .line_starts
            .partition_point(|&s| s <= pos)
            .saturating_sub(1);
        let start = self.line_starts.get(idx).copied().unwrap_or(0);
        let column = self
            .src
            .get(start..)
            .map(|rest| {
                rest.char_indices()
                    .take_while(|&(i, _)| start + i < pos)
                    .count()
            })
            .unwrap_or(0);
        (idx + 1, column + 1)
    }

    pub(super) fn line_of(&self, pos: usize) -> usize {
        self.line_col(pos).0
    }

    pub(super) fn syntax_at(&self, pos: usize, message: String) -> GrammarError {
        let (line, column) = self.line_col(pos);
        GrammarError::Syntax {
            line,
            column,
            message,
        }
    }

    pub(super) fn repetition_at(&self, pos: usize, message: String) -> GrammarError {
        let (line, column) = self.line_col(pos);
        GrammarError::Repetition {
            line,
            column,
            message,
        }
    }

    pub(super) fn unterminated(&self, q: Quoted) -> GrammarError {
        match q {
            Quoted::String(at) => {
                let (line, column) = self.line_col(at);
                GrammarError::UnterminatedString { line, column }
            }
            Quoted::Class(at) => {
                let (line, column) = self.line_col(at);
                GrammarError::UnterminatedClass { line, column }
            }
        }
    }

    /// Describes what is at `self.pos`, for error messages.
    pub(super) fn found(&self) -> String {
        match self.src.get(self.pos..).and_then(|s| s.chars().next()) {
            None => "end of input".into(),
            Some('\n') | Some('\r') => "end of line".into(),
            Some(c) => format!("{c:?}"),
        }
    }

    pub(super) fn char_at(&self, pos: usize) -> Option<char> {
        self.src.get(pos..).and_then(|s| s.chars().next())
    }

    // -- lexical helpers -------------------------------------------------------

    pub(super) fn parse_space(&mut self, newline_ok: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' => self.pos += 1,
                b'\r' | b'\n' if newline_ok => self.pos += 1,
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\r' || c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    pub(super) fn parse_name(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let lenient = self.lenient;
        while self
            .peek()
            .is_some_and(|c| is_word_char(c) || (lenient && c == b'_'))
        {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        let name = self.src.get(start..self.pos)?;
        if let Some(bad) = name.find('_') {
            if self.bad_names.insert(name.to_string()) {
                let (line, column) = self.line_col(start + bad);
                self.issues.push(GrammarError::InvalidRuleName {
                    name: name.to_string(),
                    bad: '_',
                    line,
                    column,
                });
            }
        }
        Some(name)
    }

    /// After a syntax error: on to the next line that starts with
    /// `name ::=`, so one mistake does not hide the rest of the grammar.
    pub(super) fn skip_to_next_rule(&mut self) {
        self.depth = 0;
        let from = self.pos;
        let next = self
            .line_starts
            .iter()
            .copied()
            .filter(|&s| s > from)
            .find(|&s| {
                let line = self.src.get(s..).unwrap_or("");
                let line = line.trim_start_matches([' ', '\t']);
                let name_len = line
                    .bytes()
                    .take_while(|&c| is_word_char(c) || c == b'_')
                    .count();
                name_len > 0
                    && line
                        .get(name_len..)
                        .is_some_and(|rest| rest.trim_start_matches([' ', '\t']).starts_with("::="))
            });
        self.pos = next.unwrap_or(self.bytes.len());
        self.parse_space(true);
    }

    /// Digits at `self.pos` as a u64; `Ok(None)` if there are none.
    pub(super) fn parse_int(&mut self) -> Result<Option<u64>, GrammarError> {
        let start = self.pos;
        let mut value: Option<u64> = Some(0);
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            value = value
                .and_then(|v| v.checked_mul(10))
                .and_then(|v| v.checked_add(u64::from(c - b'0')));
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        match value {
            Some(v) => Ok(Some(v)),
            None => Err(self.repetition_at(start, "number too large".into())),
        }
    }

    /// Parses one (possibly escaped) character of a literal or class.
    pub(super) fn parse_char(&mut self, ctx: Quoted) -> Result<u32, GrammarError> {
        match self.peek() {
            None => Err(self.unterminated(ctx)),
            Some(b'\\') => {
                let at = self.pos;
                let Some(esc) = self.peek_at(1) else {
                    return Err(self.unterminated(ctx));
                };
                let digits = match esc {
                    b'x' => 2,
                    b'u' => 4,
                    b'U' => 8,
                    b't' | b'r' | b'n' | b'\\' | b'"' | b'[' | b']' | b'-' => {
                        self.pos += 2;
                        return Ok(match esc {
                            b't' => 9,
                            b'r' => 13,
                            b'n' => 10,
                            other => u32::from(other),
                        });
                    }
                    _ => {
                        let shown = self.char_at(at + 1).unwrap_or('?');
                        let (line, column) = self.line_col(at);
                        return Err(GrammarError::BadEscape {
                            line,
                            column,
                            message: format!(
                                "unknown escape '\\{shown}' (use \\n \\r \\t \\\\ \\\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH)"
                            ),
                        });
                    }
                };
                self.pos += 2;
                let mut value: u32 = 0;
                for _ in 0..digits {
                    let d = self.peek().and_then(|c| char::from(c).to_digit(16));
                    let Some(d) = d else {
                        let (line, column) = self.line_col(at);
                        return Err(GrammarError::BadEscape {
                            line,
                            column,
                            message: format!(
                                "escape '\\{}' needs {digits} hex digits",
                                char::from(esc)
                            ),
                        });
                    };
                    value = (value << 4) | d;
                    self.pos += 1;
                }
                Ok(value)
            }
            Some(_) => match self.char_at(self.pos) {
                Some(c) => {
                    self.pos += c.len_utf8();
                    Ok(u32::from(c))
                }
                None => Err(self.unterminated(ctx)),
            },
        }
    }
}
