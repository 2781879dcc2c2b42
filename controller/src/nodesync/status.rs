//! Status in (the way back of the Pod flow): what an agent's `NodeStatusReport` does to
//! the store. Nodes register themselves, as kubelets do; each reported Pod's status is
//! written when it changed, and a terminating Pod the report no longer lists is removed
//! (its containers are gone). The heartbeat time is persisted at a bounded rate, so an
//! idle fleet does not wear the controller's SD card.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use punnet_api::quantity::format_bytes;
use punnet_api::validate::{dns_subdomain, label_key, label_value};
use punnet_api::wire::{NodeFacts, NodeStatusReport};
use punnet_api::{
    Node, NodeAddress, NodeCondition, NodeSystemInfo, Pod, PodStatus, Time, LABEL_ARCH,
    LABEL_HOSTNAME, LABEL_OS,
};
use thiserror::Error;
use tracing::{info, warn};

use super::facts;
use super::index::split_key;
use crate::podgc;
use crate::store::{Store, StoreError};

/// Remembers which labels came from the agent's `--label`s, so that one dropped there
/// is dropped from the Node too, while labels a person set stay.
pub const AGENT_LABELS_ANNOTATION: &str = "punnet.io/agent-labels";

/// Pods a node may run, as Kubernetes' default.
const MAX_PODS: &str = "110";

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("status report on the topic of node {topic_node:?} claims to be from node {report_node:?}; ignored")]
    WrongNode {
        topic_node: String,
        report_node: String,
    },
    #[error("status report from an invalid node name {node:?}: {reason}")]
    BadNodeName { node: String, reason: String },
    #[error("node {node}: {source}")]
    Store {
        node: String,
        #[source]
        source: StoreError,
    },
}

/// The labels the agent sets: the standard three plus its valid `--label`s.
fn agent_labels(node: &str, facts: &NodeFacts) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &facts.labels {
        match label_key(k).and_then(|_| label_value(v)) {
            Ok(()) => {
                labels.insert(k.clone(), v.clone());
            }
            Err(e) => warn!("node {node}: ignoring agent label {k}={v}: {e}"),
        }
    }
    let hostname = if facts.hostname.is_empty() {
        node
    } else {
        &facts.hostname
    };
    for (k, v) in [(LABEL_ARCH, &facts.arch), (LABEL_OS, &facts.os)] {
        if !v.is_empty() {
            labels.insert(k.to_string(), v.clone());
        }
    }
    if label_value(hostname).is_ok() {
        labels.insert(LABEL_HOSTNAME.to_string(), hostname.to_string());
    }
    labels.extend(facts::labels(facts));
    labels
}

