use super::*;

const FIXTURE: &str = r#"root ::= select-stmt ";"?
select-stmt ::= "SELECT " columns " FROM " ident where?
columns ::= "*" | ident ("," " "? ident)*
where ::= " WHERE " ident " = " value
ident ::= [a-zA-Z_] [a-zA-Z0-9_]*
value ::= [0-9]+ | "'" [^']* "'""#;

fn fixture_grammar() -> String {
    use std::io::Read;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm-sql-dora.v0.3.0.expert"
    );
    let bytes = std::fs::read(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == b"grammar.gbnf" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return s;
        }
    }
    panic!("no grammar.gbnf in fixture");
}

fn err(text: &str) -> GrammarError {
    match parse_gbnf(text) {
        Ok(g) => panic!("accepted {text:?}: {g:?}"),
        Err(e) => e,
    }
}

fn ok(text: &str) -> Grammar {
    match parse_gbnf(text) {
        Ok(g) => g,
        Err(e) => panic!("refused {text:?}: {e}"),
    }
}

#[test]
fn fixture_grammar_parses() {
    let text = fixture_grammar();
    assert_eq!(text.trim_end(), FIXTURE);
    let g = ok(&text);
    let names: Vec<&str> = g.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["root", "select-stmt", "columns", "where", "ident", "value"]
    );
    assert_eq!(g.rule("value").unwrap().line, 6);
    assert_eq!(g.rule("root").unwrap().line, 1);
}

#[test]
fn llama_cpp_syntax() {
    // Multi-line rule bodies, comments, escapes, classes, tokens,
    // every repetition form.
    let g = ok(r#"
# leading comment
root   ::= object | array # trailing comment
object ::=
  "{" ws (
        string ":" ws value
("," ws string ":" ws value)*
  )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
value  ::= object | array | string | number | ("true" | "false" | "null") ws |
       "\x41\u00e9\U0001F600\n\t\\\"\[\]" | . | <[42]> | !<[7]> | <think> | "é" [é-ü]
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,} )? ws
ws ::= | " " | "\n" [ \t]{0,20}
"#);
    assert_eq!(g.rules.len(), 7);
    assert_eq!(g.rule("object").unwrap().line, 4);
    // CRLF line endings.
    ok("root ::= a\r\na ::= \"x\"\r\n");
    // Empty alternatives and empty literals are fine.
    ok("root ::= \"\" | ");
    ok("root ::= (\"a\" |)");
    ok("root ::= \"a\"{0} \"b\"");
}

