//! Findings: the one shape every check reports in.
//!
//! A finding has a severity, a stable code (`grammar.left-recursion`,
//! `manifest.adapter-rank-mismatch`, …) that scripts can match on, a location
//! (section or file, byte range, line:column, JSON pointer), a message and a
//! hint. Checks never decide what a finding means for the exit code: the
//! [`crate::validation::ValidationReport`] does, once, for every verb.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

/// True for characters that steer a terminal or reorder text instead of
/// showing: C0/C1 controls (ESC starts escape sequences), DEL, and the
/// Unicode bidirectional and invisible formatting marks.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// [`is_unprintable`] without the line breaks and tabs text is made of.
pub fn is_unprintable_inline(c: char) -> bool {
    is_unprintable(c) && !matches!(c, '\n' | '\t' | '\r')
}

/// Pretty JSON safe to print: serde_json escapes C0 controls only, so
/// DEL, C1 controls and bidi or zero-width characters from a file are
/// written as `\uXXXX` escapes too (the same JSON, nothing for a terminal
/// to act on).
pub fn json_pretty(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    if !text.chars().any(is_unprintable) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unprintable(c) && c != '\n' {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` with every unprintable character written as `\u{..}`, so text from a
/// file (section names, messages quoting it) can never clear a screen, move
/// the cursor or fake a line when printed. Borrowed when nothing changes.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unprintable) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unprintable(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never fails anything.
    Note,
    /// Probably a mistake, but the file is usable: exit 0 unless `--strict`.
    Warning,
    /// The file is invalid or corrupt: exit 3.
    Error,
}

impl Severity {
    /// `error`, `warning`, `note`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Note => "note",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// Where a finding points. Every field is optional: a finding names what it knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The section (binary file) or archive member (legacy package).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// A file outside the container (sidecar, base model, input file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// First byte concerned, in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// One past the last byte concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
    /// 1-based line in a text section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column (characters) in a text section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// JSON pointer into a JSON section (`/base_models/0/adapters/0/r`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl Location {
    /// A section or member by name.
    pub fn section(name: impl Into<String>) -> Self {
        Self {
            section: Some(name.into()),
            ..Self::default()
        }
    }

    /// A file outside the container.
    pub fn file(path: impl Into<String>) -> Self {
        Self {
            file: Some(path.into()),
            ..Self::default()
        }
    }

    /// Adds a byte range.
    pub fn bytes(mut self, offset: u64, end: u64) -> Self {
        self.offset = Some(offset);
        self.end = Some(end);
        self
    }

    /// Adds a byte offset.
    pub fn at(mut self, offset: Option<u64>) -> Self {
        self.offset = offset;
        self
    }

    /// Adds a line and column.
    pub fn line_col(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = (column > 0).then_some(column);
        self
    }

    /// Adds a JSON pointer.
    pub fn pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for Location {
    /// `grammar.gbnf:12:3`, `manifest.json /base_models/0/r`, `layer.0 bytes 640..1280`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let mut place = self
            .section
            .clone()
            .or_else(|| self.file.clone())
            .unwrap_or_default();
        if let Some(line) = self.line {
            place.push_str(&format!(":{line}"));
            if let Some(column) = self.column {
                place.push_str(&format!(":{column}"));
            }
        }
        if !place.is_empty() {
            parts.push(place);
        }
        if let Some(pointer) = &self.pointer {
            parts.push(if pointer.is_empty() {
                "(root)".into()
            } else {
                pointer.clone()
            });
        }
        match (self.offset, self.end) {
            (Some(o), Some(e)) => parts.push(format!("bytes {o}..{e}")),
            (Some(o), None) => parts.push(format!("byte {o}")),
            _ => {}
        }
        f.write_str(&printable(&parts.join(" ")))
    }
}

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier, `area.what` in kebab case.
    pub code: String,
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub location: Location,
}

impl Finding {
    /// A finding without location or hint.
    pub fn new(severity: Severity, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity,
            code: code.into(),
            message: message.into(),
            hint: None,
            location: Location::default(),
        }
    }

    /// An error.
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    /// A warning.
    pub fn warning(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    /// A note.
    pub fn note(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Note, code, message)
    }

    /// Sets the location.
    pub fn at(mut self, location: Location) -> Self {
        self.location = location;
        self
    }

    /// Sets the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Finding {
    /// `warning[grammar.left-recursion] grammar.gbnf:3:1: message (hint: …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.severity.label(), printable(&self.code))?;
        if !self.location.is_empty() {
            write!(f, " {}", self.location)?;
        }
        write!(f, ": {}", printable(&self.message))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {}", printable(hint))?;
        }
        Ok(())
    }
}

/// How many findings of each severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub errors: usize,
    pub warnings: usize,
    pub notes: usize,
}

impl Counts {
    /// Counts `findings`.
    pub fn of(findings: &[Finding]) -> Self {
        let mut c = Self::default();
        for f in findings {
            match f.severity {
                Severity::Error => c.errors += 1,
                Severity::Warning => c.warnings += 1,
                Severity::Note => c.notes += 1,
            }
        }
        c
    }
}

/// `--strict`: every warning becomes an error (notes stay notes).
pub fn make_strict(findings: &mut [Finding]) {
    for f in findings {
        if f.severity == Severity::Warning {
            f.severity = Severity::Error;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pretty_escapes_what_serde_json_leaves_raw() {
        let value = serde_json::json!({"name": "evil\u{202e}txt.exe\u{7f}\u{1b}", "ok": "é"});
        let text = json_pretty(&value);
        assert!(text.contains(r"evil\u202etxt.exe\u007f\u001b"), "{text}");
        assert!(text.contains("é"), "printable text stays as it is");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value, "the same JSON");
    }

    #[test]
    fn finding_displays_code_location_and_hint() {
        let f = Finding::warning("grammar.left-recursion", "rule \"expr\" is left-recursive")
            .at(Location::section("grammar.gbnf").line_col(3, 1))
            .hint("rewrite as expr ::= term (op term)*");
        assert_eq!(
            f.to_string(),
            "warning[grammar.left-recursion] grammar.gbnf:3:1: rule \"expr\" is left-recursive\n  hint: rewrite as expr ::= term (op term)*"
        );
        let e = Finding::error("container.section-digest", "damaged")
            .at(Location::section("layer.0").bytes(640, 1280));
        assert_eq!(
            e.to_string(),
            "error[container.section-digest] layer.0 bytes 640..1280: damaged"
        );
    }

    #[test]
    fn unprintable_characters_are_escaped() {
        assert_eq!(printable("layer.0"), "layer.0");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\ny\r\u{7f}"), "x\\u{a}y\\u{d}\\u{7f}");
        assert_eq!(printable("\u{202e}fdp.exe"), "\\u{202e}fdp.exe");
        let f = Finding::error("c", "name \u{1b}[2J").at(Location::section("s\u{9b}x"));
        assert!(!f.to_string().chars().any(is_unprintable), "{f}");
    }

    #[test]
    fn strict_promotes_warnings_only() {
        let mut v = vec![
            Finding::warning("a", "x"),
            Finding::note("b", "y"),
            Finding::error("c", "z"),
        ];
        make_strict(&mut v);
        assert_eq!(
            Counts::of(&v),
            Counts {
                errors: 2,
                warnings: 0,
                notes: 1
            }
        );
    }
}
