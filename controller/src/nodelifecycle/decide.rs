//! The node lifecycle controller's decisions, pure: which `node.kubernetes.io/` taints a
//! Node should carry given its Ready condition and `spec.unschedulable`, and when (if
//! ever) a Pod on a `NoExecute`-tainted node is to be evicted.

use chrono::Duration as ChronoDuration;
use punnet_api::taint::{
    self, is_daemon_set_pod, Taint, Toleration, NO_EXECUTE, NO_SCHEDULE, TAINT_NOT_READY,
    TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE,
};
use punnet_api::{Node, Pod, Time};

use crate::podgc::is_terminating;
use crate::scheduler::is_terminal;

/// The taint keys this controller owns; taints with other keys are left alone.
pub const MANAGED_KEYS: [&str; 3] = [TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE];

/// What the node's state asks for, as Kubernetes' TaintNodesByCondition and
/// TaintBasedEvictions do: Ready `False` → not-ready, `Unknown` → unreachable (each
/// `NoSchedule` and `NoExecute`), cordoned → unschedulable `NoSchedule`. A Node without a
/// Ready condition (no agent ever reported) gets none: nothing is known about it.
pub fn wanted_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut wanted = Vec::new();
    let key = match node.condition("Ready").map(|c| c.status.as_str()) {
        Some("False") => Some(TAINT_NOT_READY),
        Some("True") | None => None,
        Some(_) => Some(TAINT_UNREACHABLE),
    };
    if let Some(key) = key {
        wanted.push((key, NO_SCHEDULE));
        wanted.push((key, NO_EXECUTE));
    }
    if node.is_unschedulable() {
        wanted.push((TAINT_UNSCHEDULABLE, NO_SCHEDULE));
    }
    wanted
}

/// The node's taints as they should be: its other taints untouched, managed ones that
/// are still wanted kept (with their `timeAdded`, which eviction deadlines count from),
/// new ones added with `timeAdded = now`, the rest removed. `None` when nothing changes.
pub fn reconcile_taints(node: &Node, now: Time) -> Option<Vec<Taint>> {
    let wanted = wanted_taints(node);
    let is_wanted = |t: &Taint| wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e);
    let mut next: Vec<Taint> = node
        .spec
        .taints
        .iter()
        .filter(|t| !MANAGED_KEYS.contains(&t.key.as_str()) || is_wanted(t))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !next.iter().any(|t| t.key == key && t.effect == effect) {
            next.push(Taint {
                time_added: Some(now),
                ..Taint::new(key, effect)
            });
        }
    }
    (next != node.spec.taints).then_some(next)
}

/// Whether the taints say the node is not ready or unreachable.
pub fn has_condition_taint(taints: &[Taint]) -> bool {
    taints
        .iter()
        .any(|t| t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
}

/// The tolerations Kubernetes' DefaultTolerationSeconds admission gives every Pod that
/// does not say otherwise: not-ready and unreachable `NoExecute` for `seconds`. Punnet
/// applies them when deciding rather than writing them into each Pod, so a change of
/// `--default-eviction-seconds` applies to Pods that already exist.
pub fn default_tolerations(pod: &Pod, seconds: i64) -> Vec<Toleration> {
    [TAINT_NOT_READY, TAINT_UNREACHABLE]
        .into_iter()
        .filter(|key| {
            !pod.spec.tolerations.iter().any(|t| {
                t.key.as_deref() == Some(*key)
                    && matches!(t.effect.as_deref(), None | Some("") | Some(NO_EXECUTE))
            })
        })
        .map(|key| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: Some(seconds),
            ..Toleration::default()
        })
        .collect()
}

/// What the taint manager does with one Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// No `NoExecute` taint concerns it, or it tolerates them for ever.
    Never,
    /// It tolerates the taints until then.
    At(Time),
    /// A taint it does not tolerate (or its time is up).
    Now,
}

