//! GBNF grammar checks (the llama.cpp grammar format).
//!
//! [`parse_gbnf`] is a small recursive-descent parser that follows
//! llama.cpp's `llama-grammar.cpp` closely, so that a grammar it accepts is
//! one llama.cpp will load:
//!
//! - `name ::= alternatives`; names use letters, digits and `-` only.
//! - Spaces, tabs and `# comments` separate items. Inside parentheses, and
//!   right after `::=` or `|`, newlines are skipped too; elsewhere a newline
//!   ends the rule. A line that *starts* with `|` does not continue the
//!   previous rule (llama.cpp refuses it): put the `|` at the end of the line
//!   or wrap the alternatives in parentheses.
//! - Items: `"literal"`, `[class]` / `[^class]` with ranges, rule references,
//!   `( group )`, `.`, tokens `<[id]>` / `<text>` / `!<...>`, and the
//!   repetitions `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` (m at most 2000; an
//!   n above 2000 means no maximum, as in current llama.cpp).
//! - Escapes: `\n \r \t \\ \" \[ \] \-`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`.
//!
//! After parsing: every referenced rule must be defined, `root` must exist,
//! and no rule may be left-recursive (llama.cpp refuses those at load time).
//! Two checks are stricter than llama.cpp, because the grammars they catch
//! are almost certainly mistakes: a rule defined twice (llama.cpp silently
//! keeps the last) and an empty character class `[]` (which llama.cpp
//! silently treats as matching the empty string).
//!
//! The parser never panics: positions are checked, nesting is limited to
//! [`MAX_NESTING`] groups and all numbers use checked arithmetic.

use std::collections::HashMap;

/// Deepest nesting of parenthesised groups accepted.
pub const MAX_NESTING: usize = 256;

/// llama.cpp's `MAX_REPETITION_THRESHOLD`: the largest `{m,n}` bound, and
/// the largest product of nested repetitions.
pub const MAX_REPETITION: u64 = 2000;

/// Left-recursive rules of one cycle whose path is traced (the rest name
/// the cycle's size), so a huge cycle costs linear time.
const MAX_TRACED_CYCLES: usize = 16;
/// Rules shown in a traced cycle.
const MAX_CYCLE_SHOWN: usize = 12;

/// A parsed grammar: its rules in the order they are defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    pub rules: Vec<Rule>,
}

impl Grammar {
    /// The rule called `name`, if defined.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// One rule definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// 1-based line of the rule name.
    pub line: usize,
}

/// Why a grammar was refused. Lines and columns are 1-based; columns count
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    /// The text defines no rule.
    #[error("grammar is empty: it defines no rules")]
    Empty,

    /// Text that is not GBNF at this position.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },

    /// A string literal without its closing quote.
    #[error("line {line}, column {column}: unterminated string literal (no closing '\"')")]
    UnterminatedString { line: usize, column: usize },

    /// A character class without its closing bracket.
    #[error("line {line}, column {column}: unterminated character class (no closing ']')")]
    UnterminatedClass { line: usize, column: usize },

    /// An escape sequence llama.cpp does not accept.
    #[error("line {line}, column {column}: {message}")]
    BadEscape {
        line: usize,
        column: usize,
        message: String,
    },

    /// A rule refers to a name no rule defines.
    #[error("line {line}, column {column}: rule {rule:?} uses {name:?}, which is never defined")]
    UndefinedRule {
        name: String,
        rule: String,
        line: usize,
        column: usize,
    },

    /// No `root` rule, where llama.cpp starts.
    #[error("grammar has no 'root' rule (llama.cpp starts from 'root')")]
    MissingRoot,

    /// A rule name defined twice.
    #[error("line {line}: rule {name:?} is defined again (first on line {first_line})")]
    DuplicateRule {
        name: String,
        line: usize,
        first_line: usize,
    },

    /// Parenthesised groups nested beyond the parser's limit.
    #[error("line {line}, column {column}: groups nested deeper than {limit}")]
    TooDeep {
        line: usize,
        column: usize,
        limit: usize,
    },

    /// A malformed repetition (`{m,n}`, `*`, `+`, `?`).
    #[error("line {line}, column {column}: {message}")]
    Repetition {
        line: usize,
        column: usize,
        message: String,
    },

    /// A rule that can reach itself before consuming a character.
    #[error("line {line}: rule {name:?} is left-recursive ({cycle}): it can reach itself before matching any character, which llama.cpp refuses")]
    LeftRecursion {
        name: String,
        line: usize,
        /// The rules on the cycle, `a → b → a`.
        cycle: String,
    },

    /// A rule name with characters llama.cpp refuses (it accepts only
    /// `[a-zA-Z0-9-]`); reported by [`check_gbnf`], which reads on.
    #[error("line {line}, column {column}: rule name {name:?} uses {bad:?}, which llama.cpp refuses (names may only use letters, digits and '-')")]
    InvalidRuleName {
        name: String,
        bad: char,
        line: usize,
        column: usize,
    },

    /// The text starts with a UTF-8 byte-order mark (Windows editors write
    /// one), which llama.cpp reads as a bad rule name.
    #[error("line 1, column 1: the grammar starts with a UTF-8 byte-order mark, which llama.cpp does not skip")]
    ByteOrderMark,

    /// An alternative with nothing in it (`a ::= "x" | | "y"`, `()`): it
    /// matches the empty string, which is rarely what was meant.
    #[error("line {line}, column {column}: rule {rule:?} has an empty alternative (it matches the empty string)")]
    EmptyAlternative {
        rule: String,
        line: usize,
        column: usize,
    },
}