#[test]
fn leading_pipe_does_not_continue_a_rule() {
    // llama.cpp ends the rule at the newline and then finds no name.
    let e = err("root ::= \"a\"\n  | \"b\"\n");
    match e {
        GrammarError::Syntax {
            line,
            column,
            ref message,
        } => {
            assert_eq!((line, column), (2, 3));
            assert!(message.contains("starts with '|'"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    // A trailing pipe, or parentheses, do continue it.
    ok("root ::= \"a\" |\n  \"b\"\n");
    ok("root ::= (\"a\"\n  | \"b\")\n");
}

#[test]
fn undefined_rule_named_with_position() {
    match err("root ::= a\na ::= \"x\" missing-rule\n") {
        GrammarError::UndefinedRule {
            name,
            rule,
            line,
            column,
        } => {
            assert_eq!(name, "missing-rule");
            assert_eq!(rule, "a");
            assert_eq!((line, column), (2, 11));
        }
        e => panic!("{e:?}"),
    }
    // Inside a group, the owning user rule is named.
    match err("root ::= (\"a\" | nope)*") {
        GrammarError::UndefinedRule { name, rule, .. } => {
            assert_eq!((name.as_str(), rule.as_str()), ("nope", "root"))
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn root_and_empty() {
    assert_eq!(err("a ::= \"x\"\n"), GrammarError::MissingRoot);
    assert_eq!(err(""), GrammarError::Empty);
    assert_eq!(err("  # only a comment\n\n"), GrammarError::Empty);
}

#[test]
fn unterminated_string_and_class() {
    assert_eq!(
        err("root ::= a\na ::= \"abc\n"),
        GrammarError::UnterminatedString { line: 2, column: 7 }
    );
    assert_eq!(
        err("root ::= [a-z"),
        GrammarError::UnterminatedClass {
            line: 1,
            column: 10
        }
    );
    assert_eq!(
        err("root ::= [a-"),
        GrammarError::UnterminatedClass {
            line: 1,
            column: 10
        }
    );
    assert_eq!(
        err("root ::= \"ab\\"),
        GrammarError::UnterminatedString {
            line: 1,
            column: 10
        }
    );
    assert!(matches!(err("root ::= <abc"), GrammarError::Syntax { .. }));
}

#[test]
fn bad_escapes() {
    assert!(matches!(
        err(r#"root ::= "\q""#),
        GrammarError::BadEscape {
            line: 1,
            column: 11,
            ..
        }
    ));
    assert!(matches!(
        err(r#"root ::= "\x4""#),
        GrammarError::BadEscape { .. }
    ));
    assert!(matches!(
        err(r#"root ::= [\u12G4]"#),
        GrammarError::BadEscape { .. }
    ));
}

#[test]
fn syntax_errors() {
    let cases = [
        "root = \"a\"",        // missing ::=
        "my_rule ::= \"a\"",   // underscore in a name
        "root ::= (\"a\"",     // unclosed group
        "root ::= \"a\" )",    // stray ')'
        "root ::= * \"a\"",    // repetition without item
        "root ::= \"a\"{x}",   // bad count
        "root ::= \"a\"{1,2",  // unclosed count
        "root ::= \"a\"{1;2}", // bad separator
        "root ::= []",         // empty class
        "root ::= \"\"*",      // repeating nothing
        "root ::= \"a\"{0}+",  // repeating a zero repetition
        "root ::= !\"a\"",     // '!' without token
        "root ::= <[x]>",      // bad token id
        "::= \"a\"",           // no name
        "root ::= \"a\"\0",    // NUL
    ];
    for c in cases {
        assert!(matches!(err(c), GrammarError::Syntax { .. }), "{c:?}");
    }
    match err("root ::= \"a\" )") {
        GrammarError::Syntax { line, column, .. } => assert_eq!((line, column), (1, 14)),
        e => panic!("{e:?}"),
    }
}

#[test]
fn repetition_limits() {
    ok("root ::= \"a\"{1999}");
    ok("root ::= (\"a\"{100}){19}");
    // Current llama.cpp reads a maximum above 2000 as "no maximum".
    ok("root ::= \"a\"{0,2001}");
    ok("root ::= \"a\"{3,5000}");
    for c in [
        "root ::= \"a\"{2000}",
        "root ::= \"a\"{2001}",
        "root ::= \"a\"{5,2}",
        "root ::= \"a\"{99999999999999999999999}",
        "root ::= (\"a\"{0,100}){100}",
        "root ::= \"a\"{50}{50}",
    ] {
        assert!(matches!(err(c), GrammarError::Repetition { .. }), "{c:?}");
    }
}

#[test]
fn duplicate_rule() {
    assert_eq!(
        err("root ::= a\na ::= \"x\"\na ::= \"y\"\n"),
        GrammarError::DuplicateRule {
            name: "a".into(),
            line: 3,
            first_line: 2
        }
    );
}

#[test]
fn left_recursion() {
    for c in [
        "root ::= root \"a\" | \"b\"",
        "root ::= a\na ::= b \"x\"\nb ::= a | \"y\"",
        // through a rule with an empty alternative
        "root ::= e root \"a\" | \"b\"\ne ::= \"x\" | ",
        // inside a group
        "root ::= (root \"a\")? \"b\"",
        // llama.cpp also flags a `*` over a rule that may be empty
        "root ::= e*\ne ::= \"x\" | ",
    ] {
        assert!(
            matches!(err(c), GrammarError::LeftRecursion { .. }),
            "{c:?}: {:?}",
            parse_gbnf(c)
        );
    }
    match err("root ::= a\na ::= a \"x\" | \"y\"") {
        GrammarError::LeftRecursion { name, line, .. } => {
            assert_eq!((name.as_str(), line), ("a", 2))
        }
        e => panic!("{e:?}"),
    }
    // Right recursion and recursion after a terminal are fine; so is a
    // `*` over a rule that only may be empty through its own `?`.
    ok("root ::= \"a\" root | \"b\"");
    ok("root ::= list\nlist ::= item (\",\" list)?\nitem ::= [a-z]+");
    ok("root ::= e? \"a\"\ne ::= \"x\"?");
    ok("root ::= (\"a\"?)* \"b\"");
}

#[test]
fn nesting_is_limited() {
    let deep = format!("root ::= {}\"a\"{}", "(".repeat(256), ")".repeat(256));
    ok(&deep);
    let deeper = format!(
        "root ::= {}\"a\"{}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    assert!(matches!(
        err(&deeper),
        GrammarError::TooDeep { limit: 256, .. }
    ));
    // Long chains of rules do not recurse.
    let mut chain = String::from("root ::= r0\n");
    for i in 0..50_000 {
        chain.push_str(&format!("r{i} ::= r{}\n", i + 1));
    }
    chain.push_str("r50000 ::= \"end\"\n");
    ok(&chain);
    chain.push_str("r50001 ::= r0\nr-loop ::= r0\n");
    ok(&chain);
}

#[test]
fn no_panic_on_any_prefix() {
    let text = fixture_grammar();
    for i in 0..=text.len() {
        if let Some(prefix) = text.get(..i) {
            let _ = parse_gbnf(prefix);
        }
    }
    // Nor on pseudo-random soup made of grammar characters.
    let alphabet: Vec<char> = "ab-_ ::=|()[]^\"\\xuU0123456789{},*+?.#\n\r\t<>!é"
        .chars()
        .collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let len = (state >> 59) as usize + 1;
        let mut s = String::from("root ::= ");
        for _ in 0..len * 3 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let idx = (state >> 33) as usize % alphabet.len();
            s.push(alphabet[idx]);
        }
        let _ = parse_gbnf(&s);
        let _ = parse_gbnf(&s[9..]);
    }
}

// -- check_gbnf: every problem, with its line and column ----------------------

fn check_fixture(name: &str) -> GrammarCheck {
    let path = format!(
        "{}/tests/fixtures/grammars/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    check_gbnf(&std::fs::read_to_string(path).unwrap())
}

fn codes(check: &GrammarCheck) -> Vec<(&'static str, Option<(usize, usize)>)> {
    check
        .issues
        .iter()
        .map(|e| (e.code(), e.position()))
        .collect()
}

#[test]
fn check_reports_mutual_left_recursion_with_its_cycle() {
    let check = check_fixture("sql-left-recursive.gbnf");
    assert_eq!(
        codes(&check),
        vec![
            ("grammar.left-recursion", Some((6, 1))),
            ("grammar.left-recursion", Some((7, 1))),
        ],
        "{:?}",
        check.issues
    );
    match &check.issues[0] {
        GrammarError::LeftRecursion { name, cycle, .. } => {
            assert_eq!(name, "expression");
            assert_eq!(cycle, "expression → expression");
        }
        other => panic!("{other:?}"),
    }
    match &check.issues[1] {
        GrammarError::LeftRecursion { name, cycle, .. } => {
            assert_eq!(name, "comparison-expr");
            assert_eq!(cycle, "comparison-expr → expression → comparison-expr");
        }
        other => panic!("{other:?}"),
    }
    assert!(check.issues[0].hint().unwrap().contains("llama.cpp"));
    // The strict parser refuses it too, with the first rule.
    assert!(matches!(
        parse_gbnf(
            &std::fs::read_to_string(format!(
                "{}/tests/fixtures/grammars/sql-left-recursive.gbnf",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        ),
        Err(GrammarError::LeftRecursion { .. })
    ));
    assert_eq!(check.rules.len(), 10);
}

#[test]
fn check_reads_on_past_underscores_and_names_each_once() {
    let check = check_fixture("cypher-underscores.gbnf");
    assert_eq!(
        codes(&check),
        vec![
            ("grammar.invalid-rule-name", Some((1, 15))),
            ("grammar.invalid-rule-name", Some((1, 32))),
            ("grammar.invalid-rule-name", Some((2, 46))),
        ],
        "{:?}",
        check.issues
    );
    assert_eq!(check.rules.len(), 12, "every rule was read");
    assert_eq!(
        check.issues[0].hint().as_deref(),
        Some("rename it to \"match-clause\" (and every reference to it)")
    );
}

#[test]
fn check_reports_every_kind_in_one_grammar() {
    let check = check_fixture("kql-several.gbnf");
    let found = codes(&check);
    assert!(
        found.contains(&("grammar.empty-alternative", Some((9, 35)))),
        "{found:?}"
    );
    assert!(
        found.contains(&("grammar.undefined-rule", Some((8, 47)))),
        "{found:?}"
    );
    assert!(
        found.contains(&("grammar.undefined-rule", Some((12, 22)))),
        "string: {found:?}"
    );
    assert!(
        found.contains(&("grammar.left-recursion", Some((4, 1)))),
        "{found:?}"
    );
    assert_eq!(found.len(), 4, "{:?}", check.issues);
}

#[test]
fn check_accepts_what_llama_cpp_loads() {
    let check = check_fixture("json-ok.gbnf");
    // `ws ::= | " " …` starts with an empty alternative: llama.cpp's own
    // json.gbnf does that on purpose, so it is only reported as such.
    assert_eq!(
        codes(&check),
        vec![("grammar.empty-alternative", Some((25, 8)))],
        "{:?}",
        check.issues
    );
    assert!(check_gbnf(FIXTURE).issues.is_empty());
    assert!(check_gbnf(&fixture_grammar()).issues.is_empty());
}

#[test]
fn check_recovers_after_a_syntax_error() {
    let text = "root ::= a b\na ::= \"x\nb ::= c\n";
    let check = check_gbnf(text);
    let found = codes(&check);
    // The literal runs to the end of the text (llama.cpp reads newlines
    // into literals), so `b` is never defined.
    assert_eq!(
        found,
        vec![
            ("grammar.unterminated-string", Some((2, 7))),
            ("grammar.undefined-rule", Some((1, 12)))
        ]
    );
    // A syntax error in one rule does not hide the next ones.
    let check = check_gbnf("root ::= a\na ::= \"b\" }\nb ::= c\nc_d ::= \"x\"\n");
    let found = codes(&check);
    assert_eq!(found.first(), Some(&("grammar.syntax", Some((2, 11)))));
    assert!(
        found.contains(&("grammar.undefined-rule", Some((3, 7)))),
        "{found:?}"
    );
    assert!(
        found.contains(&("grammar.invalid-rule-name", Some((4, 2)))),
        "{found:?}"
    );
    // A line that ends with '|' pulls the next rule into it, as in llama.cpp.
    let check = check_gbnf("root ::= \"a\" |\nb ::= \"x\"\n");
    assert_eq!(codes(&check)[0], ("grammar.syntax", Some((2, 3))));
    assert!(
        check.issues[0].to_string().contains("ends with '|'"),
        "{}",
        check.issues[0]
    );
    assert!(check_gbnf("").issues.contains(&GrammarError::Empty));
    let no_root = check_gbnf("start ::= \"x\"\n");
    assert_eq!(no_root.issues, vec![GrammarError::MissingRoot]);
}

#[test]
fn check_never_panics_on_soup() {
    let alphabet: Vec<char> = "ab-_ ::=|()[]^\"\\xuU0123456789{},*+?.#\n\r\t<>!é"
        .chars()
        .collect();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..5_000 {
        let len = (state >> 59) as usize + 1;
        let mut s = String::from("root ::= ");
        for _ in 0..len * 3 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            s.push(alphabet[(state >> 33) as usize % alphabet.len()]);
        }
        let _ = check_gbnf(&s);
        let _ = check_gbnf(&s[9..]);
    }
}

/// Cases in the style of llama.cpp's own parser and integration tests: what
/// it loads gives no warning (notes allowed), what it refuses gives at
/// least one.
#[test]
fn check_agrees_with_llama_cpp_on_its_test_cases() {
    let loads = [
        "root ::= \"a\"",
        "root ::= \"a\" | [bdx-z] | [^1-3]",
        "root ::= \"a\"+ \"b\"? \"c\"*",
        "root ::= \"a\"{2} \"b\"{2,} \"c\"{ 4} \"d\"{2,4}",
        "root  ::= expr\nexpr  ::= term (\"+\" term)*\nterm  ::= number\nnumber ::= [0-9]+",
        "root ::= (ident ws)+\nident ::= [a-zA-Z_] [a-zA-Z0-9_]*\nws ::= [ \\t\\n]*",
        "root ::= (\"0x\" [A-F0-9]{2} \" \"?){3,5}",
        "root ::= ( [x]* )*",
        "root ::= \"a\"{0,5000}",
        "root ::= [a\\-z]+ \"\\-\"",
        "root ::= \"x\" | \n  \"y\"",
        "root ::= <[1000]> !<[1001]>",
    ];
    for text in loads {
        let check = check_gbnf(text);
        let warnings: Vec<_> = check
            .issues
            .iter()
            .filter(|e| e.severity() != crate::diagnostics::Severity::Note)
            .collect();
        assert!(warnings.is_empty(), "{text:?}: {warnings:?}");
        assert!(parse_gbnf(text).is_ok(), "{text:?}");
    }
    let refused = [
        ("root ::= \"a\"{,}", "grammar.syntax"),
        ("root ::= \"a\"{,10}", "grammar.syntax"),
        (
            "root ::= (((([^x]*){0,99}){0,99}){0,99}){0,99}",
            "grammar.repetition",
        ),
        ("root ::= \"a\"{5000}", "grammar.repetition"),
        ("root ::= \"a\"{5000,}", "grammar.repetition"),
        ("start ::= expr\nexpr ::= [0-9]+", "grammar.missing-root"),
        (
            "root ::= expr\nexpr ::= term\nterm ::= numero\nnumber ::= [0-9]+",
            "grammar.undefined-rule",
        ),
        ("root ::= \"a\" | root \"a\"", "grammar.left-recursion"),
        (
            "root ::= list\nlist ::= \"a\" | list \"a\"",
            "grammar.left-recursion",
        ),
        (
            "root ::= x\nx ::= \"a\" | y \"b\"\ny ::= \"c\" | x \"d\"",
            "grammar.left-recursion",
        ),
        (
            "root ::= x\nx ::= \"a\" | y \"b\"\ny ::= \"c\" | maybe x \"d\"\nmaybe ::= \"m\" | ",
            "grammar.left-recursion",
        ),
        (
            "root ::= my_rule\nmy_rule ::= \"a\"",
            "grammar.invalid-rule-name",
        ),
        ("root ::= \"a\"\n| \"b\"", "grammar.syntax"),
        ("root ::= \"a\" |\nnext ::= \"b\"", "grammar.syntax"),
        ("root ::= \"\\q\"", "grammar.bad-escape"),
    ];
    for (text, code) in refused {
        let check = check_gbnf(text);
        assert!(
            check
                .issues
                .iter()
                .any(|e| e.code() == code && e.severity() == crate::diagnostics::Severity::Warning),
            "{text:?}: expected {code}, got {:?}",
            check.issues
        );
        assert!(parse_gbnf(text).is_err(), "{text:?}");
    }
}

#[test]
fn check_names_a_byte_order_mark_and_reads_on() {
    let check = check_gbnf("\u{feff}root ::= \"a\" | b\r\nb ::= \"c\"\r\n");
    assert_eq!(check.issues, vec![GrammarError::ByteOrderMark]);
    assert_eq!(check.rules.len(), 2);
    assert!(
        parse_gbnf("\u{feff}root ::= \"a\"").is_err(),
        "llama.cpp refuses it"
    );
    // CRLF line ends are fine.
    assert!(check_gbnf("root ::= \"a\" | b\r\nb ::= \"c\"\r\n")
        .issues
        .is_empty());
}