/// When `pod` on a node with `taints` is to be evicted, by the taint manager's rules: a
/// `NoExecute` taint none of its tolerations matches evicts it at once; otherwise, per
/// taint, the first matching toleration's `tolerationSeconds` counted from the taint's
/// `timeAdded` (unset: for ever), and the earliest of those. DaemonSet Pods, finished
/// Pods and Pods already terminating are never evicted.
///
/// Time counts from `started` at the earliest (when this controller began watching), as
/// Kubernetes' in-memory taint manager does: a controller that was down cannot know
/// whether a board came back meanwhile, and must not evict its Pods before the agent's
/// next report could clear the taint.
pub fn eviction(
    pod: &Pod,
    taints: &[Taint],
    default_seconds: i64,
    started: Time,
    now: Time,
) -> Eviction {
    if is_daemon_set_pod(pod) || is_terminal(pod) || is_terminating(pod) {
        return Eviction::Never;
    }
    let mut tolerations = taint::effective_tolerations(pod);
    tolerations.extend(default_tolerations(pod, default_seconds));
    let mut earliest: Option<Time> = None;
    for t in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        let Some(tol) = tolerations.iter().find(|tol| taint::tolerates(tol, t)) else {
            return Eviction::Now;
        };
        let Some(secs) = tol.toleration_seconds else {
            continue;
        };
        let since = t.time_added.unwrap_or(now).max(started);
        let at = Time(since.0 + ChronoDuration::seconds(secs.max(0)));
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    match earliest {
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
        None => Eviction::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{NodeCondition, OwnerReference};

    fn at(secs: i64) -> Time {
        Time(chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap())
    }

    fn node(ready: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = "pi-3".into();
        if let Some(s) = ready {
            n.status.conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: s.into(),
                ..Default::default()
            });
        }
        n
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints.iter().map(Taint::to_kubectl).collect()
    }

    #[test]
    fn conditions_and_cordon_map_to_taints() {
        assert!(reconcile_taints(&node(Some("True")), at(0)).is_none());
        assert!(reconcile_taints(&node(None), at(0)).is_none());
        let lost = reconcile_taints(&node(Some("Unknown")), at(5)).unwrap();
        assert_eq!(
            keys(&lost),
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert_eq!(lost[1].time_added, Some(at(5)));
        let mut failing = node(Some("False"));
        failing.spec.unschedulable = Some(true);
        assert_eq!(
            keys(&reconcile_taints(&failing, at(0)).unwrap()),
            [
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
    }

    #[test]
    fn reconciling_keeps_time_added_and_user_taints_and_clears_on_ready() {
        let mut n = node(Some("Unknown"));
        n.spec.taints.push(Taint {
            value: Some("db".into()),
            ..Taint::new("dedicated", NO_SCHEDULE)
        });
        n.spec.taints = reconcile_taints(&n, at(10)).unwrap();
        assert!(
            reconcile_taints(&n, at(99)).is_none(),
            "idempotent: timeAdded stays"
        );
        // Unknown → False swaps unreachable for not-ready.
        n.status.conditions[0].status = "False".into();
        n.spec.taints = reconcile_taints(&n, at(20)).unwrap();
        assert_eq!(
            keys(&n.spec.taints),
            [
                "dedicated=db:NoSchedule",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        assert!(has_condition_taint(&n.spec.taints));
        n.status.conditions[0].status = "True".into();
        n.spec.taints = reconcile_taints(&n, at(30)).unwrap();
        assert_eq!(keys(&n.spec.taints), ["dedicated=db:NoSchedule"]);
        assert!(!has_condition_taint(&n.spec.taints));
    }

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "web-x".into();
        p.metadata.namespace = Some("default".into());
        p.status.phase = Some("Running".into());
        p
    }

    /// When the controller started: before every taint of these tests.
    const START: Time = Time(chrono::DateTime::UNIX_EPOCH);

    fn unreachable_since(secs: i64) -> Vec<Taint> {
        vec![
            Taint {
                time_added: Some(at(secs)),
                ..Taint::new(TAINT_UNREACHABLE, NO_SCHEDULE)
            },
            Taint {
                time_added: Some(at(secs)),
                ..Taint::new(TAINT_UNREACHABLE, NO_EXECUTE)
            },
        ]
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: seconds,
            ..Default::default()
        }
    }

    #[test]
    fn pods_get_the_default_grace_unless_they_say_otherwise() {
        let taints = unreachable_since(100);
        let p = pod();
        assert_eq!(
            eviction(&p, &taints, 120, START, at(150)),
            Eviction::At(at(220))
        );
        assert_eq!(eviction(&p, &taints, 120, START, at(220)), Eviction::Now);
        // A longer toleration of its own wins over the default.
        let mut patient = pod();
        patient
            .spec
            .tolerations
            .push(toleration(TAINT_UNREACHABLE, Some(3600)));
        assert_eq!(
            eviction(&patient, &taints, 120, START, at(300)),
            Eviction::At(at(3700))
        );
        // Without tolerationSeconds: for ever.
        let mut forever = pod();
        forever
            .spec
            .tolerations
            .push(toleration(TAINT_UNREACHABLE, None));
        assert_eq!(
            eviction(&forever, &taints, 120, START, at(9999)),
            Eviction::Never
        );
        // No NoExecute taint: nothing to do.
        assert_eq!(
            eviction(&p, &taints[..1], 120, START, at(9999)),
            Eviction::Never
        );
    }

    #[test]
    fn a_restarted_controller_gives_pods_their_full_toleration_again() {
        let taints = unreachable_since(100);
        assert_eq!(
            eviction(&pod(), &taints, 120, at(1000), at(1001)),
            Eviction::At(at(1120))
        );
    }

    #[test]
    fn untolerated_no_execute_taints_evict_at_once() {
        let taints = vec![Taint {
            time_added: Some(at(0)),
            ..Taint::new("maintenance", NO_EXECUTE)
        }];
        assert_eq!(eviction(&pod(), &taints, 120, START, at(1)), Eviction::Now);
        let mut ok = pod();
        ok.spec
            .tolerations
            .push(toleration("maintenance", Some(60)));
        assert_eq!(
            eviction(&ok, &taints, 120, START, at(1)),
            Eviction::At(at(60))
        );
    }

    #[test]
    fn daemon_set_finished_and_terminating_pods_are_never_evicted() {
        let taints = unreachable_since(0);
        let mut ds = pod();
        ds.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: "log-shipper".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        assert_eq!(eviction(&ds, &taints, 0, START, at(9999)), Eviction::Never);
        let mut done = pod();
        done.status.phase = Some("Succeeded".into());
        assert_eq!(
            eviction(&done, &taints, 0, START, at(9999)),
            Eviction::Never
        );
        let mut going = pod();
        going.metadata.deletion_timestamp = Some(at(1));
        assert_eq!(
            eviction(&going, &taints, 0, START, at(9999)),
            Eviction::Never
        );
    }
}
