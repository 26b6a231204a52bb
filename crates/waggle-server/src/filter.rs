//! Consul's filter expression language (go-bexpr), evaluated on JSON: the `?filter=` of the
//! Consul API (on the entries an endpoint answers with, so every endpoint filters on exactly the
//! fields it shows) and the selectors of binding rules (on a login's `value` and `list` claims).
//! A leaf: it knows no front-end and no node.
//!
//! ```text
//! expr     = or
//! or       = and { "or" and }
//! and      = not { "and" not }
//! not      = "not" not | "(" expr ")" | match
//! match    = selector ("==" | "!=") value
//!          | selector ["not"] ("contains" | "matches") value
//!          | selector "is" ["not"] "empty"
//!          | value ["not"] "in" selector
//! selector = name { "." name | "[" string "]" }
//! value    = "double-quoted" | `backquoted` | number | true | false | name
//! ```
//!
//! Selectors are checked against the endpoint's fields before anything is evaluated (an unknown
//! one is a 400, as in Consul); map fields (`Meta`, `ServiceMeta`, …) take any key. Comparing a
//! list with `==` is an error too; use `contains` / `in`.

use serde_json::Value;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match { selector: Vec<String>, op: Op },
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Equal(String),
    NotEqual(String),
    Contains(String, bool),
    Matches(regex::Regex, bool),
    Empty(bool),
    In(String, bool),
}

impl PartialEq for Op {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Symbol(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | '.' | '[' | ']' => {
                tokens.push(Token::Symbol(match c {
                    '(' => "(",
                    ')' => ")",
                    '.' => ".",
                    '[' => "[",
                    _ => "]",
                }));
                i += 1;
            }
            '=' | '!' => {
                if chars.get(i + 1) != Some(&'=') {
                    return Err(format!("unexpected {c:?} at {i}: expected == or !="));
                }
                tokens.push(Token::Symbol(if c == '=' { "==" } else { "!=" }));
                i += 2;
            }
            '"' | '`' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some(&q) if q == c => break,
                        Some('\\') if c == '"' => {
                            let escaped = chars.get(i + 1).ok_or("unterminated string")?;
                            value.push(*escaped);
                            i += 2;
                            continue;
                        }
                        Some(&other) => value.push(other),
                    }
                    i += 1;
                }
                tokens.push(Token::Quoted(value));
                i += 1;
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' || c == ':' || c == '/' => {
                let start = i;
                while chars.get(i).is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '/')) {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected {other:?} at {i}")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Nesting so far (parentheses and `not`): bounded, so no input can exhaust the stack.
    depth: usize,
    /// Regular expressions so far: bounded, so no input compiles megabytes of them.
    regexes: usize,
}