impl GrammarError {
    /// How much it matters: a note for what llama.cpp loads without
    /// complaint but is rarely meant (an empty alternative), a warning for
    /// everything llama.cpp refuses or silently changes.
    pub fn severity(&self) -> crate::diagnostics::Severity {
        match self {
            Self::EmptyAlternative { .. } => crate::diagnostics::Severity::Note,
            _ => crate::diagnostics::Severity::Warning,
        }
    }

    /// Stable finding code: `grammar.left-recursion`, `grammar.undefined-rule`, …
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "grammar.empty",
            Self::Syntax { .. } => "grammar.syntax",
            Self::UnterminatedString { .. } => "grammar.unterminated-string",
            Self::UnterminatedClass { .. } => "grammar.unterminated-class",
            Self::BadEscape { .. } => "grammar.bad-escape",
            Self::UndefinedRule { .. } => "grammar.undefined-rule",
            Self::MissingRoot => "grammar.missing-root",
            Self::DuplicateRule { .. } => "grammar.duplicate-rule",
            Self::TooDeep { .. } => "grammar.too-deep",
            Self::Repetition { .. } => "grammar.repetition",
            Self::LeftRecursion { .. } => "grammar.left-recursion",
            Self::InvalidRuleName { .. } => "grammar.invalid-rule-name",
            Self::EmptyAlternative { .. } => "grammar.empty-alternative",
            Self::ByteOrderMark => "grammar.byte-order-mark",
        }
    }

    /// (line, column) where the problem lies, when known (column 0: the whole line).
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            Self::Empty | Self::MissingRoot => None,
            Self::Syntax { line, column, .. }
            | Self::UnterminatedString { line, column }
            | Self::UnterminatedClass { line, column }
            | Self::BadEscape { line, column, .. }
            | Self::UndefinedRule { line, column, .. }
            | Self::TooDeep { line, column, .. }
            | Self::Repetition { line, column, .. }
            | Self::InvalidRuleName { line, column, .. }
            | Self::EmptyAlternative { line, column, .. } => Some((*line, *column)),
            Self::DuplicateRule { line, .. } | Self::LeftRecursion { line, .. } => Some((*line, 1)),
            Self::ByteOrderMark => Some((1, 1)),
        }
    }

    /// The message without its `line L, column C:` prefix (the location says it).
    pub fn message(&self) -> String {
        let full = self.to_string();
        match self.position() {
            Some((line, column)) => {
                let long = format!("line {line}, column {column}: ");
                let short = format!("line {line}: ");
                full.strip_prefix(&long)
                    .or_else(|| full.strip_prefix(&short))
                    .unwrap_or(&full)
                    .to_string()
            }
            None => full,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::LeftRecursion { name, .. } => format!(
                "llama.cpp will refuse to load this grammar; rewrite {name:?} with repetition, e.g. `expr ::= term (op term)*` instead of `expr ::= expr op term | term`"
            ),
            Self::InvalidRuleName { name, .. } => format!(
                "rename it to {:?} (and every reference to it)",
                name.replace(|c: char| !(c.is_ascii_alphanumeric() || c == '-'), "-")
            ),
            Self::UndefinedRule { name, .. } => {
                format!("define `{name} ::= …` or fix the spelling of the reference")
            }
            Self::MissingRoot => "add a `root ::= …` rule: llama.cpp starts there".into(),
            Self::DuplicateRule { .. } => {
                "llama.cpp keeps only the last definition: merge them with '|'".into()
            }
            Self::EmptyAlternative { .. } => {
                "remove the extra '|', or write \"\" if the empty match is meant".into()
            }
            Self::ByteOrderMark => "save the file as UTF-8 without a BOM".into(),
            _ => return None,
        })
    }
}

