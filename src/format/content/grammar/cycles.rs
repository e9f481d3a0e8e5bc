//! The whole-grammar checks, run once the text is parsed: undefined rules,
//! a missing `root`, and left recursion over every rule (reachable or not),
//! each left-recursive rule with the cycle it lies on.

use std::collections::HashMap;

use super::parser::{Item, Parser};
use super::{Grammar, GrammarCheck, GrammarError, MAX_CYCLE_SHOWN, MAX_TRACED_CYCLES};

impl Parser<'_> {
    /// Every whole-grammar problem, after the ones found while parsing.
    pub(super) fn finish_all(mut self) -> GrammarCheck {
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

    pub(super) fn finish(self) -> Result<Grammar, GrammarError> {
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
