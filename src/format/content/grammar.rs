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

mod cycles;
mod error;
mod lexer;
mod parser;

pub use error::{GrammarCheck, GrammarError};
use parser::Parser;

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

#[cfg(test)]
mod tests;