/// What [`check_gbnf`] found: every problem, not just the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrammarCheck {
    /// Rules defined, in order (as far as the text parsed).
    pub rules: Vec<Rule>,
    /// Every problem, in the order found (syntax, then names, then the
    /// whole-grammar checks). llama.cpp loads the grammar when none of them
    /// is a warning ([`GrammarError::severity`]).
    pub issues: Vec<GrammarError>,
}

/// Checks a grammar the way llama.cpp would load it, reporting every
/// problem instead of stopping at the first: rule names with characters
/// llama.cpp refuses are read on (and reported), a syntax error skips to the
/// next line that starts a rule, and undefined rules, a missing `root`, empty
/// alternatives and left recursion are reported over every rule, reachable
/// from `root` or not.
pub fn check_gbnf(text: &str) -> GrammarCheck {
    let mut p = Parser::new(text);
    p.lenient = true;
    if let Some(nul) = text.find('\0') {
        return GrammarCheck {
            rules: Vec::new(),
            issues: vec![p.syntax_at(nul, "NUL character in grammar".into())],
        };
    }
    if text.starts_with('\u{feff}') {
        p.issues.push(GrammarError::ByteOrderMark);
        p.pos = '\u{feff}'.len_utf8();
    }
    p.parse_space(true);
    while p.peek().is_some() {
        if let Err(e) = p.parse_rule() {
            p.issues.push(e);
            p.skip_to_next_rule();
        }
    }
    p.finish_all()
}

/// Parses and checks a GBNF grammar.
pub fn parse_gbnf(text: &str) -> Result<Grammar, GrammarError> {
    let mut p = Parser::new(text);
    if let Some(nul) = text.find('\0') {
        return Err(p.syntax_at(nul, "NUL character in grammar".into()));
    }
    p.parse_space(true);
    while p.peek().is_some() {
        p.parse_rule()?;
    }
    p.finish()
}

/// One element of the rules as llama.cpp compiles them, reduced to what the
/// left-recursion check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// Matches at least one character or token.
    Term,
    /// A reference to another node.
    Ref(usize),
}

/// A user rule, or a rule llama.cpp generates for a group or a repetition.
#[derive(Debug)]
struct Node {
    alts: Vec<Vec<Item>>,
    /// The user rule this node belongs to (itself for user rules).
    owner: usize,
    name: String,
    defined: bool,
    line: usize,
}

#[derive(Clone, Copy)]
enum Quoted {
    String(usize),
    Class(usize),
}

