//! Which Pod statuses each node reported last, and the revisions its Pods had then. A
//! heartbeat that repeats them while none of the node's Pods has changed needs no Pod
//! read: re-reading and decoding every Pod of every heartbeat was a third of the
//! controller's CPU with 5,000 boards (profile in README "Scale").
//!
//! A report is remembered with the revisions from *before* it was taken. If taking it
//! wrote anything, the revisions moved on and the next report is taken in full again;
//! so a skip only ever stands in for a pass that would write nothing.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use punnet_api::wire::NodeStatusReport;

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    digest: u64,
    /// `namespace/name` and revision of each Pod bound to the node.
    pods: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
pub struct PodsSeen {
    by_node: HashMap<String, Seen>,
}

impl PodsSeen {
    /// Whether `report`'s Pod statuses were taken before with the node's Pods exactly at
    /// `pods` (keys and revisions, as the index has them now); remembers this report.
    pub fn unchanged(
        &mut self,
        node: &str,
        report: &NodeStatusReport,
        pods: Vec<(String, u64)>,
    ) -> bool {
        let seen = Seen {
            digest: digest(report),
            pods,
        };
        if self.by_node.get(node) == Some(&seen) {
            return true;
        }
        self.by_node.insert(node.to_string(), seen);
        false
    }

    /// Takes the node's next report in full (this one could not be).
    pub fn forget(&mut self, node: &str) {
        self.by_node.remove(node);
    }
}

/// What of a report the Pods' stored status is made of: each Pod's identity and status
/// (not its usage figures, which change every time and go to the metrics only), and the
/// node's first address (the Pods' `hostIP`).
fn digest(report: &NodeStatusReport) -> u64 {
    let mut h = DefaultHasher::new();
    for p in &report.pods {
        (&p.namespace, &p.name, &p.uid).hash(&mut h);
        match postcard::to_allocvec(&p.status) {
            Ok(bytes) => bytes.hash(&mut h),
            // Cannot happen for these types; a fresh random value never matches.
            Err(_) => rand::random::<u64>().hash(&mut h),
        }
    }
    report.facts.addresses.first().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::wire::{NodeFacts, PodReport};
    use punnet_api::Time;

    fn report(phase: &str) -> NodeStatusReport {
        let mut pod = PodReport {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: "u1".into(),
            status: Default::default(),
            usage: Vec::new(),
        };
        pod.status.phase = Some(phase.into());
        NodeStatusReport {
            node: "pi-1".into(),
            generation_seen: 1,
            sent_at: Time::now(),
            facts: NodeFacts::default(),
            pods: vec![pod],
            events: Vec::new(),
        }
    }

    #[test]
    fn only_a_repeat_from_the_same_pod_revisions_is_unchanged() {
        let mut seen = PodsSeen::default();
        let at = |rev| vec![("default/web-0".to_string(), rev)];
        assert!(!seen.unchanged("pi-1", &report("Running"), at(7)));
        assert!(seen.unchanged("pi-1", &report("Running"), at(7)));
        // Another node, another phase, or a Pod changed meanwhile: taken in full.
        assert!(!seen.unchanged("pi-2", &report("Running"), at(7)));
        assert!(!seen.unchanged("pi-1", &report("Failed"), at(7)));
        assert!(!seen.unchanged("pi-1", &report("Failed"), at(9)));
        assert!(seen.unchanged("pi-1", &report("Failed"), at(9)));
        // A later send time or new usage figures are not news.
        let mut later = report("Failed");
        later.sent_at = Time(later.sent_at.0 + chrono::Duration::seconds(10));
        later.pods[0].usage.push(punnet_api::wire::ContainerUsage {
            container: "web".into(),
            cpu_millis: 12,
            memory_bytes: 1 << 20,
        });
        assert!(seen.unchanged("pi-1", &later, at(9)));
        seen.forget("pi-1");
        assert!(!seen.unchanged("pi-1", &later, at(9)));
    }
}
