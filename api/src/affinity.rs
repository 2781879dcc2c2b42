//! Node affinity, pure: whether a node satisfies a Pod's `nodeSelector` and
//! `affinity.nodeAffinity` (the scheduler's filter and the DaemonSet controller's
//! "should this node run a daemon Pod"), the score of its preferred terms, and the
//! checks validation runs on the terms.

use std::collections::{BTreeMap, BTreeSet};

use crate::node::Node;
use crate::pod::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

/// The one field `matchFields` may name, as in Kubernetes.
pub const FIELD_NODE_NAME: &str = "metadata.name";

/// Whether one requirement holds for a value (`None`: the key is absent).
fn requirement_holds(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| req.values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| req.values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Both sides must be integers; anything else does not match, as in Kubernetes.
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, req.values.as_slice()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if req.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a node with `name` and `labels` matches the term: every expression holds on
/// the labels and every field requirement on the node's name. An empty term matches
/// nothing.
pub fn term_matches(
    term: &NodeSelectorTerm,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    term.match_expressions
        .iter()
        .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)))
        && term
            .match_fields
            .iter()
            .all(|r| r.key == FIELD_NODE_NAME && requirement_holds(r, Some(name)))
}

/// The only nodes the Pod's required node affinity can match, when every term names
/// them (`matchFields` `metadata.name In [...]`, as a DaemonSet's Pods do): the
/// scheduler then looks at those instead of searching the fleet, as Kubernetes'
/// NodeAffinity PreFilter does. `None` when some term could match any node.
pub fn required_node_names(spec: &PodSpec) -> Option<BTreeSet<&str>> {
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    let mut names = BTreeSet::new();
    for term in terms {
        // An empty term matches nothing, so it adds no node.
        if term.match_expressions.is_empty() && term.match_fields.is_empty() {
            continue;
        }
        let mut within: Option<BTreeSet<&str>> = None;
        for r in &term.match_fields {
            if r.key == FIELD_NODE_NAME && r.operator == "In" {
                let these: BTreeSet<&str> = r.values.iter().map(String::as_str).collect();
                within = Some(match within {
                    None => these,
                    Some(w) => w.intersection(&these).copied().collect(),
                });
            }
        }
        names.extend(within?);
    }
    Some(names)
}

/// Whether `node` passes the Pod's `nodeSelector` and its required node affinity (one
/// of the terms must match).
pub fn node_matches(spec: &PodSpec, node: &Node) -> bool {
    let labels = &node.metadata.labels;
    if spec
        .node_selector
        .iter()
        .any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, &node.metadata.name, labels)),
    }
}

/// The sum of the weights of the preferred terms `node` matches (0 without any).
pub fn preferred_score(spec: &PodSpec, node: &Node) -> i64 {
    let Some(na) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    else {
        return 0;
    };
    na.preferred_during_scheduling_ignored_during_execution
        .iter()
        .filter(|p| term_matches(&p.preference, &node.metadata.name, &node.metadata.labels))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// Problems with one term, as `(field suffix, message)` pairs.
pub fn check_term(term: &NodeSelectorTerm) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, r) in term.match_expressions.iter().enumerate() {
        let f = format!("matchExpressions[{i}]");
        if r.key.is_empty() {
            out.push((format!("{f}.key"), "must not be empty".into()));
        }
        out.extend(check_requirement(r).map(|(sub, m)| (format!("{f}.{sub}"), m)));
    }
    for (i, r) in term.match_fields.iter().enumerate() {
        let f = format!("matchFields[{i}]");
        if r.key != FIELD_NODE_NAME {
            out.push((
                format!("{f}.key"),
                format!("{:?} is not supported: only \"metadata.name\"", r.key),
            ));
        }
        if !matches!(r.operator.as_str(), "In" | "NotIn") {
            out.push((
                format!("{f}.operator"),
                format!(
                    "{:?} is not supported for matchFields: only In and NotIn",
                    r.operator
                ),
            ));
        } else if r.values.len() != 1 {
            out.push((
                format!("{f}.values"),
                "must have exactly one node name".into(),
            ));
        }
    }
    out
}