/// Sequence-local state while parsing one alternative.
struct Seq {
    items: Vec<Item>,
    /// Where the last item starts in `items`; `None` before any item.
    last_start: Option<usize>,
    /// llama.cpp's `n_prev_rules`: rules the next repetition would copy.
    n_prev: u64,
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    names: HashMap<String, usize>,
    /// Mirrors the size of llama.cpp's symbol table.
    symbols: u64,
    rules: Vec<Rule>,
    /// Every rule reference: (node, byte position, referencing rule node).
    refs: Vec<(usize, usize, usize)>,
    depth: usize,
    /// Byte offsets where lines start (after `\n`, `\r\n` or a lone `\r`).
    line_starts: Vec<usize>,
    /// [`check_gbnf`]: read on past problems, collecting them in `issues`.
    lenient: bool,
    issues: Vec<GrammarError>,
    /// Names already reported as invalid (each once).
    bad_names: std::collections::HashSet<String>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            nodes: Vec::new(),
            names: HashMap::new(),
            symbols: 0,
            rules: Vec::new(),
            refs: Vec::new(),
            depth: 0,
            line_starts: line_starts(src.as_bytes()),
            lenient: false,
            issues: Vec::new(),
            bad_names: Default::default(),
        }
    }

    // -- positions and errors ------------------------------------------------

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.pos
            .checked_add(offset)
            .and_then(|i| self.bytes.get(i))
            .copied()
    }

    fn line_col(&self, pos: usize) -> (usize, usize) {
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

    fn line_of(&self, pos: usize) -> usize {
        self.line_col(pos).0
    }

    fn syntax_at(&self, pos: usize, message: String) -> GrammarError {
        let (line, column) = self.line_col(pos);
        GrammarError::Syntax {
            line,
            column,
            message,
        }
    }

    fn repetition_at(&self, pos: usize, message: String) -> GrammarError {
        let (line, column) = self.line_col(pos);
        GrammarError::Repetition {
            line,
            column,
            message,
        }
    }

    fn unterminated(&self, q: Quoted) -> GrammarError {
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
    fn found(&self) -> String {
        match self.src.get(self.pos..).and_then(|s| s.chars().next()) {
            None => "end of input".into(),
            Some('\n') | Some('\r') => "end of line".into(),
            Some(c) => format!("{c:?}"),
        }
    }

    fn char_at(&self, pos: usize) -> Option<char> {
        self.src.get(pos..).and_then(|s| s.chars().next())
    }

    // -- lexical helpers -------------------------------------------------------

    fn parse_space(&mut self, newline_ok: bool) {
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

    fn parse_name(&mut self) -> Option<&'a str> {
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
    fn skip_to_next_rule(&mut self) {
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
    fn parse_int(&mut self) -> Result<Option<u64>, GrammarError> {
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
    fn parse_char(&mut self, ctx: Quoted) -> Result<u32, GrammarError> {
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

    // -- symbols -----------------------------------------------------------------

    fn intern(&mut self, name: &str) -> usize {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let id = self.nodes.len();
        self.nodes.push(Node {
            alts: Vec::new(),
            owner: id,
            name: name.to_string(),
            defined: false,
            line: 0,
        });
        self.names.insert(name.to_string(), id);
        self.symbols = self.symbols.saturating_add(1);
        id
    }

    fn generated(&mut self, owner: usize) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            alts: Vec::new(),
            owner,
            name: String::new(),
            defined: true,
            line: 0,
        });
        id
    }

    fn set_alts(&mut self, node: usize, alts: Vec<Vec<Item>>) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.alts = alts;
        }
    }

    // -- grammar -------------------------------------------------------------------

    fn parse_rule(&mut self) -> Result<(), GrammarError> {
        let start = self.pos;
        let Some(name) = self.parse_name() else {
            let hint = if self.peek() == Some(b'|') {
                " (a rule does not continue on a line that starts with '|': end the previous line with '|' or wrap the alternatives in parentheses)"
            } else {
                ""
            };
            return Err(self.syntax_at(
                start,
                format!("expecting a rule name, found {}{hint}", self.found()),
            ));
        };
        self.parse_space(false);
        if !self
            .bytes
            .get(self.pos..)
            .is_some_and(|b| b.starts_with(b"::="))
        {
            let hint = if self.peek() == Some(b'_') {
                " (rule names may only use letters, digits and '-')"
            } else {
                ""
            };
            return Err(self.syntax_at(
                self.pos,
                format!(
                    "expecting '::=' after rule name {name:?}, found {}{hint}",
                    self.found()
                ),
            ));
        }
        let line = self.line_of(start);
        let id = self.intern(name);
        if let Some(node) = self.nodes.get_mut(id) {
            if node.defined {
                let duplicate = GrammarError::DuplicateRule {
                    name: name.to_string(),
                    line,
                    first_line: node.line,
                };
                if !self.lenient {
                    return Err(duplicate);
                }
                self.issues.push(duplicate);
            } else {
                node.defined = true;
                node.line = line;
            }
        }
        self.rules.push(Rule {
            name: name.to_string(),
            line,
        });
        self.pos += 3;
        self.parse_space(true);
        let alts = self.parse_alternates(id, false)?;
        self.set_alts(id, alts);

        match self.peek() {
            Some(b'\r') => {
                self.pos += if self.peek_at(1) == Some(b'\n') { 2 } else { 1 };
            }
            Some(b'\n') => self.pos += 1,
            None => {}
            Some(_) => {
                // `a ::= "x" |` + newline goes on to the next line, as in
                // llama.cpp, so the next rule's `::=` lands here.
                let pulled_in = self
                    .bytes
                    .get(self.pos..)
                    .is_some_and(|b| b.starts_with(b"::="));
                let hint = if pulled_in {
                    " (a line that ends with '|' continues on the next line, so the next rule was read as part of this one: remove the trailing '|')"
                } else {
                    ""
                };
                return Err(self.syntax_at(
                    self.pos,
                    format!(
                        "expecting the end of rule {name:?} (newline or end of input), found {}{hint}",
                        self.found()
                    ),
                ));
            }
        }
        self.parse_space(true);
        Ok(())
    }

    fn parse_alternates(
        &mut self,
        owner: usize,
        nested: bool,
    ) -> Result<Vec<Vec<Item>>, GrammarError> {
        let mut alts = vec![self.parse_alternative(owner, nested)?];
        while self.peek() == Some(b'|') {
            self.pos += 1;
            self.parse_space(true);
            alts.push(self.parse_alternative(owner, nested)?);
        }
        Ok(alts)
    }

    /// One alternative; [`check_gbnf`] reports one with nothing in it.
    fn parse_alternative(&mut self, owner: usize, nested: bool) -> Result<Vec<Item>, GrammarError> {
        let start = self.pos;
        let items = self.parse_sequence(owner, nested)?;
        if self.lenient && self.pos == start {
            let (line, column) = self.line_col(start);
            let rule = self
                .nodes
                .get(owner)
                .map(|n| n.name.clone())
                .unwrap_or_default();
            self.issues
                .push(GrammarError::EmptyAlternative { rule, line, column });
        }
        Ok(items)
    }

    fn parse_sequence(&mut self, owner: usize, nested: bool) -> Result<Vec<Item>, GrammarError> {
        let mut seq = Seq {
            items: Vec::new(),
            last_start: None,
            n_prev: 1,
        };
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    let start = self.pos;
                    self.pos += 1;
                    let mut empty = true;
                    loop {
                        match self.peek() {
                            None => return Err(self.unterminated(Quoted::String(start))),
                            Some(b'"') => break,
                            Some(_) => {
                                self.parse_char(Quoted::String(start))?;
                                empty = false;
                            }
                        }
                    }
                    self.pos += 1;
                    seq.last_start = Some(seq.items.len());
                    if !empty {
                        seq.items.push(Item::Term);
                    }
                    seq.n_prev = 1;
                    self.parse_space(nested);
                }
                b'[' => {
                    let start = self.pos;
                    self.pos += 1;
                    if self.peek() == Some(b'^') {
                        self.pos += 1;
                    }
                    let mut ranges = 0usize;
                    loop {
                        match self.peek() {
                            None => return Err(self.unterminated(Quoted::Class(start))),
                            Some(b']') => break,
                            Some(_) => {
                                self.parse_char(Quoted::Class(start))?;
                                if self.peek() == Some(b'-') && self.peek_at(1) != Some(b']') {
                                    if self.peek_at(1).is_none() {
                                        return Err(self.unterminated(Quoted::Class(start)));
                                    }
                                    self.pos += 1;
                                    self.parse_char(Quoted::Class(start))?;
                                }
                                ranges += 1;
                            }
                        }
                    }
                    if ranges == 0 {
                        return Err(self.syntax_at(
                            start,
                            "empty character class matches nothing (llama.cpp would treat it as the empty string)".into(),
                        ));
                    }
                    self.pos += 1;
                    seq.last_start = Some(seq.items.len());
                    seq.items.push(Item::Term);
                    seq.n_prev = 1;
                    self.parse_space(nested);
                }
                b'<' | b'!' => {
                    self.parse_token()?;
                    seq.last_start = Some(seq.items.len());
                    seq.items.push(Item::Term);
                    seq.n_prev = 1;
                    self.parse_space(nested);
                }
                b'(' => {
                    let start = self.pos;
                    self.depth += 1;
                    if self.depth > MAX_NESTING {
                        let (line, column) = self.line_col(start);
                        return Err(GrammarError::TooDeep {
                            line,
                            column,
                            limit: MAX_NESTING,
                        });
                    }
                    self.pos += 1;
                    self.parse_space(true);
                    let symbols_before = self.symbols;
                    let group = self.generated(owner);
                    self.symbols = self.symbols.saturating_add(1);
                    let alts = self.parse_alternates(owner, true)?;
                    if self.peek() != Some(b')') {
                        let (line, column) = self.line_col(start);
                        return Err(self.syntax_at(
                            self.pos,
                            format!(
                                "expecting ')' to close the group opened at line {line}, column {column}, found {}",
                                self.found()
                            ),
                        ));
                    }
                    self.depth -= 1;
                    self.set_alts(group, alts);
                    seq.n_prev = self.symbols.saturating_sub(symbols_before).max(1);
                    seq.last_start = Some(seq.items.len());
                    seq.items.push(Item::Ref(group));
                    self.pos += 1;
                    self.parse_space(nested);
                }
                b'.' => {
                    self.pos += 1;
                    seq.last_start = Some(seq.items.len());
                    seq.items.push(Item::Term);
                    seq.n_prev = 1;
                    self.parse_space(nested);
                }
                b'*' | b'+' | b'?' => {
                    let at = self.pos;
                    self.pos += 1;
                    self.parse_space(nested);
                    let (min, max) = match c {
                        b'*' => (0, None),
                        b'+' => (1, None),
                        _ => (0, Some(1)),
                    };
                    self.repeat(&mut seq, owner, at, char::from(c), min, max)?;
                }
                b'{' => {
                    let at = self.pos;
                    self.pos += 1;
                    self.parse_space(nested);
                    let Some(min) = self.parse_int()? else {
                        return Err(self.syntax_at(
                            self.pos,
                            format!("expecting a number after '{{', found {}", self.found()),
                        ));
                    };
                    self.parse_space(nested);
                    let max = match self.peek() {
                        Some(b'}') => {
                            self.pos += 1;
                            Some(min)
                        }
                        Some(b',') => {
                            self.pos += 1;
                            self.parse_space(nested);
                            let max = self.parse_int()?;
                            self.parse_space(nested);
                            if self.peek() != Some(b'}') {
                                return Err(self.syntax_at(
                                    self.pos,
                                    format!("expecting '}}', found {}", self.found()),
                                ));
                            }
                            self.pos += 1;
                            max
                        }
                        _ => {
                            return Err(self.syntax_at(
                                self.pos,
                                format!("expecting ',' or '}}', found {}", self.found()),
                            ))
                        }
                    };
                    self.parse_space(nested);
                    self.repeat(&mut seq, owner, at, '{', min, max)?;
                }
                c if is_word_char(c) => {
                    let start = self.pos;
                    let Some(name) = self.parse_name() else {
                        break;
                    };
                    let id = self.intern(name);
                    self.refs.push((id, start, owner));
                    seq.last_start = Some(seq.items.len());
                    seq.items.push(Item::Ref(id));
                    seq.n_prev = 1;
                    self.parse_space(nested);
                }
                _ => break,
            }
        }
        Ok(seq.items)
    }

    /// `<[id]>`, `<text>`, optionally negated with `!`.
    fn parse_token(&mut self) -> Result<(), GrammarError> {
        let start = self.pos;
        if self.peek() == Some(b'!') {
            self.pos += 1;
        }
        if self.peek() != Some(b'<') {
            return Err(self.syntax_at(
                self.pos,
                format!("expecting '<' to start a token, found {}", self.found()),
            ));
        }
        self.pos += 1;
        if self.peek() == Some(b'[') {
            self.pos += 1;
            let id_at = self.pos;
            let id = self.parse_int()?;
            match id {
                None => {
                    return Err(self.syntax_at(
                        self.pos,
                        format!("expecting a token id after '<[', found {}", self.found()),
                    ))
                }
                Some(v) if v > u64::from(u32::MAX) => {
                    return Err(self.syntax_at(id_at, format!("token id {v} is too large")))
                }
                Some(_) => {}
            }
            for want in [b']', b'>'] {
                if self.peek() != Some(want) {
                    return Err(self.syntax_at(
                        self.pos,
                        format!("expecting '{}', found {}", char::from(want), self.found()),
                    ));
                }
                self.pos += 1;
            }
            return Ok(());
        }
        while let Some(c) = self.peek() {
            if c == b'>' {
                self.pos += 1;
                return Ok(());
            }
            self.pos += 1;
        }
        Err(self.syntax_at(start, "unterminated token (no closing '>')".into()))
    }

    /// Wraps the last item of `seq` in a repetition, as llama.cpp rewrites
    /// `S{m,n}` into `S` m times followed by optional rules.
    fn repeat(
        &mut self,
        seq: &mut Seq,
        owner: usize,
        at: usize,
        op: char,
        min: u64,
        max: Option<u64>,
    ) -> Result<(), GrammarError> {
        let Some(start) = seq.last_start else {
            return Err(self.syntax_at(at, format!("'{op}' has no preceding item to repeat")));
        };
        if start >= seq.items.len() {
            return Err(self.syntax_at(
                at,
                format!("'{op}' repeats an item that matches nothing (an empty literal or a zero repetition)"),
            ));
        }
        if min > MAX_REPETITION {
            return Err(self.repetition_at(
                at,
                format!("repetition count above {MAX_REPETITION} (llama.cpp's limit)"),
            ));
        }
        // Current llama.cpp reads a maximum above the limit as "no maximum".
        let max = max.filter(|&m| m <= MAX_REPETITION);
        if let Some(m) = max {
            if m < min {
                return Err(self.repetition_at(
                    at,
                    format!("repetition maximum {m} is below the minimum {min}"),
                ));
            }
        }
        let total = match max {
            Some(m) if m > 0 => m,
            _ if min > 0 => min,
            _ => 1,
        };
        if seq.n_prev.saturating_mul(total) >= MAX_REPETITION {
            return Err(self.repetition_at(
                at,
                format!("nested repetitions expand to {MAX_REPETITION} rules or more (llama.cpp's limit)"),
            ));
        }
        let n_opt = match max {
            None => 1,
            Some(m) => m - min,
        };
        self.symbols = self.symbols.saturating_add(n_opt);
        let prev = seq.items.split_off(start);
        if min >= 1 {
            // Copies 2..m add no new leftmost references: one is enough.
            seq.items.extend_from_slice(&prev);
        }
        if n_opt > 0 {
            // llama.cpp builds a chain of `n_opt` optional rules
            // (`S S' | ε`); one node has the same leftmost references. An
            // unbounded repetition refers to itself (`S' ::= S S' | ε`).
            let node = self.generated(owner);
            let mut first = prev;
            if max.is_none() {
                first.push(Item::Ref(node));
            }
            self.set_alts(node, vec![first, Vec::new()]);
            seq.items.push(Item::Ref(node));
        }
        seq.n_prev = seq.n_prev.saturating_mul(total);
        Ok(())
    }

    // -- checks ----------------------------------------------------------------------

    /// Every whole-grammar problem, after the ones found while parsing.
    fn finish_all(mut self) -> GrammarCheck {
        if self.rules.is_empty() && self.issues.is_empty() {
            self.issues.push(GrammarError::Empty);
        }
        let mut reported = std::collections::HashSet::new();
        for &(id, pos, owner) in &self.refs {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if !node.defined && reported.insert(id) {
                let (line, column) = self.line_col(pos);
                let rule = self
                    .nodes
                    .get(owner)
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                self.issues.push(GrammarError::UndefinedRule {
                    name: node.name.clone(),
                    rule,
                    line,
                    column,
                });
            }
        }
        let has_root = self
            .names
            .get("root")
            .and_then(|&id| self.nodes.get(id))
            .is_some_and(|n| n.defined);
        if !has_root && !self.rules.is_empty() {
            self.issues.push(GrammarError::MissingRoot);
        }
        let recursion = self.left_recursive_rules();
        self.issues.extend(recursion);
        GrammarCheck {
            rules: self.rules,
            issues: self.issues,
        }
    }

    /// Every user rule on a left-recursive cycle, each once, in definition
    /// order, with the cycle it lies on.
    fn left_recursive_rules(&self) -> Vec<GrammarError> {
        let edges = self.leftmost_edges();
        let n = self.nodes.len();
        let scc = strongly_connected(&edges);
        let mut sizes: HashMap<usize, usize> = HashMap::new();
        for &c in &scc {
            *sizes.entry(c).or_default() += 1;
        }
        let mut cyclic = vec![false; n];
        for (v, out) in edges.iter().enumerate() {
            let size = scc.get(v).and_then(|c| sizes.get(c)).copied().unwrap_or(0);
            if size > 1 || out.contains(&v) {
                if let Some(c) = cyclic.get_mut(v) {
                    *c = true;
                }
            }
        }
        let mut out = Vec::new();
        let mut seen_owner = std::collections::HashSet::new();
        // Each cycle is traced (a search over its component) for the first
        // rules of a component only: a 100 000-rule cycle stays linear.
        let mut traced: HashMap<usize, usize> = HashMap::new();
        for (v, node) in self.nodes.iter().enumerate() {
            if !cyclic.get(v).copied().unwrap_or(false) || !seen_owner.insert(node.owner) {
                continue;
            }
            let Some(owner) = self.nodes.get(node.owner) else {
                continue;
            };
            if !owner.defined {
                continue;
            }
            let comp = scc.get(v).copied().unwrap_or(usize::MAX);
            let count = traced.entry(comp).or_default();
            *count += 1;
            let cycle = if *count <= MAX_TRACED_CYCLES {
                self.cycle_through(v, &edges, &scc)
            } else {
                let size = sizes.get(&comp).copied().unwrap_or(0);
                format!("on a cycle of {size} grammar nodes")
            };
            out.push(GrammarError::LeftRecursion {
                name: owner.name.clone(),
                line: owner.line,
                cycle,
            });
        }
        out.sort_by_key(|e| e.position());
        out
    }

    /// The shortest cycle through `start` inside its component, as rule names.
    fn cycle_through(&self, start: usize, edges: &[Vec<usize>], scc: &[usize]) -> String {
        let comp = scc.get(start).copied();
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut found = false;
        'search: while let Some(v) = queue.pop_front() {
            for &t in edges.get(v).map(Vec::as_slice).unwrap_or(&[]) {
                if scc.get(t).copied() != comp {
                    continue;
                }
                if t == start {
                    prev.insert(usize::MAX, v);
                    found = true;
                    break 'search;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(t) {
                    e.insert(v);
                    queue.push_back(t);
                }
            }
        }
        let owner_name = |v: usize| {
            self.nodes
                .get(v)
                .and_then(|n| self.nodes.get(n.owner))
                .map(|n| n.name.clone())
                .unwrap_or_default()
        };
        let mut path = vec![owner_name(start)];
        if found {
            let mut back = Vec::new();
            let mut v = prev.get(&usize::MAX).copied();
            while let Some(node) = v.filter(|&x| x != start) {
                back.push(owner_name(node));
                v = prev.get(&node).copied();
                if back.len() > self.nodes.len() {
                    break;
                }
            }
            back.reverse();
            path.extend(back);
        }
        path.push(owner_name(start));
        path.dedup();
        if path.len() > MAX_CYCLE_SHOWN {
            let last = path.last().cloned().unwrap_or_default();
            path.truncate(MAX_CYCLE_SHOWN - 1);
            path.push(format!("… {last}"));
        }
        if path.len() == 1 {
            path.push(path.first().cloned().unwrap_or_default());
        }
        path.join(" → ")
    }

    fn finish(self) -> Result<Grammar, GrammarError> {
        if self.rules.is_empty() {
            return Err(GrammarError::Empty);
        }
        for &(id, pos, owner) in &self.refs {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if !node.defined {
                let (line, column) = self.line_col(pos);
                let rule = self
                    .nodes
                    .get(owner)
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                return Err(GrammarError::UndefinedRule {
                    name: node.name.clone(),
                    rule,
                    line,
                    column,
                });
            }
        }
        if !self
            .names
            .get("root")
            .and_then(|&id| self.nodes.get(id))
            .is_some_and(|n| n.defined)
        {
            return Err(GrammarError::MissingRoot);
        }
        if let Some(error) = self.left_recursive_rules().into_iter().next() {
            return Err(error);
        }
        Ok(Grammar { rules: self.rules })
    }

    /// llama.cpp's `llama_grammar_detect_left_recursion` follows, from each
    /// alternative, its leftmost reference, and the next one while the
    /// referenced rule has an empty alternative. These are those edges; a
    /// cycle through them is left recursion.
    fn leftmost_edges(&self) -> Vec<Vec<usize>> {
        let may_be_empty: Vec<bool> = self
            .nodes
            .iter()
            .map(|node| node.alts.iter().any(Vec::is_empty))
            .collect();
        self.nodes
            .iter()
            .map(|node| {
                let mut out = Vec::new();
                for alt in &node.alts {
                    for item in alt {
                        match *item {
                            Item::Term => break,
                            Item::Ref(t) => {
                                out.push(t);
                                if !may_be_empty.get(t).copied().unwrap_or(false) {
                                    break;
                                }
                            }
                        }
                    }
                }
                out
            })
            .collect()
    }
}