/// Deepest nesting of parentheses and `not` accepted.
const MAX_DEPTH: usize = 32;
/// Most `matches` clauses in one filter.
const MAX_REGEXES: usize = 8;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn word_is(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn expect_word(&mut self, word: &str) -> Result<(), String> {
        if self.word_is(word) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {word:?}"))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.word_is("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.word_is("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        let nested = self.word_is("not") || self.peek() == Some(&Token::Symbol("("));
        if nested {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(format!("the expression nests deeper than {MAX_DEPTH}"));
            }
        }
        let expr = if self.word_is("not") {
            self.at += 1;
            Expr::Not(Box::new(self.not()?))
        } else if self.peek() == Some(&Token::Symbol("(")) {
            self.at += 1;
            let inner = self.or()?;
            if self.next() != Some(Token::Symbol(")")) {
                return Err("expected )".into());
            }
            inner
        } else {
            self.matcher()?
        };
        if nested {
            self.depth -= 1;
        }
        Ok(expr)
    }

    fn regex(&mut self, pattern: &str) -> Result<regex::Regex, String> {
        self.regexes += 1;
        if self.regexes > MAX_REGEXES {
            return Err(format!("at most {MAX_REGEXES} matches clauses"));
        }
        regex(pattern)
    }

    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Quoted(v)) | Some(Token::Word(v)) => Ok(v),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }

    fn selector(&mut self) -> Result<Vec<String>, String> {
        let mut path = match self.next() {
            Some(Token::Word(w)) => vec![w],
            other => return Err(format!("expected a selector, found {other:?}")),
        };
        loop {
            match self.peek() {
                Some(Token::Symbol(".")) => {
                    self.at += 1;
                    match self.next() {
                        Some(Token::Word(w)) => path.push(w),
                        other => return Err(format!("expected a field name after '.', found {other:?}")),
                    }
                }
                Some(Token::Symbol("[")) => {
                    self.at += 1;
                    match self.next() {
                        Some(Token::Quoted(k)) => path.push(k),
                        other => return Err(format!("expected a quoted key after '[', found {other:?}")),
                    }
                    if self.next() != Some(Token::Symbol("]")) {
                        return Err("expected ]".into());
                    }
                }
                _ => return Ok(path),
            }
        }
    }

    fn matcher(&mut self) -> Result<Expr, String> {
        // `value [not] in selector` starts with a value; everything else with a selector.
        let save = self.at;
        if let Ok(value) = self.value() {
            let negated =
                self.word_is("not") && matches!(self.tokens.get(self.at + 1), Some(Token::Word(w)) if w == "in");
            if negated {
                self.at += 1;
            }
            if self.word_is("in") {
                self.at += 1;
                let selector = self.selector()?;
                return Ok(Expr::Match { selector, op: Op::In(value, negated) });
            }
        }
        self.at = save;
        let selector = self.selector()?;
        let op = match self.next() {
            Some(Token::Symbol("==")) => Op::Equal(self.value()?),
            Some(Token::Symbol("!=")) => Op::NotEqual(self.value()?),
            Some(Token::Word(w)) if w == "is" => {
                let negated = self.word_is("not");
                if negated {
                    self.at += 1;
                }
                self.expect_word("empty")?;
                Op::Empty(negated)
            }
            Some(Token::Word(w)) if w == "contains" => Op::Contains(self.value()?, false),
            Some(Token::Word(w)) if w == "matches" => {
                let pattern = self.value()?;
                Op::Matches(self.regex(&pattern)?, false)
            }
            Some(Token::Word(w)) if w == "not" => match self.next() {
                Some(Token::Word(w)) if w == "contains" => Op::Contains(self.value()?, true),
                Some(Token::Word(w)) if w == "matches" => {
                    let pattern = self.value()?;
                    Op::Matches(self.regex(&pattern)?, true)
                }
                other => return Err(format!("expected contains or matches after not, found {other:?}")),
            },
            other => return Err(format!("expected an operator after the selector, found {other:?}")),
        };
        Ok(Expr::Match { selector, op })
    }
}

fn regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// Parses `text` and checks its selectors against `template` (an entry of the endpoint, whose
/// object fields named in `maps` take any key).
pub(crate) fn parse(text: &str, template: &Value, maps: &[&str]) -> Result<Expr, String> {
    if text.len() > 4096 {
        return Err("filter expression too long (at most 4096 bytes)".into());
    }
    let mut parser = Parser { tokens: tokenize(text)?, at: 0, depth: 0, regexes: 0 };
    let expr = parser.or()?;
    if parser.at < parser.tokens.len() {
        return Err(format!("unexpected {:?} after the expression", parser.tokens[parser.at]));
    }
    check(&expr, template, maps)?;
    Ok(expr)
}

fn check(expr: &Expr, template: &Value, maps: &[&str]) -> Result<(), String> {
    match expr {
        Expr::Or(a, b) | Expr::And(a, b) => {
            check(a, template, maps)?;
            check(b, template, maps)
        }
        Expr::Not(a) => check(a, template, maps),
        Expr::Match { selector, op } => {
            let mut at = template;
            for (i, name) in selector.iter().enumerate() {
                let parent = selector[..i].last().map(String::as_str);
                if parent.is_some_and(|p| maps.contains(&p)) {
                    return Ok(()); // any key of a map
                }
                at = match at {
                    Value::Object(fields) => {
                        fields.get(name).ok_or_else(|| format!("Selector {:?} is not valid", selector.join(".")))?
                    }
                    // A list of objects: the selector applies to any element.
                    Value::Array(items) => match items.first().and_then(|v| v.get(name)) {
                        Some(v) => v,
                        None => return Err(format!("Selector {:?} is not valid", selector.join("."))),
                    },
                    _ => return Err(format!("Selector {:?} is not valid", selector.join("."))),
                };
            }
            if matches!(op, Op::Equal(_) | Op::NotEqual(_)) && at.is_array() {
                return Err(format!("{:?} is a list: use contains or in", selector.join(".")));
            }
            Ok(())
        }
    }
}

