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
    for c in [
        "root ::= \"a\"{2000}",
        "root ::= \"a\"{2001}",
        "root ::= \"a\"{0,2001}",
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
        GrammarError::LeftRecursion { name, line } => {
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
