//! Pod CIDR allocation, pure: the cluster CIDR (`10.42.0.0/16`) cut into per-node ranges
//! (`/24`), and which range each Node without one gets. The ranges in use are the
//! `spec.podCIDR`s of the stored Nodes, so an assignment survives restarts, and a
//! deleted Node's range is free again as soon as it is gone. `nodeipam` runs it.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;
use punnet_api::{Node, NodeCondition, Time};
use thiserror::Error;

pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
pub const DEFAULT_NODE_MASK: u8 = 24;

/// The condition a Node gets while no range is left for it (Kubernetes' name for a node
/// whose Pod network is not set up).
pub const CONDITION: &str = "NetworkUnavailable";
pub const REASON_NO_CIDR: &str = "NoCIDRAvailable";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("cluster CIDR {value:?} is not an IPv4 network like 10.42.0.0/16: {message}")]
    Cluster { value: String, message: String },
    #[error("node CIDR mask size {mask} does not fit cluster CIDR {cluster}: it must be between {min} and 30")]
    Mask { mask: u8, cluster: Ipv4Net, min: u8 },
}

/// The cluster CIDR and the size of each node's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidrs {
    cluster: Ipv4Net,
    mask: u8,
}

impl Default for PodCidrs {
    fn default() -> Self {
        PodCidrs::new(DEFAULT_CLUSTER_CIDR, DEFAULT_NODE_MASK).expect("valid defaults")
    }
}

impl PodCidrs {
    pub fn new(cluster: &str, mask: u8) -> Result<PodCidrs, CidrError> {
        let net: Ipv4Net = cluster.trim().parse().map_err(|e| CidrError::Cluster {
            value: cluster.to_string(),
            message: format!("{e}"),
        })?;
        if net.network() != net.addr() {
            return Err(CidrError::Cluster {
                value: cluster.to_string(),
                message: format!("host bits are set; did you mean {}?", net.trunc()),
            });
        }
        // A /31 or /32 per node leaves no address for a Pod next to the bridge.
        if mask < net.prefix_len() || mask > 30 {
            return Err(CidrError::Mask {
                mask,
                cluster: net,
                min: net.prefix_len(),
            });
        }
        Ok(PodCidrs { cluster: net, mask })
    }

    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    pub fn mask(&self) -> u8 {
        self.mask
    }

    /// How many node ranges the cluster CIDR holds.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.mask - self.cluster.prefix_len())
    }

    /// The lowest range of the cluster CIDR that overlaps none of `used`. One walk over
    /// `used` in address order: trying each range against every used one was
    /// O(nodes²) per new node, a fifth of the controller's CPU while 5,000 boards joined.
    pub fn first_free(&self, used: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
        let size = 1u64 << (32 - self.mask);
        let last_address = u64::from(u32::from(self.cluster.broadcast()));
        let mut taken: Vec<(u64, u64)> = used
            .iter()
            .map(|u| {
                (
                    u64::from(u32::from(u.network())),
                    u64::from(u32::from(u.broadcast())),
                )
            })
            .collect();
        taken.sort_unstable();
        let mut candidate = u64::from(u32::from(self.cluster.network()));
        for (first, last) in taken {
            if last < candidate {
                continue;
            }
            if first > candidate + size - 1 {
                break;
            }
            // Overlapped: the next range boundary after it (the cluster CIDR is aligned
            // to its own prefix, so to every range's size).
            candidate = (last + 1).div_ceil(size) * size;
        }
        if candidate + size - 1 > last_address {
            return None;
        }
        let address = u32::try_from(candidate).ok()?;
        Ipv4Net::new(address.into(), self.mask).ok()
    }

    /// What to do for each Node: ranges for those without one (oldest first, then by
    /// name), and `None` for those left without because the cluster CIDR is full.
    pub fn plan(&self, nodes: &[Node]) -> Vec<(String, Option<Ipv4Net>)> {
        let mut used: BTreeSet<Ipv4Net> = nodes
            .iter()
            .filter_map(|n| n.spec.pod_cidr.as_deref()?.parse().ok())
            .collect();
        let mut waiting: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.spec.pod_cidr.as_deref().is_none_or(str::is_empty))
            .collect();
        waiting.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        waiting
            .into_iter()
            .map(|n| {
                let range = self.first_free(&used);
                used.extend(range);
                (n.metadata.name.clone(), range)
            })
            .collect()
    }

    /// The message of a Node's `NetworkUnavailable` condition when the range is full.
    pub fn full_message(&self) -> String {
        format!(
            "no Pod CIDR left: all {} /{} ranges of the cluster CIDR {} are in use; delete Nodes that are gone, or restart the controller with a larger --cluster-cidr or --node-cidr-mask-size",
            self.capacity(),
            self.mask,
            self.cluster
        )
    }
}