/// The Node as the report describes it, built on the stored one (labels and annotations
/// a person set, conditions' history). The heartbeat is moved to `now` only when
/// something else changes, the node was not Ready, or the stored one is older than
/// `heartbeat_every`.
pub fn node_from_report(
    existing: Option<&Node>,
    report: &NodeStatusReport,
    now: Time,
    heartbeat_every: Duration,
) -> Node {
    let facts = &report.facts;
    let mut node = existing.cloned().unwrap_or_default();
    node.metadata.name = report.node.clone();

    let new_labels = agent_labels(&report.node, facts);
    let previous_agent_keys: BTreeSet<String> = node
        .metadata
        .annotations
        .get(AGENT_LABELS_ANNOTATION)
        .map(|s| {
            s.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for gone in previous_agent_keys
        .iter()
        .filter(|k| !new_labels.contains_key(*k))
    {
        node.metadata.labels.remove(gone);
    }
    node.metadata.labels.extend(new_labels.clone());
    let keys: Vec<&str> = new_labels.keys().map(String::as_str).collect();
    node.metadata
        .annotations
        .insert(AGENT_LABELS_ANNOTATION.into(), keys.join(","));
    facts::set_annotations(&mut node, facts);
    facts::set_memory_cgroup_condition(&mut node, facts, now);

    let mut resources = BTreeMap::new();
    resources.insert("cpu".to_string(), facts.cpus.to_string());
    resources.insert("memory".to_string(), format_bytes(facts.memory_bytes));
    resources.insert("pods".to_string(), MAX_PODS.to_string());
    node.status.capacity = resources.clone();
    node.status.allocatable = resources;

    let mut addresses: Vec<NodeAddress> = facts
        .addresses
        .iter()
        .map(|a| NodeAddress {
            type_: "InternalIP".into(),
            address: a.clone(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: if facts.hostname.is_empty() {
            report.node.clone()
        } else {
            facts.hostname.clone()
        },
    });
    node.status.addresses = addresses;
    node.status.node_info = NodeSystemInfo {
        architecture: facts.arch.clone(),
        operating_system: facts.os.clone(),
        os_image: facts.os_image.clone(),
        kernel_version: facts.kernel_version.clone(),
        machine_id: facts.machine_id.clone(),
        kubelet_version: facts.agent_version.clone(),
    };

    let previous = existing.and_then(|n| n.condition("Ready")).cloned();
    let was_ready = previous.as_ref().is_some_and(|c| c.status == "True");
    let mut ready = NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("agent is posting ready status".into()),
        last_heartbeat_time: previous.as_ref().and_then(|c| c.last_heartbeat_time),
        last_transition_time: if was_ready {
            previous.as_ref().and_then(|c| c.last_transition_time)
        } else {
            Some(now)
        },
    };
    set_ready(&mut node, ready.clone());
    let changed = existing != Some(&node);
    let stale = ready
        .last_heartbeat_time
        .is_none_or(|t| (now.0 - t.0).to_std().unwrap_or_default() >= heartbeat_every);
    if changed || stale {
        ready.last_heartbeat_time = Some(now);
        set_ready(&mut node, ready);
    }
    node
}

/// Moves the Ready condition's heartbeat to `now` (nothing else).
pub fn touch_heartbeat(node: &mut Node, now: Time) {
    if let Some(c) = node
        .status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready")
    {
        c.last_heartbeat_time = Some(now);
    }
}

fn set_ready(node: &mut Node, ready: NodeCondition) {
    match node
        .status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready")
    {
        Some(c) => *c = ready,
        None => node.status.conditions.insert(0, ready),
    }
}

/// The Pod status to store for a report: the agent's, keeping what the controller owns
/// (the `PodScheduled` condition) and filling the host IP when the agent left it out.
pub fn merged_pod_status(
    current: &PodStatus,
    reported: &PodStatus,
    host_ip: Option<&str>,
) -> PodStatus {
    let mut s = reported.clone();
    if !s.conditions.iter().any(|c| c.type_ == "PodScheduled") {
        if let Some(c) = current
            .conditions
            .iter()
            .find(|c| c.type_ == "PodScheduled")
        {
            s.conditions.insert(0, c.clone());
        }
    }
    if s.host_ip.is_none() {
        s.host_ip = host_ip
            .map(str::to_string)
            .or_else(|| current.host_ip.clone());
    }
    if s.start_time.is_none() {
        s.start_time = current.start_time;
    }
    s
}

/// The status as the store will hold it. Times on the wire keep nanoseconds while the
/// stored JSON keeps whole seconds; comparing without this would see a change in every
/// report and rewrite every Pod on every heartbeat.
fn as_stored(status: &PodStatus) -> PodStatus {
    serde_json::to_value(status)
        .and_then(serde_json::from_value)
        .unwrap_or_else(|_| status.clone())
}

/// Applies one report to the store. Returns whether the Node was created. Finds the
/// node's terminating Pods by listing every Pod: node sync's loop uses `ingest_with`
/// and its index instead.
pub fn ingest(
    store: &Store,
    topic_node: &str,
    report: &NodeStatusReport,
    heartbeat_every: Duration,
) -> Result<bool, IngestError> {
    let err = |source| IngestError::Store {
        node: topic_node.to_string(),
        source,
    };
    let (pods, _) = store.list::<Pod>(None).map_err(err)?;
    let terminating: Vec<String> = pods
        .iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(topic_node) && podgc::is_terminating(p))
        .map(|p| p.metadata.key())
        .collect();
    ingest_with(
        store,
        topic_node,
        report,
        heartbeat_every,
        &terminating,
        false,
    )
}

/// `ingest`, given the keys of the terminating Pods bound to the node (a report that no
/// longer lists one of them completes its deletion). Reads only the Node and the Pods
/// the report and `terminating` name. `pods_unchanged`: the caller knows the same Pod
/// statuses were taken from this node before with nothing to write, and no Pod on the
/// node has changed since (see `PodsSeen`), so the Pods are not read again.
pub fn ingest_with(
    store: &Store,
    topic_node: &str,
    report: &NodeStatusReport,
    heartbeat_every: Duration,
    terminating: &[String],
    pods_unchanged: bool,
) -> Result<bool, IngestError> {
    if report.node != topic_node {
        return Err(IngestError::WrongNode {
            topic_node: topic_node.to_string(),
            report_node: report.node.clone(),
        });
    }
    let name = topic_node;
    dns_subdomain(name).map_err(|reason| IngestError::BadNodeName {
        node: name.to_string(),
        reason,
    })?;
    let err = |source| IngestError::Store {
        node: name.to_string(),
        source,
    };
    let now = Time::now();
    let existing: Option<Node> = store.get(None, name).map_err(err)?;
    let created = match &existing {
        None => {
            let node = node_from_report(None, report, now, heartbeat_every);
            match store.create(node) {
                Ok(_) => {
                    info!(
                        "node {name} registered ({} {})",
                        report.facts.arch, report.facts.os_image
                    );
                    true
                }
                // Created meanwhile (by a person): merge into theirs next time.
                Err(StoreError::AlreadyExists { .. }) => false,
                Err(e) => return Err(err(e)),
            }
        }
        Some(current) => {
            if node_from_report(Some(current), report, now, Duration::MAX) == *current {
                // Only the heartbeat is news: fresh in memory now, on disk at the
                // store's bounded rate (`Store::modify_volatile`).
                store
                    .modify_volatile::<Node>(None, name, |n| touch_heartbeat(n, now))
                    .map_err(err)?;
            } else {
                store
                    .modify::<Node>(None, name, |n| {
                        *n = node_from_report(Some(n), report, now, heartbeat_every);
                    })
                    .map_err(err)?;
            }
            false
        }
    };
    let host_ip = report.facts.addresses.first().map(String::as_str);
    let reports = if pods_unchanged {
        &[][..]
    } else {
        &report.pods[..]
    };
    for pr in reports {
        let pod: Option<Pod> = store.get(Some(&pr.namespace), &pr.name).map_err(err)?;
        // A report about an older incarnation (deleted and recreated) is not this Pod's.
        let Some(pod) = pod.filter(|p| p.metadata.uid.as_deref() == Some(pr.uid.as_str())) else {
            continue;
        };
        if pod.spec.node_name.as_deref() != Some(name) {
            continue;
        }
        let status = merged_pod_status(&pod.status, &as_stored(&pr.status), host_ip);
        if status != pod.status {
            store
                .modify::<Pod>(Some(&pr.namespace), &pr.name, |p| {
                    if p.metadata.uid == pod.metadata.uid {
                        p.status = status;
                    }
                })
                .map_err(err)?;
        }
    }
    // Reports are full: a terminating Pod the agent no longer lists has no containers
    // left on the node, so its graceful deletion is done.
    let reported: BTreeSet<&str> = report.pods.iter().map(|p| p.uid.as_str()).collect();
    for key in terminating {
        let (ns, pod_name) = split_key(key);
        let Some(pod) = store.get::<Pod>(ns, pod_name).map_err(err)? else {
            continue;
        };
        if podgc::gone_from_report(&pod, name, &reported) {
            podgc::finalize(store, &pod, "its node confirmed its containers are gone")
                .map_err(err)?;
        }
    }
    store.recorder().record_agent_events(name, &report.events);
    crate::prometheus::status_report_ingested();
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::wire::PodReport;
    use punnet_api::PodCondition;

    fn report(node: &str) -> NodeStatusReport {
        NodeStatusReport {
            node: node.into(),
            generation_seen: 0,
            sent_at: Time::now(),
            facts: NodeFacts {
                hostname: "pi-1".into(),
                arch: "arm64".into(),
                os: "linux".into(),
                os_image: "Raspberry Pi OS".into(),
                kernel_version: "6.6".into(),
                machine_id: "m".into(),
                cpus: 4,
                memory_bytes: 1 << 30,
                addresses: vec!["192.168.1.10".into()],
                agent_version: "0.1.0".into(),
                labels: [("zone".to_string(), "attic".to_string())].into(),
                ..NodeFacts::default()
            },
            pods: vec![],
            events: vec![],
        }
    }

    fn at(secs: i64) -> Time {
        Time(chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap())
    }

    #[test]
    fn a_new_node_registers_with_facts_and_labels() {
        let n = node_from_report(None, &report("pi-1"), at(0), Duration::from_secs(60));
        assert_eq!(n.metadata.name, "pi-1");
        assert_eq!(n.metadata.labels[LABEL_ARCH], "arm64");
        assert_eq!(n.metadata.labels[LABEL_OS], "linux");
        assert_eq!(n.metadata.labels[LABEL_HOSTNAME], "pi-1");
        assert_eq!(n.metadata.labels["zone"], "attic");
        assert_eq!(n.status.capacity["cpu"], "4");
        assert_eq!(n.status.allocatable["memory"], "1Gi");
        assert_eq!(n.status.allocatable["pods"], "110");
        assert_eq!(n.status.addresses[0].type_, "InternalIP");
        assert_eq!(n.status.addresses[1].address, "pi-1");
        assert_eq!(n.status.node_info.kubelet_version, "0.1.0");
        assert!(n.is_ready());
        let r = n.condition("Ready").unwrap();
        assert_eq!(r.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(r.last_heartbeat_time, Some(at(0)));
        assert!(punnet_api::validate::validate_node(&n).is_ok());
    }

    #[test]
    fn board_facts_and_a_missing_memory_cgroup_show_on_the_node() {
        let every = Duration::from_secs(60);
        let mut r = report("pi-1");
        r.facts.board_model = "Raspberry Pi 3 Model B Plus Rev 1.3".into();
        r.facts.platform = "arm/v7".into();
        r.facts.cgroup_version = 1;
        r.facts.memory_cgroup = false;
        r.facts.memory_cgroup_problem = Some("cgroup_disable=memory in /proc/cmdline".into());
        let n = node_from_report(None, &r, at(0), every);
        assert_eq!(
            n.metadata.labels[facts::LABEL_BOARD],
            "Raspberry-Pi-3-Model-B-Plus-Rev-1.3"
        );
        assert_eq!(
            n.metadata.annotations[facts::ANNOTATION_CGROUP_VERSION],
            "1"
        );
        assert!(facts::lacks_memory_cgroup(&n));
        assert!(punnet_api::validate::validate_node(&n).is_ok());
        // Usage figures changing between reports write nothing.
        let mut busier = r.clone();
        busier.facts.cpu_usage_millis = 900;
        busier.facts.temperature_millicelsius = Some(61_000);
        busier.facts.memory_available_bytes = 1234;
        assert_eq!(node_from_report(Some(&n), &busier, at(10), every), n);
        // Fixed: the condition goes, and the board label stays the agent's.
        let mut fixed = r.clone();
        fixed.facts.memory_cgroup = true;
        fixed.facts.board_model.clear();
        let n2 = node_from_report(Some(&n), &fixed, at(20), every);
        assert!(!facts::lacks_memory_cgroup(&n2));
        assert!(!n2.metadata.labels.contains_key(facts::LABEL_BOARD));
    }

    #[test]
    fn agent_labels_merge_over_user_labels_and_go_away_with_the_flag() {
        let first = node_from_report(None, &report("pi-1"), at(0), Duration::from_secs(60));
        let mut user = first.clone();
        user.metadata.labels.insert("owner".into(), "me".into());
        user.metadata
            .labels
            .insert("zone".into(), "overridden-by-agent".into());
        let mut r = report("pi-1");
        r.facts.labels.clear();
        r.facts.labels.insert("bad key!".into(), "x".into());
        let n = node_from_report(Some(&user), &r, at(1), Duration::from_secs(60));
        assert_eq!(
            n.metadata.labels.get("owner").map(String::as_str),
            Some("me")
        );
        assert!(!n.metadata.labels.contains_key("zone"));
        assert!(!n.metadata.labels.contains_key("bad key!"));
    }

    #[test]
    fn heartbeat_is_persisted_at_a_bounded_rate() {
        let every = Duration::from_secs(60);
        let r = report("pi-1");
        let n0 = node_from_report(None, &r, at(0), every);
        // Nothing changed, 10 s later: identical object, so the store writes nothing.
        let n1 = node_from_report(Some(&n0), &r, at(10), every);
        assert_eq!(n1, n0);
        // A minute later the heartbeat moves.
        let n2 = node_from_report(Some(&n1), &r, at(61), every);
        assert_eq!(
            n2.condition("Ready").unwrap().last_heartbeat_time,
            Some(at(61))
        );
        // A real change moves it at once.
        let mut more = r.clone();
        more.facts.memory_bytes = 2 << 30;
        let n3 = node_from_report(Some(&n2), &more, at(62), every);
        assert_eq!(
            n3.condition("Ready").unwrap().last_heartbeat_time,
            Some(at(62))
        );
        assert_eq!(
            n3.condition("Ready").unwrap().last_transition_time,
            Some(at(0)),
            "still Ready: no transition"
        );
    }

    #[test]
    fn a_lost_node_that_reports_again_becomes_ready() {
        let every = Duration::from_secs(60);
        let mut lost = node_from_report(None, &report("pi-1"), at(0), every);
        lost.status.conditions[0].status = "Unknown".into();
        let n = node_from_report(Some(&lost), &report("pi-1"), at(5), every);
        let r = n.condition("Ready").unwrap();
        assert_eq!(
            (r.status.as_str(), r.last_transition_time),
            ("True", Some(at(5)))
        );
        assert_eq!(r.last_heartbeat_time, Some(at(5)));
    }

    #[test]
    fn pod_status_keeps_scheduling_condition() {
        let mut current = PodStatus::default();
        current.conditions.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            ..Default::default()
        });
        let mut reported = PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        };
        reported.conditions.push(PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        let s = merged_pod_status(&current, &reported, Some("10.0.0.1"));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["PodScheduled", "Ready"]);
        assert_eq!(s.host_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(merged_pod_status(&s, &reported, Some("10.0.0.1")), s);
    }

    #[test]
    fn ingest_checks_the_sender_and_writes_matching_pods_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let every = Duration::from_secs(60);
        let err = ingest(&store, "pi-2", &report("pi-1"), every).unwrap_err();
        assert!(matches!(err, IngestError::WrongNode { .. }), "{err}");
        let mut bad = report("Bad_Name");
        bad.node = "Bad_Name".into();
        assert!(ingest(&store, "Bad_Name", &bad, every).is_err());

        let mut pod = Pod::default();
        pod.metadata.name = "web".into();
        pod.metadata.namespace = Some("default".into());
        pod.spec.node_name = Some("pi-1".into());
        let pod = store.create(pod).unwrap();
        let mut r = report("pi-1");
        // Times with nanoseconds, as they arrive over the wire.
        let st = PodStatus {
            phase: Some("Running".into()),
            start_time: Some(Time::now()),
            ..Default::default()
        };
        r.pods.push(PodReport {
            namespace: "default".into(),
            name: "web".into(),
            uid: "someone-else".into(),
            status: st.clone(),
            usage: Vec::new(),
        });
        assert!(ingest(&store, "pi-1", &r, every).unwrap());
        let got: Pod = store.get(Some("default"), "web").unwrap().unwrap();
        assert_eq!(got.phase(), "Pending", "uid mismatch: not this Pod");
        r.pods[0].uid = pod.metadata.uid.clone().unwrap();
        assert!(!ingest(&store, "pi-1", &r, every).unwrap());
        let got: Pod = store.get(Some("default"), "web").unwrap().unwrap();
        assert_eq!(got.phase(), "Running");
        // The same report again writes nothing at all.
        let rev = store.revision();
        ingest(&store, "pi-1", &r, every).unwrap();
        assert_eq!(store.revision(), rev);
    }
}
