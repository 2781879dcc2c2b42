//! The slowly changing facts an agent reports, as a `kubectl`-minded user looks for
//! them on the Node: the board and CPU variant as labels (for `nodeSelector`) with the
//! exact text in annotations, the cgroup version as an annotation, and a
//! `MemoryCgroupUnavailable` condition when memory limits cannot be enforced. Figures
//! that change with every report (CPU, memory, disk, temperature) are not written to
//! the store; `metrics` keeps them in memory.

use std::collections::BTreeMap;

use punnet_api::wire::NodeFacts;
use punnet_api::{Node, NodeCondition, Time};

/// `Raspberry-Pi-4-Model-B-Rev-1.4`: the board model, made a valid label value.
pub const LABEL_BOARD: &str = "punnet.io/board";
/// `arm64`, `arm-v7`, `arm-v6`, `amd64`: the image platform variant (`/` is not
/// allowed in a label value).
pub const LABEL_PLATFORM: &str = "punnet.io/platform";
/// The board model as the device tree words it.
pub const ANNOTATION_BOARD_MODEL: &str = "punnet.io/board-model";
/// `linux/arm/v7`: the platform images are picked for.
pub const ANNOTATION_PLATFORM: &str = "punnet.io/platform";
/// `1` or `2`.
pub const ANNOTATION_CGROUP_VERSION: &str = "punnet.io/cgroup-version";

pub const CONDITION_MEMORY_CGROUP: &str = "MemoryCgroupUnavailable";
pub const REASON_MEMORY_CGROUP_DISABLED: &str = "MemoryCgroupDisabled";

/// Whether the agent reports cgroup facts at all (an older agent sends zeros, which
/// must not read as "no memory cgroup").
pub fn knows_cgroups(facts: &NodeFacts) -> bool {
    facts.cgroup_version != 0
}

/// A label value from free text: characters other than `[A-Za-z0-9._-]` become `-`,
/// runs of `-` collapse, at most 63 characters, starting and ending alphanumeric.
pub fn label_value(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trim = |s: &str| {
        s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string()
    };
    let out = trim(&out);
    trim(&out.chars().take(63).collect::<String>())
}

/// The labels the facts give a Node (added to the agent's own labels).
pub fn labels(facts: &NodeFacts) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let board = label_value(&facts.board_model);
    if !board.is_empty() {
        labels.insert(LABEL_BOARD.to_string(), board);
    }
    let platform = label_value(&facts.platform);
    if !platform.is_empty() {
        labels.insert(LABEL_PLATFORM.to_string(), platform);
    }
    labels
}

