//! Labels and selectors as text: `app=web,tier=db` for maps and the `-l` syntax for a
//! Deployment's structured selector (so it can be sent as `?labelSelector=`).

use std::collections::BTreeMap;

use punnet_api::selector::Selector;
use punnet_api::LabelSelector;

use crate::error::{Error, Result};

/// `a=b,c=d`, or `<none>`.
pub fn format_map(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The string form of a structured selector: `app=web,env in (a,b),!legacy`.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in &sel.match_expressions {
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, e.values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, e.values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            // Validation rejects other operators; select nothing rather than everything.
            other => format!("{} in ()", other),
        });
    }
    parts.join(",")
}

/// Checks a `-l` selector locally (a typo should not become a confusing server error)
/// and returns the query to send.
pub fn selector_query(selector: Option<&str>) -> Result<Vec<(&'static str, String)>> {
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Vec::new()),
        Some(s) => {
            Selector::parse(s).map_err(|e| Error::Usage(e.to_string()))?;
            Ok(vec![("labelSelector", s.to_string())])
        }
    }
}

#[cfg(test)]
mod tests {
    use punnet_api::LabelSelectorRequirement;

    use super::*;

    #[test]
    fn structured_selectors_round_trip_through_the_parser() {
        let sel = LabelSelector {
            match_labels: BTreeMap::from([("app".into(), "web".into())]),
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: vec!["a".into(), "b".into()],
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                },
            ],
        };
        let text = selector_string(&sel);
        assert_eq!(text, "app=web,env in (a,b),!legacy");
        assert_eq!(
            Selector::parse(&text).unwrap(),
            Selector::from_label_selector(&sel)
        );
    }

    #[test]
    fn selector_query_checks_and_passes_the_text() {
        assert_eq!(
            selector_query(Some("app=web,tier!=db")).unwrap(),
            vec![("labelSelector", "app=web,tier!=db".to_string())]
        );
        assert!(selector_query(Some("")).unwrap().is_empty());
        let err = selector_query(Some("env in prod")).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid label selector"),
            "{err}"
        );
    }
}
