//! Graceful Pod deletion, as Kubernetes does it. Deleting a Pod that runs on a Ready
//! node does not remove it: it gets `deletionTimestamp` (now + grace) and shows as
//! `Terminating`, node sync drops it from the node's desired set so the agent stops its
//! containers, and the Pod leaves the store once the agent no longer reports it (or its
//! node is gone or NotReady, or the agent never confirms: the safety net).
//!
//! Every path that deletes Pods (the REST API, the Deployment controller) goes through
//! `delete_pod`, so they all agree. The decisions are pure functions over Pod and Node
//! values (`decide`, `finalize_reason`, `gone_from_report`); the rest reads and writes
//! the store.

use std::collections::{BTreeSet, HashMap};

use chrono::Duration as ChronoDuration;
use punnet_api::{Node, Pod, Time};
use tracing::info;

use crate::store::peek::PodView;
use crate::store::{Store, StoreError};

/// A terminating Pod whose agent has not confirmed it gone this long after its
/// `deletionTimestamp` is removed anyway: an agent that lost the Pod (or a bug) must
/// not leave it `Terminating` for ever.
pub const CONFIRM_TIMEOUT_SECONDS: i64 = 60;

/// What deleting one Pod does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Remove it from the store now: nothing runs it, or the caller forced it.
    Remove,
    /// Mark it terminating with this grace period; the agent stops it.
    Graceful { grace_seconds: i64 },
    /// It is terminating already: nothing to write (deleting twice is not an error).
    AlreadyTerminating,
}

/// Whether the Pod is being deleted gracefully.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The graceful-vs-immediate decision. `node` is the Node the Pod is bound to, if it
/// exists; `requested` is the request's `gracePeriodSeconds` (0 forces removal).
pub fn decide(pod: &Pod, node: Option<&Node>, requested: Option<i64>) -> Decision {
    if requested == Some(0) {
        return Decision::Remove;
    }
    // Nothing can confirm the stop of a Pod no agent runs: waiting would only hang.
    let runs_somewhere = pod.spec.node_name.is_some() && node.is_some_and(Node::is_ready);
    if !runs_somewhere {
        return Decision::Remove;
    }
    if is_terminating(pod) {
        return Decision::AlreadyTerminating;
    }
    let grace_seconds = requested
        .unwrap_or_else(|| pod.spec.grace_period_seconds() as i64)
        .max(0);
    if grace_seconds == 0 {
        return Decision::Remove;
    }
    Decision::Graceful { grace_seconds }
}

/// Marks `pod` terminating as Kubernetes does: `deletionTimestamp` is when the grace
/// period ends, not when the delete was asked.
pub fn mark_terminating(pod: &mut Pod, grace_seconds: i64, now: Time) {
    if is_terminating(pod) {
        return;
    }
    pod.metadata.deletion_timestamp = Some(Time(now.0 + ChronoDuration::seconds(grace_seconds)));
    pod.metadata.deletion_grace_period_seconds = Some(grace_seconds);
}

/// Why a terminating Pod should now leave the store (the periodic sweep's rules), or
/// `None` to keep waiting for its agent.
pub fn finalize_reason(pod: &Pod, node: Option<&Node>, now: Time) -> Option<&'static str> {
    let deadline = pod.metadata.deletion_timestamp?;
    if pod.spec.node_name.is_none() {
        return Some("not bound to a node");
    }
    match node {
        None => return Some("its node no longer exists"),
        Some(n) if !n.is_ready() => return Some("its node is NotReady"),
        Some(_) => {}
    }
    if now.0 > deadline.0 + ChronoDuration::seconds(CONFIRM_TIMEOUT_SECONDS) {
        return Some("its node did not confirm the stop in time");
    }
    None
}

/// Whether a status report of `node` that lists `reported_uids` confirms that the
/// terminating `pod` no longer has containers there. Agents report a Pod while any of
/// its containers remains, so its absence means the stop is done.
pub fn gone_from_report(pod: &Pod, node: &str, reported_uids: &BTreeSet<&str>) -> bool {
    is_terminating(pod)
        && pod.spec.node_name.as_deref() == Some(node)
        && pod
            .metadata
            .uid
            .as_deref()
            .is_none_or(|uid| !reported_uids.contains(uid))
}

/// The result of `delete_pod`.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// Removed from the store (the object as it was).
    Removed(Pod),
    /// Terminating (now or already); the object as stored.
    Terminating(Pod),
    NotFound,
}

