//! Why a grammar was refused, and what [`super::check_gbnf`] found.

use super::Rule;

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