/// Tarjan's strongly connected components, iterative (long rule chains
/// cannot overflow the stack): the component number of each node.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![usize::MAX; n];
    let mut stack = Vec::new();
    let mut next_index = 0usize;
    let mut next_comp = 0usize;
    for root in 0..n {
        if index.get(root).copied() != Some(usize::MAX) {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut i)) = work.last_mut() {
            if *i == 0 && index.get(v).copied() == Some(usize::MAX) {
                if let (Some(x), Some(l), Some(o)) =
                    (index.get_mut(v), low.get_mut(v), on_stack.get_mut(v))
                {
                    *x = next_index;
                    *l = next_index;
                    *o = true;
                }
                next_index += 1;
                stack.push(v);
            }
            let succ = edges.get(v).and_then(|e| e.get(*i)).copied();
            *i += 1;
            match succ {
                Some(t) if index.get(t).copied() == Some(usize::MAX) => work.push((t, 0)),
                Some(t) => {
                    if on_stack.get(t).copied().unwrap_or(false) {
                        let ti = index.get(t).copied().unwrap_or(usize::MAX);
                        if let Some(l) = low.get_mut(v) {
                            *l = (*l).min(ti);
                        }
                    }
                }
                None => {
                    work.pop();
                    let lv = low.get(v).copied().unwrap_or(0);
                    if let Some(&(parent, _)) = work.last() {
                        if let Some(l) = low.get_mut(parent) {
                            *l = (*l).min(lv);
                        }
                    }
                    if Some(lv) == index.get(v).copied() {
                        while let Some(w) = stack.pop() {
                            if let Some(o) = on_stack.get_mut(w) {
                                *o = false;
                            }
                            if let Some(c) = comp.get_mut(w) {
                                *c = next_comp;
                            }
                            if w == v {
                                break;
                            }
                        }
                        next_comp += 1;
                    }
                }
            }
        }
    }
    comp
}

fn line_starts(b: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, &c) in b.iter().enumerate() {
        let is_break = c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n'));
        if is_break {
            starts.push(i + 1);
        }
    }
    starts
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

#[cfg(test)]
mod tests;