/// Sets the facts' annotations on `node`, removing those the facts no longer give.
pub fn set_annotations(node: &mut Node, facts: &NodeFacts) {
    let platform = if facts.platform.is_empty() {
        String::new()
    } else {
        format!("{}/{}", or(&facts.os, "linux"), facts.platform)
    };
    let cgroup = if knows_cgroups(facts) {
        facts.cgroup_version.to_string()
    } else {
        String::new()
    };
    let annotations = &mut node.metadata.annotations;
    for (key, value) in [
        (ANNOTATION_BOARD_MODEL, facts.board_model.trim().to_string()),
        (ANNOTATION_PLATFORM, platform),
        (ANNOTATION_CGROUP_VERSION, cgroup),
    ] {
        if value.is_empty() {
            annotations.remove(key);
        } else {
            annotations.insert(key.to_string(), value);
        }
    }
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

/// Sets or removes the `MemoryCgroupUnavailable` condition from the facts; the
/// transition time stays while the state does.
pub fn set_memory_cgroup_condition(node: &mut Node, facts: &NodeFacts, now: Time) {
    let conditions = &mut node.status.conditions;
    let previous = conditions
        .iter()
        .position(|c| c.type_ == CONDITION_MEMORY_CGROUP);
    if !knows_cgroups(facts) || facts.memory_cgroup {
        if let Some(i) = previous {
            conditions.remove(i);
        }
        return;
    }
    let message = facts.memory_cgroup_problem.clone().unwrap_or_else(|| {
        "the kernel's memory cgroup controller is not enabled, so memory limits cannot be enforced: add `cgroup_enable=memory cgroup_memory=1` to the kernel command line (cmdline.txt on a Raspberry Pi) and reboot".to_string()
    });
    let condition = NodeCondition {
        type_: CONDITION_MEMORY_CGROUP.into(),
        status: "True".into(),
        reason: Some(REASON_MEMORY_CGROUP_DISABLED.into()),
        message: Some(message),
        last_heartbeat_time: None,
        last_transition_time: Some(
            previous
                .and_then(|i| conditions[i].last_transition_time)
                .unwrap_or(now),
        ),
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Whether the node cannot enforce memory limits (its condition says so).
pub fn lacks_memory_cgroup(node: &Node) -> bool {
    node.condition(CONDITION_MEMORY_CGROUP)
        .is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            os: "linux".into(),
            board_model: "Raspberry Pi 4 Model B Rev 1.4".into(),
            platform: "arm/v7".into(),
            cgroup_version: 2,
            memory_cgroup: true,
            ..NodeFacts::default()
        }
    }

    #[test]
    fn label_values_are_sanitized() {
        assert_eq!(
            label_value("Raspberry Pi 4 Model B Rev 1.4"),
            "Raspberry-Pi-4-Model-B-Rev-1.4"
        );
        assert_eq!(label_value(" (Pi) Zero 2 W!! "), "Pi-Zero-2-W");
        assert_eq!(label_value("arm/v7"), "arm-v7");
        assert_eq!(label_value(""), "");
        let long = label_value(&"ab ".repeat(40));
        assert!(long.len() <= 63 && long.ends_with('b'), "{long}");
        assert!(punnet_api::validate::label_value(&long).is_ok());
    }

    #[test]
    fn board_and_platform_become_labels_and_annotations() {
        let f = facts();
        let l = labels(&f);
        assert_eq!(l[LABEL_BOARD], "Raspberry-Pi-4-Model-B-Rev-1.4");
        assert_eq!(l[LABEL_PLATFORM], "arm-v7");
        let mut n = Node::default();
        set_annotations(&mut n, &f);
        let a = &n.metadata.annotations;
        assert_eq!(a[ANNOTATION_BOARD_MODEL], "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(a[ANNOTATION_PLATFORM], "linux/arm/v7");
        assert_eq!(a[ANNOTATION_CGROUP_VERSION], "2");
        // A board that is not a Pi: no board facts.
        set_annotations(&mut n, &NodeFacts::default());
        assert!(n.metadata.annotations.is_empty());
        assert!(labels(&NodeFacts::default()).is_empty());
    }

    #[test]
    fn memory_cgroup_condition_follows_the_facts() {
        let t0 = Time(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let t1 = Time(chrono::DateTime::from_timestamp(1_700_000_060, 0).unwrap());
        let mut n = Node::default();
        let mut f = facts();
        set_memory_cgroup_condition(&mut n, &f, t0);
        assert!(n.status.conditions.is_empty());
        f.memory_cgroup = false;
        f.memory_cgroup_problem =
            Some("cgroup_disable=memory is on the kernel command line".into());
        set_memory_cgroup_condition(&mut n, &f, t0);
        set_memory_cgroup_condition(&mut n, &f, t1);
        let c = n.condition(CONDITION_MEMORY_CGROUP).unwrap();
        assert_eq!(c.status, "True");
        assert_eq!(c.reason.as_deref(), Some(REASON_MEMORY_CGROUP_DISABLED));
        assert_eq!(
            c.message.as_deref(),
            Some("cgroup_disable=memory is on the kernel command line")
        );
        assert_eq!(c.last_transition_time, Some(t0));
        assert!(lacks_memory_cgroup(&n));
        // An agent that does not report cgroups says nothing either way.
        set_memory_cgroup_condition(&mut n, &NodeFacts::default(), t1);
        assert!(!lacks_memory_cgroup(&n));
    }
}
