//! The recursive-descent parser: llama.cpp's `llama-grammar.cpp` read rule
//! by rule, reduced to what the checks need (which rules an alternative can
//! start with).

use std::collections::HashMap;

use super::{GrammarError, Rule, MAX_NESTING, MAX_REPETITION};

/// One element of the rules as llama.cpp compiles them, reduced to what the
/// left-recursion check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Item {
    /// Matches at least one character or token.
    Term,
    /// A reference to another node.
    Ref(usize),
}

/// A user rule, or a rule llama.cpp generates for a group or a repetition.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) alts: Vec<Vec<Item>>,
    /// The user rule this node belongs to (itself for user rules).
    pub(super) owner: usize,
    pub(super) name: String,
    pub(super) defined: bool,
    pub(super) line: usize,
}

#[derive(Clone, Copy)]
pub(super) enum Quoted {
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

pub(super) struct Parser<'a> {
    pub(super) src: &'a str,
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    pub(super) nodes: Vec<Node>,
    pub(super) names: HashMap<String, usize>,
    /// Mirrors the size of llama.cpp's symbol table.
    pub(super) symbols: u64,
    pub(super) rules: Vec<Rule>,
    /// Every rule reference: (node, byte position, referencing rule node).
    pub(super) refs: Vec<(usize, usize, usize)>,
    pub(super) depth: usize,
    /// Byte offsets where lines start (after `\n`, `\r\n` or a lone `\r`).
    pub(super) line_starts: Vec<usize>,
    /// [`check_gbnf`]: read on past problems, collecting them in `issues`.
    pub(super) lenient: bool,
    pub(super) issues: Vec<GrammarError>,
    /// Names already reported as invalid (each once).
    pub(super) bad_names: std::collections::HashSet<String>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(src: &'a str) -> Self {
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

    pub(super) fn parse_rule(&mut self) -> Result<(), GrammarError> {
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
                b'"' => self.parse_literal(&mut seq, nested)?,
                b'[' => self.parse_class(&mut seq, nested)?,
                b'<' | b'!' => {
                    self.parse_token()?;
                    seq.last_start = Some(seq.items.len());
                    seq.items.push(Item::Term);
                    seq.n_prev = 1;
                    self.parse_space(nested);
                }
                b'(' => self.parse_group(&mut seq, owner, nested)?,
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
                b'{' => self.parse_braces(&mut seq, owner, nested)?,
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

    /// `"literal"`: matches its characters (an empty one matches nothing).
    fn parse_literal(&mut self, seq: &mut Seq, nested: bool) -> Result<(), GrammarError> {
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
        Ok(())
    }

    /// `[class]` / `[^class]` with ranges.
    fn parse_class(&mut self, seq: &mut Seq, nested: bool) -> Result<(), GrammarError> {
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
        Ok(())
    }

    /// `( alternatives )`: a rule of its own, as llama.cpp generates it.
    fn parse_group(
        &mut self,
        seq: &mut Seq,
        owner: usize,
        nested: bool,
    ) -> Result<(), GrammarError> {
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
        Ok(())
    }

    /// `{m}`, `{m,}`, `{m,n}` after an item.
    fn parse_braces(
        &mut self,
        seq: &mut Seq,
        owner: usize,
        nested: bool,
    ) -> Result<(), GrammarError> {
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
                    return Err(
                        self.syntax_at(self.pos, format!("expecting '}}', found {}", self.found()))
                    );
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
        self.repeat(seq, owner, at, '{', min, max)?;
        Ok(())
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
}

pub(super) fn line_starts(b: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, &c) in b.iter().enumerate() {
        let is_break = c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n'));
        if is_break {
            starts.push(i + 1);
        }
    }
    starts
}

pub(super) fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}
