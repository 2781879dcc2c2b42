//! Label selectors: the `-l` string syntax (`app=web,tier!=db,env in (a,b),!legacy`) and
//! the structured `LabelSelector` of Deployments, both reduced to one list of requirements.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::deployment::LabelSelector;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// All requirements must hold; an empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

#[derive(Debug, Error, PartialEq)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the string form used by `-l` and `?labelSelector=`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let fail = |reason: String| SelectorError {
            selector: text.to_string(),
            reason,
        };
        let mut reqs = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if let Some(key) = part.strip_prefix('!') {
                reqs.push(Requirement::DoesNotExist(
                    check_key(key.trim()).map_err(fail)?,
                ));
            } else if let Some((k, v)) = part.split_once("!=") {
                reqs.push(Requirement::NotEquals(
                    check_key(k.trim()).map_err(fail)?,
                    v.trim().to_string(),
                ));
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                reqs.push(Requirement::Equals(
                    check_key(k.trim()).map_err(fail)?,
                    v.trim().to_string(),
                ));
            } else if let Some((k, rest)) = split_set_op(part, " notin ") {
                reqs.push(Requirement::NotIn(
                    check_key(k).map_err(fail)?,
                    parse_set(rest).map_err(fail)?,
                ));
            } else if let Some((k, rest)) = split_set_op(part, " in ") {
                reqs.push(Requirement::In(
                    check_key(k).map_err(fail)?,
                    parse_set(rest).map_err(fail)?,
                ));
            } else {
                reqs.push(Requirement::Exists(check_key(part).map_err(fail)?));
            }
        }
        Ok(Selector(reqs))
    }

    /// The structured selector of a workload. Unknown operators are a validation error
    /// elsewhere; here they match nothing, so a bad selector never selects too much.
    pub fn from_label_selector(sel: &LabelSelector) -> Selector {
        let mut reqs: Vec<Requirement> = sel
            .match_labels
            .iter()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for e in &sel.match_expressions {
            reqs.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), e.values.clone()),
                "NotIn" => Requirement::NotIn(e.key.clone(), e.values.clone()),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => Requirement::In(e.key.clone(), Vec::new()),
            });
        }
        Selector(reqs)
    }
}

/// Splits on commas that are not inside `( … )`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn split_set_op<'a>(part: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let i = part.find(op)?;
    Some((part[..i].trim(), part[i + op.len()..].trim()))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a set like (a,b) after the operator, got {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn check_key(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("a requirement has an empty label key".into());
    }
    if key.contains(char::is_whitespace) || key.contains(['(', ')', '=', '!']) {
        return Err(format!("{key:?} is not a valid label key"));
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_form() {
        let s = Selector::parse("app=web, tier!=db,env in (prod, staging),!legacy,zone").unwrap();
        assert_eq!(s.0.len(), 5);
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("zone", "a"),
            ("legacy", "1")
        ])));
        let n = Selector::parse("env notin (prod)").unwrap();
        assert!(n.matches(&labels(&[])));
        assert!(!n.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn empty_matches_everything() {
        assert!(Selector::parse("").unwrap().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Selector::parse("env in prod").is_err());
        assert!(Selector::parse("=x").is_err());
    }
}