/// Deletes the Pod `namespace/name` (only incarnation `uid`, if given) gracefully or at
/// once, as `decide` says. `requested_grace` is the request's `gracePeriodSeconds`.
pub fn delete_pod(
    store: &Store,
    namespace: Option<&str>,
    name: &str,
    uid: Option<&str>,
    requested_grace: Option<i64>,
) -> Result<Deleted, StoreError> {
    let Some(pod) = store.get::<Pod>(namespace, name)? else {
        return Ok(Deleted::NotFound);
    };
    if uid.is_some() && pod.metadata.uid.as_deref() != uid {
        return Ok(Deleted::NotFound);
    }
    let node: Option<Node> = match &pod.spec.node_name {
        Some(n) => store.get(None, n)?,
        None => None,
    };
    let key = pod.metadata.key();
    match decide(&pod, node.as_ref(), requested_grace) {
        Decision::Remove => {
            // Guarded by the uid we decided on: a same-named Pod created meanwhile stays.
            match store.delete::<Pod>(namespace, name, pod.metadata.uid.as_deref())? {
                Some(gone) => {
                    info!("pod {key}: deleted");
                    Ok(Deleted::Removed(gone))
                }
                None => Ok(Deleted::NotFound),
            }
        }
        Decision::AlreadyTerminating => Ok(Deleted::Terminating(pod)),
        Decision::Graceful { grace_seconds } => {
            let now = Time::now();
            let marked = store.modify::<Pod>(namespace, name, |p| {
                if p.metadata.uid == pod.metadata.uid {
                    mark_terminating(p, grace_seconds, now);
                }
            })?;
            match marked {
                Some(p) if p.metadata.uid == pod.metadata.uid => {
                    info!("pod {key}: terminating (grace period {grace_seconds}s)");
                    Ok(Deleted::Terminating(p))
                }
                _ => Ok(Deleted::NotFound),
            }
        }
    }
}

/// Removes a terminating Pod for `why`, only the incarnation `pod` is. Whether it was
/// still there to remove.
pub fn finalize(store: &Store, pod: &Pod, why: &str) -> Result<bool, StoreError> {
    let gone = store.delete::<Pod>(
        pod.metadata.namespace.as_deref(),
        &pod.metadata.name,
        pod.metadata.uid.as_deref(),
    )?;
    if gone.is_some() {
        info!("pod {}: deleted ({why})", pod.metadata.key());
    }
    Ok(gone.is_some())
}

/// The status-ingest rule: terminating Pods of `node` that its report no longer lists
/// leave the store. Returns how many did.
pub fn finalize_reported(
    store: &Store,
    node: &str,
    reported_uids: &BTreeSet<&str>,
) -> Result<usize, StoreError> {
    // Only terminating Pods of this node are decoded.
    let mut pods = Vec::new();
    store.visit_where::<Pod, PodView>(
        None,
        |p| p.terminating() && p.node() == Some(node),
        |pod| pods.push(pod),
    )?;
    let mut n = 0;
    for pod in pods
        .iter()
        .filter(|p| gone_from_report(p, node, reported_uids))
    {
        finalize(store, pod, "its node confirmed its containers are gone")?;
        n += 1;
    }
    Ok(n)
}