fn check_requirement(r: &NodeSelectorRequirement) -> Option<(String, String)> {
    match r.operator.as_str() {
        "In" | "NotIn" if r.values.is_empty() => {
            Some(("values".into(), "must not be empty for In and NotIn".into()))
        }
        "Exists" | "DoesNotExist" if !r.values.is_empty() => Some((
            "values".into(),
            "must be empty for Exists and DoesNotExist".into(),
        )),
        "Gt" | "Lt" => match r.values.as_slice() {
            [v] if v.parse::<i64>().is_ok() => None,
            _ => Some(("values".into(), "must be one integer for Gt and Lt".into())),
        },
        "In" | "NotIn" | "Exists" | "DoesNotExist" => None,
        other => Some((
            "operator".into(),
            format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{Affinity, NodeAffinity, NodeSelector, PreferredSchedulingTerm};

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn term(reqs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: reqs,
            match_fields: vec![],
        }
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.metadata.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n
    }

    fn required(terms: Vec<NodeSelectorTerm>) -> PodSpec {
        PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_operator() {
        let n = node(
            "pi-1",
            &[("arch", "arm64"), ("gpio", ""), ("ram-mb", "1024")],
        );
        let labels = &n.metadata.labels;
        let cases = [
            (req("arch", "In", &["arm64", "arm"]), true),
            (req("arch", "In", &["amd64"]), false),
            (req("arch", "NotIn", &["amd64"]), true),
            (req("missing", "NotIn", &["x"]), true),
            (req("gpio", "Exists", &[]), true),
            (req("camera", "Exists", &[]), false),
            (req("camera", "DoesNotExist", &[]), true),
            (req("ram-mb", "Gt", &["512"]), true),
            (req("ram-mb", "Gt", &["1024"]), false),
            (req("ram-mb", "Lt", &["2048"]), true),
            (req("arch", "Gt", &["1"]), false),
            (req("missing", "Lt", &["1"]), false),
            (req("arch", "Like", &["arm64"]), false),
        ];
        for (r, want) in cases {
            assert_eq!(
                term_matches(&term(vec![r.clone()]), "pi-1", labels),
                want,
                "{r:?}"
            );
        }
        assert!(!term_matches(&term(vec![]), "pi-1", labels), "empty term");
        let by_name = NodeSelectorTerm {
            match_fields: vec![req(FIELD_NODE_NAME, "In", &["pi-1"])],
            ..Default::default()
        };
        assert!(term_matches(&by_name, "pi-1", labels));
        assert!(!term_matches(&by_name, "pi-2", labels));
    }

    #[test]
    fn terms_are_ored_requirements_anded_and_node_selector_applies_too() {
        let pi4 = node("pi4", &[("arch", "arm64"), ("zone", "attic")]);
        let pi3 = node("pi3", &[("arch", "arm"), ("zone", "cellar")]);
        let mut spec = required(vec![
            term(vec![
                req("arch", "In", &["arm64"]),
                req("zone", "In", &["cellar"]),
            ]),
            term(vec![req("zone", "In", &["cellar"])]),
        ]);
        assert!(!node_matches(&spec, &pi4));
        assert!(node_matches(&spec, &pi3));
        spec.node_selector.insert("arch".into(), "arm64".into());
        assert!(!node_matches(&spec, &pi3), "nodeSelector must hold as well");
        assert!(node_matches(&PodSpec::default(), &pi3));
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let n = node("pi4", &[("arch", "arm64"), ("ssd", "true")]);
        let spec = PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    preferred_during_scheduling_ignored_during_execution: vec![
                        PreferredSchedulingTerm {
                            weight: 10,
                            preference: term(vec![req("ssd", "Exists", &[])]),
                        },
                        PreferredSchedulingTerm {
                            weight: 5,
                            preference: term(vec![req("arch", "In", &["arm64"])]),
                        },
                        PreferredSchedulingTerm {
                            weight: 50,
                            preference: term(vec![req("arch", "In", &["amd64"])]),
                        },
                    ],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        assert_eq!(preferred_score(&spec, &n), 15);
        assert_eq!(preferred_score(&PodSpec::default(), &n), 0);
    }

    #[test]
    fn pod_validation_checks_affinity() {
        let mut pod = crate::Pod::default();
        pod.metadata.name = "p".into();
        pod.spec.containers.push(crate::Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        });
        pod.spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![],
                }),
                preferred_during_scheduling_ignored_during_execution: vec![
                    PreferredSchedulingTerm {
                        weight: 0,
                        preference: term(vec![req("a", "Exists", &[])]),
                    },
                ],
            }),
        });
        let err = crate::validate::validate_pod(&pod).unwrap_err().to_string();
        assert_eq!(
            err,
            "Pod p: spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: must have at least one term; \
             spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: must be between 1 and 100"
        );
    }

    #[test]
    fn term_checks() {
        let bad = NodeSelectorTerm {
            match_expressions: vec![
                req("a", "In", &[]),
                req("b", "Gt", &["x"]),
                req("c", "Near", &[]),
                req("d", "Exists", &["1"]),
            ],
            match_fields: vec![req("metadata.labels", "Exists", &[])],
        };
        let fields: Vec<String> = check_term(&bad).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                "matchExpressions[0].values",
                "matchExpressions[1].values",
                "matchExpressions[2].operator",
                "matchExpressions[3].values",
                "matchFields[0].key",
                "matchFields[0].operator",
            ]
        );
        assert!(check_term(&term(vec![req("a", "Lt", &["3"])])).is_empty());
    }

    #[test]
    fn required_node_names_are_only_those_every_term_names() {
        let by_name = |n: &str| NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![req(FIELD_NODE_NAME, "In", &[n])],
        };
        let names = |spec: &PodSpec| {
            required_node_names(spec).map(|s| s.into_iter().map(str::to_string).collect::<Vec<_>>())
        };
        assert_eq!(names(&PodSpec::default()), None);
        // A DaemonSet Pod's affinity.
        let ds = required(vec![by_name("pi-1")]);
        assert_eq!(names(&ds), Some(vec!["pi-1".to_string()]));
        assert_eq!(
            names(&required(vec![by_name("pi-2"), by_name("pi-1")])),
            Some(vec!["pi-1".to_string(), "pi-2".to_string()])
        );
        // A term of labels could match any node.
        let labelled = term(vec![req("zone", "In", &["a"])]);
        assert_eq!(
            names(&required(vec![by_name("pi-1"), labelled.clone()])),
            None
        );
        // Names and labels in one term: still only the named node.
        let both = NodeSelectorTerm {
            match_expressions: labelled.match_expressions.clone(),
            match_fields: vec![req(FIELD_NODE_NAME, "In", &["pi-3"])],
        };
        assert_eq!(names(&required(vec![both])), Some(vec!["pi-3".to_string()]));
        // NotIn narrows nothing.
        let not_in = NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![req(FIELD_NODE_NAME, "NotIn", &["pi-1"])],
        };
        assert_eq!(names(&required(vec![not_in])), None);
        // Whatever the names say, node_matches agrees on every node.
        for spec in [ds, required(vec![by_name("pi-2"), by_name("pi-1")])] {
            let allowed = required_node_names(&spec).unwrap();
            for n in ["pi-1", "pi-2", "pi-3"] {
                assert_eq!(
                    node_matches(&spec, &node(n, &[])),
                    allowed.contains(n),
                    "{n}"
                );
            }
        }
    }
}
