//! Policy rules text, Consul's ACL rules language in HCL or JSON, parsed into the core's
//! [`Rules`]. HCL is read with `hcl-edit` (the hcl-rs project's parser, which keeps spans), so a
//! bad rule is refused with the line it is on; JSON with `serde_json` (a bad rule there names the
//! line of its key, found in the text). Consul's forms:
//!
//! ```hcl
//! acl = "read"                       # acl, keyring, operator, mesh, peering: one level
//! key_prefix "app/" { policy = "write" }
//! service "web" { policy = "write" intentions = "read" }   # intentions: accepted, ignored
//! ```
//!
//! and in JSON `{"acl": "read", "key_prefix": {"app/": {"policy": "write"}}}`. Repeated rules for
//! one name merge as policies do (`deny` wins, else the broader level). `list` applies only to
//! keys.

use hcl_edit::{
    Span,
    expr::Expression,
    structure::{BlockLabel, Structure},
};
use serde_json::Value;
use waggle_core::acl::{Level, Resource, Rules};

/// A rules text that is not valid: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RulesError {
    /// The HCL or JSON itself does not parse.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    /// A rule is not one Consul knows.
    #[error("line {line}: {message}")]
    Rule { line: usize, message: String },
}

/// Parses rules in HCL, or in JSON when the text starts with `{`.
pub(crate) fn parse_rules(text: &str) -> Result<Rules, RulesError> {
    if text.trim_start().starts_with('{') { parse_json(text) } else { parse_hcl(text) }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

fn level(resource: Resource, text: &str, line: usize) -> Result<Level, RulesError> {
    let level = Level::parse(text).ok_or_else(|| RulesError::Rule {
        line,
        message: format!("invalid policy {text:?} (read, write, list or deny)"),
    })?;
    if level == Level::List && resource != Resource::Key {
        return Err(RulesError::Rule { line, message: "\"list\" applies only to key and key_prefix".into() });
    }
    Ok(level)
}

fn unknown(name: &str, line: usize) -> RulesError {
    RulesError::Rule { line, message: format!("unknown resource {name:?}") }
}

fn parse_hcl(text: &str) -> Result<Rules, RulesError> {
    let body = hcl_edit::parser::parse_body(text).map_err(|e| RulesError::Syntax {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_owned(),
    })?;
    let mut rules = Rules::new();
    for structure in body.iter() {
        let line = line_of(text, structure.span().map_or(0, |s| s.start));
        match structure {
            Structure::Attribute(attr) => {
                let name = attr.key.as_str();
                let (resource, prefix) = Resource::parse_block(name).ok_or_else(|| unknown(name, line))?;
                if resource.is_named() || prefix {
                    return Err(RulesError::Rule {
                        line,
                        message: format!("{name} needs a name: {name} \"...\" {{ policy = \"read\" }}"),
                    });
                }
                let Expression::String(value) = &attr.value else {
                    return Err(RulesError::Rule { line, message: format!("{name} takes a level: {name} = \"read\"") });
                };
                rules.add(resource, None, false, level(resource, value.as_str(), line)?);
            }
            Structure::Block(block) => {
                let name = block.ident.as_str();
                let (resource, prefix) = Resource::parse_block(name).ok_or_else(|| unknown(name, line))?;
                if !resource.is_named() {
                    return Err(RulesError::Rule { line, message: format!("{name} takes a level: {name} = \"read\"") });
                }
                let [label] = block.labels.as_slice() else {
                    return Err(RulesError::Rule {
                        line,
                        message: format!("{name} needs one name: {name} \"web\" {{ policy = \"read\" }}"),
                    });
                };
                let object = match label {
                    BlockLabel::String(s) => s.as_str(),
                    BlockLabel::Ident(i) => i.as_str(),
                };
                let mut found = None;
                for inner in block.body.iter() {
                    let inner_line = line_of(text, inner.span().map_or(0, |s| s.start));
                    let Structure::Attribute(attr) = inner else {
                        return Err(RulesError::Rule {
                            line: inner_line,
                            message: format!("{name}: unexpected block"),
                        });
                    };
                    let Expression::String(value) = &attr.value else {
                        let key = attr.key.as_str();
                        return Err(RulesError::Rule { line: inner_line, message: format!("{key} takes a string") });
                    };
                    match attr.key.as_str() {
                        "policy" => found = Some(level(resource, value.as_str(), inner_line)?),
                        // Service-mesh intentions are not modelled; Consul's rules may carry them.
                        "intentions" if resource == Resource::Service => {}
                        other => {
                            return Err(RulesError::Rule {
                                line: inner_line,
                                message: format!("{name}: unknown attribute {other:?} (policy)"),
                            });
                        }
                    }
                }
                let level = found
                    .ok_or_else(|| RulesError::Rule { line, message: format!("{name} {object:?} needs a policy") })?;
                rules.add(resource, Some(object), prefix, level);
            }
        }
    }
    Ok(rules)
}

/// The line of the first `"key"` in `text` (JSON rules' errors point at it; a key that appears
/// more than once is reported at its first place).
fn json_line(text: &str, key: &str) -> usize {
    let quoted = format!("{key:?}");
    text.find(&quoted).map_or(1, |at| line_of(text, at))
}

fn parse_json(text: &str) -> Result<Rules, RulesError> {
    let value: Value = serde_json::from_str(text).map_err(|e| RulesError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Object(top) = value else {
        return Err(RulesError::Rule { line: 1, message: "rules must be an object".into() });
    };
    let mut rules = Rules::new();
    for (name, value) in &top {
        let line = json_line(text, name);
        let (resource, prefix) = Resource::parse_block(name).ok_or_else(|| unknown(name, line))?;
        if !resource.is_named() {
            let Value::String(text_level) = value else {
                return Err(RulesError::Rule { line, message: format!("{name} takes a level: \"{name}\": \"read\"") });
            };
            rules.add(resource, None, false, level(resource, text_level, line)?);
            continue;
        }
        let Value::Object(objects) = value else {
            return Err(RulesError::Rule {
                line,
                message: format!("{name} takes names: {{\"web\": {{\"policy\": \"read\"}}}}"),
            });
        };
        for (object, rule) in objects {
            let line = json_line(text, object);
            let Value::Object(rule) = rule else {
                return Err(RulesError::Rule {
                    line,
                    message: format!("{name} {object:?}: expected {{\"policy\": ...}}"),
                });
            };
            let mut found = None;
            for (key, value) in rule {
                match (key.as_str(), value) {
                    ("policy", Value::String(text_level)) => found = Some(level(resource, text_level, line)?),
                    ("intentions", _) if resource == Resource::Service => {}
                    (other, _) => {
                        return Err(RulesError::Rule {
                            line: json_line(text, other),
                            message: format!("{name} {object:?}: unknown or invalid {other:?}"),
                        });
                    }
                }
            }
            let level =
                found.ok_or_else(|| RulesError::Rule { line, message: format!("{name} {object:?} needs a policy") })?;
            rules.add(resource, Some(object), prefix, level);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(Resource, Option<&str>, bool, Level)]) -> Rules {
        let mut r = Rules::new();
        for (resource, name, prefix, level) in list {
            r.add(*resource, *name, *prefix, *level);
        }
        r
    }

    #[test]
    fn hcl_and_json_parse_to_the_same_rules() {
        use Level::*;
        use Resource::*;
        let hcl = r#"
acl = "read"
operator = "write"
key_prefix "" { policy = "read" }
key "app/config" { policy = "write" }
service "web" {
  policy = "write"
  intentions = "read"
}
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
session_prefix "" { policy = "write" }
agent "node-1" { policy = "read" }
event_prefix "" { policy = "read" }
query_prefix "" { policy = "read" }
key "app/config" { policy = "deny" }
"#;
        let json = r#"{
  "acl": "read", "operator": "write",
  "key_prefix": {"": {"policy": "read"}},
  "key": {"app/config": {"policy": "deny"}},
  "service": {"web": {"policy": "write", "intentions": "read"}},
  "service_prefix": {"": {"policy": "read"}},
  "node_prefix": {"": {"policy": "read"}},
  "session_prefix": {"": {"policy": "write"}},
  "agent": {"node-1": {"policy": "read"}},
  "event_prefix": {"": {"policy": "read"}},
  "query_prefix": {"": {"policy": "read"}}
}"#;
        let expected = rules(&[
            (Acl, None, false, Read),
            (Operator, None, false, Write),
            (Key, Some(""), true, Read),
            (Key, Some("app/config"), false, Deny),
            (Service, Some("web"), false, Write),
            (Service, Some(""), true, Read),
            (Node, Some(""), true, Read),
            (Session, Some(""), true, Write),
            (Agent, Some("node-1"), false, Read),
            (Event, Some(""), true, Read),
            (Query, Some(""), true, Read),
        ]);
        assert_eq!(parse_rules(hcl).unwrap(), expected, "the repeated key block merged: deny wins");
        assert_eq!(parse_rules(json).unwrap(), expected);
        assert_eq!(parse_rules("").unwrap(), Rules::new());
        assert_eq!(parse_rules("  \n").unwrap(), Rules::new());
    }

    #[test]
    fn list_applies_to_keys_only() {
        assert!(parse_rules(r#"key_prefix "" { policy = "list" }"#).is_ok());
        assert!(parse_rules(r#"key "a" { policy = "list" }"#).is_ok());
        let e = parse_rules(r#"service "a" { policy = "list" }"#).unwrap_err();
        assert!(e.to_string().contains("\"list\" applies only to key"), "{e}");
    }

    #[test]
    fn bad_rules_name_the_line_and_the_problem() {
        for (text, line, phrase) in [
            ("acl = \"read\"\n\nservcie \"web\" { policy = \"read\" }", 3, "unknown resource \"servcie\""),
            ("key_prefix \"\" {\n  policy = \"rwite\"\n}", 2, "invalid policy \"rwite\""),
            ("acl = \"read\"\nservice { policy = \"read\" }", 2, "needs one name"),
            ("acl { policy = \"read\" }", 1, "acl takes a level"),
            ("service = \"read\"", 1, "service needs a name"),
            ("service \"web\" {}", 1, "needs a policy"),
            ("\n\nservice \"web\" { polcy = \"read\" }", 3, "unknown attribute \"polcy\""),
            ("operator_prefix \"\" { policy = \"read\" }", 1, "unknown resource"),
            ("{\n  \"servcie\": {}\n}", 2, "unknown resource"),
            ("{\n  \"key\": {\n    \"a\": {\"policy\": \"nope\"}\n  }\n}", 3, "invalid policy \"nope\""),
        ] {
            match parse_rules(text) {
                Err(RulesError::Rule { line: got, message }) => {
                    assert_eq!(got, line, "{text:?}: {message}");
                    assert!(message.contains(phrase), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        for text in ["key \"a\" { policy = ", "{\"key\": ", "service \"a\" {\n policy = \"read\"\n"] {
            match parse_rules(text) {
                Err(RulesError::Syntax { line, .. }) => assert!(line >= 1, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn junk_never_panics() {
        for text in ["{}", "[]", "\"x\"", "}{", "a b c", "key \"a\" \"b\" {}", "acl = 1", "{\"acl\": 3}", "\u{1F41D}"] {
            let _ = parse_rules(text);
        }
        assert!(parse_rules("[]").is_err() && parse_rules("acl = 1").is_err());
    }
}
