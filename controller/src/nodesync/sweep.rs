//! The periodic sweep of terminating Pods no agent will confirm, by `podgc`'s rules
//! (`finalize_reason`), over the terminating Pods the index names rather than a list of
//! every Pod in the store every two seconds.

use std::collections::HashMap;

use punnet_api::{Node, Pod, Time};

use super::index::{split_key, PodIndex};
use crate::podgc;
use crate::store::{Store, StoreError};

/// Removes the terminating Pods whose node is gone or NotReady, or which are past the
/// safety net. Returns how many it removed.
pub fn sweep(store: &Store, index: &PodIndex, now: Time) -> Result<usize, StoreError> {
    let keys = index.terminating();
    let mut nodes: HashMap<String, Option<Node>> = HashMap::new();
    let mut n = 0;
    for key in keys {
        let (ns, name) = split_key(&key);
        let Some(pod) = store.get::<Pod>(ns, name)? else {
            continue;
        };
        let node = match &pod.spec.node_name {
            Some(node) => {
                if !nodes.contains_key(node) {
                    nodes.insert(node.clone(), store.get::<Node>(None, node)?);
                }
                nodes[node].as_ref()
            }
            None => None,
        };
        if let Some(why) = podgc::finalize_reason(&pod, node, now) {
            if podgc::finalize(store, &pod, why)? {
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::NodeCondition;

    #[test]
    fn terminating_pods_of_a_lost_node_go_and_others_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (name, ready) in [("up", "True"), ("down", "Unknown")] {
            let mut n = Node::default();
            n.metadata.name = name.into();
            n.status.conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            });
            store.create(n).unwrap();
        }
        let now = Time::now();
        for (pod, node, terminating) in
            [("a", "up", true), ("b", "down", true), ("c", "down", false)]
        {
            let mut p = Pod::default();
            p.metadata.name = pod.into();
            p.metadata.namespace = Some("default".into());
            p.spec.node_name = Some(node.into());
            let p = store.create(p).unwrap();
            if terminating {
                store
                    .modify::<Pod>(Some("default"), pod, |p| {
                        podgc::mark_terminating(p, 30, now)
                    })
                    .unwrap();
            }
            assert!(p.metadata.uid.is_some());
        }
        let index = PodIndex::from_pods(&store.list::<Pod>(None).unwrap().0);
        assert_eq!(sweep(&store, &index, now).unwrap(), 1);
        let left: Vec<String> = store
            .list::<Pod>(None)
            .unwrap()
            .0
            .iter()
            .map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(left, ["a", "c"]);
    }
}