/// The periodic sweep: terminating Pods that no agent will confirm (unbound, node
/// missing or NotReady, or past the safety net) leave the store. Returns how many did.
pub fn sweep(store: &Store, now: Time) -> Result<usize, StoreError> {
    // Only terminating Pods are decoded.
    let mut terminating = Vec::new();
    store.visit_where::<Pod, PodView>(None, PodView::terminating, |pod| terminating.push(pod))?;
    if terminating.is_empty() {
        return Ok(0);
    }
    // By name: a lost tenth of 5,000 boards leaves thousands of Pods to look up.
    let (nodes, _) = store.list::<Node>(None)?;
    let nodes: HashMap<&str, &Node> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_str(), n))
        .collect();
    let mut n = 0;
    for pod in &terminating {
        let node = pod
            .spec
            .node_name
            .as_deref()
            .and_then(|name| nodes.get(name).copied());
        if let Some(why) = finalize_reason(pod, node, now) {
            finalize(store, pod, why)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::NodeCondition;

    fn at(secs: i64) -> Time {
        Time(chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap())
    }

    fn node(name: &str, ready: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.status.conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: ready.into(),
            ..Default::default()
        });
        n
    }

    fn pod(name: &str, node: Option<&str>, grace: Option<i64>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.spec.node_name = node.map(str::to_string);
        p.spec.termination_grace_period_seconds = grace;
        p.spec.containers.push(punnet_api::Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn bound_pods_on_ready_nodes_terminate_gracefully_others_go_at_once() {
        let ready = node("n1", "True");
        let lost = node("n1", "Unknown");
        let bound = pod("a", Some("n1"), None);
        assert_eq!(
            decide(&bound, Some(&ready), None),
            Decision::Graceful { grace_seconds: 30 },
            "the default grace period is Kubernetes' 30 s"
        );
        assert_eq!(
            decide(&pod("a", Some("n1"), Some(3)), Some(&ready), None),
            Decision::Graceful { grace_seconds: 3 }
        );
        assert_eq!(
            decide(&bound, Some(&ready), Some(1)),
            Decision::Graceful { grace_seconds: 1 },
            "the request's grace period wins"
        );
        assert_eq!(decide(&bound, Some(&ready), Some(0)), Decision::Remove);
        assert_eq!(
            decide(&pod("a", Some("n1"), Some(0)), Some(&ready), None),
            Decision::Remove
        );
        assert_eq!(decide(&pod("a", None, None), None, None), Decision::Remove);
        assert_eq!(decide(&bound, None, None), Decision::Remove, "node gone");
        assert_eq!(decide(&bound, Some(&lost), None), Decision::Remove);

        let mut terminating = bound.clone();
        mark_terminating(&mut terminating, 30, at(0));
        assert_eq!(terminating.metadata.deletion_timestamp, Some(at(30)));
        assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
        assert_eq!(
            decide(&terminating, Some(&ready), Some(5)),
            Decision::AlreadyTerminating
        );
        assert_eq!(
            decide(&terminating, Some(&ready), Some(0)),
            Decision::Remove,
            "force deletion of a terminating Pod"
        );
        // Marking twice keeps the first deadline.
        let before = terminating.clone();
        mark_terminating(&mut terminating, 1, at(10));
        assert_eq!(terminating, before);
    }

    #[test]
    fn finalize_rules() {
        let ready = node("n1", "True");
        let lost = node("n1", "Unknown");
        let mut p = pod("a", Some("n1"), Some(3));
        assert_eq!(
            finalize_reason(&p, Some(&ready), at(0)),
            None,
            "not terminating"
        );
        mark_terminating(&mut p, 3, at(0));
        assert_eq!(finalize_reason(&p, Some(&ready), at(3)), None);
        assert_eq!(
            finalize_reason(&p, Some(&ready), at(3 + CONFIRM_TIMEOUT_SECONDS)),
            None
        );
        assert!(finalize_reason(&p, Some(&ready), at(4 + CONFIRM_TIMEOUT_SECONDS)).is_some());
        assert!(finalize_reason(&p, Some(&lost), at(1)).is_some());
        assert!(finalize_reason(&p, None, at(1)).is_some());
        let mut unbound = p.clone();
        unbound.spec.node_name = None;
        assert!(finalize_reason(&unbound, None, at(1)).is_some());

        p.metadata.uid = Some("u1".into());
        let listed: BTreeSet<&str> = ["u1"].into();
        let empty = BTreeSet::new();
        assert!(!gone_from_report(&p, "n1", &listed));
        assert!(gone_from_report(&p, "n1", &empty));
        assert!(!gone_from_report(&p, "n2", &empty), "another node's report");
        let mut live = p.clone();
        live.metadata.deletion_timestamp = None;
        assert!(!gone_from_report(&live, "n1", &empty), "not terminating");
    }

    #[test]
    fn delete_pod_against_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(node("n1", "True")).unwrap();
        store.create(pod("bound", Some("n1"), Some(3))).unwrap();
        store.create(pod("unbound", None, None)).unwrap();

        let Deleted::Terminating(p) =
            delete_pod(&store, Some("default"), "bound", None, None).unwrap()
        else {
            panic!("a bound Pod on a Ready node terminates gracefully")
        };
        assert!(p.metadata.deletion_timestamp.is_some());
        assert_eq!(p.metadata.deletion_grace_period_seconds, Some(3));
        let rev = store.revision();
        assert!(matches!(
            delete_pod(&store, Some("default"), "bound", None, None).unwrap(),
            Deleted::Terminating(_)
        ));
        assert_eq!(store.revision(), rev, "deleting twice writes nothing");
        assert!(matches!(
            delete_pod(&store, Some("default"), "unbound", None, None).unwrap(),
            Deleted::Removed(_)
        ));
        assert_eq!(
            delete_pod(&store, Some("default"), "unbound", None, None).unwrap(),
            Deleted::NotFound
        );

        // The agent still reports it: it stays; then it does not: it goes.
        let uid = p.metadata.uid.clone().unwrap();
        let listed: BTreeSet<&str> = [uid.as_str()].into();
        assert_eq!(finalize_reported(&store, "n1", &listed).unwrap(), 0);
        assert_eq!(sweep(&store, Time::now()).unwrap(), 0);
        assert_eq!(
            finalize_reported(&store, "n1", &BTreeSet::new()).unwrap(),
            1
        );
        assert!(store
            .get::<Pod>(Some("default"), "bound")
            .unwrap()
            .is_none());

        // A terminating Pod whose node goes NotReady is swept.
        store.create(pod("b2", Some("n1"), Some(3))).unwrap();
        delete_pod(&store, Some("default"), "b2", None, None).unwrap();
        store
            .modify::<Node>(None, "n1", |n| {
                n.status.conditions[0].status = "Unknown".into()
            })
            .unwrap();
        assert_eq!(sweep(&store, Time::now()).unwrap(), 1);
        assert!(store.list::<Pod>(None).unwrap().0.is_empty());
    }
}