/// Sets (`Some`) or removes (`None`) the Node's `NetworkUnavailable` condition; the
/// transition time moves only when the status changes.
pub fn set_network_condition(node: &mut Node, message: Option<&str>, now: Time) {
    let conditions = &mut node.status.conditions;
    let Some(message) = message else {
        conditions.retain(|c| c.type_ != CONDITION);
        return;
    };
    let previous = conditions.iter().position(|c| c.type_ == CONDITION);
    let since = previous
        .and_then(|i| conditions[i].last_transition_time)
        .unwrap_or(now);
    let condition = NodeCondition {
        type_: CONDITION.into(),
        status: "True".into(),
        reason: Some(REASON_NO_CIDR.into()),
        message: Some(message.to_string()),
        last_heartbeat_time: None,
        last_transition_time: Some(since),
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, created: i64) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.spec.pod_cidr = cidr.map(str::to_string);
        n.metadata.creation_timestamp = Some(Time(
            chrono::DateTime::from_timestamp(1_700_000_000 + created, 0).unwrap(),
        ));
        n
    }

    fn plan(p: &PodCidrs, nodes: &[Node]) -> Vec<(String, Option<String>)> {
        p.plan(nodes)
            .into_iter()
            .map(|(n, r)| (n, r.map(|r| r.to_string())))
            .collect()
    }

    #[test]
    fn parses_and_rejects_bad_settings() {
        let p = PodCidrs::default();
        assert_eq!(p.cluster().to_string(), "10.42.0.0/16");
        assert_eq!(p.capacity(), 256);
        assert!(matches!(
            PodCidrs::new("10.42.0.0", 24),
            Err(CidrError::Cluster { .. })
        ));
        let err = PodCidrs::new("10.42.1.0/16", 24).unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.42.0.0/16?"),
            "{err}"
        );
        assert!(matches!(
            PodCidrs::new("10.42.0.0/16", 8),
            Err(CidrError::Mask { .. })
        ));
        assert!(PodCidrs::new("10.42.0.0/16", 31).is_err());
        assert_eq!(PodCidrs::new("192.168.0.0/22", 26).unwrap().capacity(), 16);
    }

    #[test]
    fn oldest_nodes_get_the_lowest_free_ranges_and_never_a_used_one() {
        let p = PodCidrs::default();
        let nodes = [
            node("pi-c", None, 3),
            node("pi-a", Some("10.42.0.0/24"), 1),
            node("pi-b", None, 2),
            node("pi-d", Some("10.42.2.0/24"), 0),
        ];
        assert_eq!(
            plan(&p, &nodes),
            vec![
                ("pi-b".into(), Some("10.42.1.0/24".into())),
                ("pi-c".into(), Some("10.42.3.0/24".into())),
            ]
        );
        // Everything assigned: nothing to do.
        assert!(p.plan(&[node("pi-a", Some("10.42.0.0/24"), 0)]).is_empty());
        // A range someone set that overlaps several /24s blocks all of them.
        let wide = [node("x", Some("10.42.0.0/23"), 0), node("y", None, 1)];
        assert_eq!(plan(&p, &wide)[0].1.as_deref(), Some("10.42.2.0/24"));
    }

    /// The obvious search, for comparison.
    fn first_free_by_trying_each(p: &PodCidrs, used: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
        p.cluster
            .subnets(p.mask)
            .ok()?
            .find(|s| !used.iter().any(|u| u.contains(s) || s.contains(u)))
    }

    #[test]
    fn first_free_agrees_with_trying_each_range() {
        let cases = [
            ("10.42.0.0/20", 24),
            ("10.0.0.0/22", 26),
            ("192.168.0.0/24", 30),
        ];
        for (cluster, mask) in cases {
            let p = PodCidrs::new(cluster, mask).unwrap();
            let mut used = BTreeSet::new();
            // A pseudo-random mix of node ranges, wider ranges, ranges with host bits
            // and ranges outside the cluster CIDR.
            let mut x: u32 = 12345;
            for round in 0..200 {
                assert_eq!(
                    p.first_free(&used),
                    first_free_by_trying_each(&p, &used),
                    "{cluster}/{mask} round {round} used {used:?}"
                );
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let base = u32::from(p.cluster.network()) & 0xffff_0000;
                let addr = base | ((x >> 8) & 0xffff);
                let prefix = [mask, mask, mask, mask - 1, mask + 1, 16][(x % 6) as usize];
                used.insert(Ipv4Net::new(addr.into(), prefix).unwrap());
            }
        }
    }

    #[test]
    fn a_full_range_leaves_nodes_without_and_a_freed_range_is_reused() {
        let p = PodCidrs::new("10.42.0.0/23", 24).unwrap();
        let mut nodes = vec![
            node("a", Some("10.42.0.0/24"), 0),
            node("b", Some("10.42.1.0/24"), 1),
            node("c", None, 2),
        ];
        assert_eq!(plan(&p, &nodes), vec![("c".into(), None)]);
        assert_eq!(
            p.full_message(),
            "no Pod CIDR left: all 2 /24 ranges of the cluster CIDR 10.42.0.0/23 are in use; delete Nodes that are gone, or restart the controller with a larger --cluster-cidr or --node-cidr-mask-size"
        );
        nodes.remove(0);
        assert_eq!(
            plan(&p, &nodes),
            vec![("c".into(), Some("10.42.0.0/24".into()))]
        );
    }

    #[test]
    fn the_condition_is_set_once_and_removed() {
        let mut n = node("a", None, 0);
        let t0 = Time(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let t1 = Time(chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap());
        set_network_condition(&mut n, Some("full"), t0);
        set_network_condition(&mut n, Some("full"), t1);
        let c = n.condition(CONDITION).unwrap();
        assert_eq!(
            (
                c.status.as_str(),
                c.reason.as_deref(),
                c.last_transition_time
            ),
            ("True", Some(REASON_NO_CIDR), Some(t0))
        );
        set_network_condition(&mut n, None, t1);
        assert!(n.condition(CONDITION).is_none());
    }
}