/// The values a selector reaches in `entry` (several when it crosses a list of objects).
fn reach<'a>(entry: &'a Value, selector: &[String]) -> Vec<&'a Value> {
    let mut at = vec![entry];
    for name in selector {
        at = at
            .into_iter()
            .flat_map(|v| match v {
                Value::Object(fields) => fields.get(name).into_iter().collect::<Vec<_>>(),
                Value::Array(items) => items.iter().filter_map(|i| i.get(name)).collect(),
                _ => Vec::new(),
            })
            .collect();
    }
    at
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Whether `entry` passes the filter.
pub(crate) fn eval(expr: &Expr, entry: &Value) -> bool {
    match expr {
        Expr::Or(a, b) => eval(a, entry) || eval(b, entry),
        Expr::And(a, b) => eval(a, entry) && eval(b, entry),
        Expr::Not(a) => !eval(a, entry),
        Expr::Match { selector, op } => {
            let values = reach(entry, selector);
            let any = |f: &dyn Fn(&Value) -> bool| values.iter().any(|v| f(v));
            match op {
                Op::Equal(want) => any(&|v| text(v).as_deref() == Some(want)),
                Op::NotEqual(want) => !any(&|v| text(v).as_deref() == Some(want)),
                Op::Empty(negated) => values.iter().all(|v| is_empty(v)) != *negated,
                Op::Contains(want, negated) | Op::In(want, negated) => {
                    let found = any(&|v| match v {
                        Value::Array(items) => items.iter().any(|i| text(i).as_deref() == Some(want)),
                        Value::Object(fields) => fields.contains_key(want),
                        Value::String(s) => s.contains(want.as_str()),
                        _ => false,
                    });
                    found != *negated
                }
                Op::Matches(re, negated) => any(&|v| text(v).is_some_and(|t| re.is_match(&t))) != *negated,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Value {
        json!({
            "ServiceName": "api", "ServicePort": 8080, "ServiceTags": ["v1", "prod"],
            "ServiceMeta": { "team": "core" }, "ServiceAddress": "10.0.0.1",
            "Checks": [{ "Status": "passing" }, { "Status": "critical" }],
        })
    }

    fn passes(filter: &str) -> bool {
        let e = entry();
        eval(&parse(filter, &e, &["ServiceMeta"]).unwrap_or_else(|err| panic!("{filter}: {err}")), &e)
    }

    #[test]
    fn the_documented_operators_evaluate() {
        for (filter, expected) in [
            ("ServiceName == api", true),
            ("ServiceName == \"web\"", false),
            ("ServiceName != web", true),
            ("ServicePort == 8080", true),
            ("ServiceTags contains prod", true),
            ("ServiceTags not contains prod", false),
            ("prod in ServiceTags", true),
            ("canary not in ServiceTags", true),
            ("ServiceMeta.team == core", true),
            ("ServiceMeta[\"team\"] == core", true),
            ("ServiceMeta.owner is empty", true),
            ("ServiceMeta is not empty", true),
            ("ServiceAddress matches `^10\\.0\\.`", true),
            ("ServiceAddress not matches \"^192\"", true),
            ("Checks.Status == critical", true),
            ("ServiceName == api and not (ServicePort == 1 or ServiceTags contains x)", true),
            ("ServiceName == web or ServicePort == 8080", true),
        ] {
            assert_eq!(passes(filter), expected, "{filter}");
        }
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        let e = entry();
        for (filter, why) in [
            ("ServiceName = api", "=="),
            ("ServiceName ==", "value"),
            ("(ServiceName == api", ")"),
            ("Nope == 1", "not valid"),
            ("ServiceTags == v1", "list"),
            ("ServiceName == \"unterminated", "unterminated"),
            ("ServiceAddress matches \"(\"", "regular expression"),
            ("ServiceName == api api", "after the expression"),
            ("ServiceName is full", "empty"),
        ] {
            let error = parse(filter, &e, &["ServiceMeta"]).unwrap_err();
            assert!(error.contains(why), "{filter}: {error}");
        }
        assert!(parse(&"a".repeat(5000), &e, &[]).unwrap_err().contains("too long"));
        // Nesting and regexes are bounded: no input exhausts the stack or the memory.
        assert!(parse(&"(".repeat(4000), &e, &[]).unwrap_err().contains("nests deeper"));
        assert!(parse(&"not ".repeat(1000), &e, &[]).unwrap_err().contains("nests deeper"));
        let many = ["ServiceName matches x"; 9].join(" or ");
        assert!(parse(&many, &e, &[]).unwrap_err().contains("matches clauses"));
    }
}
